//! Transformers against recurrent networks and Mamba, measured side by side: each
//! model trains on the same text for the same wall-clock budget at about the
//! same number of parameters, then its generation is timed against the
//! length of the context and its memory per sequence counted.
//!
//! What the comparison shows: attention trains over all positions of a
//! window at once, while a recurrent network walks them in order; but a
//! generated token costs a recurrent network the same at any context
//! (its state has a fixed size), while attention's cost and its KV cache
//! grow with the context — and without a cache, every token recomputes the
//! whole context.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use qkv_tensor::no_grad;

use crate::error::{Error, Result};
use crate::generate::{Sampling, generate, generate_mamba, generate_recurrent};
use crate::models::gpt::{Gpt, GptConfig};
use crate::models::load::{Model, open};
use crate::models::mamba::{Mamba, MambaConfig};
use crate::models::recurrent::{RecurrentConfig, RecurrentLm};
use crate::nn::rnn::RnnKind;
use crate::nn::{Dropout, Module};
use crate::train::checkpoint::read_metrics;
use crate::train::next_token::{MambaLmSpec, NextTokenSpec};
use crate::train::recurrent_lm::RecurrentLmSpec;
use crate::train::run::{Control, Event};
use crate::train::setup::{RunSpec, TaskSpec, start};
use crate::train::{TaskKind, TrainConfig};

/// A model the comparison can train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Contender {
    Gpt,
    Rnn,
    Lstm,
    Gru,
    Mamba,
}

impl Contender {
    /// From a `--models` entry.
    pub fn parse(name: &str) -> Result<Contender> {
        Ok(match name.trim().to_lowercase().as_str() {
            "gpt" => Contender::Gpt,
            "rnn" => Contender::Rnn,
            "lstm" => Contender::Lstm,
            "gru" => Contender::Gru,
            "mamba" => Contender::Mamba,
            other => {
                return Err(Error::Config(format!("unknown model {other:?}: choose from gpt, rnn, lstm, gru, mamba")));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Contender::Gpt => "gpt",
            Contender::Rnn => "rnn",
            Contender::Lstm => "lstm",
            Contender::Gru => "gru",
            Contender::Mamba => "mamba",
        }
    }

    fn recurrent(self) -> Option<RnnKind> {
        match self {
            Contender::Gpt | Contender::Mamba => None,
            Contender::Rnn => Some(RnnKind::Rnn),
            Contender::Lstm => Some(RnnKind::Lstm),
            Contender::Gru => Some(RnnKind::Gru),
        }
    }
}

/// What to compare, and how.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub models: Vec<Contender>,
    /// The text; `None` for the bundled Shakespeare.
    pub data: Option<PathBuf>,
    /// Training time of each model, in seconds.
    pub budget_s: f64,
    pub out_dir: PathBuf,
    /// Context lengths at which generation is timed. Default 1, 16, 64, 256, 1024, 4096.
    pub contexts: Vec<usize>,
    pub seed: u64,
}

/// One model's results.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub model: Contender,
    pub parameters: usize,
    pub describe: String,
    pub steps: u64,
    pub train_seconds: f64,
    pub tokens_per_s: f64,
    /// `(seconds of training, validation bits per character)` at each evaluation.
    pub curve: Vec<(f64, f64)>,
    pub final_bits_per_char: f64,
    /// `(context, seconds per generated token)`: with the KV cache for the GPT.
    pub per_token: Vec<(usize, f64)>,
    /// `(context, seconds per generated token)` recomputing the whole context (GPT only).
    pub per_token_uncached: Vec<(usize, f64)>,
    /// `(context, bytes)` a sequence keeps between tokens: KV cache or state.
    pub memory: Vec<(usize, usize)>,
    pub sample: String,
}

/// The number of parameters the GPT has by default: the size every model is matched to.
fn gpt_params() -> Result<usize> {
    Ok(Gpt::new(GptConfig::default(), 0)?.num_params())
}

