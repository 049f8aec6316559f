//! The Recall@K curve as a standalone SVG: one line per run, K on a log axis.

use std::fmt::Write;

use super::Run;

const W: f64 = 760.0;
const H: f64 = 460.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 250.0;
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

/// An SVG document plotting Recall@K of every run (y from 0 to 1).
pub fn recall_svg(title: &str, runs: &[Run]) -> String {
    let ks: Vec<usize> = runs
        .iter()
        .flat_map(|r| r.metrics.recall.iter().map(|x| x.k))
        .collect();
    let (kmin, kmax) = (
        ks.iter().copied().min().unwrap_or(1).max(1) as f64,
        ks.iter().copied().max().unwrap_or(100).max(2) as f64,
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |k: usize| LEFT + ((k as f64).ln() - kmin.ln()) / (kmax.ln() - kmin.ln()) * pw;
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
    let mut axis_ks = ks.clone();
    axis_ks.sort_unstable();
    axis_ks.dedup();
    for &k in &axis_ks {
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
        r#"<text x="{}" y="{}" text-anchor="middle">K (log scale)</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">Recall@K</text>"#,
        LEFT + pw / 2.0,
        H - 10.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (i, run) in runs.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = run
            .metrics
            .recall
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.k), y(p.recall)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in &run.metrics.recall {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{} R@{} = {:.4}</title></circle>"#,
                x(p.k),
                y(p.recall),
                esc(&run.label()),
                p.k,
                p.recall
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
            esc(&run.label())
        );
    }
    s.push_str("</svg>\n");
    s
}
