//! Decoding a translation from an encoder–decoder ([`EncoderDecoder`]:
//! qkv's and Marian's [`Seq2Seq`], or [`T5`]): the source
//! sentences are encoded once, the keys and values of their memory computed
//! once per decoder block, then the target grows one token at a time with
//! the decoder's self-attention keys and values cached.
//!
//! - **Greedy**: the most likely next token, until `eos` or the maximum length.
//! - **Beam search** keeps the `beam` most likely partial translations of
//!   each sentence. Every step extends each of them by every token, keeps
//!   the best `2·beam` extensions, sets aside those that end (`eos`) as
//!   finished hypotheses — scored by their total log-probability divided by
//!   `length^length_penalty`, so that longer translations are not punished
//!   for having more factors below 1 — and continues the best `beam` that
//!   did not end. A sentence stops when its best running hypothesis can no
//!   longer beat the worst of `beam` finished ones ([`EarlyStopping`]).
//!
//! The algorithm, its scores and its stopping rule are those of Hugging Face
//! `transformers`' `generate` (`num_beams`, `length_penalty`,
//! `early_stopping`), so the same model gives the same translations (tested
//! on Marian and T5 models). The padding token is never generated.

use qkv_tensor::{Tensor, no_grad};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::models::seq2seq::{Seq2Seq, Side};
use crate::models::t5::T5;
use crate::nn::attention::{KvCache, Memory};
use crate::nn::{Dropout, Module};

/// The token ids decoding needs.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub pad: u32,
    pub eos: u32,
    /// The decoder's first input.
    pub start: u32,
    pub vocab: usize,
}

/// What decoding needs of an encoder–decoder: encode the sources once (and
/// every decoder block's cross-attention keys and values), then one step of
/// the decoder at a time over its self-attention caches.
pub trait EncoderDecoder: Send + Sync {
    /// What it is, for messages ("a translation model (MarianMTModel)").
    fn describe(&self) -> &'static str;
    fn specials(&self) -> Specials;
    /// Positions a sequence may have (`usize::MAX` for relative positions).
    fn max_positions(&self) -> usize;
    /// Longest source sentence when nothing else says so (a run's `max_len`).
    fn default_max_len(&self) -> usize {
        self.max_positions().min(513) - 1
    }
    /// Cross-attention keys and values of every decoder block for a padded
    /// batch of sources `[B, T]` (`mask` false on padding).
    fn encode_memories(&self, ids: &[u32], mask: &[bool], b: usize, t: usize) -> Result<Vec<Memory>>;
    fn new_caches(&self, batch: usize, capacity: usize) -> Vec<KvCache>;
    /// Scores of the next token `[R, V]` after `last` `[R]`, the caches
    /// holding the earlier positions (and growing by one).
    fn step(&self, last: &[u32], memories: &[Memory], caches: &mut [KvCache]) -> Result<Tensor>;
    /// The cross-attention of every decoder block for one pair, `[H, Tt, Ts]`
    /// each: row `i` the weights target position `i` gives the source tokens.
    fn cross_attention(&self, src: &[u32], tgt_in: &[u32]) -> Result<Vec<Tensor>>;
    /// Parameters of the whole model (encoder, decoder, shared embedding).
    fn num_params(&self) -> usize;
}

