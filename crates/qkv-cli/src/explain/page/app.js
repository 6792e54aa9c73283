// qkv explain: asks the server for the numbers of one input through the
// model and draws them. Every number shown comes from the server; this file
// only draws.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, walk: null, focus: null, seed: 1, pending: 0 };

// ---------------------------------------------------------------- helpers

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function showNote(message) {
  $("note").textContent = message ? `Note: ${message}` : "";
  $("note").hidden = !message;
}

/// white (0) to dark blue (1): the colour of a weight
function shade(v) {
  const s = Math.max(0, Math.min(1, v));
  return `rgb(${Math.round(255 * (1 - s))},${Math.round(255 * (1 - 0.8 * s))},255)`;
}

/// blue (negative), white (0), red (positive), scaled by the largest magnitude
function diverging(v, top) {
  const s = Math.max(-1, Math.min(1, v / (top || 1)));
  return s >= 0
    ? `rgb(255,${Math.round(255 * (1 - s))},${Math.round(255 * (1 - s))})`
    : `rgb(${Math.round(255 * (1 + s))},${Math.round(255 * (1 + s))},255)`;
}

/// Draw a matrix of values as coloured cells, with optional row and column labels.
function heatmap(canvas, rows, { color, rowLabels, colLabels, cell } = {}) {
  const n = rows.length, m = n ? rows[0].length : 0;
  const size = cell || Math.max(4, Math.min(22, Math.floor(560 / Math.max(m, 1))));
  const left = rowLabels ? 90 : 0, top = colLabels ? 70 : 0;
  canvas.width = left + m * size + 2;
  canvas.height = top + n * size + 2;
  canvas.dataset.rows = n;
  canvas.dataset.cols = m;
  const g = canvas.getContext("2d");
  g.fillStyle = "white";
  g.fillRect(0, 0, canvas.width, canvas.height);
  const maxAbs = Math.max(1e-9, ...rows.flat().map(Math.abs));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      g.fillStyle = color ? color(rows[i][j], maxAbs) : shade(rows[i][j]);
      g.fillRect(left + j * size, top + i * size, size - (size > 6 ? 1 : 0), size - (size > 6 ? 1 : 0));
    }
  }
  g.fillStyle = "#1d2330";
  g.font = "11px system-ui, sans-serif";
  // labels 11 px high: every `step`-th one when the cells are smaller than that
  const step = Math.ceil(12 / size);
  if (rowLabels) {
    g.textAlign = "right";
    rowLabels.forEach((l, i) => i % step === 0 && g.fillText(l.slice(0, 12), left - 4, top + i * size + Math.min(size, 12) * 0.8));
  }
  if (colLabels) {
    colLabels.forEach((l, j) => {
      if (j % step) return;
      g.save();
      g.translate(left + j * size + size * 0.7, top - 4);
      g.rotate(-Math.PI / 2);
      g.textAlign = "left";
      g.fillText(l.slice(0, 12), 0, 0);
      g.restore();
    });
  }
  return { left, top, size };
}

function option(select, count) {
  const keep = select.value;
  select.innerHTML = "";
  for (let i = 1; i <= count; i++) {
    const o = document.createElement("option");
    o.value = i - 1;
    o.textContent = i;
    select.appendChild(o);
  }
  if (keep && Number(keep) < count) select.value = keep;
}

// ---------------------------------------------------------------- the model

