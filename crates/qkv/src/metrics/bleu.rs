//! Corpus BLEU exactly as sacreBLEU computes it with its defaults: the
//! `13a` tokenization of mteval-v13a (WMT's), n-grams up to 4, clipped
//! counts summed over the corpus, the brevity penalty, and the `exp`
//! smoothing (each n-gram order without a match counts as half a match of
//! the order before). One reference per sentence. Scores are 0–100.

use std::collections::HashMap;

/// Python's `str.isspace`: Unicode whitespace plus the four ASCII separators
/// `\x1c`–`\x1f` (which `str.split()` also splits on).
pub(crate) fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `' '.join(s.split())` of Python.
pub(crate) fn py_words(s: &str) -> Vec<&str> {
    s.split(py_space).filter(|w| !w.is_empty()).collect()
}

/// The punctuation and symbols `13a` splits off: `{-~`, `[-\``, ` -&`,
/// `(-+`, `:-@` and `/`.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `re.sub` of a two-character pattern `(a)(b) → replacement`, scanning
/// left to right without overlaps, as Python's `re` does.
fn sub_pairs(
    s: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    out: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut res = Vec::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && first(s[i]) && second(s[i + 1]) {
            out(s[i], s[i + 1], &mut res);
            i += 2;
        } else {
            res.push(s[i]);
            i += 1;
        }
    }
    res
}

/// sacreBLEU's `13a` tokenizer (`Tokenizer13a` then `TokenizerRegexp`).
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let line: Vec<char> = format!(" {line} ").chars().collect();
    // symbols become tokens of their own
    let mut s = Vec::with_capacity(line.len() * 2);
    for c in line {
        if is_13a_symbol(c) {
            s.extend([' ', c, ' ']);
        } else {
            s.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // period and comma unless preceded by a digit: `([^0-9])([\.,])` → `\1 \2 `
    let s = sub_pairs(&s, |c| !digit(c), period_comma, |a, b, o| o.extend([a, ' ', b, ' ']));
    // period and comma unless followed by a digit: `([\.,])([^0-9])` → ` \1 \2`
    let s = sub_pairs(&s, period_comma, |c| !digit(c), |a, b, o| o.extend([' ', a, ' ', b]));
    // a dash after a digit: `([0-9])(-)` → `\1 \2 `
    let s = sub_pairs(&s, digit, |c| c == '-', |a, b, o| o.extend([a, ' ', b, ' ']));
    let s: String = s.into_iter().collect();
    py_words(&s).join(" ")
}

/// BLEU and what it is made of.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Bleu {
    /// 0–100.
    pub score: f64,
    /// n-gram precisions (0–100), n = 1..4, after smoothing.
    pub precisions: [f64; 4],
    pub brevity_penalty: f64,
    /// Tokens of the hypotheses and of the references.
    pub sys_len: usize,
    pub ref_len: usize,
}

/// Matched and total n-grams of one hypothesis against its reference
/// (`13a`-tokenized already), and their lengths.
fn segment_stats(hyp: &str, reference: &str, stats: &mut [usize; 10]) {
    let ngrams = |s: &str| -> (HashMap<Vec<String>, usize>, usize) {
        let words: Vec<String> = py_words(s).into_iter().map(str::to_string).collect();
        let mut counts = HashMap::new();
        for n in 1..=4 {
            for w in words.windows(n) {
                *counts.entry(w.to_vec()).or_insert(0) += 1;
            }
        }
        (counts, words.len())
    };
    let (h, hl) = ngrams(hyp);
    let (r, rl) = ngrams(reference);
    stats[0] += hl;
    stats[1] += rl;
    for (g, &c) in &h {
        let n = g.len() - 1;
        stats[6 + n] += c;
        if let Some(&rc) = r.get(g) {
            stats[2 + n] += c.min(rc);
        }
    }
}

/// Corpus BLEU of `hypotheses` against one reference each (sacreBLEU's
/// `corpus_score` with its defaults: 13a, case-sensitive, exp smoothing).
pub fn corpus_bleu(hypotheses: &[&str], references: &[&str]) -> Bleu {
    assert_eq!(hypotheses.len(), references.len(), "one reference per hypothesis");
    let mut s = [0usize; 10];
    for (h, r) in hypotheses.iter().zip(references) {
        segment_stats(&tokenize_13a(h.trim_end_matches(py_space)), &tokenize_13a(r.trim_end_matches(py_space)), &mut s);
    }
    let (sys_len, ref_len) = (s[0], s[1]);
    let (correct, total) = (&s[2..6], &s[6..10]);
    let bp = if sys_len < ref_len {
        if sys_len > 0 { (1.0 - ref_len as f64 / sys_len as f64).exp() } else { 0.0 }
    } else {
        1.0
    };
    let mut precisions = [0.0f64; 4];
    if correct.iter().all(|&c| c == 0) {
        return Bleu { score: 0.0, precisions, brevity_penalty: bp, sys_len, ref_len };
    }
    let mut smooth = 1.0f64;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9999999999.0 } else { p.ln() };
    let score = bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp();
    Bleu { score, precisions, brevity_penalty: bp, sys_len, ref_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenization_13a_by_hand() {
        assert_eq!(tokenize_13a("Hello, world."), "Hello , world .");
        assert_eq!(tokenize_13a("It costs $3.50, or 1,000-2,000."), "It costs $ 3.50 , or 1,000 - 2,000 .");
        assert_eq!(tokenize_13a("«¿Qué?» dijo: (sí)"), "«¿Qué ? » dijo : ( sí )");
        assert_eq!(tokenize_13a("a &amp; b\nc-\nd"), "a & b cd");
    }

    #[test]
    fn identical_text_scores_100_and_nothing_scores_0() {
        let s = ["the cat sat on the mat .", "a dog ran in the park today"];
        assert!((corpus_bleu(&s, &s).score - 100.0).abs() < 1e-9);
        assert_eq!(corpus_bleu(&["x y z"], &["a b c d"]).score, 0.0);
    }
}
