//! Attention as pictures: a grid of heatmaps, one per layer (rows) and head
//! (columns), each row of a heatmap the weights one query token gives the
//! key tokens — for cross-attention, which source tokens each target token reads.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;

/// The weights of one layer: `[heads][query][key]`.
pub type LayerMaps = Vec<Vec<Vec<f32>>>;

/// Which layers and heads the maps are (1-based numbers, for the labels).
pub struct Picked<'a> {
    pub layers: &'a [usize],
    pub heads: &'a [usize],
}

/// Draw `maps` (layers × heads heatmaps) with `queries` down the side and
/// `keys` along the bottom of each, to an SVG file written atomically.
pub fn write_svg(
    path: &Path,
    maps: &[LayerMaps],
    picked: &Picked,
    queries: &[String],
    keys: &[String],
    title: &str,
) -> Result<()> {
    let layers = maps.len();
    let heads = maps.first().map_or(0, Vec::len);
    if layers == 0 || heads == 0 || picked.layers.len() != layers || picked.heads.len() != heads {
        return Err(Error::Data("no attention maps to draw, or their layers and heads not named".into()));
    }
    let (tq, tk) = (queries.len(), keys.len());
    let cell = 18u32;
    let label = 9 * keys.iter().chain(queries).map(|s| s.chars().count()).max().unwrap_or(1).min(16) as u32 + 12;
    let panel_w = label + cell * tk as u32 + 10;
    let panel_h = label + cell * tq as u32 + 24;
    let (w, h) = (panel_w * heads as u32, panel_h * layers as u32 + 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| Error::format(path, format!("cannot draw the attention maps: {e}"));
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let (top, body) = root.split_vertically(40);
        top.draw(&Text::new(title.to_string(), (10, 12), ("sans-serif", 18))).map_err(|e| draw(&e))?;
        let panels = body.split_evenly((layers, heads));
        let short = |s: &str| -> String { s.chars().take(16).collect() };
        for (p, panel) in panels.iter().enumerate() {
            let (layer, head) = (p / heads, p % heads);
            let map = &maps[layer][head];
            panel
                .draw(&Text::new(
                    format!("layer {} · head {}", picked.layers[layer], picked.heads[head]),
                    (label as i32, 2),
                    ("sans-serif", 12),
                ))
                .map_err(|e| draw(&e))?;
            for (i, q) in queries.iter().enumerate() {
                let y = 18 + (i as u32 * cell) as i32;
                panel.draw(&Text::new(short(q), (2, y + 4), ("sans-serif", 11))).map_err(|e| draw(&e))?;
                for (j, &v) in map[i].iter().enumerate().take(tk) {
                    let x = (label + j as u32 * cell) as i32;
                    // white (0) to dark blue (1)
                    let s = v.clamp(0.0, 1.0);
                    let color = RGBColor((255.0 * (1.0 - s)) as u8, (255.0 * (1.0 - 0.8 * s)) as u8, 255);
                    panel
                        .draw(&Rectangle::new([(x, y), (x + cell as i32 - 1, y + cell as i32 - 1)], color.filled()))
                        .map_err(|e| draw(&e))?;
                }
            }
            let base = 18 + (tq as u32 * cell) as i32 + 4;
            for (j, k) in keys.iter().enumerate() {
                let x = (label + j as u32 * cell) as i32 + 4;
                let style = TextStyle::from(("sans-serif", 11).into_font()).transform(FontTransform::Rotate90);
                panel.draw(&Text::new(short(k), (x, base), style)).map_err(|e| draw(&e))?;
            }
        }
        root.present().map_err(|e| draw(&e))?;
    }
    write_atomic(path, svg.as_bytes())
}
