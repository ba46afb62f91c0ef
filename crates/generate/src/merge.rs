//! Joining the parts of a sharded generation (`tailforge generate --merge`).
//!
//! Each worker of `generate.shard = "K/N"` writes a complete generate output
//! of its own below the common one:
//!
//! ```text
//! <out>/shard-0-of-3/generated/part-NNNNN.parquet, rejects/…, summary.json, _FINGERPRINT, _SUCCESS
//! <out>/shard-1-of-3/…
//! <out>/shard-2-of-3/…
//! ```
//!
//! The merge checks that all N parts finished with the same fingerprint,
//! then lays their shards out as one output at `<out>/` (`generated/`,
//! `rejects/`, `summary.json`, `_SUCCESS`), exactly what an unsharded run
//! writes, so `tailforge train --augment <out>` and every other reader take
//! it unchanged. The shards are copied, not rewritten: rows stay byte for
//! byte what the workers wrote. `_SUCCESS` goes first out and last in, so a
//! killed merge is simply run again.

use std::collections::BTreeMap;

use arrow::array::{Array, Float64Array, ListArray};
use tailforge_core::config::Shard;
use tailforge_core::parquet_io::read_parquet;
use tailforge_core::schema::generate_outputs::SUMMARY;
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{DataError, Error, Location, Result};

use crate::grounding::{Grounding, GroundingSummary, summarize};
use crate::output::{self, GENERATED_DIR, REJECTS_DIR};
use crate::{FINGERPRINT_FILE, GenerateSummary};

/// The shards of one worker count found below `out`, by part, with whether each finished.
async fn find_shards(out: &Location) -> Result<BTreeMap<u32, BTreeMap<u32, bool>>> {
    let prefix = out.path().as_ref().to_string();
    let mut counts: BTreeMap<u32, BTreeMap<u32, bool>> = BTreeMap::new();
    for object in out.list_recursive().await? {
        let relative = object.location.as_ref().strip_prefix(&prefix).unwrap_or_default().trim_start_matches('/');
        let Some((dir, rest)) = relative.split_once('/') else { continue };
        let Some(shard) = Shard::from_dir_name(dir) else { continue };
        let finished = counts.entry(shard.count).or_default().entry(shard.index).or_default();
        *finished |= rest == SUCCESS_MARKER;
    }
    Ok(counts)
}

/// Which worker count to merge: the only one present, else the only one whose every part finished.
fn chosen_count(out: &Location, counts: &BTreeMap<u32, BTreeMap<u32, bool>>) -> Result<u32> {
    let complete: Vec<u32> =
        counts.iter().filter(|(n, parts)| (0..**n).all(|k| parts.get(&k) == Some(&true))).map(|(n, _)| *n).collect();
    match (counts.len(), complete.as_slice()) {
        (0, _) => Err(Error::usage(format!(
            "{}: holds no shard-K-of-N directories: run `tailforge generate --shard K/N` for K = 0..N-1 with this --out first",
            out.display()
        ))),
        (1, _) | (_, [_]) if !complete.is_empty() => Ok(complete[0]),
        (1, []) => {
            let (n, parts) = counts.iter().next().expect("one count");
            let missing: Vec<String> =
                (0..*n).filter(|k| parts.get(k) != Some(&true)).map(|k| format!("{k}/{n}")).collect();
            Err(Error::usage(format!(
                "{}: shards {} have not finished (no _SUCCESS): run `tailforge generate --shard K/N` for them (each resumes), then merge again",
                out.display(),
                missing.join(", ")
            )))
        }
        _ => Err(Error::usage(format!(
            "{}: holds shards of several worker counts ({}), {} of them complete: delete the shard-K-of-N directories of the counts not wanted, then merge again",
            out.display(),
            counts.keys().map(u32::to_string).collect::<Vec<_>>().join(", "),
            complete.len()
        ))),
    }
}

