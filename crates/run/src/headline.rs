//! The report's first lines: what the augmentation did. The augmented model
//! (the first trained variant that reads item text) against the ID baseline
//! (SASRec `id`, else MostPop) on eval-v1's test NDCG@10 per group, with the
//! ratio, coverage and tail share, and against the previous successful run.

use tailforge_core::Location;
use tailforge_core::config::Variant;
use tailforge_core::records::test_ndcg_key;
use tailforge_core::schema::EVAL_GROUPS;

use crate::manifest::Manifest;
use crate::report::{escape, escape_markdown};

/// One model's figures in the headline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figures {
    /// "SASRec fused", "MostPop".
    pub name: String,
    /// Test NDCG@10 for overall, head, tail, cold.
    pub ndcg: [Option<f64>; 4],
    pub coverage: Option<f64>,
    pub tail_share: Option<f64>,
}

/// The augmented model against the baseline, and the previous run's augmented figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Headline {
    pub baseline: Figures,
    pub augmented: Figures,
    /// (run id, figures of the same model) of the previous successful run.
    pub previous: Option<(String, Figures)>,
}

/// A trained variant's figures, from the manifest's metrics (`<v>_test_ndcg@10_<group>`, …).
fn variant_figures(m: &Manifest, variant: Variant) -> Option<Figures> {
    let variant = variant.as_str();
    let get = |key: String| m.metrics.get(&key).copied();
    let ndcg = EVAL_GROUPS.map(|g| get(test_ndcg_key(variant, g)));
    ndcg[0]?;
    Some(Figures {
        name: format!("SASRec {variant}"),
        ndcg,
        coverage: get(format!("{variant}_coverage@10")),
        tail_share: get(format!("{variant}_tail_share@10")),
    })
}

fn mostpop_figures(m: &Manifest) -> Option<Figures> {
    let ndcg = EVAL_GROUPS.map(|g| m.metrics.get(&test_ndcg_key("mostpop", g)).copied());
    ndcg[0]?;
    Some(Figures { name: "MostPop".into(), ndcg, coverage: None, tail_share: None })
}

/// The variants the report compares: the augmented one (the first trained
/// variant other than `id`, else the first trained) and the `id` baseline
/// when it was trained beside it (None: the baseline is MostPop). None when
/// nothing was trained.
pub(crate) fn compared_variants(m: &Manifest) -> Option<(Option<Variant>, Variant)> {
    let trained = m.trained_variants();
    let augmented = *trained.iter().find(|v| **v != Variant::Id).or(trained.first())?;
    let baseline = (augmented != Variant::Id && trained.contains(&Variant::Id)).then_some(Variant::Id);
    Some((baseline, augmented))
}

impl Headline {
    /// The headline of `m`, or None when no model was trained. `previous` is
    /// the manifest of the last successful run before this one, if any.
    pub fn new(m: &Manifest, previous: Option<&Manifest>) -> Option<Headline> {
        let (baseline_variant, augmented_variant) = compared_variants(m)?;
        let augmented = variant_figures(m, augmented_variant)?;
        let baseline = match baseline_variant {
            Some(v) => variant_figures(m, v)?,
            None => mostpop_figures(m)?,
        };
        let previous = previous
            .filter(|p| p.run_id != m.run_id)
            .and_then(|p| Some((p.run_id.clone(), variant_figures(p, augmented_variant)?)));
        Some(Headline { baseline, augmented, previous })
    }

    /// One line per group: (group, baseline, augmented, ratio, previous).
    fn rows(&self) -> Vec<[String; 5]> {
        EVAL_GROUPS
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let (b, a) = (self.baseline.ndcg[g], self.augmented.ndcg[g]);
                let previous = self.previous.as_ref().and_then(|(_, p)| p.ndcg[g]);
                [
                    group.to_string(),
                    figure(b),
                    figure(a),
                    ratio(a, b),
                    match (previous, a) {
                        (Some(p), Some(a)) => format!("{} ({})", figure(Some(p)), change(a, p)),
                        _ => "—".into(),
                    },
                ]
            })
            .collect()
    }

    /// The sentence under the table: coverage, tail share, and the verdict against the last run.
    fn summary(&self) -> String {
        let (a, b) = (&self.augmented, &self.baseline);
        let mut s = String::new();
        if let (Some(ca), Some(ta)) = (a.coverage, a.tail_share) {
            s.push_str(&format!("{}: coverage@10 {:.3}, tail share of the top 10 {:.3}", a.name, ca, ta));
            if let (Some(cb), Some(tb)) = (b.coverage, b.tail_share) {
                s.push_str(&format!(" ({}: {cb:.3}, {tb:.3})", b.name));
            }
            s.push_str(". ");
        }
        match &self.previous {
            Some((run, p)) => {
                let better: Vec<&str> = EVAL_GROUPS
                    .iter()
                    .enumerate()
                    .filter(|(g, _)| matches!((a.ndcg[*g], p.ndcg[*g]), (Some(x), Some(y)) if x > y))
                    .map(|(_, group)| *group)
                    .collect();
                let verdict = match (a.ndcg[0], p.ndcg[0]) {
                    (Some(x), Some(y)) if x > y => "better than",
                    (Some(x), Some(y)) if x < y => "worse than",
                    _ => "the same as",
                };
                s.push_str(&format!(
                    "Overall {verdict} the last run ({run}); better on {}.",
                    if better.is_empty() { "no group".to_string() } else { better.join(", ") }
                ));
            }
            None => s.push_str("No earlier successful run to compare with."),
        }
        s
    }

    pub fn markdown(&self) -> String {
        let (a, b) = (&self.augmented.name, &self.baseline.name);
        let mut s = format!(
            "## Headline: {} vs {}\n\nTest NDCG@10 under eval-v1 (full ranking).\n\n| group | {} | {} | ratio | last run |\n|---|---:|---:|---:|---:|\n",
            escape_markdown(a),
            escape_markdown(b),
            escape_markdown(b),
            escape_markdown(a)
        );
        for row in self.rows() {
            s.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        s.push_str(&format!("\n{}\n", self.summary()));
        s
    }

    pub fn html(&self) -> String {
        let (a, b) = (escape(&self.augmented.name), escape(&self.baseline.name));
        let mut s = format!(
            "<p class=\"headline\">Test NDCG@10 under eval-v1 (full ranking): <b>{a}</b> against <b>{b}</b>.</p>\
             <table><tr><th>group</th><th>{b}</th><th>{a}</th><th>ratio</th><th>last run</th></tr>"
        );
        for row in self.rows() {
            s.push_str("<tr>");
            for cell in row {
                s.push_str(&format!("<td>{}</td>", escape(&cell)));
            }
            s.push_str("</tr>");
        }
        s.push_str(&format!("</table><p>{}</p>", escape(&self.summary())));
        s
    }
}

