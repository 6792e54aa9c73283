//! `qkv bench <suite>`: speed, measured the same way as the PyTorch twins in
//! `bench/peers/`. Each case prints one JSON line; `bench/compare.sh` runs
//! both side by side and reports the ratios.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use qkv::data::text::Split;
use qkv::models::gpt::{Gpt, GptConfig};
use qkv::models::inference::InferenceWeights;
use qkv::models::mamba::{Mamba, MambaConfig};
use qkv::models::recurrent::{RecurrentConfig, RecurrentLm};
use qkv::models::seq2seq::{Seq2Seq, Seq2SeqConfig, Side};
use qkv::nn::Dropout;
use qkv::nn::Module;
use qkv::nn::mlp::Activation;
use qkv::tokenize::CharTokenizer;
use qkv::train::TrainConfig;
use qkv::train::next_token::NextToken;
use qkv::train::optimizer::Optimizer;
use qkv::train::run::Trainer;
use qkv::translate::Decoding;
use qkv_tensor::kernels::gemm::{Mat, MatMut, Threads, matmul};
use qkv_tensor::{AttentionOpts, Param, Rng, Tensor, no_grad};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// f32 matrix product, M = N = K ∈ {1024, 2048}: GFLOP/s.
    Gemm,
    /// One causal attention call, B=1 H=8 D=64, T from 512 to 16384:
    /// forward and forward+backward times and peak extra memory.
    Attention,
    /// GPT training step: 4 layers, 4 heads, C=256, T=128, B=16, vocab 65: tokens/s.
    TrainSmall,
    /// GPT training step: 6 layers, 6 heads, C=384, T=256, B=8, vocab 65: tokens/s.
    TrainMid,
    /// BERT forward, batch 8 × 128 tokens, at all-MiniLM-L6-v2 shapes and at
    /// BERT-base shapes: sequences/s.
    Encoder,
    /// GPT-2 124M generation (random weights), B=1, 32-token prompt, 128 new
    /// tokens, greedy, KV cache: new tokens/s and the fraction of the
    /// memory-bandwidth bound.
    InferGpt2,
    /// Encoder–decoder training step: 3+3 layers, C=256, 4 heads, F=1024,
    /// vocabulary 8000, source and target 64 tokens, B=32, post-norm,
    /// sinusoidal, dropout 0.1, label smoothing 0.1, AdamW: target tokens/s.
    TrainSeq2seq,
    /// Translation with the same shapes (random weights): 32 sources of 32
    /// tokens, 48 new tokens each, greedy and beam 4: sentences/s.
    Translate,
    /// LSTM language-model training step: embedding 512, 2 LSTM layers of
    /// 512, vocab 65, T=128, B=32, the state carried from step to step
    /// (truncated back-propagation through time), AdamW: tokens/s.
    TrainLstm,
    /// Mamba language-model training step: 2 blocks, C=256, E=512, N=16,
    /// K=4, vocab 65, T=128, B=16, AdamW: tokens/s (the twin: the same block
    /// in PyTorch, whose selective scan on a CPU is a loop over time).
    TrainMamba,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Fwd,
    FwdBwd,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which suite to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Run one case only: a size for gemm (e.g. 2048) and attention (e.g. 4096), a
    /// name for encoder (minilm, base, real); default: every case of the suite.
    #[arg(long)]
    pub case: Option<String>,
    /// Attention only: run one mode in this process (memory is measured per process).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Timed repetitions per case (median reported); default depends on the suite.
    #[arg(long)]
    pub reps: Option<usize>,
    /// Encoder only: also time this BERT directory's real weights (e.g. all-MiniLM-L6-v2).
    #[arg(long, value_name = "DIR")]
    pub model: Option<std::path::PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match args.suite {
        Suite::Gemm => gemm(args),
        Suite::Attention => attention(args),
        Suite::TrainSmall => train("train-small", 4, 4, 256, 128, 16, args),
        Suite::TrainMid => train("train-mid", 6, 6, 384, 256, 8, args),
        Suite::Encoder => encoder(args),
        Suite::InferGpt2 => infer_gpt2(args),
        Suite::TrainSeq2seq => train_seq2seq(args),
        Suite::Translate => translate(args),
        Suite::TrainLstm => train_lstm(args),
        Suite::TrainMamba => train_mamba(args),
    }
}

fn emit(v: Value) {
    println!("{v}");
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { 0.5 * (xs[n / 2 - 1] + xs[n / 2]) }
}

