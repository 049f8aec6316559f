//! Line charts as standalone SVG: the Recall@K curves (one line per run, K on a log axis) and
//! the report's training curve.

use std::fmt::Write;

use super::Run;

const W: f64 = 880.0;
const H: f64 = 460.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 370.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of a chart: its label and (x, y) points, y in [0, 1].
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// The x axis of a chart.
pub struct XAxis {
    pub label: &'static str,
    pub log: bool,
    /// Where the vertical grid lines and tick labels go.
    pub ticks: Vec<f64>,
}

/// An SVG document plotting Recall@K of every run (y from 0 to 1).
pub fn recall_svg(title: &str, runs: &[Run]) -> String {
    let mut ticks: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.metrics.recall.iter().map(|x| x.k as f64))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            label: r.label(),
            points: r
                .metrics
                .recall
                .iter()
                .map(|p| (p.k as f64, p.recall))
                .collect(),
        })
        .collect();
    let x = XAxis {
        label: "K (log scale)",
        log: true,
        ticks,
    };
    line_svg(title, &x, "Recall@K", &series)
}

/// A line chart as a standalone SVG document, y from 0 to 1, one colour per series.
pub fn line_svg(title: &str, xa: &XAxis, y_label: &str, series: &[Series]) -> String {
    let f = |v: f64| if xa.log { v.max(1e-9).ln() } else { v };
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(xa.ticks.iter().copied());
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(f(v)), b.max(f(v)))
    });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + (f(v) - lo) / (hi - lo) * pw;
    let y = |r: f64| TOP + (1.0 - r.clamp(0.0, 1.0)) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    for i in 0..=10 {
        let r = i as f64 / 10.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy}" y2="{yy}" stroke="#e5e5e5"/><text x="{}" y="{}" text-anchor="end">{r:.1}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y(r) + 4.0,
            yy = y(r)
        );
    }
    for &k in &xa.ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{xx}" x2="{xx}" y1="{TOP}" y2="{}" stroke="#e5e5e5"/><text x="{xx}" y="{}" text-anchor="middle">{k}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            xx = x(k)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 10.0,
        esc(xa.label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, line) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for &(px, py) in &line.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{} at {px} = {py:.4}</title></circle>"#,
                x(px),
                y(py),
                esc(&line.label),
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            W - RIGHT + 15.0,
            W - RIGHT + 35.0,
            W - RIGHT + 40.0,
            ly + 4.0,
            esc(&line.label)
        );
    }
    s.push_str("</svg>\n");
    s
}