/// The recurrent network of `kind` with the default shape, its state size
/// chosen (a multiple of 16) to come closest to `target` parameters.
fn recurrent_config(kind: RnnKind, vocab: usize, target: usize) -> Result<RecurrentConfig> {
    let base = RecurrentConfig { kind, vocab_size: vocab, ..RecurrentConfig::default() };
    let mut best = (usize::MAX, base.hidden);
    for hidden in (16..=2048).step_by(16) {
        let p = RecurrentConfig { hidden, ..base.clone() }
            .num_params()
            .ok_or_else(|| Error::Config(format!("a state of {hidden} overflows the parameter count")))?;
        best = best.min((p.abs_diff(target), hidden));
        if p > target {
            break;
        }
    }
    Ok(RecurrentConfig { hidden: best.1, ..base })
}

/// The default Mamba with the number of blocks that comes closest to `target` parameters.
fn mamba_config(vocab: usize, target: usize) -> Result<MambaConfig> {
    let base = MambaConfig { vocab_size: vocab, ..MambaConfig::default() };
    let count = |layers: usize| MambaConfig { num_hidden_layers: layers, ..base.clone() }.num_params();
    let layers = (1..=64)
        .filter_map(|l| Some((count(l)?.abs_diff(target), l)))
        .min()
        .ok_or_else(|| Error::Config("no Mamba of the default width can be counted".into()))?
        .1;
    Ok(MambaConfig { num_hidden_layers: layers, ..base })
}

/// The run description of one contender, `max_steps` long.
fn spec(
    c: Contender,
    data: &Option<PathBuf>,
    target: usize,
    vocab: usize,
    seed: u64,
    max_steps: u64,
) -> Result<RunSpec> {
    let kind = match c {
        Contender::Gpt => TaskKind::NextToken,
        Contender::Mamba => TaskKind::MambaLm,
        _ => TaskKind::RecurrentLm,
    };
    let gpt_batch = TrainConfig::for_task(TaskKind::NextToken, false).batch_size;
    let mut train = TrainConfig { seed, max_steps, ..TrainConfig::for_task(kind, false) };
    train.warmup_steps = train.warmup_steps.min(max_steps / 10);
    train.eval_interval = Some((max_steps / 12).max(1));
    // both score the same held-out windows: as many windows per evaluation
    train.eval_batches = (train.eval_batches * gpt_batch).div_ceil(train.batch_size);
    let task = match c.recurrent() {
        None if c == Contender::Mamba => TaskSpec::MambaLm(MambaLmSpec {
            model: mamba_config(vocab, target)?,
            data: data.clone(),
            ..MambaLmSpec::default()
        }),
        None => TaskSpec::NextToken(NextTokenSpec { data: data.clone(), ..NextTokenSpec::default() }),
        Some(k) => TaskSpec::RecurrentLm(RecurrentLmSpec {
            model: recurrent_config(k, vocab, target)?,
            data: data.clone(),
            tokenizer: None,
        }),
    };
    Ok(RunSpec { task, train, data_fingerprint: String::new() })
}

