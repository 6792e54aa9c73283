//! `qkv train`: arguments → a run description → the library's run loop,
//! drawn as a progress bar. Every default comes from the library (the
//! `[default: …]` texts of `--help` are computed from it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use qkv::generate::{Sampling, generate, generate_mamba, generate_recurrent};
use qkv::models::bert::{BertConfig, Pooling};
use qkv::models::gpt::GptConfig;
use qkv::models::load::{Model, open};
use qkv::models::mamba::MambaConfig;
use qkv::models::recurrent::RecurrentConfig;
use qkv::models::seq2seq::Seq2SeqConfig;
use qkv::models::vit::VitConfig;
use qkv::nn::block::Placement;
use qkv::nn::mlp::Activation;
use qkv::nn::norm::NormKind;
use qkv::nn::positional::Positions;
use qkv::nn::rnn::RnnKind;
use qkv::tokenize::Tokenizer;
use qkv::train::checkpoint::REPORT;
use qkv::train::image_classification::ImageClassificationSpec;
use qkv::train::masked_lm::{MaskedLmSpec, small_bert};
use qkv::train::next_token::{MambaLmSpec, NextTokenSpec};
use qkv::train::optimizer::Decay;
use qkv::train::recurrent_lm::RecurrentLmSpec;
use qkv::train::run::{Control, Event, Outcome, Run};
use qkv::train::setup::{ResumeChanges, RunSpec, TaskSpec, resume, start};
use qkv::train::text_classification::TextClassificationSpec;
use qkv::train::translation::TranslationSpec;
use qkv::train::{TaskKind, TrainConfig};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// Decoder-only transformer, next-token prediction (text)
    #[default]
    Gpt,
    /// Encoder for text: masked language modelling or classification
    Bert,
    /// Vision Transformer: image classification
    Vit,
    /// Encoder–decoder (the original transformer): translation of sentence pairs
    Seq2seq,
    /// Elman recurrent network (tanh), next-token prediction (text)
    Rnn,
    /// Long short-term memory network, next-token prediction (text)
    Lstm,
    /// Gated recurrent unit network, next-token prediction (text)
    Gru,
    /// Mamba, a selective state-space model, next-token prediction (text)
    Mamba,
}

impl ModelKind {
    /// The recurrent cell of `--model rnn|lstm|gru`.
    fn recurrent(self) -> Option<RnnKind> {
        match self {
            ModelKind::Rnn => Some(RnnKind::Rnn),
            ModelKind::Lstm => Some(RnnKind::Lstm),
            ModelKind::Gru => Some(RnnKind::Gru),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Masked language modelling (BERT pre-training) on a text corpus
    Mlm,
    /// Classification of labelled texts (CSV, TSV or JSONL)
    Classify,
}

/// `--decay` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DecayArg {
    Cosine,
    InverseSqrt,
}

impl From<DecayArg> for Decay {
    fn from(d: DecayArg) -> Self {
        match d {
            DecayArg::Cosine => Decay::Cosine,
            DecayArg::InverseSqrt => Decay::InverseSqrt,
        }
    }
}

/// `--norm` values (clap-friendly wrapper).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormKindArg {
    Layernorm,
    Rmsnorm,
}

impl From<NormKindArg> for NormKind {
    fn from(n: NormKindArg) -> Self {
        match n {
            NormKindArg::Layernorm => NormKind::LayerNorm,
            NormKindArg::Rmsnorm => NormKind::RmsNorm,
        }
    }
}

// ------------------------------------------------------------- help texts
// The `[default: …]` of every flag, read off the library's defaults.

