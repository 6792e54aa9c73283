//! The encoder commands end to end: a BERT classifier trained on a CSV,
//! scored by `qkv eval` and used by `qkv classify`; an MLM used by `qkv
//! fill-mask`; a ViT trained on class folders of PNGs and used by `qkv
//! classify-image`; and the bad input each one must refuse clearly.

use std::path::Path;

use qkv::attention_maps;
use qkv::models::load::open;

mod common;
use common::{
    close, count, fails_with, num, ok, pictures, qkv, read_json, reviews, s, scratch, stderr, stdout, svg, vocab,
};

/// A classifier's `qkv eval --json`: the confusion matrix counts every test
/// row once, accuracy and F1 are what it says, and the numbers are those its
/// run reported on the same held-out rows.
fn classifier_eval(r: &serde_json::Value, run: &Path) -> (f64, u64) {
    let m: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();
    let labels: Vec<String> = serde_json::from_value(r["labels"].clone()).unwrap();
    let k = labels.len();
    assert!(k >= 2 && m.len() == k && m.iter().all(|row| row.len() == k), "{r}");
    let n = r["examples"].as_u64().unwrap();
    assert!(n > 0 && m.iter().flatten().sum::<u64>() == n, "every test row counted once: {r}");
    let acc = num(&r["accuracy"]);
    let right = (0..k).map(|i| m[i][i]).sum::<u64>();
    assert!(close(acc, right as f64 / n as f64, 1e-12), "the diagonal is the accuracy: {r}");
    // F1 of each class from its row (true) and column (predicted)
    let f1: Vec<f64> = (0..k)
        .map(|c| {
            let tp = m[c][c] as f64;
            let (row, col) = (m[c].iter().sum::<u64>() as f64, (0..k).map(|i| m[i][c]).sum::<u64>() as f64);
            if tp == 0.0 { 0.0 } else { 2.0 * tp / (row + col) }
        })
        .collect();
    let got: Vec<f64> = r["per_class_f1"].as_array().unwrap().iter().map(num).collect();
    assert!(got.len() == k && got.iter().zip(&f1).all(|(a, b)| close(*a, *b, 1e-9)), "{f1:?}: {r}");
    assert!(close(num(&r["macro_f1"]), f1.iter().sum::<f64>() / k as f64, 1e-9), "{r}");
    assert_eq!(r["split"], "held-out test rows", "{r}");
    // the run's own report scored the same rows with the same weights
    let report = read_json(&run.join("report.json"));
    assert_eq!((report["test"].as_u64(), &report["labels"]), (Some(n), &r["labels"]), "{report}");
    for (ours, theirs) in [("accuracy", "accuracy"), ("macro_f1", "macro_f1"), ("loss", "test_loss")] {
        assert!(close(num(&r[ours]), num(&report[theirs]), 1e-6), "{ours}: {r} vs {report}");
    }
    (acc, n)
}

/// `qkv classify --json` of `texts`: each text echoed with a distribution
/// over the labels and the most likely label.
fn classified(out: &serde_json::Value, texts: &[&str], labels: &[&str]) {
    let rows = out.as_array().unwrap();
    assert_eq!(rows.len(), texts.len(), "{out}");
    for (row, text) in rows.iter().zip(texts) {
        assert_eq!(row["text"].as_str(), Some(*text), "{row}");
        let p = row["probabilities"].as_object().unwrap();
        assert_eq!(p.len(), labels.len(), "{row}");
        let probs: Vec<(&str, f64)> = labels.iter().map(|&l| (l, num(&p[l]))).collect();
        assert!(probs.iter().all(|(_, x)| (0.0..=1.0).contains(x)), "{row}");
        assert!(close(probs.iter().map(|(_, x)| x).sum(), 1.0, 1e-4), "{row}");
        let best = probs.iter().fold(probs[0], |a, &b| if b.1 > a.1 { b } else { a });
        assert_eq!(row["label"].as_str(), Some(best.0), "the most likely label: {row}");
    }
}

#[rustfmt::skip]
const TINY_BERT: &[&str] = &[
    "--threads", "2", "train", "--model", "bert", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
    "--max-len", "16", "--quiet",
];

