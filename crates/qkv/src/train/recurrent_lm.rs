//! Next-token prediction with a recurrent network (RNN, LSTM or GRU) —
//! the GPT's task, trained the way recurrent networks are: by **truncated
//! back-propagation through time**. The training text is cut into `B`
//! long streams, one per batch row; each step reads the next window of
//! `block_size` tokens of every stream, starting from the state the
//! previous window ended in, and back-propagates through this window only.
//! After the last window of the streams, the state is reset and the streams
//! start again.
//!
//! Evaluation scores exactly the windows the GPT's evaluation scores (the
//! same held-out 10 %, the same batches), each window from a zero state, so
//! the two architectures' losses and bits per character compare.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use qkv_tensor::{Rng, Tensor, no_grad};

use crate::data::text::{Split, bits_per_char, eval_batches, eval_targets};
use crate::data::tokens::TokenIds;
use crate::error::{Error, Result};
use crate::models::recurrent::{RecurrentConfig, RecurrentLm};
use crate::nn::rnn::RnnState;
use crate::nn::{Dropout, Module, NamedParam};
use crate::tokenize::Tokenizer;
use crate::train::next_token::{corpus_and_tokenizer, split_corpus};
use crate::train::setup::{Built, Mode};
use crate::train::task::{Evaluation, Loss, Task, rng_of};
use crate::train::{TrainConfig, fnv1a};

/// What a recurrent language-model run trains, and on what.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecurrentLmSpec {
    /// The network (its `vocab_size` is set from the tokenizer). Default [`RecurrentConfig::default`].
    pub model: RecurrentConfig,
    /// The UTF-8 text; `None` for the bundled Shakespeare.
    pub data: Option<PathBuf>,
    /// A tokenizer (see [`Tokenizer::load`]); `None` for one token per character.
    pub tokenizer: Option<String>,
}

/// A recurrent network, its text, and where its streams are.
pub struct RecurrentLmTask {
    pub model: RecurrentLm,
    pub tokenizer: Tokenizer,
    pub data: Split,
    pub batch_size: usize,
    pub eval_batches: usize,
    /// The next window of every stream.
    window: usize,
    /// The state the last window ended in (carried into the next one).
    state: RnnState,
    /// Draws the dropout seeds.
    rng: Rng,
}

impl RecurrentLmTask {
    pub fn new(model: RecurrentLm, tokenizer: Tokenizer, data: Split, train: &TrainConfig) -> Result<RecurrentLmTask> {
        let (b, t) = (train.batch_size, model.config.block_size);
        data.check(t)?;
        if data.train.len() / b < t + 1 {
            return Err(Error::Data(format!(
                "{} training tokens cannot make {b} streams of at least {} (one window of {t} and its next token): \
                 use a longer corpus, a smaller --batch-size or a smaller --block-size",
                data.train.len(),
                t + 1
            )));
        }
        let state = model.zero_state(b);
        let rng = Rng::new(train.seed ^ 0xD1B5_4A32_D192_ED03);
        Ok(RecurrentLmTask {
            model,
            tokenizer,
            data,
            batch_size: b,
            eval_batches: train.eval_batches,
            window: 0,
            state,
            rng,
        })
    }

    /// Tokens in each stream, and windows in one pass over the streams.
    fn streams(&self) -> (usize, usize) {
        let len = self.data.train.len() / self.batch_size;
        (len, (len - 1) / self.model.config.block_size)
    }

    /// Mean held-out loss over the GPT's evaluation windows, each from a zero state.
    fn scored(&self) -> Result<(f32, f64)> {
        let t = self.model.config.block_size;
        let loss = evaluate(&self.model, &self.data.val, self.batch_size, self.eval_batches)?;
        let scored = eval_targets(self.data.val.len(), self.batch_size, t, self.eval_batches);
        let chars = self.tokenizer.count_chars(&self.data.val.window(scored.clone()))?;
        Ok((loss, bits_per_char(loss as f64, scored.len(), chars)))
    }
}

/// Mean next-token loss of `model` over the consecutive windows of `data`
/// that the GPT's evaluation reads, each starting from a zero state.
pub fn evaluate<D: TokenIds + ?Sized>(
    model: &RecurrentLm,
    data: &D,
    batch_size: usize,
    max_batches: usize,
) -> Result<f32> {
    let t = model.config.block_size;
    let batches = eval_batches(data, batch_size, t, max_batches);
    if batches.is_empty() {
        return Err(Error::Data(format!("{} tokens are too few to evaluate a window of {t}", data.len())));
    }
    no_grad(|| {
        let (mut total, mut count) = (0.0f64, 0usize);
        for (x, y, n) in &batches {
            let (loss, _) = model.loss(x, y, *n, t, &model.zero_state(*n), &Dropout::default())?;
            total += loss.item()? as f64 * (n * t) as f64;
            count += n * t;
        }
        Ok((total / count as f64) as f32)
    })
}

