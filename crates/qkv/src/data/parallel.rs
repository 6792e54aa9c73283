//! Sentence pairs for translation: a table (TSV or CSV, gzip or not) with a
//! source column and a target column, and optionally a **group** column —
//! the book of a Bible verse, the document of a sentence. Held-out pairs are
//! chosen by whole groups ([`PairSplit::held_out`]), so that test sentences
//! come from books the model never saw, not from the neighbours of training
//! verses; the same seeded choice in training and in `qkv eval`.
//!
//! Batches are made by tokens, not sentences ([`token_batches`]): pairs of
//! similar length go together, and each batch holds at most `max_tokens`
//! positions with its padding, so short and long sentences cost the same
//! memory per batch and little is spent on padding.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use qkv_tensor::Rng;

use crate::error::{Error, Result};

/// The bundled English–Spanish Bible (31,084 verse pairs; columns `book`,
/// `chapter`, `verse`, `en`, `es`; public domain, see `data/README.md`).
pub const BIBLE_EN_ES_GZ: &[u8] = include_bytes!("../../../../data/bible-en-es.tsv.gz");

/// Sentence pairs as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pairs {
    pub source: Vec<String>,
    pub target: Vec<String>,
    /// The group of each pair (empty when the table has no group column).
    pub group: Vec<String>,
    /// Rows left out because a side was empty.
    pub empty: usize,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    fn pick(&self, idx: &[usize]) -> Pairs {
        Pairs {
            source: idx.iter().map(|&i| self.source[i].clone()).collect(),
            target: idx.iter().map(|&i| self.target[i].clone()).collect(),
            group: idx.iter().map(|&i| self.group[i].clone()).collect(),
            empty: 0,
        }
    }
}

/// Which columns hold what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Columns {
    pub source: String,
    pub target: String,
    pub group: Option<String>,
}

/// Where the pairs come from: a file, or (`None`) the bundled Bible.
pub fn read_pairs(path: Option<&Path>, cols: &Columns, lossy: bool) -> Result<Pairs> {
    let (bytes, name) = match path {
        Some(p) => (super::read_maybe_gz(p)?, p.to_path_buf()),
        None => {
            let bytes = super::gunzip_if_gz(BIBLE_EN_ES_GZ.to_vec()).map_err(Error::Data)?;
            (bytes, PathBuf::from("bible-en-es.tsv (bundled)"))
        }
    };
    let lower = name.to_string_lossy().to_lowercase();
    let tsv = lower.ends_with(".tsv") || lower.ends_with(".tsv.gz") || path.is_none();
    parse_pairs(&bytes, tsv, &name, cols, lossy)
}

fn parse_pairs(bytes: &[u8], tsv: bool, path: &Path, cols: &Columns, lossy: bool) -> Result<Pairs> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(if tsv { b'\t' } else { b',' })
        // a TSV's fields are never quoted: a quote mark is text
        .quoting(!tsv)
        .flexible(false)
        .from_reader(bytes);
    let headers =
        reader.byte_headers().map_err(|e| Error::format(path, format!("cannot read the header row: {e}")))?.clone();
    let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect();
    let find = |want: &str, flag: &str| {
        names.iter().position(|n| n == want).ok_or_else(|| {
            Error::format(path, format!("no column named {want:?}; the columns are {names:?} (choose with {flag})"))
        })
    };
    let si = find(&cols.source, "--source-column")?;
    let ti = find(&cols.target, "--target-column")?;
    let gi = cols.group.as_deref().map(|g| find(g, "--group-column")).transpose()?;
    let mut out = Pairs::default();
    for (r, record) in reader.byte_records().enumerate() {
        let row = r + 2; // 1-based, after the header
        let record = record
            .map_err(|e| Error::format(path, format!("row {row}: {e} (a stray tab or comma inside a field?)")))?;
        let field = |i: usize, name: &str| -> Result<String> {
            let b = &record[i];
            match std::str::from_utf8(b) {
                Ok(s) => Ok(s.trim().to_string()),
                Err(_) if lossy => Ok(String::from_utf8_lossy(b).trim().to_string()),
                Err(e) => Err(Error::format(
                    path,
                    format!(
                        "row {row}, column {name:?}: byte offset {} is not UTF-8 (pass --lossy to replace such bytes)",
                        e.valid_up_to()
                    ),
                )),
            }
        };
        let (s, t) = (field(si, &cols.source)?, field(ti, &cols.target)?);
        if s.is_empty() || t.is_empty() {
            out.empty += 1;
            continue;
        }
        out.source.push(s);
        out.target.push(t);
        out.group.push(match gi {
            Some(g) => field(g, cols.group.as_deref().unwrap_or_default())?,
            None => String::new(),
        });
    }
    if out.is_empty() {
        return Err(Error::format(path, "no sentence pairs (every row has an empty side, or there are no rows)"));
    }
    Ok(out)
}

/// How pairs are split into training and held-out parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairSplit {
    pub seed: u64,
    /// Share of the pairs held out, reached by whole groups when there are groups.
    pub test_fraction: f64,
}

