// A screenshot of a running `qkv explain` page, for the docs, and the time
// from a changed prompt to the redrawn page (what the page's "updated in"
// line measures: the request, the model, and the drawing).
//
//   node screenshot.mjs URL OUT.png [--prompt TEXT] [--image FILE] [--hover N] [--layer L] [--repeat R]
import { chromium } from "playwright-core";

const [url, out, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, "")] = rest[i + 1];

const browser = await chromium.launch({
  executablePath: process.env.QKV_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
  ],
});
const walked = (page) => page.evaluate(() => Number(document.body.dataset.walked || 0));
const settle = (page, n) =>
  page.waitForFunction((k) => Number(document.body.dataset.walked || 0) > k && !document.body.dataset.busy, n, {
    timeout: 120000,
  });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
  await page.goto(url);
  await page.waitForFunction(() => !document.getElementById("model").textContent.startsWith("loading"));
  await page.waitForTimeout(500);
  if (opt.image) {
    const n = await walked(page);
    await page.setInputFiles("#image", opt.image);
    await settle(page, n);
  }
  if (opt.prompt) {
    const times = [];
    for (let r = 0; r < Number(opt.repeat || 1); r++) {
      // alternate a trailing space so each round is a new prompt
      const n = await walked(page);
      await page.fill("#prompt", r % 2 ? `${opt.prompt} ` : opt.prompt);
      await settle(page, n);
      times.push(Number((await page.textContent("#timing")).match(/\d+/)[0]));
    }
    console.log(JSON.stringify({ updated_ms: times }));
  }
  if (opt.layer) {
    await page.selectOption("#layer", { value: String(Number(opt.layer) - 1) });
  }
  if (opt.hover) await page.hover(`#tokens .token >> nth=${opt.hover}`);
  await page.screenshot({ path: out, fullPage: true });
} finally {
  await browser.close();
}
