//! The encoder commands end to end: a BERT classifier trained on a CSV,
//! scored by `qkv eval` and used by `qkv classify`; an MLM used by `qkv
//! fill-mask`; a ViT trained on class folders of PNGs and used by `qkv
//! classify-image`; and the bad input each one must refuse clearly.

use std::path::Path;

mod common;
use common::{fails_with, ok, pictures, qkv, reviews, s, scratch, stderr, stdout, vocab};

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
    let (acc, f1) = (r["accuracy"].as_f64().unwrap(), r["macro_f1"].as_f64().unwrap());
    assert!(acc >= 0.9 && f1 >= 0.9, "love/hate should be learnt: accuracy {acc}, macro-F1 {f1}");
    // the held-out split is the tenth qkv set aside, not the training rows
    let n = r["examples"].as_u64().unwrap();
    assert!((20..=30).contains(&n), "{n} test rows of 240");
    // the confusion matrix: every test row counted once, the diagonal the correct ones, and drawn
    let m: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();
    let labels: Vec<String> = serde_json::from_value(r["labels"].clone()).unwrap();
    assert_eq!((m.len(), labels.len()), (2, 2));
    assert_eq!(m.iter().flatten().sum::<u64>(), n);
    let right = (0..2).map(|i| m[i][i]).sum::<u64>() as f64;
    assert!((right / n as f64 - acc).abs() < 1e-9, "the diagonal is the accuracy");
    let picture = std::fs::read_to_string(run.join("confusion.svg")).unwrap();
    assert!(picture.contains("predicted class") && labels.iter().all(|l| picture.contains(l.as_str())));
    assert_eq!(r["confusion_picture"].as_str(), Some(s(&run.join("confusion.svg"))));
    let c = qkv(&["classify", "--model", s(&run), "--json", "i love this meal", "i hate this game"]);
    ok(&c);
    let out: serde_json::Value = serde_json::from_str(&stdout(&c)).unwrap();
    assert_eq!(out[0]["label"], "pos", "{out}");
    assert_eq!(out[1]["label"], "neg", "{out}");
    let p = &out[0]["probabilities"];
    assert!((p["pos"].as_f64().unwrap() + p["neg"].as_f64().unwrap() - 1.0).abs() < 1e-4);

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
    let cands = out["masks"][0].as_array().unwrap();
    assert_eq!(cands.len(), 3);
    let probs: Vec<f64> = cands.iter().map(|c| c["probability"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs[0] <= 1.0, "{probs:?}");
    fails_with(&qkv(&["fill-mask", "--model", s(&run), "no mask here"]), &["[MASK]"]);
    // its attention: both directions, over [CLS] … [SEP]
    let a = qkv(&["attention", "--model", s(&run), "--text", "to be or not", "-o", s(&d.join("bert.svg")), "--json"]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let q: Vec<&str> = maps["queries"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(q, ["[CLS]", "to", "be", "or", "not", "[SEP]"]);
    let first = &maps["layers"][0]["heads"][0]["weights"][0];
    let row: Vec<f64> = first.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(
        (row.iter().sum::<f64>() - 1.0).abs() < 1e-5 && row.iter().all(|&x| x > 0.0),
        "{row:?}: [CLS] sees every token"
    );
    let e = qkv(&["eval", "--model", s(&run), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert!(r["masked_token_accuracy"].as_f64().is_some() && r["unigram_accuracy"].as_f64().is_some(), "{r}");
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
    assert_eq!(out[0]["top"][0]["label"], "left", "{out}");
    // not an image at all
    let junk = d.join("junk.png");
    std::fs::write(&junk, b"not a picture").unwrap();
    fails_with(&qkv(&["classify-image", "--model", s(&run), s(&junk)]), &["junk.png", "cannot read the image"]);
    // its attention over [CLS] and the 3×3 patches, and the rollout drawn over the picture
    let svg = d.join("vit.svg");
    let a = qkv(&["attention", "--model", s(&run), "--image", s(&big), "-o", s(&svg), "--json"]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(maps["queries"].as_array().unwrap().len(), 10, "[CLS] and 9 patches");
    assert_eq!(maps["queries"][1], "1,1");
    let rollout = std::fs::read_to_string(d.join("vit-rollout.svg")).unwrap();
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
    assert!(out[0]["probabilities"]["pos"].as_f64().is_some(), "{out}");
    ok(&qkv(&["eval", "--model", s(&run), "--data", s(&data), "--json"]));
}
