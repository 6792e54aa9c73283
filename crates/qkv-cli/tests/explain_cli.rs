//! `qkv explain`'s server, spoken to over loopback: the page and its files,
//! the numbers of a walk equal to the library's, sampling, and the limits —
//! long prompts, large bodies, malformed queries, unknown paths, and 200
//! requests at once (each answered, the server still serving after).

use std::io::{Read, Write};
use std::net::TcpStream;

use qkv::explain::walk_text;
use qkv::generate::Sampling;
use qkv::models::load::open;

mod common;
use common::server::{start, tiny_gpt};
use common::{close, corpus, fails_with, num, ok, qkv, s, scratch};

/// One HTTP request; the status and the body.
fn request(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    write!(c, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n").unwrap();
    c.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, "", b"")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn the_server_answers_with_the_library_numbers_and_keeps_its_limits() {
    let run = tiny_gpt("explain-server");
    let server = start(&run);
    let a = server.addr.as_str();
    // the page and its files, compiled in
    let (status, page) = get(a, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<canvas id=\"attention\"") && page.contains("/app.js"), "{page}");
    // the files compiled in, byte for byte
    let page_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/explain/page");
    for (path, file) in [("/", "index.html"), ("/app.js", "app.js"), ("/style.css", "style.css")] {
        let (status, body) = get(a, path);
        assert_eq!(status, 200, "{path}");
        assert!(body == std::fs::read_to_string(page_dir.join(file)).unwrap(), "{path} is not {file}");
    }
    for path in ["/nothing", "/../Cargo.toml", "/api/../app.js", "/app.js/x"] {
        let (status, body) = get(a, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(json(&body)["error"].as_str().unwrap().contains("nothing at"), "{body}");
    }
    let info = json(&get(a, "/api/model").1);
    assert_eq!(
        (info["family"].as_str(), info["layers"].as_u64(), info["heads"].as_u64()),
        (Some("gpt"), Some(2), Some(2))
    );
    assert_eq!(info["position_table"].as_array().unwrap().len(), 16, "the learned table, one row per position");
    // a walk: the numbers the library computes
    let (status, body) = get(a, "/api/walk?text=to%20be%20or&temperature=0.7&top_k=5");
    assert_eq!(status, 200, "{body}");
    let walk = json(&body);
    let model = open(&run).unwrap();
    let sampling = Sampling { temperature: 0.7, top_k: Some(5), ..Default::default() };
    let want = walk_text(&model, "to be or", &sampling, 20).unwrap();
    let labels: Vec<&str> = walk["tokens"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert_eq!(labels, want.tokens.iter().map(|t| t.label.as_str()).collect::<Vec<_>>());
    assert_eq!(labels.len(), 8, "a token per character");
    assert_eq!(walk["layers"].as_array().unwrap().len(), 2);
    let next = walk["next"].as_array().unwrap();
    assert_eq!(next.len(), 5, "top-k 5 keeps five candidates");
    assert_eq!(want.next.len(), 5);
    for (got, want) in next.iter().zip(&want.next) {
        assert_eq!(got["id"].as_u64(), Some(want.id as u64));
        let p = got["probability"].as_f64().unwrap();
        assert!((p - want.probability).abs() < 1e-12, "{p} vs {}", want.probability);
    }
    let total: f64 = next.iter().map(|c| c["probability"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "the kept candidates are renormalised: {total}");
    let row = &walk["layers"][1]["attention"][0][7];
    let row: Vec<f64> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
    let want_row = &want.layers[1].attention[0][7];
    assert_eq!(row.len(), want_row.len());
    assert!(row.iter().zip(want_row).all(|(a, b)| (a - *b as f64).abs() < 1e-6));
    // sampling appends one token, the same for the same seed
    let (status, body) = get(a, "/api/sample?text=to%20be&seed=3");
    assert_eq!(status, 200, "{body}");
    let one = json(&body);
    let text = one["text"].as_str().unwrap();
    assert!(text.starts_with("to be") && text.chars().count() == 6, "{one}");
    let vocabulary = std::fs::read_to_string(run.parent().unwrap().join("corpus.txt")).unwrap();
    assert!(vocabulary.contains(text.chars().last().unwrap()), "a character of the model's vocabulary: {one}");
    assert_eq!(json(&get(a, "/api/sample?text=to%20be&seed=3").1), one);
    // text longer than the context: the last 16 tokens, with a note
    let walk = json(&get(a, &format!("/api/walk?text={}", "to%20be%20".repeat(5))).1);
    let labels: Vec<&str> = walk["tokens"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    let last: Vec<String> = "to be ".repeat(5).chars().skip(30 - 16).map(|c| c.to_string()).collect();
    assert_eq!(labels.len(), 16);
    assert_eq!(labels.join("").replace('␣', " "), last.concat(), "the last 16 characters");
    assert!(walk["note"].as_str().unwrap().contains("kept the last 16"), "{walk}");
    // limits and mistakes, each with its reason
    let long = "a".repeat(4001);
    for (path, status, says) in [
        (format!("/api/walk?text={long}"), 400, "at most 4000"),
        ("/api/walk?text=a&temperature=warm".into(), 400, "not a number"),
        ("/api/walk?text=a&top_p=2".into(), 400, "(0, 1]"),
        ("/api/walk?text=%ff".into(), 400, "percent-encoded"),
        ("/api/walk?temperature=1".into(), 400, "missing"),
        ("/api/walk?text=a&bogus=1".into(), 400, "unknown parameter"),
        ("/api/walk?text=%E2%80%A6".into(), 422, "not in this model's vocabulary"),
    ] {
        let (got, body) = get(a, &path);
        assert_eq!(got, status, "{}: {body}", &path[..path.len().min(40)]);
        assert!(json(&body)["error"].as_str().unwrap().contains(says), "{body}");
    }
    let (status, body) = request(a, "POST", "/api/image", "Content-Length: 9437184\r\n", b"");
    assert_eq!(status, 413, "{body}");
    let (status, body) = request(a, "POST", "/api/image", "Content-Length: 3\r\n", b"abc");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("reads text"), "{body}");
    assert_eq!(request(a, "DELETE", "/api/walk", "", b"").0, 405);
    // 200 requests at once: every one answered (the walk, or "busy"), and the server serves on
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|i| scope.spawn(move || get(a, &format!("/api/walk?text=to%20be%20{}", "o".repeat(i % 7)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served = answers.iter().filter(|(s, _)| *s == 200).count();
    for (status, body) in &answers {
        assert!(*status == 200 || (*status == 503 && body.contains("busy")), "{status}: {body}");
    }
    assert!(served >= 1, "some of the 200 were computed");
    for (status, body) in answers.iter().filter(|(s, _)| *s == 200) {
        let tokens = json(body)["tokens"].as_array().unwrap().len();
        assert!((6..=12).contains(&tokens), "{status}: a walk of \"to be o…\": {body}");
    }
    assert_eq!(json(&get(a, "/api/model").1)["layers"], 2, "still serving");
    let (status, body) = get(a, "/api/walk?text=to");
    assert_eq!((status, json(&body)["tokens"].as_array().unwrap().len()), (200, 2), "still computing");
}

#[test]
fn a_model_without_attention_is_refused_with_its_reason() {
    let d = scratch("explain-refused");
    let data = corpus(&d);
    let run = d.join("lstm");
    #[rustfmt::skip]
    ok(&qkv(&[
        "--threads", "2", "train", "--model", "lstm", "--n-embd", "8", "--hidden", "16", "--block-size", "16",
        "--batch-size", "8", "--max-steps", "2", "--quiet", "--data", s(&data), "--out-dir", s(&run),
    ]));
    let out = qkv(&["explain", "--model", s(&run), "--port", "0"]);
    fails_with(&out, &["no attention"]);
}

#[test]
fn a_vit_page_reads_uploaded_images_and_refuses_other_files() {
    let d = scratch("explain-vit");
    let data = d.join("pictures");
    common::pictures(&data);
    let run = d.join("vit");
    #[rustfmt::skip]
    ok(&qkv(&[
        "--threads", "2", "train", "--model", "vit", "--data", s(&data), "--image-size", "12", "--patch-size", "4",
        "--channels", "1", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--epochs", "2",
        "--batch-size", "8", "--quiet", "--out-dir", s(&run),
    ]));
    let server = start(&run);
    let a = server.addr.as_str();
    let info = json(&get(a, "/api/model").1);
    assert_eq!((info["family"].as_str(), info["input"].as_str()), (Some("vit"), Some("image")));
    let png = std::fs::read(data.join("left/0.png")).unwrap();
    let (status, body) = request(a, "POST", "/api/image", &format!("Content-Length: {}\r\n", png.len()), &png);
    assert_eq!(status, 200, "{body}");
    let walk = json(&body);
    assert_eq!(walk["tokens"].as_array().unwrap().len(), 10, "[CLS] and 3×3 patches");
    let classes = walk["classes"].as_array().unwrap();
    let total: f64 = classes.iter().map(|c| c["probability"].as_f64().unwrap()).sum();
    assert!(classes.len() == 2 && (total - 1.0).abs() < 1e-9, "{classes:?}");
    let mut names: Vec<&str> = classes.iter().map(|c| c["label"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["left", "right"], "{classes:?}");
    assert!(classes.iter().all(|c| (0.0..=1.0).contains(&num(&c["probability"]))), "{classes:?}");
    let (status, body) = request(a, "POST", "/api/image", "Content-Length: 13\r\n", b"not a picture");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not an image"), "{body}");
    let (status, body) = get(a, "/api/walk?text=hello");
    assert_eq!(status, 422, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("give it an image"), "{body}");
}

#[test]
fn an_encoder_decoder_page_shows_its_translation_and_cross_attention() {
    let d = scratch("explain-seq2seq");
    let data = common::toy_pairs(&d);
    let run = d.join("s2s");
    #[rustfmt::skip]
    ok(&qkv(&[
        "--threads", "2", "train", "--model", "seq2seq", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
        "--max-tokens", "128", "--max-len", "24", "--vocab-size", "120", "--group-column", "group", "--max-steps", "20",
        "--quiet", "--data", s(&data), "--out-dir", s(&run),
    ]));
    let server = start(&run);
    let a = server.addr.as_str();
    let info = json(&get(a, "/api/model").1);
    assert_eq!((info["family"].as_str(), info["input"].as_str()), (Some("encoder-decoder"), Some("source")));
    assert_eq!((info["layers"].as_u64(), info["heads"].as_u64()), (Some(1), Some(2)));
    let (status, body) = get(a, "/api/walk?text=the%20cat%20sees%20a%20dog");
    assert_eq!(status, 200, "{body}");
    let walk = json(&body);
    // the library's maps for the same sentence and its own translation
    let qkv::models::load::Model::Translator { model, tokenizer, extras } = open(&run).unwrap() else {
        panic!("not a translator")
    };
    let max_len = extras.map_or(model.default_max_len(), |e| e.max_len);
    let (maps, translation) = qkv::attention_maps::of_translation(
        model.as_ref(),
        tokenizer.as_ref().unwrap(),
        max_len,
        "the cat sees a dog",
        None,
    )
    .unwrap();
    assert_eq!(walk["translation"].as_str(), Some(translation.as_str()));
    assert_eq!(walk["keys"].as_array().unwrap().len(), maps.keys.len(), "the source tokens");
    assert_eq!(walk["tokens"].as_array().unwrap().len(), maps.queries.len(), "the translation's tokens");
    for h in 0..2 {
        let want = maps.map(0, h);
        let rows = walk["layers"][0]["attention"][h].as_array().unwrap();
        assert_eq!(rows.len(), want.len(), "a row per target token");
        for (i, row) in rows.iter().enumerate() {
            let row: Vec<f64> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(close(row.iter().sum::<f64>(), 1.0, 1e-5));
            assert_eq!(row.len(), want[i].len(), "a weight per source token");
            assert!(row.iter().zip(&want[i]).all(|(a, b)| close(*a, *b as f64, 1e-6)), "head {h} row {i}");
        }
    }
    let (status, body) = get(a, "/api/sample?text=the%20cat");
    assert_eq!(status, 422, "only a GPT samples a next token");
    assert!(json(&body)["error"].as_str().unwrap().contains("only a GPT"), "{body}");
}