/// Median seconds of `reps` runs of `f` after one warm-up run.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// `--case` as a size, for the suites whose cases are sizes.
fn size_case(args: &BenchArgs) -> Result<Option<usize>> {
    args.case
        .as_deref()
        .map(|c| c.parse().with_context(|| format!("--case {c:?}: this suite's cases are sizes, e.g. --case 2048")))
        .transpose()
}

fn gemm(args: &BenchArgs) -> Result<()> {
    let sizes = match size_case(args)? {
        Some(n) => vec![n],
        None => vec![1024, 2048],
    };
    for n in sizes {
        let mut rng = Rng::new(0);
        let a: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
        let mut c = vec![0.0f32; n * n];
        let reps = args.reps.unwrap_or(if n <= 1024 { 20 } else { 6 });
        let secs = time(reps, || {
            matmul(MatMut::rows(&mut c, n, n), Mat::rows(&a, n, n), Mat::rows(&b, n, n), 1.0, false, Threads::All);
            Ok(())
        })?;
        emit(json!({
            "suite": "gemm", "case": n.to_string(), "impl": "qkv",
            "threads": qkv_tensor::num_threads(),
            "gflops": 2.0 * (n as f64).powi(3) / secs / 1e9,
            "ms": secs * 1e3,
        }));
    }
    Ok(())
}

const ATTN_SIZES: [usize; 6] = [512, 1024, 2048, 4096, 8192, 16384];

