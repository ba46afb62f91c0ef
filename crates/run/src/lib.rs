//! `tailforge run`: the stages as one dependable batch job.
//!
//! ```text
//! <output>/
//!   _lock                       held while a run is active (conditional create)
//!   latest                      {"run_id": …}, written last, atomically
//!   metrics.prom                the last run's metrics, for a textfile collector
//!   runs/<run_id>/
//!     manifest.json             version, git revision, config hash, inputs, stages, metrics
//!                               (rewritten after each stage while the run is "running")
//!     report.md, report.html    headline numbers, head/tail metrics, plots
//!     metrics.prom
//!     analyze/  … _SUCCESS      one directory per stage, `_SUCCESS` last,
//!     generate/ … _SUCCESS      holding the stage's record (fingerprint, rows, bytes)
//!     train/<variant>/ … _SUCCESS
//!     evaluate/ … _SUCCESS
//!   cache/generate/<fingerprint>/  generated rows reused by later runs
//!   cache/text-embeddings/      item text embeddings reused by later runs
//! ```
//!
//! Re-running a run id skips every stage whose `_SUCCESS` holds the same
//! fingerprint (configuration and resolved inputs), so a scheduler can simply
//! retry a failed night: finished stages are not redone, the failed one
//! resumes (generate from its written shards, train from its last
//! checkpoint). Inputs of a run id are taken to be immutable; `force`
//! recomputes everything.
//!
//! Stages: analyze, generate (descriptions for the tail items), one train
//! stage per variant, and evaluate (the eval-v1 MostPop baseline, the
//! reference every trained model is compared with).

mod headline;
mod push;
mod recs;
mod report;
mod train_stage;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tailforge_core::hash::sha256_hex;
use tailforge_core::records::{StageStatus, test_ndcg_key};
use tailforge_core::schema::InputFile;
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{Error, Location, PipelineConfig, Result};
use tracing::{info, warn};

/// What to run.
pub struct RunRequest {
    pub config: PipelineConfig,
    /// The logical date, `YYYY-MM-DD`; replaces `{date}` in input locations.
    pub date: String,
    /// Defaults to the date, so a nightly retry resumes the same run.
    pub run_id: Option<String>,
    /// Recompute every stage even if it succeeded before.
    pub force: bool,
    /// A lock older than this is taken over (with a warning).
    pub stale_lock_after_s: u64,
}

/// `manifest.json`: everything needed to know what a run did and with what.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub date: String,
    pub tailforge_version: String,
    pub git_revision: String,
    /// sha256 of the effective configuration (TOML) with `[storage]` at its
    /// defaults: what the stage fingerprints are made of.
    pub config_hash: String,
    pub config: String,
    pub status: StageStatus,
    pub started_at: f64,
    pub finished_at: Option<f64>,
    pub input_files: Vec<InputFile>,
    /// SHA-256 of each model file the run used, e.g. the generator GGUF and
    /// the text encoder's weights.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    pub stages: Vec<StageRecord>,
    /// Headline metrics, e.g. `mostpop_test_ndcg@10_tail`.
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    /// Succeeded, skipped (succeeded earlier with the same fingerprint) or failed.
    pub status: StageStatus,
    pub fingerprint: String,
    pub started_at: f64,
    pub finished_at: f64,
    pub seconds: f64,
    pub rows: BTreeMap<String, u64>,
    pub bytes: u64,
    pub error: Option<String>,
}

/// The git revision baked in at build time (see build.rs of the CLI), or "unknown".
pub fn git_revision() -> String {
    option_env!("TAILFORGE_GIT_REVISION").unwrap_or("unknown").to_string()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Today's date in UTC as `YYYY-MM-DD` (civil-from-days, H. Hinnant).
pub fn today_utc() -> String {
    let days = (now() / 86_400.0).floor() as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Checks `YYYY-MM-DD`.
pub fn validate_date(date: &str) -> Result<()> {
    let parts: Vec<&str> = date.split('-').collect();
    let ok = parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && (1..=12).contains(&parts[1].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&parts[2].parse::<u32>().unwrap_or(0));
    if ok { Ok(()) } else { Err(Error::usage(format!("--date {date}: expected YYYY-MM-DD"))) }
}

/// A run id is a path segment: letters, digits, `-`, `_`, `.`.
fn validate_run_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(Error::usage(format!("--run-id {id:?}: use letters, digits, '-', '_' and '.'"))) }
}

/// The run lock: a conditional create of `<output>/_lock`.
///
/// The lock records who holds it: run id, pid, host, the process's start
/// time (so a reused pid is not mistaken for the holder) and the host's boot
/// id. A run that finds the lock held takes it over, with a warning, when
/// - the holder ran on this host and is gone (no such pid, another process
///   under that pid, or the host rebooted since): a run killed with
///   `kill -9`, by the OOM killer or a power cut leaves its lock behind, and
///   the scheduler's retry must not be blocked for hours by it;
/// - or the lock is older than `--stale-lock-after` (the only way for a
///   lock of another host, whose processes this one cannot see).
///
/// Otherwise the run stops with an error naming the holder. Two runs taking
/// over the same dead lock at once are serialized by a second conditional
/// create (`_lock.takeover-<hash of the dead lock>`): only its creator
/// deletes the dead lock (if it still is the one judged dead), then both
/// race for `_lock` again, which one wins; the marker goes right after that
/// race. A run killed in between leaves its marker, which the next run on
/// the host removes (its creator is gone).
struct Lock {
    location: Location,
}

