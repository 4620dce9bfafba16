//! SVG plots of a run, written directly (bars, a reference line and
//! labels need no plotting library, and the files stay small and
//! diff-able).
//!
//! - `summary.svg`: Caracal's advantage for every figure of the run on a
//!   log scale, with the parity line at 1×.
//! - `<scenario>.svg`: Caracal and the peer side by side for each figure
//!   of one scenario, each pair scaled to its larger value.

use std::fmt::Write as _;
use std::path::Path;

use super::report::figure;
use super::Scenario;

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 330.0;
const BAR_H: f64 = 18.0;
const GAP: f64 = 8.0;
const TOP: f64 = 50.0;
const OURS: &str = "#2b7bb9";
const PEER: &str = "#b0b0b0";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn header(s: &mut String, height: f64, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
}

/// Every figure's advantage, log scale from 1/`span` to `span`.
pub fn summary(scenarios: &[Scenario], path: &Path) -> std::io::Result<()> {
    let rows: Vec<(String, f64)> = scenarios
        .iter()
        .flat_map(|sc| {
            sc.rows
                .iter()
                .map(move |r| (format!("{}: {} {}", sc.id, r.case, r.metric), r.advantage))
        })
        .collect();
    let span = rows
        .iter()
        .map(|(_, a)| if *a > 0.0 { a.max(1.0 / a) } else { 1.0 })
        .fold(2.0f64, f64::max)
        .log10()
        .ceil();
    let plot_w = WIDTH - LABEL_W - 80.0;
    let x = |advantage: f64| {
        let l = advantage.max(10f64.powf(-span)).log10();
        LABEL_W + plot_w * (l + span) / (2.0 * span)
    };
    let height = TOP + rows.len() as f64 * (BAR_H + GAP) + 40.0;
    let mut s = String::new();
    header(
        &mut s,
        height,
        "Caracal's advantage over the peer measured in the same run (log scale; right of 1x: Caracal wins)",
    );
    for (i, (label, advantage)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (BAR_H + GAP);
        let (x0, x1) = (x(1.0), x(*advantage));
        let colour = if *advantage >= 1.0 { OURS } else { "#c0504d" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + BAR_H * 0.75,
            escape(label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{colour}"/>"#,
            x0.min(x1),
            (x1 - x0).abs().max(1.0)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{:.2}x</text>"#,
            x0.max(x1) + 4.0,
            y + BAR_H * 0.75,
            advantage
        );
    }
    let bottom = TOP + rows.len() as f64 * (BAR_H + GAP);
    for e in -(span as i32)..=(span as i32) {
        let v = 10f64.powi(e);
        let xe = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xe:.1}" y1="{}" x2="{xe:.1}" y2="{bottom}" stroke="{}" stroke-width="{}"/>"##,
            TOP - 6.0,
            if e == 0 { "#000" } else { "#ddd" },
            if e == 0 { 1.5 } else { 1.0 }
        );
        let _ = writeln!(
            s,
            r#"<text x="{xe:.1}" y="{}" text-anchor="middle">{}x</text>"#,
            bottom + 16.0,
            figure(v)
        );
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s)
}

/// Caracal and the peer for every figure of one scenario.
pub fn scenario(sc: &Scenario, path: &Path) -> std::io::Result<()> {
    let pair_h = 2.0 * BAR_H + GAP;
    let height = TOP + 20.0 + sc.rows.len() as f64 * (pair_h + GAP) + 20.0;
    let plot_w = WIDTH - LABEL_W - 160.0;
    let mut s = String::new();
    header(
        &mut s,
        height,
        &format!("{}: Caracal vs {}", sc.title, sc.peer),
    );
    let _ = writeln!(
        s,
        r#"<rect x="{LABEL_W}" y="32" width="12" height="12" fill="{OURS}"/><text x="{}" y="42">Caracal</text><rect x="{}" y="32" width="12" height="12" fill="{PEER}"/><text x="{}" y="42">{}</text>"#,
        LABEL_W + 16.0,
        LABEL_W + 90.0,
        LABEL_W + 106.0,
        escape(&sc.peer)
    );
    for (i, r) in sc.rows.iter().enumerate() {
        let y = TOP + 20.0 + i as f64 * (pair_h + GAP);
        let scale = r.ours.max(r.peer);
        let w = |v: f64| if scale > 0.0 { plot_w * v / scale } else { 0.0 };
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{}" y="{:.1}" text-anchor="end" fill="#666">{} ({}{})</text>"##,
            LABEL_W - 8.0,
            y + BAR_H * 0.8,
            escape(&r.case),
            LABEL_W - 8.0,
            y + BAR_H * 1.9,
            escape(&r.metric),
            escape(&r.unit),
            match r.better {
                super::Better::Higher => ", higher is better",
                super::Better::Lower => ", lower is better",
            }
        );
        for (k, (v, colour)) in [(r.ours, OURS), (r.peer, PEER)].into_iter().enumerate() {
            let yb = y + k as f64 * BAR_H;
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL_W}" y="{yb:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                w(v).max(1.0),
                BAR_H - 2.0,
                LABEL_W + w(v).max(1.0) + 4.0,
                yb + BAR_H * 0.7,
                figure(v)
            );
        }
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s)
}
