//! Property tests of the pipeline configuration (docs/reliability.md,
//! "Property tests"): what `--print-config` prints loads back as the same
//! configuration, and no override, however malformed, panics.
//!
//! `tailforge <stage> --print-config` prints exactly [`PipelineConfig::to_toml`]
//! of the loaded (and, for `generate`, command-line adjusted) configuration,
//! so the round trip is tested here on the library, without a process per case.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;
use tailforge_core::PipelineConfig;
use tailforge_core::error::EXIT_USAGE;

/// Case counts (also in docs/reliability.md).
const ROUND_TRIP_CASES: u32 = 256;
const OVERRIDE_CASES: u32 = 1024;

fn config(cases: u32) -> Config {
    // Failures become explicit regression tests below, not files.
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Every leaf key of the configuration with its default value, plus the
/// optional keys whose default (`None`) is not printed.
fn keys() -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match v {
            toml::Value::Table(t) if prefix != "analyze.datafusion" => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &toml::Value::try_from(PipelineConfig::default()).unwrap(), &mut out);
    let s = |v: &str| toml::Value::String(v.into());
    for (k, v) in [
        ("output", s("/tmp/out")),
        ("inputs.events", s("events/")),
        ("inputs.items", s("items/")),
        ("generate.prompt", s("prompt.txt")),
        ("generate.cache", s("/tmp/cache")),
        ("generate.n_gpu_layers", toml::Value::Integer(0)),
        ("generate.limit", toml::Value::Integer(10)),
        ("storage.connect_timeout_secs", toml::Value::Float(5.0)),
        ("storage.request_timeout_secs", toml::Value::Float(30.0)),
        ("run.pushgateway", s("http://localhost:9091")),
        ("run.pushgateway_job", s("tailforge")),
    ] {
        out.insert(k.to_string(), v);
    }
    out
}

/// The words of every enum setting (a string setting gets one of them, or any text).
const ENUM_WORDS: &[&str] = &[
    "s",
    "ms",
    "us",
    "ns",
    "keep_all",
    "drop_exact",
    "first_per_pair",
    "top_share",
    "pareto",
    "min_count",
    "percentile",
    "id",
    "text",
    "fused",
    "dual",
    "bce",
    "sampled_softmax",
    "random",
    "text_pca",
    "max",
    "mean",
    "sentences",
    "head",
    "extractive",
    "free",
    "rank",
    "least_text",
    "cpu",
];

/// Any text, TOML-quoted so that every character reaches the setting.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A `--set` value of the same TOML type as `default`, in a plausible range.
fn plausible_value(default: &toml::Value) -> BoxedStrategy<String> {
    match default {
        toml::Value::Integer(_) => {
            prop_oneof![0i64..=4, 1i64..=512, 1i64..=i64::MAX].prop_map(|v| v.to_string()).boxed()
        }
        toml::Value::Float(_) => prop_oneof![
            (0.0f64..=1.0).prop_map(|v| format!("{v:?}")),
            (1.0f64..1e6).prop_map(|v| format!("{v:?}")),
            (1e-9f64..1e-3).prop_map(|v| format!("{v:e}")),
        ]
        .boxed(),
        toml::Value::Boolean(_) => any::<bool>().prop_map(|v| v.to_string()).boxed(),
        toml::Value::Array(_) => {
            proptest::collection::vec(prop::sample::select(vec!["id", "text", "fused", "dual"]), 0..4)
                .prop_map(|v| format!("[{}]", v.iter().map(|w| quoted(w)).collect::<Vec<_>>().join(", ")))
                .boxed()
        }
        _ => prop_oneof![
            prop::sample::select(ENUM_WORDS).prop_map(str::to_string),
            any::<String>().prop_map(|s| quoted(&s)),
            "[a-z0-9/._-]{1,16}",
        ]
        .boxed(),
    }
}

/// Overrides of known keys with values of the right type.
fn plausible_sets() -> impl Strategy<Value = Vec<String>> {
    let keys: Vec<(String, toml::Value)> = keys().into_iter().collect();
    proptest::collection::vec(
        prop::sample::select(keys).prop_flat_map(|(k, d)| plausible_value(&d).prop_map(move |v| format!("{k}={v}"))),
        0..12,
    )
}

/// What `tailforge generate` puts on top of the loaded configuration from
/// its own flags (`--limit`, `--parallel`, `--threads`, `--seed`), which
/// bypass TOML: any value clap accepts.
#[derive(Debug, Clone)]
struct GenerateFlags {
    limit: Option<usize>,
    parallel: Option<u32>,
    threads: Option<u32>,
    seed: Option<u64>,
}

fn generate_flags() -> impl Strategy<Value = GenerateFlags> {
    (
        prop::option::weighted(0.3, prop_oneof![0usize..100, any::<usize>()]),
        prop::option::weighted(0.3, 1u32..=16),
        prop::option::weighted(0.3, 0u32..=64),
        prop::option::weighted(0.3, any::<u64>()),
    )
        .prop_map(|(limit, parallel, threads, seed)| GenerateFlags { limit, parallel, threads, seed })
}

