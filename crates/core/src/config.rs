//! The pipeline configuration, declared once.
//!
//! Every setting is a field below with its doc comment and default side by
//! side; `pipelines/*.toml` override only what they change, and unknown keys
//! are errors. Values are layered, later wins:
//!
//! 1. the defaults in this file,
//! 2. the pipeline file (`--pipeline P.toml`),
//! 3. environment variables `TAILFORGE_<SECTION>__<KEY>` (e.g.
//!    `TAILFORGE_ANALYZE__LONG_TAIL__RULE=pareto`; `__` separates levels),
//! 4. `--set key=value` on the command line (e.g. `--set analyze.long_tail.share=0.1`).
//!
//! Loading is "parse raw, then validate": the layers are merged as TOML
//! values, deserialized with the key path of any error, then
//! [`PipelineConfig::validate`] checks ranges and combinations.
//!
//! docs/config.md is rendered from these declarations ([`reference`]):
//! `make config-docs` rewrites it, and a test fails while it is stale.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod train;
pub use train::{ContentPool, IdInit, Loss, TrainConfig, Variant, WarmStartFrom};
mod generate;
pub use generate::{GRAMMAR_ANSWER_TOKENS, GenerateConfig, KeywordMode, Priority, Shard, TruncateRule};
mod storage;
pub use storage::StorageConfig;
pub mod reference;

/// Settings of `tailforge run` as a whole.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Prometheus Pushgateway base URL, e.g. `http://pushgateway:9091`. When set, every run PUTs
    /// its `metrics.prom` to `<url>/metrics/job/<job>` (replacing the group), on success and on
    /// failure; a push that fails is logged as a warning and does not fail the run. For a textfile
    /// collector instead, read `<output>/metrics.prom`.
    pub pushgateway: Option<String>,
    /// The `job` label of the pushed group (one group per job: use one job per pipeline).
    ///
    /// Default: `"tailforge"`
    pub pushgateway_job: Option<String>,
}

/// A whole pipeline: inputs, the output root and each stage's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Output root (local path or object store URL); stages write under it. `analyze --pipeline`
    /// writes to `<output>/analyze/`.
    pub output: Option<String>,
    /// Run seed; every random choice of every stage derives from it.
    pub seed: u64,
    /// Where the input data lives and what its columns are called.
    pub inputs: InputsConfig,
    /// The analyze stage.
    pub analyze: AnalyzeConfig,
    /// The train stage.
    pub train: TrainConfig,
    /// The generate stage (llama.cpp).
    pub generate: GenerateConfig,
    /// Object store clients: retries and timeouts.
    pub storage: StorageConfig,
    /// `tailforge run` as a whole.
    pub run: RunConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            output: None,
            seed: 42,
            inputs: InputsConfig::default(),
            analyze: AnalyzeConfig::default(),
            train: TrainConfig::default(),
            generate: GenerateConfig::default(),
            storage: StorageConfig::default(),
            run: RunConfig::default(),
        }
    }
}

/// Where the input data lives and what its columns are called.
///
/// Each location is a Parquet file, a directory of Parquet files, a glob (`events/*.parquet`,
/// `s3://b/logs/dt=2026-11-*/*.parquet`) or a Hive-partitioned prefix (every `dt=…/` directory
/// below it is read), on a local path or a `file://`, `s3://`, `gs://` or `az://` URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputsConfig {
    /// Behavior logs (Parquet), one row per event.
    pub events: Option<String>,
    /// Item catalog (Parquet), one row per item.
    pub items: Option<String>,
    /// A MovieLens directory (local path; MovieLens-100k's `u.data` + `u.item`, or MovieLens
    /// latest's `ratings.csv` + `movies.csv`) to read instead of `events` and `items`, which must
    /// then be unset: `tailforge run` and `tailforge analyze --pipeline` import it into
    /// `<output>/import/movielens/` first (a second or two, every run; the source is read in place)
    /// and analyze that. `pipelines/movielens-100k.toml` uses it.
    pub movielens: Option<String>,
    /// Column names of the events input.
    pub events_columns: EventColumns,
    /// Column names of the items input.
    pub items_columns: ItemColumns,
    /// Unit of an integer `ts` column: `"s"`, `"ms"`, `"us"`, `"ns"`. Timestamp-typed columns carry
    /// their own unit and ignore this.
    pub ts_unit: TsUnit,
}

