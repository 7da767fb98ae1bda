// endmark's chat page: conversations kept in the browser, answers streamed from
// /v1/chat/completions with why each one stopped, and the agent loop over the server's MCP
// tools (GET/POST /tools). Plain ES modules, no build step, no CDN. This module wires the
// page's events to the others.

import { agentLoop, stop } from "./agent.js";
import { headers } from "./api.js";
import { drawModels, refreshServerInfo } from "./server.js";
import { watchSettings } from "./settings.js";
import { drawList, installSidebar, open } from "./sidebar.js";
import { $, state } from "./state.js";
import { installTokenPopover } from "./turns.js";
import { cutAt, push, save, titleFrom } from "./view.js";

async function sendMessage(text) {
  const c = state.conversation;
  if (!c.messages.length) c.title = titleFrom(text);
  push({ role: "user", content: text });
  await save();
  await drawList();
  await agentLoop();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || state.controller) return;
  $("message").value = "";
  sendMessage(text);
});

// Enter sends, Shift+Enter is a new line, Esc stops, Ctrl+Shift+O opens a new chat.
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

watchSettings((key) => {
  save();
  if (key === "api_key") refreshServerInfo();
});

$("model-picker").addEventListener("change", () => {
  state.conversation.settings.model = $("model-picker").value;
  save();
  drawModels();
});
$("model-picker").addEventListener("focus", refreshServerInfo);
// Router mode: each model's status (loaded, loading, unloaded) kept current.
setInterval(() => {
  if (document.body.classList.contains("router") && !document.hidden) refreshServerInfo();
}, 3000);

// The buttons under each turn.
$("conversation").addEventListener("click", async (event) => {
  const node = event.target.closest(".turn");
  if (!node || state.controller) return;
  const index = Number(node.dataset.index);
  const messages = state.conversation.messages;
  if (event.target.closest(".show-tokens")) {
    const tokens = node.querySelector(".tokens");
    tokens.hidden = !tokens.hidden;
    node.querySelector(".text").hidden = !tokens.hidden;
  } else if (event.target.closest(".copy-answer")) {
    if (navigator.clipboard) navigator.clipboard.writeText(messages[index].content || "");
  } else if (event.target.closest(".regenerate")) {
    let user = index; // answer the last question again: everything after it goes
    while (user >= 0 && messages[user].role !== "user") user--;
    await cutAt(user + 1);
    await agentLoop();
  } else if (event.target.closest(".continue")) {
    await cutAt(index + 1);
    await agentLoop(true);
  } else if (event.target.closest(".edit")) {
    const text = messages[index].content;
    await cutAt(index);
    $("message").value = text;
    $("message").focus();
  }
});

installSidebar();
installTokenPopover($("conversation"), $("tooltip"));

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
const dark = matchMedia("(prefers-color-scheme: dark)").matches;
applyTheme(localStorage.getItem("endmark.theme") || (dark ? "dark" : "light"));

window.endmark = { state, headers }; // for tests and the curious

open(localStorage.getItem("endmark.current")).then(() => {
  document.body.dataset.ready = "1";
});