impl PairSplit {
    /// Training and held-out pairs. With groups: the groups in a seeded
    /// random order, held out one after another until `test_fraction` of the
    /// pairs is reached (at least one group, never all). Without: pairs held
    /// out one by one, in a seeded random order.
    pub fn held_out(&self, pairs: &Pairs) -> Result<(Pairs, Pairs)> {
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Error::Config(format!("test_fraction {} must be between 0 and 1", self.test_fraction)));
        }
        let n = pairs.len();
        let want = ((n as f64 * self.test_fraction).round() as usize).max(1);
        let mut rng = Rng::new(self.seed ^ 0x7A21_5E71);
        let grouped = pairs.group.iter().any(|g| !g.is_empty());
        let held: Vec<bool> = if grouped {
            // the groups in order of first appearance, then shuffled
            let mut groups: Vec<&str> = Vec::new();
            for g in &pairs.group {
                if !groups.contains(&g.as_str()) {
                    groups.push(g);
                }
            }
            if groups.len() < 2 {
                return Err(Error::Data(format!(
                    "one group ({:?}) only: holding out whole groups needs at least two",
                    groups.first().copied().unwrap_or_default()
                )));
            }
            shuffle(&mut groups, &mut rng);
            let mut chosen: Vec<&str> = Vec::new();
            let mut count = 0;
            for g in groups.iter().take(groups.len() - 1) {
                if count >= want {
                    break;
                }
                chosen.push(g);
                count += pairs.group.iter().filter(|x| x == g).count();
            }
            pairs.group.iter().map(|g| chosen.contains(&g.as_str())).collect()
        } else {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut rng);
            let mut held = vec![false; n];
            for &i in order.iter().take(want.min(n - 1)) {
                held[i] = true;
            }
            held
        };
        let (test, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| held[i]);
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data(format!("{n} pairs are too few to hold some out")));
        }
        Ok((pairs.pick(&train), pairs.pick(&test)))
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// Batches of pair indices made by tokens: the pairs sorted by length
/// (target, then source), then cut into runs whose padded size —
/// rows × the longest side in the run — stays within `max_tokens` (a pair
/// longer than that is a batch of its own).
pub fn token_batches(lengths: &[(usize, usize)], max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i].1, lengths[i].0, i));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = lengths[i].0.max(lengths[i].1);
        let grown = longest.max(len);
        if !current.is_empty() && (current.len() + 1) * grown > max_tokens {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(group: Option<&str>) -> Columns {
        Columns { source: "en".into(), target: "es".into(), group: group.map(String::from) }
    }

    #[test]
    fn held_out_fractions_outside_zero_to_one_are_refused() {
        let pairs = read_pairs(None, &cols(Some("book")), false).unwrap();
        for bad in [1.5, 1.0, 0.0, -0.25, f64::NAN, f64::INFINITY] {
            let e = PairSplit { seed: 1, test_fraction: bad }.held_out(&pairs).unwrap_err().to_string();
            assert!(e.contains(&format!("test_fraction {bad}")) && e.contains("between 0 and 1"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_bundled_bible_reads_and_holds_out_whole_books() {
        let pairs = read_pairs(None, &cols(Some("book")), false).unwrap();
        assert_eq!(pairs.len(), 31_084);
        assert_eq!(pairs.source[0], "In the beginning God created the heaven and the earth.");
        assert_eq!(pairs.target[0], "EN el principio crió Dios los cielos y la tierra.");
        let split = PairSplit { seed: 1, test_fraction: 0.05 };
        let (train, test) = split.held_out(&pairs).unwrap();
        assert_eq!(train.len() + test.len(), pairs.len());
        assert!(test.len() as f64 >= 0.05 * pairs.len() as f64, "{}", test.len());
        // no book on both sides, and the same choice every time
        assert!(test.group.iter().all(|g| !train.group.contains(g)));
        assert_eq!(split.held_out(&pairs).unwrap().1, test);
    }

    #[test]
    fn bad_tables_say_what_is_wrong() {
        let p = Path::new("t.tsv");
        let parse = |text: &str| parse_pairs(text.as_bytes(), true, p, &cols(None), false);
        let e = parse("english\tspanish\nhi\thola\n").unwrap_err().to_string();
        assert!(e.contains("\"en\"") && e.contains("--source-column"), "{e}");
        let e = parse("en\tes\nhi\thola\textra\n").unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("stray tab"), "{e}");
        let ok = parse("en\tes\nhi\thola\n\t\nyes\t\n\"quoted\"\t«sí»\n").unwrap();
        assert_eq!((ok.len(), ok.empty), (2, 2));
        assert_eq!(ok.source[1], "\"quoted\"", "quotes are text in a TSV");
        let csv = parse_pairs(b"en,es\n\"a, b\",\"c\"\n", false, Path::new("t.csv"), &cols(None), false).unwrap();
        assert_eq!(csv.source[0], "a, b");
    }

    #[test]
    fn token_batches_stay_within_the_budget_and_cover_every_pair() {
        let lengths: Vec<(usize, usize)> = (0..100).map(|i| (3 + i % 17, 2 + (i * 7) % 23)).collect();
        let batches = token_batches(&lengths, 64);
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i].0.max(lengths[i].1)).max().unwrap();
            assert!(b.len() == 1 || b.len() * longest <= 64, "{b:?}");
        }
    }
}