/// Maps the events input's column names onto the data contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventColumns {
    /// User id column (integer or string).
    pub user_id: String,
    /// Item id column (integer or string).
    pub item_id: String,
    /// Event time column (timestamp, or integer Unix time in `inputs.ts_unit`).
    pub ts: String,
    /// Optional event type column (string); used when present.
    pub event_type: String,
    /// Optional event weight column (number); used when present.
    pub weight: String,
}

impl Default for EventColumns {
    fn default() -> Self {
        EventColumns {
            user_id: "user_id".into(),
            item_id: "item_id".into(),
            ts: "ts".into(),
            event_type: "event_type".into(),
            weight: "weight".into(),
        }
    }
}

/// Maps the items input's column names onto the data contract. Every other
/// string column of the catalog is kept as a text attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ItemColumns {
    /// Item id column; must have the same kind (integer or string) as the events' item id.
    pub item_id: String,
    /// Title column (string).
    pub title: String,
}

impl Default for ItemColumns {
    fn default() -> Self {
        ItemColumns { item_id: "item_id".into(), title: "title".into() }
    }
}

/// Unit of integer timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TsUnit {
    #[default]
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "us")]
    Micros,
    #[serde(rename = "ns")]
    Nanos,
}

impl TsUnit {
    /// How many of this unit make one second.
    pub fn per_second(self) -> i64 {
        match self {
            TsUnit::Seconds => 1,
            TsUnit::Millis => 1_000,
            TsUnit::Micros => 1_000_000,
            TsUnit::Nanos => 1_000_000_000,
        }
    }
}

/// The analyze stage: DataFusion session settings and the long-tail rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzeConfig {
    /// Where the SQL runs: `local` (DataFusion in this process) or `ballista` (the Ballista cluster
    /// at `analyze.scheduler`; needs a tailforge built with `--features ballista`,
    /// `make build FEATURES=ballista` — otherwise a config error, exit 2). See
    /// [ballista.md](ballista.md).
    pub engine: AnalyzeEngine,
    /// The Ballista scheduler for `engine = "ballista"`: `"df://host:50050"` (port 50050 when left
    /// out). Checked for reachability before the first query.
    #[serde(deserialize_with = "empty_as_none")]
    pub scheduler: Option<String>,
    /// DataFusion parallelism (partitions); 0 = number of cores.
    pub target_partitions: usize,
    /// Rows per Arrow record batch inside DataFusion.
    pub batch_size: usize,
    /// Query memory pool, e.g. `"4GiB"`; `"0"` = unlimited. With a limit, sorts and aggregations
    /// spill to disk (`spill_dir`) beyond it (FairSpillPool).
    pub memory_limit: ByteSize,
    /// Spill directory.
    ///
    /// Default: the system temp directory
    #[serde(deserialize_with = "empty_as_none")]
    pub spill_dir: Option<String>,
    /// Cap on the spill files' total size.
    pub max_temp_size: ByteSize,
    /// Repeated events: `keep_all` (every event is an interaction, as eval-v1), `drop_exact` (drop
    /// rows repeating user, item and ts), `first_per_pair` (a user's first event per item only).
    pub dedup: DedupPolicy,
    /// Which items form the long tail.
    pub long_tail: LongTailConfig,
    /// Co-interaction neighbours kept per tail item (`neighbors.parquet`: the items most often in
    /// the same users' *training* sequences, `sql/neighbors.sql`); their titles fill `{neighbors}`
    /// in generate's prompt. `0` turns them off.
    pub neighbors: usize,
    /// Plausibility bounds checked on the input.
    pub validation: ValidationConfig,
    /// Extra DataFusion settings by DataFusion key, for tuning:
    /// `analyze.datafusion = { "datafusion.execution.sort_spill_reservation_bytes" = "67108864" }`.
    /// Applied after the settings above; unknown keys are errors.
    pub datafusion: std::collections::BTreeMap<String, String>,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        AnalyzeConfig {
            engine: AnalyzeEngine::Local,
            scheduler: None,
            target_partitions: 0,
            batch_size: 8192,
            memory_limit: ByteSize::from_bytes(0),
            spill_dir: None,
            max_temp_size: ByteSize::gib(100),
            dedup: DedupPolicy::KeepAll,
            long_tail: LongTailConfig::default(),
            neighbors: 5,
            validation: ValidationConfig::default(),
            datafusion: Default::default(),
        }
    }
}

