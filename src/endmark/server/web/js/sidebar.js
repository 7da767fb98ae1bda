// The list of conversations: open, rename, delete, export, import.

import { refreshServerInfo } from "./server.js";
import { showSettings } from "./settings.js";
import { $, state } from "./state.js";
import * as store from "./store.js";
import { drawConversation } from "./view.js";

export async function drawList() {
  const list = $("conversations");
  list.textContent = "";
  for (const c of await store.listConversations()) {
    const item = document.createElement("li");
    item.className = "conv" + (state.conversation && c.id === state.conversation.id ? " current" : "");
    item.dataset.id = c.id;
    const title = document.createElement("span");
    title.className = "conv-title";
    title.textContent = c.title;
    title.title = c.title;
    item.append(title, iconButton("rename", "✎", "Rename"), iconButton("delete", "×", "Delete"));
    list.appendChild(item);
  }
}

function iconButton(className, label, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className + " icon";
  b.title = title;
  b.textContent = label;
  return b;
}

// Open conversation `id`, or a new one (it keeps the last one's settings: model, key,
// sampling; not its messages). A new one is stored once it has a message.
export async function open(id) {
  if (state.controller) state.controller.abort();
  const found = id && (await store.getConversation(id));
  const settings = state.conversation ? { ...state.conversation.settings } : {};
  state.conversation = found || store.newConversation(settings);
  localStorage.setItem("endmark.current", state.conversation.id);
  showSettings();
  drawConversation();
  await drawList();
  refreshServerInfo();
  document.body.classList.remove("show-list");
}

function rename(item) {
  const id = item.dataset.id;
  const title = item.querySelector(".conv-title");
  const input = document.createElement("input");
  input.className = "rename-input";
  input.value = title.textContent;
  title.replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (keep) => {
    if (done) return;
    done = true;
    const c = await store.getConversation(id);
    if (keep && c && input.value.trim()) {
      c.title = input.value.trim();
      if (state.conversation.id === id) state.conversation.title = c.title;
      await store.saveConversation(c);
    }
    await drawList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") {
      e.stopPropagation(); // Esc here cancels the rename, not the answer
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

export function installSidebar() {
  $("conversations").addEventListener("click", async (event) => {
    const item = event.target.closest(".conv");
    if (!item || event.target.closest("input")) return;
    if (event.target.closest(".delete")) {
      await store.deleteConversation(item.dataset.id);
      if (state.conversation.id === item.dataset.id) await open((await store.listConversations())[0]?.id);
      else await drawList();
    } else if (event.target.closest(".rename")) rename(item);
    else await open(item.dataset.id);
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
}
