// What the server offers: its models (a picker with each one's status in router mode) and
// its MCP tools.

import { listModels, listTools, watchModels } from "./api.js";
import { setting } from "./settings.js";
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
  const names = state.tools.map((t) => t.tool).join(", ");
  $("tools-count").textContent = state.tools.length ? `(${state.tools.length}: ${names})` : "(none on this server)";
  $("tools-settings").classList.toggle("none", !state.tools.length);
}

// Download progress (router mode, with the hub's downloads): while a card says a model is
// downloading, GET /models/sse is followed; each event's `model` (or `id`) gets its
// `progress` (0..1, or `downloaded` / `total`). Where no card says so, it is never asked.
let watching = false;
function followDownloads() {
  const downloading = state.models.some((m) => /download/.test(modelStatusValue(m)));
  if (!downloading || watching) return;
  watching = true;
  watchModels(setting("api_key"), (event) => {
    const m = state.models.find((x) => x.id === (event.model || event.id));
    if (!m) return;
    const progress = event.progress ?? (event.total ? event.downloaded / event.total : undefined);
    if (progress !== undefined) m.progress = progress;
    if (event.status) m.status = event.status;
    drawModels();
  }).finally(() => {
    watching = false;
  });
}

function modelStatusValue(m) {
  return !m.status ? "" : typeof m.status === "string" ? m.status : m.status.value || "";
}

function modelStatus(m) {
  if (!m.status) return "";
  const s = modelStatusValue(m);
  const progress = m.status.progress ?? m.progress; // download progress, where the hub gives it
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