fn figure(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into())
}

/// `a / b` as "1.23×"; "—" when either is missing or the baseline is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// The change from `before` to `now`, as "+1.2%" (or "±0" / "new" when `before` is 0).
fn change(now: f64, before: f64) -> String {
    if before > 0.0 {
        format!("{:+.1}%", 100.0 * (now / before - 1.0))
    } else if now == before {
        "±0".into()
    } else {
        "from 0".into()
    }
}

/// The manifest of the last successful run under `root` (its `latest`
/// pointer, read before this run moves it), if any.
pub(crate) async fn previous_manifest(root: &Location) -> Option<Manifest> {
    let latest: serde_json::Value = serde_json::from_slice(&root.join("latest").get().await.ok()?).ok()?;
    let path = latest["manifest"].as_str()?;
    serde_json::from_slice(&root.join(path).get().await.ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::StageRecord;

    fn manifest(run_id: &str, figures: &[(&str, [f64; 4])]) -> Manifest {
        let mut m = Manifest { run_id: run_id.into(), ..Default::default() };
        for (v, ndcg) in figures {
            m.stages.push(StageRecord { name: format!("train_{v}"), ..Default::default() });
            for (g, x) in EVAL_GROUPS.iter().zip(ndcg) {
                m.metrics.insert(test_ndcg_key(v, g), *x);
            }
            m.metrics.insert(format!("{v}_coverage@10"), 0.5);
            m.metrics.insert(format!("{v}_tail_share@10"), 0.25);
        }
        m
    }

    #[test]
    fn the_augmented_variant_is_compared_with_id_and_the_last_run() {
        let now = manifest("b", &[("id", [0.08, 0.12, 0.04, 0.02]), ("fused", [0.09, 0.12, 0.06, 0.0])]);
        let before = manifest("a", &[("id", [0.08, 0.12, 0.04, 0.02]), ("fused", [0.10, 0.12, 0.05, 0.0])]);
        let h = Headline::new(&now, Some(&before)).unwrap();
        assert_eq!((h.augmented.name.as_str(), h.baseline.name.as_str()), ("SASRec fused", "SASRec id"));
        let rows = h.rows();
        assert_eq!(rows[0], ["overall", "0.0800", "0.0900", "1.12×", "0.1000 (-10.0%)"].map(String::from));
        assert_eq!(rows[2][3], "1.50×");
        assert_eq!(rows[3][3], "0.00×");
        assert_eq!(rows[3][4], "0.0000 (±0)");
        let summary = h.summary();
        assert!(summary.contains("Overall worse than the last run (a); better on tail."), "{summary}");
        assert!(h.markdown().starts_with("## Headline: SASRec fused vs SASRec id"));
        // The same run again is no comparison; one variant alone is compared with MostPop.
        assert!(Headline::new(&now, Some(&now)).unwrap().previous.is_none());
        let mut alone = manifest("c", &[("dual", [0.09, 0.1, 0.05, 0.04])]);
        assert!(Headline::new(&alone, None).is_none(), "no MostPop figures, nothing to compare with");
        for (g, x) in EVAL_GROUPS.iter().zip([0.05, 0.1, 0.0, 0.0]) {
            alone.metrics.insert(test_ndcg_key("mostpop", g), x);
        }
        let h = Headline::new(&alone, None).unwrap();
        assert_eq!(h.baseline.name, "MostPop");
        assert_eq!(h.rows()[2][3], "—", "a zero baseline has no ratio");
        assert!(h.summary().ends_with("No earlier successful run to compare with."));
    }
}
