//! Images for the Vision Transformer, from three kinds of source:
//!
//! - MNIST-style IDX files (raw or gzip): a directory holding
//!   `train-images…`, `train-labels…` and, for the test split, `t10k-images…`,
//!   `t10k-labels…`;
//! - a directory with one sub-directory of PNG/JPEG images per class (and
//!   optionally `train/` and `test/` directories of that form);
//! - the 8×8 digits CSV (64 pixel values 0–16 then the label, per row; gzip or not).
//!
//! Every image becomes `channels × size × size` floats in [-1, 1]
//! (`(pixel/max - 0.5) / 0.5`, the normalisation of Hugging Face's ViT);
//! images of another size are resized, and colour/grey converted, to the
//! model's.

use std::path::{Path, PathBuf};

use super::read_maybe_gz;
use crate::error::{Error, Result};

/// A set of images with labels.
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    /// `[N, channels, size, size]`, row-major.
    pub pixels: Vec<f32>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub size: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of images `idx`, `[idx.len(), ch, s, s]`.
    pub fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let per = self.channels * self.size * self.size;
        let mut out = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            out.extend_from_slice(&self.pixels[i * per..(i + 1) * per]);
        }
        out
    }
}

/// Training and test images with the class names.
#[derive(Debug)]
pub struct ImageData {
    pub train: ImageSet,
    pub test: ImageSet,
    pub label_names: Vec<String>,
    /// Where the test split came from (for reports).
    pub test_source: String,
}

/// An IDX array of unsigned bytes: its dimensions and data.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let b = read_maybe_gz(path)?;
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(Error::format(path, "not an IDX file (bad magic number)"));
    }
    if b[2] != 0x08 {
        return Err(Error::format(
            path,
            format!("IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported", b[2]),
        ));
    }
    let nd = b[3] as usize;
    if b.len() < 4 + 4 * nd {
        return Err(Error::format(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize)
        .collect();
    // checked: dimensions whose product wraps would otherwise match a short file
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("IDX dimensions {dims:?} multiply past any file size")))?;
    if dims.contains(&0) {
        return Err(Error::format(path, format!("IDX dimensions {dims:?}: every dimension must be at least 1")));
    }
    let data = &b[4 + 4 * nd..];
    if data.len() != n {
        return Err(Error::format(
            path,
            format!("IDX header says {n} values ({dims:?}) but the file holds {}", data.len()),
        ));
    }
    Ok((dims, data.to_vec()))
}

/// Resize one grey or colour image (values in [0, 1]) to `size × size` with
/// `channels` channels, bilinear.
fn convert(src: &[f32], ch: usize, h: usize, w: usize, channels: usize, size: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; channels * size * size];
    for c in 0..channels {
        for y in 0..size {
            for x in 0..size {
                // centre-aligned sampling position in the source
                let sy = ((y as f32 + 0.5) * h as f32 / size as f32 - 0.5).clamp(0.0, (h - 1) as f32);
                let sx = ((x as f32 + 0.5) * w as f32 / size as f32 - 0.5).clamp(0.0, (w - 1) as f32);
                let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
                let px = |yy: usize, xx: usize| -> f32 {
                    if ch == channels {
                        src[(c * h + yy) * w + xx]
                    } else if ch == 1 {
                        src[yy * w + xx] // grey → every colour channel
                    } else {
                        // colour → grey: luma
                        0.299 * src[yy * w + xx] + 0.587 * src[(h + yy) * w + xx] + 0.114 * src[(2 * h + yy) * w + xx]
                    }
                };
                let v = px(y0, x0) * (1.0 - fy) * (1.0 - fx)
                    + px(y0, x1) * (1.0 - fy) * fx
                    + px(y1, x0) * fy * (1.0 - fx)
                    + px(y1, x1) * fy * fx;
                out[(c * size + y) * size + x] = (v - 0.5) / 0.5;
            }
        }
    }
    out
}

fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Images and labels from an IDX pair.
fn idx_set(images: &Path, labels: &Path, channels: usize, size: usize) -> Result<ImageSet> {
    let (dims, px) = read_idx(images)?;
    if dims.len() != 3 {
        return Err(Error::format(images, format!("expected [count, rows, cols] images, found dimensions {dims:?}")));
    }
    let (ldims, lab) = read_idx(labels)?;
    if ldims.len() != 1 || ldims[0] != dims[0] {
        return Err(Error::format(labels, format!("{:?} labels for {} images", ldims, dims[0])));
    }
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    let mut pixels = Vec::with_capacity(n * channels * size * size);
    let mut buf = vec![0.0f32; h * w];
    for i in 0..n {
        for (d, &s) in buf.iter_mut().zip(&px[i * h * w..(i + 1) * h * w]) {
            *d = s as f32 / 255.0;
        }
        pixels.extend(convert(&buf, 1, h, w, channels, size));
    }
    Ok(ImageSet { pixels, labels: lab.iter().map(|&l| l as u32).collect(), channels, size })
}

/// Classes a digits CSV may name (its labels are 0..=9; a little room for other sets).
const MAX_DIGIT_CLASSES: u32 = 1000;

/// The 8×8 digits CSV: 64 values in 0..=16, then the label.
fn digits_csv(path: &Path, channels: usize, size: usize) -> Result<ImageSet> {
    let bytes = read_maybe_gz(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::format(path, format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to())))?;
    let mut set = ImageSet { channels, size, ..Default::default() };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 65 {
            return Err(Error::format(
                path,
                format!("line {}: {} values, expected 64 pixels and a label", i + 1, fields.len()),
            ));
        }
        // pixels are intensities 0..=16 (NaN and infinity fail the range test)
        let img = fields[..64]
            .iter()
            .map(|v| match v.parse::<f32>() {
                Ok(x) if (0.0..=16.0).contains(&x) => Ok(x / 16.0),
                _ => Err(Error::format(path, format!("line {}: pixel {v:?} is not a number from 0 to 16", i + 1))),
            })
            .collect::<Result<Vec<f32>>>()?;
        // the label is a class number: a whole number below MAX_DIGIT_CLASSES
        let label = match fields[64].parse::<u32>() {
            Ok(l) if l < MAX_DIGIT_CLASSES => l,
            _ => {
                return Err(Error::format(
                    path,
                    format!(
                        "line {}: label {:?} is not a class number from 0 to {}",
                        i + 1,
                        fields[64],
                        MAX_DIGIT_CLASSES - 1
                    ),
                ));
            }
        };
        set.pixels.extend(convert(&img, 1, 8, 8, channels, size));
        set.labels.push(label);
    }
    if set.is_empty() {
        return Err(Error::format(path, "no images"));
    }
    Ok(set)
}

/// One image file, decoded and converted to the model's channels and size.
pub fn load_image(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    Ok(load_image_noting(path, channels, size)?.0)
}

/// An image file's bytes (PNG or JPEG) prepared as [`load_image`] prepares
/// a file: for an uploaded picture.
pub fn image_from_bytes(bytes: &[u8], channels: usize, size: usize) -> Result<Vec<f32>> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::Data(format!("not an image qkv reads (PNG or JPEG): {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Data("the image is empty".into()));
    }
    Ok(load_image_pixels(&img, channels, size))
}

/// An image file as it is, in RGB (for drawing over it).
pub fn load_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = image::open(path).map_err(|e| Error::format(path, format!("cannot read the image: {e}")))?;
    Ok(img.to_rgb8())
}

