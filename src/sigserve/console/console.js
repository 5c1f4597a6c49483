// sigserve web console: plain JavaScript, no dependencies, nothing fetched from outside this server.
// Reads the server's own APIs: /openapi.json (models, examples), /v1/models/<m> (version states),
// /v1/models/<m>/metadata (signatures) and the Prometheus page (traffic).
"use strict";

const TOKEN_KEY = "sigserve-token";
const POLL_MS = 2000;
const MAX_SHOWN = 200000; // characters of a response shown in the page
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  doc: null,
  models: {},
  selected: null,
  modelDoc: null,
  metricsPath: null,
  traffic: {},
  timers: [],
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

class Unauthenticated extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const text = await response.text();
    throw new Unauthenticated(errorText(text));
  }
  return response;
}

function errorText(text) {
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch (e) { /* not JSON */ }
  return text;
}

// The server's JSON with a space after ',' and ':' outside strings; numbers keep their exact text
// (3.0, NaN, Infinity), which JSON.parse would lose.
function spaced(text) {
  let out = "";
  let inString = false;
  let escaped = false;
  for (const ch of text) {
    out += ch;
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "," || ch === ":") out += " ";
  }
  return out;
}

function modelPath(name, version) {
  let path = "/v1/models/" + encodeURIComponent(name);
  if (version) path += "/versions/" + version;
  return path;
}

// -- start-up and the token -----------------------------------------------------------------------

async function start() {
  let response;
  try {
    response = await api("/openapi.json");
  } catch (e) {
    if (e instanceof Unauthenticated) return askToken(state.token ? e.message : "");
    $("server-status").textContent = "cannot reach the server: " + e.message;
    return;
  }
  if (!response.ok) {
    $("server-status").textContent = "the server answered " + response.status;
    return;
  }
  state.doc = await response.json();
  $("auth").hidden = true;
  $("main").hidden = false;
  $("server-status").textContent = state.doc.info.title;
  for (const [path, item] of Object.entries(state.doc.paths)) {
    if (item.get && item.get.operationId === "metrics") state.metricsPath = path;
  }
  renderModels();
  for (const t of state.timers) clearInterval(t);
  state.timers = [setInterval(pollStates, POLL_MS), setInterval(pollMetrics, POLL_MS), setInterval(refreshDoc, 5 * POLL_MS)];
  pollStates();
  pollMetrics();
}

function askToken(message) {
  $("main").hidden = true;
  $("auth").hidden = false;
  $("auth-error").textContent = message || "";
  $("server-status").textContent = "access token required";
  $("token").focus();
}

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});

async function refreshDoc() {
  try {
    const response = await api("/openapi.json");
    if (!response.ok) return;
    state.doc = await response.json();
    renderModels();
  } catch (e) {
    if (e instanceof Unauthenticated) askToken(e.message);
  }
}

// -- models and their version states --------------------------------------------------------------

function renderModels() {
  const models = state.doc["x-sigserve-models"] || {};
  const list = $("models");
  const names = Object.keys(models).sort();
  if (list.dataset.names === names.join("\n")) return;
  list.dataset.names = names.join("\n");
  list.replaceChildren();
  for (const name of names) {
    const item = el("li", { "data-model": name }, el("span", { class: "name" }, name), el("span", { class: "versions" }, "…"));
    item.addEventListener("click", () => selectModel(name));
    if (name === state.selected) item.classList.add("selected");
    list.append(item);
  }
}

async function pollStates() {
  for (const item of $("models").children) {
    const name = item.dataset.model;
    try {
      const response = await api(modelPath(name));
      const target = item.querySelector(".versions");
      if (!response.ok) {
        target.textContent = errorText(await response.text());
        continue;
      }
      const body = await response.json();
      target.replaceChildren();
      for (const v of body.model_version_status) {
        target.append(el("span", { class: "state-" + v.state }, `v${v.version} ${v.state}`), " ");
      }
      state.models[name] = body.model_version_status;
    } catch (e) {
      if (e instanceof Unauthenticated) return askToken(e.message);
    }
  }
}

