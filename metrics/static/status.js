// The /status dashboard: polls /metrics with the key typed in (kept in sessionStorage: this tab only,
// not on disk for whoever opens the browser next) and draws the last minutes as SVG line charts.
// Rates are counter differences between two polls.
"use strict";

const POLL_S = Number(new URLSearchParams(location.search).get("interval")) || 3;
const HISTORY_S = 600; // charts keep the last 10 minutes...
const MIN_SPAN_S = 30; // ...and show at least 30 s, so a fresh page is not squeezed against "now"
const KEY_STORE = "llm-server-api-key";
const $ = (id) => document.getElementById(id);
const history = []; // {t, requests_s, prompt_s, completion_s, queue, embed_queue, wait, ttft, cpu, rss}
let previous = null;
let timer = null;

const num = (x, digits = 0) => (x == null ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: digits }));
const mb = (bytes) => bytes / 1048576;
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
}

function show(text, kind) {
  $("message").textContent = text;
  $("message").className = kind;
}

function setField(name, text) {
  document.querySelectorAll(`[data-field="${name}"]`).forEach((el) => (el.textContent = text));
}

async function poll() {
  const key = $("key").value.trim();
  if (!key) return show("Enter an API key to see live metrics.", "info");
  let response;
  try {
    response = await fetch("/metrics", { headers: { Authorization: `Bearer ${key}`, Accept: "application/json" }, cache: "no-store" });
  } catch (error) {
    return show(`Cannot reach the server (${error.message}); retrying.`, "error");
  }
  if (response.status === 401) {
    stop();
    return show("Wrong API key: the server refused it (401). Enter a valid key and press Connect.", "error");
  }
  if (!response.ok) return show(`/metrics answered HTTP ${response.status}; retrying.`, "error");
  const snap = await response.json();
  record(snap);
  render(snap);
  show(`Live · updated ${new Date(snap.server_time_unix * 1000).toLocaleTimeString()}`, "ok");
}

function apiRequests(snap) {
  // The dashboard's own polls are not traffic worth charting.
  const own = snap.requests.by_endpoint["GET /metrics"];
  return snap.requests.total - (own ? own.total : 0);
}

function record(snap) {
  const gen = snap.schedulers.generation || {};
  const point = { t: snap.server_time_unix, queue: gen.queue_depth, embed_queue: (snap.schedulers.embedding || {}).queue_depth,
    wait: (gen.queue_wait_s || {}).p50, ttft: (gen.time_to_first_token_s || {}).p50,
    cpu: snap.process.cpu_percent, rss: mb(snap.process.rss_bytes) };
  if (previous && snap.server_time_unix > previous.server_time_unix) {
    const dt = snap.server_time_unix - previous.server_time_unix;
    point.requests_s = Math.max(0, apiRequests(snap) - apiRequests(previous)) / dt;
    point.prompt_s = Math.max(0, snap.tokens.prompt - previous.tokens.prompt) / dt;
    point.completion_s = Math.max(0, snap.tokens.completion - previous.tokens.completion) / dt;
  }
  previous = snap;
  history.push(point);
  while (history.length && history[0].t < point.t - HISTORY_S) history.shift();
}