/// Median seconds of `f` over `reps` calls after a warm-up call.
fn timed(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `(context, seconds per generated token)` at each context timed.
type Timings = Vec<(usize, f64)>;

/// Seconds per generated token after `context` tokens, for a GPT of the
/// trained shape whose positions reach the longest context (the cost does
/// not depend on the weights' values): with its KV cache, and recomputing
/// the whole context for each token.
fn gpt_per_token(config: &GptConfig, contexts: &[usize]) -> Result<(Timings, Timings)> {
    let longest = contexts.iter().copied().max().unwrap_or(1);
    let model = Gpt::new(GptConfig { block_size: longest + 1, ..config.clone() }, 0)?;
    let (mut cached, mut uncached) = (Vec::new(), Vec::new());
    no_grad(|| -> Result<()> {
        for &c in contexts {
            let ids: Vec<u32> = (0..c).map(|i| (i % config.vocab_size) as u32).collect();
            let mut caches = model.new_caches(1);
            // the context is in the cache; each timed call adds one token and forgets it
            model.next_logits(&ids, 1, c, &mut caches)?;
            let s = timed(5, || {
                model.next_logits(&[1], 1, 1, &mut caches)?;
                caches.iter_mut().for_each(|k| k.truncate(c));
                Ok(())
            })?;
            cached.push((c, s));
            let full: Vec<u32> = (0..=c).map(|i| (i % config.vocab_size) as u32).collect();
            let s = timed(if c > 1024 { 1 } else { 3 }, || {
                model.forward(&full, 1, c + 1, &Dropout::default())?;
                Ok(())
            })?;
            uncached.push((c, s));
        }
        Ok(())
    })?;
    Ok((cached, uncached))
}

/// Seconds per generated token after `context` tokens for a recurrent network: one step from its state.
fn recurrent_per_token(model: &RecurrentLm, contexts: &[usize]) -> Result<Timings> {
    no_grad(|| {
        contexts
            .iter()
            .map(|&c| {
                let ids: Vec<u32> = (0..c).map(|i| (i % model.config.vocab_size) as u32).collect();
                let (_, state) = model.forward(&ids, 1, c, &model.zero_state(1), &Dropout::default())?;
                let s = timed(5, || {
                    model.forward(&[1], 1, 1, &state, &Dropout::default())?;
                    Ok(())
                })?;
                Ok((c, s))
            })
            .collect()
    })
}

/// Seconds per generated token after `context` tokens for a Mamba: the
/// context goes through its recurrent step, then one more step is timed.
fn mamba_per_token(model: &Mamba, contexts: &[usize]) -> Result<Timings> {
    no_grad(|| {
        let v = model.config.vocab_size;
        contexts
            .iter()
            .map(|&c| {
                let mut states = model.zero_state(1);
                for i in 0..c {
                    model.step(&[(i % v) as u32], &mut states)?;
                }
                let s = timed(5, || {
                    // a copy of the state, so every timed step starts after the same context
                    let mut st = states.clone();
                    model.step(&[1], &mut st)?;
                    Ok(())
                })?;
                Ok((c, s))
            })
            .collect()
    })
}

/// Train, time and measure every model; write `report.md`, `report.json`
/// and the charts into `out_dir`. `on` hears progress lines.
pub fn compare(opts: &CompareOptions, on: &mut dyn FnMut(&str)) -> Result<Vec<Entry>> {
    if opts.models.is_empty() {
        return Err(Error::Config("no models to compare".into()));
    }
    if !(opts.budget_s >= 1.0) {
        return Err(Error::Config(format!("a budget of {} s is too short to train anything", opts.budget_s)));
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let target = gpt_params()?;
    let (text, _) = crate::data::text::load_corpus(opts.data.as_deref())?;
    let vocab = crate::tokenize::CharTokenizer::from_text(&text).vocab_size();
    let mut entries = Vec::new();
    for &c in &opts.models {
        let dir = opts.out_dir.join(c.name());
        // a few steps to learn the step time, so the schedule fits the budget
        let probe = spec(c, &opts.data, target, vocab, opts.seed, 1_000_000)?;
        let mut run = start(probe, &opts.out_dir.join(format!(".probe-{}", c.name())), true)?;
        // bare optimizer steps (a run would also evaluate at its last step);
        // the first ones fill the buffer pool and the caches: timed after them
        for _ in 0..2 {
            run.trainer.train_step()?;
        }
        let t0 = Instant::now();
        for _ in 0..3 {
            run.trainer.train_step()?;
        }
        let per_step = t0.elapsed().as_secs_f64() / 3.0;
        std::fs::remove_dir_all(&run.dir).map_err(|e| Error::io(&run.dir, e))?;
        // twelve evaluations take some of the budget: leave them a fifth
        let steps = ((opts.budget_s * 0.8 / per_step) as u64).max(2);
        on(&format!("{}: about {:.2} s per step, training {steps} steps", c.name(), per_step));
        let mut run = start(spec(c, &opts.data, target, vocab, opts.seed, steps)?, &dir, true)?;
        let control = Control::default();
        let began = Instant::now();
        run.train(steps, &control, &mut |e| {
            if let Event::Step { .. } = e
                && began.elapsed().as_secs_f64() > opts.budget_s
            {
                control.request_stop();
            }
        })?;
        let (metrics, _) = read_metrics(&dir)?;
        let last = metrics.last().ok_or_else(|| Error::Data(format!("{}: the run took no step", c.name())))?;
        let ln2 = std::f64::consts::LN_2;
        // one token per character: nats per token / ln 2 = bits per character
        let curve: Vec<(f64, f64)> =
            metrics.iter().filter_map(|m| m.val_loss.map(|v| (m.elapsed_s, v as f64 / ln2))).collect();
        let final_bpc = curve.last().map_or(f64::NAN, |p| p.1);
        let tokens_per_s = metrics.iter().map(|m| m.tokens_per_s as f64).sum::<f64>() / metrics.len() as f64;
        on(&format!("{}: {} steps, validation {final_bpc:.3} bits/char; timing generation", c.name(), last.step));
        let sampling = Sampling { temperature: 0.8, top_k: Some(40), seed: opts.seed, ..Sampling::default() };
        let (entry_model, per_token, per_token_uncached, memory, sample, params, describe) = match open(&dir)? {
            Model::Gpt { model, tokenizer, .. } => {
                let (cached, uncached) = gpt_per_token(&model.config, &opts.contexts)?;
                let cfg = &model.config;
                let memory = opts.contexts.iter().map(|&n| (n, 2 * cfg.n_layer * n * cfg.n_embd * 4)).collect();
                let ids = generate(&model, &tokenizer.encode("\n")?, 300, &sampling, |_| Ok(true))?;
                let describe = format!(
                    "GPT {} layers × {} heads × {} wide, context {}",
                    cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size
                );
                (c, cached, uncached, memory, tokenizer.decode(&ids)?, model.num_params(), describe)
            }
            Model::Recurrent { model, tokenizer } => {
                let per = recurrent_per_token(&model, &opts.contexts)?;
                let bytes = model.zero_state(1).floats() * 4;
                let memory = opts.contexts.iter().map(|&n| (n, bytes)).collect();
                let ids = generate_recurrent(&model, &tokenizer.encode("\n")?, 300, &sampling, |_| Ok(true))?;
                (c, per, Vec::new(), memory, tokenizer.decode(&ids)?, model.num_params(), model.describe())
            }
            Model::Mamba { model, tokenizer: Some(tokenizer), .. } => {
                let per = mamba_per_token(&model, &opts.contexts)?;
                let bytes = model.state_floats() * 4;
                let memory = opts.contexts.iter().map(|&n| (n, bytes)).collect();
                let ids = generate_mamba(&model, &tokenizer.encode("\n")?, 300, &sampling, |_| Ok(true))?;
                (c, per, Vec::new(), memory, tokenizer.decode(&ids)?, model.num_params(), model.describe())
            }
            other => return Err(Error::Config(format!("{}: unexpected {}", dir.display(), other.describe()))),
        };
        entries.push(Entry {
            model: entry_model,
            parameters: params,
            describe,
            steps: last.step,
            train_seconds: last.elapsed_s,
            tokens_per_s,
            curve,
            final_bits_per_char: final_bpc,
            per_token,
            per_token_uncached,
            memory,
            sample,
        });
    }
    write_report(&opts.out_dir, &entries, opts)?;
    Ok(entries)
}

/// `report.md`, `report.json` and the three charts.
fn write_report(dir: &Path, entries: &[Entry], opts: &CompareOptions) -> Result<()> {
    use crate::viz::lines::{Axis, Series, write_svg};
    let series = |f: &dyn Fn(&Entry) -> Vec<(f64, f64)>| -> Vec<Series> {
        entries.iter().map(|e| Series { name: e.model.name().to_string(), points: f(e), dashed: false }).collect()
    };
    write_svg(
        &dir.join("bits_per_char.svg"),
        "Validation bits per character against training time",
        Axis { label: "seconds of training", log: false },
        Axis { label: "bits per character", log: false },
        &series(&|e| e.curve.clone()),
    )?;
    let mut per_token = series(&|e| e.per_token.iter().map(|&(c, s)| (c as f64, s * 1e3)).collect());
    for e in entries.iter().filter(|e| !e.per_token_uncached.is_empty()) {
        per_token.push(Series {
            name: format!("{} without KV cache", e.model.name()),
            points: e.per_token_uncached.iter().map(|&(c, s)| (c as f64, s * 1e3)).collect(),
            dashed: true,
        });
    }
    write_svg(
        &dir.join("time_per_token.svg"),
        "Time per generated token against context length",
        Axis { label: "context (tokens)", log: true },
        Axis { label: "milliseconds per token", log: true },
        &per_token,
    )?;
    write_svg(
        &dir.join("memory_per_sequence.svg"),
        "Memory a sequence keeps between tokens (KV cache or state)",
        Axis { label: "context (tokens)", log: true },
        Axis { label: "kilobytes", log: true },
        &series(&|e| e.memory.iter().map(|&(c, b)| (c as f64, b as f64 / 1024.0)).collect()),
    )?;
    let json = serde_json::to_vec_pretty(&serde_json::json!({ "budget_s": opts.budget_s, "models": entries }))
        .map_err(|e| Error::Data(format!("the report: {e}")))?;
    crate::io::atomic::write_atomic(&dir.join("report.json"), &json)?;
    crate::io::atomic::write_atomic(&dir.join("report.md"), markdown(entries, opts).as_bytes())
}

fn markdown(entries: &[Entry], opts: &CompareOptions) -> String {
    let at = |v: &[(usize, f64)], c: usize| {
        v.iter().find(|p| p.0 == c).map_or("–".to_string(), |p| format!("{:.2}", p.1 * 1e3))
    };
    let (first, last) = (opts.contexts.first().copied().unwrap_or(1), opts.contexts.last().copied().unwrap_or(1));
    let mut s = format!(
        "# Transformer against recurrent networks and Mamba\n\n{} s of training each on {}, on {} threads.\n\n\
         | model | parameters | steps | training tokens/s | validation bits/char | ms/token at {first} | ms/token at {last} | memory/sequence at {last} |\n\
         |---|---|---|---|---|---|---|---|\n",
        opts.budget_s,
        opts.data.as_ref().map_or("the bundled Shakespeare".to_string(), |p| p.display().to_string()),
        qkv_tensor::num_threads()
    );
    for e in entries {
        let mem = e.memory.last().map_or(0, |m| m.1);
        s += &format!(
            "| {} ({}) | {:.2} M | {} | {:.0} | {:.3} | {} | {} | {:.1} KB |\n",
            e.model.name(),
            e.describe,
            e.parameters as f64 / 1e6,
            e.steps,
            e.tokens_per_s,
            e.final_bits_per_char,
            at(&e.per_token, first),
            at(&e.per_token, last),
            mem as f64 / 1024.0
        );
    }
    s += "\nThe GPT's time per token is with its KV cache; without one it recomputes the whole context \
          (dashed in the chart). Its timings use a GPT of the trained shape whose positions reach the longest \
          context.\n\n![bits per character](bits_per_char.svg)\n\n![time per token](time_per_token.svg)\n\n\
          ![memory per sequence](memory_per_sequence.svg)\n\n## Samples (temperature 0.8, top-k 40)\n";
    for e in entries {
        s += &format!("\n### {}\n\n```text\n{}\n```\n", e.model.name(), e.sample.trim());
    }
    s
}

/// `"10m"`, `"90s"`, `"1h"` or plain seconds → seconds.
pub fn parse_budget(text: &str) -> Result<f64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(Error::Config(format!("budget {text:?}: use seconds (90s), minutes (10m) or hours (1h)"))),
    };
    let n: f64 =
        num.trim().parse().map_err(|_| Error::Config(format!("budget {text:?} is not a number of s, m or h")))?;
    if !(n > 0.0 && n * scale <= 7.0 * 86400.0) {
        return Err(Error::Config(format!("budget {text:?} must be positive and at most a week")));
    }
    Ok(n * scale)
}

