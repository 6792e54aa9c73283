//! `qkv tokenizer`: learn a tokenizer from text, and watch text become token
//! ids and ids become text again — the "text inputs" step of a transformer.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use qkv::data::text::{read_corpus, read_corpus_lossy};
use qkv::tokenize::spec::SPEC_HELP;
use qkv::tokenize::{Kind, Tokenizer, TrainOptions};

#[derive(Args, Debug)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Learn a tokenizer from text files and write it as tokenizer.json
    Train(TrainArgs),
    /// Show how text becomes tokens: each piece beside its id
    Encode(EncodeArgs),
    /// Turn token ids back into text
    Decode(DecodeArgs),
}

/// `--kind` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    /// SentencePiece-style BPE (spaces become ▁, newline runs are words); specials <|endoftext|> (0), <unk> (1)
    Bpe,
    /// GPT-2-style byte-level BPE: never an unknown character; special <|endoftext|> (0)
    ByteBpe,
    /// BERT's WordPiece (lower-cased, ## continuations); [PAD] [UNK] [CLS] [SEP] [MASK] (0-4)
    #[value(name = "wordpiece")]
    WordPiece,
    /// SentencePiece-style Unigram language model, words as for bpe; specials <|endoftext|> (0), <unk> (1)
    Unigram,
    /// One token per distinct character (qkv's default tokenizer); no special tokens
    Char,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Bpe => Kind::Bpe,
            KindArg::ByteBpe => Kind::ByteBpe,
            KindArg::WordPiece => Kind::WordPiece,
            KindArg::Unigram => Kind::Unigram,
            KindArg::Char => Kind::Char,
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  qkv tokenizer train --kind byte-bpe --vocab-size 4096 data/shakespeare.txt -o bpe.json
  qkv tokenizer train --kind wordpiece --vocab-size 8000 a.txt b.txt -o wordpiece.json
  qkv train --tokenizer bpe.json               # train a GPT on these tokens")]
struct TrainArgs {
    /// What to learn
    #[arg(long)]
    kind: KindArg,
    /// Tokens in the vocabulary, special tokens included (not for --kind char) [default: 4096]
    #[arg(long, value_name = "N")]
    vocab_size: Option<usize>,
    /// BPE and WordPiece: merge only pairs that occur at least this often
    #[arg(long, default_value_t = 2, value_name = "N")]
    min_frequency: u64,
    /// UTF-8 text files to learn from
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where to write the tokenizer
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace invalid UTF-8 in the files by U+FFFD instead of refusing them
    #[arg(long)]
    lossy: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  qkv tokenizer encode --tokenizer gpt2 \"Hello world\"
  printf '  \\n\\t' | qkv tokenizer encode --tokenizer gpt2          # whitespace is text too
  qkv tokenizer encode --tokenizer models/bert-base-uncased --special --json \"Héllo!\"")]
struct EncodeArgs {
    #[arg(long, value_name = "SPEC", help = tokenizer_help())]
    tokenizer: String,
    /// Text to encode [default: standard input, byte for byte]
    text: Option<String>,
    /// Print {"ids": [...], "tokens": [...]} instead of a table
    #[arg(long)]
    json: bool,
    /// Add the special tokens the tokenizer puts around a sequence (BERT: [CLS] … [SEP])
    #[arg(long)]
    special: bool,
    /// Replace invalid UTF-8 on standard input by U+FFFD instead of refusing it
    #[arg(long)]
    lossy: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  qkv tokenizer decode --tokenizer gpt2 15496 995
  echo 15496 995 | qkv tokenizer decode --tokenizer gpt2")]
struct DecodeArgs {
    #[arg(long, value_name = "SPEC", help = tokenizer_help())]
    tokenizer: String,
    /// Token ids [default: standard input, separated by spaces or commas]
    ids: Vec<u32>,
}

fn tokenizer_help() -> String {
    format!("Tokenizer: {SPEC_HELP}")
}

pub fn run(args: &TokenizerArgs) -> Result<()> {
    match &args.command {
        Command::Train(a) => train(a),
        Command::Encode(a) => encode(a),
        Command::Decode(a) => decode(a),
    }
}

fn load(spec: &str) -> Result<Tokenizer> {
    Tokenizer::load(spec).context("--tokenizer")
}

fn train(args: &TrainArgs) -> Result<()> {
    let kind = Kind::from(args.kind);
    let vocab_size = match (kind, args.vocab_size) {
        (Kind::Char, Some(_)) => {
            bail!("--kind char has one token per distinct character of the text; drop --vocab-size")
        }
        (_, v) => v.unwrap_or(4096),
    };
    let started = Instant::now();
    let mut texts = Vec::with_capacity(args.files.len());
    for f in &args.files {
        if args.lossy {
            let (text, replaced) = read_corpus_lossy(f)?;
            if replaced > 0 {
                eprintln!("{}: replaced {replaced} invalid UTF-8 sequences by U+FFFD", f.display());
            }
            texts.push(text);
        } else {
            texts.push(read_corpus(f).context("give --lossy to replace invalid bytes")?);
        }
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tok = qkv::tokenize::train::train(
        &refs,
        &TrainOptions { kind, vocab_size, min_frequency: args.min_frequency, specials: Vec::new() },
    )?;
    tok.save(&args.output)?;
    eprintln!(
        "trained {} from {} file{} ({:.1} MB) in {:.1} s → {}",
        tok.describe(),
        args.files.len(),
        if args.files.len() == 1 { "" } else { "s" },
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        args.output.display()
    );
    if kind != Kind::Char && tok.vocab_size() < vocab_size {
        eprintln!(
            "note: asked for {vocab_size} tokens, the text supports only {} (too little text, or --min-frequency too high)",
            tok.vocab_size()
        );
    }
    let specials = kind.special_tokens();
    if !specials.is_empty() {
        let listed: Vec<String> = specials
            .iter()
            .map(|s| format!("{s} = {}", tok.token_to_id(s).map_or("?".into(), |i| i.to_string())))
            .collect();
        eprintln!("special tokens: {}", listed.join(", "));
    }
    Ok(())
}

/// All of standard input, byte for byte.
fn read_stdin(what: &str) -> Result<Vec<u8>> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no {what}: give it as an argument or pipe it into standard input");
    }
    let mut bytes = Vec::new();
    stdin.read_to_end(&mut bytes).with_context(|| format!("reading the {what} from standard input"))?;
    Ok(bytes)
}

