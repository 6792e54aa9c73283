//! chrF exactly as sacreBLEU computes it with its defaults: character
//! n-grams of orders 1–6 with whitespace removed, no word n-grams, counts
//! summed over the corpus, then the F-score with β = 2 (recall counts twice
//! as much as precision) of the precision and recall averaged over the
//! orders present. One reference per sentence. Scores are 0–100.

use std::collections::HashMap;

use super::bleu::py_space;

const ORDER: usize = 6;
const BETA: f64 = 2.0;

/// Hypothesis, reference and matched n-gram counts per order, summed over
/// the corpus.
fn segment_stats(hyp: &str, reference: &str, stats: &mut [[usize; 3]; ORDER]) {
    let chars = |s: &str| -> Vec<char> { s.chars().filter(|&c| !py_space(c)).collect() };
    let (h, r) = (chars(hyp), chars(reference));
    for (n, st) in (1..=ORDER).zip(stats.iter_mut()) {
        let (hc, rc) = (ngrams(&h, n), ngrams(&r, n));
        let mut matched = 0;
        let mut hyp_total = 0;
        for (g, &c) in &hc {
            hyp_total += c;
            if let Some(&x) = rc.get(g) {
                matched += c.min(x);
            }
        }
        // sacreBLEU counts the hypothesis' n-grams only where the reference has some of that order
        st[0] += if rc.is_empty() { 0 } else { hyp_total };
        st[1] += rc.values().sum::<usize>();
        st[2] += matched;
    }
}

/// How often each n-gram of `s` occurs.
fn ngrams(s: &[char], n: usize) -> HashMap<&[char], usize> {
    let mut m = HashMap::new();
    for w in s.windows(n) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

/// Corpus chrF of `hypotheses` against one reference each.
pub fn corpus_chrf(hypotheses: &[&str], references: &[&str]) -> f64 {
    assert_eq!(hypotheses.len(), references.len(), "one reference per hypothesis");
    let mut stats = [[0usize; 3]; ORDER];
    for (h, r) in hypotheses.iter().zip(references) {
        segment_stats(h, r, &mut stats);
    }
    let factor = BETA * BETA;
    let (mut avg_prec, mut avg_rec, mut effective) = (0.0f64, 0.0f64, 0usize);
    for &[n_hyp, n_ref, n_match] in &stats {
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += n_match as f64 / n_hyp as f64;
            avg_rec += n_match as f64 / n_ref as f64;
            effective += 1;
        }
    }
    if effective == 0 {
        return 0.0;
    }
    avg_prec /= effective as f64;
    avg_rec /= effective as f64;
    if avg_prec + avg_rec == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_text_scores_100() {
        let s = ["el gato", "la casa es grande"];
        assert!((corpus_chrf(&s, &s) - 100.0).abs() < 1e-9);
        assert_eq!(corpus_chrf(&["xyz"], &["abc"]), 0.0);
    }
}