async function loadModel() {
  const info = await getJson("/api/model");
  state.info = info;
  const millions = `${(info.parameters / 1e6).toFixed(2)} M parameters`;
  $("model").textContent =
    info.family === "encoder-decoder"
      ? `${info.describe}: ${info.layers} decoder layers × ${info.heads} cross-attention heads, ${millions}, ` +
        `sentences up to ${info.context} tokens`
      : `${info.describe}: ${info.layers} layers × ${info.heads} heads, width ${info.width}, ${millions}, ` +
        `context ${info.context} tokens, ${info.positions} positions`;
  option($("layer"), info.layers);
  option($("head"), info.heads);
  const image = info.input === "image";
  $("input-text").hidden = image;
  $("input-image").hidden = !image;
  if (image) {
    $("tokens-why").textContent =
      "The image is cut into patches (row, column); each patch, flattened and projected, becomes a token, " +
      "after a [CLS] token whose final vector is classified. Hover a token to see what it attends to.";
  }
  $("sampling").hidden = info.family !== "gpt" && info.input !== "masks";
  $("embeddings").hidden = info.input === "source";
  $("stream-article").hidden = info.input === "source";
  $("sample").hidden = info.family !== "gpt";
  if (info.position_table.length) {
    heatmap($("positions"), info.position_table, { color: diverging, cell: 10 });
  } else {
    $("positions-why").textContent =
      `This model adds no position vectors: its positions are ${info.positions} (they act inside attention).`;
  }
  if (info.input === "source") {
    $("prompt-label").textContent = "Source sentence (the model translates it; the page shows its cross-attention)";
    $("tokens-why").textContent =
      "The translation's tokens (the decoder's queries). Hover one to see which source tokens it reads.";
  }
  if (!image) {
    const examples = { masks: "the [MASK] is on the table .", source: "the cat sees a dog" };
    $("prompt").value = examples[info.input] || "ROMEO: But soft, what light";
    requestWalk();
  }
}

// ---------------------------------------------------------------- a walk

function query(extra) {
  const p = new URLSearchParams({
    text: $("prompt").value,
    temperature: $("temperature").value,
    top_k: $("top-k").value || "0",
    top_p: $("top-p").value,
  });
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}

let timer = null;
function requestWalk() {
  clearTimeout(timer);
  timer = setTimeout(walkNow, 120);
}

async function walkNow() {
  const started = performance.now();
  const ticket = ++state.pending;
  document.body.dataset.busy = "1";
  try {
    const walk = await getJson(`/api/walk?${query()}`);
    if (ticket !== state.pending) return; // a newer request is on its way
    showError("");
    render(walk);
    $("timing").textContent = `updated in ${Math.round(performance.now() - started)} ms`;
  } catch (e) {
    if (ticket === state.pending) showError(e.message);
  } finally {
    if (ticket === state.pending) delete document.body.dataset.busy;
  }
}

function render(walk) {
  state.walk = walk;
  document.body.dataset.walked = String(Number(document.body.dataset.walked || 0) + 1);
  showNote(walk.note);
  const labels = walk.tokens.map((t) => t.label);
  // 1. tokens
  chips($("tokens"), walk.tokens, true);
  const cross = walk.keys.length > 0;
  $("keys").hidden = $("keys-caption").hidden = !cross;
  chips($("keys"), cross ? walk.keys : [], false);
  // 2. embeddings
  const cell = Math.max(4, Math.min(12, Math.floor(360 / Math.max(1, labels.length))));
  heatmap($("token-embedding"), walk.token_embedding, { color: diverging, rowLabels: labels, cell });
  const pos = $("position-embedding");
  pos.hidden = !walk.position_embedding.length;
  if (walk.position_embedding.length) heatmap(pos, walk.position_embedding, { color: diverging, rowLabels: labels, cell });
  $("position-caption").textContent = walk.position_embedding.length
    ? "position embeddings"
    : `no position vectors added (${state.info.positions})`;
  // 3–5
  drawAttention();
  focus(state.focus !== null && state.focus < walk.tokens.length ? state.focus : walk.tokens.length - 1);
  drawOutput(walk);
}

/// One chip per token (its text and id); hovering a query chip focuses it.
function chips(box, tokens, queries) {
  box.innerHTML = "";
  tokens.forEach((t, i) => {
    const chip = document.createElement("span");
    chip.className = "token";
    chip.dataset.i = i;
    chip.title = `token ${i}: id ${t.id}`;
    chip.innerHTML = `<span class="piece"></span><span class="id">${t.id}</span>`;
    chip.querySelector(".piece").textContent = t.label;
    if (queries) chip.addEventListener("mouseenter", () => focus(i));
    box.appendChild(chip);
  });
}

/// The tokens attended to: the source's for cross-attention, else the tokens themselves.
function keyLabels(walk) {
  return (walk.keys.length ? walk.keys : walk.tokens).map((t) => t.label);
}

