//! The loss curve of a run as an SVG: training loss (every step, lightly
//! smoothed) and validation loss (at each evaluation) against the step.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;
use crate::train::checkpoint::Metric;

/// Exponential moving average, so the per-step noise does not hide the trend.
fn smooth(xs: &[(f64, f64)], keep: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(xs.len());
    let mut s = None;
    for &(x, y) in xs {
        let v = match s {
            None => y,
            Some(prev) => keep * prev + (1.0 - keep) * y,
        };
        s = Some(v);
        out.push((x, v));
    }
    out
}

/// Draw `metrics` to an SVG file (written atomically).
pub fn write_svg(path: &Path, metrics: &[Metric], title: &str) -> Result<()> {
    let train: Vec<(f64, f64)> = metrics.iter().map(|m| (m.step as f64, m.train_loss as f64)).collect();
    let val: Vec<(f64, f64)> = metrics.iter().filter_map(|m| m.val_loss.map(|v| (m.step as f64, v as f64))).collect();
    let smoothed = smooth(&train, 0.9);
    let all = train.iter().chain(&val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.clone().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.05;
    let y_min = all.map(|p| p.1).fold(f64::INFINITY, f64::min).min(y_max) * 0.95;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| Error::format(path, format!("cannot draw the loss curve: {e}"));
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("loss (nats per token)")
            .draw()
            .map_err(|e| draw(&e))?;
        let light = RGBColor(150, 180, 230);
        chart.draw_series(LineSeries::new(train.iter().copied(), light)).map_err(|e| draw(&e))?;
        chart
            .draw_series(LineSeries::new(smoothed, BLUE.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled()))).map_err(|e| draw(&e))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    write_atomic(path, svg.as_bytes())
}
