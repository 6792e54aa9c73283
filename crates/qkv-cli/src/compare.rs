//! `qkv compare`: a transformer against recurrent networks, trained for the
//! same time on the same text, with a Markdown report and charts.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use qkv::compare::{CompareOptions, Contender, compare, parse_budget};

#[derive(Args, Debug)]
#[command(after_help = "Example:
  qkv compare --models gpt,lstm,gru,mamba --budget 10m --out-dir runs/compare

Each model trains for the budget at about the default GPT's parameter count (the recurrent
networks' state size and Mamba's number of blocks are chosen to match), on the same text and held-out windows. The report
(report.md, report.json) gives validation bits per character against training time, training
tokens/s, parameters, time per generated token against context length (a recurrent network's
and Mamba's are flat; a GPT's grows with its KV cache and faster without one), memory per sequence, and a
sample from each. Each model's run stays in DIR/<model>, for qkv generate and qkv eval.")]
pub struct CompareArgs {
    /// Models to train, comma-separated: gpt, rnn, lstm, gru, mamba
    #[arg(long, default_value = "gpt,lstm,gru,mamba", value_delimiter = ',')]
    pub models: Vec<String>,
    /// UTF-8 text to train on [default: the bundled Shakespeare]
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Training time of each model: 90s, 10m, 1h
    #[arg(long, default_value = "5m")]
    pub budget: String,
    /// Where the report, the charts and each model's run go
    #[arg(long, value_name = "DIR", default_value = "runs/compare")]
    pub out_dir: PathBuf,
    /// Context lengths at which generation is timed, comma-separated
    #[arg(long, default_value = "1,16,64,256,1024,4096", value_delimiter = ',')]
    pub contexts: Vec<usize>,
    /// Seed of initialisation, data order and samples
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let models = args.models.iter().map(|m| Contender::parse(m)).collect::<qkv::error::Result<Vec<_>>>()?;
    if args.contexts.is_empty() || args.contexts.contains(&0) || args.contexts.iter().any(|&c| c > 65536) {
        anyhow::bail!("--contexts: lengths from 1 to 65536 tokens");
    }
    let mut contexts = args.contexts.clone();
    contexts.sort_unstable();
    contexts.dedup();
    let opts = CompareOptions {
        models,
        data: args.data.clone(),
        budget_s: parse_budget(&args.budget)?,
        out_dir: args.out_dir.clone(),
        contexts,
        seed: args.seed,
    };
    let entries = compare(&opts, &mut |line| eprintln!("qkv compare: {line}"))?;
    for e in &entries {
        eprintln!(
            "  {:<5} {:>5.2} M parameters, {:>5} steps, {:>7.0} tokens/s, {:.3} bits/char",
            e.model.name(),
            e.parameters as f64 / 1e6,
            e.steps,
            e.tokens_per_s,
            e.final_bits_per_char
        );
    }
    println!("{}", args.out_dir.join("report.md").display());
    Ok(())
}
