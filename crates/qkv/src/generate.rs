//! Generation: feed the prompt, then repeatedly pick a next token from the
//! model's scores and feed it back. For a GPT, a KV cache makes each new
//! token cost one position of work; when the context is full, the oldest
//! half is dropped and the cache rebuilt from the rest. A recurrent network
//! ([`generate_recurrent`]) carries only its fixed-size state: every token
//! costs the same, however long the text, and nothing is ever dropped.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Rng, Tensor, no_grad};

use crate::error::{Error, Result};
use crate::models::gpt::Gpt;
use crate::models::mamba::Mamba;
use crate::models::recurrent::RecurrentLm;

/// Room reserved ahead for generated tokens: the list grows past it as
/// needed, so a request for more tokens than memory holds streams instead of
/// failing to allocate at the start.
pub(crate) const RESERVE_MAX: usize = 4096;

/// How the next token is chosen from the scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Always take the most likely token.
    pub greedy: bool,
    /// Divide scores by this before the softmax: < 1 sharper, > 1 flatter. Default 1.
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability adds up to p (nucleus).
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { greedy: false, temperature: 1.0, top_k: None, top_p: None, seed: 0 }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0) {
            return Err(Error::Config(format!(
                "temperature must be > 0, got {} (use --greedy for argmax)",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("top-k must be at least 1".into()));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::Config(format!("top-p must be in (0, 1], got {p}")));
        }
        Ok(())
    }
}

/// Pick a token from one row of scores: greedy, or a draw from
/// [`distribution`].
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut Rng) -> u32 {
    if s.greedy {
        return logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
            .0 as u32;
    }
    let candidates = distribution(logits, s);
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    let mut u = rng.uniform_f64() * total;
    for &(id, p) in &candidates {
        u -= p;
        if u <= 0.0 {
            return id;
        }
    }
    candidates.last().expect("at least one candidate").0
}

