//! The report's recommendations a person can judge: for a few test users
//! (picked evenly over the sorted user ids, so the same run gives the same
//! users), their last items and the top 5 of the baseline and of the
//! augmented model from each variant's `recommendations.parquet`, tail items
//! marked, each with the model's "why".

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use tailforge_core::config::Variant;
use tailforge_core::layout::StageDirs;
use tailforge_core::parquet_io::read_parquet;
use tailforge_core::schema::{TAIL, outputs, train_outputs};
use tailforge_core::{Error, Location, Result};

use crate::manifest::Manifest;
use crate::report::{escape, escape_markdown};

/// Users shown, items of their history shown, recommendations shown per model.
pub(crate) const USERS: usize = 5;
pub(crate) const LAST_ITEMS: usize = 5;
pub(crate) const TOP: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shown {
    pub title: String,
    pub tail: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recommended {
    pub item: Shown,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UserRecs {
    pub user: String,
    /// Oldest first.
    pub last: Vec<Shown>,
    /// One list per model of [`Section::models`], by rank.
    pub lists: Vec<Vec<Recommended>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Section {
    /// ("SASRec id", "baseline") …
    pub models: Vec<(Variant, &'static str)>,
    pub users: Vec<UserRecs>,
    /// Why a model is missing, if one is.
    pub note: Option<String>,
}

/// A column as text (ids of either kind, titles).
fn text_column(batch: &RecordBatch, name: &str, file: &str) -> Result<StringArray> {
    let col = batch.column_by_name(name).ok_or_else(|| Error::internal(format!("{file}: no column {name}")))?;
    let c = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| Error::internal(format!("{file}: {name}: {e}")))?;
    Ok(c.as_string::<i32>().clone())
}

async fn table(loc: Location) -> Result<(Vec<RecordBatch>, String)> {
    Ok((read_parquet(&loc).await?, loc.display()))
}

/// A trained variant's `recommendations.parquet` in the run.
fn recommendations(run_dir: &Location, v: Variant) -> Location {
    StageDirs::under(run_dir).train(v).join(train_outputs::RECOMMENDATIONS)
}

/// Sorted the way a person reads ids: numerically when all are integers.
fn sort_ids(ids: &mut [String]) {
    if ids.iter().all(|u| u.parse::<i64>().is_ok()) {
        ids.sort_by_key(|u| u.parse::<i64>().unwrap_or(0));
    } else {
        ids.sort();
    }
}

/// The baseline and augmented variants, as the headline picks them.
fn pick_models(m: &Manifest) -> Vec<(Variant, &'static str)> {
    match crate::headline::compared_variants(m) {
        None => Vec::new(),
        Some((Some(baseline), augmented)) => {
            vec![(baseline, "baseline"), (augmented, "augmented")]
        }
        Some((None, trained)) => vec![(trained, "trained")],
    }
}

/// The section, or None when no variant wrote recommendations.
pub(crate) async fn section(m: &Manifest, run_dir: &Location) -> Result<Option<Section>> {
    let wanted = pick_models(m);
    let mut models = Vec::new();
    let mut missing = Vec::new();
    for (v, role) in wanted {
        if recommendations(run_dir, v).exists().await? {
            models.push((v, role));
        } else {
            missing.push(v);
        }
    }
    if models.is_empty() {
        return Ok(None);
    }
    let note = if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|v: &Variant| v.as_str()).collect();
        Some(format!("No recommendations.parquet for SASRec {}: only the other model is shown.", missing.join(", ")))
    } else if models.len() == 1 {
        Some(format!(
            "Only SASRec {} was trained, so there is no second model to compare with (MostPop writes no recommendations).",
            models[0].0
        ))
    } else {
        None
    };

    // Test users: evaluated, with a test target.
    let (split, file) = table(crate::analyze_table(run_dir, outputs::SPLIT)).await?;
    let mut users = Vec::new();
    for b in &split {
        let ids = text_column(b, "user_id", &file)?;
        let test = text_column(b, "test_item", &file)?;
        let evaluated = b.column_by_name("evaluated").and_then(|c| c.as_boolean_opt().cloned());
        for r in 0..b.num_rows() {
            let ok = evaluated.as_ref().is_none_or(|e| !e.is_null(r) && e.value(r));
            if ok && !ids.is_null(r) && !test.is_null(r) {
                users.push(ids.value(r).to_string());
            }
        }
    }
    sort_ids(&mut users);
    let picked: Vec<String> =
        tailforge_generate::output::spread(users.len(), USERS).into_iter().map(|i| users[i].clone()).collect();
    let wanted: HashSet<&str> = picked.iter().map(String::as_str).collect();

    // Titles and tail membership of every item.
    let mut titles = HashMap::new();
    let (item_text, file) = table(crate::analyze_table(run_dir, outputs::ITEM_TEXT)).await?;
    for b in &item_text {
        let (ids, t) = (text_column(b, "item_id", &file)?, text_column(b, "title", &file)?);
        for r in 0..b.num_rows() {
            if !ids.is_null(r) && !t.is_null(r) {
                titles.insert(ids.value(r).to_string(), t.value(r).to_string());
            }
        }
    }
    let mut tail = HashSet::new();
    let (stats, file) = table(crate::analyze_table(run_dir, outputs::ITEM_STATS)).await?;
    for b in &stats {
        let (ids, g) = (text_column(b, "item_id", &file)?, text_column(b, "group", &file)?);
        for r in 0..b.num_rows() {
            if !ids.is_null(r) && !g.is_null(r) && g.value(r) == TAIL {
                tail.insert(ids.value(r).to_string());
            }
        }
    }
    let shown = |id: &str| Shown {
        title: titles.get(id).cloned().unwrap_or_else(|| format!("item {id}")),
        tail: tail.contains(id),
    };

    // Each picked user's last items.
    let mut last: HashMap<String, Vec<Shown>> = HashMap::new();
    let (sequences, file) = table(crate::analyze_table(run_dir, outputs::SEQUENCES)).await?;
    for b in &sequences {
        let ids = text_column(b, "user_id", &file)?;
        let lists = b
            .column_by_name("item_ids")
            .and_then(|c| c.as_list_opt::<i32>().cloned())
            .ok_or_else(|| Error::internal(format!("{file}: item_ids is not a list")))?;
        for r in 0..b.num_rows() {
            if ids.is_null(r) || lists.is_null(r) || !wanted.contains(ids.value(r)) {
                continue;
            }
            let items = arrow::compute::cast(&lists.value(r), &DataType::Utf8)
                .map_err(|e| Error::internal(format!("{file}: item_ids: {e}")))?;
            let items: Vec<&str> = items.as_string::<i32>().iter().flatten().collect();
            let from = items.len().saturating_sub(LAST_ITEMS);
            last.insert(ids.value(r).to_string(), items[from..].iter().map(|i| shown(i)).collect());
        }
    }

    // Each model's top items for them.
    let mut lists: Vec<HashMap<String, BTreeMap<i64, Recommended>>> = Vec::new();
    for (v, _) in &models {
        let (recs, file) = table(recommendations(run_dir, *v)).await?;
        let mut by_user: HashMap<String, BTreeMap<i64, Recommended>> = HashMap::new();
        for b in &recs {
            let (ids, items, why) =
                (text_column(b, "user_id", &file)?, text_column(b, "item_id", &file)?, text_column(b, "why", &file)?);
            let rank = arrow::compute::cast(
                b.column_by_name("rank").ok_or_else(|| Error::internal(format!("{file}: no column rank")))?,
                &DataType::Int64,
            )
            .map_err(|e| Error::internal(format!("{file}: rank: {e}")))?;
            let rank = rank.as_primitive::<arrow::datatypes::Int64Type>();
            for r in 0..b.num_rows() {
                if ids.is_null(r) || items.is_null(r) || rank.is_null(r) || !wanted.contains(ids.value(r)) {
                    continue;
                }
                let k = rank.value(r);
                if (1..=TOP as i64).contains(&k) {
                    let why = if why.is_null(r) { String::new() } else { why.value(r).to_string() };
                    by_user
                        .entry(ids.value(r).to_string())
                        .or_default()
                        .insert(k, Recommended { item: shown(items.value(r)), why });
                }
            }
        }
        lists.push(by_user);
    }
    let users = picked
        .into_iter()
        .map(|u| UserRecs {
            last: last.remove(&u).unwrap_or_default(),
            lists: lists
                .iter_mut()
                .map(|l| l.remove(&u).map(|m| m.into_values().collect()).unwrap_or_default())
                .collect(),
            user: u,
        })
        .collect();
    Ok(Some(Section { models, users, note }))
}

impl Section {
    fn intro(&self) -> String {
        let names: Vec<String> = self.models.iter().map(|(v, role)| format!("SASRec {v} ({role})")).collect();
        format!(
            "{} test users picked evenly over the sorted user ids: their last {} items, and the top {} of {} \
             after their whole history (items they have seen are excluded). \"why\" is the model's explanation: \
             keywords the item shares with a recent one.",
            self.users.len(),
            LAST_ITEMS,
            TOP,
            names.join(" and ")
        )
    }

    pub(crate) fn markdown(&self) -> String {
        let mark = |s: &Shown| format!("{}{}", escape_markdown(&s.title), if s.tail { " **(tail)**" } else { "" });
        let mut s = format!("\n## Recommendations\n\n{}\n", self.intro());
        if let Some(note) = &self.note {
            s.push_str(&format!("\n{}\n", escape_markdown(note)));
        }
        for u in &self.users {
            s.push_str(&format!("\n### User {}\n\nLast items: {}\n\n| rank |", escape_markdown(&u.user), {
                let last: Vec<String> = u.last.iter().map(mark).collect();
                if last.is_empty() { "—".to_string() } else { last.join("; ") }
            }));
            for (v, _) in &self.models {
                s.push_str(&format!(" SASRec {} | why |", escape_markdown(v.as_str())));
            }
            s.push_str("\n|---:|");
            s.push_str(&"---|---|".repeat(self.models.len()));
            s.push('\n');
            for k in 0..TOP {
                s.push_str(&format!("| {} |", k + 1));
                for list in &u.lists {
                    match list.get(k) {
                        Some(r) => s.push_str(&format!(" {} | {} |", mark(&r.item), escape_markdown(&r.why))),
                        None => s.push_str(" — | |"),
                    }
                }
                s.push('\n');
            }
        }
        s
    }

    pub(crate) fn html(&self) -> String {
        let mark = |s: &Shown| {
            format!("{}{}", escape(&s.title), if s.tail { " <span class=\"tail\">tail</span>" } else { "" })
        };
        let mut s = format!("<p>{}</p>", escape(&self.intro()));
        if let Some(note) = &self.note {
            s.push_str(&format!("<p><b>{}</b></p>", escape(note)));
        }
        for u in &self.users {
            let last: Vec<String> = u.last.iter().map(mark).collect();
            s.push_str(&format!(
                "<h3>User {}</h3><p>Last items: {}</p><table class=\"recs\"><tr><th>rank</th>",
                escape(&u.user),
                if last.is_empty() { "—".to_string() } else { last.join("; ") }
            ));
            for (v, role) in &self.models {
                s.push_str(&format!("<th>SASRec {} ({role})</th><th>why</th>", escape(v.as_str())));
            }
            s.push_str("</tr>");
            for k in 0..TOP {
                s.push_str(&format!("<tr><td>{}</td>", k + 1));
                for list in &u.lists {
                    match list.get(k) {
                        Some(r) => s.push_str(&format!("<td>{}</td><td>{}</td>", mark(&r.item), escape(&r.why))),
                        None => s.push_str("<td>—</td><td></td>"),
                    }
                }
                s.push_str("</tr>");
            }
            s.push_str("</table>");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> Section {
        let item = |t: &str, tail| Shown { title: t.into(), tail };
        Section {
            models: vec![(Variant::Id, "baseline"), (Variant::Fused, "augmented")],
            users: vec![UserRecs {
                user: "7".into(),
                last: vec![item("<script>alert(1)</script>", true), item("Pipette | 10 ml", false)],
                lists: vec![
                    vec![Recommended { item: item("Beaker", false), why: "shares glass with <i>Flask</i>".into() }],
                    vec![Recommended {
                        item: item("Rare *reagent*", true),
                        why: "follows your recent sequence".into(),
                    }],
                ],
            }],
            note: None,
        }
    }

    #[test]
    fn item_text_is_escaped_and_tail_items_are_marked() {
        let s = section();
        let html = s.html();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; <span class=\"tail\">tail</span>"), "{html}");
        assert!(!html.contains("<script") && !html.contains("<i>"), "{html}");
        assert!(html.contains("<td>Rare *reagent* <span class=\"tail\">tail</span></td>"), "{html}");
        assert_eq!(html.matches("<tr>").count(), 1 + TOP, "a header and one row per rank");
        let md = s.markdown();
        assert!(
            md.contains("Last items: \\<script\\>alert\\(1\\)\\</script\\> **(tail)**; Pipette \\| 10 ml\n"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | Beaker | shares glass with \\<i\\>Flask\\</i\\> | Rare \\*reagent\\* **(tail)** |"),
            "{md}"
        );
        assert!(md.contains("| 2 | — | | — | |"), "missing ranks are dashes: {md}");
        assert!(md.contains("### User 7"), "{md}");
    }

    #[test]
    fn the_models_are_the_headline_pair() {
        let mut m = Manifest::default();
        for v in ["id", "fused", "dual"] {
            m.stages.push(crate::manifest::StageRecord { name: format!("train_{v}"), ..Default::default() });
        }
        assert_eq!(pick_models(&m), [(Variant::Id, "baseline"), (Variant::Fused, "augmented")]);
        m.stages.retain(|s| s.name == "train_id");
        assert_eq!(pick_models(&m), [(Variant::Id, "trained")]);
        let mut ids = vec!["10".to_string(), "9".into(), "100".into()];
        sort_ids(&mut ids);
        assert_eq!(ids, ["9", "10", "100"]);
    }
}
