//! Tokenizers: GPT-2's and BERT's ids exactly as the reference implementations
//! (fixtures from scripts/make_tokenizer_fixtures.py), byte-level round trips
//! on arbitrary text, every trainable kind, parallel corpus encoding, the token
//! cache, and errors that say where the bad input is.

use std::path::{Path, PathBuf};

use qkv::data::text::SHAKESPEARE;
use qkv::data::token_cache::{self, Key};
use qkv::data::tokens::TokenIds;
use qkv::tokenize::corpus::{chunks, encode_corpus};
use qkv::tokenize::train::train;
use qkv::tokenize::{CharTokenizer, Kind, Tokenizer, TrainOptions, gpt2};
use qkv_tensor::Rng;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers")
}

fn golden(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect()
}

fn strings_of(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkv-tok-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn gpt2_gives_the_reference_ids() {
    let bundled = gpt2::bundled().unwrap();
    let from_dir =
        Tokenizer::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizers/gpt2").to_str().unwrap())
            .unwrap();
    assert_eq!(bundled.vocab_size(), 50257);
    assert!(bundled.is_byte_level());
    let cases = golden("gpt2.json");
    assert!(cases.len() > 40);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        for tok in [&bundled, &from_dir] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(ids, want, "ids of {text:?}");
            let tokens: Vec<String> = ids.iter().map(|&i| tok.token(i).unwrap()).collect();
            assert_eq!(tokens, strings_of(&case["tokens"]), "tokens of {text:?}");
            assert_eq!(tok.decode(&ids).unwrap(), text, "decoding {text:?}");
        }
    }
    assert_eq!(bundled.encode("Hello world").unwrap(), [15496, 995], "the issue's example");
    assert_eq!(bundled.token_to_id(gpt2::END_OF_TEXT), Some(50256));
}

#[test]
fn bert_uncased_gives_the_reference_ids() {
    let vocab = fixtures().join("bert-uncased-vocab.txt");
    let tok = Tokenizer::load(vocab.to_str().unwrap()).unwrap();
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(tok.special_tokens_added(), 2);
    for case in &golden("bert-uncased.json") {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, ids_of(&case["ids"]), "ids of {text:?}");
        let tokens: Vec<String> = ids.iter().map(|&i| tok.token(i).unwrap()).collect();
        assert_eq!(tokens, strings_of(&case["tokens"]), "tokens of {text:?}");
        assert_eq!(
            tok.encode_with_special_tokens(text).unwrap(),
            ids_of(&case["ids_with_special"]),
            "[CLS] … [SEP] of {text:?}"
        );
        assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap(), "decoding {text:?}");
    }
}

/// A random string of characters from many scripts and byte lengths,
/// whitespace and control characters included.
fn random_text(rng: &mut Rng, len: usize) -> String {
    const RANGES: [(u32, u32); 10] = [
        (0x20, 0x7E),       // ASCII
        (0x00, 0x20),       // control characters, tab, newline
        (0xA0, 0x24F),      // Latin-1 and Latin Extended
        (0x300, 0x36F),     // combining marks
        (0x400, 0x4FF),     // Cyrillic
        (0x600, 0x6FF),     // Arabic
        (0x3040, 0x30FF),   // kana
        (0x4E00, 0x9FFF),   // CJK
        (0x1F300, 0x1FAFF), // emoji
        (0x2000, 0x206F),   // spaces, joiners, punctuation
    ];
    (0..len)
        .map(|_| {
            let (lo, hi) = RANGES[rng.below(RANGES.len() as u64) as usize];
            char::from_u32(lo + rng.below((hi - lo + 1) as u64) as u32).unwrap_or(' ')
        })
        .collect()
}

