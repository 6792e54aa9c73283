//! Labelled text for classification: read a CSV/TSV or JSON-lines file, drop
//! duplicate texts (so no sentence sits in both the training and the test
//! split), and split deterministically ([`held_out`]: the one recipe that
//! training and `qkv eval` share, so evaluation scores exactly the rows
//! training never saw).

use std::collections::HashSet;
use std::path::Path;

use qkv_tensor::Rng;

use crate::error::{Error, Result};

/// How labelled data was split: de-duplicate, shuffle with `seed`, hold out
/// the last `test_fraction`. Recorded with a trained model so that `qkv eval`
/// finds the same test rows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitInfo {
    pub seed: u64,
    pub test_fraction: f64,
    pub text_column: String,
    pub label_column: String,
}

impl SplitInfo {
    pub fn validate(&self) -> Result<()> {
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Error::Config(format!(
                "test_fraction {} must be between 0 and 1 (the share of rows held out for testing)",
                self.test_fraction
            )));
        }
        Ok(())
    }
}

/// A labelled file split for training and testing.
#[derive(Clone, Debug)]
pub struct HeldOut {
    pub train: LabeledTexts,
    pub test: LabeledTexts,
    /// Rows read, and how many of them were duplicates (dropped).
    pub rows: usize,
    pub duplicates: usize,
}

/// Read `path`, drop duplicate texts, split as `split` says. Both parts must
/// hold at least one row.
pub fn held_out(path: &Path, split: &SplitInfo, lossy: bool) -> Result<HeldOut> {
    split.validate()?;
    let mut data = read_labeled(path, &split.text_column, &split.label_column, lossy)?;
    let rows = data.len();
    let duplicates = data.dedup();
    let (train, test) = data.split(split.test_fraction, split.seed);
    if train.is_empty() || test.is_empty() {
        return Err(Error::format(
            path,
            format!("{rows} rows ({duplicates} duplicates) are too few to split into training and test rows"),
        ));
    }
    Ok(HeldOut { train, test, rows, duplicates })
}

/// Texts with their label names, one pair per example.
#[derive(Clone, Debug, Default)]
pub struct LabeledTexts {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
}

/// Read `text_column` and `label_column` of a `.csv`, `.tsv` or `.jsonl`
/// file. Bytes that are not UTF-8 are an error naming the row, unless `lossy`
/// (then they become U+FFFD). Rows with an empty text are skipped.
pub fn read_labeled(path: &Path, text_column: &str, label_column: &str, lossy: bool) -> Result<LabeledTexts> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
    match ext.as_str() {
        "jsonl" | "json" | "ndjson" => read_jsonl(path, text_column, label_column, lossy),
        "tsv" => read_delimited(path, b'\t', text_column, label_column, lossy),
        _ => read_delimited(path, b',', text_column, label_column, lossy),
    }
}

fn decode(path: &Path, bytes: &[u8], row: usize, column: &str, lossy: bool) -> Result<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) if lossy => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Err(e) => Err(Error::format(
            path,
            format!(
                "row {row}, column {column:?}: byte 0x{:02x} at offset {} of the field is not UTF-8 (pass --lossy to replace such bytes)",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        )),
    }
}

fn read_delimited(
    path: &Path,
    delimiter: u8,
    text_column: &str,
    label_column: &str,
    lossy: bool,
) -> Result<LabeledTexts> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_path(path)
        .map_err(|e| Error::format(path, format!("cannot read: {e}")))?;
    let headers =
        reader.byte_headers().map_err(|e| Error::format(path, format!("cannot read the header row: {e}")))?.clone();
    let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect();
    let find = |want: &str| {
        names.iter().position(|n| n == want).ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "no column named {want:?}; the columns are {names:?} (choose with --text-column / --label-column)"
                ),
            )
        })
    };
    let (ti, li) = (find(text_column)?, find(label_column)?);
    let mut out = LabeledTexts::default();
    for (r, record) in reader.byte_records().enumerate() {
        let row = r + 2; // 1-based, after the header
        let record = record.map_err(|e| Error::format(path, format!("row {row}: {e}")))?;
        let text = decode(path, &record[ti], row, text_column, lossy)?;
        let label = decode(path, &record[li], row, label_column, lossy)?;
        if text.trim().is_empty() {
            continue;
        }
        if label.trim().is_empty() {
            return Err(Error::format(path, format!("row {row}: empty label in column {label_column:?}")));
        }
        out.texts.push(text);
        out.labels.push(label.trim().to_string());
    }
    if out.texts.is_empty() {
        return Err(Error::format(path, "no labelled rows"));
    }
    Ok(out)
}

fn read_jsonl(path: &Path, text_column: &str, label_column: &str, lossy: bool) -> Result<LabeledTexts> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut out = LabeledTexts::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let row = i + 1;
        let line = decode(path, line, row, "(line)", lossy)?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::format(path, format!("line {row}: not JSON ({e})")))?;
        let field = |name: &str| -> Result<String> {
            match v.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Null) | None => Err(Error::format(
                    path,
                    format!("line {row}: no field {name:?} (choose with --text-column / --label-column)"),
                )),
                Some(other) => Ok(other.to_string()),
            }
        };
        let text = field(text_column)?;
        if text.trim().is_empty() {
            continue;
        }
        out.texts.push(text);
        out.labels.push(field(label_column)?.trim().to_string());
    }
    if out.texts.is_empty() {
        return Err(Error::format(path, "no labelled rows"));
    }
    Ok(out)
}

