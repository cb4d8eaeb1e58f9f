//! The daily chart of a group's page: installs and failures per day, as an inline SVG drawn on
//! the server (no script). Only numbers and dates go into it, so it needs no escaping.

use std::fmt::Write;

use aloft_core::api::DailyInsights;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

/// The chart of `days` (oldest first), described by `label` for screen readers.
pub(super) fn daily(days: &[DailyInsights], label: &str) -> String {
    let max = days
        .iter()
        .map(|d| d.installs.max(d.failures))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let step = if days.len() > 1 {
        plot_w / (days.len() - 1) as f64
    } else {
        0.0
    };
    let x = |i: usize| LEFT + step * i as f64;
    let y = |v: u64| TOP + plot_h - plot_h * (v as f64 / max as f64);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/>"#,
        b = TOP + plot_h,
        r = WIDTH - 8.0
    );
    let _ = write!(
        svg,
        r#"<text x="4" y="{t}">{max}</text><text x="4" y="{b}">0</text>"#,
        t = TOP + 10.0,
        b = TOP + plot_h
    );
    for (class, value) in [
        (
            "installs",
            (|d: &DailyInsights| d.installs) as fn(&DailyInsights) -> u64,
        ),
        ("failures", |d: &DailyInsights| d.failures),
    ] {
        let points: Vec<String> = days
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{:.1},{:.1}", x(i), y(value(d))))
            .collect();
        if !points.is_empty() {
            let _ = write!(svg, r#"<polyline class="{class}" points="{}"/>"#, points.join(" "));
        }
    }
    let every = days.len().div_ceil(7).max(1);
    for (i, d) in days.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(i),
            HEIGHT - 6.0,
            d.date.get(5..).unwrap_or(&d.date)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, installs: u64, failures: u64) -> DailyInsights {
        DailyInsights {
            date: date.into(),
            devices: installs,
            installs,
            launches: installs,
            failures,
            failure_rate: None,
        }
    }

    #[test]
    fn the_chart_scales_to_the_largest_count() {
        let svg = daily(&[day("2026-11-29", 10, 0), day("2026-11-30", 40, 4)], "chart");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(">40</text>"), "{svg}");
        // The largest value reaches the top of the plot; zero lies on the axis.
        assert!(
            svg.contains(&format!("{:.1},{:.1}", LEFT + (WIDTH - LEFT - 8.0), TOP)),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("{:.1},{:.1}", LEFT, TOP + HEIGHT - TOP - BOTTOM)),
            "{svg}"
        );
        assert!(svg.contains(">11-30</text>"));
    }
}
