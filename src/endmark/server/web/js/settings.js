// Settings belong to a conversation: each input below is saved in its record.

import { $, state } from "./state.js";

// Each setting: its input, its key in a conversation's settings, its kind and default.
export const SETTINGS = [
  ["system", "system", "text", "You are a helpful assistant."],
  ["temperature", "temperature", "number", "0.7"],
  ["max-tokens", "max_tokens", "number", "256"],
  ["top-p", "top_p", "number", ""],
  ["top-k", "top_k", "number", ""],
  ["min-p", "min_p", "number", ""],
  ["seed", "seed", "number", ""],
  ["reasoning-format", "reasoning_format", "select", ""],
  ["reasoning-budget", "reasoning_budget", "number", ""],
  ["schema", "schema", "text", ""],
  ["grammar", "grammar", "text", ""],
  ["use-tools", "use_tools", "bool", true],
  ["parallel-calls", "parallel_calls", "bool", false],
  ["tool-choice", "tool_choice", "select", "auto"],
  ["max-steps", "max_steps", "number", "5"],
  ["api-key", "api_key", "text", ""],
];

function defaults() {
  return Object.fromEntries(SETTINGS.map(([, key, , value]) => [key, value]));
}

// The open conversation's value of `key` (its default when unset), trimmed.
export function setting(key) {
  const value = { ...defaults(), ...(state.conversation ? state.conversation.settings : {}) }[key];
  return typeof value === "string" ? value.trim() : value;
}

export function showSettings() {
  const s = { ...defaults(), ...state.conversation.settings };
  for (const [id, key, kind] of SETTINGS) {
    if (kind === "bool") $(id).checked = !!s[key];
    else $(id).value = s[key] ?? "";
  }
  showTools();
  showAllowedTools();
}

// One checkbox per tool of the server: the unchecked ones (`tools_off`, by name) are not
// offered in this conversation, which also keeps the prompt short.
export function showTools() {
  const off = setting("tools_off") || [];
  const list = $("tool-list");
  list.textContent = "";
  for (const t of state.tools) {
    const label = document.createElement("label");
    label.className = "check";
    label.title = t.definition.function.description || "";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.dataset.tool = t.tool;
    box.checked = !off.includes(t.tool);
    label.append(box, " " + t.tool);
    list.appendChild(label);
  }
}

// The tools offered to the model: those of the server not turned off in this conversation.
export function offeredTools() {
  const off = setting("tools_off") || [];
  return state.tools.filter((t) => !off.includes(t.tool));
}

export function showAllowedTools() {
  const allowed = state.conversation.allowedTools || [];
  $("allowed-tools").textContent = allowed.length ? "allowed without asking: " + allowed.join(", ") : "";
}

// Calls `changed(key)` after each edit has been written into the conversation.
export function watchSettings(changed) {
  for (const [id, key, kind] of SETTINGS) {
    const event = kind === "bool" || kind === "select" ? "change" : "input";
    $(id).addEventListener(event, () => {
      state.conversation.settings[key] = kind === "bool" ? $(id).checked : $(id).value;
      changed(key);
    });
  }
  $("tool-list").addEventListener("change", (event) => {
    const name = event.target.dataset.tool;
    if (!name) return;
    const off = (state.conversation.settings.tools_off || []).filter((n) => n !== name);
    if (!event.target.checked) off.push(name);
    state.conversation.settings.tools_off = off;
    changed("tools_off");
  });
}
