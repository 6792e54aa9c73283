//! `qkv`: train, run and inspect transformers from the command line.

mod bench;
mod eval;
mod generate;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// qkv — the transformer architecture from the tensor up.
///
/// Train a small GPT on the bundled Shakespeare and sample from it:
///     qkv train && qkv generate --model runs/gpt --prompt "ROMEO:"
#[derive(Parser, Debug)]
#[command(name = "qkv", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Worker threads for every kernel (default: $QKV_THREADS, else every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train a GPT on a text file (default: the bundled Shakespeare) and print a sample.
    Train(Box<train::TrainArgs>),
    /// Continue a prompt with a trained model (tokens stream to standard output).
    Generate(generate::GenerateArgs),
    /// Loss, perplexity and bits per character of a trained model on a text file.
    Eval(eval::EvalArgs),
    /// Measure speed; prints one JSON line per case (compare with PyTorch via bench/compare.sh).
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    qkv_tensor::init_threads(cli.threads).map_err(anyhow::Error::msg)?;
    qkv_tensor::in_pool(|| run_command(cli.command))
}

fn run_command(command: Cmd) -> Result<()> {
    match command {
        Cmd::Train(args) => train::run(&args),
        Cmd::Generate(args) => generate::run(&args),
        Cmd::Eval(args) => eval::run(&args),
        Cmd::Bench(args) => bench::run(&args),
    }
}