/// Where analyze runs its SQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalyzeEngine {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A remote Ballista cluster (`analyze.scheduler`).
    Ballista,
}

impl AnalyzeEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalyzeEngine::Local => "local",
            AnalyzeEngine::Ballista => "ballista",
        }
    }
}

/// An optional text key read as unset when empty: `spill_dir = ""`, or an
/// empty `TAILFORGE_ANALYZE__SPILL_DIR=`, means the default, as it did when
/// these keys were plain strings.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Checks a Ballista scheduler address, `df://host[:port]` (port 50050 when
/// left out); returns the host and port.
pub fn parse_scheduler(url: &str) -> std::result::Result<(String, u16), String> {
    let hint = "expected df://host:port, e.g. \"df://ballista-scheduler:50050\"";
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e}); {hint}"))?;
    if parsed.scheme() != "df" {
        return Err(format!("{url:?} has scheme {:?}; {hint}", parsed.scheme()));
    }
    let host = match parsed.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(format!("{url:?} names no host; {hint}")),
    };
    if !(parsed.path().is_empty() || parsed.path() == "/") || parsed.query().is_some() {
        return Err(format!("{url:?} has a path or query; {hint}"));
    }
    Ok((host, parsed.port().unwrap_or(50050)))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupPolicy {
    #[default]
    KeepAll,
    DropExact,
    FirstPerPair,
}

impl DedupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DedupPolicy::KeepAll => "keep_all",
            DedupPolicy::DropExact => "drop_exact",
            DedupPolicy::FirstPerPair => "first_per_pair",
        }
    }
}

/// The long-tail rule. Items are ranked by interaction count (descending,
/// ties by item id ascending); the rule picks the head, the rest is the tail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LongTailConfig {
    /// `top_share`: head = first ceil(`share` × items) (eval-v1's rule). `pareto`: head = the
    /// fewest top items holding `pareto_share` of interactions. `min_count`: tail = fewer than
    /// `min_count` interactions. `percentile`: tail = items whose count is at or below the
    /// `percentile` quantile of counts.
    pub rule: LongTailRule,
    /// Head share of the catalog for `top_share` (eval-v1: 0.2).
    pub share: f64,
    /// Interaction share the head holds for `pareto`.
    pub pareto_share: f64,
    /// Threshold for `min_count`: items with fewer interactions are tail.
    pub min_count: u64,
    /// Quantile (0..1) of item counts for `percentile`: items at or below it are tail.
    pub percentile: f64,
}

impl Default for LongTailConfig {
    fn default() -> Self {
        LongTailConfig { rule: LongTailRule::TopShare, share: 0.2, pareto_share: 0.8, min_count: 10, percentile: 0.8 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongTailRule {
    #[default]
    TopShare,
    Pareto,
    MinCount,
    Percentile,
}

impl LongTailRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LongTailRule::TopShare => "top_share",
            LongTailRule::Pareto => "pareto",
            LongTailRule::MinCount => "min_count",
            LongTailRule::Percentile => "percentile",
        }
    }
}

/// Plausibility bounds: values outside them are bad data, not analytics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Earliest plausible event time (Unix seconds; 0 = 1970-01-01).
    pub min_ts: i64,
    /// Latest plausible event time (Unix seconds; the default is 2100-01-01). A millisecond column
    /// read as seconds lands far beyond it, and the error says to set `inputs.ts_unit`.
    pub max_ts: i64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { min_ts: 0, max_ts: 4_102_444_800 }
    }
}

