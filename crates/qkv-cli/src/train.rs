//! `qkv train`: train a GPT on a text file (default: the bundled Shakespeare).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use qkv::data::text::{SHAKESPEARE, Split, bits_per_char, eval_targets, read_corpus};
use qkv::data::token_cache;
use qkv::data::tokens::{TokenIds, Tokens};
use qkv::generate::{Sampling, generate};
use qkv::models::gpt::{Gpt, GptConfig};
use qkv::nn::Module;
use qkv::nn::block::Placement;
use qkv::nn::mlp::Activation;
use qkv::nn::norm::NormKind;
use qkv::nn::positional::Positions;
use qkv::tokenize::{CharTokenizer, Tokenizer};
use qkv::train::run::{self, Metric, RunConfig, TrainState};
use qkv::train::{TrainConfig, Trainer};

#[derive(Args, Debug, Default)]
#[command(after_help = "Examples:
  qkv train                                  # Shakespeare, about 7 minutes on 2 cores
  qkv train --data notes.txt --out-dir runs/notes --max-steps 500
  qkv train --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 --dropout 0.2
  qkv train --tokenizer gpt2 --out-dir runs/gpt2-tokens   # GPT-2's subword tokens
  qkv tokenizer train --kind byte-bpe --vocab-size 2048 data/shakespeare.txt -o bpe.json
  qkv train --tokenizer bpe.json --out-dir runs/bpe
  qkv train --resume runs/gpt                # continue from the last checkpoint")]