/// What `report.json` holds, read back (for tests and tools).
pub fn read_report(dir: &Path) -> Result<Value> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_in_seconds_minutes_and_hours() {
        assert_eq!(parse_budget("90s").unwrap(), 90.0);
        assert_eq!(parse_budget("10m").unwrap(), 600.0);
        assert_eq!(parse_budget("1.5h").unwrap(), 5400.0);
        assert_eq!(parse_budget("45").unwrap(), 45.0);
        for bad in ["", "m", "-3m", "10 parsecs", "0s", "9999h"] {
            assert!(parse_budget(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recurrent_sizes_come_close_to_the_gpt() {
        let target = gpt_params().unwrap();
        let m = mamba_config(65, target).unwrap();
        let p = m.num_params().unwrap();
        assert!((p as f64 / target as f64 - 1.0).abs() < 0.1, "mamba: {p} against {target}");
        for kind in [RnnKind::Rnn, RnnKind::Lstm, RnnKind::Gru] {
            let c = recurrent_config(kind, 65, target).unwrap();
            let p = RecurrentLm::new(c.clone(), 0).unwrap().num_params();
            // within one step of 16 in the state size
            assert!(
                (p as f64 / target as f64 - 1.0).abs() < 0.1,
                "{kind:?}: {p} against {target} (hidden {})",
                c.hidden
            );
        }
    }
}
