//! Line charts of several named series on shared axes (linear or
//! logarithmic), as SVG: the comparison's pictures.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;

/// One axis: its label and whether it is logarithmic.
#[derive(Clone, Copy, Debug)]
pub struct Axis<'a> {
    pub label: &'a str,
    pub log: bool,
}

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (a variant of another series).
    pub dashed: bool,
}

/// Colours that stay apart when printed in grey.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

/// A value where the axis draws it: its base-10 logarithm on a log axis.
fn place(v: f64, log: bool) -> f64 {
    if log { v.log10() } else { v }
}

/// A tick's label, for the value it stands for.
fn tick(v: f64, log: bool) -> String {
    let v = if log { 10f64.powf(v) } else { v };
    match v.abs() {
        a if a >= 100.0 || a == 0.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.1}"),
        a if a >= 0.01 => format!("{v:.2}"),
        _ => format!("{v:.1e}"),
    }
}

/// The range of the drawable values (finite; positive on a log axis), where the axis places them, widened a little.
fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .map(|v| place(v, log))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// Draw `series` to an SVG file (written atomically). A log axis places
/// each value at its logarithm and labels the ticks with the values.
pub fn write_svg(path: &Path, title: &str, x: Axis, y: Axis, series: &[Series]) -> Result<()> {
    let xs = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), x.log);
    let ys = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), y.log);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| Error::format(path, format!("cannot draw the chart: {e}"));
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        plot(&root, title, x, y, series, xs, ys).map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    write_atomic(path, svg.as_bytes())
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn plot(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    x: Axis,
    y: Axis,
    series: &[Series],
    xs: (f64, f64),
    ys: (f64, f64),
) -> DrawResult {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)?;
    chart
        .configure_mesh()
        .x_desc(if x.log { format!("{} (log scale)", x.label) } else { x.label.to_string() })
        .y_desc(if y.log { format!("{} (log scale)", y.label) } else { y.label.to_string() })
        .x_label_formatter(&|v| tick(*v, x.log))
        .y_label_formatter(&|v| tick(*v, y.log))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!x.log || p.0 > 0.0) && (!y.log || p.1 > 0.0))
            .map(|p| (place(p.0, x.log), place(p.1, y.log)))
            .collect();
        let style = color.stroke_width(2);
        if s.dashed {
            // every other segment, so the variant reads as dashed
            for seg in pts.windows(2).step_by(2) {
                chart.draw_series(LineSeries::new(seg.to_vec(), style))?;
            }
            chart
                .draw_series(pts.iter().map(|&p| Cross::new(p, 4, style)))?
                .label(&s.name)
                .legend(move |(x, y)| Cross::new((x + 10, y), 4, style));
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.85)).draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_place_values_at_their_logarithm_and_label_them_with_the_value() {
        assert_eq!(place(1000.0, true), 3.0);
        assert_eq!(tick(3.0, true), "1000");
        assert_eq!(tick(0.5, false), "0.50");
        // non-positive values cannot sit on a log axis: left out of the range
        assert_eq!(range([0.0, -1.0, 10.0, 100.0].into_iter(), true), (1.0 - 0.05, 2.0 + 0.05));
    }

    #[test]
    fn a_chart_names_every_series() {
        let dir = std::env::temp_dir().join(format!("qkv-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let s = |name: &str, dashed| Series {
            name: name.into(),
            points: vec![(1.0, 2.0), (10.0, 3.0), (100.0, 9.0)],
            dashed,
        };
        write_svg(
            &path,
            "t",
            Axis { label: "x", log: true },
            Axis { label: "y", log: false },
            &[s("one", false), s("two", true)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("one") && svg.contains("two") && svg.contains("x (log scale)"), "{svg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