/// (keyword count, grounding) of every accepted row in `dir`'s shards.
async fn groundings(dir: &Location) -> Result<Vec<(usize, Grounding)>> {
    let mut rows = Vec::new();
    for (_, loc) in output::parquet_files(dir).await? {
        for batch in read_parquet(&loc).await? {
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    Error::from(
                        DataError::new(format!("no {name} column"))
                            .file(loc.display())
                            .hint("this is not a tailforge generate shard: delete it and rerun its worker"),
                    )
                })
            };
            let keywords = column("keywords")?.as_any().downcast_ref::<ListArray>().cloned();
            let kg = column("keyword_grounding")?.as_any().downcast_ref::<Float64Array>().cloned();
            let dg = column("description_grounding")?.as_any().downcast_ref::<Float64Array>().cloned();
            let (Some(keywords), Some(kg), Some(dg)) = (keywords, kg, dg) else {
                return Err(DataError::new("keywords, keyword_grounding or description_grounding has another type")
                    .file(loc.display())
                    .hint("this is not a tailforge generate shard: delete it and rerun its worker")
                    .into());
            };
            for r in 0..batch.num_rows() {
                let n = if keywords.is_null(r) { 0 } else { keywords.value(r).len() };
                rows.push((n, Grounding { keywords: kg.value(r), description: dg.value(r) }));
            }
        }
    }
    Ok(rows)
}

/// Copies every `part-*.parquet` of `from` into `to`, numbered on from `next`; returns the next number.
async fn copy_parts(from: &Location, to: &Location, mut next: u32) -> Result<u32> {
    for (_, loc) in output::parquet_files(from).await? {
        to.join(&output::shard_name(next)).put(loc.get().await?).await?;
        next += 1;
    }
    Ok(next)
}

/// The summary of the merged output: counts and tokens summed over the
/// workers, wall time the longest worker's (they run at once), throughput
/// the workers' tokens over that time, grounding over every merged row.
fn merged_summary(parts: &[GenerateSummary], grounding: GroundingSummary) -> GenerateSummary {
    let mut m = GenerateSummary {
        model_sha256: parts[0].model_sha256.clone(),
        params_hash: parts[0].params_hash.clone(),
        fingerprint: parts[0].fingerprint.clone(),
        cache: parts[0].cache.clone(),
        merged_shards: parts.len() as u32,
        grounding,
        ..Default::default()
    };
    for p in parts {
        m.items += p.items;
        m.skipped += p.skipped;
        m.reused_from_cache += p.reused_from_cache;
        m.accepted += p.accepted;
        for (reason, n) in &p.rejected {
            *m.rejected.entry(reason.clone()).or_default() += n;
        }
        for (reason, n) in &p.filtered_attempts {
            *m.filtered_attempts.entry(reason.clone()).or_default() += n;
        }
        m.generated_rows += p.generated_rows;
        m.rejected_rows += p.rejected_rows;
        m.prompt_tokens += p.prompt_tokens;
        m.shared_prefix_tokens = m.shared_prefix_tokens.max(p.shared_prefix_tokens);
        m.generated_tokens += p.generated_tokens;
        m.seconds = m.seconds.max(p.seconds);
        m.decode_seconds += p.decode_seconds;
        m.sample_seconds += p.sample_seconds;
        m.free_keyword_items += p.free_keyword_items;
    }
    if m.seconds > 0.0 {
        m.prompt_tokens_per_s = m.prompt_tokens as f64 / m.seconds;
        m.generated_tokens_per_s = m.generated_tokens as f64 / m.seconds;
    }
    m
}