async function selectModel(name) {
  state.selected = name;
  for (const item of $("models").children) item.classList.toggle("selected", item.dataset.model === name);
  const docPath = modelPath(name) + "/openapi.json";
  try {
    const [docResponse, metaResponse] = await Promise.all([api(docPath), api(modelPath(name) + "/metadata")]);
    $("model").hidden = false;
    $("model-name").textContent = name;
    $("model-openapi").textContent = docPath;
    $("model-openapi").href = docPath;
    if (!docResponse.ok || !metaResponse.ok) {
      $("model-versions").textContent = errorText(await (docResponse.ok ? metaResponse : docResponse).text());
      $("signatures").replaceChildren();
      state.modelDoc = null;
      fillTry();
      return;
    }
    state.modelDoc = await docResponse.json();
    const meta = await metaResponse.json();
    const info = state.modelDoc["x-sigserve-models"][name] || { versions: [] };
    $("model-versions").textContent = `latest version ${info.latest}; available: ${info.versions.join(", ")}`;
    renderSignatures(meta.metadata.signature_def.signature_def);
    fillTry();
  } catch (e) {
    if (e instanceof Unauthenticated) askToken(e.message);
  }
}

function shapeText(shape) {
  if (!shape || shape.unknown_rank) return "unknown rank";
  return "(" + (shape.dim || []).map((d) => d.size).join(", ") + ")";
}

function renderSignatures(signatures) {
  const box = $("signatures");
  box.replaceChildren();
  for (const key of Object.keys(signatures).sort()) {
    const sig = signatures[key];
    const table = el("table", {}, el("caption", {}, `${key} — ${sig.method_name}`));
    table.append(el("tr", {}, el("th", {}, ""), el("th", {}, "alias"), el("th", {}, "dtype"), el("th", {}, "shape")));
    for (const [side, infos] of [["input", sig.inputs], ["output", sig.outputs]]) {
      for (const alias of Object.keys(infos || {}).sort()) {
        const info = infos[alias];
        table.append(el("tr", {}, el("td", { class: "muted" }, side), el("td", {}, el("code", {}, alias)), el("td", {}, info.dtype), el("td", {}, shapeText(info.tensor_shape))));
      }
    }
    box.append(table);
  }
}

// -- try it ----------------------------------------------------------------------------------------

function operationPath(verb, version) {
  return modelPath(state.selected, version) + ":" + verb;
}

function fillTry() {
  const doc = state.modelDoc;
  const versionSelect = $("version");
  versionSelect.replaceChildren(el("option", { value: "" }, "latest"));
  const verbSelect = $("verb");
  verbSelect.replaceChildren();
  if (!doc) return;
  const info = doc["x-sigserve-models"][state.selected] || { versions: [] };
  for (const v of info.versions) versionSelect.append(el("option", { value: String(v) }, String(v)));
  for (const verb of ["predict", "classify", "regress"]) {
    if (doc.paths[operationPath(verb, "")]) verbSelect.append(el("option", { value: verb }, verb));
  }
  fillExamples();
}

function currentOperation() {
  const path = operationPath($("verb").value, $("version").value);
  const item = state.modelDoc && state.modelDoc.paths[path];
  return item ? item.post : null;
}

function fillExamples() {
  const select = $("example");
  select.replaceChildren();
  const op = currentOperation();
  const examples = (op && op.requestBody.content["application/json"].examples) || {};
  // serving_default first (what a request without signature_name runs), else the document's order.
  const names = Object.keys(examples).sort((a, b) => b.startsWith("serving_default ") - a.startsWith("serving_default "));
  for (const name of names) select.append(el("option", { value: name }, name));
  useExample();
}

function useExample() {
  const op = currentOperation();
  const examples = (op && op.requestBody.content["application/json"].examples) || {};
  const example = examples[$("example").value];
  // x-sigserve-text keeps the number text (1.0 is a float feature, 1 an int64 one).
  $("body").value = example ? example["x-sigserve-text"] || JSON.stringify(example.value) : "";
  updateCurl();
}