impl EncoderDecoder for Seq2Seq {
    fn describe(&self) -> &'static str {
        "a translation model (MarianMTModel)"
    }

    fn specials(&self) -> Specials {
        let c = &self.config;
        Specials { pad: c.pad_token_id, eos: c.eos_token_id, start: c.decoder_start_token_id, vocab: c.vocab_size }
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn encode_memories(&self, ids: &[u32], mask: &[bool], b: usize, t: usize) -> Result<Vec<Memory>> {
        let memory = self.encode(&Side { ids, mask, b, t }, &Dropout::default())?;
        self.memories(&memory, mask)
    }

    fn new_caches(&self, batch: usize, capacity: usize) -> Vec<KvCache> {
        Seq2Seq::new_caches(self, batch, capacity)
    }

    fn step(&self, last: &[u32], memories: &[Memory], caches: &mut [KvCache]) -> Result<Tensor> {
        let (r, mask) = (last.len(), vec![true; last.len()]);
        let h =
            self.decode(&Side { ids: last, mask: &mask, b: r, t: 1 }, memories, Some(caches), &Dropout::default())?;
        Ok(self.logits(&h)?.reshape(&[r, self.config.vocab_size])?)
    }

    fn cross_attention(&self, src: &[u32], tgt_in: &[u32]) -> Result<Vec<Tensor>> {
        Seq2Seq::cross_attention(self, src, tgt_in)
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl EncoderDecoder for T5 {
    fn describe(&self) -> &'static str {
        "a translation model (T5ForConditionalGeneration)"
    }

    fn specials(&self) -> Specials {
        let c = &self.config;
        Specials { pad: c.pad_token_id, eos: c.eos_token_id, start: c.decoder_start_token_id, vocab: c.vocab_size }
    }

    fn max_positions(&self) -> usize {
        usize::MAX
    }

    fn encode_memories(&self, ids: &[u32], mask: &[bool], b: usize, t: usize) -> Result<Vec<Memory>> {
        let memory = self.encode(ids, mask, b, t)?;
        self.memories(&memory, mask)
    }

    fn new_caches(&self, batch: usize, capacity: usize) -> Vec<KvCache> {
        T5::new_caches(self, batch, capacity)
    }

    fn step(&self, last: &[u32], memories: &[Memory], caches: &mut [KvCache]) -> Result<Tensor> {
        let r = last.len();
        let (h, _) = self.decode(last, r, 1, memories, Some(caches))?;
        Ok(self.logits(&h)?.reshape(&[r, self.config.vocab_size])?)
    }

    fn cross_attention(&self, src: &[u32], tgt_in: &[u32]) -> Result<Vec<Tensor>> {
        no_grad(|| {
            let memory = self.encode(src, &vec![true; src.len()], 1, src.len())?;
            let memories = self.memories(&memory, &vec![true; src.len()])?;
            let (_, maps) = self.decode(tgt_in, 1, tgt_in.len(), &memories, None)?;
            maps.into_iter()
                .map(|m| {
                    let (_, h, tq, tk) = m.dims4()?;
                    Ok(m.reshape(&[h, tq, tk])?)
                })
                .collect()
        })
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

/// When a sentence's beam search stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EarlyStopping {
    /// When the best running hypothesis, scored at its current length, can
    /// no longer beat the worst finished one (`transformers`' default, `False`).
    #[default]
    Heuristic,
    /// As soon as `beam` hypotheses have finished (`True`).
    Done,
    /// Like `Heuristic`, but with a positive length penalty the best running
    /// hypothesis is scored at the maximum length ("never").
    Never,
}

/// How to decode. Every field has a default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decoding {
    /// Hypotheses kept per sentence; 1 decodes greedily. Default 4.
    pub beam: usize,
    /// Finished hypotheses are scored by `log-probability / length^length_penalty`. Default 1.0.
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// At most `ceil(max_len_ratio · source tokens) + max_len_extra` new
    /// tokens (and never past the model's positions). Default 1.5 and 10.
    pub max_len_ratio: f32,
    pub max_len_extra: usize,
    /// `</s>` is forbidden before this many new tokens (as `transformers`'
    /// `min_new_tokens`; benchmarks decode a fixed length so). Default 0.
    pub min_new_tokens: usize,
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding {
            beam: 4,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            max_len_ratio: 1.5,
            max_len_extra: 10,
            min_new_tokens: 0,
        }
    }
}

/// The widest beam (each hypothesis carries its own decoder caches).
pub const MAX_BEAM: usize = 256;

impl Decoding {
    pub fn validate(&self) -> Result<()> {
        if self.beam == 0 {
            return Err(Error::Config("a beam of 0 keeps no hypothesis: use 1 (greedy) or more".into()));
        }
        if self.beam > MAX_BEAM {
            return Err(Error::Config(format!(
                "a beam of {} hypotheses: qkv keeps at most {MAX_BEAM} per sentence (4 to 8 is usual)",
                self.beam
            )));
        }
        if !self.length_penalty.is_finite() || !self.max_len_ratio.is_finite() || self.max_len_ratio < 0.0 {
            return Err(Error::Config("length_penalty and max_len_ratio must be finite (the ratio ≥ 0)".into()));
        }
        Ok(())
    }