/// Loads from the defaults with `sets`, keeping each override only if the
/// configuration still loads: a valid configuration with most overrides applied.
fn load_greedy(sets: &[String]) -> PipelineConfig {
    let mut kept: Vec<String> = Vec::new();
    for s in sets {
        kept.push(s.clone());
        if PipelineConfig::load(None, std::iter::empty(), &kept).is_err() {
            kept.pop();
        }
    }
    PipelineConfig::load(None, std::iter::empty(), &kept).expect("the kept overrides load")
}

/// Writes `text` as a pipeline file and loads it with no other layer.
fn reload(text: &str) -> tailforge_core::Result<PipelineConfig> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, text).unwrap();
    PipelineConfig::load(Some(&path), std::iter::empty(), &[])
}

/// The round trip for one configuration that passed validation.
fn assert_round_trip(config: &PipelineConfig) -> Result<(), TestCaseError> {
    let printed = config.to_toml();
    prop_assert!(!printed.starts_with("# cannot render"), "print-config cannot render a valid config: {printed}");
    let back = reload(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n--- printed:\n{printed}")))?;
    prop_assert_eq!(&back, config, "printed:\n{}", printed);
    prop_assert_eq!(back.to_toml(), printed, "printing is not stable");
    Ok(())
}

proptest! {
    #![proptest_config(config(ROUND_TRIP_CASES))]

    /// parse → print-config → parse is the identity, for configurations
    /// built from random overrides of every key (256 cases), then adjusted
    /// by `tailforge generate`'s own flags the way the command does before
    /// it validates and prints.
    #[test]
    fn print_config_round_trips(sets in plausible_sets(), flags in generate_flags()) {
        let mut config = load_greedy(&sets);
        assert_round_trip(&config)?;
        let g = &mut config.generate;
        g.limit = flags.limit.or(g.limit);
        g.parallel = flags.parallel.unwrap_or(g.parallel);
        g.n_threads = flags.threads.unwrap_or(g.n_threads);
        g.seed = flags.seed.unwrap_or(g.seed);
        if config.validate("command line").is_ok() {
            assert_round_trip(&config)?;
        }
    }
}

/// A malformed key: empty segments, unknown names, values used as sections, odd characters.
fn any_key() -> impl Strategy<Value = String> {
    let known: Vec<String> = keys().into_keys().collect();
    prop_oneof![
        3 => prop::sample::select(known.clone()),
        1 => (prop::sample::select(known), "[a-z._]{0,6}").prop_map(|(k, s)| format!("{k}{s}")),
        1 => "[a-z_.]{0,24}",
        1 => any::<String>().prop_map(|s| s.replace('=', "")),
        1 => Just("analyze.datafusion.datafusion.execution.batch_size".to_string()),
    ]
}

/// Any value text: TOML literals of every type (tables, arrays, dates,
/// special floats, out-of-range integers), unterminated ones, any string.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        prop::sample::select(vec![
            "nan",
            "inf",
            "-inf",
            "-0.0",
            "1e400",
            "true",
            "[]",
            "[1, \"a\"]",
            "{}",
            "{a = 1}",
            "\"",
            "'",
            "\"\"\"",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "0x10",
            "1_000",
            "99999999999999999999",
        ])
        .prop_map(str::to_string),
        prop::sample::select(ENUM_WORDS).prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(config(OVERRIDE_CASES))]

    /// Random `--set` overrides and `TAILFORGE_*` variables (1024 cases)
    /// never panic: loading returns a configuration that validates, or a
    /// usage/config error (exit code 2) that names where the bad setting came from.
    #[test]
    fn any_override_is_ok_or_a_typed_error(
        sets in proptest::collection::vec(
            prop_oneof![
                4 => (any_key(), any_value()).prop_map(|(k, v)| format!("{k}={v}")),
                1 => any::<String>(),
            ],
            0..6,
        ),
        env in proptest::collection::vec((any_key(), any_value()), 0..3),
    ) {
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (format!("TAILFORGE_{}", k.to_ascii_uppercase().replace('.', "__")), v))
            .collect();
        match PipelineConfig::load(None, env.clone(), &sets) {
            Ok(c) => prop_assert!(c.validate("t").is_ok()),
            Err(e) => {
                prop_assert_eq!(e.exit_code(), EXIT_USAGE, "{}", e);
                let msg = e.to_string();
                prop_assert!(!msg.is_empty());
                let named = sets.iter().any(|s| msg.contains(&format!("--set {s}")))
                    || env.iter().any(|(k, _)| msg.contains(k.as_str()))
                    || msg.starts_with("(defaults)");
                prop_assert!(named, "the error does not say which override is bad: {}", msg);
            }
        }
    }
}

/// Regression (shrunk from `print_config_round_trips`): `tailforge generate
/// --seed 9223372036854775808 --print-config` printed `seed =
/// 9223372036854775808`, which no TOML parser reads back. Such a seed (or
/// `--limit`) is now a config error; the largest TOML integer round-trips.
#[test]
fn generate_seed_beyond_toml_integers_is_an_error_not_unparseable_output() {
    let mut config = PipelineConfig::default();
    config.generate.seed = 9_223_372_036_854_775_808;
    let e = config.validate("command line").unwrap_err();
    assert!(e.to_string().contains("generate.seed"), "{e}");
    config.generate.seed = i64::MAX as u64;
    config.generate.limit = Some(i64::MAX as usize);
    config.validate("command line").unwrap();
    assert_eq!(reload(&config.to_toml()).unwrap(), config);
}