/// The top-level keys, so `TAILFORGE_*` variables that are not settings
/// (like `TAILFORGE_LOG`) are left alone.
const TOP_LEVEL_KEYS: &[&str] = &["output", "seed", "inputs", "analyze", "train", "generate", "storage", "run"];

/// Environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "TAILFORGE_";

impl PipelineConfig {
    /// Loads the layered configuration: defaults, the pipeline file (if any),
    /// `TAILFORGE_*` environment variables, then `--set` overrides.
    pub fn load(
        pipeline: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<PipelineConfig> {
        let (mut root, file_name) = match pipeline {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::usage(format!("{name}: cannot read the pipeline file: {e}")))?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| Error::config(&name, "(syntax)", e.to_string().trim_end().to_string()))?;
                (table, name)
            }
            None => (toml::Table::new(), "(defaults)".to_string()),
        };
        let mut origins: Vec<(String, String)> = Vec::new();
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let first = key.split('.').next().unwrap_or_default();
            if !TOP_LEVEL_KEYS.contains(&first) {
                continue;
            }
            set_dotted(&mut root, &key, parse_value(&value)).map_err(|m| Error::config(&name, &key, m))?;
            origins.push((key, name));
        }
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                return Err(Error::usage(format!(
                    "--set {set}: expected key=value, e.g. --set analyze.long_tail.share=0.1"
                )));
            };
            let key = key.trim();
            set_dotted(&mut root, key, parse_value(value.trim()))
                .map_err(|m| Error::config(format!("--set {set}"), key, m))?;
            origins.push((key.to_string(), format!("--set {set}")));
        }
        let config: PipelineConfig = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let key = e.path().to_string();
            // Name the layer that set the offending key, if an override did.
            let source = origins
                .iter()
                .rev()
                .find(|(k, _)| key.starts_with(k.as_str()) || k.starts_with(&key))
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| file_name.clone());
            // The path is already in `key`; keep the message to its first line.
            let message = e.into_inner().to_string();
            let first = message.lines().next().unwrap_or_default();
            Error::config(source, key, format!("{first}{}", did_you_mean(first)))
        })?;
        config.validate(&file_name)?;
        Ok(config)
    }

    /// Checks ranges and combinations that types alone cannot express.
    pub fn validate(&self, source: &str) -> Result<()> {
        let lt = &self.analyze.long_tail;
        let unit_interval = |key: &str, v: f64, closed_top: bool| -> Result<()> {
            let ok = v > 0.0 && (v < 1.0 || (closed_top && v == 1.0));
            if ok {
                Ok(())
            } else {
                Err(Error::config(source, key, format!("{v} is out of range: expected a share in (0, 1)")))
            }
        };
        unit_interval("analyze.long_tail.share", lt.share, false)?;
        unit_interval("analyze.long_tail.pareto_share", lt.pareto_share, true)?;
        unit_interval("analyze.long_tail.percentile", lt.percentile, false)?;
        if let (Some(_), Some(key)) = (
            &self.inputs.movielens,
            [("inputs.events", &self.inputs.events), ("inputs.items", &self.inputs.items)]
                .iter()
                .find_map(|(k, v)| v.is_some().then_some(*k)),
        ) {
            return Err(Error::config(
                source,
                "inputs.movielens",
                format!(
                    "is set together with {key}: a pipeline reads either a MovieLens directory or events + items, not both; unset one"
                ),
            ));
        }
        match (self.analyze.engine, &self.analyze.scheduler) {
            (AnalyzeEngine::Ballista, None) => {
                return Err(Error::config(
                    source,
                    "analyze.scheduler",
                    "analyze.engine = \"ballista\" needs the scheduler's address, e.g. analyze.scheduler = \"df://host:50050\"",
                ));
            }
            (AnalyzeEngine::Ballista, Some(scheduler)) => {
                parse_scheduler(scheduler).map_err(|m| Error::config(source, "analyze.scheduler", m))?;
            }
            (AnalyzeEngine::Local, _) => {}
        }
        if self.analyze.batch_size == 0 {
            return Err(Error::config(source, "analyze.batch_size", "must be at least 1"));
        }
        let v = &self.analyze.validation;
        if v.min_ts >= v.max_ts {
            return Err(Error::config(source, "analyze.validation.min_ts", "must be below analyze.validation.max_ts"));
        }
        self.train.validate(source)?;
        self.generate.validate(source)?;
        self.storage.validate(source)?;
        Ok(())
    }

    /// The configuration as TOML, e.g. for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    /// The configuration as TOML with the credentials of every URL in it
    /// (a Pushgateway's `http://user:password@host`, an input URL) replaced
    /// by `***`: what a run manifest records, which other people read.
    pub fn to_redacted_toml(&self) -> String {
        fn redact(value: &mut toml::Value) {
            match value {
                toml::Value::String(s) => *s = crate::storage::without_credentials(s),
                toml::Value::Array(values) => values.iter_mut().for_each(redact),
                toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| redact(v)),
                _ => {}
            }
        }
        match toml::Value::try_from(self) {
            Ok(mut value) => {
                redact(&mut value);
                toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot render config: {e}"))
            }
            Err(e) => format!("# cannot render config: {e}"),
        }
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message: the
/// valid key closest to the unknown one, when it is a plausible typo.
fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return String::new() };
    let Some((unknown, expected)) = rest.split_once('`') else { return String::new() };
    let candidates = expected.split('`').skip(1).step_by(2);
    let best = candidates.map(|c| (edit_distance(unknown, c), c)).min();
    match best {
        Some((d, c)) if d <= 2.max(unknown.len() / 3) => format!(" (did you mean `{c}`?)"),
        _ => String::new(),
    }
}

