//! The run report: `report.md` and a self-contained `report.html` whose plots
//! are inline SVG (no external files, no scripts, so the report can be mailed
//! or opened straight from object storage): the head-vs-tail chart is written
//! by hand ([`grouped_bars`]), the line charts are drawn with plotters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use tailforge_core::layout::StageDirs;
use tailforge_core::records::{BaselineMetrics, test_ndcg_key};
use tailforge_core::{Error, Location, Result};
use tracing::warn;

use crate::manifest::Manifest;

/// Item popularity by rank on log–log axes, with the head/tail cut marked.
pub fn popularity_svg(counts_by_rank: &[u64], head_items: usize) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let n = counts_by_rank.len().max(2) as f64;
        let max = counts_by_rank.iter().copied().max().unwrap_or(1).max(1) as f64;
        let chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d((1f64..n).log_scale(), (1f64..max * 1.2).log_scale());
        let Ok(mut chart) = chart else { return svg_fallback() };
        let _ = chart.configure_mesh().x_desc("item rank").y_desc("interactions").draw();
        let points =
            counts_by_rank.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| ((i + 1) as f64, *c as f64));
        let _ = chart.draw_series(LineSeries::new(points, &BLUE));
        let cut = head_items.max(1) as f64;
        let _ = chart.draw_series(LineSeries::new([(cut, 1.0), (cut, max * 1.2)], RED.stroke_width(2)));
        let _ = root.present();
    }
    svg
}

/// One model per colour in every chart written by hand: MostPop grey, the
/// SASRec variants from the Okabe–Ito palette (distinguishable with the
/// common colour-vision deficiencies).
const MODEL_COLOURS: [&str; 8] =
    ["#7f7f7f", "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#000000"];

/// A text element of a hand-written chart, with the box it covers (for the
/// overlap check): `x` is its anchor, `y` its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub x: f64,
    pub y: f64,
    pub size: f64,
    /// "start", "middle" or "end".
    pub anchor: &'static str,
    /// Turned 90° counter-clockwise about (x, y) (values on narrow bars).
    pub vertical: bool,
    pub text: String,
    pub bold: bool,
    pub fill: &'static str,
}

impl Label {
    /// Width estimate: 0.62 em per character (wider than system-ui's digits and lower case).
    fn width(&self) -> f64 {
        self.text.chars().count() as f64 * self.size * 0.62
    }

    /// (left, top, right, bottom) of the text on the page (what the layout tests check).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        let (w, h) = (self.width(), self.size);
        let start = match self.anchor {
            "middle" => -w / 2.0,
            "end" => -w,
            _ => 0.0,
        };
        if self.vertical {
            // Rotated -90° about (x, y): the text runs upwards from y.
            (self.x - h * 0.8, self.y - (start + w), self.x + h * 0.2, self.y - start)
        } else {
            (self.x + start, self.y - h * 0.8, self.x + start + w, self.y + h * 0.2)
        }
    }

    fn svg(&self) -> String {
        let rotate = if self.vertical {
            format!(" transform=\"rotate(-90 {:.1} {:.1})\"", self.x, self.y)
        } else {
            String::new()
        };
        format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{}\" text-anchor=\"{}\" fill=\"{}\"{}{}>{}</text>",
            self.x,
            self.y,
            self.size,
            self.anchor,
            self.fill,
            if self.bold { " font-weight=\"bold\"" } else { "" },
            rotate,
            escape(&self.text)
        )
    }
}

/// A filled rectangle with a tooltip.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub colour: &'static str,
    pub title: String,
}

/// The head-vs-tail chart before it is written out: what the tests check.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedBars {
    pub width: f64,
    pub height: f64,
    /// (model, colour) in legend order.
    pub legend: Vec<(String, &'static str)>,
    pub labels: Vec<Label>,
    pub bars: Vec<Bar>,
    /// Panel baselines: (x0, x1, y).
    pub axes: Vec<(f64, f64, f64)>,
}

/// A metric value as printed on a bar: 3 decimals, or 2 significant digits
/// below 0.01 so that a tiny tail figure does not read as "0.000".
pub fn bar_value(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() < 0.01 {
        let digits = (1 - v.abs().log10().floor() as i32).clamp(3, 6) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.3}")
    }
}