    /// New tokens allowed for a source of `n` tokens.
    fn max_new(&self, n: usize, positions: usize) -> usize {
        let want = ((self.max_len_ratio as f64 * n as f64).ceil() as usize).saturating_add(self.max_len_extra);
        want.clamp(1, positions.saturating_sub(1).max(1))
    }
}

/// Translations of `sources` (token ids, each ending with `eos` if the model
/// was trained so), as token ids after the start token, ending with `eos`
/// when the model produced it. `sources` are decoded as one batch.
pub fn translate(model: &dyn EncoderDecoder, sources: &[Vec<u32>], how: &Decoding) -> Result<Vec<Vec<u32>>> {
    how.validate()?;
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(i) = sources.iter().position(|s| s.is_empty()) {
        return Err(Error::Data(format!("source sentence {} is empty", i + 1)));
    }
    no_grad(|| {
        let c = model.specials();
        let b = sources.len();
        let t = sources.iter().map(Vec::len).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for s in sources {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(c.pad, t - s.len()));
            mask.extend(std::iter::repeat_n(true, s.len()));
            mask.extend(std::iter::repeat_n(false, t - s.len()));
        }
        let memories = model.encode_memories(&ids, &mask, b, t)?;
        let max_new: Vec<usize> = sources.iter().map(|s| how.max_new(s.len(), model.max_positions())).collect();
        if how.beam == 1 {
            greedy(model, memories, &max_new, how.min_new_tokens)
        } else {
            beam_search(model, memories, &max_new, how)
        }
    })
}

/// Translate sentences of text: each encoded (cut to `max_len` tokens with
/// its `</s>`), decoded in batches of `batch` sentences, turned back into
/// text (without its `</s>` and surrounding spaces). An empty sentence
/// translates to an empty one.
pub fn translate_texts(
    model: &dyn EncoderDecoder,
    tok: &crate::tokenize::Tokenizer,
    texts: &[&str],
    max_len: usize,
    how: &Decoding,
    batch: usize,
) -> Result<Vec<String>> {
    let eos = model.specials().eos;
    let mut out = vec![String::new(); texts.len()];
    let todo: Vec<usize> = (0..texts.len()).filter(|&i| !texts[i].trim().is_empty()).collect();
    for chunk in todo.chunks(batch.max(1)) {
        let sources: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&i| Ok(crate::train::translation::encode_sentence(tok, texts[i], max_len, eos)?.0))
            .collect::<Result<_>>()?;
        for (&i, ids) in chunk.iter().zip(translate(model, &sources, how)?) {
            let ids: Vec<u32> = ids.into_iter().take_while(|&t| t != eos).collect();
            out[i] = tok.decode(&ids)?.trim().to_string();
        }
    }
    Ok(out)
}

/// The `n` best next tokens of each row, best first: `(score, token)` with
/// the score a log-probability when `log_probs` (beam search adds them up),
/// else the raw logit (greedy needs only the order). The padding token is
/// never proposed, nor `eos` before `eos_allowed`. Only these few leave the
/// step: copying out all `R × V` scores and sorting `k·V` candidates per
/// sentence took a quarter of beam search's time, on one thread.
fn next_best(
    model: &dyn EncoderDecoder,
    last: &[u32],
    memories: &[Memory],
    caches: &mut [KvCache],
    eos_allowed: bool,
    n: usize,
    log_probs: bool,
) -> Result<Vec<Vec<(f32, u32)>>> {
    let logits = model.step(last, memories, caches)?;
    let scores = if log_probs { logits.log_softmax() } else { logits };
    let c = model.specials();
    let forbidden = if eos_allowed { vec![c.pad] } else { vec![c.pad, c.eos] };
    let scores = scores.data();
    Ok(scores.par_chunks(c.vocab).map(|row| best_n(row, n, &forbidden)).collect())
}

/// The `n` largest values of `row` with their indices, largest first (the
/// lower index first on ties), leaving out the `forbidden` indices and NaN.
fn best_n(row: &[f32], n: usize, forbidden: &[u32]) -> Vec<(f32, u32)> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(n + 1);
    for (tok, &x) in row.iter().enumerate() {
        // the common case: not among the best so far (a NaN never is)
        let full = best.len() == n;
        if n == 0 || (full && !(x > best[n - 1].0)) || x.is_nan() || forbidden.contains(&(tok as u32)) {
            continue;
        }
        let at = best.partition_point(|&(b, _)| b >= x);
        best.insert(at, (x, tok as u32));
        best.truncate(n);
    }
    best
}