fn show(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// `text [default: …]` with the value for each task, merged when they agree.
fn per_task(text: &str, value: impl Fn(TaskKind) -> Option<String>) -> String {
    let values: Vec<(TaskKind, String)> = TaskKind::ALL.iter().filter_map(|&k| value(k).map(|v| (k, v))).collect();
    let same = values.windows(2).all(|w| w[0].1 == w[1].1);
    let list = if same {
        values.first().map(|(_, v)| v.clone()).unwrap_or_default()
    } else {
        values.iter().map(|(k, v)| format!("{v} {}", k.name())).collect::<Vec<_>>().join(", ")
    };
    format!("{text} [default: {list}]")
}

fn train_default(text: &str, f: impl Fn(&TrainConfig) -> String) -> String {
    per_task(text, |k| Some(f(&TrainConfig::for_task(k, false))))
}

/// A model setting of each family: GPT, BERT (from scratch), ViT.
fn model_default(
    text: &str,
    gpt: impl Fn(&GptConfig) -> String,
    bert: impl Fn(&BertConfig) -> String,
    vit: impl Fn(&VitConfig) -> String,
    seq2seq: impl Fn(&Seq2SeqConfig) -> String,
) -> String {
    per_task(text, |k| match k {
        TaskKind::NextToken => Some(gpt(&NextTokenSpec::default().model)),
        TaskKind::MaskedLm => Some(bert(&small_bert())),
        TaskKind::TextClassification => None,
        TaskKind::ImageClassification => Some(vit(&VitConfig::default())),
        TaskKind::Translation => Some(seq2seq(&Seq2SeqConfig::default())),
        // their defaults are listed under --hidden and --state-size
        TaskKind::RecurrentLm | TaskKind::MambaLm => None,
    })
    .replace(" mlm", " bert")
}

fn s2s_spec() -> TranslationSpec {
    TranslationSpec::default()
}

fn lr_help() -> String {
    let fine = TrainConfig::for_task(TaskKind::TextClassification, true).lr;
    train_default("Peak learning rate", |t| show(t.lr))
        .replace(" classify", &format!(" classify ({fine} with --init-from)"))
}

fn steps_help() -> String {
    train_default("Optimizer steps (overrides --epochs)", |t| match t.epochs {
        Some(e) => format!("{e} epoch{}", if e == 1.0 { "" } else { "s" }),
        None => show(t.max_steps),
    })
}

fn epochs_help() -> String {
    per_task("Passes over the training data (classifiers; sets --max-steps)", |k| {
        TrainConfig::for_task(k, false).epochs.map(show)
    })
}

fn eval_help() -> String {
    train_default("Evaluate, checkpoint and redraw the loss curve every N steps", |t| {
        t.eval_interval.map_or("every epoch".into(), show)
    })
}

fn mlp_help() -> String {
    model_default(
        "MLP width as a multiple of C",
        |g| show(g.mlp_ratio),
        |b| show(b.intermediate_size / b.hidden_size),
        |v| show(v.intermediate_size / v.hidden_size),
        |s| show(s.encoder_ffn_dim / s.d_model),
    )
}

fn gpt_default(text: &str, f: impl Fn(&GptConfig) -> String) -> String {
    format!("{text} [default: {}]", f(&GptConfig::default()))
}

fn mlm_spec() -> MaskedLmSpec {
    MaskedLmSpec::default()
}

fn cls_spec() -> TextClassificationSpec {
    TextClassificationSpec::default()
}

fn vit_spec() -> ImageClassificationSpec {
    ImageClassificationSpec::default()
}

#[derive(Args, Debug, Default)]
#[command(after_help = "Examples:
  qkv train                                  # GPT on Shakespeare, about 7 minutes on 2 cores
  qkv train --data notes.txt --out-dir runs/notes --max-steps 500
  qkv train --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 --dropout 0.2
  qkv train --tokenizer gpt2 --out-dir runs/gpt2-tokens   # GPT-2's subword tokens
  qkv train --model bert --task mlm --tokenizer vocab.txt --data corpus.txt
  qkv train --model bert --task classify --data tweets.csv --label-column sentiment --tokenizer vocab.txt
  qkv train --model vit --data mnist/
  qkv train --model seq2seq                  # English → Spanish on the bundled Bible, held-out books
  qkv train --model lstm                     # the recurrent network attention replaced, same text
  qkv train --model mamba                    # a selective state-space model, same text
  qkv train --resume runs/gpt                # continue from the last checkpoint

Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint and exits with status 130;
a second Ctrl-C exits at once. A run killed any other way resumes from its last checkpoint, and
a resumed run ends with exactly the weights of one that never stopped (same thread count).")]
pub struct TrainArgs {
    /// gpt | bert | vit | seq2seq | rnn | lstm | gru | mamba
    #[arg(long, value_enum, default_value_t = ModelKind::Gpt)]
    pub model: ModelKind,
    /// BERT: mlm (pre-training on --data text) or classify (--data labelled CSV/JSONL)
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// Training data: GPT and MLM a UTF-8 text [default: the bundled Shakespeare, ~1 MB] (MLM
    /// also a table's texts); classify a CSV/TSV/JSONL; ViT a directory of IDX files or class
    /// folders, or a digits CSV
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Run directory: config, checkpoints, metrics, loss curve [default: runs/<gpt|mlm|classify|vit|seq2seq|lstm|mamba…>]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (same settings; --max-steps,
    /// --eval-interval and --stop-at may change)
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start over in an --out-dir that already holds a run (replaces only the run's own files)
    #[arg(long)]
    pub force: bool,
    /// JSON file named like a run's run.json: "train" and "model" sections and the task's
    /// other fields ("data", "tokenizer", …); flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Tokenizer: a tokenizer.json (e.g. from `qkv tokenizer train`), a Hugging Face model
    /// directory, a GPT-2 vocab.json + merges.txt pair, a BERT vocab.txt, or `gpt2` (bundled).
    /// A GPT corpus is tokenized once, in parallel, and cached ($QKV_CACHE_DIR, default
    /// ~/.cache/qkv/tokens) [default for a GPT: one token per character of the corpus]
    #[arg(long, value_name = "SPEC")]
    pub tokenizer: Option<String>,

    #[arg(long, help_heading = "Model", help = model_default("Transformer blocks (seq2seq: of the encoder and of the decoder each)", |g| show(g.n_layer), |b| show(b.num_hidden_layers), |v| show(v.num_hidden_layers), |s| show(s.encoder_layers)))]
    pub n_layer: Option<usize>,
    #[arg(long, help_heading = "Model", help = model_default("Attention heads per block; must divide --n-embd", |g| show(g.n_head), |b| show(b.num_attention_heads), |v| show(v.num_attention_heads), |s| show(s.encoder_attention_heads)))]
    pub n_head: Option<usize>,
    #[arg(long, help_heading = "Model", help = model_default("Model width C", |g| show(g.n_embd), |b| show(b.hidden_size), |v| show(v.hidden_size), |s| show(s.d_model)))]
    pub n_embd: Option<usize>,
    #[arg(long, help_heading = "Model", help = format!("Context length T in tokens (BERT: --max-len; rnn, lstm, gru: the window of truncated back-propagation through time) [default: {} gpt, {} recurrent]", GptConfig::default().block_size, RecurrentConfig::default().block_size))]
    pub block_size: Option<usize>,
    #[arg(long, help_heading = "Model", help = format!("rnn, lstm, gru: size of the state carried from token to token [default: {}]; for them --n-embd is the token embedding's width [default: {}] and --n-layer the recurrent layers [default: {}]", RecurrentConfig::default().hidden, RecurrentConfig::default().n_embd, RecurrentConfig::default().n_layer))]
    pub hidden: Option<usize>,
    #[arg(long, help_heading = "Model", help = format!("mamba: numbers of state each channel carries (N) [default: {}]; for it --n-embd is the width C [default: {}], the scan's channels 2·C, and --n-layer the blocks [default: {}]", MambaConfig::default().state_size, MambaConfig::default().hidden_size, MambaConfig::default().num_hidden_layers))]
    pub state_size: Option<usize>,
    #[arg(long, help_heading = "Model", help = mlp_help())]
    pub mlp_ratio: Option<f32>,
    #[arg(long, help_heading = "Model", help = format!("{} (seq2seq: relu | silu | gelu | gelu-tanh) [default: {} gpt, {} seq2seq]", "GPT: gelu | gelu-tanh | relu | silu | swiglu", format!("{:?}", GptConfig::default().activation).to_lowercase(), Seq2SeqConfig::default().activation_function))]
    pub activation: Option<Activation>,
    #[arg(long, help_heading = "Model", help = gpt_default("GPT: layernorm | rmsnorm", |g| format!("{:?}", g.norm).to_lowercase()))]
    pub norm: Option<NormKindArg>,
    #[arg(long, help_heading = "Model", help = format!("GPT, seq2seq: pre | post [default: {} gpt, {} seq2seq]", format!("{:?}", GptConfig::default().norm_placement).to_lowercase(), if Seq2SeqConfig::default().normalize_before { "pre" } else { "post" }))]
    pub norm_placement: Option<Placement>,
    #[arg(long, help_heading = "Model", help = format!("GPT: learned | sinusoidal | rope | alibi | none; seq2seq: sinusoidal | learned | rope [default: {} gpt, {} seq2seq]", format!("{:?}", GptConfig::default().positions).to_lowercase(), format!("{:?}", Seq2SeqConfig::default().qkv_positions).to_lowercase()))]
    pub positions: Option<Positions>,
    #[arg(long, help_heading = "Model", help = gpt_default("GPT: biases in projections and LayerNorms, true | false", |g| show(g.bias)))]
    pub bias: Option<bool>,
    #[arg(long, help_heading = "Model", help = model_default("Dropout while training", |g| show(g.dropout), |b| show(b.hidden_dropout_prob), |v| show(v.hidden_dropout_prob), |s| show(s.dropout)))]
    pub dropout: Option<f32>,
    #[arg(long, help_heading = "Model", help = gpt_default("GPT: share the token embedding with the LM head, true | false", |g| show(g.tie_embeddings)))]
    pub tie_embeddings: Option<bool>,

    #[arg(long, help_heading = "Training", help = train_default("Sequences (images) per micro-batch", |t| show(t.batch_size)))]
    pub batch_size: Option<usize>,
    #[arg(long, help_heading = "Training", help = train_default("Micro-batches per optimizer step", |t| show(t.grad_accum)))]
    pub grad_accum: Option<usize>,
    #[arg(long, help_heading = "Training", help = steps_help())]
    pub max_steps: Option<u64>,
    #[arg(long, help_heading = "Training", help = epochs_help())]
    pub epochs: Option<f64>,
    #[arg(long, help_heading = "Training", help = lr_help())]
    pub lr: Option<f32>,
    #[arg(long, help_heading = "Training", help = "Final learning rate of the cosine decay [default: lr / 10]")]
    pub min_lr: Option<f32>,
    #[arg(long, help_heading = "Training", help = train_default("Linear warm-up steps", |t| show(t.warmup_steps)))]
    pub warmup_steps: Option<u64>,
    #[arg(long, value_enum, help_heading = "Training", help = train_default("After warm-up: cosine | inverse-sqrt (the original transformer's)", |t| format!("{:?}", t.decay).to_lowercase().replace("inversesqrt", "inverse-sqrt")))]
    pub decay: Option<DecayArg>,
    #[arg(long, help_heading = "Training", help = train_default("AdamW decoupled weight decay (projection weights only)", |t| show(t.adamw.weight_decay)))]
    pub weight_decay: Option<f32>,
    #[arg(long, help_heading = "Training", help = train_default("Clip the global gradient norm to this; 0 = off", |t| show(t.grad_clip)))]
    pub grad_clip: Option<f32>,
    #[arg(long, help_heading = "Training", help = train_default("AdamW beta1", |t| show(t.adamw.beta1)))]
    pub beta1: Option<f32>,
    #[arg(long, help_heading = "Training", help = train_default("AdamW beta2", |t| show(t.adamw.beta2)))]
    pub beta2: Option<f32>,
    #[arg(long, help_heading = "Training", help = eval_help())]
    pub eval_interval: Option<u64>,
    #[arg(long, help_heading = "Training", help = train_default("Held-out batches per evaluation, at most (GPT, MLM)", |t| show(t.eval_batches)))]
    pub eval_batches: Option<usize>,
    #[arg(long, help_heading = "Training", help = train_default("Seed of initialisation, data order, masking and dropout", |t| show(t.seed)))]
    pub seed: Option<u64>,
    /// Stop after this step, keeping the schedule of --max-steps (continue with --resume)
    #[arg(long, help_heading = "Training")]
    pub stop_at: Option<u64>,

    #[arg(long, help_heading = "Text encoders", help = format!("Classification (and MLM on a table): the column or JSON field holding the text [default: {}]", cls_spec().text_column))]
    pub text_column: Option<String>,
    #[arg(long, help_heading = "Text encoders", help = format!("Classification: the column or JSON field holding the label [default: {}]", cls_spec().label_column))]
    pub label_column: Option<String>,
    /// Tables: replace bytes that are not UTF-8 instead of refusing the file
    #[arg(long, help_heading = "Text encoders")]
    pub lossy: bool,
    /// Classification: fine-tune the encoder of this MLM run (or Hugging Face BERT directory)
    #[arg(long, value_name = "DIR", help_heading = "Text encoders")]
    pub init_from: Option<PathBuf>,
    #[arg(long, help_heading = "Text encoders", help = format!("Classification: cls (BERT's pooler on [CLS]) or mean (average of the tokens) [default: {}]", format!("{:?}", cls_spec().pooling).to_lowercase()))]
    pub pooling: Option<Pooling>,
    #[arg(long, help_heading = "Text encoders", help = format!("Fraction of a table's (de-duplicated) rows held out for testing [default: {}]", cls_spec().test_fraction))]
    pub test_fraction: Option<f64>,
    #[arg(long, help_heading = "Text encoders", help = format!("BERT: texts longer than this many tokens ([CLS] and [SEP] included) are cut to it; \
        also the sequence length of MLM [default: {} (fine-tuning: the encoder's own, up to {})]", mlm_spec().max_len, mlm_spec().max_len))]
    pub max_len: Option<usize>,

    #[arg(long, help_heading = "Translation", help = format!("The column holding the sentences to translate [default: {}]", s2s_spec().source_column))]
    pub source_column: Option<String>,
    #[arg(long, help_heading = "Translation", help = format!("The column holding their translations [default: {}]", s2s_spec().target_column))]
    pub target_column: Option<String>,
    /// Hold out whole groups of this column (so test sentences come from documents the model
    /// never saw) [default: book for the bundled Bible, else none: pair by pair]
    #[arg(long, help_heading = "Translation")]
    pub group_column: Option<String>,
    #[arg(long, help_heading = "Translation", help = format!("Padded tokens per batch (pairs of similar length go together) [default: {}]", s2s_spec().max_tokens))]
    pub max_tokens: Option<usize>,
    #[arg(long, help_heading = "Translation", help = format!("Label smoothing of the loss [default: {}]", s2s_spec().label_smoothing))]
    pub label_smoothing: Option<f32>,
    #[arg(long, help_heading = "Translation", help = format!("Vocabulary of the joint BPE trained on both sides (without --tokenizer) [default: {}]", s2s_spec().vocab_size))]
    pub vocab_size: Option<usize>,

    #[arg(long, help_heading = "Vision Transformer", help = format!("Side of a square patch in pixels [default: {}]", vit_spec().model.patch_size))]
    pub patch_size: Option<usize>,
    #[arg(long, help_heading = "Vision Transformer", help = format!("Images are resized to this side [default: {}]", vit_spec().model.image_size))]
    pub image_size: Option<usize>,
    #[arg(long, help_heading = "Vision Transformer", help = format!("1 (grey) or 3 (RGB) [default: {}]", vit_spec().model.num_channels))]
    pub channels: Option<usize>,
    #[arg(long, help_heading = "Vision Transformer", help = format!("Random shifts of up to this many pixels while training [default: {}]", vit_spec().shift))]
    pub shift: Option<usize>,

    /// Characters of sample text a GPT prints at the end; 0 for none
    #[arg(long, default_value_t = 400)]
    pub sample_chars: usize,
    /// No progress bar; one line per evaluation instead
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    fn kind(&self) -> Result<TaskKind> {
        Ok(match (self.model, self.task) {
            (ModelKind::Gpt, None) => TaskKind::NextToken,
            (ModelKind::Bert, Some(Task::Mlm)) => TaskKind::MaskedLm,
            (ModelKind::Bert, Some(Task::Classify)) => TaskKind::TextClassification,
            (ModelKind::Bert, None) => {
                bail!("--model bert needs --task mlm (pre-training on text) or --task classify (labelled texts)")
            }
            (ModelKind::Vit, None) => TaskKind::ImageClassification,
            (ModelKind::Seq2seq, None) => TaskKind::Translation,
            (ModelKind::Rnn | ModelKind::Lstm | ModelKind::Gru, None) => TaskKind::RecurrentLm,
            (ModelKind::Mamba, None) => TaskKind::MambaLm,
            (m, Some(_)) => bail!("--task is for --model bert; --model {m:?} has one task", m = m),
        })
    }

    /// Flags given that `kind` has no use for (refused rather than ignored).
    fn foreign_flags(&self, kind: TaskKind) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut no = |given: bool, flag: &'static str| {
            if given {
                v.push(flag);
            }
        };
        let gpt = kind == TaskKind::NextToken;
        let bert = matches!(kind, TaskKind::MaskedLm | TaskKind::TextClassification);
        let vit = kind == TaskKind::ImageClassification;
        let s2s = kind == TaskKind::Translation;
        let rec = kind == TaskKind::RecurrentLm;
        let mamba = kind == TaskKind::MambaLm;
        no(self.hidden.is_some() && !rec, "--hidden");
        no(self.state_size.is_some() && !mamba, "--state-size");
        no((self.n_head.is_some() || self.mlp_ratio.is_some()) && (rec || mamba), "--n-head or --mlp-ratio");
        no(self.dropout.is_some() && mamba, "--dropout");
        for (given, flag) in [
            (self.activation.is_some(), "--activation"),
            (self.norm_placement.is_some(), "--norm-placement"),
            (self.positions.is_some(), "--positions"),
        ] {
            no(given && !gpt && !s2s, flag);
        }
        for (given, flag) in [
            (self.norm.is_some(), "--norm"),
            (self.bias.is_some(), "--bias"),
            (self.tie_embeddings.is_some(), "--tie-embeddings"),
        ] {
            no(given && !gpt, flag);
        }
        no(self.block_size.is_some() && (vit || s2s), "--block-size");
        no(self.tokenizer.is_some() && vit, "--tokenizer");
        for (given, flag) in [
            (self.max_len.is_some(), "--max-len"),
            (self.test_fraction.is_some(), "--test-fraction"),
            (self.lossy, "--lossy"),
        ] {
            no(given && !bert && !s2s, flag);
        }
        no(self.text_column.is_some() && !bert, "--text-column");
        for (given, flag) in [
            (self.source_column.is_some(), "--source-column"),
            (self.target_column.is_some(), "--target-column"),
            (self.group_column.is_some(), "--group-column"),
            (self.max_tokens.is_some(), "--max-tokens"),
            (self.label_smoothing.is_some(), "--label-smoothing"),
            (self.vocab_size.is_some(), "--vocab-size"),
        ] {
            no(given && !s2s, flag);
        }
        for (given, flag) in [
            (self.label_column.is_some(), "--label-column"),
            (self.init_from.is_some(), "--init-from"),
            (self.pooling.is_some(), "--pooling"),
        ] {
            no(given && kind != TaskKind::TextClassification, flag);
        }
        for (given, flag) in [
            (self.patch_size.is_some(), "--patch-size"),
            (self.image_size.is_some(), "--image-size"),
            (self.channels.is_some(), "--channels"),
            (self.shift.is_some(), "--shift"),
        ] {
            no(given && !vit, flag);
        }
        no(self.epochs.is_some() && matches!(kind, TaskKind::NextToken | TaskKind::MaskedLm), "--epochs");
        v
    }

    /// Flags that would change an existing run (refused with --resume).
    fn changed_on_resume(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! check {
            ($($field:ident => $flag:literal),*) => { $( if self.$field.is_some() { v.push($flag); } )* };
        }
        check!(n_layer => "--n-layer", n_head => "--n-head", n_embd => "--n-embd", block_size => "--block-size",
            mlp_ratio => "--mlp-ratio", activation => "--activation", norm => "--norm",
            norm_placement => "--norm-placement", positions => "--positions", bias => "--bias",
            dropout => "--dropout", tie_embeddings => "--tie-embeddings", batch_size => "--batch-size",
            grad_accum => "--grad-accum", epochs => "--epochs", lr => "--lr", min_lr => "--min-lr",
            warmup_steps => "--warmup-steps", weight_decay => "--weight-decay", grad_clip => "--grad-clip",
            beta1 => "--beta1", beta2 => "--beta2", eval_batches => "--eval-batches", seed => "--seed",
            config => "--config", data => "--data", tokenizer => "--tokenizer", out_dir => "--out-dir",
            task => "--task", text_column => "--text-column", label_column => "--label-column",
            init_from => "--init-from", pooling => "--pooling", test_fraction => "--test-fraction",
            max_len => "--max-len", patch_size => "--patch-size", image_size => "--image-size",
            channels => "--channels", shift => "--shift", decay => "--decay", source_column => "--source-column",
            target_column => "--target-column", group_column => "--group-column", max_tokens => "--max-tokens",
            label_smoothing => "--label-smoothing", vocab_size => "--vocab-size", hidden => "--hidden",
            state_size => "--state-size");
        if self.model != ModelKind::Gpt {
            v.push("--model");
        }
        if self.lossy {
            v.push("--lossy");
        }
        v
    }
}

/// `base` with the keys of `patch` laid over it (objects merged key by key).
fn overlay<T: Serialize + DeserializeOwned>(base: &T, patch: &Value, what: &str) -> Result<T> {
    fn merge(dst: &mut Value, src: &Value) {
        match (dst, src) {
            (Value::Object(d), Value::Object(s)) => {
                for (k, v) in s {
                    merge(d.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (d, s) => *d = s.clone(),
        }
    }
    let mut v = serde_json::to_value(base)?;
    merge(&mut v, patch);
    serde_json::from_value(v).with_context(|| what.to_string())
}

/// The object in `--config FILE`.
fn config_file(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match v {
        Value::Object(o) => Ok(o),
        _ => bail!("{}: expected a JSON object", path.display()),
    }
}

/// A new run's description: the library's defaults for the task, then
/// `--config`, then the flags.
fn new_spec(a: &TrainArgs) -> Result<RunSpec> {
    let kind = a.kind()?;
    let foreign = a.foreign_flags(kind);
    if !foreign.is_empty() {
        bail!(
            "{} not used by the {} task: {}",
            if foreign.len() == 1 { "this flag is" } else { "these flags are" },
            kind.name(),
            foreign.join(", ")
        );
    }
    let mut file = match &a.config {
        Some(p) => config_file(p)?,
        None => Default::default(),
    };
    let origin = a.config.as_ref().map_or(String::new(), |p| format!("{}: ", p.display()));
    if let Some(task) = file.remove("task") {
        let named = serde_json::to_value(kind)?;
        if task != named {
            bail!("{origin}\"task\" is {task}, but the flags ask for {named}");
        }
    }
    file.remove("data_fingerprint");
    let mut train = TrainConfig::for_task(kind, a.init_from.is_some());
    let file_train = file.remove("train").unwrap_or(Value::Null);
    if !file_train.is_null() {
        train = overlay(&train, &file_train, &format!("{origin}in \"train\""))?;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { train.$f = v; } )* };
    }
    set!(batch_size, grad_accum, max_steps, lr, min_lr, warmup_steps, grad_clip, eval_batches, seed);
    if a.eval_interval.is_some() {
        train.eval_interval = a.eval_interval;
    }
    if a.epochs.is_some() {
        train.epochs = a.epochs;
    } else if a.max_steps.is_some() || file_train.get("max_steps").is_some() {
        train.epochs = None; // a step count given outright wins over the default epochs
    }
    if let Some(v) = a.weight_decay {
        train.adamw.weight_decay = v;
    }
    if let Some(v) = a.decay {
        train.decay = v.into();
    }
    if let Some(v) = a.beta1 {
        train.adamw.beta1 = v;
    }
    if let Some(v) = a.beta2 {
        train.adamw.beta2 = v;
    }
    let lr_given = a.lr.is_some() || file_train.get("lr").is_some();
    let min_given = a.min_lr.is_some() || file_train.get("min_lr").is_some();
    if lr_given && !min_given {
        train.min_lr = train.lr / 10.0;
    }
    let patch = Value::Object(file);
    let what = format!("{origin}the task's settings");
    let task = match kind {
        TaskKind::NextToken => {
            let mut s = overlay(&NextTokenSpec::default(), &patch, &what)?;
            let m = &mut s.model;
            macro_rules! set_model {
                ($($f:ident),*) => { $( if let Some(v) = a.$f { m.$f = v.into(); } )* };
            }
            set_model!(n_layer, n_head, n_embd, block_size, mlp_ratio, activation, norm, norm_placement, positions);
            set_model!(bias, dropout, tie_embeddings);
            s.data = a.data.clone().or(s.data);
            s.tokenizer = a.tokenizer.clone().or(s.tokenizer);
            TaskSpec::NextToken(s)
        }
        TaskKind::MaskedLm => {
            let mut s = overlay(&MaskedLmSpec::default(), &patch, &what)?;
            bert_shape(a, &mut s.model);
            s.data = a.data.clone().or(s.data);
            s.tokenizer = a.tokenizer.clone().or(s.tokenizer);
            s.max_len = a.max_len.or(a.block_size).unwrap_or(s.max_len);
            s.text_column = a.text_column.clone().unwrap_or(s.text_column);
            s.test_fraction = a.test_fraction.unwrap_or(s.test_fraction);
            s.lossy |= a.lossy;
            TaskSpec::MaskedLm(s)
        }
        TaskKind::TextClassification => {
            let mut s = overlay(&TextClassificationSpec::default(), &patch, &what)?;
            bert_shape(a, &mut s.model);
            s.data = a.data.clone().or(s.data);
            s.tokenizer = a.tokenizer.clone().or(s.tokenizer);
            s.init_from = a.init_from.clone().or(s.init_from);
            s.pooling = a.pooling.unwrap_or(s.pooling);
            s.max_len = a.max_len.or(a.block_size).or(s.max_len);
            s.text_column = a.text_column.clone().unwrap_or(s.text_column);
            s.label_column = a.label_column.clone().unwrap_or(s.label_column);
            s.test_fraction = a.test_fraction.unwrap_or(s.test_fraction);
            s.lossy |= a.lossy;
            TaskSpec::TextClassification(s)
        }
        TaskKind::ImageClassification => {
            let mut s = overlay(&ImageClassificationSpec::default(), &patch, &what)?;
            let m = &mut s.model;
            a.encoder_shape(
                &mut m.num_hidden_layers,
                &mut m.num_attention_heads,
                &mut m.hidden_size,
                &mut m.intermediate_size,
                &mut m.hidden_dropout_prob,
            );
            m.patch_size = a.patch_size.unwrap_or(m.patch_size);
            m.image_size = a.image_size.unwrap_or(m.image_size);
            m.num_channels = a.channels.unwrap_or(m.num_channels);
            s.shift = a.shift.unwrap_or(s.shift);
            s.data = a.data.clone().or(s.data);
            TaskSpec::ImageClassification(s)
        }
        TaskKind::Translation => {
            let mut s = overlay(&TranslationSpec::default(), &patch, &what)?;
            let m = &mut s.model;
            let ratio = m.encoder_ffn_dim as f32 / m.d_model as f32;
            m.encoder_layers = a.n_layer.unwrap_or(m.encoder_layers);
            m.decoder_layers = a.n_layer.unwrap_or(m.decoder_layers);
            m.encoder_attention_heads = a.n_head.unwrap_or(m.encoder_attention_heads);
            m.decoder_attention_heads = a.n_head.unwrap_or(m.decoder_attention_heads);
            m.d_model = a.n_embd.unwrap_or(m.d_model);
            let ffn = (m.d_model as f32 * a.mlp_ratio.unwrap_or(ratio)).round() as usize;
            (m.encoder_ffn_dim, m.decoder_ffn_dim) = (ffn, ffn);
            m.dropout = a.dropout.unwrap_or(m.dropout);
            if let Some(p) = a.norm_placement {
                m.normalize_before = p == Placement::Pre;
            }
            if let Some(p) = a.positions {
                m.qkv_positions = p;
            }
            if let Some(act) = a.activation {
                m.activation_function = match act {
                    Activation::Relu => "relu",
                    Activation::Silu => "swish",
                    Activation::Gelu => "gelu",
                    Activation::GeluTanh => "gelu_new",
                    Activation::SwiGlu => bail!("--activation swiglu: the encoder–decoder's MLP is not gated"),
                }
                .into();
            }
            s.data = a.data.clone().or(s.data);
            s.tokenizer = a.tokenizer.clone().or(s.tokenizer);
            s.source_column = a.source_column.clone().unwrap_or(s.source_column);
            s.target_column = a.target_column.clone().unwrap_or(s.target_column);
            s.group_column = a.group_column.clone().or(s.group_column);
            s.test_fraction = a.test_fraction.unwrap_or(s.test_fraction);
            s.max_len = a.max_len.unwrap_or(s.max_len);
            s.max_tokens = a.max_tokens.unwrap_or(s.max_tokens);
            s.label_smoothing = a.label_smoothing.unwrap_or(s.label_smoothing);
            s.vocab_size = a.vocab_size.unwrap_or(s.vocab_size);
            s.lossy |= a.lossy;
            TaskSpec::Translation(s)
        }
        TaskKind::RecurrentLm => {
            let mut s = overlay(&RecurrentLmSpec::default(), &patch, &what)?;
            let m = &mut s.model;
            if let Some(kind) = a.model.recurrent() {
                m.kind = kind;
            }
            m.n_layer = a.n_layer.unwrap_or(m.n_layer);
            m.n_embd = a.n_embd.unwrap_or(m.n_embd);
            m.hidden = a.hidden.unwrap_or(m.hidden);
            m.block_size = a.block_size.unwrap_or(m.block_size);
            m.dropout = a.dropout.unwrap_or(m.dropout);
            s.data = a.data.clone().or(s.data);
            s.tokenizer = a.tokenizer.clone().or(s.tokenizer);
            TaskSpec::RecurrentLm(s)
        }
        TaskKind::MambaLm => {
            let mut s = overlay(&MambaLmSpec::default(), &patch, &what)?;
            let m = &mut s.model;
            m.num_hidden_layers = a.n_layer.unwrap_or(m.num_hidden_layers);
            m.hidden_size = a.n_embd.unwrap_or(m.hidden_size);
            m.state_size = a.state_size.unwrap_or(m.state_size);
            s.block_size = a.block_size.unwrap_or(s.block_size);
            s.data = a.data.clone().or(s.data);
            s.tokenizer = a.tokenizer.clone().or(s.tokenizer);
            TaskSpec::MambaLm(s)
        }
    };
    Ok(RunSpec { task, train, data_fingerprint: String::new() })
}

/// The BERT shape flags.
fn bert_shape(a: &TrainArgs, m: &mut BertConfig) {
    a.encoder_shape(
        &mut m.num_hidden_layers,
        &mut m.num_attention_heads,
        &mut m.hidden_size,
        &mut m.intermediate_size,
        &mut m.hidden_dropout_prob,
    );
}

impl TrainArgs {
    /// An encoder's (BERT's, ViT's) shape from the flags given: layers,
    /// heads, width, MLP width (the default ratio kept when only the width
    /// changes) and dropout.
    fn encoder_shape(&self, layers: &mut usize, heads: &mut usize, width: &mut usize, mlp: &mut usize, drop: &mut f32) {
        let ratio = *mlp as f32 / *width as f32;
        *layers = self.n_layer.unwrap_or(*layers);
        *heads = self.n_head.unwrap_or(*heads);
        *width = self.n_embd.unwrap_or(*width);
        *mlp = (*width as f32 * self.mlp_ratio.unwrap_or(ratio)).round() as usize;
        *drop = self.dropout.unwrap_or(*drop);
    }
}

/// Ctrl-C and SIGTERM: the first asks the run to stop after its step (it
/// then writes a checkpoint), the second exits at once.
fn stop_on_signals(control: &Control) {
    let control = control.clone();
    let installed = ctrlc::set_handler(move || {
        if control.stop_requested() {
            eprintln!("\nqkv train: stopping now; the last complete checkpoint is intact");
            std::process::exit(130);
        }
        control.request_stop();
        eprintln!("\nqkv train: finishing this step, then writing a checkpoint (press Ctrl-C again to quit at once)");
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will not write a checkpoint ({e})");
    }
}

fn progress_bar(quiet: bool, pos: u64, len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:28.cyan/blue} step {pos}/{len} | {msg} | ETA {eta}")
            .expect("valid template")
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    bar.set_position(pos);
    bar
}

/// Run `qkv train`; returns the exit status (130 when interrupted).
pub fn run(args: &TrainArgs) -> Result<i32> {
    let mut run = match &args.resume {
        Some(dir) => {
            let changed = args.changed_on_resume();
            if !changed.is_empty() {
                bail!(
                    "--resume continues a run with its own settings; these flags would change it: {} \
                     (start a new run with --out-dir instead)",
                    changed.join(", ")
                );
            }
            let changes = ResumeChanges { max_steps: args.max_steps, eval_interval: args.eval_interval };
            let run = resume(dir, &changes)?;
            eprintln!("resuming {} at step {}", dir.display(), run.trainer.step);
            run
        }
        None => {
            let spec = new_spec(args)?;
            // runs/gpt, runs/lstm, …
            let name = match &spec.task {
                TaskSpec::RecurrentLm(s) => s.model.kind.name().to_lowercase(),
                _ => spec.task.kind().name().to_string(),
            };
            let dir = args.out_dir.clone().unwrap_or_else(|| Path::new("runs").join(name));
            start(spec, &dir, args.force)?
        }
    };
    let max = run.trainer.config.max_steps;
    let stop = args.stop_at.unwrap_or(max).min(max);
    for line in run.trainer.task.describe() {
        eprintln!("qkv train: {line}");
    }
    for note in &run.notes {
        eprintln!("  {note}");
    }
    eprintln!("  {} steps, {} threads; run directory {}", max, qkv_tensor::num_threads(), run.dir.display());
    if run.trainer.step >= stop {
        eprintln!("{}: already at step {} of {stop}; nothing to do", run.dir.display(), run.trainer.step);
        return Ok(0);
    }
    let control = Control::default();
    stop_on_signals(&control);
    let outcome = train_with_bar(&mut run, stop, &control, args.quiet)?;
    let dir = run.dir.clone();
    match outcome {
        Outcome::Interrupted { step } => {
            eprintln!(
                "interrupted at step {step}: checkpoint written; continue with `qkv train --resume {}`",
                dir.display()
            );
            Ok(130)
        }
        Outcome::Reached { step } if step < max => {
            eprintln!(
                "stopped at step {step} of {max} (--stop-at); continue with `qkv train --resume {}`",
                dir.display()
            );
            Ok(0)
        }
        Outcome::Reached { step } => {
            finished(&run, step, args.sample_chars)?;
            Ok(0)
        }
    }
}

/// Train with a progress bar (or, quiet, a line per evaluation).
fn train_with_bar(run: &mut Run, stop: u64, control: &Control, quiet: bool) -> Result<Outcome> {
    let bar = progress_bar(quiet, run.trainer.step, stop);
    let mut last_eval = String::new();
    let mut last_loss = f32::NAN;
    let outcome = run.train(stop, control, &mut |e| match e {
        Event::Step { step, stats, tokens_per_s } => {
            last_loss = stats.loss;
            bar.set_position(step);
            bar.set_message(format!(
                "loss {:.4}{} | lr {:.1e} | {:.0} tok/s",
                stats.loss,
                if last_eval.is_empty() { String::new() } else { format!(" | {last_eval}") },
                stats.lr,
                tokens_per_s
            ));
        }
        Event::Evaluated { step, evaluation } => {
            last_eval = evaluation.summary.clone();
            if bar.is_hidden() {
                eprintln!("step {step:>6}/{stop}  train {last_loss:.4}  {last_eval}");
            }
        }
        Event::Checkpoint { .. } => {}
    });
    bar.finish_and_clear();
    Ok(outcome?)
}

/// The end of a finished run: its report, and a GPT's sample.
fn finished(run: &Run, step: u64, sample_chars: usize) -> Result<()> {
    let dir = &run.dir;
    let text = std::fs::read_to_string(dir.join(REPORT)).with_context(|| format!("reading {REPORT}"))?;
    let report: Value = serde_json::from_str(&text)?;
    let secs = report["train_seconds"].as_f64().unwrap_or(0.0);
    eprintln!("done: step {step} in {secs:.0} s of training ({} tokens)", run.state.tokens_seen);
    if !matches!(run.spec.task.kind(), TaskKind::NextToken | TaskKind::RecurrentLm | TaskKind::MambaLm) {
        eprintln!("model directory: {} (qkv eval --model {} --data …)", dir.display(), dir.display());
        println!("{report}");
        return Ok(());
    }
    let num = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "validation loss {:.4} nats/token, perplexity {:.2}, {:.3} bits/char; run directory {} (loss curve: loss.svg)",
        num("val_loss"),
        num("perplexity"),
        num("bits_per_char"),
        dir.display()
    );
    if sample_chars == 0 {
        return Ok(());
    }
    let sampling = Sampling { temperature: 0.8, top_k: Some(40), seed: run.trainer.config.seed, ..Default::default() };
    let newline =
        |tokenizer: &Tokenizer| tokenizer.encode("\n").or_else(|_| tokenizer.encode(" ")).unwrap_or_else(|_| vec![0]);
    let (ids, tokenizer) = match open(dir)? {
        Model::Gpt { model, tokenizer, .. } => {
            (generate(&model, &newline(&tokenizer), sample_chars, &sampling, |_| Ok(true))?, tokenizer)
        }
        Model::Recurrent { model, tokenizer } => {
            (generate_recurrent(&model, &newline(&tokenizer), sample_chars, &sampling, |_| Ok(true))?, tokenizer)
        }
        Model::Mamba { model, tokenizer: Some(tokenizer), .. } => {
            (generate_mamba(&model, &newline(&tokenizer), sample_chars, &sampling, |_| Ok(true))?, tokenizer)
        }
        _ => bail!("{}: not a language-model run", dir.display()),
    };
    eprintln!("sample (temperature 0.8, top-k 40):\n---");
    println!("{}", tokenizer.decode(&ids)?);
    eprintln!("---\ngenerate more: qkv generate --model {} --prompt \"ROMEO:\"", dir.display());
    Ok(())
}