/// Levenshtein distance (keys are short; the quadratic table is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Parses an override value as a TOML literal (`0.1`, `true`, `"x"`, `[1, 2]`),
/// falling back to a plain string so `--set output=/tmp/x` needs no quotes.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_dotted(root: &mut toml::Table, key: &str, value: toml::Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty key segment".into());
    }
    let (last, parents) = parts.split_last().ok_or("empty key")?;
    let mut table = root;
    for part in parents {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| format!("`{part}` is a value, not a section"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// A size in bytes as the configuration writes it ("4GiB", "512MB", "0"),
/// parsed once when the configuration is read: an invalid size is an error
/// naming its key at load time, and every reader gets the byte count.
#[derive(Debug, Clone)]
pub struct ByteSize {
    text: String,
    bytes: u64,
}

/// Two sizes are equal when they are the same number of bytes, however written.
impl PartialEq for ByteSize {
    fn eq(&self, other: &ByteSize) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for ByteSize {}

impl ByteSize {
    /// `n` bytes, written as the number.
    pub fn from_bytes(n: u64) -> ByteSize {
        ByteSize { text: n.to_string(), bytes: n }
    }

    /// `n` GiB, written "<n>GiB".
    pub fn gib(n: u64) -> ByteSize {
        ByteSize { text: format!("{n}GiB"), bytes: n << 30 }
    }

    pub fn parse(text: &str) -> std::result::Result<ByteSize, String> {
        Ok(ByteSize { text: text.trim().to_string(), bytes: parse_bytes(text)? })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ByteSize, D::Error> {
        // A size is a string with a unit, or a plain byte count (`--set analyze.memory_limit=0`).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Bytes(u64),
        }
        match Written::deserialize(d)? {
            Written::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
            Written::Bytes(n) => Ok(ByteSize::from_bytes(n)),
        }
    }
}

/// Parses a byte size like "4GiB", "512MB", "1.5G" or "1048576"; "0" means none.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 =
        num.parse().map_err(|_| format!("{text:?} is not a size: expected e.g. \"4GiB\", \"512MB\" or \"0\""))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!("{text:?}: unknown size unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"));
        }
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)], sets: &[&str]) -> Result<PipelineConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, toml_text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        PipelineConfig::load(Some(&path), env, &sets)
    }

    #[test]
    fn the_manifest_copy_of_the_config_has_no_credentials() {
        let c = load("output = \"s3://bucket/root\"\n[run]\npushgateway = \"http://ops:hunter2@gw:9091\"\n", &[], &[])
            .unwrap();
        let redacted = c.to_redacted_toml();
        assert!(!redacted.contains("hunter2") && redacted.contains("http://***@gw:9091/"), "{redacted}");
        assert!(redacted.contains("s3://bucket/root"), "{redacted}");
        assert!(c.to_toml().contains("hunter2"), "only the manifest copy is redacted");
    }

    #[test]
    fn file_then_env_then_set() {
        let c = load(
            "[analyze.long_tail]\nrule = \"pareto\"\nshare = 0.3\n",
            &[("TAILFORGE_ANALYZE__LONG_TAIL__SHARE", "0.25"), ("TAILFORGE_LOG", "debug")],
            &["analyze.long_tail.min_count=5", "output=/tmp/x"],
        )
        .unwrap();
        assert_eq!(c.analyze.long_tail.rule, LongTailRule::Pareto);
        assert_eq!(c.analyze.long_tail.share, 0.25);
        assert_eq!(c.analyze.long_tail.min_count, 5);
        assert_eq!(c.output.as_deref(), Some("/tmp/x"));
        assert_eq!(c.analyze.batch_size, 8192, "untouched keys keep their defaults");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_valid_ones() {
        let e = load("[analyze]\nbatch_sise = 10\n", &[], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("p.toml") && msg.contains("batch_sise") && msg.contains("batch_size"), "{msg}");
        assert!(msg.contains("did you mean `batch_size`?"), "{msg}");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let e = load("[train]\nepoch = 3\n", &[], &["train.lr=0.01"]).unwrap_err();
        assert!(e.to_string().contains("did you mean `epochs`?"), "{e}");
        // Nothing close: no guess.
        let e = load("[analyze]\nzzzzzzzz = 1\n", &[], &[]).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[test]
    fn ballista_engine_needs_a_df_scheduler_address() {
        let c = load("", &[], &[]).unwrap();
        assert_eq!(c.analyze.engine, AnalyzeEngine::Local);
        let e = load("[analyze]\nengine = \"ballista\"\n", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("analyze.scheduler") && e.to_string().contains("df://host:50050"), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        for bad in ["http://h:50050", "df://", "df://h:50050/x", "h:50050"] {
            let e = load("", &[], &["analyze.engine=ballista", &format!("analyze.scheduler={bad}")]).unwrap_err();
            assert!(e.to_string().contains("analyze.scheduler"), "{bad}: {e}");
        }
        let e = load("[analyze]\nengine = \"spark\"\n", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("ballista"), "{e}");
        let c = load("", &[], &["analyze.engine=ballista", "analyze.scheduler=df://sched:50051"]).unwrap();
        assert_eq!(c.analyze.engine, AnalyzeEngine::Ballista);
        assert_eq!(parse_scheduler(c.analyze.scheduler.as_deref().unwrap()), Ok(("sched".to_string(), 50051)));
        assert_eq!(parse_scheduler("df://sched"), Ok(("sched".to_string(), 50050)));
    }

    #[test]
    fn wrong_type_names_the_key_and_the_override() {
        let e = load("", &[], &["analyze.batch_size=many"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("--set analyze.batch_size=many: analyze.batch_size:"), "{msg}");
    }

    #[test]
    fn out_of_range_share_is_rejected() {
        let e = load("[analyze.long_tail]\nshare = 1.5\n", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("analyze.long_tail.share"), "{e}");
    }

    /// docs/config.md is generated from the declarations above (`reference`):
    /// it must be the page they render today, with a row for every key.
    #[test]
    fn docs_config_md_is_current() {
        fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    keys(&key, v, out);
                }
            } else {
                out.push(prefix.to_string());
            }
        }
        // Keys unset by default are not in the default config's TOML: named by hand.
        let mut all = vec![
            "output".to_string(),
            "inputs.events".to_string(),
            "inputs.items".to_string(),
            "inputs.movielens".to_string(),
            "analyze.datafusion".to_string(),
            "generate.prompt".to_string(),
            "generate.n_gpu_layers".to_string(),
            "generate.limit".to_string(),
            "generate.shard".to_string(),
            "generate.cache".to_string(),
            "storage.connect_timeout_secs".to_string(),
            "storage.request_timeout_secs".to_string(),
            "run.pushgateway".to_string(),
            "run.pushgateway_job".to_string(),
        ];
        keys("", &toml::Value::try_from(PipelineConfig::default()).unwrap(), &mut all);
        let rows: Vec<String> = reference::rows().into_iter().map(|r| r.key).collect();
        for k in &all {
            assert!(rows.contains(k), "the config reference has no row for `{k}`");
        }
        let page = reference::markdown();
        for k in &all {
            assert!(page.contains(&format!("| `{k}` |")), "the rendered page has no row for `{k}`");
        }
        let committed = include_str!("../../../docs/config.md");
        if committed != page {
            let line = committed.lines().zip(page.lines()).position(|(a, b)| a != b);
            let line = line.unwrap_or_else(|| committed.lines().count().min(page.lines().count()));
            panic!(
                "docs/config.md is out of date with the config's doc comments and defaults: run `make config-docs` \
                 (first difference at line {}:\n  committed: {:?}\n  generated: {:?})",
                line + 1,
                committed.lines().nth(line).unwrap_or("(end of file)"),
                page.lines().nth(line).unwrap_or("(end of file)"),
            );
        }
    }

    #[test]
    fn storage_settings_become_the_clients_retry_policy() {
        let c =
            load("[storage]\nmax_retries = 3\nretry_timeout_secs = 7.5\n", &[], &["storage.request_timeout_secs=2"])
                .unwrap();
        let retry = c.storage.retry();
        assert_eq!(retry.max_retries, 3);
        assert_eq!(retry.retry_timeout, std::time::Duration::from_millis(7500));
        assert_eq!(retry.backoff.init_backoff, std::time::Duration::from_secs(1));
        assert_eq!(retry.backoff.base, 3.0);
        assert_eq!(c.storage.client_settings(), vec![(object_store::ClientConfigKey::Timeout, "2000ms".to_string())]);
        let e = load("", &[], &["storage.retry_timeout_secs=0"]).unwrap_err();
        assert!(e.to_string().contains("storage.retry_timeout_secs"), "{e}");
        let e = load("", &[], &["storage.backoff_base=1"]).unwrap_err();
        assert!(e.to_string().contains("storage.backoff_base"), "{e}");
    }

    #[test]
    fn an_empty_optional_text_key_is_unset() {
        let c = load("[analyze]\nspill_dir = \"\"\n", &[], &["train.embedding_cache="]).unwrap();
        assert_eq!((c.analyze.spill_dir, c.train.embedding_cache), (None, None));
        let c = load("", &[], &["analyze.spill_dir=/tmp/spill"]).unwrap();
        assert_eq!(c.analyze.spill_dir.as_deref(), Some("/tmp/spill"));
        assert!(!c.to_toml().contains("embedding_cache"), "unset keys are not printed");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_bytes("0").unwrap(), 0);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("4XB").is_err());
        // Parsed once at load: the byte count is there, the text round-trips.
        let c = load("[analyze]\nmemory_limit = \"4GiB\"\n", &[], &["analyze.max_temp_size=0"]).unwrap();
        assert_eq!((c.analyze.memory_limit.bytes(), c.analyze.memory_limit.to_string()), (4 << 30, "4GiB".into()));
        assert_eq!(c.analyze.max_temp_size.bytes(), 0);
        let e = load("[analyze]\nmemory_limit = \"lots\"\n", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("analyze.memory_limit") && e.contains("is not a size"), "{e}");
    }
}
