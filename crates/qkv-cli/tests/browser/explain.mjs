// Drives `qkv explain` in a real (headless) Chromium with Playwright's core.
//
//   node explain.mjs URL EXPECTED.json SCREENSHOT_DIR
//
// EXPECTED.json holds what the library computes for the prompt (written by
// the Rust test that starts the server): the next-token candidates at
// temperature 1 and at 0.5. Prints one line per check; exits non-zero on
// the first failure.
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";

const [url, expectedPath, shots] = process.argv.slice(2);
const expected = JSON.parse(readFileSync(expectedPath, "utf8"));
mkdirSync(shots, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

async function walked(page) {
  return Number((await page.locator("body").getAttribute("data-walked")) || 0);
}

/// Wait until the page has drawn a walk after `count` walks, and none is pending.
async function nextWalk(page, count) {
  await page.waitForFunction(
    (n) => Number(document.body.dataset.walked || 0) > n && !document.body.dataset.busy,
    count,
    { timeout: 30000 },
  );
}

async function candidates(page) {
  return page.$$eval("#next .cand", (rows) =>
    rows.map((r) => ({ id: Number(r.dataset.id), probability: Number(r.dataset.probability) })),
  );
}

function same(got, want, what) {
  const n = Math.min(10, want.length);
  check(got.length === n, `${what}: ${n} candidates shown (got ${got.length})`);
  for (let i = 0; i < n; i++) {
    check(got[i].id === want[i].id, `${what}: candidate ${i} is token ${want[i].id} (got ${got[i].id})`);
    const d = Math.abs(got[i].probability - want[i].probability);
    check(d < 1e-9, `${what}: candidate ${i} has the library's probability ${want[i].probability} (off by ${d})`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.QKV_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1600 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => !document.getElementById("model").textContent.startsWith("loading"));
  check((await page.textContent("#model")).includes("layers"), "the model is described");
  // the example prompt is walked (or refused: a small model may not know its characters)
  await page.waitForFunction(
    () => (Number(document.body.dataset.walked || 0) > 0 || !document.getElementById("error").hidden) && !document.body.dataset.busy,
    null,
    { timeout: 30000 },
  );
  // type a prompt
  let count = await walked(page);
  await page.fill("#prompt", "");
  await page.type("#prompt", expected.prompt, { delay: 15 });
  await nextWalk(page, count);
  const tokens = await page.$$eval("#tokens .token .piece", (els) => els.map((e) => e.textContent));
  check(tokens.length === expected.tokens.length, `${expected.tokens.length} tokens shown (got ${tokens.length})`);
  check(tokens.join("|") === expected.tokens.join("|"), `the tokens are the tokenizer's: ${tokens.join("|")}`);
  const rows = Number(await page.getAttribute("#attention", "data-rows"));
  check(rows === expected.tokens.length, `the attention heatmap has a row per token (${rows})`);
  same(await candidates(page), expected.next_t1, "temperature 1");
  // hover a token: the chips show what it reads
  await page.hover("#tokens .token >> nth=2");
  const shaded = await page.$$eval("#tokens .token", (els) => els.filter((e) => e.style.background).length);
  check(shaded === expected.tokens.length, "hovering a token shades every chip by its attention");
  check((await page.textContent("#focus-token")).includes("token 2"), "the stream table follows the hovered token");
  await page.screenshot({ path: `${shots}/gpt.png`, fullPage: true });
  // move the temperature: the distribution changes, to the library's numbers at 0.5
  count = await walked(page);
  await page.fill("#temperature", "0.5");
  await nextWalk(page, count);
  const cooler = await candidates(page);
  same(cooler, expected.next_t05, "temperature 0.5");
  check(cooler[0].probability > expected.next_t1[0].probability, "a lower temperature sharpens the distribution");
  // sample one token: the prompt grows by one token and is walked again
  count = await walked(page);
  await page.click("#sample");
  await nextWalk(page, count);
  const grown = await page.inputValue("#prompt");
  check(grown.startsWith(expected.prompt) && grown.length === expected.prompt.length + 1, `one token appended: ${JSON.stringify(grown)}`);
  const after = await page.$$eval("#tokens .token", (els) => els.length);
  check(after === expected.tokens.length + 1, "the new token is shown");
  // a prompt that is too long: a clear message on the page
  await page.fill("#prompt", "a".repeat(4001));
  await page.waitForSelector("#error:not([hidden])");
  check((await page.textContent("#error")).includes("at most 4000"), "an over-long prompt is refused with its reason");
  // the cost of attention, measured live, and the positions
  await page.click("#tab-cost");
  await page.click("#measure");
  await page.waitForSelector("#cost-time path", { timeout: 60000 });
  check((await page.$$("#cost-time path")).length === 2 && (await page.$$("#cost-memory path")).length === 2, "both kernels drawn");
  check(Number(await page.getAttribute("#positions", "data-rows")) > 0, "the positional embeddings are drawn");
  await page.screenshot({ path: `${shots}/cost.png`, fullPage: true });
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
} finally {
  await browser.close();
}
