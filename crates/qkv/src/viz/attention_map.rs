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
                    let [r, g, b] = shade(v);
                    let color = RGBColor(r, g, b);
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

/// White (0) to dark blue (1), the colour of a weight in every map.
fn shade(v: f32) -> [u8; 3] {
    let s = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    [(255.0 * (1.0 - s)) as u8, (255.0 * (1.0 - 0.8 * s)) as u8, 255]
}

/// The same grid as [`write_svg`] as a PNG, without labels (cells of 12
/// pixels, panels 8 apart, layers down, heads across): for slides and
/// pages that take pictures only. The SVG has the token labels.
pub fn write_png(path: &Path, maps: &[LayerMaps]) -> Result<()> {
    let layers = maps.len();
    let heads = maps.first().map_or(0, Vec::len);
    let (tq, tk) = (maps.first().and_then(|l| l.first()).map_or(0, Vec::len), maps[0][0].first().map_or(0, Vec::len));
    if layers == 0 || heads == 0 || tq == 0 || tk == 0 {
        return Err(Error::Data("no attention maps to draw".into()));
    }
    let (cell, gap) = (12u32, 8u32);
    let (pw, ph) = (cell * tk as u32 + gap, cell * tq as u32 + gap);
    let (w, h) = (pw * heads as u32 + gap, ph * layers as u32 + gap);
    if u64::from(w) * u64::from(h) > 1 << 28 {
        return Err(Error::Data(format!("a {w}×{h} picture is too large; pick a --layer or --head")));
    }
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (l, layer) in maps.iter().enumerate() {
        for (hd, map) in layer.iter().enumerate() {
            let (x0, y0) = (gap + hd as u32 * pw, gap + l as u32 * ph);
            // a thin grey frame around each panel
            for x in x0 - 1..=x0 + cell * tk as u32 {
                img.put_pixel(x, y0 - 1, image::Rgb([200, 200, 200]));
                img.put_pixel(x, y0 + cell * tq as u32, image::Rgb([200, 200, 200]));
            }
            for (i, row) in map.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let c = image::Rgb(shade(v));
                    for dy in 0..cell {
                        for dx in 0..cell {
                            img.put_pixel(x0 + j as u32 * cell + dx, y0 + i as u32 * cell + dy, c);
                        }
                    }
                }
            }
        }
    }
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::format(path, format!("cannot encode the PNG: {e}")))?;
    write_atomic(path, &bytes)
}

/// Attention rollout over an image: the picture with each patch tinted by
/// how much the `[CLS]` token draws on it (`weights`, `side × side` patches,
/// the largest shown strongest), as an SVG that embeds the image.
pub fn write_rollout_svg(
    path: &Path,
    picture: &image::RgbImage,
    weights: &[f64],
    side: usize,
    title: &str,
) -> Result<()> {
    if side == 0 || weights.len() != side * side {
        return Err(Error::Data(format!("{} rollout weights for {side}×{side} patches", weights.len())));
    }
    let display = 384u32;
    let shown = image::imageops::resize(picture, display, display, image::imageops::FilterType::Triangle);
    let mut png = Vec::new();
    shown
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::format(path, format!("cannot encode the picture: {e}")))?;
    let top = weights.iter().cloned().fold(0.0f64, f64::max).max(1e-12);
    let patch = display as f64 / side as f64;
    let pad = 10u32;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"22\" font-family=\"sans-serif\" font-size=\"15\">{title}</text>\n\
         <image x=\"{pad}\" y=\"36\" width=\"{display}\" height=\"{display}\" href=\"data:image/png;base64,{data}\"/>\n\
         <image x=\"{x2}\" y=\"36\" width=\"{display}\" height=\"{display}\" href=\"data:image/png;base64,{data}\"/>\n",
        w = 2 * display + 3 * pad,
        h = display + 36 + pad + 20,
        title = escape(title),
        x2 = 2 * pad + display,
        data = base64(&png),
    );
    // right: the picture darkened where the [CLS] token draws little
    for (p, &wgt) in weights.iter().enumerate() {
        let (r, c) = (p / side, p % side);
        let dark = 0.85 * (1.0 - wgt / top);
        svg += &format!(
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{patch:.2}\" height=\"{patch:.2}\" fill=\"black\" fill-opacity=\"{dark:.3}\"/>\n",
            (2 * pad + display) as f64 + c as f64 * patch,
            36.0 + r as f64 * patch,
        );
    }
    svg += &format!(
        "<text x=\"{pad}\" y=\"{y}\" font-family=\"sans-serif\" font-size=\"12\">the image</text>\n\
         <text x=\"{x2}\" y=\"{y}\" font-family=\"sans-serif\" font-size=\"12\">attention rollout of [CLS] over the {n} patches (bright: drawn on most)</text>\n</svg>\n",
        y = display + 36 + 16,
        x2 = 2 * pad + display,
        n = side * side,
    );
    write_atomic(path, svg.as_bytes())
}

/// Text for an SVG element.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Standard base64 (RFC 4648, with padding), for the embedded picture.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, coded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
