//! Next-token prediction over windows read all at once: the GPT's task, and
//! Mamba's. The text is cut into random windows of `block_size + 1` tokens;
//! the model reads the first `block_size` and, at every position, is scored
//! on the token that follows (cross-entropy). The last 10 % of the tokens
//! are held out for evaluation.
//!
//! Each window starts from nothing — no cache, no carried state — which is
//! how attention trains, and how Mamba trains too: its scan runs over the
//! whole window in one op. (The recurrent networks carry their state from
//! window to window instead: [`super::recurrent_lm`].)

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use qkv_tensor::{Rng, Tensor, no_grad};

use crate::data::text::{Split, bits_per_char, corpus_tokens, eval_batches, eval_targets, load_corpus, random_batch};
use crate::data::tokens::TokenIds;
use crate::error::{Error, Result};
use crate::models::gpt::{Gpt, GptConfig};
use crate::models::mamba::{Mamba, MambaConfig};
use crate::nn::{Dropout, Module, NamedParam};
use crate::tokenize::{CharTokenizer, Tokenizer};
use crate::train::setup::{Built, Mode};
use crate::train::task::{Evaluation, Loss, Task, rng_of, rng_state};
use crate::train::{TrainConfig, fnv1a};

/// What a next-token run trains, and on what.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NextTokenSpec {
    /// The GPT (its `vocab_size` is set from the tokenizer). Default [`GptConfig::default`].
    pub model: GptConfig,
    /// The UTF-8 text; `None` for the bundled Shakespeare.
    pub data: Option<PathBuf>,
    /// A tokenizer (see [`Tokenizer::load`]); `None` for one token per
    /// character of the corpus.
    pub tokenizer: Option<String>,
}

/// What this task needs of a model: the loss of a batch of windows.
pub trait WindowLm: Module {
    /// Mean cross-entropy of predicting `targets` from `ids`.
    ///
    /// # Shapes
    /// ids, targets `[B, T]` → scalar
    fn loss(&self, ids: &[u32], targets: &[u32], b: usize, t: usize, drop: &Dropout) -> Result<Tensor>;

    /// One line for people: the family, its sizes, its parameters.
    fn describe(&self) -> String;
}

impl WindowLm for Gpt {
    fn loss(&self, ids: &[u32], targets: &[u32], b: usize, t: usize, drop: &Dropout) -> Result<Tensor> {
        Gpt::loss(self, ids, targets, b, t, drop)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "GPT {} layers × {} heads × {} wide, context {}, {:.2} M parameters",
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.block_size,
            self.num_params() as f64 / 1e6
        )
    }
}

impl WindowLm for Mamba {
    /// (Mamba has no dropout.)
    fn loss(&self, ids: &[u32], targets: &[u32], b: usize, t: usize, _drop: &Dropout) -> Result<Tensor> {
        Mamba::loss(self, ids, targets, b, t)
    }

    fn describe(&self) -> String {
        Mamba::describe(self)
    }
}

/// A language model and its text.
pub struct NextToken<M: WindowLm = Gpt> {
    pub model: M,
    pub tokenizer: Tokenizer,
    pub data: Split,
    /// Tokens per window (T).
    pub block_size: usize,
    pub batch_size: usize,
    pub eval_batches: usize,
    /// Dropout probability (the GPT's; 0 for Mamba).
    pub dropout: f32,
    /// Draws the windows and dropout seeds.
    rng: Rng,
}

impl NextToken<Gpt> {
    pub fn new(model: Gpt, tokenizer: Tokenizer, data: Split, train: &TrainConfig) -> Result<NextToken<Gpt>> {
        let (t, p) = (model.config.block_size, model.config.dropout);
        NextToken::with_window(model, t, p, tokenizer, data, train)
    }
}

impl<M: WindowLm> NextToken<M> {
    /// A task of windows of `block_size` tokens, with dropout `dropout`.
    pub fn with_window(
        model: M,
        block_size: usize,
        dropout: f32,
        tokenizer: Tokenizer,
        data: Split,
        train: &TrainConfig,
    ) -> Result<NextToken<M>> {
        data.check(block_size)?;
        super::check_batch_tokens(train.batch_size, block_size)?;
        // batches and dropout draw from their own stream, separate from initialisation
        let rng = Rng::new(train.seed ^ 0xD1B5_4A32_D192_ED03);
        Ok(NextToken {
            model,
            tokenizer,
            data,
            block_size,
            batch_size: train.batch_size,
            eval_batches: train.eval_batches,
            dropout,
            rng,
        })
    }