function updateCurl() {
  const body = $("body").value.replace(/\s*\n\s*/g, " ").replace(/'/g, "'\\''");
  const auth = state.token ? " -H 'Authorization: Bearer $TOKEN'" : "";
  const url = location.origin + operationPath($("verb").value, $("version").value);
  $("curl").value = `curl -X POST${auth} -d '${body}' ${url}`;
}

$("verb").addEventListener("change", fillExamples);
$("version").addEventListener("change", fillExamples);
$("example").addEventListener("change", useExample);
$("body").addEventListener("input", updateCurl);
$("copy").addEventListener("click", () => {
  $("curl").select();
  if (navigator.clipboard) navigator.clipboard.writeText($("curl").value).catch(() => document.execCommand("copy"));
  else document.execCommand("copy");
});

$("try").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("response");
  const badge = $("status");
  out.textContent = "…";
  out.className = "";
  badge.textContent = "";
  const started = performance.now();
  let response;
  try {
    response = await api(operationPath($("verb").value, $("version").value), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: $("body").value,
    });
  } catch (e) {
    if (e instanceof Unauthenticated) return askToken(e.message);
    out.className = "error";
    out.textContent = "request failed: " + e.message;
    return;
  }
  const text = await response.text();
  const elapsed = performance.now() - started;
  $("latency").textContent = `${elapsed.toFixed(1)} ms`;
  badge.textContent = `${response.status} ${response.statusText}`;
  badge.className = "badge " + (response.ok ? "ok" : "bad");
  if (response.ok) {
    out.textContent = text.length > MAX_SHOWN ? spaced(text.slice(0, MAX_SHOWN)) + " …(cut)" : spaced(text);
  } else {
    out.className = "error";
    out.textContent = errorText(text);
  }
});

// -- traffic, from the server's own Prometheus metrics ----------------------------------------------

// Inference calls only: request_latency carries an API label (predict, Predict, classify, ...) and
// counts successful calls; request_count would also count this page's own status polls.
const SAMPLE = /^:tensorflow:serving:request_latency_(sum|count)\{([^}]*)\}\s+(\S+)$/;
const LABEL = (name) => new RegExp(name + '="((?:[^"\\\\]|\\\\.)*)"');
const MODEL_LABEL = LABEL("model_name");
const API_LABEL = LABEL("API");

function readMetrics(text) {
  const totals = {};
  for (const line of text.split("\n")) {
    const m = SAMPLE.exec(line);
    if (!m) continue;
    const model = (MODEL_LABEL.exec(m[2]) || [, ""])[1];
    const api = (API_LABEL.exec(m[2]) || [, ""])[1];
    if (!model || !api) continue;
    const t = totals[model] || (totals[model] = { count: 0, latencySum: 0 });
    if (m[1] === "sum") t.latencySum += Number(m[3]);
    else t.count += Number(m[3]);
  }
  return totals;
}

async function pollMetrics() {
  if (!state.metricsPath) return;
  let text;
  try {
    const response = await api(state.metricsPath);
    if (!response.ok) return;
    text = await response.text();
  } catch (e) {
    return;
  }
  const now = performance.now();
  const box = $("traffic");
  box.replaceChildren();
  for (const [model, t] of Object.entries(readMetrics(text)).sort()) {
    const past = state.traffic[model];
    let rate = 0;
    let latency = null;
    if (past) {
      const seconds = (now - past.at) / 1000;
      rate = Math.max(0, (t.count - past.count) / seconds);
      const n = t.count - past.count;
      if (n > 0) latency = (t.latencySum - past.latencySum) / n / 1000; // µs -> ms
    }
    const history = past ? past.history.concat([rate]).slice(-30) : [rate];
    state.traffic[model] = Object.assign({ at: now, history }, t);
    const peak = Math.max(1, ...history);
    const points = history.map((r, i) => `${(i / 29) * 100},${28 - (r / peak) * 26}`).join(" ");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 100 28");
    svg.setAttribute("preserveAspectRatio", "none");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points);
    svg.append(line);
    const latencyText = latency === null ? "–" : latency.toFixed(2) + " ms";
    box.append(el("div", { class: "model", "data-model": model }, el("b", {}, model), ` ${rate.toFixed(1)} req/s, mean ${latencyText}, ${t.count} served`, svg));
  }
}

start();
