//! The run report: `report.md` and a self-contained `report.html` whose plots
//! are SVG drawn with plotters and embedded inline (no external files, so the
//! report can be mailed or opened straight from object storage).

use std::fmt::Write as _;

use plotters::prelude::*;

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

/// Bars of NDCG@10 per group (overall, head, tail, cold) for each model, labelled
/// "<model> <group>".
pub fn metrics_svg(models: &[(String, [f64; 4])]) -> String {
    const GROUPS: [&str; 4] = tailforge_core::schema::EVAL_GROUPS;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max = models.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(0.01) * 1.2;
        let bars = (GROUPS.len() * models.len()).max(1) as u32;
        let chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d((0u32..bars).into_segmented(), 0f64..max);
        let Ok(mut chart) = chart else { return svg_fallback() };
        let label = |x: &SegmentValue<u32>| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                let (g, m) = (*i as usize / models.len().max(1), *i as usize % models.len().max(1));
                match (models.get(m), GROUPS.get(g)) {
                    (Some((name, _)), Some(group)) => format!("{name} {group}"),
                    _ => String::new(),
                }
            }
            SegmentValue::Last => String::new(),
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars as usize)
            .x_label_formatter(&label)
            .y_desc("NDCG@10 (full ranking)")
            .draw();
        let palette = [BLUE, RED, GREEN, MAGENTA];
        for (m, (_, values)) in models.iter().enumerate() {
            let color = palette[m % palette.len()];
            let data = values.iter().enumerate().map(|(g, v)| ((g * models.len() + m) as u32, *v));
            let _ = chart.draw_series(Histogram::vertical(&chart).style(color.filled()).margin(12).data(data));
        }
        let _ = root.present();
    }
    svg
}

/// One bar per labelled value, e.g. tokens per second by kind.
pub fn bars_svg(bars: &[(String, f64)], y_desc: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (480, 280)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9) * 1.2;
        let n = bars.len().max(1) as u32;
        let chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d((0u32..n).into_segmented(), 0f64..max);
        let Ok(mut chart) = chart else { return svg_fallback() };
        let label = |x: &SegmentValue<u32>| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i as usize).map(|b| b.0.clone()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n as usize)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .draw();
        let data = bars.iter().enumerate().map(|(i, b)| (i as u32, b.1));
        let _ = chart.draw_series(Histogram::vertical(&chart).style(BLUE.filled()).margin(24).data(data));
        let _ = root.present();
    }
    svg
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
         pre{{background:#f6f6f6;padding:8px}}</style></head><body><h1>{}</h1>",
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

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_cannot_carry_markup() {
        let e = escape_markdown("x | <script>alert(1)</script> [a](http://e) **b**\nc");
        assert_eq!(e, "x \\| \\<script\\>alert\\(1\\)\\</script\\> \\[a\\]\\(http://e\\) \\*\\*b\\*\\* c");
    }

    #[test]
    fn plots_are_svg_with_their_labels() {
        let bars = bars_svg(&[("prompt".into(), 100.0), ("generated".into(), 53.0)], "tokens / s");
        assert!(bars.starts_with("<svg") && bars.contains("generated") && bars.contains("tokens / s"), "{bars}");
        let counts: Vec<u64> = (1..=500).map(|r| 10_000 / r).collect();
        let svg = popularity_svg(&counts, 100);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{}", &svg[..svg.len().min(300)]);
        assert!(svg.contains("item rank"), "axis label rendered");
        let bars = metrics_svg(&[("mostpop".into(), [0.025, 0.055, 0.0, 0.0])]);
        assert!(bars.matches("<rect").count() >= 3, "{bars}");
        assert!(bars.contains("mostpop tail"), "bars are labelled");
        assert!(html("run <x>", &[("a".into(), bars)]).contains("run &lt;x&gt;"));
    }
}

/// Training curves: one line per model of (epoch, value), e.g. validation
/// NDCG@10 or the training loss; `y_desc` names the value.
pub fn curves_svg(curves: &[(String, Vec<(f64, f64)>)], y_desc: &str) -> String {
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
        let _ = chart.configure_mesh().x_desc("epoch").y_desc(y_desc).draw();
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
