//! The page's query strings: `text=…&temperature=…&top_k=…&top_p=…&seed=…`,
//! percent-decoded and checked, each mistake answered with its reason.

use qkv::generate::Sampling;

/// A request about a prompt.
#[derive(Debug)]
pub struct Query {
    pub text: String,
    pub sampling: Sampling,
}

impl Query {
    /// Parse `raw` (what follows `?`); `text` is required and at most
    /// `max_chars` characters.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Query, String> {
        let mut text = None;
        let mut sampling = Sampling::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).ok_or_else(|| format!("{key}: not valid percent-encoded UTF-8"))?;
            let number = |what: &str| format!("{key}={value:?} is not {what}");
            match key {
                "text" => text = Some(value),
                "temperature" => {
                    let t: f32 = value.parse().map_err(|_| number("a number"))?;
                    sampling.temperature = t;
                }
                "top_k" if value.is_empty() || value == "0" => sampling.top_k = None,
                "top_k" => sampling.top_k = Some(value.parse().map_err(|_| number("a whole number"))?),
                "top_p" if value.is_empty() => sampling.top_p = None,
                "top_p" => {
                    let p: f32 = value.parse().map_err(|_| number("a number"))?;
                    if !(p > 0.0 && p <= 1.0) {
                        return Err(format!("top_p={value} must be in (0, 1]"));
                    }
                    sampling.top_p = (p < 1.0).then_some(p); // 1 keeps every token: no cut
                }
                "seed" => sampling.seed = value.parse().map_err(|_| number("a whole number"))?,
                _ => return Err(format!("unknown parameter {key:?} (text, temperature, top_k, top_p, seed)")),
            }
        }
        let text = text.ok_or("the text parameter is missing")?;
        let chars = text.chars().count();
        if chars == 0 {
            return Err("the prompt is empty: type something".into());
        }
        if chars > max_chars {
            return Err(format!("the prompt has {chars} characters; the page takes at most {max_chars}"));
        }
        if !(sampling.temperature > 0.0 && sampling.temperature.is_finite()) {
            return Err(format!("temperature={} must be a number above 0", sampling.temperature));
        }
        sampling.validate().map_err(|e| e.to_string())?;
        Ok(Query { text, sampling })
    }
}

/// Percent-decoding with `+` as a space; `None` when not valid UTF-8 or a
/// `%` is not followed by two hex digits.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_decoded_and_checked() {
        let q = Query::parse("text=to%20be+or%E2%80%A6&temperature=0.5&top_k=40&top_p=0.9&seed=7", 100).unwrap();
        assert_eq!(q.text, "to be or…");
        assert_eq!(
            (q.sampling.temperature, q.sampling.top_k, q.sampling.top_p, q.sampling.seed),
            (0.5, Some(40), Some(0.9), 7)
        );
        let q = Query::parse("text=a&top_k=0&top_p=1", 100).unwrap();
        assert_eq!((q.sampling.top_k, q.sampling.top_p), (None, None), "0 and 1 switch the cuts off");
        for (raw, says) in [
            ("temperature=1", "missing"),
            ("text=", "empty"),
            ("text=abcdef", "at most 5"),
            ("text=a&temperature=hot", "not a number"),
            ("text=a&temperature=0", "above 0"),
            ("text=a&temperature=-1", "above 0"),
            ("text=a&temperature=NaN", "above 0"),
            ("text=a&top_k=-3", "whole number"),
            ("text=a&top_p=1.5", "(0, 1]"),
            ("text=a&top_p=0", "(0, 1]"),
            ("text=%zz", "percent-encoded"),
            ("text=%C3", "percent-encoded"),
            ("text=a&color=red", "unknown parameter"),
        ] {
            let e = Query::parse(raw, 5).unwrap_err();
            assert!(e.contains(says), "{raw}: {e}");
        }
    }
}