/// A state's numbers for a checkpoint: per tensor, its shape and values.
fn state_json(state: &RnnState) -> Value {
    let one = |t: &Tensor| json!({ "shape": t.shape(), "values": t.to_vec() });
    json!({ "h": state.h.iter().map(one).collect::<Vec<_>>(), "c": state.c.iter().map(one).collect::<Vec<_>>() })
}

/// A carried state read back from [`state_json`], checked against the model's.
fn state_of(v: &Value, like: &RnnState) -> Result<RnnState> {
    let bad = |m: &str| Error::Config(format!("a checkpoint's recurrent state is unusable: {m}"));
    let read = |key: &str, like: &[Tensor]| -> Result<Vec<Tensor>> {
        let list = v[key].as_array().ok_or_else(|| bad(&format!("no \"{key}\" list")))?;
        if list.len() != like.len() {
            return Err(bad(&format!("{} tensors in \"{key}\", the model has {}", list.len(), like.len())));
        }
        list.iter()
            .zip(like)
            .map(|(t, want)| {
                let values: Vec<f32> = serde_json::from_value(t["values"].clone()).map_err(|e| bad(&e.to_string()))?;
                if values.len() != want.numel() {
                    return Err(bad(&format!("{} values where the model holds {}", values.len(), want.numel())));
                }
                Ok(Tensor::from_vec(values, want.shape())?)
            })
            .collect()
    };
    Ok(RnnState { h: read("h", &like.h)?, c: read("c", &like.c)? })
}

impl Task for RecurrentLmTask {
    fn params(&self) -> Vec<NamedParam> {
        self.model.named_params()
    }

    fn training_loss(&mut self) -> Result<Option<Loss>> {
        let (b, t) = (self.batch_size, self.model.config.block_size);
        let (len, windows) = self.streams();
        if self.window >= windows {
            // the streams are done: start them again, from a zero state
            self.window = 0;
            self.state = self.model.zero_state(b);
        }
        let (mut x, mut y) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        for s in 0..b {
            let at = s * len + self.window * t;
            self.data.train.extend_window(at..at + t, &mut x);
            self.data.train.extend_window(at + 1..at + t + 1, &mut y);
        }
        let drop = Dropout { p: self.model.config.dropout, seed: Some(self.rng.next_u64()) };
        let (value, next) = self.model.loss(&x, &y, b, t, &self.state, &drop)?;
        // the next window starts where this one ended; the gradient stops here
        self.state = next;
        self.window += 1;
        Ok(Some(Loss { value, tokens: b * t }))
    }

    fn evaluate(&self) -> Result<Evaluation> {
        let (loss, bpc) = self.scored()?;
        Ok(Evaluation { loss, accuracy: None, summary: format!("val {loss:.4} ({bpc:.3} bits/char)") })
    }

    fn state(&self) -> Value {
        json!({ "rng": self.rng.state(), "window": self.window, "carried": state_json(&self.state) })
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        self.rng = rng_of(state)?;
        self.window = state["window"]
            .as_u64()
            .ok_or_else(|| Error::Config("a checkpoint's task state has no \"window\": not a recurrent run".into()))?
            as usize;
        self.state = state_of(&state["carried"], &self.model.zero_state(self.batch_size))?;
        Ok(())
    }

    fn report(&self) -> Result<Value> {
        let (loss, bpc) = self.scored()?;
        Ok(json!({
            "task": "next-token", "model": self.model.config.kind, "val_loss": loss,
            "perplexity": (loss as f64).exp(), "bits_per_char": bpc,
        }))
    }

    fn describe(&self) -> Vec<String> {
        let (len, windows) = self.streams();
        vec![
            format!("{} ({})", self.model.describe(), self.tokenizer.describe()),
            format!(
                "{} training tokens in {} streams of {len} ({windows} windows of {} per pass, the state carried \
                 from one to the next); {} validation tokens",
                self.data.train.len(),
                self.batch_size,
                self.model.config.block_size,
                self.data.val.len()
            ),
        ]
    }
}

/// A recurrent run from its spec: read and tokenize the corpus, make (or,
/// resuming, read) the tokenizer, build the network.
pub(crate) fn build(spec: &mut RecurrentLmSpec, train: &TrainConfig, dir: &Path, mode: Mode) -> Result<Built> {
    let (text, source, tokenizer) = corpus_and_tokenizer(spec.data.as_deref(), spec.tokenizer.as_deref(), dir, mode)?;
    spec.model.vocab_size = tokenizer.vocab_size();
    spec.model.validate()?;
    let (split, notes) = split_corpus(&tokenizer, &text, &source, dir, spec.model.block_size)?;
    let model = RecurrentLm::new(spec.model.clone(), train.seed)?;
    let config = crate::models::load::recurrent_config_json(&spec.model);
    let task = RecurrentLmTask::new(model, tokenizer.clone(), split, train)?;
    Ok(Built {
        task: Box::new(task),
        steps_per_epoch: None,
        fingerprint: fnv1a(text.as_bytes()),
        config,
        tokenizer: Some(tokenizer),
        notes,
    })
}
