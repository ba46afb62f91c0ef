//! Crash harness over whole runs: `tailforge run` is killed with SIGKILL (its
//! whole process group) at seeded random points spread over every stage, then
//! rerun until it completes; the final outputs must equal an uninterrupted
//! run's. Also: two runs started at once on one output root, and a disk that
//! fills up during a write.
//!
//! `TAILFORGE_CRASH_POINTS` (default 4, `make reliability` uses 20) sets the
//! number of kill points, `TAILFORGE_CRASH_SEED` (default 21) their seed. Each
//! kill point is logged to stderr (`--nocapture` to see it) with its delay and
//! the stage that was running per the run's log. docs/reliability.md
//! ("Crash harness") has the results.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tailforge_tests::*;

const DATE: &str = "2026-11-22";
const RUN: &str = "runs/2026-11-22";
/// Where a kill point aims, in run order; `finish` is the tail of the run
/// after the last stage (manifest, reports, metrics.prom, `latest`, the lock).
const TARGETS: [&str; 5] = ["analyze", "generate", "train_id", "evaluate", "finish"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Demo data (300 users, 200 items) and a pipeline with every stage: analyze,
/// generate (8 tail items, SmolLM2), train (SASRec id, 2 epochs, maxlen 20),
/// evaluate.
fn setup() -> TestDir {
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "300", "--items", "200", "--events", "9000", "--seed", "4", "--out", "gen"]);
    std::fs::write(
        t.path("crash.toml"),
        format!(
            "seed = 42\n[inputs]\nevents = \"gen/events/\"\nitems = \"gen/items/\"\n\
             [generate]\nenabled = true\nmodel = \"{}\"\nlimit = 8\nparallel = 4\nn_threads = 1\n\
             [train]\nenabled = true\nvariants = [\"id\"]\nepochs = 2\neval_every = 1\nmaxlen = 20\n",
            smollm2().display()
        ),
    )
    .unwrap();
    t
}

/// How an attempt ended.
struct Attempt {
    /// The exit code; None when killed.
    code: Option<i32>,
    /// Where the kill landed: the stage running per the log, the delay after
    /// the target's start and the time into the attempt.
    killed: Option<(String, f64, f64)>,
    /// Seconds from the end of the evaluate stage to the end of the process's
    /// log: how long the finish (manifest, reports, `latest`, the lock) took.
    finish_seconds: Option<f64>,
    stderr: String,
}

/// One `tailforge run` into `out`, in its own process group. With `kill`
/// (target, delay): once the log shows the target stage starting (for
/// `finish`: the evaluate stage ending), waits `delay` and SIGKILLs the group.
fn attempt(t: &TestDir, out: &str, kill: Option<(&str, f64)>) -> Attempt {
    let output = format!("output={}", t.path_str(out));
    let mut child = t
        .cmd()
        .args(["--log-format", "json", "run", "crash.toml", "--date", DATE, "--set", &output])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn tailforge");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut log = String::new();
    let mut running = "start (config, lock, input listing)".to_string();
    let mut deadline: Option<(Instant, Instant)> = None; // (kill at, target seen at)
    let mut killed = None;
    let mut evaluate_done: Option<Instant> = None;
    loop {
        let wait =
            deadline.map(|(at, _)| at.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(1));
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let message = event["message"].as_str().unwrap_or("");
                let stage = event["stage"].as_str().unwrap_or("");
                let seen = if message == "started" {
                    running = stage.to_string();
                    stage
                } else if (message == "finished" || message.starts_with("skipped")) && !stage.is_empty() {
                    running = format!("after {stage}");
                    if stage == "evaluate" {
                        evaluate_done = Some(Instant::now());
                        running = "finish (manifest, reports, latest)".into();
                        "finish"
                    } else {
                        ""
                    }
                } else {
                    ""
                };
                if let Some((target, delay)) = kill
                    && deadline.is_none()
                    && seen == target
                {
                    let now = Instant::now();
                    deadline = Some((now + Duration::from_secs_f64(delay), now));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some((at, seen_at)) = deadline
            && killed.is_none()
            && Instant::now() >= at
        {
            // SIGKILL the run at once (no process to spawn first: the finish
            // lasts milliseconds), then whatever else is in its process group.
            let _ = child.kill();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
            killed = Some((running.clone(), seen_at.elapsed().as_secs_f64(), started.elapsed().as_secs_f64()));
        }
    }
    let finish_seconds = evaluate_done.map(|at| at.elapsed().as_secs_f64());
    reader.join().unwrap();
    let status = child.wait().unwrap();
    // A kill that came after the process had exited does not count.
    let killed = if status.code().is_some() { None } else { killed };
    Attempt { code: status.code(), killed, finish_seconds, stderr: log }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files below `dir`, relative to it, sorted.
fn relative_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out)
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf())
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}

