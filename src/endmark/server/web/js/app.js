// endmark's chat page: conversations kept in the browser, answers streamed from
// /v1/chat/completions with why each one stopped, and the agent loop over the server's MCP
// tools (GET/POST /tools). Plain ES modules, no build step, no CDN.

import * as store from "./store.js";
import { headers, listModels, listTools, runTool, streamChat } from "./api.js";
import { AssistantTurn, installTokenPopover, toolTurn, userTurn } from "./turns.js";

const $ = (id) => document.getElementById(id);
const view = $("conversation");

// Each setting: its input, its key in a conversation's settings, its kind and default.
const SETTINGS = [
  ["system", "system", "text", "You are a helpful assistant."],
  ["temperature", "temperature", "number", "0.7"],
  ["max-tokens", "max_tokens", "number", "256"],
  ["top-p", "top_p", "number", ""],
  ["top-k", "top_k", "number", ""],
  ["min-p", "min_p", "number", ""],
  ["seed", "seed", "number", ""],
  ["reasoning-format", "reasoning_format", "text", ""],
  ["reasoning-budget", "reasoning_budget", "number", ""],
  ["schema", "schema", "text", ""],
  ["grammar", "grammar", "text", ""],
  ["use-tools", "use_tools", "bool", true],
  ["parallel-calls", "parallel_calls", "bool", false],
  ["tool-choice", "tool_choice", "text", "auto"],
  ["max-steps", "max_steps", "number", "5"],
  ["api-key", "api_key", "text", ""],
];

let conversation = null; // the open one
let turns = []; // its DOM turns, by message index
let controller = null; // the running request's AbortController
let stopped = false; // Stop or Esc was pressed during this agent loop
let tools = []; // GET /tools
let models = [];

// ---------- settings ----------

function defaults() {
  return Object.fromEntries(SETTINGS.map(([, key, , value]) => [key, value]));
}

function showSettings() {
  const s = { ...defaults(), ...conversation.settings };
  for (const [id, key, kind] of SETTINGS) {
    if (kind === "bool") $(id).checked = !!s[key];
    else $(id).value = s[key] ?? "";
  }
  showAllowedTools();
}

function readSetting(id, key, kind) {
  conversation.settings[key] = kind === "bool" ? $(id).checked : $(id).value;
  save();
  if (key === "api_key") refreshServerInfo();
}

function setting(key) {
  const value = { ...defaults(), ...conversation.settings }[key];
  return typeof value === "string" ? value.trim() : value;
}

function showAllowedTools() {
  const allowed = conversation.allowedTools || [];
  $("allowed-tools").textContent = allowed.length ? "allowed without asking: " + allowed.join(", ") : "";
}

// ---------- conversations ----------

let saving = Promise.resolve();
function save() {
  const snapshot = conversation;
  saving = saving.then(() => store.saveConversation(snapshot)).catch(() => {});
  return saving;
}

async function drawList() {
  const list = $("conversations");
  list.textContent = "";
  for (const c of await store.listConversations()) {
    const item = document.createElement("li");
    item.className = "conv" + (conversation && c.id === conversation.id ? " current" : "");
    item.dataset.id = c.id;
    const title = document.createElement("span");
    title.className = "conv-title";
    title.textContent = c.title;
    title.title = c.title;
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "rename icon";
    rename.title = "Rename";
    rename.textContent = "✎";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete icon";
    remove.title = "Delete";
    remove.textContent = "×";
    item.append(title, rename, remove);
    list.appendChild(item);
  }
}

async function open(id) {
  if (controller) controller.abort();
  const found = id && (await store.getConversation(id));
  conversation = found || store.newConversation(conversation ? pickDefaults(conversation.settings) : {});
  localStorage.setItem("endmark.current", conversation.id);
  showSettings();
  drawConversation();
  await drawList();
  refreshServerInfo();
  document.body.classList.remove("show-list");
}

// A new chat keeps the last one's settings (model, key, sampling), not its messages.
function pickDefaults(settings) {
  return { ...settings };
}

function drawConversation() {
  view.textContent = "";
  turns = [];
  conversation.messages.forEach((m, i) => drawMessage(m, i));
}