fn encode(args: &EncodeArgs) -> Result<()> {
    let tok = load(&args.tokenizer)?;
    let text = match &args.text {
        Some(t) => t.clone(),
        None => {
            let bytes = read_stdin("text")?;
            match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) if args.lossy => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                Err(e) => bail!(
                    "standard input is not UTF-8: invalid byte 0x{:02x} at offset {} (give --lossy to replace invalid bytes)",
                    e.as_bytes()[e.utf8_error().valid_up_to()],
                    e.utf8_error().valid_up_to()
                ),
            }
        }
    };
    let ids = if args.special { tok.encode_with_special_tokens(&text)? } else { tok.encode(&text)? };
    let tokens: Vec<String> = ids.iter().map(|&id| tok.token(id).unwrap_or_default()).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::json!({ "ids": ids, "tokens": tokens }))?;
        return Ok(());
    }
    let id_width = ids.iter().map(|i| i.to_string().len()).max().unwrap_or(2).max(2);
    let shown: Vec<String> = tokens.iter().map(|t| escape(t)).collect();
    let token_width = shown.iter().map(|t| t.chars().count()).max().unwrap_or(5).max(5);
    writeln!(out, "{:>id_width$}  {:<token_width$}  text", "id", "token")?;
    for ((id, token), piece) in
        ids.iter().zip(&shown).map(|(&id, t)| (id, t)).zip(ids.iter().map(|&id| tok.piece(id).unwrap_or_default()))
    {
        writeln!(out, "{id:>id_width$}  {token:<token_width$}  {}", quoted(&piece))?;
    }
    let chars = text.chars().count();
    eprintln!(
        "{} tokens, {chars} characters, {} bytes ({}; {:.2} characters per token)",
        ids.len(),
        text.len(),
        tok.describe(),
        chars as f64 / ids.len().max(1) as f64
    );
    Ok(())
}

/// A token's text, quoted and escaped so that spaces, newlines and tabs are
/// visible; bytes that are not (yet) a whole UTF-8 character as `\xNN`.
fn quoted(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        s.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s.push('"');
    s
}

/// `text` with newlines, tabs, quotes, backslashes and control characters escaped.
fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            c if c.is_control() => s.push_str(&c.escape_unicode().to_string()),
            c => s.push(c),
        }
    }
    s
}

fn decode(args: &DecodeArgs) -> Result<()> {
    let tok = load(&args.tokenizer)?;
    let ids = if args.ids.is_empty() {
        let bytes = read_stdin("ids")?;
        let text = String::from_utf8_lossy(&bytes);
        text.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().with_context(|| format!("{s:?} on standard input is not a token id")))
            .collect::<Result<Vec<u32>>>()?
    } else {
        args.ids.clone()
    };
    let text = tok.decode(&ids)?;
    let mut out = std::io::stdout();
    // the text exactly; a final newline only for a person at a terminal
    write!(out, "{text}")?;
    if out.is_terminal() && !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}
