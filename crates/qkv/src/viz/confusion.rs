//! A confusion matrix as a picture: rows are the true classes, columns the
//! predicted ones; each cell shows how many examples of its row got its
//! column's label, shaded by the fraction of the row (the diagonal is right).

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;

/// Draw `confusion` (`[true][predicted]` counts) with its class `labels` to an
/// SVG file, written atomically.
pub fn write_svg(path: &Path, confusion: &[Vec<usize>], labels: &[String], title: &str) -> Result<()> {
    let n = confusion.len();
    if n == 0 || labels.len() != n || confusion.iter().any(|r| r.len() != n) {
        return Err(Error::Data(format!("a confusion matrix of {n} rows for {} labels", labels.len())));
    }
    let cell = if n > 30 { 14 } else { 40 };
    let label_w = 9 * labels.iter().map(|l| l.chars().count().min(18)).max().unwrap_or(1) + 16;
    let (left, top) = (label_w + 24, label_w + 60);
    let (w, h) = (left + n * cell + 20, top + n * cell + 20);
    let short = |s: &str| escape(&s.chars().take(18).collect::<String>());
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\">{}</text>\n\
         <text x=\"{left}\" y=\"40\" font-size=\"12\" fill=\"#555\">predicted class →</text>\n\
         <text x=\"12\" y=\"{top}\" font-size=\"12\" fill=\"#555\" transform=\"rotate(90 12 {top})\">true class →</text>\n",
        escape(title)
    );
    for (j, l) in labels.iter().enumerate() {
        let x = left + j * cell + cell / 2 + 4;
        svg += &format!(
            "<text x=\"{x}\" y=\"{y}\" font-size=\"11\" transform=\"rotate(-90 {x} {y})\">{}</text>\n",
            short(l),
            y = top - 6
        );
    }
    for (i, row) in confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        let y = top + i * cell;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n",
            left - 6,
            y + cell / 2 + 4,
            short(&labels[i])
        );
        for (j, &count) in row.iter().enumerate() {
            let f = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            // white (none of the row) to dark blue (all of it); red tint off the diagonal
            let (r, g) = ((255.0 * (1.0 - f)) as u8, (255.0 * (1.0 - 0.8 * f)) as u8);
            let fill = if i == j || count == 0 { format!("rgb({r},{g},255)") } else { format!("rgb(255,{g},{g})") };
            let x = left + j * cell;
            svg += &format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"/>\n",
                cell - 1,
                cell - 1
            );
            if cell >= 30 {
                let ink = if f > 0.55 { "white" } else { "black" };
                svg += &format!(
                    "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{ink}\">{count}</text>\n",
                    x + cell / 2,
                    y + cell / 2 + 4
                );
            }
        }
    }
    svg += "</svg>\n";
    write_atomic(path, svg.as_bytes())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
