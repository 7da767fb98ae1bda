// The open conversation on screen and in the store: its turns drawn, messages added or cut,
// each change saved (in order: one save at a time).

import * as store from "./store.js";
import { $, state } from "./state.js";
import { AssistantTurn, toolTurn, userTurn } from "./turns.js";

let saving = Promise.resolve();

export function save() {
  const snapshot = state.conversation;
  saving = saving.then(() => store.saveConversation(snapshot)).catch(() => {});
  return saving;
}

export function drawConversation() {
  $("conversation").textContent = "";
  state.turns = [];
  state.conversation.messages.forEach((m, i) => drawMessage(m, i));
}

function drawMessage(message, index) {
  let turn;
  if (message.role === "user") turn = { node: userTurn(message, index) };
  else if (message.role === "tool") turn = { node: toolTurn(message, index) };
  else turn = new AssistantTurn(message, index);
  state.turns[index] = turn;
  const view = $("conversation");
  view.appendChild(turn.node);
  view.scrollTop = view.scrollHeight;
  return turn;
}

export function push(message) {
  state.conversation.messages.push(message);
  return drawMessage(message, state.conversation.messages.length - 1);
}

// Drop the messages from `index` on (to answer again, or to edit a question).
export async function cutAt(index) {
  state.conversation.messages.length = index;
  drawConversation();
  await save();
}

export function titleFrom(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 48 ? line.slice(0, 47) + "…" : line || "New chat";
}