function drawMessage(message, index) {
  let turn;
  if (message.role === "user") turn = { node: userTurn(message, index) };
  else if (message.role === "tool") turn = { node: toolTurn(message, index) };
  else turn = new AssistantTurn(message, index);
  turns[index] = turn;
  view.appendChild(turn.node);
  view.scrollTop = view.scrollHeight;
  return turn;
}

function push(message) {
  conversation.messages.push(message);
  return drawMessage(message, conversation.messages.length - 1);
}

function titleFrom(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 48 ? line.slice(0, 47) + "…" : line || "New chat";
}

// ---------- one request ----------

function requestBody(toolChoice, continuing) {
  const messages = [];
  const system = setting("system");
  if (system) messages.push({ role: "system", content: system });
  for (const m of conversation.messages) {
    if (m.role === "assistant") {
      const out = { role: "assistant", content: m.content || "" };
      if (m.tool_calls && m.tool_calls.length) out.tool_calls = m.tool_calls;
      messages.push(out);
    } else if (m.role === "tool") {
      messages.push({ role: "tool", tool_call_id: m.tool_call_id, content: m.content });
    } else messages.push({ role: m.role, content: m.content });
  }
  const body = { messages, logprobs: true, top_logprobs: 5 };
  for (const [key, name] of [
    ["temperature", "temperature"], ["max_tokens", "max_tokens"], ["top_p", "top_p"],
    ["top_k", "top_k"], ["min_p", "min_p"], ["seed", "seed"], ["reasoning_budget", "reasoning_budget"],
  ]) {
    const value = setting(key);
    if (value !== "" && value !== undefined && !Number.isNaN(Number(value))) body[name] = Number(value);
  }
  if (setting("reasoning_format")) body.reasoning_format = setting("reasoning_format");
  if (setting("model")) body.model = setting("model");
  const schema = setting("schema");
  const grammar = setting("grammar");
  if (schema) {
    body.response_format = { type: "json_schema", json_schema: { name: "answer", schema: JSON.parse(schema) } };
  } else if (grammar) {
    body.grammar = grammar;
  } else if (setting("use_tools") && tools.length && toolChoice !== "none") {
    // A constraint and tools do not combine: the constraint wins.
    body.tools = tools.map((t) => t.definition);
    body.tool_choice = toolChoice;
    // One call per step unless asked: a small model otherwise repeats its call to the limit.
    body.parallel_tool_calls = !!setting("parallel_calls");
  }
  if (continuing) {
    body.add_generation_prompt = false;
    body.continue_final_message = true;
  }
  return body;
}

// Streams one answer into `message` (a new one, or the last one when continuing).
async function generate(toolChoice, continuing = false) {
  let body;
  try {
    body = requestBody(toolChoice, continuing);
  } catch (e) {
    const m = { role: "assistant", content: "", stop: { note: "the JSON schema box does not hold valid JSON: " + e.message, error: true } };
    push(m).update(true);
    return null;
  }
  const message = continuing ? conversation.messages.at(-1) : { role: "assistant", content: "", tokens: [] };
  const turn = continuing ? turns.at(-1) : push(message);
  message.stop = null;
  message.tokens = message.tokens || [];
  turn.update(true);
  controller = new AbortController();
  setBusy(true);
  try {
    await streamChat(body, setting("api_key"), controller.signal, (chunk) => {
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.reasoning_content) message.reasoning = (message.reasoning || "") + delta.reasoning_content;
        if (delta.content) {
          message.content += delta.content;
          const infos = (choice.logprobs && choice.logprobs.content) || [];
          if (infos.length === 1) {
            const t = infos[0];
            message.tokens.push([delta.content, t.logprob, (t.top_logprobs || []).map((a) => [a.token, a.logprob])]);
          } else message.tokens.push([delta.content, null, []]);
        }
        for (const call of delta.tool_calls || []) {
          message.tool_calls = message.tool_calls || [];
          const slot = (message.tool_calls[call.index ?? 0] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
          if (call.id) slot.id = call.id;
          if (call.function && call.function.name) slot.function.name += call.function.name;
          if (call.function && call.function.arguments) slot.function.arguments += call.function.arguments;
        }
        if (choice.finish_reason) message.stop = { finish_reason: choice.finish_reason, endmark: choice.endmark || null };
      }
      turn.update();
      view.scrollTop = view.scrollHeight;
    });
    if (!message.stop) message.stop = { note: "stopped: the stream ended without a reason" };
  } catch (e) {
    message.stop = e.name === "AbortError" ? { note: "stopped: you pressed Stop" } : { note: "error: " + e.message, error: true };
  } finally {
    controller = null;
    setBusy(false);
    turn.update(true);
    await save();
  }
  return message;
}