    /// Mean held-out loss and the bits per character of the text it scored,
    /// so runs with different tokenizers compare.
    fn scored(&self) -> Result<(f32, f64)> {
        let t = self.block_size;
        let loss = evaluate(&self.model, &self.data.val, self.batch_size, t, self.eval_batches)?;
        let scored = eval_targets(self.data.val.len(), self.batch_size, t, self.eval_batches);
        let chars = self.tokenizer.count_chars(&self.data.val.window(scored.clone()))?;
        Ok((loss, bits_per_char(loss as f64, scored.len(), chars)))
    }
}

impl<M: WindowLm> Task for NextToken<M> {
    fn params(&self) -> Vec<NamedParam> {
        self.model.named_params()
    }

    fn training_loss(&mut self) -> Result<Option<Loss>> {
        let (b, t) = (self.batch_size, self.block_size);
        let (x, y) = random_batch(&self.data.train, b, t, &mut self.rng);
        let drop = Dropout { p: self.dropout, seed: Some(self.rng.next_u64()) };
        let value = self.model.loss(&x, &y, b, t, &drop)?;
        Ok(Some(Loss { value, tokens: b * t }))
    }

    fn evaluate(&self) -> Result<Evaluation> {
        let loss = evaluate(&self.model, &self.data.val, self.batch_size, self.block_size, self.eval_batches)?;
        Ok(Evaluation { loss, accuracy: None, summary: format!("val {loss:.4}") })
    }

    fn state(&self) -> Value {
        rng_state(&self.rng)
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        self.rng = rng_of(state)?;
        Ok(())
    }

    fn report(&self) -> Result<Value> {
        let (loss, bpc) = self.scored()?;
        Ok(json!({
            "task": "next-token", "val_loss": loss, "perplexity": (loss as f64).exp(), "bits_per_char": bpc,
        }))
    }

    fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "{}, vocabulary {} ({})",
                self.model.describe(),
                self.tokenizer.vocab_size(),
                self.tokenizer.describe()
            ),
            format!(
                "{} training tokens, {} validation tokens; {} tokens per micro-batch",
                self.data.train.len(),
                self.data.val.len(),
                self.batch_size * self.block_size
            ),
        ]
    }
}

/// Mean next-token loss of `model` over consecutive windows of `t` tokens
/// of `data`, in no-grad mode (nothing is kept for backward).
pub fn evaluate<M: WindowLm, D: TokenIds + ?Sized>(
    model: &M,
    data: &D,
    batch_size: usize,
    t: usize,
    max_batches: usize,
) -> Result<f32> {
    let batches = eval_batches(data, batch_size, t, max_batches);
    if batches.is_empty() {
        return Err(Error::Data(format!(
            "{} tokens are too few to evaluate a context of {t} (need at least {})",
            data.len(),
            t + 1
        )));
    }
    no_grad(|| {
        let (mut total, mut count) = (0.0f64, 0usize);
        for (x, y, n) in &batches {
            let loss = model.loss(x, y, *n, t, &Dropout::default())?;
            total += loss.item()? as f64 * (n * t) as f64;
            count += n * t;
        }
        Ok((total / count as f64) as f32)
    })
}

/// The text of a language-model run (`data`, or the bundled Shakespeare)
/// and its tokenizer: the run's own when resuming, else `tokenizer`, else
/// one token per character of the text. Also the text's name for messages.
pub(crate) fn corpus_and_tokenizer(
    data: Option<&Path>,
    tokenizer: Option<&str>,
    dir: &Path,
    mode: Mode,
) -> Result<(String, String, Tokenizer)> {
    let (text, source) = load_corpus(data)?;
    let tokenizer: Tokenizer = match (mode, tokenizer) {
        (Mode::Resume, _) => Tokenizer::from_file(&dir.join(super::checkpoint::TOKENIZER))?,
        (Mode::New, None) => CharTokenizer::from_text(&text).into(),
        (Mode::New, Some(s)) => Tokenizer::load(s).map_err(|e| Error::Config(format!("--tokenizer {s}: {e}")))?,
    };
    Ok((text, source, tokenizer))
}