/// Resident and peak resident memory of this process, in bytes (Linux).
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Start a new peak: the kernel resets VmHWM to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn attention(args: &BenchArgs) -> Result<()> {
    let case = size_case(args)?;
    let (Some(t), Some(mode)) = (case, args.mode) else {
        // Each (T, mode) in its own process, so peak memory is its own.
        let exe = std::env::current_exe().context("cannot find the qkv executable to re-run")?;
        let sizes = case.map_or(ATTN_SIZES.to_vec(), |t| vec![t]);
        for t in sizes {
            let mut line = json!({"suite": "attention", "case": t.to_string(), "impl": "qkv"});
            for name in ["fwd", "fwd-bwd"] {
                let mut cmd = Command::new(&exe);
                cmd.args(["--threads", &qkv_tensor::num_threads().to_string(), "bench", "attention"]);
                cmd.args(["--case", &t.to_string(), "--mode", name]);
                if let Some(r) = args.reps {
                    cmd.args(["--reps", &r.to_string()]);
                }
                let out = cmd.output().context("running an attention case")?;
                if !out.status.success() {
                    bail!("attention case T={t} {name} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                let v: Value = serde_json::from_slice(&out.stdout).context("reading a case's JSON")?;
                for (k, val) in v.as_object().into_iter().flatten() {
                    line[k] = val.clone();
                }
            }
            emit(line);
        }
        return Ok(());
    };
    let (b, h, d) = (1, 8, 64);
    let mut rng = Rng::new(0);
    let q = Tensor::randn(&[b, h, t, d], 1.0, &mut rng);
    let k = Tensor::randn(&[b, h, t, d], 1.0, &mut rng);
    let v = Tensor::randn(&[b, h, t, d], 1.0, &mut rng);
    let dout = Tensor::randn(&[b, h, t, d], 1.0, &mut rng);
    let opts = AttentionOpts::causal();
    let reps = args.reps.unwrap_or(if t <= 2048 {
        10
    } else if t <= 4096 {
        5
    } else {
        2
    });
    // One untimed call first, so thread stacks and allocator arenas exist.
    no_grad(|| qkv_tensor::attention(&q, &k, &v, &opts))?;
    reset_peak();
    let (base, _) = rss().unwrap_or((0, 0));
    let threads = qkv_tensor::num_threads();
    let secs = match mode {
        Mode::Fwd => time(reps, || {
            no_grad(|| qkv_tensor::attention(&q, &k, &v, &opts))?;
            Ok(())
        })?,
        Mode::FwdBwd => {
            let (pq, pk, pv) = (Param::new(q.clone()), Param::new(k.clone()), Param::new(v.clone()));
            time(reps, || {
                let o = qkv_tensor::attention(&pq.value(), &pk.value(), &pv.value(), &opts)?;
                o.backward_with(&dout)?;
                for p in [&pq, &pk, &pv] {
                    p.zero_grad();
                }
                Ok(())
            })?
        }
    };
    let peak_mib = rss().map(|(_, hwm)| hwm.saturating_sub(base) as f64 / (1 << 20) as f64);
    // useful work: causal halves QKᵀ and PV (2 matmuls fwd, 5 in backward)
    let flops_fwd = 2.0 * 2.0 * (b * h) as f64 * (t as f64) * (t as f64) * d as f64 / 2.0;
    let (key_ms, key_mem, flops) = match mode {
        Mode::Fwd => ("ms_fwd", "peak_mib_fwd", flops_fwd),
        Mode::FwdBwd => ("ms_fwd_bwd", "peak_mib_fwd_bwd", flops_fwd * 3.5),
    };
    let mut line = json!({"suite": "attention", "case": t.to_string(), "impl": "qkv", "threads": threads});
    line[key_ms] = json!(secs * 1e3);
    line[key_mem] = json!(peak_mib);
    line[format!("gflops_{}", if mode == Mode::Fwd { "fwd" } else { "fwd_bwd" })] = json!(flops / secs / 1e9);
    emit(line);
    Ok(())
}

/// GFLOP/s of a 1024³ product right now: the roofline that model FLOPs
/// utilisation is measured against.
fn gemm_roofline() -> f64 {
    let n = 1024;
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let secs = time(5, || {
        matmul(MatMut::rows(&mut c, n, n), Mat::rows(&a, n, n), Mat::rows(&b, n, n), 1.0, false, Threads::All);
        Ok(())
    })
    .expect("infallible");
    2.0 * (n as f64).powi(3) / secs / 1e9
}

/// A GPT training step as `qkv train` runs it (forward, backward, clipping,
/// AdamW) on random tokens: exact GELU, pre-LayerNorm, learned positions,
/// tied head, no biases, no dropout, lr 1e-3. 3 warm-up steps, then the median
/// of 20 timed steps.
fn train(
    suite: &str,
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    t: usize,
    b: usize,
    args: &BenchArgs,
) -> Result<()> {
    let vocab = 65;
    let config = GptConfig {
        vocab_size: vocab,
        block_size: t,
        n_layer,
        n_head,
        n_embd,
        activation: Activation::Gelu,
        bias: false,
        dropout: 0.0,
        tie_embeddings: true,
        ..GptConfig::default()
    };
    let model = Gpt::new(config, 0)?;
    let mut rng = Rng::new(1);
    let tokens: Vec<u32> = (0..200_000).map(|_| rng.below(vocab as u64) as u32).collect();
    let tc = TrainConfig {
        batch_size: b,
        max_steps: 1_000_000,
        lr: 1e-3,
        min_lr: 1e-3,
        warmup_steps: 0,
        grad_clip: 1.0,
        ..TrainConfig::default()
    };
    // any 65-token vocabulary: the task only needs its size
    let alphabet: String = (0..vocab as u8).map(|i| (b'0' + i) as char).collect();
    let tokenizer = CharTokenizer::from_text(&alphabet).into();
    let n_params = model.num_params();
    let task = NextToken::new(model, tokenizer, Split::new(tokens, 0.1), &tc)?;
    let mut trainer = Trainer::new(Box::new(task), tc)?;
    let reps = args.reps.unwrap_or(20);
    for _ in 0..3 {
        trainer.train_step()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        trainer.train_step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let secs = median(times);
    let tokens_per_s = (b * t) as f64 / secs;
    // training FLOPs per token ≈ 6·N + 12·L·C·T (N without the position table)
    let n = n_params - t * n_embd;
    let flops_per_token = 6.0 * n as f64 + 12.0 * (n_layer * n_embd * t) as f64;
    let model_gflops = tokens_per_s * flops_per_token / 1e9;
    let roofline = gemm_roofline();
    emit(json!({
        "suite": suite, "case": format!("{b}x{t}"), "impl": "qkv", "threads": qkv_tensor::num_threads(),
        "tokens_per_s": tokens_per_s, "ms_per_step": secs * 1e3,
        "model_gflops": model_gflops, "gemm_gflops": roofline, "mfu_vs_gemm": model_gflops / roofline,
    }));
    Ok(())
}

/// BERT forward passes (no gradients) on random ids: `minilm` = 6 layers,
/// C=384, 12 heads, F=1536; `base` = 12 layers, C=768, 12 heads, F=3072; both
/// with vocabulary 30522, batch 8 × 128 tokens, no padding. The model is
/// prepared for inference once, before timing (q/k/v fused, the weights packed
/// for the GEMM), as `qkv embed` does for more than one batch
/// ([`Bert::prepared_for_inference`]); PyTorch's eager twin has no such step
/// (its time to load a model is not counted either).
fn encoder(args: &BenchArgs) -> Result<()> {
    use qkv::models::bert::{Bert, BertConfig};
    // `--case minilm` (or its full label, `minilm-8x128`) runs that case alone
    let wanted = args.case.as_deref().map(|c| c.strip_suffix("-8x128").unwrap_or(c));
    if let Some(w) = wanted
        && !["minilm", "base", "real"].contains(&w)
    {
        bail!("--case {w:?}: the encoder suite's cases are minilm, base and real");
    }
    if wanted == Some("real") && args.model.is_none() {
        bail!("--case real times a real BERT directory: give it with --model DIR");
    }
    let cases = [("minilm", 6, 384, 12, 1536), ("base", 12, 768, 12, 3072)];
    for (name, layers, c, heads, f) in cases {
        if wanted.is_some_and(|w| w != name) {
            continue;
        }
        let config = BertConfig {
            num_hidden_layers: layers,
            hidden_size: c,
            num_attention_heads: heads,
            intermediate_size: f,
            ..BertConfig::default()
        };
        let bert = Bert::new(config, true, &mut Rng::new(0))?.prepared_for_inference(InferenceWeights::PACKED)?;
        let reps = args.reps.unwrap_or(if name == "minilm" { 10 } else { 4 });
        encoder_case(name, &bert, reps)?;
    }
    // the real weights (e.g. all-MiniLM-L6-v2), when given
    if let Some(dir) = args.model.as_ref().filter(|_| wanted.is_none_or(|w| w == "real")) {
        let enc =
            qkv::models::sentence::SentenceEncoder::open(dir)?.prepared_for_inference(InferenceWeights::PACKED)?;
        encoder_case("real", &enc.bert, args.reps.unwrap_or(10))?;
    }
    Ok(())
}

/// One encoder case: forward passes without gradients over 8 × 128 random ids.
fn encoder_case(name: &str, bert: &qkv::models::bert::Bert, reps: usize) -> Result<()> {
    use qkv::models::bert::Batch;
    let (b, t) = (8, 128);
    let mut rng = Rng::new(1);
    let vocab = bert.config.vocab_size as u64;
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let mask = vec![true; b * t];
    let secs = time(reps, || {
        no_grad(|| {
            bert.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b, t }, &qkv::nn::Dropout::default())
        })?;
        Ok(())
    })?;
    emit(json!({
        "suite": "encoder", "case": format!("{name}-{b}x{t}"), "impl": "qkv", "threads": qkv_tensor::num_threads(),
        "sequences_per_s": b as f64 / secs, "ms_per_batch": secs * 1e3,
    }));
    Ok(())
}

/// GPT-2 124M shapes (12 layers, 12 heads, C=768, vocabulary 50257, context
/// 1024) with random weights: a 32-token prompt, then 128 greedy tokens with
/// the KV cache. New tokens/s counts the whole call (prompt included), as the
/// twin does; the decode-only rate and the bandwidth bound are reported beside.
fn infer_gpt2(args: &BenchArgs) -> Result<()> {
    use qkv::generate::{Sampling, generate};
    use qkv::nn::block::Placement;
    use qkv::nn::norm::NormKind;
    use qkv::nn::positional::Positions;
    let config = GptConfig {
        vocab_size: 50257,
        block_size: 1024,
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        mlp_ratio: 4.0,
        activation: Activation::GeluTanh,
        norm: NormKind::LayerNorm,
        norm_placement: Placement::Pre,
        norm_eps: 1e-5,
        positions: Positions::Learned,
        bias: true,
        dropout: 0.0,
        tie_embeddings: true,
    };
    let model = Gpt::new(config, 0)?;
    let mut rng = Rng::new(1);
    let prompt: Vec<u32> = (0..32).map(|_| rng.below(50257) as u32).collect();
    let new = 128;
    let greedy = Sampling { greedy: true, ..Sampling::default() };
    let reps = args.reps.unwrap_or(3);
    // (seconds for the prompt and all new tokens, seconds to the first new token)
    let run = |model: &Gpt| -> Result<(f64, f64)> {
        let mut first = None;
        let secs = time(reps, || {
            let t0 = Instant::now();
            let mut n = 0;
            generate(model, &prompt, new, &greedy, |_| {
                n += 1;
                if n == 1 {
                    first = Some(t0.elapsed().as_secs_f64());
                }
                Ok(true)
            })?;
            Ok(())
        })?;
        Ok((secs, first.unwrap_or(0.0)))
    };
    let (secs, prefill) = run(&model)?;
    // per new token every weight is read once (the tied head is the embedding);
    // the position table is read one row at a time
    let weight_bytes = (model.num_params() - 1024 * 768) as f64 * 4.0;
    let bw = qkv_tensor::kernels::gemv::read_bandwidth();
    let bound = bw / weight_bytes;
    let decode = (new - 1) as f64 / (secs - prefill);
    // the same with 16-bit copies of the weights (`qkv generate --f16-weights`):
    // qkv only, as f32 is PyTorch's fastest CPU setting (its f16 and bf16
    // generation ran ~6x slower than its f32 here)
    let model = model.prepared_for_inference(InferenceWeights::F16)?;
    let (secs16, prefill16) = run(&model)?;
    let decode16 = (new - 1) as f64 / (secs16 - prefill16);
    emit(json!({
        "suite": "infer-gpt2", "case": "124M-32+128", "impl": "qkv", "threads": qkv_tensor::num_threads(),
        "tokens_per_s": new as f64 / secs, "decode_tokens_per_s": decode, "ms_prefill": prefill * 1e3,
        "weight_mb": weight_bytes / 1e6, "read_gb_per_s": bw / 1e9, "bound_tokens_per_s": bound,
        "fraction_of_bound": decode / bound,
        "f16_tokens_per_s": new as f64 / secs16, "f16_decode_tokens_per_s": decode16,
        "f16_fraction_of_bound": decode16 / (2.0 * bound),
    }));
    Ok(())
}

/// The encoder–decoder of the seq2seq suites (`activation`: relu for
/// training, as `nn.Transformer`; swish for translation, as Marian).
fn seq2seq_model(activation: &str) -> Result<Seq2Seq> {
    // the default translation model (3+3 layers, C=256, 4 heads, F=1024, V=8000, dropout 0.1)
    let config = Seq2SeqConfig {
        activation_function: activation.into(),
        max_position_embeddings: 128,
        ..Seq2SeqConfig::default()
    };
    Ok(Seq2Seq::new(config, 0)?)
}

fn train_seq2seq(args: &BenchArgs) -> Result<()> {
    let (b, t) = (32, 64);
    let model = seq2seq_model("relu")?;
    let tc = TrainConfig { lr: 1e-3, min_lr: 1e-3, warmup_steps: 0, ..TrainConfig::default() };
    let mut opt = Optimizer::new(model.named_params(), tc.adamw, tc.schedule(), 1.0);
    let mut rng = Rng::new(1);
    let mask = vec![true; b * t];
    let mut step_no = 0u64;
    let mut step = || -> Result<()> {
        let ids = |rng: &mut Rng| -> Vec<u32> { (0..b * t).map(|_| 3 + rng.below(7997) as u32).collect() };
        let (src, tgt_in, labels) = (ids(&mut rng), ids(&mut rng), ids(&mut rng));
        let drop = Dropout { p: 0.1, seed: Some(rng.next_u64()) };
        step_no += 1;
        opt.zero_grad();
        let logits =
            model.forward(&Side { ids: &src, mask: &mask, b, t }, &Side { ids: &tgt_in, mask: &mask, b, t }, &drop)?;
        let loss = qkv_tensor::cross_entropy_smoothed(&logits, &labels, Some(0), 0.1)?;
        opt.accumulate(&loss, 1, step_no)?;
        opt.step(step_no)?;
        Ok(())
    };
    for _ in 0..2 {
        step()?;
    }
    let secs = time(args.reps.unwrap_or(20), &mut step)?;
    emit(json!({
        "suite": "train-seq2seq", "case": format!("{b}x{t}"), "impl": "qkv", "threads": qkv_tensor::num_threads(),
        "tokens_per_s": (b * t) as f64 / secs, "ms_per_step": secs * 1e3,
    }));
    Ok(())
}

fn translate(args: &BenchArgs) -> Result<()> {
    let (n, len, new) = (32, 32, 48);
    // as `qkv translate` opens a model: weights packed for the decoder's small products
    let model = seq2seq_model("swish")?.prepared_for_inference(InferenceWeights::PACKED)?;
    let mut rng = Rng::new(2);
    let sources: Vec<Vec<u32>> =
        (0..n).map(|_| (0..len).map(|i| if i == len - 1 { 1 } else { 3 + rng.below(7997) as u32 }).collect()).collect();
    let mut figures = serde_json::Map::new();
    for (name, beam) in [("greedy", 1), ("beam4", 4)] {
        let how = Decoding { beam, max_len_ratio: 0.0, max_len_extra: new, min_new_tokens: new, ..Decoding::default() };
        let secs = time(args.reps.unwrap_or(3), || {
            let out = qkv::translate::translate(&model, &sources, &how)?;
            anyhow::ensure!(out.iter().all(|o| o.len() == new), "every translation has {new} tokens");
            Ok(())
        })?;
        figures.insert(format!("{name}_sentences_per_s"), json!(n as f64 / secs));
    }
    let mut v = json!({"suite": "translate", "case": format!("{n}x{len}+{new}"), "impl": "qkv", "threads": qkv_tensor::num_threads()});
    v.as_object_mut().expect("an object").extend(figures);
    emit(v);
    Ok(())
}

/// The optimizer of the recurrent suites' twins: AdamW at a constant 1e-3, no clipping.
fn twin_optimizer(params: Vec<qkv::nn::NamedParam>) -> Optimizer {
    let tc = TrainConfig { lr: 1e-3, min_lr: 1e-3, warmup_steps: 0, ..TrainConfig::default() };
    Optimizer::new(params, tc.adamw, tc.schedule(), 0.0)
}

/// One fixed batch of `b` random sequences of `t + 1` tokens below `vocab`:
/// the inputs and the targets (the same shifted by one), `[B, T]` each.
fn fixed_batch(b: usize, t: usize, vocab: u64) -> (Vec<u32>, Vec<u32>) {
    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..b * (t + 1)).map(|_| rng.below(vocab) as u32).collect();
    let rows =
        |skip: usize| -> Vec<u32> { ids.chunks(t + 1).flat_map(|r| r[skip..skip + t].iter().copied()).collect() };
    (rows(0), rows(1))
}