// ---------- the agent loop ----------

async function runCalls(message, turn) {
  for (const [i, call] of (message.tool_calls || []).entries()) {
    if (stopped) return false;
    const name = call.function.name;
    let args = {};
    try {
      args = JSON.parse(call.function.arguments || "{}");
    } catch {
      /* the tool's server says what is wrong with them */
    }
    let result;
    if (!tools.some((t) => t.tool === name)) {
      result = { error: `there is no tool named ${name}` };
    } else {
      let answer = conversation.allowedTools.includes(name) ? "run" : await turn.approve(i);
      if (answer === "always") {
        conversation.allowedTools.push(name);
        showAllowedTools();
        answer = "run";
      }
      if (answer === "deny" || stopped) {
        result = { error: "the user did not allow this call" };
      } else {
        turn.callStatus(i, "running…");
        controller = new AbortController();
        setBusy(true);
        result = await runTool(name, args, setting("api_key"), controller.signal);
        controller = null;
        setBusy(false);
      }
    }
    const error = result.error !== undefined;
    turn.callStatus(i, error ? "failed" : "done");
    push({
      role: "tool",
      tool_call_id: call.id,
      name,
      content: error ? "Error: " + result.error : String(result.plain_text_response ?? JSON.stringify(result)),
      error,
    });
    await save();
  }
  return !stopped;
}

// One user turn: the model answers; while it calls tools, they run and it answers again.
async function agentLoop(continuing = false) {
  stopped = false;
  let choice = setting("tool_choice") || "auto";
  const steps = Math.max(1, Number(setting("max_steps")) || 5);
  for (let step = 0; step < steps; step++) {
    const message = await generate(choice, continuing && step === 0);
    if (!message || stopped || !(message.tool_calls && message.tool_calls.length)) break;
    if (!(await runCalls(message, turns[conversation.messages.indexOf(message)]))) break;
    if (choice === "required") choice = "auto"; // forced once: then the model may answer
  }
  await drawList();
  refreshServerInfo(); // a model may have loaded for this answer
}

async function sendMessage(text) {
  if (!conversation.messages.length) conversation.title = titleFrom(text);
  push({ role: "user", content: text });
  await save();
  await drawList();
  await agentLoop();
}

// Drop messages from `index` on, then answer again.
async function cutAt(index) {
  conversation.messages.length = index;
  drawConversation();
  await save();
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy && !document.querySelector(".approval button");
}

function stop() {
  stopped = true;
  if (controller) controller.abort();
  for (const t of turns) if (t && t.cancelApproval) t.cancelApproval();
}

// ---------- the server: models and tools ----------

async function refreshServerInfo() {
  const key = conversation ? setting("api_key") : "";
  try {
    models = await listModels(key);
  } catch {
    models = [];
  }
  drawModels();
  tools = await listTools(key);
  $("tools-count").textContent = tools.length ? `(${tools.length}: ${tools.map((t) => t.tool).join(", ")})` : "(none on this server)";
  $("tools-settings").classList.toggle("none", !tools.length);
}

function modelStatus(m) {
  if (!m.status) return "";
  const s = typeof m.status === "string" ? m.status : m.status.value;
  const progress = m.status.progress ?? m.progress; // download progress, where the hub gives it
  return progress !== undefined ? `${s} ${Math.round(progress * 100)}%` : s;
}

function drawModels() {
  const picker = $("model-picker");
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
}