/// [`load_image`], plus a note saying how the image was changed to fit the
/// model (resized, colour to grey, grey to colour), if it was.
pub fn load_image_noting(path: &Path, channels: usize, size: usize) -> Result<(Vec<f32>, Option<String>)> {
    let img = image::open(path).map_err(|e| Error::format(path, format!("cannot read the image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::format(path, "the image is empty"));
    }
    let colour = img.color().has_color();
    let mut changes = Vec::new();
    if (w, h) != (size, size) {
        changes.push(format!("resized from {w}×{h} to the model's {size}×{size}"));
    }
    match (colour, channels) {
        (true, 1) => changes.push("converted from colour to grey (the model reads 1 channel)".to_string()),
        (false, 3) => changes.push("converted from grey to RGB (the model reads 3 channels)".to_string()),
        _ => {}
    }
    let note = (!changes.is_empty()).then(|| format!("{}: {}", path.display(), changes.join(", ")));
    Ok((load_image_pixels(&img, channels, size), note))
}

fn load_image_pixels(img: &image::DynamicImage, channels: usize, size: usize) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ch, raw): (usize, Vec<f32>) = if channels == 1 {
        (1, img.to_luma8().into_raw().iter().map(|&v| v as f32 / 255.0).collect())
    } else {
        let rgb = img.to_rgb8();
        // interleaved RGB → channel planes
        let mut planes = vec![0.0f32; 3 * h * w];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                planes[c * h * w + i] = px.0[c] as f32 / 255.0;
            }
        }
        (3, planes)
    };
    convert(&raw, ch, h, w, channels, size)
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A directory of class directories.
fn folder_set(dir: &Path, names: &mut Vec<String>, grow: bool, channels: usize, size: usize) -> Result<ImageSet> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut set = ImageSet { channels, size, ..Default::default() };
    for class_dir in classes {
        let name = class_dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let id = match names.iter().position(|n| *n == name) {
            Some(i) => i,
            None if grow => {
                names.push(name.clone());
                names.len() - 1
            }
            None => {
                return Err(Error::Data(format!(
                    "{}: class {name:?} does not exist in the training images (classes: {names:?})",
                    class_dir.display()
                )));
            }
        };
        for f in image_files(&class_dir)? {
            set.pixels.extend(load_image(&f, channels, size)?);
            set.labels.push(id as u32);
        }
    }
    if set.is_empty() {
        return Err(Error::format(dir, "no PNG or JPEG images in class sub-directories"));
    }
    Ok(set)
}

/// Split off every `1/k`-th image (deterministically) as a test set.
fn hold_out(set: ImageSet, fraction: f64) -> (ImageSet, ImageSet) {
    let per = set.channels * set.size * set.size;
    let every = (1.0 / fraction).round().max(2.0) as usize;
    let (mut train, mut test) = (
        ImageSet { channels: set.channels, size: set.size, ..Default::default() },
        ImageSet { channels: set.channels, size: set.size, ..Default::default() },
    );
    for i in 0..set.len() {
        let dst = if i % every == every - 1 { &mut test } else { &mut train };
        dst.pixels.extend_from_slice(&set.pixels[i * per..(i + 1) * per]);
        dst.labels.push(set.labels[i]);
    }
    (train, test)
}

