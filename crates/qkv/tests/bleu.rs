//! BLEU and chrF equal sacreBLEU's own numbers (fixtures made by
//! scripts/make_bleu_fixtures.py with sacreBLEU's defaults) on real Spanish
//! verses: damaged copies of the references, the English sources copied,
//! awkward lines (numbers, entities, unusual spaces, an empty line), and a
//! short system whose brevity penalty bites.

use std::path::PathBuf;

use qkv::metrics::bleu::{corpus_bleu, tokenize_13a};
use qkv::metrics::chrf::corpus_chrf;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bleu").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of a fixture file, split on `\n` only (a line may hold other separators).
fn lines(text: &str) -> Vec<&str> {
    text.strip_suffix('\n').unwrap_or(text).split('\n').collect()
}

#[test]
fn bleu_and_chrf_equal_sacrebleu() {
    let scores: serde_json::Value = serde_json::from_str(&fixture("scores.json")).unwrap();
    let refs_text = fixture("refs.txt");
    let refs = lines(&refs_text);
    for system in ["copy_source", "damaged", "short", "awkward"] {
        let text = fixture(&format!("{system}.txt"));
        let hyps = lines(&text);
        assert_eq!(hyps.len(), refs.len(), "{system}");
        let want = &scores[system];
        let b = corpus_bleu(&hyps, &refs);
        let close = |got: f64, key: &str| {
            let w = want[key].as_f64().unwrap();
            assert!((got - w).abs() < 1e-9 * (1.0 + w.abs()), "{system} {key}: {got} vs sacreBLEU's {w}");
        };
        close(b.score, "bleu");
        close(b.brevity_penalty, "bp");
        for (n, p) in b.precisions.iter().enumerate() {
            let w = want["precisions"][n].as_f64().unwrap();
            assert!((p - w).abs() < 1e-9 * (1.0 + w), "{system} precision {}: {p} vs {w}", n + 1);
        }
        assert_eq!(b.sys_len as u64, want["sys_len"].as_u64().unwrap(), "{system}");
        assert_eq!(b.ref_len as u64, want["ref_len"].as_u64().unwrap(), "{system}");
        close(corpus_chrf(&hyps, &refs), "chrf");
    }
    for (line, tokens) in scores["tokenized"].as_object().unwrap() {
        assert_eq!(tokenize_13a(line.trim_end_matches(qkv_space)), tokens.as_str().unwrap(), "{line:?}");
    }
}

fn qkv_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}