/// A staging file of a write that never completed (object_store's local
/// store writes `<name>#<n>` and renames it into place).
fn is_staging(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every row of a Parquet file, rendered, sorted: the file's row multiset.
fn row_multiset(path: &Path) -> Vec<String> {
    let b = read_parquet(path);
    let opts = arrow::util::display::FormatOptions::default();
    let cols: Vec<arrow::util::display::ArrayFormatter> =
        b.columns().iter().map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
    let mut rows: Vec<String> = (0..b.num_rows())
        .map(|r| cols.iter().map(|f| f.value(r).to_string()).collect::<Vec<_>>().join("\u{1f}"))
        .collect();
    rows.sort();
    rows
}

/// Checks a crashed-and-resumed output root against the uninterrupted one;
/// returns what was compared, for the log.
fn check_against_reference(reference: &Path, out: &Path) -> Vec<String> {
    let mut checked = Vec::new();
    let (rr, ro) = (reference.join(RUN), out.join(RUN));
    // The lock is released (every kill's lock was taken over), no takeover marker is left.
    let root_files: Vec<String> =
        std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!root_files.iter().any(|f| f.starts_with("_lock")), "lock left behind: {root_files:?}");
    // The manifest: succeeded, the same stages, each succeeded or skipped.
    let (m_ref, m) = (json(&rr.join("manifest.json")), json(&ro.join("manifest.json")));
    assert_eq!(m["status"], "succeeded", "{m}");
    let names = |m: &serde_json::Value| -> Vec<String> {
        m["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&m), names(&m_ref));
    for s in m["stages"].as_array().unwrap() {
        assert!(s["status"] == "succeeded" || s["status"] == "skipped", "stage not ok: {s}");
        assert!(ro.join(s["name"].as_str().unwrap().replace("train_", "train/")).join("_SUCCESS").is_file());
    }
    // Each stage's record is the one its `_SUCCESS` holds (fingerprints differ
    // from the reference's: the output root is part of the configuration).
    for s in m["stages"].as_array().unwrap() {
        let done = json(&ro.join(s["name"].as_str().unwrap().replace("train_", "train/")).join("_SUCCESS"));
        assert_eq!(s["fingerprint"], done["fingerprint"], "{s}");
        assert_eq!(s["rows"], done["rows"], "{s}");
    }
    // The data metrics are the reference's.
    for k in ["events", "users", "tail_items", "head_share", "gini", "mostpop_test_ndcg@10_tail"] {
        assert_eq!(m["metrics"][k], m_ref["metrics"][k], "{k}");
    }
    checked.push("manifest succeeded, stages ok and as their _SUCCESS records, same data metrics".to_string());
    // latest points at this run, whose manifest is complete.
    let latest = json(&out.join("latest"));
    assert_eq!(latest["run_id"], DATE);
    assert_eq!(json(&out.join(latest["manifest"].as_str().unwrap()))["status"], "succeeded");
    for f in ["report.md", "report.html", "metrics.prom"] {
        assert!(std::fs::metadata(ro.join(f)).unwrap().len() > 0, "{f} empty");
    }
    assert!(std::fs::read_to_string(out.join("metrics.prom")).unwrap().contains("tailforge_run_success{"));
    // Every Parquet file below the root is complete (readable); no staging file
    // was renamed into place half-written.
    let files = relative_files(out);
    for f in files.iter().filter(|f| !is_staging(f) && f.extension().is_some_and(|e| e == "parquet")) {
        read_parquet(&out.join(f));
    }
    let staging: Vec<&PathBuf> = files.iter().filter(|f| is_staging(f)).collect();
    checked.push(format!("{} files, all Parquet readable, {} staging leftovers", files.len(), staging.len()));
    // analyze: the same files with the same row multisets (so no duplicated row).
    let parquet_in = |dir: &Path| -> Vec<PathBuf> {
        relative_files(dir)
            .into_iter()
            .filter(|f| !is_staging(f) && f.extension().is_some_and(|e| e == "parquet"))
            .collect()
    };
    let analyze = parquet_in(&rr.join("analyze"));
    assert!(!analyze.is_empty());
    assert_eq!(parquet_in(&ro.join("analyze")), analyze, "analyze files differ");
    for f in &analyze {
        assert_eq!(
            row_multiset(&ro.join("analyze").join(f)),
            row_multiset(&rr.join("analyze").join(f)),
            "{}",
            f.display()
        );
    }
    checked.push(format!("analyze: {} Parquet files, equal row multisets", analyze.len()));
    // generate: the same items, each once (shard_rows panics on a repeated item
    // id), accepted or rejected alike; the generated text itself (timings aside).
    let timings = ["generation_ms"];
    for part in ["generated", "rejects"] {
        let (a, b) = (
            shard_rows(&ro.join("generate").join(part), &timings),
            shard_rows(&rr.join("generate").join(part), &timings),
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "generate/{part}: item ids differ");
        assert_eq!(a, b, "generate/{part}: rows differ");
    }
    let items =
        shard_rows(&ro.join("generate/generated"), &[]).len() + shard_rows(&ro.join("generate/rejects"), &[]).len();
    assert_eq!(items, 8, "every one of the 8 items once");
    checked.push("generate: same item ids (each once) and rows as the reference".to_string());
    // train: complete outputs and metrics.
    let metrics = json(&ro.join("train/id/metrics.json"));
    assert_eq!(metrics["epochs"], 2, "{metrics}");
    assert!(metrics["test"]["full"]["tail"]["ndcg@10"].is_number(), "{metrics}");
    assert!(m["metrics"]["id_test_ndcg@10_tail"].is_number(), "{m}");
    assert_eq!(
        read_parquet(&ro.join("train/id/item_embeddings.parquet")).num_rows(),
        read_parquet(&rr.join("train/id/item_embeddings.parquet")).num_rows()
    );
    checked.push(format!(
        "train: metrics present (test NDCG@10 tail {} vs {} uninterrupted)",
        m["metrics"]["id_test_ndcg@10_tail"], m_ref["metrics"]["id_test_ndcg@10_tail"]
    ));
    // evaluate: MostPop's metrics are the reference's.
    assert_eq!(json(&ro.join("evaluate/metrics.json")), json(&rr.join("evaluate/metrics.json")));
    checked.push("evaluate: metrics.json equal".to_string());
    checked
}

/// The harness: kill points at seeded delays, a rerun after each kill, the
/// final outputs against an uninterrupted run.
#[test]
fn a_run_killed_at_any_point_resumes_to_the_uninterrupted_result() {
    let _llm = llm_lock();
    let t = setup();
    let points = env_u64("TAILFORGE_CRASH_POINTS", 4) as usize;
    let seed = env_u64("TAILFORGE_CRASH_SEED", 21);
    let started = Instant::now();
    let reference = attempt(&t, "ref", None);
    assert_eq!(reference.code, Some(0), "the uninterrupted run failed:\n{}", reference.stderr);
    let m = json(&t.path("ref").join(RUN).join("manifest.json"));
    // How long each target lasts in the uninterrupted run: kill delays are drawn within it.
    let mut length: BTreeMap<String, f64> = m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["seconds"].as_f64().unwrap()))
        .collect();
    length.insert("finish".into(), reference.finish_seconds.expect("the reference logged the evaluate stage's end"));
    eprintln!(
        "crash harness: {points} kill points, seed {seed}; uninterrupted run {:.1} s, stages {length:?}",
        started.elapsed().as_secs_f64()
    );

    let mut rng = tailforge_core::rng::SplitMix64::new(seed);
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    let (mut kills, mut round) = (0, 0);
    // Kill points aim at the targets in run order, on one output root per
    // round: each attempt after a kill is the rerun, which resumes (so its
    // earlier stages are skipped) until the next kill point. A round ends
    // after the last target, or early when an attempt completes before its
    // kill point; then its output is checked and the next point starts a
    // fresh root.
    let mut root: Option<String> = None;
    for i in 0..points {
        let target = TARGETS[i % TARGETS.len()];
        let out = root.get_or_insert_with(|| {
            round += 1;
            format!("crash-{round}")
        });
        // Within 80% of the target's length in the uninterrupted run: runs on
        // a shared machine vary, and a kill after the end hits the next stage.
        let delay = rng.unit_f64() * 0.8 * length[target];
        let a = attempt(&t, out, Some((target, delay)));
        let took_over = if a.stderr.contains("taking over the run lock") {
            "; took over the lock of the previous kill"
        } else {
            ""
        };
        let n = i + 1;
        match &a.killed {
            Some((stage, after, into)) => {
                kills += 1;
                *hits.entry(stage.clone()).or_default() += 1;
                eprintln!(
                    "kill point {n}/{points} (round {round}): target {target} +{delay:.2} s; SIGKILL {after:.2} s after it started, {into:.2} s into the attempt, while running: {stage}{took_over}"
                );
            }
            None => {
                assert_eq!(a.code, Some(0), "attempt {n} failed without being killed:\n{}", a.stderr);
                eprintln!(
                    "kill point {n}/{points} (round {round}): target {target} +{delay:.2} s; the run completed first{took_over}"
                );
            }
        }
        let round_over = a.killed.is_none() || n % TARGETS.len() == 0 || n == points;
        if round_over && let Some(out) = root.take() {
            if a.killed.is_some() {
                // The rerun after the round's last kill: once must complete it.
                let last = attempt(&t, &out, None);
                assert_eq!(last.code, Some(0), "the rerun after the kills failed:\n{}", last.stderr);
            }
            let checked = check_against_reference(&t.path("ref"), &t.path(&out));
            eprintln!("round {round}: completed and equal to the uninterrupted run: {}", checked.join("; "));
        }
    }
    eprintln!(
        "crash harness: {kills} of {points} kill points landed, by stage {hits:?}, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(kills * 2 >= points, "only {kills} of {points} kill points landed before the run finished");
}

#[test]
fn of_two_runs_started_at_once_on_one_output_exactly_one_proceeds() {
    let t = small_pipeline("small.toml");
    let spawn = || {
        t.cmd()
            .args(["run", "small.toml", "--date", DATE])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tailforge")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(1)], "one run proceeds, the other stops:\n{}\n{}", stderr(&a), stderr(&b));
    let loser = if a.status.success() { &b } else { &a };
    let err = stderr(loser);
    assert!(err.contains("another run holds the lock (run 2026-11-22, pid"), "{err}");
    assert!(err.contains("wait for it to finish"), "the message says what to do: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let m = json(&t.path("out").join(RUN).join("manifest.json"));
    assert_eq!(m["status"], "succeeded", "the refused run did not touch the winner's manifest: {m}");
    assert!(!t.path("out/_lock").exists(), "the winner released the lock");
}

/// A disk that fills up during a write, modelled with RLIMIT_FSIZE: a write
/// past the limit fails with EFBIG as one on a full disk fails with ENOSPC
/// (SIGXFSZ ignored, as the shell's `trap` leaves it for the exec'd run).
#[test]
fn a_full_disk_fails_the_run_cleanly_and_the_rerun_completes() {
    let t = small_pipeline("small.toml");
    // 64 blocks of 512 bytes: the config, lock and small files fit, the analyze tables do not.
    let out = std::process::Command::new("sh")
        .current_dir(t.path(""))
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 64 && exec \"$@\"")
        .arg("sh")
        .arg(binary())
        .args(["run", "small.toml", "--date", DATE])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a write error is exit 1:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("File too large"), "the message names the cause:\n{err}");
    assert!(err.contains(&t.path_str("out")), "the message names the location:\n{err}");
    // Nothing half-written is visible: no file at the limit, every Parquet file
    // and JSON record complete, no staging file renamed into place.
    let files = relative_files(&t.path("out"));
    eprintln!("after the failed write: {files:?}");
    for f in &files {
        let path = t.path("out").join(f);
        if is_staging(f) {
            continue;
        }
        assert!(std::fs::metadata(&path).unwrap().len() < 64 * 512, "{} reached the limit", f.display());
        match f.extension().and_then(|e| e.to_str()) {
            Some("parquet") => {
                read_parquet(&path);
            }
            Some("json") => {
                json(&path);
            }
            _ => {}
        }
    }
    assert!(!files.iter().any(|f| is_staging(f)), "staging files left behind: {files:?}");
    assert!(!t.path("out/latest").exists(), "latest does not move to a failed run");
    assert!(!t.path("out/_lock").exists(), "a failed run releases its lock");
    assert!(!t.path("out").join(RUN).join("analyze/_SUCCESS").exists());
    // With room again, the rerun completes.
    t.run_ok(&["run", "small.toml", "--date", DATE]);
    assert_eq!(json(&t.path("out").join(RUN).join("manifest.json"))["status"], "succeeded");
}