// ---------- events ----------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || controller) return;
  $("message").value = "";
  sendMessage(text);
});

$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") stop();
  if (event.key.toLowerCase() === "o" && event.ctrlKey && event.shiftKey) {
    event.preventDefault();
    open(null);
  }
});

$("stop").addEventListener("click", stop);
$("clear").addEventListener("click", () => open(null));

for (const [id, key, kind] of SETTINGS) {
  $(id).addEventListener(kind === "bool" || id.startsWith("reasoning-format") || id === "tool-choice" ? "change" : "input", () => readSetting(id, key, kind));
}

$("model-picker").addEventListener("change", () => {
  conversation.settings.model = $("model-picker").value;
  save();
  drawModels();
});
$("model-picker").addEventListener("focus", refreshServerInfo);
// Router mode: each model's status (loaded, loading, unloaded) kept current.
setInterval(() => {
  if (document.body.classList.contains("router") && !document.hidden) refreshServerInfo();
}, 3000);

view.addEventListener("click", async (event) => {
  const target = event.target;
  const node = target.closest(".turn");
  if (!node || controller) return;
  const index = Number(node.dataset.index);
  if (target.closest(".show-tokens")) {
    const tokens = node.querySelector(".tokens");
    tokens.hidden = !tokens.hidden;
    node.querySelector(".text").hidden = !tokens.hidden;
  } else if (target.closest(".copy-answer")) {
    navigator.clipboard && navigator.clipboard.writeText(conversation.messages[index].content || "");
  } else if (target.closest(".regenerate")) {
    // Answer the last user message again: everything after it goes.
    let user = index;
    while (user >= 0 && conversation.messages[user].role !== "user") user--;
    await cutAt(user + 1);
    await agentLoop();
  } else if (target.closest(".continue")) {
    await cutAt(index + 1);
    await agentLoop(true);
  } else if (target.closest(".edit")) {
    const text = conversation.messages[index].content;
    await cutAt(index);
    $("message").value = text;
    $("message").focus();
  }
});

$("conversations").addEventListener("click", async (event) => {
  const item = event.target.closest(".conv");
  if (!item) return;
  const id = item.dataset.id;
  if (event.target.closest(".delete")) {
    await store.deleteConversation(id);
    if (conversation.id === id) await open((await store.listConversations())[0]?.id);
    else await drawList();
  } else if (event.target.closest(".rename")) {
    const title = item.querySelector(".conv-title");
    const input = document.createElement("input");
    input.className = "rename-input";
    input.value = title.textContent;
    title.replaceWith(input);
    input.focus();
    input.select();
    const finish = async (keep) => {
      const c = await store.getConversation(id);
      if (keep && c && input.value.trim()) {
        c.title = input.value.trim();
        if (conversation.id === id) conversation.title = c.title;
        await store.saveConversation(c);
      }
      await drawList();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      if (e.key === "Escape") {
        e.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true), { once: true });
  } else if (!event.target.closest("input")) {
    await open(id);
  }
});

$("export").addEventListener("click", async () => {
  const data = JSON.stringify(await store.exportAll(), null, 2);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([data], { type: "application/json" }));
  link.download = `endmark-conversations-${new Date().toISOString().slice(0, 10)}.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});

$("import").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    await store.importAll(JSON.parse(await file.text()));
  } catch (e) {
    alert("Not a conversations export: " + e.message);
  }
  event.target.value = "";
  await drawList();
});

$("toggle-list").addEventListener("click", () => document.body.classList.toggle("show-list"));
$("toggle-settings").addEventListener("click", () => document.body.classList.toggle("show-settings"));

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("hljs-dark").disabled = theme !== "dark";
  $("hljs-light").disabled = theme === "dark";
}
$("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("endmark.theme", next);
  applyTheme(next);
});
applyTheme(localStorage.getItem("endmark.theme") || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));

installTokenPopover(view, $("tooltip"));

// The page's state, for tests and the curious.
window.endmark = { get conversation() { return conversation; }, headers };

open(localStorage.getItem("endmark.current")).then(() => {
  document.body.dataset.ready = "1";
});