function render(snap) {
  const gen = snap.schedulers.generation || {}, emb = snap.schedulers.embedding;
  const model = snap.models[snap.default_model] || {};
  const failed = Object.entries(snap.requests.by_status).filter(([s]) => s >= "400").reduce((n, [, c]) => n + c, 0);
  setField("model", snap.default_model || "none");
  setField("model_state", model.state || "");
  setField("uptime", duration(snap.uptime_s));
  setField("server_time", snap.server_time);
  setField("replica", snap.replica ? `replica ${snap.replica}` : "");
  setField("requests", num(snap.requests.total));
  setField("errors", `${num(failed)} answered 4xx/5xx`);
  setField("tokens", num(snap.tokens.prompt + snap.tokens.completion));
  setField("tokens_split", `${num(snap.tokens.prompt)} prompt · ${num(snap.tokens.completion)} completion`);
  setField("cache_hit", `${num(snap.tokens.cache_hit_ratio * 100, 1)}% hit`);
  setField("cache_split", `${num(snap.tokens.prompt_cached)} cached · ${num(snap.tokens.prompt_evaluated)} evaluated prompt tokens`);
  setField("queue", `${num(gen.queue_depth)} / ${num(gen.max_queue)}`);
  setField("running", `${num(gen.running)} running`);
  setField("rejected", `${num(gen.rejected)} / ${num(gen.cancelled)}`);
  setField("embeddings", emb ? `${num(emb.inputs)} inputs${emb.dtype ? ` · ${emb.dtype}` : ""}` : "off");
  setField("embedding_rate", emb ? `${num(emb.batches)} batches · ${num(emb.inputs_per_s, 1)}/s` : "");
  setField("cpu", `${num(snap.process.cpu_percent, 1)}% CPU`);
  setField("memory", `${num(mb(snap.process.rss_bytes))} MB RSS · ${snap.process.threads} threads`);
  fillTable("models", Object.entries(snap.models).map(([name, m]) =>
    [name, m.state, num(m.generations), num(m.prompt_tokens), num(m.completion_tokens), num((m.tokens_per_s || {}).p50, 1)]));
  fillTable("endpoints", Object.entries(snap.requests.by_endpoint).map(([name, e]) =>
    [name, num(e.total), Object.entries(e.by_status).map(([s, n]) => `${s}: ${n}`).join(", "),
     e.mean_latency_s == null ? "–" : `${num(e.mean_latency_s * 1000, 1)} ms`]));
  chart("chart-requests", ["requests_s"], 2);
  chart("chart-tokens", ["completion_s", "prompt_s"], 1);
  chart("chart-queue", ["queue", "embed_queue"], 0);
  chart("chart-latency", ["wait", "ttft"], 3);
  chart("chart-cpu", ["cpu"], 0);
  chart("chart-rss", ["rss"], 0);
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((text) => tr.appendChild(document.createElement("td")).append(String(text)));
    return tr;
  }));
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
  if (text != null) el.textContent = text;
  return el;
}

function chart(id, keys, digits) {
  const svg = $(id), w = svg.clientWidth || 340, h = svg.clientHeight || 130, left = 40, bottom = h - 14;
  const now = history.length ? history[history.length - 1].t : 0;
  const span = Math.min(HISTORY_S, Math.max(MIN_SPAN_S, now - (history.length ? history[0].t : now)));
  const values = history.flatMap((p) => keys.map((k) => p[k]).filter((v) => v != null));
  const top = Math.max(...values, 0) * 1.15 || 1;
  const x = (t) => left + (w - left - 4) * (1 - (now - t) / span), y = (v) => bottom - (bottom - 6) * (v / top);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.replaceChildren(
    svgEl("line", { class: "grid", x1: left, x2: w, y1: bottom, y2: bottom }),
    svgEl("line", { class: "grid", x1: left, x2: w, y1: 6, y2: 6 }),
    svgEl("text", { x: left - 4, y: 12, "text-anchor": "end" }, num(top, digits)),
    svgEl("text", { x: left - 4, y: bottom, "text-anchor": "end" }, "0"),
    svgEl("text", { x: left, y: h - 2 }, span < 120 ? `−${Math.round(span)} s` : `−${Math.round(span / 60)} min`),
    svgEl("text", { x: w - 4, y: h - 2, "text-anchor": "end" }, "now"),
    ...keys.map((k, i) => svgEl("polyline", { class: `s${i}`,
      points: history.filter((p) => p[k] != null).map((p) => `${x(p.t).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" ") })),
  );
}

function start() {
  stop();
  poll();
  timer = setInterval(poll, POLL_S * 1000);
}

function stop() {
  clearInterval(timer);
  timer = null;
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key").value.trim());
  start();
});

$("key").value = sessionStorage.getItem(KEY_STORE) || document.querySelector('meta[name="default-api-key"]').content;
if ($("key").value) start();