pub struct TrainArgs {
    /// UTF-8 text file to train on [default: the bundled Shakespeare, ~1 MB]
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Run directory: config, checkpoints, metrics, loss curve
    #[arg(long, value_name = "DIR", default_value = "runs/gpt")]
    pub out_dir: PathBuf,
    /// Continue the run in DIR from its last checkpoint (same settings; --max-steps,
    /// --eval-interval and --stop-at may change)
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start over in an --out-dir that already holds a run (replaces only the run's own files)
    #[arg(long)]
    pub force: bool,
    /// JSON file with "model" and/or "train" sections, named like a run's config.json;
    /// flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Tokenizer: a tokenizer.json (e.g. from `qkv tokenizer train`), a Hugging Face model
    /// directory, a GPT-2 vocab.json + merges.txt pair, a BERT vocab.txt, or `gpt2` (bundled).
    /// The corpus is tokenized once, in parallel, and cached ($QKV_CACHE_DIR, default
    /// ~/.cache/qkv/tokens) [default: one token per character of the corpus]
    #[arg(long, value_name = "SPEC")]
    pub tokenizer: Option<String>,

    /// Transformer blocks [default: 4]
    #[arg(long, help_heading = "Model")]
    pub n_layer: Option<usize>,
    /// Attention heads per block; must divide --n-embd [default: 6]
    #[arg(long, help_heading = "Model")]
    pub n_head: Option<usize>,
    /// Model width C [default: 192]
    #[arg(long, help_heading = "Model")]
    pub n_embd: Option<usize>,
    /// Context length T in tokens [default: 128]
    #[arg(long, help_heading = "Model")]
    pub block_size: Option<usize>,
    /// MLP width as a multiple of C [default: 4]
    #[arg(long, help_heading = "Model")]
    pub mlp_ratio: Option<f32>,
    /// gelu | gelu-tanh | relu | swiglu [default: gelu]
    #[arg(long, help_heading = "Model")]
    pub activation: Option<Activation>,
    /// layernorm | rmsnorm [default: layernorm]
    #[arg(long, help_heading = "Model")]
    pub norm: Option<NormKindArg>,
    /// pre | post [default: pre]
    #[arg(long, help_heading = "Model")]
    pub norm_placement: Option<Placement>,
    /// learned | sinusoidal | rope | alibi | none [default: learned]
    #[arg(long, help_heading = "Model")]
    pub positions: Option<Positions>,
    /// Biases in projections and LayerNorms: true | false [default: false]
    #[arg(long, help_heading = "Model")]
    pub bias: Option<bool>,
    /// Dropout while training [default: 0]
    #[arg(long, help_heading = "Model")]
    pub dropout: Option<f32>,
    /// Share the token embedding with the LM head: true | false [default: true]
    #[arg(long, help_heading = "Model")]
    pub tie_embeddings: Option<bool>,

    /// Sequences per micro-batch [default: 16]
    #[arg(long, help_heading = "Training")]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 1]
    #[arg(long, help_heading = "Training")]
    pub grad_accum: Option<usize>,
    /// Optimizer steps [default: 1400]
    #[arg(long, help_heading = "Training")]
    pub max_steps: Option<u64>,
    /// Peak learning rate [default: 2e-3]
    #[arg(long, help_heading = "Training")]
    pub lr: Option<f32>,
    /// Final learning rate of the cosine decay [default: 2e-4]
    #[arg(long, help_heading = "Training")]
    pub min_lr: Option<f32>,
    /// Linear warm-up steps [default: 100]
    #[arg(long, help_heading = "Training")]
    pub warmup_steps: Option<u64>,
    /// AdamW decoupled weight decay (projection weights only) [default: 0.1]
    #[arg(long, help_heading = "Training")]
    pub weight_decay: Option<f32>,
    /// Clip the global gradient norm to this; 0 = off [default: 1.0]
    #[arg(long, help_heading = "Training")]
    pub grad_clip: Option<f32>,
    /// AdamW beta1 [default: 0.9]
    #[arg(long, help_heading = "Training")]
    pub beta1: Option<f32>,
    /// AdamW beta2 [default: 0.95]
    #[arg(long, help_heading = "Training")]
    pub beta2: Option<f32>,
    /// Evaluate, checkpoint and redraw the loss curve every N steps [default: 200]
    #[arg(long, help_heading = "Training")]
    pub eval_interval: Option<u64>,
    /// Validation batches per evaluation, at most [default: 20]
    #[arg(long, help_heading = "Training")]
    pub eval_batches: Option<usize>,
    /// Seed of initialisation, batches and dropout [default: 1337]
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
    /// Stop after this step, keeping the schedule of --max-steps (continue with --resume)
    #[arg(long, help_heading = "Training")]
    pub stop_at: Option<u64>,
    /// Characters of sample text to print at the end; 0 for none
    #[arg(long, default_value_t = 400)]
    pub sample_chars: usize,
    /// No progress bar; one line per evaluation instead
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub encoder: crate::train_encoder::EncoderArgs,
}

/// `--norm` values (clap-friendly wrapper).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
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

/// Settings from `--config FILE`, if any.
fn config_file(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let obj = v.as_object().with_context(|| format!("{}: expected a JSON object", path.display()))?;
    for k in obj.keys() {
        if !["model", "train", "data", "tokenizer", "kind", "data_len", "data_hash"].contains(&k.as_str()) {
            bail!("{}: unknown section {k:?} (use \"model\", \"train\", \"data\", \"tokenizer\")", path.display());
        }
    }
    let model: GptConfig = match obj.get("model") {
        Some(m) => serde_json::from_value(m.clone()).with_context(|| format!("{}: in \"model\"", path.display()))?,
        None => GptConfig::default(),
    };
    let train: TrainConfig = match obj.get("train") {
        Some(t) => serde_json::from_value(t.clone()).with_context(|| format!("{}: in \"train\"", path.display()))?,
        None => TrainConfig::default(),
    };
    let data = obj.get("data").and_then(|d| d.as_str()).map(PathBuf::from);
    let tokenizer = obj.get("tokenizer").and_then(|d| d.as_str()).map(String::from);
    Ok((model, train, data, tokenizer))
}

/// Model, training, corpus and tokenizer settings.
type Settings = (GptConfig, TrainConfig, Option<PathBuf>, Option<String>);

impl TrainArgs {
    /// Defaults, then the config file, then the flags.
    fn settings(&self) -> Result<Settings> {
        let (mut m, mut t, mut data, mut tokenizer) = match &self.config {
            Some(p) => config_file(p)?,
            None => (GptConfig::default(), TrainConfig::default(), None, None),
        };
        macro_rules! set {
            ($dst:expr, $($field:ident),*) => { $( if let Some(v) = self.$field { $dst.$field = v.into(); } )* };
        }
        set!(
            m,
            n_layer,
            n_head,
            n_embd,
            block_size,
            mlp_ratio,
            activation,
            norm,
            norm_placement,
            positions,
            bias,
            dropout,
            tie_embeddings
        );
        set!(
            t,
            batch_size,
            grad_accum,
            max_steps,
            lr,
            min_lr,
            warmup_steps,
            grad_clip,
            eval_interval,
            eval_batches,
            seed
        );
        if let Some(v) = self.weight_decay {
            t.adamw.weight_decay = v;
        }
        if let Some(v) = self.beta1 {
            t.adamw.beta1 = v;
        }
        if let Some(v) = self.beta2 {
            t.adamw.beta2 = v;
        }
        if self.data.is_some() {
            data = self.data.clone();
        }
        if self.tokenizer.is_some() {
            tokenizer = self.tokenizer.clone();
        }
        Ok((m, t, data, tokenizer))
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
            grad_accum => "--grad-accum", lr => "--lr", min_lr => "--min-lr", warmup_steps => "--warmup-steps",
            weight_decay => "--weight-decay", grad_clip => "--grad-clip", beta1 => "--beta1", beta2 => "--beta2",
            seed => "--seed", config => "--config", data => "--data", tokenizer => "--tokenizer");
        v
    }
}