#[test]
fn bert_classifier_trains_on_a_csv_and_is_scored_on_its_held_out_rows() {
    let d = scratch("cls");
    let data = d.join("reviews.csv");
    reviews(&data, None);
    let run = d.join("run");
    let v = vocab();
    let mut args: Vec<&str> = TINY_BERT.to_vec();
    #[rustfmt::skip]
    args.extend([
        "--task", "classify", "--data", s(&data), "--tokenizer", &v, "--text-column", "text",
        "--label-column", "label", "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--out-dir", s(&run),
    ]);
    ok(&qkv(&args));
    let e = qkv(&["eval", "--model", s(&run), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    let (acc, n) = classifier_eval(&r, &run);
    let f1 = num(&r["macro_f1"]);
    assert!(acc >= 0.9 && f1 >= 0.9, "love/hate should be learnt: accuracy {acc}, macro-F1 {f1}");
    // the held-out split is the tenth qkv set aside, not the training rows
    assert!((20..=30).contains(&n), "{n} test rows of 240");
    // the confusion matrix drawn: a cell per count, each showing its number
    let m: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();
    let labels: Vec<String> = serde_json::from_value(r["labels"].clone()).unwrap();
    assert_eq!(labels, ["neg", "pos"]);
    let picture = svg(&run.join("confusion.svg"));
    assert!(picture.contains("predicted class") && picture.contains("true class"), "{picture}");
    assert!(labels.iter().all(|l| count(&picture, &format!(">{l}</text>")) == 2), "each label on both axes");
    assert_eq!(count(&picture, "<rect"), 1 + 2 * 2, "{picture}");
    let shown: Vec<u64> = picture
        .lines()
        .filter(|l| l.contains("text-anchor=\"middle\""))
        .map(|l| l.rsplit_once("\">").unwrap().1.trim_end_matches("</text>").parse().unwrap())
        .collect();
    assert_eq!(shown, m.concat(), "the counts in the cells, row by row");
    assert_eq!(r["confusion_picture"].as_str(), Some(s(&run.join("confusion.svg"))));
    let texts = ["i love this meal", "i hate this game"];
    let c = qkv(&["classify", "--model", s(&run), "--json", texts[0], texts[1]]);
    ok(&c);
    let out: serde_json::Value = serde_json::from_str(&stdout(&c)).unwrap();
    classified(&out, &texts, &["neg", "pos"]);
    assert_eq!(out[0]["label"], "pos", "{out}");
    assert_eq!(out[1]["label"], "neg", "{out}");

    // bad input: a missing column, a label the model never saw, a model of the wrong kind
    let bad_dir = d.join("bad");
    let mut bad: Vec<&str> = TINY_BERT.to_vec();
    #[rustfmt::skip]
    bad.extend([
        "--task", "classify", "--data", s(&data), "--tokenizer", &v, "--text-column", "text",
        "--label-column", "sentiment", "--out-dir", s(&bad_dir),
    ]);
    fails_with(&qkv(&bad), &["sentiment"]);
    let unseen = d.join("unseen.csv");
    reviews(&unseen, Some("meh"));
    fails_with(&qkv(&["eval", "--model", s(&run), "--data", s(&unseen)]), &["meh"]);
    fails_with(&qkv(&["fill-mask", "--model", s(&run), "a [MASK]"]), &["not a masked-language model"]);
}

#[test]
fn mlm_fills_masks_and_refuses_text_without_one() {
    let d = scratch("mlm");
    let data = d.join("corpus.txt");
    let text: String = (0..300).map(|i| format!("to be or not to be, that is the question {i}.\n")).collect();
    std::fs::write(&data, text).unwrap();
    let run = d.join("mlm");
    let v = vocab();
    let mut args: Vec<&str> = TINY_BERT.to_vec();
    args.extend(["--task", "mlm", "--data", s(&data), "--tokenizer", &v, "--max-steps", "30", "--out-dir", s(&run)]);
    ok(&qkv(&args));
    let f = qkv(&["fill-mask", "--model", s(&run), "--json", "--top-k", "3", "to be or not to [MASK] ."]);
    ok(&f);
    let out: serde_json::Value = serde_json::from_str(&stdout(&f)).unwrap();
    assert_eq!(out["masks"].as_array().unwrap().len(), 1, "one [MASK]: {out}");
    let cands = out["masks"][0].as_array().unwrap();
    assert_eq!(cands.len(), 3);
    // three different tokens of the vocabulary, most likely first
    let words: Vec<String> = std::fs::read_to_string(&v).unwrap().lines().map(String::from).collect();
    let tokens: Vec<&str> = cands.iter().map(|c| c["token"].as_str().unwrap()).collect();
    assert!(tokens.iter().all(|t| words.iter().any(|w| w == t)), "{tokens:?}");
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2], "{tokens:?}");
    let probs: Vec<f64> = cands.iter().map(|c| num(&c["probability"])).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs[2] > 0.0, "{probs:?}");
    // the most likely of V tokens has at least 1/V; the three together at most 1
    assert!(probs[0] >= 1.0 / words.len() as f64 && probs.iter().sum::<f64>() <= 1.0 + 1e-6, "{probs:?}");
    fails_with(&qkv(&["fill-mask", "--model", s(&run), "no mask here"]), &["[MASK]"]);
    // its attention: both directions, over [CLS] … [SEP], the library's numbers
    let a = qkv(&["attention", "--model", s(&run), "--text", "to be or not", "-o", s(&d.join("bert.svg")), "--json"]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let q: Vec<&str> = maps["queries"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(q, ["[CLS]", "to", "be", "or", "not", "[SEP]"]);
    assert_eq!(maps["keys"], maps["queries"], "self-attention");
    let lib = attention_maps::of_text(&open(&run).unwrap(), "to be or not").unwrap();
    let layers = maps["layers"].as_array().unwrap();
    assert_eq!((layers.len(), layers[0]["heads"].as_array().unwrap().len()), (1, 2), "1 layer × 2 heads");
    for h in 0..2 {
        let want = lib.map(0, h);
        let rows = maps["layers"][0]["heads"][h]["weights"].as_array().unwrap();
        assert_eq!(rows.len(), 6);
        for (i, row) in rows.iter().enumerate() {
            let row: Vec<f64> = row.as_array().unwrap().iter().map(num).collect();
            assert!(close(row.iter().sum(), 1.0, 1e-5) && row.iter().all(|&x| x > 0.0), "head {h} row {i}: {row:?}");
            assert!(row.len() == 6 && row.iter().zip(&want[i]).all(|(a, b)| close(*a, *b as f64, 1e-6)), "{row:?}");
        }
    }
    assert_eq!(count(&svg(&d.join("bert.svg")), "<rect"), 1 + 2 * 6 * 6, "a cell per weight");
    // scored as its run scored it: the same masked tokens of the last tenth
    let e = qkv(&["eval", "--model", s(&run), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    let test = &read_json(&run.join("report.json"))["test"];
    assert_eq!(r["split"], "last 10 % of the text", "{r}");
    assert!(r["masked_tokens"].as_u64().is_some_and(|n| n > 0) && r["masked_tokens"] == test["masked"], "{r}");
    for (ours, theirs) in [("masked_token_accuracy", "accuracy"), ("unigram_accuracy", "unigram_accuracy")] {
        assert!((0.0..=1.0).contains(&num(&r[ours])), "{r}");
        assert!(close(num(&r[ours]), num(&test[theirs]), 1e-12), "{ours}: {r} vs {test}");
    }
    assert!(num(&r["loss"]) > 0.0 && close(num(&r["loss"]), num(&test["loss"]), 1e-6), "{r} vs {test}");
}

#[test]
fn vit_trains_on_class_folders_and_classifies_pictures_of_other_sizes() {
    let d = scratch("vit");
    let data = d.join("pictures");
    pictures(&data);
    let run = d.join("vit");
    #[rustfmt::skip]
    ok(&qkv(&[
        "--threads", "2", "train", "--model", "vit", "--data", s(&data), "--image-size", "12", "--patch-size", "4",
        "--channels", "1", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--epochs", "8",
        "--batch-size", "8", "--lr", "3e-3", "--quiet", "--out-dir", s(&run),
    ]));
    // a bigger colour picture is resized and converted, and says so
    let big = d.join("big.png");
    let rgb =
        image::RgbImage::from_fn(
            24,
            24,
            |x, _| if x < 12 { image::Rgb([230, 220, 210]) } else { image::Rgb([5, 5, 5]) },
        );
    rgb.save(&big).unwrap();
    let c = qkv(&["classify-image", "--model", s(&run), "--json", s(&big)]);
    ok(&c);
    let err = stderr(&c);
    assert!(err.contains("resized from 24×24") && err.contains("colour to grey"), "{err}");
    let out: serde_json::Value = serde_json::from_str(&stdout(&c)).unwrap();
    assert_eq!(out.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out[0]["image"].as_str(), Some(s(&big)), "{out}");
    assert_eq!(out[0]["top"][0]["label"], "left", "{out}");
    // both classes, most likely first, their probabilities a distribution
    let top = out[0]["top"].as_array().unwrap();
    assert_eq!((top.len(), &top[1]["label"]), (2, &serde_json::json!("right")), "{out}");
    let p: Vec<f64> = top.iter().map(|c| num(&c["probability"])).collect();
    assert!(p[0] >= p[1] && p[1] >= 0.0 && close(p[0] + p[1], 1.0, 1e-5), "{out}");
    // not an image at all
    let junk = d.join("junk.png");
    std::fs::write(&junk, b"not a picture").unwrap();
    fails_with(&qkv(&["classify-image", "--model", s(&run), s(&junk)]), &["junk.png", "cannot read the image"]);
    // its attention over [CLS] and the 3×3 patches, and the rollout drawn over the picture
    let svg_path = d.join("vit.svg");
    let a = qkv(&["attention", "--model", s(&run), "--image", s(&big), "-o", s(&svg_path), "--json"]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(maps["queries"].as_array().unwrap().len(), 10, "[CLS] and 9 patches");
    assert_eq!(maps["queries"][1], "1,1");
    assert_eq!(maps["queries"][9], "3,3");
    let heads = maps["layers"][0]["heads"].as_array().unwrap();
    assert_eq!((maps["layers"].as_array().unwrap().len(), heads.len()), (1, 2), "1 layer × 2 heads");
    for head in heads {
        let rows = head["weights"].as_array().unwrap();
        assert_eq!(rows.len(), 10);
        for row in rows {
            let row: Vec<f64> = row.as_array().unwrap().iter().map(num).collect();
            assert!(row.len() == 10 && close(row.iter().sum(), 1.0, 1e-5), "{row:?}");
            assert!(row.iter().all(|&x| x > 0.0), "every patch sees every other: {row:?}");
        }
    }
    assert_eq!(count(&svg(&svg_path), "<rect"), 1 + 2 * 10 * 10, "a cell per weight");
    let rollout = svg(&d.join("vit-rollout.svg"));
    assert!(rollout.contains("data:image/png;base64,") && rollout.matches("<rect").count() == 1 + 9, "{rollout}");
    fails_with(&qkv(&["attention", "--model", s(&run), "--image", s(&junk)]), &["junk.png", "cannot read the image"]);
    fails_with(&qkv(&["attention", "--model", s(&run), "--text", "hello"]), &["give it an image"]);
}

/// `--init-from` a bare Hugging Face `BertModel` (as sentence-transformers
/// ships): its encoder and tokenizer are used, and a classifier is trained on top.
#[test]
fn a_bare_bert_model_is_fine_tuned_with_init_from() {
    let d = scratch("bare");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qkv/tests/fixtures/hf/bert-bare");
    let model = d.join("bert");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    // a WordPiece vocabulary of exactly the fixture's 97 ids
    let words = ["i", "love", "hate", "the", "red", "blue", "green", "big", "small", "movie", "book", "song", "game"];
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec();
    vocab.extend(words.iter().map(|w| w.to_string()));
    vocab.extend((vocab.len()..97).map(|i| format!("unused{i}")));
    std::fs::write(model.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let mut csv = String::from("text,label\n");
    for verb in ["love", "hate"] {
        for adj in ["red", "blue", "green", "big", "small"] {
            for noun in ["movie", "book", "song", "game"] {
                for det in ["the", "i"] {
                    let label = if verb == "love" { "pos" } else { "neg" };
                    csv.push_str(&format!("i {verb} {det} {adj} {noun},{label}\n"));
                }
            }
        }
    }
    let data = d.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let run = d.join("run");
    #[rustfmt::skip]
    let o = qkv(&[
        "--threads", "2", "train", "--model", "bert", "--task", "classify", "--init-from", s(&model),
        "--data", s(&data), "--text-column", "text", "--label-column", "label", "--epochs", "3",
        "--batch-size", "8", "--max-len", "16", "--out-dir", s(&run), "--quiet",
    ]);
    ok(&o);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 36, "the encoder's own size, not the command line's default");
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let c = qkv(&["classify", "--model", s(&run), "--json", "i love the red game"]);
    ok(&c);
    let out: serde_json::Value = serde_json::from_str(&stdout(&c)).unwrap();
    classified(&out, &["i love the red game"], &["neg", "pos"]);
    let e = qkv(&["eval", "--model", s(&run), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    let (_, n) = classifier_eval(&r, &run);
    assert!(n < 80, "the held-out rows, not all 80: {r}");
}