fn train_lstm(args: &BenchArgs) -> Result<()> {
    let (b, t) = (32, 128);
    let config = RecurrentConfig {
        vocab_size: 65,
        n_embd: 512,
        hidden: 512,
        n_layer: 2,
        block_size: t,
        ..RecurrentConfig::default()
    };
    let model = RecurrentLm::new(config, 0)?;
    let mut opt = twin_optimizer(model.named_params());
    let (inputs, targets) = fixed_batch(b, t, 65);
    let mut state = model.zero_state(b);
    let mut step_no = 0u64;
    let mut step = || -> Result<()> {
        step_no += 1;
        opt.zero_grad();
        let (loss, next) = model.loss(&inputs, &targets, b, t, &state, &Dropout::default())?;
        opt.accumulate(&loss, 1, step_no)?;
        opt.step(step_no)?;
        state = next;
        Ok(())
    };
    let secs = time(args.reps.unwrap_or(10), &mut step)?;
    emit(json!({
        "suite": "train-lstm", "case": "2x512-T128-B32", "impl": "qkv", "threads": qkv_tensor::num_threads(),
        "tokens_per_s": (b * t) as f64 / secs, "ms_per_step": secs * 1e3,
    }));
    Ok(())
}

fn train_mamba(args: &BenchArgs) -> Result<()> {
    let (b, t) = (16, 128);
    let config: MambaConfig = serde_json::from_value(json!({
        "vocab_size": 65, "hidden_size": 256, "state_size": 16, "num_hidden_layers": 2, "conv_kernel": 4,
        "expand": 2, "time_step_rank": 16,
    }))?;
    let model = Mamba::new(config, 0)?;
    let mut opt = twin_optimizer(model.named_params());
    let (inputs, targets) = fixed_batch(b, t, 65);
    let mut step_no = 0u64;
    let mut step = || -> Result<()> {
        step_no += 1;
        opt.zero_grad();
        let loss = qkv_tensor::cross_entropy(&model.forward(&inputs, b, t)?, &targets, None)?;
        opt.accumulate(&loss, 1, step_no)?;
        opt.step(step_no)?;
        Ok(())
    };
    let secs = time(args.reps.unwrap_or(5), &mut step)?;
    emit(json!({
        "suite": "train-mamba", "case": "2x256-N16-T128-B16", "impl": "qkv", "threads": qkv_tensor::num_threads(),
        "tokens_per_s": (b * t) as f64 / secs, "ms_per_step": secs * 1e3,
    }));
    Ok(())
}