/// Lays out NDCG@10 per group (overall, head, tail, cold) for each model as
/// small multiples: one panel per group, one bar per model in the model's
/// colour, the value printed on each bar, one legend for all panels.
///
/// Each panel has its own linear scale from 0 (to its own largest value):
/// tail and cold figures are often a tenth of the overall ones and would be
/// slivers on a shared axis; a log scale would make zero unplottable and
/// ratios hard to read. Compare models within a panel by bar height, across
/// panels by the printed values (each panel states its scale's top).
pub fn grouped_bars(models: &[(String, [f64; 4])]) -> GroupedBars {
    const GROUPS: [&str; 4] = tailforge_core::schema::EVAL_GROUPS;
    const WIDTH: f64 = 880.0;
    const PANEL_GAP: f64 = 16.0;
    const PLOT_H: f64 = 200.0;
    let font = 11.0;
    let mut labels = Vec::new();
    // Legend: colour swatch + name, wrapped onto as many rows as needed.
    let mut legend = Vec::new();
    let mut bars = Vec::new();
    let (mut lx, mut ly) = (8.0, 18.0);
    for (m, (name, _)) in models.iter().enumerate() {
        let colour = MODEL_COLOURS[m % MODEL_COLOURS.len()];
        let label = Label {
            x: 0.0,
            y: 0.0,
            size: font,
            anchor: "start",
            vertical: false,
            text: name.clone(),
            bold: false,
            fill: "#222",
        };
        let w = 16.0 + label.width() + 18.0;
        if lx > 8.0 && lx + w > WIDTH - 8.0 {
            lx = 8.0;
            ly += 18.0;
        }
        bars.push(Bar { x: lx, y: ly - 10.0, w: 11.0, h: 11.0, colour, title: name.clone() });
        labels.push(Label { x: lx + 16.0, y: ly, ..label });
        legend.push((name.clone(), colour));
        lx += w;
    }
    let top = ly + 22.0; // panel titles
    let plot_top = top + 30.0; // room for a value above the tallest bar
    let base = plot_top + PLOT_H;
    let panel_w = (WIDTH - PANEL_GAP * (GROUPS.len() as f64 + 1.0)) / GROUPS.len() as f64;
    let mut axes = Vec::new();
    let n = models.len().max(1) as f64;
    for (g, group) in GROUPS.iter().enumerate() {
        let x0 = PANEL_GAP + g as f64 * (panel_w + PANEL_GAP);
        let max = models.iter().map(|(_, v)| v[g]).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
        labels.push(Label {
            x: x0 + panel_w / 2.0,
            y: top,
            size: font + 1.0,
            anchor: "middle",
            vertical: false,
            text: group.to_string(),
            bold: true,
            fill: "#222",
        });
        labels.push(Label {
            x: x0 + panel_w / 2.0,
            y: base + 16.0,
            size: font - 1.0,
            anchor: "middle",
            vertical: false,
            text: format!("scale 0–{}", bar_value(max)),
            bold: false,
            fill: "#222",
        });
        axes.push((x0, x0 + panel_w, base));
        let slot = panel_w / n;
        let bar_w = (slot * 0.7).min(48.0);
        for (m, (name, values)) in models.iter().enumerate() {
            let v = values[g];
            let h = if max > 0.0 && v.is_finite() { (v.max(0.0) / max) * PLOT_H } else { 0.0 };
            let cx = x0 + slot * (m as f64 + 0.5);
            let colour = MODEL_COLOURS[m % MODEL_COLOURS.len()];
            bars.push(Bar {
                x: cx - bar_w / 2.0,
                y: base - h,
                w: bar_w,
                h,
                colour,
                title: format!("{name} {group}: {}", bar_value(v)),
            });
            let mut value = Label {
                x: cx,
                y: base - h - 4.0,
                size: font - 1.0,
                anchor: "middle",
                vertical: false,
                text: bar_value(v),
                bold: false,
                fill: "#222",
            };
            if value.width() > slot - 2.0 {
                // Too wide for the slot: written upwards, starting just above the bar.
                value = Label { x: cx + (font - 1.0) * 0.3, anchor: "start", vertical: true, ..value };
                if h > value.width() + 8.0 {
                    // Inside a tall bar, so it cannot run into the panel title.
                    value.y = base - 4.0;
                    value.fill = "white";
                }
            }
            labels.push(value);
        }
    }
    GroupedBars { width: WIDTH, height: base + 26.0, legend, labels, bars, axes }
}