function drawAttention() {
  const walk = state.walk;
  if (!walk) return;
  const layer = walk.layers[Number($("layer").value) || 0];
  const map = layer.attention[Number($("head").value) || 0];
  heatmap($("attention"), map, { rowLabels: walk.tokens.map((t) => t.label), colLabels: keyLabels(walk) });
}

/// Hovering token i: what it reads (chips shaded by its attention row) and its stream.
function focus(i) {
  const walk = state.walk;
  if (!walk) return;
  state.focus = i;
  const layer = walk.layers[Number($("layer").value) || 0];
  const row = layer.attention[Number($("head").value) || 0][i];
  const cross = walk.keys.length > 0;
  document.querySelectorAll("#tokens .token").forEach((chip, j) => chip.classList.toggle("focus", j === i));
  document.querySelectorAll(cross ? "#keys .token" : "#tokens .token").forEach((chip, j) => {
    chip.style.background = shade(row[j]);
    chip.style.color = row[j] > 0.6 ? "white" : "";
  });
  if (!walk.input_norm.length) {
    $("focus-token").textContent = `“${walk.tokens[i].label}” (token ${i})`;
    return; // no residual stream to show (cross-attention only)
  }
  $("focus-token").textContent = `“${walk.tokens[i].label}” (token ${i})`;
  const body = $("stream").querySelector("tbody");
  body.innerHTML = "";
  const fmt = (v) => v.toFixed(2);
  body.insertAdjacentHTML("beforeend", `<tr><td>input</td><td></td><td></td><td>${fmt(walk.input_norm[i])}</td></tr>`);
  walk.layers.forEach((l, n) => {
    body.insertAdjacentHTML(
      "beforeend",
      `<tr><td>${n + 1}</td><td>${fmt(l.attention_norm[i])}</td><td>${fmt(l.mlp_norm[i])}</td><td>${fmt(l.residual_norm[i])}</td></tr>`,
    );
  });
}

function bars(container, title, candidates) {
  if (title) {
    const h = document.createElement("h3");
    h.textContent = title;
    container.appendChild(h);
  }
  const top = Math.max(1e-12, ...candidates.slice(0, 10).map((c) => c.probability));
  candidates.slice(0, 10).forEach((c) => {
    const row = document.createElement("div");
    row.className = "cand";
    row.dataset.id = c.id;
    row.dataset.probability = c.probability;
    row.innerHTML = `<span class="label"></span><span class="bar"></span><span class="p"></span>`;
    row.querySelector(".label").textContent = c.label;
    row.querySelector(".bar").style.width = `${Math.max(1, (300 * c.probability) / top)}px`; // longest: the top one
    row.querySelector(".p").textContent = `${(100 * c.probability).toFixed(2)}%`;
    container.appendChild(row);
  });
}

function drawOutput(walk) {
  const out = $("next");
  out.innerHTML = "";
  if (walk.translation !== null && walk.translation !== undefined) {
    const h = document.createElement("h3");
    h.textContent = "the translation (beam search, 4 hypotheses)";
    const p = document.createElement("p");
    p.id = "translation";
    p.textContent = walk.translation;
    out.append(h, p);
  }
  if (walk.next.length) bars(out, "the next token", walk.next);
  walk.masks.forEach((m) => bars(out, `[MASK] at token ${m.position}`, m.candidates));
  if (walk.classes.length) bars(out, "the class", walk.classes);
  if (!out.children.length) out.textContent = "A bare encoder: its output is the vectors above (see qkv embed).";
}

// ---------------------------------------------------------------- sampling

async function sampleOne() {
  $("sample").disabled = true;
  try {
    const answer = await getJson(`/api/sample?${query({ seed: state.seed++ })}`);
    $("prompt").value = answer.text;
    await walkNow();
  } catch (e) {
    showError(e.message);
  } finally {
    $("sample").disabled = false;
  }
}

// ---------------------------------------------------------------- an image