/// Joins the finished parts `<out>/shard-K-of-N/` of a sharded generation
/// into one output at `<out>/`, replacing what an earlier merge (or an
/// unsharded run) left there. Usage errors name what is missing.
pub async fn merge(out: &Location) -> Result<GenerateSummary> {
    let out = out.as_dir();
    let count = chosen_count(&out, &find_shards(&out).await?)?;
    let shard_dirs: Vec<Location> =
        (0..count).map(|index| out.join(&Shard { index, count }.dir_name()).as_dir()).collect();

    let mut parts = Vec::with_capacity(shard_dirs.len());
    for dir in &shard_dirs {
        let loc = dir.join(SUMMARY);
        let summary: GenerateSummary = serde_json::from_slice(&loc.get().await?).map_err(|e| {
            Error::from(
                DataError::new(format!("not a generate summary: {e}"))
                    .file(loc.display())
                    .hint("rerun this shard's worker: it rewrites summary.json"),
            )
        })?;
        parts.push(summary);
    }
    if let Some((dir, p)) = shard_dirs.iter().zip(&parts).find(|(_, p)| p.fingerprint != parts[0].fingerprint) {
        return Err(Error::usage(format!(
            "{}: generated with another model, prompt template, sampling parameters or seed than {} \
             (fingerprint {:.12}… vs {:.12}…): rerun every shard with the same settings",
            dir.display(),
            shard_dirs[0].display(),
            p.fingerprint,
            parts[0].fingerprint
        )));
    }

    out.join(SUCCESS_MARKER).delete_if_exists().await?;
    for sub in [GENERATED_DIR, REJECTS_DIR] {
        let to = out.join(sub).as_dir();
        for (name, loc) in output::parquet_files(&to).await? {
            tracing::debug!(file = name, "replacing an earlier merged shard");
            loc.delete_if_exists().await?;
        }
        let mut next = 0;
        for dir in &shard_dirs {
            next = copy_parts(&dir.join(sub).as_dir(), &to, next).await?;
        }
    }
    let grounding = summarize(&groundings(&out.join(GENERATED_DIR).as_dir()).await?);
    let summary = merged_summary(&parts, grounding);
    out.join(FINGERPRINT_FILE).put(summary.fingerprint.clone().into_bytes()).await?;
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::internal(format!("summary: {e}")))?;
    out.join(SUMMARY).put(json).await?;
    out.join(SUCCESS_MARKER).put(Vec::<u8>::new()).await?;
    tracing::info!(
        shards = count,
        generated = summary.generated_rows,
        rejected = summary.rejected_rows,
        "generate merge done"
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[(u32, u32, bool)]) -> BTreeMap<u32, BTreeMap<u32, bool>> {
        let mut m: BTreeMap<u32, BTreeMap<u32, bool>> = BTreeMap::new();
        for &(n, k, done) in entries {
            m.entry(n).or_default().insert(k, done);
        }
        m
    }

    #[test]
    fn the_merged_count_is_the_complete_one_and_gaps_are_named() {
        let out = Location::parse("/tmp/x/").unwrap();
        assert_eq!(chosen_count(&out, &counts(&[(2, 0, true), (2, 1, true)])).unwrap(), 2);
        let e = chosen_count(&out, &counts(&[(3, 0, true), (3, 2, false)])).unwrap_err().to_string();
        assert!(e.contains("1/3, 2/3") && e.contains("not finished"), "{e}");
        // A rerun with another worker count: the complete one is merged.
        assert_eq!(chosen_count(&out, &counts(&[(2, 0, true), (2, 1, true), (3, 0, true)])).unwrap(), 2);
        let e = chosen_count(&out, &counts(&[(1, 0, true), (2, 0, true), (2, 1, true)])).unwrap_err().to_string();
        assert!(e.contains("several worker counts (1, 2)"), "{e}");
        assert!(chosen_count(&out, &counts(&[])).unwrap_err().to_string().contains("no shard-K-of-N"));
    }

    #[test]
    fn the_merged_summary_sums_counts_and_takes_the_longest_wall_time() {
        let a = GenerateSummary {
            items: 3,
            accepted: 2,
            rejected: BTreeMap::from([("truncated".to_string(), 1)]),
            generated_tokens: 300,
            seconds: 10.0,
            fingerprint: "f".into(),
            ..Default::default()
        };
        let b = GenerateSummary {
            items: 4,
            accepted: 4,
            generated_tokens: 500,
            seconds: 20.0,
            fingerprint: "f".into(),
            ..Default::default()
        };
        let m = merged_summary(&[a, b], GroundingSummary::default());
        assert_eq!((m.items, m.accepted, m.rejected_total(), m.merged_shards), (7, 6, 1, 2));
        assert_eq!((m.generated_tokens, m.seconds), (800, 20.0));
        assert!((m.generated_tokens_per_s - 40.0).abs() < 1e-12);
    }
}