/// Read any of the three sources (see the module docs) as `channels × size × size` images.
pub fn load(path: &Path, channels: usize, size: usize) -> Result<ImageData> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_lowercase();
    if path.is_file() && (name.ends_with(".csv") || name.ends_with(".csv.gz")) {
        let set = digits_csv(path, channels, size)?;
        let n_classes = set.labels.iter().max().map_or(0, |&m| m as usize + 1);
        let (train, test) = hold_out(set, 0.1);
        return Ok(ImageData {
            train,
            test,
            label_names: (0..n_classes).map(|i| i.to_string()).collect(),
            test_source: "every 10th row of the CSV".into(),
        });
    }
    if !path.is_dir() {
        return Err(Error::format(path, "expected a directory of IDX files or class folders, or a digits CSV"));
    }
    if let (Some(ti), Some(tl)) = (find_prefixed(path, "train-images"), find_prefixed(path, "train-labels")) {
        let train = idx_set(&ti, &tl, channels, size)?;
        let (test, source) = match (find_prefixed(path, "t10k-images"), find_prefixed(path, "t10k-labels")) {
            (Some(xi), Some(xl)) => (idx_set(&xi, &xl, channels, size)?, xi.display().to_string()),
            _ => {
                return Err(Error::format(
                    path,
                    "train-images/train-labels found but no t10k-images/t10k-labels test files",
                ));
            }
        };
        let n_classes = train.labels.iter().chain(&test.labels).max().map_or(0, |&m| m as usize + 1);
        return Ok(ImageData {
            train,
            test,
            label_names: (0..n_classes).map(|i| i.to_string()).collect(),
            test_source: source,
        });
    }
    let mut names = Vec::new();
    if path.join("train").is_dir() && path.join("test").is_dir() {
        let train = folder_set(&path.join("train"), &mut names, true, channels, size)?;
        let test = folder_set(&path.join("test"), &mut names, false, channels, size)?;
        return Ok(ImageData { train, test, label_names: names, test_source: path.join("test").display().to_string() });
    }
    let set = folder_set(path, &mut names, true, channels, size)?;
    let (train, test) = hold_out(set, 0.1);
    Ok(ImageData { train, test, label_names: names, test_source: "every 10th image of each class".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_round_trip_with_gzip_and_resize() {
        let dir = std::env::temp_dir().join(format!("qkv-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let idx = |dims: &[u32], data: &[u8]| {
            let mut b = vec![0, 0, 8, dims.len() as u8];
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b.extend_from_slice(data);
            b
        };
        let gz = |bytes: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        let pixels: Vec<u8> = (0..2 * 4 * 4).map(|i| (i * 8) as u8).collect();
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&idx(&[2, 4, 4], &pixels))).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[2], &[3, 7])).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx(&[2, 4, 4], &pixels)).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[2], &[1, 2])).unwrap();
        let d = load(&dir, 1, 4).unwrap();
        assert_eq!(d.train.labels, vec![3, 7]);
        assert_eq!(d.label_names.len(), 8);
        assert!((d.train.pixels[0] + 1.0).abs() < 1e-6, "pixel 0 → -1");
        assert!((d.train.pixels[1] - ((8.0 / 255.0 - 0.5) / 0.5)).abs() < 1e-6);
        // resized to 8×8 RGB
        let big = load(&dir, 3, 8).unwrap();
        assert_eq!(big.train.pixels.len(), 2 * 3 * 64);
        // a labels file that does not match
        std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[3], &[1, 2, 3])).unwrap();
        assert!(load(&dir, 1, 4).unwrap_err().to_string().contains("labels for 2 images"));
        std::fs::write(dir.join("train-labels-idx1-ubyte"), b"garbage").unwrap();
        assert!(load(&dir, 1, 4).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An IDX header that asks for a zero dimension, or for dimensions whose
    /// product wraps around, is refused before anything is sized from it.
    #[test]
    fn idx_headers_that_cannot_hold_images_are_refused() {
        let dir = std::env::temp_dir().join(format!("qkv-idx-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = |dims: &[u32]| {
            let mut b = vec![0, 0, 8, dims.len() as u8];
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b
        };
        let path = dir.join("x-idx3-ubyte");
        std::fs::write(&path, header(&[0, 28, 28])).unwrap();
        let e = read_idx(&path).unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        // 2^32 · 2^32 wraps a 64-bit product to 0, which an empty body would match
        std::fs::write(&path, header(&[u32::MAX, u32::MAX, u32::MAX])).unwrap();
        let e = read_idx(&path).unwrap_err().to_string();
        assert!(e.contains("multiply past"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Labels must be whole class numbers and pixels intensities 0..=16: the
    /// rows that used to be accepted quietly (`nan`, `-1`, `3.7`) or to ask
    /// for billions of classes (`4e9`) now name the line and the value.
    #[test]
    fn digits_rows_with_impossible_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("qkv-digits-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("digits.csv");
        let row = |pixel: &str, label: &str| format!("{pixel}{}{label}\n", ",0".repeat(63) + ",");
        std::fs::write(&path, row("16", "7")).unwrap();
        let ok = digits_csv(&path, 1, 8).unwrap();
        assert_eq!(ok.labels, vec![7]);
        assert!((ok.pixels[0] - 1.0).abs() < 1e-6, "16 is the brightest pixel");
        for (pixel, label, says) in [
            ("0", "4e9", "label"),
            ("0", "nan", "label"),
            ("0", "-1", "label"),
            ("0", "3.7", "label"),
            ("0", "1000", "label"),
            ("nan", "1", "pixel"),
            ("-1", "1", "pixel"),
            ("17", "1", "pixel"),
            ("inf", "1", "pixel"),
        ] {
            std::fs::write(&path, row(pixel, label)).unwrap();
            let e = digits_csv(&path, 1, 8).unwrap_err().to_string();
            assert!(e.contains("line 1") && e.contains(says), "{pixel},{label}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
