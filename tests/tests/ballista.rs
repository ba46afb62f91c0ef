//! `analyze.engine = "ballista"`: the same SQL run by a real Ballista
//! cluster — one scheduler and two executors started in this test process
//! on 127.0.0.1 from Ballista's own crates — must write every output table
//! equal to the local engine's, on demo data and on MovieLens-100k. A
//! cluster that does not know tailforge's `list_field` function fails with
//! an error naming the query; an unreachable scheduler is a config error.
//!
//! Without the `ballista` feature, only the "not built in" error is checked.

use std::collections::BTreeMap;
use std::path::Path;

#[cfg(feature = "ballista")]
use tailforge_tests::analyze_movielens;
use tailforge_tests::{TestDir, read_parquet};

#[cfg(not(feature = "ballista"))]
#[test]
fn ballista_engine_without_the_feature_is_a_config_error() {
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "50", "--items", "40", "--events", "600", "--seed", "1", "--out", "gen"]);
    let err = t.run_fails(
        &[
            "analyze",
            "--events",
            "gen/events",
            "--items",
            "gen/items",
            "--out",
            "out",
            "--set",
            "analyze.engine=ballista",
            "--set",
            "analyze.scheduler=df://127.0.0.1:50050",
        ],
        2,
    );
    assert!(err.contains("--features ballista") && err.contains("analyze.engine"), "{err}");
}

/// Every `*.parquet` output below `dir`, as its schema and its rows rendered
/// as text, sorted (the engines may emit rows of unordered outputs in a
/// different order; the values must be the same).
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
fn tables(dir: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".parquet") {
            continue;
        }
        let batch = read_parquet(&path);
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Vec<_> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter")).collect();
        let mut rows: Vec<String> = (0..batch.num_rows())
            .map(|i| formatters.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join(" | "))
            .collect();
        rows.sort();
        out.insert(name, (format!("{:?}", batch.schema().fields()), rows));
    }
    out
}

/// summary.json without its timings.
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v.as_object_mut().expect("object").remove("timings");
    v
}

#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
fn assert_same_outputs(local: &Path, remote: &Path, what: &str) {
    let (l, r) = (tables(local), tables(remote));
    assert_eq!(l.keys().collect::<Vec<_>>(), r.keys().collect::<Vec<_>>(), "{what}: output files differ");
    assert!(l.len() >= 6, "{what}: expected the six output tables, got {:?}", l.keys());
    for (name, (schema, rows)) in &l {
        let (rschema, rrows) = &r[name];
        assert_eq!(schema, rschema, "{what}: {name}: schemas differ");
        assert!(!rows.is_empty() || name == "neighbors.parquet", "{what}: {name} is empty");
        assert_eq!(rows.len(), rrows.len(), "{what}: {name}: row counts differ");
        let first_diff = rows.iter().zip(rrows).position(|(a, b)| a != b);
        assert!(first_diff.is_none(), "{what}: {name}: first differing row {first_diff:?}");
    }
    assert_eq!(summary(local), summary(remote), "{what}: summary.json differs");
    assert!(remote.join("_SUCCESS").is_file(), "{what}: no _SUCCESS");
}

#[cfg(feature = "ballista")]
mod cluster {
    use std::sync::Arc;

    use ballista_core::extension::{SessionConfigExt, ballista_scalar_functions};
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::session_state::SessionState;
    use datafusion::prelude::SessionConfig;

    use super::*;

    /// A scheduler and two executors (2 task slots each) on 127.0.0.1, kept
    /// alive as long as the returned runtime; the `df://` address to use.
    /// `with_udf`: whether they know tailforge's `list_field` function.
    pub fn start(with_udf: bool) -> (tokio::runtime::Runtime, String) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let url = rt.block_on(async move {
            let mut functions = ballista_scalar_functions();
            if with_udf {
                functions.push(Arc::new(tailforge_analyze::udf::ListField::udf()));
            }
            let state: SessionState = SessionStateBuilder::new()
                .with_default_features()
                .with_config(SessionConfig::new_with_ballista())
                .with_scalar_functions(functions)
                .build();
            let addr =
                ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state).await.expect("scheduler");
            let grpc = format!("http://127.0.0.1:{}", addr.port());
            for _ in 0..2 {
                let client = loop {
                    match SchedulerGrpcClient::connect(grpc.clone()).await {
                        Ok(c) => break c,
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                };
                ballista_executor::new_standalone_executor_from_state(client, 2, &state).await.expect("executor");
            }
            format!("df://127.0.0.1:{}", addr.port())
        });
        (rt, url)
    }
}

#[cfg(feature = "ballista")]
#[test]
fn ballista_writes_the_same_tables_as_local_on_demo_data_and_movielens() {
    let (_rt, url) = cluster::start(true);
    let engine = ["--set", "analyze.engine=ballista", "--set"];
    let scheduler = format!("analyze.scheduler={url}");

    // Demo data (small).
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "300", "--items", "200", "--events", "9000", "--seed", "4", "--out", "gen"]);
    let (events, items) = (t.path_str("gen/events"), t.path_str("gen/items"));
    let (local, remote) = (t.path_str("local"), t.path_str("remote"));
    t.run_ok(&["analyze", "--events", &events, "--items", &items, "--out", &local]);
    let mut args = vec!["analyze", "--events", &events, "--items", &items, "--out", &remote];
    args.extend(engine);
    args.push(&scheduler);
    let out = t.run_ok(&args);
    let log = tailforge_tests::stderr(&out);
    assert!(log.contains("ballista"), "the log should say which engine ran:\n{log}");
    assert_same_outputs(&t.path("local"), &t.path("remote"), "demo data");

    // MovieLens-100k, through the same import the other tests use.
    let m = TestDir::new();
    analyze_movielens(&m, &[]);
    let local = m.path("out");
    let remote = m.path_str("remote");
    let (ev, it) = (m.path_str("ml/events"), m.path_str("ml/items"));
    let mut args = vec!["analyze", "--events", &ev, "--items", &it, "--out", &remote];
    args.extend(engine);
    args.push(&scheduler);
    m.run_ok(&args);
    assert_same_outputs(&local, &m.path("remote"), "MovieLens-100k");
}

#[cfg(feature = "ballista")]
#[test]
fn a_cluster_without_list_field_fails_naming_the_query() {
    let (_rt, url) = cluster::start(false);
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "50", "--items", "40", "--events", "600", "--seed", "1", "--out", "gen"]);
    let scheduler = format!("analyze.scheduler={url}");
    let err = t.run_fails(
        &[
            "analyze",
            "--events",
            "gen/events",
            "--items",
            "gen/items",
            "--out",
            "out",
            "--set",
            "analyze.engine=ballista",
            "--set",
            &scheduler,
        ],
        1,
    );
    assert!(err.contains("sql/sequences.sql") && err.contains("list_field") && err.contains("Ballista"), "{err}");
    assert!(!t.path("out/_SUCCESS").exists(), "a failed run must not mark its output complete");
}

#[cfg(feature = "ballista")]
#[test]
fn an_unreachable_scheduler_is_a_config_error() {
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "50", "--items", "40", "--events", "600", "--seed", "1", "--out", "gen"]);
    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let scheduler = format!("analyze.scheduler=df://127.0.0.1:{port}");
    let err = t.run_fails(
        &[
            "analyze",
            "--events",
            "gen/events",
            "--items",
            "gen/items",
            "--out",
            "out",
            "--set",
            "analyze.engine=ballista",
            "--set",
            &scheduler,
        ],
        2,
    );
    assert!(err.contains("analyze.scheduler") && err.contains("cannot reach the Ballista scheduler"), "{err}");
}
