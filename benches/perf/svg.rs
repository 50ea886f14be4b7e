//! Line charts as standalone SVG files, for docs/performance.md.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// The legend's label.
    pub(crate) label: String,
    /// The points, in x order.
    pub(crate) points: Vec<(f64, f64)>,
    /// Whether the line is dashed (a reference such as the ideal).
    pub(crate) dashed: bool,
}

/// A chart: title, axis labels and lines.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// Above the plot.
    pub(crate) title: String,
    /// Under the x axis.
    pub(crate) x_label: String,
    /// Beside the y axis.
    pub(crate) y_label: String,
    /// Whether x is drawn on a log₂ scale (concurrency sweeps).
    pub(crate) log_x: bool,
    /// The lines.
    pub(crate) series: Vec<Series>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLORS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

impl Chart {
    /// The chart as an SVG document.
    pub(crate) fn to_svg(&self) -> String {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let x_of = |x: f64| if self.log_x { x.max(1e-9).log2() } else { x };
        let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0_f64);
        for &(x, y) in points {
            x_min = x_min.min(x_of(x));
            x_max = x_max.max(x_of(x));
            y_max = y_max.max(y);
        }
        if x_min > x_max {
            (x_min, x_max) = (0.0, 1.0);
        }
        if x_max - x_min < 1e-9 {
            x_max = x_min + 1.0;
        }
        let y_max = nice_ceiling(y_max);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x_of(x) - x_min) / (x_max - x_min) * plot_w;
        let sy = |y: f64| TOP + plot_h - y / y_max * plot_h;

        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(
            svg,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // Axes, grid and ticks.
        for i in 0..=5 {
            let y = y_max * f64::from(i) / 5.0;
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                sy(y) + 4.0,
                short(y),
                py = sy(y),
            );
        }
        let mut ticks: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        for x in ticks {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                sx(x),
                TOP + plot_h + 18.0,
                short(x)
            );
        }
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="black"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
            TOP + plot_h,
            LEFT + plot_w,
            TOP + plot_h,
            TOP + plot_h
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label),
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        // Lines, markers and the legend.
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let dash = if series.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in &series.points {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let _ = write!(
                svg,
                r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                WIDTH - RIGHT + 12.0,
                WIDTH - RIGHT + 36.0,
                WIDTH - RIGHT + 42.0,
                ly + 4.0,
                escape(&series.label)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `value` (a round top for the y axis).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A tick label: whole numbers without decimals, thousands as `k`.
fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{}k", (value / 1000.0).round())
    } else if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1900.0), 2000.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
        assert_eq!(nice_ceiling(20.0), 20.0);
    }

    #[test]
    fn a_chart_draws_every_series_and_escapes_text() {
        let chart = Chart {
            title: "wall time <ideal>".into(),
            x_label: "concurrency".into(),
            y_label: "s".into(),
            log_x: true,
            series: vec![
                Series {
                    label: "measured".into(),
                    points: vec![(250.0, 80.0), (1000.0, 21.0)],
                    dashed: false,
                },
                Series {
                    label: "ideal".into(),
                    points: vec![(250.0, 80.0), (1000.0, 20.0)],
                    dashed: true,
                },
            ],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("wall time &lt;ideal&gt;"));
        assert!(!svg.contains("NaN"));
    }
}
