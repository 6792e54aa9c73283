//! `qkv`: train, run and inspect transformers from the command line.

mod attention;
mod bench;
mod compare;
mod embed;
mod eval;
mod explain;
mod export;
mod generate;
mod predict;
mod tokenizer;
mod train;
mod translate;

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
    /// Train a model: a GPT on text (default: the bundled Shakespeare), BERT (--model bert:
    /// masked language modelling or classification), a Vision Transformer (--model vit), or an
    /// encoder–decoder that translates (--model seq2seq: English → Spanish on the bundled Bible).
    Train(Box<train::TrainArgs>),
    /// Draw attention: which tokens each token reads, layer by layer and head by head (GPT,
    /// BERT, ViT with its rollout over the image, an encoder–decoder's cross-attention).
    Attention(attention::AttentionArgs),
    /// A local web page that follows a prompt through a model: tokens, embeddings, attention,
    /// the residual stream, the next-token distribution; and the cost of attention.
    Explain(explain::ExplainArgs),
    /// Compare a transformer with recurrent networks (RNN, LSTM, GRU): each trained for the same
    /// time on the same text; a report with charts of learning, generation speed and memory.
    Compare(compare::CompareArgs),
    /// Translate sentences with a trained encoder–decoder (greedy or beam search).
    Translate(translate::TranslateArgs),
    /// Continue a prompt with a trained model (tokens stream to standard output).
    Generate(generate::GenerateArgs),
    /// Evaluate a trained model: loss, perplexity and bits per character of a GPT; accuracy
    /// and macro-F1 of a classifier; masked-token accuracy of an MLM.
    Eval(eval::EvalArgs),
    /// Fill in [MASK] tokens with a masked-language model, printing the top candidates.
    FillMask(predict::FillMaskArgs),
    /// Classify texts with a trained text classifier, printing class probabilities.
    Classify(predict::ClassifyArgs),
    /// Classify images (PNG, JPEG) with a trained Vision Transformer.
    ClassifyImage(predict::ClassifyImageArgs),
    /// Sentence embeddings from a BERT directory (e.g. sentence-transformers' all-MiniLM-L6-v2), as JSON.
    Embed(embed::EmbedArgs),
    /// Write a trained GPT as a Hugging Face GPT-2 directory that `transformers` loads.
    Export(export::ExportArgs),
    /// Measure speed; prints one JSON line per case (compare with PyTorch via bench/compare.sh).
    Bench(bench::BenchArgs),
    /// Train a tokenizer (BPE, byte-level BPE, WordPiece, Unigram, characters), and see text
    /// become token ids and back.
    Tokenizer(tokenizer::TokenizerArgs),
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => {}
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Run the command; its exit status.
fn run(cli: Cli) -> Result<i32> {
    qkv_tensor::init_threads(cli.threads).map_err(anyhow::Error::msg)?;
    qkv_tensor::in_pool(|| run_command(cli.command))
}

fn run_command(command: Cmd) -> Result<i32> {
    if let Cmd::Train(args) = command {
        return train::run(&args);
    }
    match command {
        Cmd::Train(_) => unreachable!("handled above"),
        Cmd::Generate(args) => generate::run(&args),
        Cmd::Translate(args) => translate::run(&args),
        Cmd::Attention(args) => attention::run(&args),
        Cmd::Explain(args) => explain::run(&args),
        Cmd::Compare(args) => compare::run(&args),
        Cmd::FillMask(args) => predict::fill_mask(&args),
        Cmd::Classify(args) => predict::classify(&args),
        Cmd::ClassifyImage(args) => predict::classify_image(&args),
        Cmd::Eval(args) => eval::run(&args),
        Cmd::Embed(args) => embed::run(&args),
        Cmd::Export(args) => export::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Tokenizer(args) => tokenizer::run(&args),
    }?;
    Ok(0)
}