#[test]
fn byte_level_bpe_round_trips_any_utf8() {
    let tok = gpt2::bundled().unwrap();
    let mut rng = Rng::new(7);
    for i in 0..300 {
        let text = random_text(&mut rng, 1 + i % 40);
        let ids = tok.encode(&text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.count_chars(&ids).unwrap(), text.chars().count());
    }
    let ids = encode_corpus(&tok, SHAKESPEARE).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), SHAKESPEARE, "the bundled corpus");
    assert_eq!(tok.count_chars(&ids).unwrap(), SHAKESPEARE.chars().count());
    // the parallel encoding is exactly the encoding of the whole text
    let part = &SHAKESPEARE[..SHAKESPEARE[..300_000].rfind(' ').unwrap()];
    assert!(chunks(part, 64 * 1024).len() >= 4);
    assert_eq!(encode_corpus(&tok, part).unwrap(), tok.encode(part).unwrap());
    assert_eq!(ids[..1000], tok.encode(&SHAKESPEARE[..4000]).unwrap()[..1000]);
}

#[test]
fn a_stream_decoder_waits_for_whole_characters() {
    let tok = gpt2::bundled().unwrap();
    let text = "emoji 😀 and 日本";
    let ids = tok.encode(text).unwrap();
    let mut stream = tok.stream();
    let mut out = String::new();
    for &id in &ids {
        let piece = stream.step(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    assert_eq!(out, text);
}

/// About 60 KB of the bundled Shakespeare: enough for every kind to learn
/// a vocabulary of 500, quickly.
fn small_corpus() -> &'static str {
    let end = SHAKESPEARE[..60_000].rfind('\n').unwrap() + 1;
    &SHAKESPEARE[..end]
}

fn trained(kind: Kind, vocab_size: usize) -> Tokenizer {
    train(&[small_corpus()], &TrainOptions { kind, vocab_size, min_frequency: 2, specials: Vec::new() }).unwrap()
}

#[test]
fn every_kind_trains_with_its_special_tokens() {
    let text = small_corpus();
    let sample = &text[5000..7000];
    for (kind, size) in
        [(Kind::ByteBpe, 600), (Kind::Bpe, 500), (Kind::WordPiece, 500), (Kind::Unigram, 500), (Kind::Char, 0)]
    {
        let tok = trained(kind, size);
        let name = kind.name();
        for (i, s) in kind.special_tokens().iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(i as u32), "{name}: {s}");
        }
        if kind == Kind::Char {
            assert_eq!(tok.vocab_size(), CharTokenizer::from_text(text).vocab_size());
        } else {
            assert_eq!(tok.vocab_size(), size, "{name}: vocabulary size");
        }
        let ids = tok.encode(sample).unwrap();
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
        if kind != Kind::Char {
            assert!(ids.len() < sample.len() / 2, "{name}: subwords are longer than characters");
        }
        let back = tok.decode(&ids).unwrap();
        if kind == Kind::WordPiece {
            // BERT's pipeline lower-cases and re-spaces: compare the words
            let words = |s: &str| s.split_whitespace().collect::<String>().to_lowercase();
            let strip = |s: String| s.replace(|c: char| c.is_ascii_punctuation(), "");
            assert_eq!(strip(words(&back)), strip(words(sample)), "{name}");
        } else {
            assert_eq!(back, sample, "{name}: round trip");
        }
        // saved and loaded again, it encodes alike; chunked encoding is exact
        let d = scratch(&format!("train-{name}"));
        let p = d.join("tokenizer.json");
        tok.save(&p).unwrap();
        let again = Tokenizer::load(p.to_str().unwrap()).unwrap();
        assert_eq!(again.encode(sample).unwrap(), ids, "{name}: saved and loaded");
        assert_eq!(again.fingerprint(), tok.fingerprint(), "{name}");
        assert!(tok.splits_at_spaces(), "{name}");
        let whole = tok.encode(text).unwrap();
        let parts: Vec<u32> = chunks(text, 4096).iter().flat_map(|c| tok.encode(c).unwrap()).collect();
        assert_eq!(parts, whole, "{name}: chunked encoding");
    }
    // byte-level BPE never meets an unknown character
    let tok = trained(Kind::ByteBpe, 600);
    let odd = "naïve 😀 日本語\t\n  tabs";
    assert_eq!(tok.decode(&tok.encode(odd).unwrap()).unwrap(), odd);
    // BERT's specials frame a sequence only when asked
    let wp = trained(Kind::WordPiece, 500);
    let ids = wp.encode_with_special_tokens("to be").unwrap();
    assert_eq!((ids[0], *ids.last().unwrap()), (2, 3));
    assert!(!wp.encode("to be").unwrap().contains(&2));
}