/// The text's tokens (cached), split into training and held-out parts,
/// each long enough for a window of `block_size`.
pub(crate) fn split_corpus(
    tokenizer: &Tokenizer,
    text: &str,
    source: &str,
    dir: &Path,
    block_size: usize,
) -> Result<(Split, Vec<String>)> {
    let (ids, notes) = corpus_tokens(tokenizer, text, source, dir)?;
    let split = Split::new(ids, 0.1);
    split.check(block_size).map_err(|e| Error::Data(format!("corpus {source}: {e}")))?;
    Ok((split, notes))
}

/// A next-token run from its spec: read and tokenize the corpus, make (or,
/// resuming, read) the tokenizer, build the GPT.
pub(crate) fn build(spec: &mut NextTokenSpec, train: &TrainConfig, dir: &Path, mode: Mode) -> Result<Built> {
    let (text, source, tokenizer) = corpus_and_tokenizer(spec.data.as_deref(), spec.tokenizer.as_deref(), dir, mode)?;
    spec.model.vocab_size = tokenizer.vocab_size();
    spec.model.validate()?;
    let (split, notes) = split_corpus(&tokenizer, &text, &source, dir, spec.model.block_size)?;
    let model = Gpt::new(spec.model.clone(), train.seed)?;
    let config = crate::models::load::gpt_config_json(&spec.model);
    let task = NextToken::new(model, tokenizer.clone(), split, train)?;
    Ok(Built {
        task: Box::new(task),
        steps_per_epoch: None,
        fingerprint: fnv1a(text.as_bytes()),
        config,
        tokenizer: Some(tokenizer),
        notes,
    })
}

/// What a Mamba language-model run trains, and on what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MambaLmSpec {
    /// The model, as `transformers`' `MambaConfig` (its `vocab_size` is set
    /// from the tokenizer). Default [`MambaConfig::default`].
    pub model: MambaConfig,
    /// Tokens per training window (T). Mamba has no context limit: this is
    /// only how long the windows it learns from are. Default 128.
    pub block_size: usize,
    /// The UTF-8 text; `None` for the bundled Shakespeare.
    pub data: Option<PathBuf>,
    /// A tokenizer (see [`Tokenizer::load`]); `None` for one token per character.
    pub tokenizer: Option<String>,
}

impl Default for MambaLmSpec {
    fn default() -> Self {
        MambaLmSpec { model: MambaConfig::default(), block_size: 128, data: None, tokenizer: None }
    }
}

/// A Mamba run from its spec: the same text, tokenizer and windows as a
/// GPT's; the run directory is a `MambaForCausalLM` directory.
pub(crate) fn build_mamba(spec: &mut MambaLmSpec, train: &TrainConfig, dir: &Path, mode: Mode) -> Result<Built> {
    if spec.block_size == 0 {
        return Err(Error::Config("block_size must be at least 1 token".into()));
    }
    let (text, source, tokenizer) = corpus_and_tokenizer(spec.data.as_deref(), spec.tokenizer.as_deref(), dir, mode)?;
    spec.model.vocab_size = tokenizer.vocab_size();
    let shape = spec.model.shape()?;
    // written out, so the directory reads the same in `transformers`
    spec.model.intermediate_size = Some(shape.inner);
    spec.model.time_step_rank = Some(shape.dt_rank.into());
    let (split, notes) = split_corpus(&tokenizer, &text, &source, dir, spec.block_size)?;
    let model = Mamba::new(spec.model.clone(), train.seed)?;
    let config = crate::models::load::mamba_config_json(&spec.model, spec.block_size);
    let task = NextToken::with_window(model, spec.block_size, 0.0, tokenizer.clone(), split, train)?;
    Ok(Built {
        task: Box::new(task),
        steps_per_epoch: None,
        fingerprint: fnv1a(text.as_bytes()),
        config,
        tokenizer: Some(tokenizer),
        notes,
    })
}