/// The corpus text and its description.
fn load_corpus(data: &Option<PathBuf>) -> Result<(String, String)> {
    Ok(match data {
        None => (SHAKESPEARE.to_string(), "bundled Shakespeare".to_string()),
        Some(p) => (read_corpus(p)?, p.display().to_string()),
    })
}

pub fn run(args: &TrainArgs) -> Result<()> {
    if args.encoder.model != crate::train_encoder::ModelKind::Gpt {
        return crate::train_encoder::run(args);
    }
    let (dir, mut trainer, mut state, tok) = match &args.resume {
        Some(dir) => resume(args, dir)?,
        None => start(args)?,
    };
    let cfg = trainer.config.clone();
    let stop = args.stop_at.unwrap_or(cfg.max_steps).min(cfg.max_steps);
    if trainer.step >= stop {
        eprintln!("{}: already at step {} of {stop}; nothing to do", dir.display(), trainer.step);
        return Ok(());
    }
    let n_params = trainer.model.num_params();
    eprintln!(
        "qkv train: GPT {} layers × {} heads × {} wide, context {}, {:.2} M parameters, vocabulary {} ({})",
        trainer.model.config.n_layer,
        trainer.model.config.n_head,
        trainer.model.config.n_embd,
        trainer.model.config.block_size,
        n_params as f64 / 1e6,
        trainer.model.config.vocab_size,
        tok.describe()
    );
    eprintln!(
        "  {} training tokens, {} validation tokens; {} tokens per step; {} threads; run directory {}",
        trainer.data.train.len(),
        trainer.data.val.len(),
        trainer.tokens_per_step(),
        qkv_tensor::num_threads(),
        dir.display()
    );

    let bar = progress_bar(args.quiet, trainer.step, stop);
    let run_started = Instant::now();
    let elapsed_before = state.elapsed_s; // time of earlier sessions of this run
    let steps_before = trainer.step;
    let mut last_val = state.val_loss;
    let mut window_start = Instant::now();
    let mut window_tokens = 0usize;
    let mut tokens_per_s = 0.0f32;
    while trainer.step < stop {
        let s = trainer.train_step()?;
        window_tokens += s.tokens;
        state.tokens_seen += s.tokens as u64;
        let dt = window_start.elapsed().as_secs_f32();
        if dt > 2.0 {
            tokens_per_s = window_tokens as f32 / dt;
            window_start = Instant::now();
            window_tokens = 0;
        } else if tokens_per_s == 0.0 && dt > 0.0 {
            tokens_per_s = window_tokens as f32 / dt;
        }
        let is_eval = trainer.step % cfg.eval_interval == 0 || trainer.step == stop;
        let val = if is_eval { Some(trainer.evaluate()?) } else { None };
        if val.is_some() {
            last_val = val;
        }
        let elapsed_s = elapsed_before + run_started.elapsed().as_secs_f64();
        run::append_metric(
            &dir,
            &Metric { step: trainer.step, train_loss: s.loss, val_loss: val, lr: s.lr, tokens_per_s, elapsed_s },
        )?;
        bar.set_position(trainer.step);
        bar.set_message(format!(
            "loss {:.4}{} | lr {:.1e} | {:.0} tok/s",
            s.loss,
            last_val.map_or(String::new(), |v| format!(" | val {v:.4}")),
            s.lr,
            tokens_per_s
        ));
        if let Some(v) = val {
            if bar.is_hidden() {
                eprintln!(
                    "step {:>6}/{stop}  train {:.4}  val {v:.4}  lr {:.1e}  {:.0} tok/s",
                    trainer.step, s.loss, s.lr, tokens_per_s
                );
            }
            state.step = trainer.step;
            state.rng = trainer.rng.state();
            state.elapsed_s = elapsed_s;
            state.val_loss = Some(v);
            run::save_checkpoint(&dir, &trainer, &state)?;
            let metrics = run::read_metrics(&dir)?;
            qkv::viz::loss_curve::write_svg(&dir.join(run::CURVE), &metrics, "qkv train: loss")?;
            // tokens/s counts training only, not the evaluation just done
            window_start = Instant::now();
            window_tokens = 0;
        }
    }
    bar.finish_and_clear();
    let steps = trainer.step - steps_before;
    let secs = run_started.elapsed().as_secs_f64();
    let val = last_val.unwrap_or(f32::NAN);
    // bits per character of the validation text that was scored, so that runs
    // with different tokenizers compare
    let scored =
        eval_targets(trainer.data.val.len(), cfg.batch_size, trainer.model.config.block_size, cfg.eval_batches);
    let chars = tok.count_chars(&trainer.data.val.window(scored.clone()))?;
    eprintln!(
        "done: step {} in {:.0} s ({:.0} tokens/s); validation loss {val:.4} nats/token, perplexity {:.2}, {:.3} bits/char",
        trainer.step,
        secs,
        (steps as f64 * trainer.tokens_per_step() as f64) / secs.max(1e-9),
        val.exp(),
        bits_per_char(val as f64, scored.len(), chars),
    );
    eprintln!("run directory: {}  (loss curve: {})", dir.display(), dir.join(run::CURVE).display());
    if args.sample_chars > 0 {
        let prompt = tok.encode("\n").or_else(|_| tok.encode(" ")).unwrap_or_else(|_| vec![0]);
        let sampling = Sampling { temperature: 0.8, top_k: Some(40), seed: cfg.seed, ..Default::default() };
        let ids = generate(&trainer.model, &prompt, args.sample_chars, &sampling, |_| Ok(true))?;
        eprintln!("sample (temperature 0.8, top-k 40):\n---");
        println!("{}", tok.decode(&ids)?);
        eprintln!("---\ngenerate more: qkv generate --model {} --prompt \"ROMEO:\"", dir.display());
    }
    Ok(())
}