#[derive(Serialize, Deserialize)]
struct LockInfo {
    run_id: String,
    pid: u32,
    host: String,
    acquired_at: f64,
    /// Start time of the process `pid` (clock ticks after boot, field 22 of
    /// `/proc/<pid>/stat`); absent in locks of older versions or off Linux.
    #[serde(default)]
    pid_start: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` of the host when the lock was taken.
    #[serde(default)]
    boot_id: Option<String>,
}

/// This host's name: the kernel's (what `hostname` prints), else `$HOSTNAME`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|b| b.trim().to_string())
}

/// Start time of process `pid` in clock ticks after boot, from
/// `/proc/<pid>/stat`; None if there is no such process (or no /proc).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: count the fields after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why the holder of `held` is certainly gone, if it ran on this host and is;
/// None when it may still be running (or this host cannot tell).
fn holder_is_gone(held: &LockInfo) -> Option<String> {
    let host = host_name();
    if host == "unknown" || held.host != host || !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    if let (Some(theirs), Some(ours)) = (&held.boot_id, boot_id())
        && *theirs != ours
    {
        return Some(format!("host {host} rebooted since the lock was taken"));
    }
    match process_start(held.pid) {
        None => Some(format!("no process {} on {host}", held.pid)),
        Some(start) if held.pid_start.is_some_and(|s| s != start) => {
            Some(format!("process {} on {host} is another process than the lock's", held.pid))
        }
        Some(_) => None,
    }
}

impl Lock {
    async fn acquire(root: &Location, run_id: &str, stale_after_s: u64) -> Result<Lock> {
        let location = root.join("_lock");
        let pid = std::process::id();
        let info = LockInfo {
            run_id: run_id.to_string(),
            pid,
            host: host_name(),
            acquired_at: now(),
            pid_start: process_start(pid),
            boot_id: boot_id(),
        };
        let body = serde_json::to_vec(&info).map_err(|e| Error::internal(e.to_string()))?;
        let mut takeover: Option<Location> = None;
        for _ in 0..4 {
            let won = location.put_if_absent(body.clone()).await;
            // Once the dead lock is gone and `_lock` was raced for, the marker
            // has done its work: a run that read the dead lock before now
            // finds another lock than the one it judged, and leaves it.
            if let Some(marker) = takeover.take()
                && let Err(e) = marker.delete_if_exists().await
            {
                warn!(error = %e, "could not remove the lock takeover marker");
            }
            if won? {
                return Ok(Lock { location });
            }
            let held_bytes = match location.get().await {
                Ok(bytes) => bytes,
                // Released between our create and our read: try again.
                Err(_) => continue,
            };
            let held: Option<LockInfo> = serde_json::from_slice(&held_bytes).ok();
            let age = held.as_ref().map(|h| now() - h.acquired_at).unwrap_or(f64::INFINITY);
            let gone = held.as_ref().and_then(holder_is_gone);
            let Some(why) = gone.or_else(|| {
                (age >= stale_after_s as f64)
                    .then(|| format!("older than --stale-lock-after {stale_after_s} s ({age:.0} s)"))
            }) else {
                // Checked above: only a parsed lock has a finite age.
                let h = held.ok_or_else(|| Error::internal("unparsed lock counted as fresh"))?;
                return Err(Error::storage(
                    location.display(),
                    format!(
                        "another run holds the lock (run {}, pid {} on {}, for {:.0} s); wait for it to finish. \
                         A dead run's lock is taken over by the next run on the same host, or after \
                         --stale-lock-after seconds (now {stale_after_s}) from any host; remove it by hand \
                         only if you know that run is gone",
                        h.run_id, h.pid, h.host, age
                    ),
                ));
            };
            let marker = root.join(&format!("_lock.takeover-{}", &sha256_hex(&held_bytes)[..16]));
            if !marker.put_if_absent(body.clone()).await? {
                // Another run is taking over this very lock: look again. If
                // that run died in the middle of it, its marker goes too.
                if let Ok(bytes) = marker.get().await
                    && let Some(taker) =
                        serde_json::from_slice::<LockInfo>(&bytes).ok().as_ref().and_then(holder_is_gone)
                {
                    warn!(marker = %marker.display(), reason = %taker, "removing the takeover marker of a dead run");
                    marker.delete_if_exists().await?;
                }
                continue;
            }
            // Delete only the lock we judged: it may have changed hands since.
            if location.get().await.ok().as_deref() == Some(&held_bytes[..]) {
                let (held_run, held_pid, held_host) =
                    held.as_ref().map(|h| (h.run_id.as_str(), h.pid, h.host.as_str())).unwrap_or(("?", 0, "?"));
                warn!(
                    lock = %location.display(),
                    run = held_run,
                    pid = held_pid,
                    host = held_host,
                    reason = %why,
                    "taking over the run lock of a dead or stale run"
                );
                location.delete_if_exists().await?;
            }
            takeover = Some(marker);
        }
        if let Some(marker) = takeover {
            let _ = marker.delete_if_exists().await;
        }
        Err(Error::storage(
            location.display(),
            "could not take the run lock: other runs keep taking it; run one at a time",
        ))
    }

    async fn release(self) {
        if let Err(e) = self.location.delete_if_exists().await {
            warn!(error = %e, "could not release the run lock");
        }
    }
}

/// Runs the pipeline; returns the manifest (also written to the run directory).
pub async fn run(req: &RunRequest) -> Result<Manifest> {
    validate_date(&req.date)?;
    let run_id = req.run_id.clone().unwrap_or_else(|| req.date.clone());
    validate_run_id(&run_id)?;
    let mut config = req.config.clone();
    for input in [&mut config.inputs.events, &mut config.inputs.items].into_iter().flatten() {
        *input = input.replace("{date}", &req.date);
    }
    let root = Location::parse(
        config
            .output
            .as_deref()
            .ok_or_else(|| Error::usage("no output: set output = \"…\" in the pipeline or --set output=URL"))?,
    )?
    .as_dir();
    tailforge_ingest::import_pipeline_inputs(&mut config).await?;
    let events = config.inputs.events.clone().ok_or_else(|| Error::usage("no inputs.events in the pipeline"))?;
    let items = config.inputs.items.clone().ok_or_else(|| Error::usage("no inputs.items in the pipeline"))?;
    if let (true, Some(shard)) = (config.generate.enabled, config.generate.shard) {
        return Err(Error::usage(format!(
            "generate.shard = \"{shard}\" is for the workers of a sharded generation (`tailforge generate --shard K/N`), \
             not for `tailforge run`: unset it here; the run's generate stage reuses the workers' rows from the shared cache \
             (docs/scaling.md)"
        )));
    }
    let run_dir = root.join(&format!("runs/{run_id}/"));
    let config_toml = config.to_redacted_toml();
    // The hash behind every stage's fingerprint leaves out `[storage]`:
    // retries and timeouts do not change outputs, and a rerun over a flaky
    // network may well raise them.
    let config_hash = {
        let mut outputs_config = config.clone();
        outputs_config.storage = Default::default();
        sha256_hex(outputs_config.to_toml().as_bytes())
    };

    let lock = Lock::acquire(&root, &run_id, req.stale_lock_after_s).await?;
    let mut manifest = Manifest {
        run_id: run_id.clone(),
        date: req.date.clone(),
        tailforge_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: git_revision(),
        config_hash: config_hash.clone(),
        config: config_toml,
        status: StageStatus::Running,
        started_at: now(),
        ..Default::default()
    };
    let started = Instant::now();
    let result = run_stages(req, &config, &events, &items, &run_dir, &mut manifest).await;
    manifest.finished_at = Some(now());
    manifest.status = if result.is_ok() { StageStatus::Succeeded } else { StageStatus::Failed };
    manifest.metrics.insert("run_seconds".into(), started.elapsed().as_secs_f64());
    let written = write_run_files(&root, &run_dir, &manifest, result.is_ok()).await;
    lock.release().await;
    if let Some(gateway) = &config.run.pushgateway {
        let job = config.run.pushgateway_job.as_deref().unwrap_or("tailforge");
        push::push_metrics(gateway, job, prometheus_text(&manifest, result.is_ok())).await;
    }
    result?;
    written?;
    Ok(manifest)
}

async fn run_stages(
    req: &RunRequest,
    config: &PipelineConfig,
    events: &str,
    items: &str,
    run_dir: &Location,
    manifest: &mut Manifest,
) -> Result<()> {
    // What the inputs hold, not only where they are: a file that lands late
    // in the same `dt=` partition (or one rewritten in place) changes the
    // listing's paths, sizes or ETags, so a rerun recomputes every stage.
    let listing =
        tailforge_analyze::list_input_files(config, &Location::parse(events)?, &Location::parse(items)?).await?;
    let inputs_hash = sha256_hex(
        listing
            .iter()
            .map(|f| format!("{}\t{}\t{}\n", f.url, f.size, f.e_tag.as_deref().unwrap_or("")))
            .collect::<String>()
            .as_bytes(),
    );
    let fingerprint = |stage: &str| {
        sha256_hex(format!("{stage}\n{}\n{events}\n{items}\n{inputs_hash}", manifest.config_hash).as_bytes())
    };

    // analyze
    let analyze_dir = run_dir.join("analyze/");
    let fp = fingerprint("analyze");
    let summary_loc = analyze_dir.join(tailforge_core::schema::outputs::SUMMARY);
    let out = analyze_dir.clone();
    let record = stage("analyze", &fp, &analyze_dir, req.force, || async move {
        let request = tailforge_analyze::AnalyzeRequest {
            events: Location::parse(events)?,
            items: Location::parse(items)?,
            out,
            config: config.clone(),
        };
        let s = tailforge_analyze::analyze(&request).await?;
        Ok(s.rows.clone())
    })
    .await?;
    let summary: tailforge_core::schema::AnalyzeSummary = serde_json::from_slice(&summary_loc.get().await?)
        .map_err(|e| Error::internal(format!("{}: {e}", summary_loc.display())))?;
    manifest.input_files = summary.input_files.clone();
    for (k, v) in [
        ("events", summary.events as f64),
        ("users", summary.users as f64),
        ("tail_items", summary.tail_items as f64),
        ("head_share", summary.head_share),
        ("gini", summary.gini),
    ] {
        manifest.metrics.insert(k.into(), v);
    }
    manifest.stages.push(record);
    save_progress(run_dir, manifest).await?;

    if config.generate.enabled {
        let fp = fingerprint("generate");
        let (stages, metrics) = (&mut manifest.stages, &mut manifest.metrics);
        let model_sha256 = run_generate(req, config, run_dir, &analyze_dir, &fp, stages, metrics).await?;
        manifest.models.insert(format!("generate: {}", config.generate.model.display()), model_sha256);
        save_progress(run_dir, manifest).await?;
    }

    if config.train.enabled {
        let generate_dir = config.generate.enabled.then(|| run_dir.join("generate/"));
        let run_id = manifest.run_id.clone();
        let (stages, metrics, models) = (&mut manifest.stages, &mut manifest.metrics, &mut manifest.models);
        train_stage::run_train(
            req,
            config,
            &run_id,
            run_dir,
            &analyze_dir,
            generate_dir,
            &fingerprint,
            stages,
            metrics,
            models,
        )
        .await?;
        save_progress(run_dir, manifest).await?;
    }

    // evaluate: the eval-v1 MostPop reference
    let eval_dir = run_dir.join("evaluate/");
    let fp = fingerprint("evaluate");
    let (input, out) = (analyze_dir.clone(), eval_dir.clone());
    let record = stage("evaluate", &fp, &eval_dir, req.force, || async move {
        use tailforge_train::eval::{EvalOptions, evaluate};
        let dataset = tailforge_train::load_dataset(&input).await?;
        let scorer = tailforge_train::baselines::MostPop::new(&dataset);
        let options = EvalOptions::default();
        let valid = evaluate(&dataset, &scorer, tailforge_train::Phase::Valid, &options)?;
        let test = evaluate(&dataset, &scorer, tailforge_train::Phase::Test, &options)?;
        let metrics = tailforge_train::BaselineMetrics { test, valid, variant: "mostpop".to_string() };
        let json = metrics.to_json()?;
        out.join("metrics.json").put(json).await?;
        out.join("metrics.md").put(test.to_markdown().into_bytes()).await?;
        Ok(BTreeMap::from([("test_cases".to_string(), test.full.overall.n as u64)]))
    })
    .await?;
    manifest.stages.push(record);
    let metrics: tailforge_train::BaselineMetrics = serde_json::from_slice(&eval_dir.join("metrics.json").get().await?)
        .map_err(|e| Error::internal(format!("evaluate/metrics.json: {e}")))?;
    for (group, figures) in metrics.test.full.groups() {
        manifest.metrics.insert(test_ndcg_key("mostpop", group), figures.ndcg);
    }
    Ok(())
}

/// The generate stage: `analyze/tail_items.parquet` → `generate/`, with the
/// cache under `<output>/cache/generate` (or `generate.cache`). A retry after
/// a crash resumes from the shards written; a changed configuration starts
/// the stage directory over (the cache still serves unchanged items).
/// Returns the SHA-256 of the model file.
#[allow(clippy::too_many_arguments)]
async fn run_generate(
    req: &RunRequest,
    config: &PipelineConfig,
    run_dir: &Location,
    analyze_dir: &Location,
    fp: &str,
    stages: &mut Vec<StageRecord>,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<String> {
    let gen_dir = run_dir.join("generate/");
    let input = analyze_dir.join(&format!("{}.parquet", tailforge_core::schema::outputs::TAIL_ITEMS));
    let mut cfg = config.generate.clone();
    cfg.cache = cfg.cache_location(config.output.as_deref());
    let out = gen_dir.clone();
    let record = stage("generate", fp, &gen_dir, req.force, || async move {
        let s = tailforge_generate::generate_with(&input, &out, &cfg, tailforge_generate::OnStale::Replace).await?;
        Ok(BTreeMap::from([("generated".to_string(), s.generated_rows), ("rejects".to_string(), s.rejected_rows)]))
    })
    .await?;
    stages.push(record);
    let loc = gen_dir.join(tailforge_core::schema::generate_outputs::SUMMARY);
    let s: tailforge_generate::GenerateSummary =
        serde_json::from_slice(&loc.get().await?).map_err(|e| Error::internal(format!("{}: {e}", loc.display())))?;
    for (k, v) in [
        ("generate_items", s.items as f64),
        ("generate_generated_rows", s.generated_rows as f64),
        ("generate_rejected_rows", s.rejected_rows as f64),
        ("generate_new_items", s.accepted as f64),
        ("generate_reused_from_cache", s.reused_from_cache as f64),
        ("generate_generated_tokens", s.generated_tokens as f64),
        ("generate_generated_tok_s", s.generated_tokens_per_s),
        ("generate_prompt_tok_s", s.prompt_tokens_per_s),
        ("generate_seconds", s.seconds),
        ("generate_grounded_rows", s.grounding.rows as f64),
        ("generate_keywords_grounded", s.grounding.keywords_grounded),
        ("generate_description_grounding_p50", s.grounding.description_share.p50),
    ] {
        metrics.insert(k.into(), v);
    }
    Ok(s.model_sha256)
}

/// Runs one stage unless it already succeeded with the same fingerprint.
/// The stage's `_SUCCESS`, written last, holds its [`StageRecord`]
/// (fingerprint, rows, bytes, times), so a rerun knows what finished from the
/// stage directory alone — also after a run that died before its manifest.
async fn stage<F, Fut>(name: &str, fingerprint: &str, dir: &Location, force: bool, body: F) -> Result<StageRecord>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<BTreeMap<String, u64>>>,
{
    let marker = dir.join(SUCCESS_MARKER);
    if !force && marker.exists().await? {
        let done: Option<StageRecord> = serde_json::from_slice(&marker.get().await?).ok();
        if let Some(done) = done.filter(|d| d.fingerprint == fingerprint && d.name == name) {
            info!(stage = name, "skipped: succeeded before with the same configuration and inputs");
            return Ok(StageRecord { status: StageStatus::Skipped, ..done });
        }
    }
    let started_at = now();
    let started = Instant::now();
    info!(stage = name, "started");
    let rows = body().await?;
    let bytes = dir
        .list_recursive()
        .await?
        .iter()
        .filter(|m| !m.location.as_ref().ends_with(SUCCESS_MARKER))
        .map(|m| m.size)
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    let record = StageRecord {
        name: name.into(),
        status: StageStatus::Succeeded,
        fingerprint: fingerprint.into(),
        started_at,
        finished_at: now(),
        seconds,
        rows,
        bytes,
        error: None,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
    marker.put(json).await?;
    info!(stage = name, seconds, "finished");
    Ok(record)
}

/// Writes the manifest as it stands (status "running") after each stage, so
/// that whoever watches the run directory sees its progress.
async fn save_progress(run_dir: &Location, manifest: &Manifest) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::internal(e.to_string()))?;
    run_dir.join("manifest.json").put(json).await
}

/// manifest.json, report.md and metrics.prom in the run directory; on
/// success also the root's metrics.prom and, last, `latest`.
async fn write_run_files(root: &Location, run_dir: &Location, manifest: &Manifest, ok: bool) -> Result<()> {
    save_progress(run_dir, manifest).await?;
    let prom = prometheus_text(manifest, ok);
    run_dir.join("metrics.prom").put(prom.clone().into_bytes()).await?;
    if ok {
        // Read before `latest` moves to this run.
        let previous = headline::previous_manifest(root).await;
        let headline = headline::Headline::new(manifest, previous.as_ref());
        run_dir.join("report.md").put(report_markdown(manifest, run_dir, headline.as_ref()).await.into_bytes()).await?;
        run_dir.join("report.html").put(report_html(manifest, run_dir, headline.as_ref()).await?.into_bytes()).await?;
        root.join("metrics.prom").put(prom.into_bytes()).await?;
        let latest = serde_json::json!({ "run_id": manifest.run_id, "manifest": format!("runs/{}/manifest.json", manifest.run_id), "finished_at": manifest.finished_at });
        root.join("latest")
            .put(serde_json::to_vec_pretty(&latest).map_err(|e| Error::internal(e.to_string()))?)
            .await?;
    }
    Ok(())
}

/// Prometheus text exposition format (for a node-exporter textfile collector or a Pushgateway).
pub fn prometheus_text(m: &Manifest, ok: bool) -> String {
    let mut s = String::new();
    let label = format!("run_id=\"{}\"", m.run_id);
    s.push_str(
        "# HELP tailforge_run_duration_seconds Wall time of the run.\n# TYPE tailforge_run_duration_seconds gauge\n",
    );
    s.push_str(&format!(
        "tailforge_run_duration_seconds{{{label}}} {}\n",
        m.metrics.get("run_seconds").copied().unwrap_or(0.0)
    ));
    s.push_str("# HELP tailforge_run_success Whether the run succeeded (1) or failed (0).\n# TYPE tailforge_run_success gauge\n");
    s.push_str(&format!("tailforge_run_success{{{label}}} {}\n", u8::from(ok)));
    s.push_str("# HELP tailforge_stage_rows Rows written per stage output.\n# TYPE tailforge_stage_rows gauge\n");
    for st in &m.stages {
        for (output, n) in &st.rows {
            s.push_str(&format!("tailforge_stage_rows{{{label},stage=\"{}\",output=\"{output}\"}} {n}\n", st.name));
        }
    }
    s.push_str(
        "# HELP tailforge_stage_seconds Wall time per stage (0 when skipped).\n# TYPE tailforge_stage_seconds gauge\n",
    );
    for st in &m.stages {
        let secs = if st.status == StageStatus::Skipped { 0.0 } else { st.seconds };
        s.push_str(&format!("tailforge_stage_seconds{{{label},stage=\"{}\"}} {secs}\n", st.name));
    }
    // One gauge per group the product exists for, each by model (index into ndcg_bars' groups).
    for (g, group, what) in [(2, "tail", "tail items"), (3, "cold", "cold targets (at most 5 training interactions)")] {
        let Some(v) = m.metrics.get(&test_ndcg_key("mostpop", group)) else { continue };
        let name = format!("tailforge_{group}_ndcg_at_10");
        s.push_str(&format!("# HELP {name} Test NDCG@10 (full ranking) on {what}, by model.\n# TYPE {name} gauge\n"));
        s.push_str(&format!("{name}{{{label},model=\"mostpop\"}} {v}\n"));
        for (model, values) in train_stage::ndcg_bars(m) {
            let variant = model.trim_start_matches("SASRec ");
            s.push_str(&format!("{name}{{{label},model=\"sasrec_{variant}\"}} {}\n", values[g]));
        }
    }
    if let Some(v) = m.metrics.get("generate_generated_tok_s") {
        s.push_str("# HELP tailforge_generate_items Tail items of the generate stage by outcome (rows in its output; new = generated by this run).\n# TYPE tailforge_generate_items gauge\n");
        for (outcome, key) in [
            ("accepted", "generate_generated_rows"),
            ("rejected", "generate_rejected_rows"),
            ("new", "generate_new_items"),
            ("reused_from_cache", "generate_reused_from_cache"),
        ] {
            let n = m.metrics.get(key).copied().unwrap_or(0.0);
            s.push_str(&format!("tailforge_generate_items{{{label},outcome=\"{outcome}\"}} {n}\n"));
        }
        s.push_str("# HELP tailforge_generate_tokens_per_second Generated tokens per second of the generate stage.\n# TYPE tailforge_generate_tokens_per_second gauge\n");
        s.push_str(&format!("tailforge_generate_tokens_per_second{{{label}}} {v}\n"));
        if let Some(g) = m.metrics.get("generate_keywords_grounded") {
            s.push_str("# HELP tailforge_generate_keywords_grounded Share of this run's accepted keywords found in the item's text or its neighbours' titles.\n# TYPE tailforge_generate_keywords_grounded gauge\n");
            s.push_str(&format!("tailforge_generate_keywords_grounded{{{label}}} {g}\n"));
        }
    }
    if ok {
        s.push_str("# HELP tailforge_last_success_timestamp_seconds When the last successful run finished.\n# TYPE tailforge_last_success_timestamp_seconds gauge\n");
        s.push_str(&format!("tailforge_last_success_timestamp_seconds {}\n", m.finished_at.unwrap_or(0.0)));
    }
    s
}

async fn report_markdown(m: &Manifest, run_dir: &Location, headline: Option<&headline::Headline>) -> String {
    let mut s = format!("# tailforge run {}\n\n", m.run_id);
    if let Some(h) = headline {
        s.push_str(&h.markdown());
        s.push('\n');
    }
    s.push_str(&format!(
        "tailforge {} ({}), config sha256 {}\n\n",
        m.tailforge_version,
        m.git_revision,
        &m.config_hash[..12]
    ));
    for (model, sha256) in &m.models {
        s.push_str(&format!("- {model}: sha256 {sha256}\n"));
    }
    if !m.models.is_empty() {
        s.push('\n');
    }
    s.push_str("| stage | status | seconds | rows |\n|---|---|---:|---|\n");
    for st in &m.stages {
        let rows: Vec<String> = st.rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s.push_str(&format!("| {} | {} | {:.2} | {} |\n", st.name, st.status, st.seconds, rows.join(", ")));
    }
    s.push_str("\n## Data\n\n| metric | value |\n|---|---:|\n");
    for k in ["events", "users", "tail_items", "head_share", "gini"] {
        if let Some(v) = m.metrics.get(k) {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
    }
    if let Some(line) = generation_line(m) {
        s.push_str(&format!("\n## Generation\n\n{line}\n"));
        let g = generation_report(run_dir).await;
        if !g.examples.is_empty() {
            s.push_str(&format!(
                "\n### Generated examples\n\n{}\n\n| tail rank | item | catalog text | description | keywords | grounding (keywords / description) |\n|---:|---|---|---|---|---:|\n",
                EXAMPLES_NOTE
            ));
            for e in &g.examples {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {:.2} / {:.2} |\n",
                    e.tail_rank.map(|r| r.to_string()).unwrap_or_else(|| "—".into()),
                    report::escape_markdown(&e.title),
                    report::escape_markdown(&e.catalog_text),
                    report::escape_markdown(&e.description),
                    report::escape_markdown(&e.keywords.join(", ")),
                    e.keyword_grounding,
                    e.description_grounding
                ));
            }
        }
        s.push_str(&format!("\n### Rejects\n\n{}\n", g.rejects_sentence()));
        if !g.reject_table().is_empty() {
            s.push_str("\n| reason | items rejected | failed attempts in this run |\n|---|---:|---:|\n");
            for (reason, items, attempts) in g.reject_table() {
                s.push_str(&format!("| {} | {items} | {attempts} |\n", report::escape_markdown(&reason)));
            }
        }
    }
    if let Ok(bytes) = run_dir.join("evaluate/metrics.md").get().await {
        s.push_str("\n## MostPop under eval-v1 (test)\n\n");
        s.push_str(&String::from_utf8_lossy(&bytes));
    }
    s.push_str(&train_stage::markdown(m, run_dir).await);
    match recs::section(m, run_dir).await {
        Ok(Some(r)) => s.push_str(&r.markdown()),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "report: cannot read the recommendations"),
    }
    s
}

/// Examples of generated rows shown in the report (none when generate did not run).
const REPORT_EXAMPLES: usize = 10;

const EXAMPLES_NOTE: &str = "Ten accepted tail items spread evenly over the tail by popularity \
    (tail rank 1 = the most popular tail item): the most popular, the least popular and evenly spaced ones between.";

/// (x, y) points of a line chart.
type Series = Vec<(f64, f64)>;

/// What the report shows of the generate stage besides its metrics.
#[derive(Default)]
struct GenerationReport {
    examples: Vec<tailforge_generate::output::Example>,
    /// Rows of `rejects/` by reason.
    rejects: BTreeMap<String, u64>,
    summary: Option<tailforge_generate::GenerateSummary>,
}

impl GenerationReport {
    /// (reason, items rejected, failed attempts of this run) for every reason seen.
    fn reject_table(&self) -> Vec<(String, u64, u64)> {
        let attempts = self.summary.as_ref().map(|s| s.filtered_attempts.clone()).unwrap_or_default();
        let reasons: std::collections::BTreeSet<&String> = self.rejects.keys().chain(attempts.keys()).collect();
        reasons
            .into_iter()
            .map(|r| (r.clone(), self.rejects.get(r).copied().unwrap_or(0), attempts.get(r).copied().unwrap_or(0)))
            .collect()
    }

    fn rejects_sentence(&self) -> String {
        let total: u64 = self.rejects.values().sum();
        if self.reject_table().is_empty() {
            "No item was rejected and no attempt failed.".into()
        } else {
            format!(
                "{total} items rejected (rows in rejects/, by the reason of their last attempt); \
                 failed attempts count every try, retried ones included."
            )
        }
    }

    /// (seconds, items done) and (seconds, generated tok/s between samples) of this run's generation.
    fn progress(&self) -> Option<(Series, Series)> {
        let p = &self.summary.as_ref()?.progress;
        if p.len() < 2 {
            return None;
        }
        let items = p.iter().map(|x| (x.seconds, x.items_done as f64)).collect();
        // Over a window of about a twentieth of the samples: one item's tokens are noise.
        let window = (p.len() / 20).max(1);
        let rate = p
            .windows(window + 1)
            .filter(|w| w[window].seconds > w[0].seconds)
            .map(|w| {
                let tokens = w[window].generated_tokens.saturating_sub(w[0].generated_tokens) as f64;
                (w[window].seconds, tokens / (w[window].seconds - w[0].seconds))
            })
            .collect();
        Some((items, rate))
    }
}

async fn generation_report(run_dir: &Location) -> GenerationReport {
    let gen_dir = run_dir.join("generate/");
    let tail_items = run_dir.join(&format!("analyze/{}.parquet", tailforge_core::schema::outputs::TAIL_ITEMS));
    let examples = tailforge_generate::output::examples(&gen_dir, &tail_items, REPORT_EXAMPLES)
        .await
        .inspect_err(|e| warn!(error = %e, "report: cannot read generated examples"))
        .unwrap_or_default();
    let rejects = tailforge_generate::output::reject_reasons(&gen_dir)
        .await
        .inspect_err(|e| warn!(error = %e, "report: cannot read the rejects"))
        .unwrap_or_default();
    let summary = match gen_dir.join(tailforge_core::schema::generate_outputs::SUMMARY).get().await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .inspect_err(|e| warn!(error = %e, "report: cannot read generate/summary.json"))
            .ok(),
        Err(_) => None,
    };
    GenerationReport { examples, rejects, summary }
}

/// One sentence on the generate stage's throughput and grounding, if it ran.
fn generation_line(m: &Manifest) -> Option<String> {
    let tok_s = m.metrics.get("generate_generated_tok_s")?;
    let g = |k: &str| m.metrics.get(k).copied().unwrap_or(0.0);
    Some(format!(
        "{} tail items: {} rows accepted, {} rejected; {} generated now, {} reused from the cache. \
         {:.0} tokens generated in {:.1} s: {tok_s:.1} generated tok/s, {:.1} prompt tok/s. \
         Grounding of this run's {} accepted rows: {:.1}% of keywords found in the item's text or its neighbours' titles; \
         median share of description words found there {:.2}.",
        g("generate_items"),
        g("generate_generated_rows"),
        g("generate_rejected_rows"),
        g("generate_new_items"),
        g("generate_reused_from_cache"),
        g("generate_generated_tokens"),
        g("generate_seconds"),
        g("generate_prompt_tok_s"),
        g("generate_grounded_rows"),
        100.0 * g("generate_keywords_grounded"),
        g("generate_description_grounding_p50"),
    ))
}

/// Popularity by rank (descending) and the head size, from item_stats.
async fn popularity(run_dir: &Location) -> Result<(Vec<u64>, usize)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Int64Type};
    let batches = tailforge_core::parquet_io::read_parquet(&run_dir.join("analyze/item_stats.parquet")).await?;
    let (mut counts, mut head) = (Vec::new(), 0);
    for b in &batches {
        let cast = |name: &str, to: &DataType| -> Result<arrow::array::ArrayRef> {
            let c = b.column_by_name(name).ok_or_else(|| Error::internal(format!("item_stats: no column {name}")))?;
            arrow::compute::cast(c, to).map_err(|e| Error::internal(e.to_string()))
        };
        let n = cast("interactions", &DataType::Int64)?;
        let g = cast("group", &DataType::Utf8)?;
        counts.extend(n.as_primitive::<Int64Type>().values().iter().map(|v| (*v).max(0) as u64));
        let g = g.as_string::<i32>();
        head += (0..g.len()).filter(|&i| g.value(i) == tailforge_core::schema::HEAD).count();
    }
    Ok((counts, head))
}

async fn report_html(m: &Manifest, run_dir: &Location, headline: Option<&headline::Headline>) -> Result<String> {
    use report::escape;
    let mut sections = Vec::new();
    if let Some(h) = headline {
        sections.push((format!("Headline: {} vs {}", h.augmented.name, h.baseline.name), h.html()));
    }
    let mut stages = String::from("<table><tr><th>stage</th><th>status</th><th>seconds</th><th>rows</th></tr>");
    for st in &m.stages {
        let rows: Vec<String> = st.rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
        stages.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
            escape(&st.name),
            escape(st.status.as_str()),
            st.seconds,
            escape(&rows.join(", "))
        ));
    }
    stages.push_str("</table>");
    sections.push(("Stages".to_string(), stages));
    let (counts, head) = popularity(run_dir).await?;
    let share = m.metrics.get("head_share").copied().unwrap_or(0.0);
    sections.push((
        "Item popularity and the long tail".to_string(),
        format!(
            "<p>Interactions by item rank (log–log). The red line is the head/tail cut: {head} head items hold {:.1}% of interactions; {} items are tail.</p>{}",
            share * 100.0,
            counts.len() - head,
            report::popularity_svg(&counts, head)
        ),
    ));
    let ndcg = |g: &str| m.metrics.get(&test_ndcg_key("mostpop", g)).copied().unwrap_or(0.0);
    let mut models = vec![("MostPop".to_string(), tailforge_core::schema::EVAL_GROUPS.map(ndcg))];
    models.extend(train_stage::ndcg_bars(m));
    sections.push((
        "Head vs tail (eval-v1, test, NDCG@10 full ranking)".to_string(),
        format!(
            "<p>One panel per group: overall, head, tail items, cold targets (at most 5 training interactions); \
             one bar per model, its value printed on it. Each panel has its own scale from 0, \
             so compare models within a panel and groups by the printed values.</p>{}",
            report::metrics_svg(&models)
        ),
    ));
    if let Some(line) = generation_line(m) {
        let g = generation_report(run_dir).await;
        let mut body = format!("<p>{}</p>", escape(&line));
        match g.progress() {
            Some((items, rate)) => body.push_str(&format!(
                "<p>This run's generation over time: items done, and generated tokens per second \
                 (over the last ~5% of the run's samples).</p>{}{}",
                report::series_svg(
                    &[("items done".to_string(), items)],
                    "seconds since the stage started",
                    "items done"
                ),
                report::series_svg(
                    &[("generated tok/s".to_string(), rate)],
                    "seconds since the stage started",
                    "generated tok/s"
                )
            )),
            None => body.push_str(
                "<p>No generation over time to show: nothing was generated in this run \
                 (every item came from the cache or an earlier attempt), or its summary has no progress record.</p>",
            ),
        }
        if !g.examples.is_empty() {
            body.push_str(&format!(
                "<h3>Generated examples</h3><p>{}</p><table class=\"examples\"><tr><th>tail rank</th><th>item</th><th>catalog text</th><th>description</th><th>keywords</th><th>grounding<br>keywords / description</th></tr>",
                escape(EXAMPLES_NOTE)
            ));
            for e in &g.examples {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} / {:.2}</td></tr>",
                    e.tail_rank.map(|r| r.to_string()).unwrap_or_else(|| "—".into()),
                    escape(&e.title),
                    escape(&e.catalog_text),
                    escape(&e.description),
                    escape(&e.keywords.join(", ")),
                    e.keyword_grounding,
                    e.description_grounding
                ));
            }
            body.push_str("</table>");
        }
        body.push_str(&format!("<h3>Rejects</h3><p>{}</p>", escape(&g.rejects_sentence())));
        let table = g.reject_table();
        if !table.is_empty() {
            body.push_str("<table class=\"rejects\"><tr><th>reason</th><th>items rejected</th><th>failed attempts in this run</th></tr>");
            for (reason, items, attempts) in table {
                body.push_str(&format!("<tr><td>{}</td><td>{items}</td><td>{attempts}</td></tr>", escape(&reason)));
            }
            body.push_str("</table>");
        }
        sections.push(("Generation".to_string(), body));
    }
    if let Some(curves) = train_stage::curves_html(m, run_dir).await {
        sections.push(("Training curves".to_string(), curves));
    }
    match recs::section(m, run_dir).await {
        Ok(Some(r)) => sections.push(("Recommendations".to_string(), r.html())),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "report: cannot read the recommendations"),
    }
    sections.push((
        "Provenance".to_string(),
        format!(
            "<p>tailforge {} ({}), config sha256 <code>{}</code>, {} input files.</p><ul>{}</ul>",
            escape(&m.tailforge_version),
            escape(&m.git_revision),
            escape(&m.config_hash),
            m.input_files.len(),
            m.models
                .iter()
                .map(|(model, sha)| format!("<li>{}: sha256 <code>{}</code></li>", escape(model), escape(sha)))
                .collect::<String>()
        ),
    ));
    Ok(report::html(&format!("tailforge run {}", m.run_id), &sections))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_run_ids() {
        assert!(validate_date("2026-11-22").is_ok());
        assert!(validate_date("2026-13-01").is_err());
        assert!(validate_date("26-11-22").is_err());
        assert_eq!(today_utc().len(), 10);
        validate_date(&today_utc()).unwrap();
        assert!(validate_run_id("2026-11-22_retry.1").is_ok());
        assert!(validate_run_id("../etc").is_err());
        assert!(validate_run_id("").is_err());
    }

    #[test]
    fn generation_over_time_is_items_done_and_a_token_rate_between_samples() {
        use tailforge_generate::{GenerateSummary, ProgressPoint};
        let point = |seconds, items_done, generated_tokens| ProgressPoint { seconds, items_done, generated_tokens };
        let mut g = GenerationReport {
            summary: Some(GenerateSummary {
                progress: vec![point(0.5, 0, 0), point(2.5, 1, 100), point(3.5, 2, 150)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (items, rate) = g.progress().unwrap();
        assert_eq!(items, [(0.5, 0.0), (2.5, 1.0), (3.5, 2.0)]);
        assert_eq!(rate, [(2.5, 50.0), (3.5, 50.0)]);
        // Nothing generated (all from the cache): no chart.
        g.summary.as_mut().unwrap().progress.truncate(1);
        assert!(g.progress().is_none());
        g.rejects.insert("refusal".into(), 2);
        g.summary.as_mut().unwrap().filtered_attempts.insert("truncated".into(), 3);
        assert_eq!(g.reject_table(), [("refusal".into(), 2, 0), ("truncated".into(), 0, 3)]);
        assert!(g.rejects_sentence().starts_with("2 items rejected"));
    }

    #[tokio::test]
    async fn a_held_lock_refuses_a_second_run_and_a_stale_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let first = Lock::acquire(&root, "a", 3600).await.unwrap();
        let err = Lock::acquire(&root, "b", 3600).await.err().expect("second run refused");
        assert!(err.to_string().contains("another run holds the lock (run a"), "{err}");
        // With a zero staleness bound the held lock counts as stale and is taken over.
        let second = Lock::acquire(&root, "c", 0).await.unwrap();
        second.release().await;
        drop(first);
        assert!(!root.join("_lock").exists().await.unwrap());
    }

    fn lock_file(root: &std::path::Path, pid: u32, host: &str, pid_start: Option<u64>) {
        let info = LockInfo {
            run_id: "dead".into(),
            pid,
            host: host.into(),
            acquired_at: now(),
            pid_start,
            boot_id: boot_id(),
        };
        std::fs::write(root.join("_lock"), serde_json::to_vec(&info).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_lock_of_a_dead_process_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap();
        // A process that has exited: its pid is (for now) nobody's.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        lock_file(dir.path(), dead, &host_name(), Some(1));
        let lock = Lock::acquire(&root, "next", 3600).await.expect("a dead holder's lock is taken over");
        let held: LockInfo = serde_json::from_slice(&root.join("_lock").get().await.unwrap()).unwrap();
        assert_eq!((held.run_id.as_str(), held.pid), ("next", std::process::id()));
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["_lock"], "no takeover marker is left");
        lock.release().await;
        assert!(!root.join("_lock").exists().await.unwrap());

        // The marker of a run killed in the middle of a takeover (its creator
        // is dead) does not block the next one.
        lock_file(dir.path(), dead, &host_name(), Some(1));
        let hash = sha256_hex(&std::fs::read(dir.path().join("_lock")).unwrap());
        let marker = dir.path().join(format!("_lock.takeover-{}", &hash[..16]));
        let taker = LockInfo {
            run_id: "killed".into(),
            pid: dead,
            host: host_name(),
            acquired_at: now(),
            pid_start: None,
            boot_id: None,
        };
        std::fs::write(&marker, serde_json::to_vec(&taker).unwrap()).unwrap();
        Lock::acquire(&root, "next", 3600).await.expect("a dead taker's marker is removed").release().await;
        assert!(!marker.exists());

        // A live holder (this very process) keeps its lock...
        let me = std::process::id();
        lock_file(dir.path(), me, &host_name(), process_start(me));
        let err = Lock::acquire(&root, "next", 3600).await.err().expect("a live holder keeps the lock");
        assert!(err.to_string().contains("another run holds the lock (run dead, pid"), "{err}");
        // ...but not a pid that now belongs to another process (other start time).
        lock_file(dir.path(), me, &host_name(), process_start(me).map(|s| s + 1));
        Lock::acquire(&root, "next", 3600).await.expect("a reused pid is not the holder").release().await;
        // A lock of another host cannot be judged from here: only its age counts.
        lock_file(dir.path(), dead, "some-other-host", None);
        assert!(Lock::acquire(&root, "next", 3600).await.is_err());
        Lock::acquire(&root, "next", 0).await.expect("stale by age").release().await;
    }

    #[test]
    fn process_start_reads_the_stat_line_after_the_command_name() {
        let me = process_start(std::process::id()).expect("this process has a start time");
        assert!(me > 0);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process_start(pid), None, "a reaped process has no /proc entry");
    }
}
