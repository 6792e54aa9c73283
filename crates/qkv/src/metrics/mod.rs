//! Numbers that say how good a model is: for classifiers accuracy, macro-F1
//! (the mean over classes of each class's F1, so a rare class counts as much
//! as a common one) and the majority-class baseline to compare them with; for
//! translations [`bleu`] and [`chrf`], as sacreBLEU computes them.

pub mod bleu;
pub mod chrf;

use serde::Serialize;

use qkv_tensor::Tensor;

use crate::error::Result;

/// Index of the largest score in each row of `[N, K]` scores (the first, on
/// ties; NaN never wins).
pub fn argmax_rows(scores: &Tensor) -> Result<Vec<u32>> {
    let k = scores.dim(-1)?;
    Ok(scores.data().chunks(k).map(argmax).collect())
}

/// Index of the largest value (the first, on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0 as u32
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassificationReport {
    pub accuracy: f64,
    pub macro_f1: f64,
    /// F1 of each class, in label-id order.
    pub per_class_f1: Vec<f64>,
    pub examples: usize,
    /// `[true class][predicted class]`: how many examples of each class were
    /// given each label (the diagonal is right).
    pub confusion: Vec<Vec<usize>>,
}

/// Compare predicted with true class ids (`n_classes` classes).
pub fn classification_report(predicted: &[u32], truth: &[u32], n_classes: usize) -> ClassificationReport {
    assert_eq!(predicted.len(), truth.len());
    let mut tp = vec![0usize; n_classes];
    let mut fp = vec![0usize; n_classes];
    let mut fn_ = vec![0usize; n_classes];
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    for (&p, &t) in predicted.iter().zip(truth) {
        confusion[t as usize][p as usize] += 1;
        if p == t {
            tp[t as usize] += 1;
        } else {
            fp[p as usize] += 1;
            fn_[t as usize] += 1;
        }
    }
    let per_class_f1: Vec<f64> = (0..n_classes)
        .map(|c| {
            let denom = 2 * tp[c] + fp[c] + fn_[c];
            if denom == 0 { 0.0 } else { 2.0 * tp[c] as f64 / denom as f64 }
        })
        .collect();
    let correct: usize = tp.iter().sum();
    ClassificationReport {
        accuracy: if truth.is_empty() { 0.0 } else { correct as f64 / truth.len() as f64 },
        macro_f1: per_class_f1.iter().sum::<f64>() / n_classes.max(1) as f64,
        per_class_f1,
        examples: truth.len(),
        confusion,
    }
}

/// Always predicting the most frequent training class, scored on `truth`.
pub fn majority_baseline(train: &[u32], truth: &[u32], n_classes: usize) -> ClassificationReport {
    let mut counts = vec![0usize; n_classes];
    for &t in train {
        counts[t as usize] += 1;
    }
    let majority = (0..n_classes).max_by_key(|&c| (counts[c], std::cmp::Reverse(c))).unwrap_or(0) as u32;
    classification_report(&vec![majority; truth.len()], truth, n_classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_by_hand() {
        // class 0: tp 2, fp 1, fn 0 → F1 = 4/5; class 1: tp 1, fp 0, fn 1 → 2/3
        let r = classification_report(&[0, 0, 1, 0], &[0, 0, 1, 1], 2);
        assert!((r.accuracy - 0.75).abs() < 1e-12);
        assert!((r.per_class_f1[0] - 0.8).abs() < 1e-12 && (r.per_class_f1[1] - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        // rows: the truth; columns: the prediction
        assert_eq!(r.confusion, vec![vec![2, 0], vec![1, 1]]);
        let b = majority_baseline(&[1, 1, 0], &[0, 1, 1, 1], 2);
        assert!((b.accuracy - 0.75).abs() < 1e-12);
        assert!((b.per_class_f1[0]).abs() < 1e-12);
    }
}