/// BPE training is deterministic. (Not WordPiece: the `tokenizers` crate
/// numbers its `##` pieces in hash-map order, so ties between equally frequent
/// pairs can break differently; and Unigram's scores are sums over threads,
/// which differ in the last bits, though the pieces are the same.)
#[test]
fn training_is_deterministic() {
    for kind in [Kind::ByteBpe, Kind::Bpe] {
        let a = trained(kind, 400);
        let b = trained(kind, 400);
        assert_eq!(a.to_json(), b.to_json(), "{}", kind.name());
    }
    let pieces = |t: &Tokenizer| {
        let mut v: Vec<String> = (0..t.vocab_size() as u32).map(|i| t.token(i).unwrap()).collect();
        v.sort();
        v
    };
    let (a, b) = (trained(Kind::Unigram, 400), trained(Kind::Unigram, 400));
    assert_eq!(pieces(&a), pieces(&b), "unigram");
}

#[test]
fn too_small_a_vocabulary_is_refused() {
    let e = train(
        &["some text"],
        &TrainOptions { kind: Kind::ByteBpe, vocab_size: 100, min_frequency: 2, specials: Vec::new() },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("257"), "{e}");
}

#[test]
fn the_token_cache_is_reused_and_rebuilt() {
    let d = scratch("cache");
    let dirs = [d.join("cache")];
    let tok = trained(Kind::ByteBpe, 300);
    let text = small_corpus();
    let first = token_cache::load_or_build(&dirs, text, &tok).unwrap();
    assert!(!first.reused && first.tokens.is_mapped());
    let path = first.path.clone().unwrap();
    // 2 bytes an id below 65,536 tokens, after a 64-byte header
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 + 2 * first.tokens.len() as u64);
    let whole = tok.encode(text).unwrap();
    assert_eq!(first.tokens.window(0..first.tokens.len()), whole);
    let second = token_cache::load_or_build(&dirs, text, &tok).unwrap();
    assert!(second.reused);
    // another corpus or tokenizer misses; a damaged file is rebuilt
    let other = &text[..text.len() - 1];
    assert!(!token_cache::load_or_build(&dirs, other, &tok).unwrap().reused);
    let tok2 = trained(Kind::ByteBpe, 301);
    assert!(!token_cache::load_or_build(&dirs, text, &tok2).unwrap().reused);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    assert!(token_cache::read(&path, &Key::new(text, &tok)).unwrap().is_none());
    let rebuilt = token_cache::load_or_build(&dirs, text, &tok).unwrap();
    assert!(!rebuilt.reused);
    assert_eq!(rebuilt.tokens.to_vec(), whole);
    // GPT-2's 50,257 ids still fit 16 bits; a 32-bit file for larger vocabularies
    let key = Key { vocab_size: 70_000, ..Key::new("abc", &tok) };
    let p = d.join("wide.tokens");
    token_cache::write(&p, &key, &[0, 69_999, 65_536]).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 64 + 12);
    let t = token_cache::read(&p, &key).unwrap().unwrap();
    assert_eq!(t.to_vec(), [0, 69_999, 65_536]);
    // an unwritable cache directory falls back to the next, then to memory
    let blocked = d.join("file-not-dir");
    std::fs::write(&blocked, "x").unwrap();
    let c = token_cache::load_or_build(std::slice::from_ref(&blocked), "to be or not", &tok).unwrap();
    assert!(c.path.is_none() && !c.warnings.is_empty());
    assert_eq!(c.tokens.to_vec(), tok.encode("to be or not").unwrap());
}

