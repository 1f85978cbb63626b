// dermlearn page: upload a photo, show probabilities, risk, OOD screen, heatmap, model card.
// Plain DOM APIs, no external resources; server text is always inserted as text, never HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let classNames = {};
const TOKEN_KEY = "dermlearn-token";

// The service may require a bearer token for /v1/*: entered once, kept in this tab only.
function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askForToken(message) {
  $("token-form").hidden = false;
  $("token-message").textContent = message || "";
  $("token-input").focus();
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    let detail = null;
    try { detail = (await response.clone().json()).detail; } catch (e) { detail = null; }
    askForToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was not accepted." : detail);
  }
  return response;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function pct(p) {
  return p === null || p === undefined ? "–" : (100 * p).toFixed(1) + "%";
}

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

function bar(label, p, { top = false, title } = {}) {
  const row = el("div", { class: "bar" + (top ? " top" : "") });
  const name = el("span", { class: "label" }, label);
  if (title) name.title = title;
  const track = el("span", { class: "track" });
  const fill = el("span", { class: "fill" });
  fill.style.width = (100 * Math.max(0, Math.min(1, p))).toFixed(1) + "%";
  track.appendChild(fill);
  row.append(name, track, el("span", { class: "value" }, pct(p)));
  return row;
}

function metricTable(obj) {
  const table = el("table");
  const add = (key, value) => {
    const tr = el("tr");
    tr.append(el("td", {}, key), el("td", { class: "num" }, value));
    table.appendChild(tr);
  };
  const fmt = (v) => {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
    if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number"))
      return `[${v[0].toFixed(3)}, ${v[1].toFixed(3)}]`;
    if (v && typeof v === "object" && typeof v.value === "number") {
      const ci = v.ci || v.ci95 || (v.low !== undefined ? [v.low, v.high] : null);
      return v.value.toFixed(3) + (ci ? ` (95% CI ${ci[0].toFixed(3)}–${ci[1].toFixed(3)})` : "");
    }
    return String(v);
  };
  const walk = (prefix, value, depth) => {
    if (value && typeof value === "object" && !Array.isArray(value) && typeof value.value !== "number" && depth < 2) {
      for (const [k, v] of Object.entries(value)) walk(prefix ? `${prefix} · ${k}` : k, v, depth + 1);
    } else if (value !== null && value !== undefined) {
      add(prefix, fmt(value));
    }
  };
  walk("", obj, 0);
  return table;
}

function renderCard(card) {
  classNames = Object.fromEntries(card.classes.map((c) => [c.id, c.name]));
  $("model-line").textContent =
    `model ${card.model_id} · ${card.version} · ${card.backbone} · ${card.backend} backend · ` +
    `${card.classes.length} classes` +
    (card.ood && !card.ood.available ? " · out-of-distribution screen OFF" : "");
  $("intended-use").textContent = card.intended_use;
  if (card.patient_inputs) {
    $("patient-site").append(...card.patient_inputs.sites.map((site) =>
      el("option", { value: site }, site)));
    $("patient").hidden = false;
  }
  const list = $("limitations");
  list.replaceChildren(...card.limitations.map((text) => el("li", {}, text)));
  if (card.validation) {
    const { source, ...metrics } = card.validation;
    $("validation").replaceChildren(metricTable(metrics));
    $("validation").classList.remove("muted");
  }
  if (card.training_data) {
    const t = card.training_data;
    const parts = [];
    if (t.source) parts.push(`${t.source}`);
    if (t.n_images) parts.push(`${t.n_images} training images`);
    if (t.n_lesions) parts.push(`${t.n_lesions} lesions`);
    if (t.n_validation) {
      const oof = t.validation === "out-of-fold" ? " (each by one member of the ensemble)" : "";
      parts.push(`${t.n_validation} held out for validation${oof}`);
    }
    const box = $("training");
    box.replaceChildren(el("p", {}, parts.join(", ")));
    if (t.classes) box.appendChild(metricTable(t.classes));
    box.classList.remove("muted");
  }
}

