// What the server offers: its models (a picker with each one's status in router mode) and
// its MCP tools.

import { listModels, listTools, watchModels } from "./api.js";
import { setting, showTools } from "./settings.js";
import { $, state } from "./state.js";

export async function refreshServerInfo() {
  const key = setting("api_key");
  try {
    state.models = await listModels(key);
  } catch {
    state.models = [];
  }
  drawModels();
  state.tools = await listTools(key);
  $("tools-count").textContent = state.tools.length ? `(${state.tools.length})` : "(none on this server)";
  $("tools-settings").classList.toggle("none", !state.tools.length);
  showTools();
}

// Download progress (router mode, with the hub's downloads): while a card says a model is
// downloading, GET /models/sse is followed. Its events are `{model, event, data}`:
// `download_progress` (data: {URL: {done, total}}), `download_finished`, `download_failed`
// (data: {error}), `model_status` (data: {status}), `model_remove`. Where no card says a model
// is downloading, it is never asked.
let watching = false;
function followDownloads() {
  const downloading = state.models.some((m) => /download/.test(modelStatusValue(m)));
  if (!downloading || watching) return;
  watching = true;
  watchModels(setting("api_key"), (event) => {
    const m = state.models.find((x) => x.id === (event.model || event.id));
    if (!m) return;
    const data = event.data || {};
    if (event.event === "download_progress") m.progress = fraction(data);
    else if (event.event === "download_finished") m.status = "unloaded";
    else if (event.event === "download_failed") m.status = `download failed: ${data.error || ""}`;
    else if (event.event === "model_status" && data.status) m.status = data.status;
    else if (event.event === "model_remove") state.models = state.models.filter((x) => x !== m);
    drawModels();
  }).finally(() => {
    watching = false;
  });
}

// A download's progress as 0..1: a number as it is, or the hub's {URL: {done, total}}
// summed over its files.
function fraction(progress) {
  if (typeof progress === "number" || progress === undefined) return progress;
  const files = Object.values(progress || {});
  const total = files.reduce((n, f) => n + (f.total || 0), 0);
  return total ? files.reduce((n, f) => n + (f.done || 0), 0) / total : undefined;
}

function modelStatusValue(m) {
  return !m.status ? "" : typeof m.status === "string" ? m.status : m.status.value || "";
}

function modelStatus(m) {
  if (!m.status) return "";
  const s = modelStatusValue(m);
  if (!/download/.test(s)) return s;
  const progress = fraction(m.progress ?? m.status.progress);
  return progress !== undefined ? `${s} ${Math.round(progress * 100)}%` : s;
}

export function drawModels() {
  const picker = $("model-picker");
  const models = state.models;
  const chosen = setting("model") || (models.find((m) => m.default) || models[0] || {}).id;
  picker.textContent = "";
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    const status = modelStatus(m);
    option.textContent = status ? `${m.id} (${status})` : m.id;
    picker.appendChild(option);
  }
  if (chosen) picker.value = chosen;
  const router = models.length > 1 || models.some((m) => m.status);
  picker.disabled = !router;
  document.body.classList.toggle("router", router);
  const current = models.find((m) => m.id === picker.value);
  $("model-status").textContent = current ? modelStatus(current) : "";
  $("model").textContent = router ? "" : chosen || "";
  followDownloads();
}