impl LabeledTexts {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Keep the first of each group of identical texts (after trimming and
    /// lower-casing); returns how many were dropped.
    pub fn dedup(&mut self) -> usize {
        let mut seen = HashSet::new();
        let before = self.len();
        let mut keep = Vec::with_capacity(before);
        for i in 0..before {
            if seen.insert(self.texts[i].trim().to_lowercase()) {
                keep.push(i);
            }
        }
        self.texts = keep.iter().map(|&i| std::mem::take(&mut self.texts[i])).collect();
        self.labels = keep.iter().map(|&i| std::mem::take(&mut self.labels[i])).collect();
        before - self.len()
    }

    /// Shuffle with `seed` and cut off the last `test_fraction` as the test split.
    pub fn split(mut self, test_fraction: f64, seed: u64) -> (LabeledTexts, LabeledTexts) {
        let n = self.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = Rng::new(seed);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let n_test = (((n as f64) * test_fraction).round() as usize).min(n);
        let pick = |idx: &[usize], s: &mut LabeledTexts| LabeledTexts {
            texts: idx.iter().map(|&i| std::mem::take(&mut s.texts[i])).collect(),
            labels: idx.iter().map(|&i| std::mem::take(&mut s.labels[i])).collect(),
        };
        let test = pick(&order[n - n_test..], &mut self);
        let train = pick(&order[..n - n_test], &mut self);
        (train, test)
    }
}

/// The label vocabulary: names sorted, ids by position.
pub fn label_names(labels: &[String]) -> Vec<String> {
    let mut names: Vec<String> =
        labels.iter().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    names.dedup();
    names
}

/// Ids of `labels` in `names`; a label outside them is an error that names it.
pub fn label_ids(labels: &[String], names: &[String], what: &str) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|l| {
            names.iter().position(|n| n == l).map(|i| i as u32).ok_or_else(|| {
                Error::Data(format!("{what}: label {l:?} was not seen in training (known labels: {names:?})"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("qkv-cls-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn csv_with_quotes_duplicates_and_bad_bytes() {
        let p = write(
            "a.csv",
            b"sentiment,confidence,text\npositive,1,\"great, really\"\nnegative,1,bad\nnegative,0.5,Bad \n",
        );
        let mut d = read_labeled(&p, "text", "sentiment", false).unwrap();
        assert_eq!(d.texts, vec!["great, really", "bad", "Bad "]);
        assert_eq!(d.dedup(), 1);
        assert_eq!(d.labels, vec!["positive", "negative"]);
        let e = read_labeled(&p, "tweet", "sentiment", false).unwrap_err().to_string();
        assert!(e.contains("\"tweet\"") && e.contains("sentiment"), "{e}");
        let bad = write("b.csv", b"label,text\npos,caf\xe9\n");
        let e = read_labeled(&bad, "text", "label", false).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("0xe9") && e.contains("--lossy"), "{e}");
        assert_eq!(read_labeled(&bad, "text", "label", true).unwrap().texts, vec!["caf\u{fffd}"]);
    }

    #[test]
    fn jsonl_and_unseen_labels() {
        let p = write("c.jsonl", b"{\"text\": \"hi\", \"label\": 1}\n{\"text\": \"yo\", \"label\": 0}\n\n");
        let d = read_labeled(&p, "text", "label", false).unwrap();
        assert_eq!(d.labels, vec!["1", "0"]);
        let names = label_names(&d.labels);
        assert_eq!(label_ids(&d.labels, &names, "train").unwrap(), vec![1, 0]);
        let e = label_ids(&["2".to_string()], &names, "test split").unwrap_err().to_string();
        assert!(e.contains("\"2\"") && e.contains("not seen"), "{e}");
    }

    /// A fraction outside (0, 1) once underflowed `n - n_test`; from the
    /// command line or a model's config.json it is refused with its value.
    #[test]
    fn test_fractions_outside_zero_to_one_are_refused() {
        let p = write(
            "f.csv",
            b"label,text
a,one
b,two
a,three
b,four
",
        );
        let info = |test_fraction| SplitInfo {
            seed: 1,
            test_fraction,
            text_column: "text".into(),
            label_column: "label".into(),
        };
        for bad in [1.5, 1.0, 0.0, -0.25, f64::NAN, f64::INFINITY] {
            let e = held_out(&p, &info(bad), false).unwrap_err().to_string();
            assert!(e.contains(&format!("test_fraction {bad}")) && e.contains("between 0 and 1"), "{bad}: {e}");
        }
        let split = held_out(&p, &info(0.25), false).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (3, 1));
    }

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let d = LabeledTexts {
            texts: (0..100).map(|i| format!("t{i}")).collect(),
            labels: (0..100).map(|i| format!("{}", i % 3)).collect(),
        };
        let (a, b) = d.clone().split(0.2, 7);
        let (a2, _) = d.split(0.2, 7);
        assert_eq!((a.len(), b.len()), (80, 20));
        assert_eq!(a.texts, a2.texts);
        assert!(b.texts.iter().all(|t| !a.texts.contains(t)));
    }
}