function renderOOD(ood) {
  const box = $("ood");
  box.hidden = false;
  box.className = "ood";
  if (!ood.available) {
    box.classList.add("na");
    box.textContent = "⚠ Out-of-distribution screen off: " +
      (ood.reason || "this photo was not checked against the training images") + ".";
  } else if (ood.flag) {
    box.textContent = "⚠ This photo does not look like the lesion images the model was " +
      `trained on (score ${ood.score.toFixed(2)} > threshold ${ood.threshold.toFixed(2)}). ` +
      "Disregard the prediction.";
  } else {
    box.classList.add("ok");
    box.textContent = `Looks like the training images (OOD score ${ood.score.toFixed(2)} ≤ ` +
      `${ood.threshold.toFixed(2)}).`;
  }
}

function renderResult(result) {
  $("placeholder").hidden = true;
  $("result").hidden = false;
  renderOOD(result.ood);
  const risk = result.malignancy_risk;
  $("risk").textContent = pct(risk.probability);
  $("risk-bar").style.width = risk.probability === null ? "0" : (100 * risk.probability).toFixed(1) + "%";
  $("risk-note").textContent = risk.note ? risk.note : `temperature ${Number(risk.temperature).toPrecision(3)}`;
  const patient = result.metadata;
  $("patient-used").hidden = !(patient && patient.fused);
  if (patient && patient.fused) {
    const given = [patient.age === null ? null : `age ${patient.age}`, patient.sex, patient.site]
      .filter((v) => v !== null);
    $("patient-used").textContent = (given.length ? `with ${given.join(", ")}` :
      "age, sex and site unknown") + (patient.note ? ` (${patient.note})` : "");
  }
  const sorted = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
  $("bars").replaceChildren(...sorted.map(([id, p], i) =>
    bar(classNames[id] || id, p, { top: i === 0, title: id })));
  const levels = $("levels");
  levels.replaceChildren();
  for (const [level, groups] of Object.entries(result.levels)) {
    const block = el("div", { class: "level" });
    block.appendChild(el("div", { class: "level-name" }, level.replaceAll("_", " ")));
    const best = Math.max(...Object.values(groups));
    for (const [group, p] of Object.entries(groups))
      block.appendChild(bar(group.replaceAll("_", " "), p, { top: p === best }));
    levels.appendChild(block);
  }
  if (result.explanation) {
    const img = $("heatmap-img");
    img.src = `data:${result.explanation.media_type};base64,${result.explanation.png_base64}`;
    $("heatmap-caption").textContent = `${result.explanation.method} heatmap`;
    $("heatmap").hidden = false;
  } else {
    $("heatmap").hidden = true;
  }
  const t = result.timing_ms || {};
  $("timing").textContent = `model ${result.model.id} ${result.model.version} (${result.model.backend})` +
    (t.total ? ` · ${t.total.toFixed(0)} ms` : "");
}

async function analyse(file) {
  showError("");
  if (!file) return;
  const preview = $("preview-img");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  const url = URL.createObjectURL(file);
  preview.dataset.url = url;
  preview.src = url;
  $("preview").hidden = false;
  $("heatmap").hidden = true;
  setStatus("analysing…");
  const form = new FormData();
  form.append("image", file, "upload");
  if (!$("patient").hidden) {
    for (const field of ["age", "sex", "site"]) {
      const value = $(`patient-${field}`).value;
      if (value) form.append(field, value);
    }
  }
  const method = $("explain-method").value;
  const query = new URLSearchParams({ top_k: "5" });
  if (method) query.set("explain", method);
  try {
    const response = await api(`/v1/predict?${query}`, { method: "POST", body: form });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      setStatus("");
      showError((body && body.detail) || `request failed (HTTP ${response.status})`);
      return;
    }
    renderResult(body);
    setStatus("done");
  } catch (err) {
    setStatus("");
    showError(`could not reach the service (${err.message})`);
  }
}

function setup() {
  const input = $("file-input");
  const zone = $("drop-zone");
  input.addEventListener("change", () => analyse(input.files[0]));
  $("explain-method").addEventListener("change", () => { if (input.files[0]) analyse(input.files[0]); });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.remove("dragging"); });
  }
  zone.addEventListener("drop", (event) => {
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) analyse(file);
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-form").hidden = true;
    loadCard();
  });
  loadCard();
}

function loadCard() {
  api("/v1/model")
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then(renderCard)
    .catch((err) => { $("model-line").textContent = `model card unavailable (${err.message})`; });
}

document.addEventListener("DOMContentLoaded", setup);