async function uploadImage(file) {
  const started = performance.now();
  try {
    const bitmap = await createImageBitmap(file).catch(() => null);
    if (bitmap) {
      const c = $("picture");
      c.getContext("2d").drawImage(bitmap, 0, 0, c.width, c.height);
    }
    const walk = await getJson("/api/image", { method: "POST", body: file });
    showError("");
    render(walk);
    $("timing").textContent = `updated in ${Math.round(performance.now() - started)} ms`;
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------- cost

function lineChart(svg, points, series, { log }) {
  const w = Number(svg.getAttribute("width")), h = Number(svg.getAttribute("height"));
  const pad = { l: 58, r: 28, t: 10, b: 30 };
  const xs = points.map((p) => p.t);
  const ys = series.flatMap((s) => points.map((p) => p[s.key])).filter((v) => v > 0);
  const [x0, x1] = [Math.log2(Math.min(...xs)), Math.log2(Math.max(...xs))];
  const [y0, y1] = [Math.log10(Math.min(...ys)), Math.log10(Math.max(...ys))];
  const X = (t) => pad.l + ((Math.log2(t) - x0) / (x1 - x0 || 1)) * (w - pad.l - pad.r);
  const Y = (v) => h - pad.b - ((Math.log10(v) - y0) / (y1 - y0 || 1)) * (h - pad.t - pad.b);
  let out = `<line x1="${pad.l}" y1="${h - pad.b}" x2="${w - pad.r}" y2="${h - pad.b}" stroke="#999"/>`;
  out += `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${h - pad.b}" stroke="#999"/>`;
  xs.forEach((t) => (out += `<text x="${X(t) - 10}" y="${h - 12}">${t}</text>`));
  for (let e = Math.ceil(y0); e <= Math.floor(y1); e++) {
    out += `<text x="4" y="${Y(10 ** e) + 4}">${log(10 ** e)}</text>`;
  }
  series.forEach((s, k) => {
    const d = points.map((p, i) => `${i ? "L" : "M"}${X(p.t).toFixed(1)},${Y(p[s.key]).toFixed(1)}`).join("");
    out += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`;
    out += `<text x="${pad.l + 8}" y="${pad.t + 12 + 14 * k}" style="fill:${s.color}">${s.name}</text>`;
  });
  out += `<text x="${w / 2 - 30}" y="${h - 1}">sequence length T</text>`;
  svg.innerHTML = out;
}

async function measure() {
  $("measure").disabled = true;
  $("measure").textContent = "measuring…";
  try {
    const cost = await getJson("/api/cost");
    const series = (a, b) => [
      { key: a, name: "naive", color: "#c0392b" },
      { key: b, name: "tiled", color: "#1f4fd1" },
    ];
    lineChart($("cost-time"), cost.points, series("naive_ms", "tiled_ms"), { log: (v) => `${v >= 1 ? v : v.toPrecision(1)} ms` });
    const bytes = (v) => (v >= 1e9 ? `${v / 1e9} GB` : v >= 1e6 ? `${v / 1e6} MB` : v >= 1e3 ? `${v / 1e3} kB` : `${v} B`);
    lineChart($("cost-memory"), cost.points, series("naive_bytes", "tiled_bytes"), { log: bytes });
    showError("");
  } catch (e) {
    showError(e.message);
  } finally {
    $("measure").disabled = false;
    $("measure").textContent = "Measure again";
  }
}

// ---------------------------------------------------------------- wiring

$("prompt").addEventListener("input", requestWalk);
$("temperature").addEventListener("input", () => {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  requestWalk();
});
$("top-p").addEventListener("input", () => {
  $("top-p-value").textContent = Number($("top-p").value).toFixed(2);
  requestWalk();
});
$("top-k").addEventListener("input", requestWalk);
$("layer").addEventListener("change", () => { drawAttention(); focus(state.focus ?? 0); });
$("head").addEventListener("change", () => { drawAttention(); focus(state.focus ?? 0); });
$("sample").addEventListener("click", sampleOne);
$("image").addEventListener("change", (e) => e.target.files[0] && uploadImage(e.target.files[0]));
$("measure").addEventListener("click", measure);
document.querySelectorAll(".tab").forEach((tab) =>
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    $("view-inside").hidden = tab.dataset.view !== "inside";
    $("view-cost").hidden = tab.dataset.view !== "cost";
  }),
);
loadModel().catch((e) => showError(e.message));