/// The distribution sampling draws from, most likely first: the softmax of
/// `logits / temperature`, cut to the `top_k` best and then to the smallest
/// set whose probability reaches `top_p`, renormalised. `greedy` is ignored
/// (it is the first entry). A NaN score ranks last with probability 0.
pub fn distribution(logits: &[f32], s: &Sampling) -> Vec<(u32, f64)> {
    if logits.is_empty() {
        return Vec::new();
    }
    // candidates sorted by score, best first
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    // a total order: a NaN score ranks last (as -inf), so it is never drawn ahead of a number
    let key = |i: usize| if logits[i].is_nan() { f32::NEG_INFINITY } else { logits[i] };
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    if let Some(k) = s.top_k {
        idx.truncate(k.min(idx.len()));
    }
    let m = key(idx[0]);
    if !m.is_finite() {
        return vec![(idx[0] as u32, 1.0)]; // no finite score to weigh (all NaN, or +inf): the first best
    }
    let mut probs: Vec<f64> = idx.iter().map(|&i| (((key(i) - m) / s.temperature) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = s.top_p {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                acc += p;
                acc >= top_p as f64
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        idx.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    idx.into_iter().map(|i| i as u32).zip(probs).collect()
}

/// Generate up to `max_new` tokens after `prompt`, calling `on_token` with each
/// as soon as it exists (return `false` from it to stop early). Returns the
/// new tokens.
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    max_new: usize,
    s: &Sampling,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    s.validate()?;
    if prompt.is_empty() {
        return Err(Error::Data("the prompt is empty: give at least one token".into()));
    }
    let ctx = model.config.block_size;
    let mut rng = Rng::new(s.seed);
    let mut caches = model.new_caches(1);
    // a prompt longer than the context keeps its end
    let mut window: Vec<u32> = prompt[prompt.len().saturating_sub(ctx)..].to_vec();
    let mut out = Vec::with_capacity(max_new.min(RESERVE_MAX));
    no_grad(|| {
        let mut logits = model.next_logits(&window, 1, window.len(), &mut caches)?;
        for _ in 0..max_new {
            let next = sample(&logits.data(), s, &mut rng);
            out.push(next);
            if !on_token(next)? {
                break;
            }
            window.push(next);
            if caches[0].len() == ctx {
                // context full: keep the newest half and rebuild the caches from it
                window.drain(..window.len() - ctx / 2);
                caches.iter_mut().for_each(|c| c.clear());
                logits = model.next_logits(&window, 1, window.len(), &mut caches)?;
            } else {
                logits = model.next_logits(&[next], 1, 1, &mut caches)?;
            }
        }
        Ok(out)
    })
}

/// The sampling loop of the models that carry a state instead of a cache:
/// `feed` reads tokens (first the whole prompt, then each new token) into
/// the state and returns the scores of the next token.
fn generate_stateful(
    prompt: &[u32],
    max_new: usize,
    s: &Sampling,
    mut feed: impl FnMut(&[u32]) -> Result<Tensor>,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    s.validate()?;
    if prompt.is_empty() {
        return Err(Error::Data("the prompt is empty: give at least one token".into()));
    }
    let mut rng = Rng::new(s.seed);
    let mut out = Vec::with_capacity(max_new.min(RESERVE_MAX));
    no_grad(|| {
        let mut logits = feed(prompt)?;
        for _ in 0..max_new {
            let next = sample(&logits.data(), s, &mut rng);
            out.push(next);
            if !on_token(next)? {
                break;
            }
            logits = feed(&[next])?;
        }
        Ok(out)
    })
}

/// [`generate`] for a recurrent language model: the prompt is read once,
/// then each new token is one step of the network from the state.
pub fn generate_recurrent(
    model: &RecurrentLm,
    prompt: &[u32],
    max_new: usize,
    s: &Sampling,
    on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    let mut state = model.zero_state(1);
    let feed = |ids: &[u32]| -> Result<Tensor> {
        let (logits, after) = model.forward(ids, 1, ids.len(), &state, &Default::default())?;
        state = after;
        Ok(logits.narrow(1, ids.len() - 1, 1)?.reshape(&[model.config.vocab_size])?)
    };
    generate_stateful(prompt, max_new, s, feed, on_token)
}

/// [`generate`] for a Mamba: the prompt and every new token go through
/// its recurrent step, so each costs the same and memory stays that of the
/// blocks' states.
pub fn generate_mamba(
    model: &Mamba,
    prompt: &[u32],
    max_new: usize,
    s: &Sampling,
    on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    let mut states = model.zero_state(1);
    let feed = |ids: &[u32]| -> Result<Tensor> {
        let mut logits = None;
        for &t in ids {
            logits = Some(model.step(&[t], &mut states)?);
        }
        logits.ok_or_else(|| Error::Data("nothing to read".into()))
    };
    generate_stateful(prompt, max_new, s, feed, on_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_top_p() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(0);
        let greedy = Sampling { greedy: true, ..Default::default() };
        assert_eq!(sample(&logits, &greedy, &mut rng), 1);
        let top1 = Sampling { top_k: Some(1), ..Default::default() };
        assert_eq!(sample(&logits, &top1, &mut rng), 1);
        // top-2 only ever yields 1 or 3
        let top2 = Sampling { top_k: Some(2), ..Default::default() };
        for _ in 0..200 {
            assert!(matches!(sample(&logits, &top2, &mut rng), 1 | 3));
        }
        // a tiny nucleus keeps the single best token
        let nucleus = Sampling { top_p: Some(0.01), ..Default::default() };
        assert_eq!(sample(&logits, &nucleus, &mut rng), 1);
        // plain sampling follows the softmax: token 0 (p ≈ 2 %) is rare, 1 and 3 common
        let mut counts = [0usize; 4];
        for _ in 0..5000 {
            counts[sample(&logits, &Sampling::default(), &mut rng) as usize] += 1;
        }
        assert!(counts[0] < 250 && counts[1] > 1500 && counts[3] > 1500, "{counts:?}");
        assert!(Sampling { temperature: 0.0, ..Default::default() }.validate().is_err());
    }

    /// A NaN score (a broken model) is never drawn and does not poison the
    /// others; the sort stays a total order, so it cannot panic.
    #[test]
    fn a_nan_score_is_never_sampled() {
        let logits = [1.0, f32::NAN, 0.5, f32::NAN, 0.9];
        let mut rng = Rng::new(1);
        for s in [
            Sampling::default(),
            Sampling { top_k: Some(4), ..Default::default() },
            Sampling { top_p: Some(0.9), ..Default::default() },
        ] {
            for _ in 0..300 {
                let t = sample(&logits, &s, &mut rng);
                assert!(matches!(t, 0 | 2 | 4), "drew {t} with {s:?}");
            }
        }
        assert_eq!(sample(&[f32::NAN, f32::NAN], &Sampling::default(), &mut rng), 0);
    }
}