#[test]
fn bad_tokenizer_files_say_where() {
    let d = scratch("bad");
    let err = |spec: &Path| Tokenizer::load(spec.to_str().unwrap()).unwrap_err().to_string();
    // tokenizer.json: JSON errors give the line, schema errors the field
    let p = d.join("broken.json");
    std::fs::write(&p, "{\n  \"model\": {\n    \"type\": \"BPE\",\n  }\n}").unwrap();
    let e = err(&p);
    assert!(e.contains("broken.json") && e.contains("line 4"), "{e}");
    std::fs::write(&p, r#"{"version": "1.0", "added_tokens": []}"#).unwrap();
    let e = err(&p);
    assert!(e.contains("\"model\""), "{e}");
    std::fs::write(&p, r#"{"kind": "char", "chars": 3}"#).unwrap();
    assert!(err(&p).contains("broken.json"));
    // merges.txt: the line number
    let gpt = d.join("gpt");
    std::fs::create_dir_all(&gpt).unwrap();
    std::fs::write(gpt.join("vocab.json"), r#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
    std::fs::write(gpt.join("merges.txt"), "#version: 0.2\na b\na  b\n").unwrap();
    let e = err(&gpt);
    assert!(e.contains("merges.txt") && e.contains("line 3"), "{e}");
    std::fs::write(gpt.join("merges.txt"), "a b\nb x\n").unwrap();
    let e = err(&gpt.join("merges.txt"));
    assert!(e.contains("line 2") && e.contains("\"x\""), "{e}");
    std::fs::write(gpt.join("merges.txt"), "a b\n").unwrap();
    let tok = Tokenizer::load(gpt.to_str().unwrap()).unwrap();
    assert_eq!(tok.encode("ab").unwrap(), [2]);
    std::fs::write(gpt.join("vocab.json"), "{\"a\": 0,\n \"b\": \"one\"}").unwrap();
    let e = err(&gpt);
    assert!(e.contains("vocab.json") && e.contains("line 2"), "{e}");
    // vocab.txt without [UNK]
    let v = d.join("vocab.txt");
    std::fs::write(&v, "[PAD]\nhello\n").unwrap();
    assert!(err(&v).contains("[UNK]"));
    // nothing there
    let e = err(&d.join("nope.json"));
    assert!(e.contains("no such file") && e.contains("gpt2"), "{e}");
    // unknown ids are errors, not panics or silence
    let tok = gpt2::bundled().unwrap();
    let e = tok.decode(&[15496, 50257]).unwrap_err().to_string();
    assert!(e.contains("50257") && e.contains("vocabulary"), "{e}");
    let ch: Tokenizer = CharTokenizer::from_text("ab").into();
    assert!(ch.decode(&[2]).is_err());
}

#[test]
fn run_directories_keep_their_character_tokenizer() {
    // the format of runs made before subword tokenizers existed
    let d = scratch("char");
    let p = d.join("tokenizer.json");
    std::fs::write(&p, "{\n  \"kind\": \"char\",\n  \"chars\": \"\\n abc\"\n}").unwrap();
    let tok = Tokenizer::from_file(&p).unwrap();
    assert_eq!(tok.vocab_size(), 5);
    assert_eq!(tok.encode("cab\n").unwrap(), [4, 2, 3, 0]);
    tok.save(&p).unwrap();
    assert_eq!(Tokenizer::from_file(&p).unwrap().encode("a").unwrap(), [2]);
}

/// A character tokenizer exported as Hugging Face's `tokenizer.json` (for a
/// GPT exported to `transformers`) gives the same ids on the whole bundled
/// corpus, decodes back to it, and refuses a character it does not know.
#[test]
fn char_tokenizer_as_hugging_face_gives_the_same_ids() {
    let ours: Tokenizer = CharTokenizer::from_text(SHAKESPEARE).into();
    let hf = ours.to_hugging_face().unwrap();
    assert!(hf.as_hf().is_some(), "a Hugging Face pipeline");
    assert_eq!(hf.vocab_size(), ours.vocab_size());
    let ids = ours.encode(SHAKESPEARE).unwrap();
    assert_eq!(hf.encode(SHAKESPEARE).unwrap(), ids);
    assert_eq!(hf.decode(&ids).unwrap(), SHAKESPEARE);
    assert_eq!(hf.encode(" \n\n  ").unwrap(), ours.encode(" \n\n  ").unwrap(), "whitespace is kept, char by char");
    assert!(hf.encode("€").is_err(), "a character outside the vocabulary is an error");
}
