//! The character-level tokenizer: one token per distinct character of the
//! training text (77 for the bundled Shakespeare), ids in sorted order.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

/// How the tokenizer is stored in a run directory (`tokenizer.json`).
#[derive(Serialize, Deserialize)]
struct Stored {
    kind: String,
    chars: String,
}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, sorted.
    pub fn from_text(text: &str) -> CharTokenizer {
        let mut chars: Vec<char> = text.chars().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        chars.dedup();
        Self::from_chars(chars)
    }

    fn from_chars(chars: Vec<char>) -> CharTokenizer {
        let index = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        CharTokenizer { chars, index }
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// Ids of `text`; a character outside the vocabulary is an error that
    /// names it and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.index.get(&c).copied().ok_or_else(|| {
                    Error::Data(format!(
                        "character {c:?} (position {i}) is not in this model's vocabulary of {} characters",
                        self.chars.len()
                    ))
                })
            })
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .map(|&id| {
                self.chars.get(id as usize).copied().ok_or_else(|| {
                    Error::Data(format!("token id {id} is outside the vocabulary of {} characters", self.chars.len()))
                })
            })
            .collect()
    }

    /// The text of one token.
    pub fn token(&self, id: u32) -> Option<String> {
        self.chars.get(id as usize).map(|c| c.to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&Stored { kind: "char".into(), chars: self.chars.iter().collect() })
            .expect("serialisable")
    }

    /// The same tokenizer as a Hugging Face `tokenizer.json`, for models
    /// exported to `transformers`: every character split off on its own
    /// (`Split` on the regex `[\s\S]`, one code point), looked up in a
    /// word-level vocabulary, and joined back with the `Fuse` decoder.
    pub fn to_hf_json(&self) -> String {
        let vocab: serde_json::Map<String, serde_json::Value> =
            self.chars.iter().enumerate().map(|(i, c)| (c.to_string(), serde_json::json!(i))).collect();
        let v = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"}, "behavior": "Isolated", "invert": false},
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        serde_json::to_string_pretty(&v).expect("serialisable")
    }

    pub fn from_json(json: &str) -> std::result::Result<CharTokenizer, String> {
        let s: Stored = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if s.kind != "char" {
            return Err(format!("tokenizer kind {:?}, expected \"char\"", s.kind));
        }
        let chars: Vec<char> = s.chars.chars().collect();
        let mut sorted = chars.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != chars.len() {
            return Err("the character list repeats a character".into());
        }
        Ok(Self::from_chars(chars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_characters() {
        let t = CharTokenizer::from_text("hello world");
        assert_eq!(t.vocab_size(), 8);
        let ids = t.encode("hold").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), "hold");
        let e = t.encode("hex").unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("position 2"), "{e}");
        assert!(t.decode(&[99]).is_err());
        assert_eq!(CharTokenizer::from_json(&t.to_json()).unwrap(), t);
    }
}