/// Keep the `rows` of every memory and cache (in that order).
fn keep(memories: &mut Vec<Memory>, caches: &mut [KvCache], rows: &[usize]) -> Result<()> {
    *memories = memories.iter().map(|m| m.select(rows)).collect::<qkv_tensor::Result<_>>()?;
    for cache in caches.iter_mut() {
        cache.select(rows)?;
    }
    Ok(())
}

fn greedy(
    model: &dyn EncoderDecoder,
    mut memories: Vec<Memory>,
    max_new: &[usize],
    min_new: usize,
) -> Result<Vec<Vec<u32>>> {
    let c = model.specials();
    let b = max_new.len();
    let longest = max_new.iter().copied().max().unwrap_or(1);
    let mut caches = model.new_caches(b, longest + 1);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    // the sentences still being decoded, in row order
    let mut active: Vec<usize> = (0..b).collect();
    let mut last = vec![c.start; b];
    let mut generated = 0;
    while !active.is_empty() {
        let best = next_best(model, &last, &memories, &mut caches, generated >= min_new, 1, false)?;
        generated += 1;
        let mut still = Vec::with_capacity(active.len());
        for (row, &s) in active.iter().enumerate() {
            let tok = best[row].first().map_or(c.eos, |&(_, tok)| tok);
            out[s].push(tok);
            if tok != c.eos && out[s].len() < max_new[s] {
                still.push(row);
            }
        }
        if still.len() != active.len() {
            keep(&mut memories, &mut caches, &still)?;
        }
        last = still.iter().map(|&row| *out[active[row]].last().expect("a token")).collect();
        active = still.iter().map(|&row| active[row]).collect();
    }
    Ok(out)
}

/// `length^penalty`, computed as `transformers` does (in f64, used as f32).
fn length_norm(length: usize, penalty: f32) -> f32 {
    (length as f64).powf(penalty as f64) as f32
}

/// One hypothesis: its tokens after the start and its summed log-probability
/// (for a finished one: divided by `length^length_penalty`).
#[derive(Clone, Debug)]
struct Hyp {
    score: f32,
    tokens: Vec<u32>,
}

/// The beam search of one sentence.
struct Search {
    running: Vec<Hyp>,
    finished: Vec<Hyp>,
    improvable: bool,
    done: bool,
}

