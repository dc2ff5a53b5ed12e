// The gpt2easy page: streams completions from /v1/completions and draws the training curves.
// Plain JavaScript, no libraries, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;   // AbortController of the running generation
let info = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value || localStorage.getItem("gpt2easy_key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = kind || "";
}

function setState(text, kind) {
  const s = $("state");
  s.textContent = text;
  s.className = "pill " + (kind || "");
}

function formatParams(n) {
  return n >= 1e9 ? (n / 1e9).toFixed(2) + "B" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : (n / 1e3).toFixed(0) + "k";
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (e) { /* not JSON */ }
  return "HTTP " + resp.status;
}

async function loadInfo() {
  const resp = await fetch("/api/info", { headers: headers() });
  if (resp.status === 401) {
    $("keybox").hidden = false;
    $("model").textContent = "this server needs an API key: type it in the API key box";
    setState("key needed", "busy");
    return;
  }
  if (!resp.ok) { $("model").textContent = await errorText(resp); return; }
  info = await resp.json();
  $("model").textContent = `${info.model} · ${formatParams(info.n_params)} parameters · ` +
    `${info.n_layer} layers × ${info.n_embd} · context ${info.n_ctx} · ${info.precision}`;
  $("max_tokens").max = info.n_ctx;
  if (info.metrics) loadCurves();
}

async function poll() {
  try {
    const resp = await fetch("/health");
    const h = await resp.json();
    if (h.waiting >= h.queue_limit) setState("busy: queue full", "busy");
    else if (h.generating) setState(h.waiting ? `generating · ${h.waiting} waiting` : "generating", "busy");
    else setState("ready", "ready");
  } catch (e) {
    setState("server unreachable", "down");
  }
}

function numberField(id, integer) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) throw new Error(`${id}: "${raw}" is not a ${integer ? "whole " : ""}number`);
  return v;
}

async function generate() {
  if (controller) return;
  const prompt = $("prompt").value;
  let body;
  try {
    body = { prompt, stream: true, stream_options: { include_usage: true },
             max_tokens: numberField("max_tokens", true), temperature: numberField("temperature"),
             top_k: numberField("top_k", true), top_p: numberField("top_p"), seed: numberField("seed", true) };
  } catch (e) { say(e.message, "error"); return; }
  if ($("api_key").value) localStorage.setItem("gpt2easy_key", $("api_key").value);
  controller = new AbortController();
  $("generate").disabled = true; $("stop").disabled = false;
  $("out-prompt").textContent = prompt; $("out-text").textContent = ""; $("stats").textContent = "";
  say("generating…", "busy");
  const t0 = performance.now();
  let first = null, finish = null, usage = null;
  try {
    const resp = await fetch("/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!resp.ok) {
      const msg = await errorText(resp);
      if (resp.status === 503 || resp.status === 429) say(msg, "busy");
      else if (resp.status === 401) { $("keybox").hidden = false; say(msg, "error"); }
      else say(msg, "error");
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const obj = JSON.parse(data);
        if (obj.error) { say(obj.error.message, "error"); continue; }
        if (obj.usage) usage = obj.usage;
        for (const c of obj.choices || []) {
          if (c.text) { if (first === null) first = performance.now(); $("out-text").textContent += c.text; }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
    say(finish === "stop" ? "done: the model ended the text" : "done: length reached", "ok");
  } catch (e) {
    if (e.name === "AbortError") say("stopped", "ok");
    else say("error: " + e.message, "error");
  } finally {
    const secs = (performance.now() - t0) / 1000;
    const parts = [];
    if (first !== null) parts.push(`first token after ${((first - t0) / 1000).toFixed(2)} s`);
    if (usage) parts.push(`${usage.completion_tokens} tokens in ${secs.toFixed(1)} s (${(usage.completion_tokens / secs).toFixed(1)}/s)`);
    $("stats").textContent = parts.join(" · ");
    controller = null;
    $("generate").disabled = false; $("stop").disabled = true;
    poll();
  }
}

function stop() {
  if (controller) controller.abort();
}

// --- training curves (inline SVG) ---------------------------------------------------------------

const SVGNS = "http://www.w3.org/2000/svg";

function el(svg, name, attrs, text) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  svg.appendChild(e);
  return e;
}

function ticks(lo, hi, n) {
  if (hi <= lo) return [lo];
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const best = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= n) || step * 10;
  const out = [];
  for (let v = Math.ceil(lo / best) * best; v <= hi + 1e-12; v += best) out.push(v);
  return out;
}

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 1 ? String(+v.toFixed(2)) : v.toExponential(1);
}

function chart(svg, series) {
  svg.textContent = "";
  const W = 520, H = 260, L = 56, R = 12, T = 12, B = 32;
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) { el(svg, "text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"); return; }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  for (const v of ticks(y0, y1, 5)) {
    el(svg, "line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: "grid" });
    el(svg, "text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, fmt(v));
  }
  for (const v of ticks(x0, x1, 6)) {
    el(svg, "text", { x: X(v), y: H - B + 16, "text-anchor": "middle" }, fmt(v));
  }
  el(svg, "line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" });
  el(svg, "line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" });
  el(svg, "text", { x: W - R, y: H - 4, "text-anchor": "end" }, "step");
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
    el(svg, "path", { d, class: s.cls });
    if (s.dots) for (const p of s.points) el(svg, "circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, class: s.cls });
  }
}

async function loadCurves() {
  const resp = await fetch("/api/metrics", { headers: headers() });
  if (!resp.ok) return;
  const rows = (await resp.json()).rows;
  if (!rows.length) return;
  const pick = (key) => rows.filter((r) => typeof r[key] === "number").map((r) => [r.step, r[key]]);
  $("curves").hidden = false;
  const loss = pick("loss"), val = pick("val_loss");
  $("curves-note").textContent = `${loss.length} logged steps, ${val.length} validations, from metrics.jsonl of the run folder`;
  chart($("chart-loss"), [{ points: loss, cls: "loss" }, { points: pick("avg"), cls: "avg" }, { points: val, cls: "val", dots: true }]);
  chart($("chart-lr"), [{ points: pick("lr"), cls: "lr" }]);
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", stop);
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
  else if (e.key === "Escape") stop();
});
$("api_key").addEventListener("change", () => { localStorage.setItem("gpt2easy_key", $("api_key").value); loadInfo(); });
loadInfo();
poll();
setInterval(poll, 3000);