impl GroupedBars {
    pub fn svg(&self) -> String {
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1:.0}\" viewBox=\"0 0 {0} {1:.0}\" \
             font-family=\"system-ui,sans-serif\" role=\"img\" aria-label=\"NDCG@10 by group and model\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            self.width, self.height
        );
        for b in &self.bars {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
                b.x,
                b.y,
                b.w,
                b.h,
                b.colour,
                escape(&b.title)
            );
        }
        for (x0, x1, y) in &self.axes {
            let _ = write!(s, "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\" stroke=\"#444\"/>");
        }
        for l in &self.labels {
            s.push_str(&l.svg());
        }
        s.push_str("</svg>");
        s
    }
}

/// NDCG@10 per group for each model: [`grouped_bars`] as inline SVG.
pub fn metrics_svg(models: &[(String, [f64; 4])]) -> String {
    grouped_bars(models).svg()
}

fn svg_fallback() -> String {
    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1\" height=\"1\"/>".to_string()
}

/// Wraps the Markdown-ish sections and plots into one HTML page.
pub fn html(title: &str, sections: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         pre{{background:#f6f6f6;padding:8px}}table.examples td,table.recs td,table.rejects td:first-child{{text-align:left;vertical-align:top}}\
         table.examples td:first-child,table.recs td:first-child{{text-align:right}}\
         .tail{{background:#fde2c4;border-radius:3px;padding:0 4px;font-size:.85em}}svg{{max-width:100%;height:auto}}</style></head><body><h1>{}</h1>",
        escape(title),
        escape(title)
    );
    for (heading, body) in sections {
        let _ = write!(s, "<h2>{}</h2>{}", escape(heading), body);
    }
    s.push_str("</body></html>\n");
    s
}

/// HTML-escapes text (run ids and metric names come from configuration).
/// Makes untrusted text inert inside a Markdown table cell: Markdown and
/// HTML punctuation is backslash-escaped, line breaks become spaces.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '<' | '>' | '!' | '~' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Moves the headings of a Markdown document included under a `##` section
/// one level down (`## x` → `### x`), so they read as its subsections.
pub fn demote_headings(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + 16);
    for line in markdown.split_inclusive('\n') {
        let level = line.bytes().take_while(|b| *b == b'#').count();
        if level > 0 && level < 6 && line[level..].starts_with(' ') {
            out.push('#');
        }
        out.push_str(line);
    }
    out
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

// The run's report (report.md, report.html) from its manifest and stage outputs.

pub(crate) async fn report_markdown(
    m: &Manifest,
    run_dir: &Location,
    headline: Option<&crate::headline::Headline>,
) -> String {
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
                    escape_markdown(&e.title),
                    escape_markdown(&e.catalog_text),
                    escape_markdown(&e.description),
                    escape_markdown(&e.keywords.join(", ")),
                    e.keyword_grounding,
                    e.description_grounding
                ));
            }
        }
        s.push_str(&format!("\n### Rejects\n\n{}\n", g.rejects_sentence()));
        if !g.reject_table().is_empty() {
            s.push_str("\n| reason | items rejected | failed attempts in this run |\n|---|---:|---:|\n");
            for (reason, items, attempts) in g.reject_table() {
                s.push_str(&format!("| {} | {items} | {attempts} |\n", escape_markdown(&reason)));
            }
        }
    }
    if let Ok(mostpop) = crate::read_metrics::<BaselineMetrics>(&StageDirs::under(run_dir).evaluate()).await {
        s.push_str("\n## MostPop under eval-v1 (test)\n\n");
        s.push_str(&mostpop.test.to_markdown());
    }
    s.push_str(&crate::train_stage::markdown(m, run_dir).await);
    match crate::recs::section(m, run_dir).await {
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
    let gen_dir = StageDirs::under(run_dir).generate();
    let tail_items = crate::analyze_table(run_dir, tailforge_core::schema::outputs::TAIL_ITEMS);
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
    let batches = tailforge_core::parquet_io::read_parquet(&crate::analyze_table(
        run_dir,
        tailforge_core::schema::outputs::ITEM_STATS,
    ))
    .await?;
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

pub(crate) async fn report_html(
    m: &Manifest,
    run_dir: &Location,
    headline: Option<&crate::headline::Headline>,
) -> Result<String> {
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
            popularity_svg(&counts, head)
        ),
    ));
    let ndcg = |g: &str| m.metrics.get(&test_ndcg_key("mostpop", g)).copied().unwrap_or(0.0);
    let mut models = vec![("MostPop".to_string(), tailforge_core::schema::EVAL_GROUPS.map(ndcg))];
    models.extend(crate::train_stage::ndcg_bars(m));
    sections.push((
        "Head vs tail (eval-v1, test, NDCG@10 full ranking)".to_string(),
        format!(
            "<p>One panel per group: overall, head, tail items, cold targets (at most 5 training interactions); \
             one bar per model, its value printed on it. Each panel has its own scale from 0, \
             so compare models within a panel and groups by the printed values.</p>{}",
            metrics_svg(&models)
        ),
    ));
    if let Some(line) = generation_line(m) {
        let g = generation_report(run_dir).await;
        let mut body = format!("<p>{}</p>", escape(&line));
        match g.progress() {
            Some((items, rate)) => body.push_str(&format!(
                "<p>This run's generation over time: items done, and generated tokens per second \
                 (over the last ~5% of the run's samples).</p>{}{}",
                series_svg(&[("items done".to_string(), items)], "seconds since the stage started", "items done"),
                series_svg(
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
    if let Some(curves) = crate::train_stage::curves_html(m, run_dir).await {
        sections.push(("Training curves".to_string(), curves));
    }
    match crate::recs::section(m, run_dir).await {
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
    Ok(html(&format!("tailforge run {}", m.run_id), &sections))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn included_markdown_headings_become_subsections() {
        let md = "## id (best epoch 2 of 2, 0.10 s/epoch)\n\n### test\n\n| a |\n|#x|\n#hashtag\n";
        assert_eq!(
            demote_headings(md),
            "### id (best epoch 2 of 2, 0.10 s/epoch)\n\n#### test\n\n| a |\n|#x|\n#hashtag\n"
        );
    }

    #[test]
    fn markdown_cells_cannot_carry_markup() {
        let e = escape_markdown("x | <script>alert(1)</script> [a](http://e) **b**\nc");
        assert_eq!(e, "x \\| \\<script\\>alert\\(1\\)\\</script\\> \\[a\\]\\(http://e\\) \\*\\*b\\*\\* c");
    }

    #[test]
    fn plots_are_svg_with_their_labels() {
        let counts: Vec<u64> = (1..=500).map(|r| 10_000 / r).collect();
        let svg = popularity_svg(&counts, 100);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{}", &svg[..svg.len().min(300)]);
        assert!(svg.contains("item rank"), "axis label rendered");
        let bars = metrics_svg(&[("mostpop".into(), [0.025, 0.055, 0.0, 0.0])]);
        assert!(bars.starts_with("<svg") && bars.matches("<rect").count() >= 5, "{bars}");
        assert!(bars.contains("<title>mostpop tail: 0</title>"), "bars carry their model, group and value");
        assert!(html("run <x>", &[("a".into(), bars)]).contains("run &lt;x&gt;"));
    }

    fn overlapping(labels: &[Label]) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (i, a) in labels.iter().enumerate() {
            for b in &labels[i + 1..] {
                let (a0, a1) = (a.bounds(), b.bounds());
                if a0.0 < a1.2 && a1.0 < a0.2 && a0.1 < a1.3 && a1.1 < a0.3 {
                    found.push((a.text.clone(), b.text.clone()));
                }
            }
        }
        found
    }

    fn four_models() -> Vec<(String, [f64; 4])> {
        vec![
            ("MostPop".into(), [0.0312, 0.0571, 0.0004, 0.0]),
            ("SASRec id".into(), [0.0865, 0.1204, 0.0123, 0.0041]),
            ("SASRec fused".into(), [0.0902, 0.1188, 0.0188, 0.0066]),
            ("SASRec dual".into(), [0.0871, 0.1149, 0.0202, 0.0093]),
        ]
    }

    #[test]
    fn the_head_vs_tail_chart_has_a_legend_entry_per_model_and_no_overlapping_text() {
        let models = four_models();
        let chart = grouped_bars(&models);
        let names: Vec<&str> = chart.legend.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["MostPop", "SASRec id", "SASRec fused", "SASRec dual"]);
        let colours: std::collections::HashSet<_> = chart.legend.iter().map(|(_, c)| *c).collect();
        assert_eq!(colours.len(), 4, "one colour per model");
        let svg = chart.svg();
        for (name, _) in &models {
            assert_eq!(svg.matches(&format!(">{name}</text>")).count(), 1, "{name} once in the legend: {svg}");
        }
        // 4 groups × 4 models: a value on every bar, each panel titled.
        for group in tailforge_core::schema::EVAL_GROUPS {
            assert_eq!(svg.matches(&format!(">{group}</text>")).count(), 1, "{group}");
        }
        for value in ["0.090", "0.120", "0.00040", "0.0093", "0.0041"] {
            assert!(svg.contains(&format!(">{value}</text>")), "{value} printed: {svg}");
        }
        assert_eq!(chart.bars.len(), 4 + 16, "4 legend swatches, 16 bars");
        assert!(overlapping(&chart.labels).is_empty(), "{:?}", overlapping(&chart.labels));
        // Every text inside the picture.
        for l in &chart.labels {
            let (x0, y0, x1, y1) = l.bounds();
            assert!(x0 >= 0.0 && y0 >= 0.0 && x1 <= chart.width && y1 <= chart.height, "{l:?} outside");
        }
    }

    #[test]
    fn tiny_tail_values_fill_their_own_panel() {
        let chart = grouped_bars(&four_models());
        // Panel 2 (tail): the largest tail value gets the full plot height, as
        // the largest overall value does in panel 0.
        let heights: Vec<f64> = chart.bars[4..].iter().map(|b| b.h).collect();
        let max = |bars: &[f64]| bars.iter().fold(0.0f64, |a, b| a.max(*b));
        let (overall_max, tail_max) = (max(&heights[0..4]), max(&heights[8..12]));
        assert!((overall_max - tail_max).abs() < 1e-9 && tail_max > 100.0, "{heights:?}");
        assert!(heights[8] > 0.0, "MostPop's 0.0004 is a visible bar: {heights:?}");
        assert_eq!(heights[12], 0.0, "a zero is no bar");
        assert_eq!(
            (bar_value(0.0004), bar_value(0.0123), bar_value(0.0), bar_value(f64::NAN)),
            ("0.00040".into(), "0.012".into(), "0".into(), "—".into())
        );
    }

    #[test]
    fn many_or_long_named_models_still_do_not_overlap_and_names_are_escaped() {
        let mut models = four_models();
        for k in 0..4 {
            models.push((format!("SASRec variant <b>&{k}</b> with a rather long name"), [0.1234, 0.0567, 0.0012, 0.0]));
        }
        let chart = grouped_bars(&models);
        assert!(overlapping(&chart.labels).is_empty(), "{:?}", overlapping(&chart.labels));
        assert!(chart.labels.iter().any(|l| l.vertical), "values turn upright on narrow bars");
        let svg = chart.svg();
        assert!(svg.contains("SASRec variant &lt;b&gt;&amp;0&lt;/b&gt; with") && !svg.contains("<b>"), "{svg}");
        for l in &chart.labels {
            let (x0, y0, x1, y1) = l.bounds();
            assert!(x0 >= 0.0 && y0 >= 0.0 && x1 <= chart.width && y1 <= chart.height, "{l:?} outside");
        }
    }
}

/// Training curves: one line per model of (epoch, value), e.g. validation
/// NDCG@10 or the training loss; `y_desc` names the value.
pub fn curves_svg(curves: &[(String, Vec<(f64, f64)>)], y_desc: &str) -> String {
    series_svg(curves, "epoch", y_desc)
}

/// Lines of (x, y) points, one per named series, with a legend.
pub fn series_svg(curves: &[(String, Vec<(f64, f64)>)], x_desc: &str, y_desc: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let points = curves.iter().flat_map(|(_, c)| c.iter());
        let (max_x, max_y) = points.fold((1.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
        let chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..max_x, 0f64..(max_y * 1.1).max(1e-3));
        let Ok(mut chart) = chart else { return svg_fallback() };
        let _ = chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw();
        let palette = [BLUE, RED, GREEN, MAGENTA];
        for (k, (name, curve)) in curves.iter().enumerate() {
            let color = palette[k % palette.len()];
            if let Ok(series) = chart.draw_series(LineSeries::new(curve.iter().copied(), color.stroke_width(2))) {
                series.label(name.clone()).legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            }
        }
        let _ = chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw();
        let _ = root.present();
    }
    svg
}

#[cfg(test)]
mod curve_tests {
    use super::*;

    #[test]
    fn curves_draw_a_line_and_a_legend_per_model() {
        let svg = curves_svg(
            &[("id".into(), vec![(1.0, 0.02), (2.0, 0.05)]), ("fused".into(), vec![(1.0, 0.03), (2.0, 0.06)])],
            "valid NDCG@10",
        );
        assert!(svg.matches("<polyline").count() >= 2, "{svg}");
        assert!(svg.contains("fused") && svg.contains("valid NDCG@10"));
    }
}