fn beam_search(
    model: &dyn EncoderDecoder,
    memories: Vec<Memory>,
    max_new: &[usize],
    how: &Decoding,
) -> Result<Vec<Vec<u32>>> {
    let c = model.specials();
    let (b, k) = (max_new.len(), how.beam);
    let longest = max_new.iter().copied().max().unwrap_or(1);
    // every sentence starts as k rows: one live hypothesis and k - 1 that
    // cannot win; all k read the sentence's one memory (see
    // `Attention::forward_cross`)
    let mut memories = memories;
    let mut caches = model.new_caches(b * k, longest + 1);
    let start = Hyp { score: 0.0, tokens: Vec::new() };
    let mut searches: Vec<Search> = (0..b)
        .map(|_| Search {
            running: (0..k).map(|j| Hyp { score: if j == 0 { 0.0 } else { -1e9 }, ..start.clone() }).collect(),
            finished: Vec::new(),
            improvable: true,
            done: false,
        })
        .collect();
    let mut active: Vec<usize> = (0..b).collect();
    let mut last = vec![c.start; b * k];
    let mut generated = 0usize; // tokens after the start so far
    while !active.is_empty() {
        let top = 2 * k;
        let best = next_best(model, &last, &memories, &mut caches, generated >= how.min_new_tokens, top, true)?;
        let mut keep_rows = Vec::new();
        let mut next_active = Vec::new();
        for (a, &s) in active.iter().enumerate() {
            let search = &mut searches[s];
            let at_limit = generated + 1 >= max_new[s];
            // the best 2k extensions over every (hypothesis, token): they lie
            // among the best 2k tokens of each hypothesis
            let mut cands: Vec<(f32, usize, u32)> = Vec::with_capacity(k * top);
            for (j, hyp) in search.running.iter().enumerate() {
                cands.extend(best[a * k + j].iter().map(|&(lp, tok)| (hyp.score + lp, j, tok)));
            }
            cands.sort_by(|x, y| y.0.total_cmp(&x.0));
            cands.truncate(top);
            let ends = |tok: u32| tok == c.eos || at_limit;
            // finished: the ending extensions among the best k, scored per length
            let full = search.finished.len() == k && how.early_stopping == EarlyStopping::Done;
            if search.improvable && !full {
                let norm = length_norm(generated + 1, how.length_penalty);
                for &(score, j, tok) in cands.iter().take(k).filter(|x| ends(x.2)) {
                    let mut tokens = search.running[j].tokens.clone();
                    tokens.push(tok);
                    search.finished.push(Hyp { score: score / norm, tokens });
                }
                search.finished.sort_by(|x, y| y.score.total_cmp(&x.score));
                search.finished.truncate(k);
            }
            // running: the best k extensions that did not end
            let mut parents = Vec::with_capacity(k);
            let mut running = Vec::with_capacity(k);
            let mut open: Vec<(f32, usize, u32)> =
                cands.iter().map(|&(s, j, t)| (s + if ends(t) { -1e9 } else { 0.0 }, j, t)).collect();
            open.sort_by(|x, y| y.0.total_cmp(&x.0));
            for &(score, j, tok) in open.iter().take(k) {
                let mut tokens = search.running[j].tokens.clone();
                tokens.push(tok);
                running.push(Hyp { score, tokens });
                parents.push(a * k + j);
            }
            search.running = running;
            // can the best running hypothesis still beat the worst finished one?
            let length = if how.early_stopping == EarlyStopping::Never && how.length_penalty > 0.0 {
                max_new[s]
            } else {
                generated + 1
            };
            if search.finished.len() == k {
                let best = search.running[0].score / length_norm(length, how.length_penalty);
                let worst = search.finished.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
                search.improvable &= best > worst;
            }
            let all_full = search.finished.len() == k && how.early_stopping == EarlyStopping::Done;
            search.done = !search.improvable || all_full || at_limit;
            if !search.done {
                keep_rows.extend(parents);
                next_active.push(s);
            }
        }
        generated += 1;
        // the caches follow each surviving hypothesis's parent; the memories
        // (one per sentence) change only when a sentence leaves
        for cache in caches.iter_mut() {
            cache.select(&keep_rows)?;
        }
        if next_active.len() != active.len() {
            let kept: Vec<usize> = (0..active.len()).filter(|&a| next_active.contains(&active[a])).collect();
            memories = memories.iter().map(|m| m.select(&kept)).collect::<qkv_tensor::Result<_>>()?;
        }
        last = next_active
            .iter()
            .flat_map(|&s| searches[s].running.iter().map(|h| *h.tokens.last().expect("a token")))
            .collect();
        active = next_active;
    }
    Ok(searches
        .into_iter()
        .map(|s| {
            s.finished.into_iter().next().or_else(|| s.running.into_iter().next()).map(|h| h.tokens).unwrap_or_default()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive twin of [`best_n`]: sort every allowed, non-NaN entry.
    fn best_n_by_sorting(row: &[f32], n: usize, forbidden: &[u32]) -> Vec<(f32, u32)> {
        let mut all: Vec<(f32, u32)> = row
            .iter()
            .enumerate()
            .filter(|&(t, x)| !x.is_nan() && !forbidden.contains(&(t as u32)))
            .map(|(t, &x)| (x, t as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(n);
        all
    }

    #[test]
    fn best_n_matches_sorting_everything() {
        let mut rng = qkv_tensor::Rng::new(3);
        for (len, n) in [(0, 3), (5, 0), (5, 8), (100, 1), (100, 8), (8000, 8)] {
            // coarse values so that ties occur; a NaN and -inf among them
            let mut row: Vec<f32> = (0..len).map(|_| (rng.normal() * 4.0).round()).collect();
            if len > 10 {
                row[3] = f32::NAN;
                row[7] = f32::NEG_INFINITY;
            }
            for forbidden in [&[][..], &[0, 2][..]] {
                assert_eq!(best_n(&row, n, forbidden), best_n_by_sorting(&row, n, forbidden), "len {len}, n {n}");
            }
        }
    }
}
