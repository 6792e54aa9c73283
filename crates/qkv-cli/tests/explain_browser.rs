//! `qkv explain` in a real browser: headless Chromium, driven by Playwright's
//! core (`tests/browser/explain.mjs`), types a prompt and checks that the
//! tokens, the attention heatmap and the next-token probabilities appear and
//! equal the library's; that the temperature control changes the
//! distribution to the library's numbers at that temperature; that sampling
//! appends a token; that an over-long prompt is refused on the page; and that
//! the cost view draws both kernels. Screenshots go to
//! `target/explain-screenshots/`.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium`, or `$QKV_CHROMIUM`) and
//! `playwright-core` under `crates/qkv-cli/tests/browser/node_modules`
//! (`.ci/run` installs all three). Without them the test says so and passes,
//! unless `QKV_REQUIRE_BROWSER=1` (set in CI), where it fails.

mod common;
use common::server::{start, tiny_gpt};

use std::path::{Path, PathBuf};

use qkv::explain::walk_text;
use qkv::generate::Sampling;
use qkv::models::load::open;

fn missing_tools(browser_dir: &Path) -> Option<String> {
    let chromium = std::env::var("QKV_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium}"));
    }
    if !browser_dir.join("node_modules/playwright-core").is_dir() {
        return Some(format!("no playwright-core under {}", browser_dir.display()));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        return Some("no node".into());
    }
    None
}

#[test]
fn the_page_shows_the_library_numbers_in_a_real_browser() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if let Some(why) = missing_tools(&browser_dir) {
        assert!(std::env::var("QKV_REQUIRE_BROWSER").as_deref() != Ok("1"), "the browser test cannot run: {why}");
        eprintln!("SKIPPED: {why} (QKV_REQUIRE_BROWSER=1 makes this a failure)");
        return;
    }
    let run = tiny_gpt("explain-browser");
    let prompt = "to be or";
    let model = open(&run).unwrap();
    let at = |t: f32| walk_text(&model, prompt, &Sampling { temperature: t, ..Default::default() }, 20).unwrap();
    let (t1, t05) = (at(1.0), at(0.5));
    let cands = |w: &qkv::explain::Walk| -> Vec<serde_json::Value> {
        w.next.iter().map(|c| serde_json::json!({"id": c.id, "probability": c.probability})).collect()
    };
    let expected = serde_json::json!({
        "prompt": prompt,
        "tokens": t1.tokens.iter().map(|t| t.label.clone()).collect::<Vec<_>>(),
        "next_t1": cands(&t1),
        "next_t05": cands(&t05),
    });
    let expected_path = run.parent().unwrap().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/explain-screenshots");
    let server = start(&run);
    let out = std::process::Command::new("node")
        .current_dir(&browser_dir)
        .arg("explain.mjs")
        .arg(format!("http://{}/", server.addr))
        .arg(&expected_path)
        .arg(&shots)
        .output()
        .expect("node runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("ok: temperature 0.5: candidate 0") && stdout.contains("ok: one token appended"),
        "{stdout}"
    );
    assert!(shots.join("gpt.png").is_file() && shots.join("cost.png").is_file(), "screenshots saved");
}