/// The corpus as token ids: encoded in memory by the character tokenizer (as
/// fast as reading a cache), otherwise from the token cache — tokenized once,
/// in parallel, then memory-mapped — in the cache directory or, if that
/// cannot be written, in the run directory.
fn corpus_tokens(tok: &Tokenizer, text: &str, source: &str, run_dir: &Path) -> Result<Tokens> {
    if tok.as_char().is_some() {
        return Ok(tok.encode(text).with_context(|| format!("corpus: {source}"))?.into());
    }
    let started = Instant::now();
    let dirs: Vec<PathBuf> = token_cache::default_dir().into_iter().chain([run_dir.to_path_buf()]).collect();
    let cached = token_cache::load_or_build(&dirs, text, tok).with_context(|| format!("tokenizing {source}"))?;
    for w in &cached.warnings {
        eprintln!("warning: cannot write the token cache: {w}");
    }
    let where_ =
        cached.path.as_ref().map_or_else(|| "kept in memory".to_string(), |p| format!("cache {}", p.display()));
    if cached.reused {
        eprintln!("tokens of {source}: {} ({where_})", cached.tokens.len());
    } else {
        eprintln!(
            "tokenized {source}: {} chars → {} tokens in {:.1} s ({where_})",
            text.chars().count(),
            cached.tokens.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(cached.tokens)
}

/// A run ready to train, and its tokenizer.
type Start = (PathBuf, Trainer, TrainState, Tokenizer);

fn start(args: &TrainArgs) -> Result<Start> {
    let (mut mcfg, tcfg, data, spec) = args.settings()?;
    let (text, source) = load_corpus(&data)?;
    let tok: Tokenizer = match &spec {
        None => CharTokenizer::from_text(&text).into(),
        Some(s) => Tokenizer::load(s).context("--tokenizer")?,
    };
    mcfg.vocab_size = tok.vocab_size();
    mcfg.validate()?;
    tcfg.validate()?;
    let ids = corpus_tokens(&tok, &text, &source, &args.out_dir)?;
    let split = Split::new(ids, 0.1);
    split.check(mcfg.block_size).with_context(|| format!("corpus: {source}"))?;
    let dir = args.out_dir.clone();
    run::prepare_new(&dir, args.force)?;
    let config = RunConfig {
        kind: "gpt".into(),
        model: mcfg.clone(),
        train: tcfg.clone(),
        data: data.clone(),
        data_len: text.len() as u64,
        data_hash: run::fnv1a(text.as_bytes()),
        tokenizer: spec.clone(),
    };
    run::write_config(&dir, &config)?;
    run::write_tokenizer(&dir, &tok)?;
    let model = Gpt::new(mcfg, tcfg.seed)?;
    let trainer = Trainer::new(model, tcfg, split)?;
    let state = TrainState { step: 0, rng: trainer.rng.state(), tokens_seen: 0, elapsed_s: 0.0, val_loss: None };
    Ok((dir, trainer, state, tok))
}

fn resume(args: &TrainArgs, dir: &Path) -> Result<Start> {
    let changed = args.changed_on_resume();
    if !changed.is_empty() {
        bail!(
            "--resume continues a run with its own settings; these flags would change it: {} \
             (start a new run with --out-dir instead)",
            changed.join(", ")
        );
    }
    let mut config = run::read_config(dir)?;
    if let Some(m) = args.max_steps {
        config.train.max_steps = m;
    }
    if let Some(e) = args.eval_interval {
        config.train.eval_interval = e;
    }
    let (text, source) = load_corpus(&config.data)?;
    if run::fnv1a(text.as_bytes()) != config.data_hash || text.len() as u64 != config.data_len {
        bail!("the corpus {source} changed since this run started; resuming would train on different data");
    }
    let tok = run::read_tokenizer(dir)?;
    let split = Split::new(corpus_tokens(&tok, &text, &source, dir)?, 0.1);
    let model = Gpt::new(config.model.clone(), config.train.seed)?;
    let mut trainer = Trainer::new(model, config.train.clone(), split)?;
    let state = run::restore(dir, &mut trainer)?;
    run::truncate_metrics(dir, state.step)?;
    run::write_config(dir, &config)?;
    eprintln!("resuming {} at step {}", dir.display(), state.step);
    Ok((dir.to_path_buf(), trainer, state, tok))
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
