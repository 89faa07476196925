//! The cameras-held-against-CPU chart of a `--max-cameras` search, as a
//! self-contained SVG (no fonts or scripts to fetch).

use std::fmt::Write;

use super::trial::Trial;

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// One point per trial: x cameras, y CPU use; green where the box held them
/// in real time, red where it did not.
pub fn cameras_vs_cpu(title: &str, trials: &[Trial]) -> String {
    let mut points: Vec<&Trial> = trials.iter().collect();
    points.sort_by_key(|t| t.cameras);
    let max_x = points.iter().map(|t| t.cameras).max().unwrap_or(1).max(1) as f64;
    let x = |c: usize| LEFT + (c as f64 / max_x) * (W - LEFT - RIGHT);
    let y = |cpu: f64| H - BOTTOM - (cpu.clamp(0.0, 100.0) / 100.0) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>
"##,
        W / 2.0,
        escape(title)
    );
    // Grid and axes: CPU every 25 %, one tick per camera count (at most 16 labels).
    for pct in [0, 25, 50, 75, 100] {
        let yy = y(pct as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{pct} %</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let step = (max_x as usize).div_ceil(16).max(1);
    for c in (0..=max_x as usize).step_by(step) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{c}</text>"##,
            x(c),
            H - BOTTOM + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">cameras</text>
<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">CPU use (whole box)</text>"##,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|t| format!("{:.1},{:.1}", x(t.cameras), y(t.cpu_percent)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#555" stroke-width="1.5"/>"##,
        path.join(" ")
    );
    for t in &points {
        let colour = match t.held {
            Some(true) => "#2a9d3a",
            Some(false) => "#d03030",
            None => "#555",
        };
        let _ = writeln!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{colour}"><title>{} cameras: {:.0} % CPU, {:.1} of {:.1} frames/s analysed</title></circle>"##,
            x(t.cameras),
            y(t.cpu_percent),
            t.cameras,
            t.cpu_percent,
            t.analysed_fps,
            t.expected_fps.unwrap_or(t.analysed_fps)
        );
    }
    let _ = writeln!(
        svg,
        r##"<circle cx="{:.1}" cy="{TOP}" r="5" fill="#2a9d3a"/><text x="{:.1}" y="{:.1}">held in real time</text>
<circle cx="{:.1}" cy="{TOP}" r="5" fill="#d03030"/><text x="{:.1}" y="{:.1}">not held</text>
</svg>"##,
        LEFT + 10.0,
        LEFT + 20.0,
        TOP + 4.0,
        LEFT + 150.0,
        LEFT + 160.0,
        TOP + 4.0
    );
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
