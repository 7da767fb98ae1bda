// One user turn: the model answers (streamed); while it calls the server's MCP tools, each
// call is approved (or allowed for the conversation), run by POST /tools, and its result
// sent back as a `tool` message, until the model answers or "Max steps" is reached.

import { runTool, streamChat } from "./api.js";
import { refreshServerInfo } from "./server.js";
import { offeredTools, setting, showAllowedTools } from "./settings.js";
import { drawList } from "./sidebar.js";
import { $, state } from "./state.js";
import { push, save } from "./view.js";

const NUMBERS = ["temperature", "max_tokens", "top_p", "top_k", "min_p", "seed", "reasoning_budget"];

function requestBody(toolChoice, continuing) {
  const messages = [];
  if (setting("system")) messages.push({ role: "system", content: setting("system") });
  for (const m of state.conversation.messages) {
    if (m.role === "assistant") {
      const out = { role: "assistant", content: m.content || "" };
      if (m.tool_calls && m.tool_calls.length) out.tool_calls = m.tool_calls;
      messages.push(out);
    } else if (m.role === "tool") {
      messages.push({ role: "tool", tool_call_id: m.tool_call_id, content: m.content });
    } else messages.push({ role: m.role, content: m.content });
  }
  const body = { messages, logprobs: true, top_logprobs: 5 };
  for (const key of NUMBERS) {
    const value = setting(key);
    if (value !== "" && value !== undefined && !Number.isNaN(Number(value))) body[key] = Number(value);
  }
  if (setting("reasoning_format")) body.reasoning_format = setting("reasoning_format");
  if (setting("model")) body.model = setting("model");
  if (setting("schema")) {
    const schema = JSON.parse(setting("schema")); // a SyntaxError is shown as the answer's end
    body.response_format = { type: "json_schema", json_schema: { name: "answer", schema } };
  } else if (setting("grammar")) {
    body.grammar = setting("grammar");
  } else if (setting("use_tools") && offeredTools().length && toolChoice !== "none") {
    // A constraint and tools do not combine: the constraint wins.
    body.tools = offeredTools().map((t) => t.definition);
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

function addDelta(message, choice) {
  const delta = choice.delta || {};
  if (delta.reasoning_content) message.reasoning = (message.reasoning || "") + delta.reasoning_content;
  if (delta.content) {
    message.content += delta.content;
    const infos = (choice.logprobs && choice.logprobs.content) || [];
    const t = infos.length === 1 ? infos[0] : null;
    const alternatives = t ? (t.top_logprobs || []).map((a) => [a.token, a.logprob]) : [];
    message.tokens.push([delta.content, t ? t.logprob : null, alternatives]);
  }
  for (const call of delta.tool_calls || []) {
    message.tool_calls = message.tool_calls || [];
    const empty = { id: "", type: "function", function: { name: "", arguments: "" } };
    const slot = (message.tool_calls[call.index ?? 0] ||= empty);
    if (call.id) slot.id = call.id;
    if (call.function && call.function.name) slot.function.name += call.function.name;
    if (call.function && call.function.arguments) slot.function.arguments += call.function.arguments;
  }
  if (choice.finish_reason) {
    message.stop = { finish_reason: choice.finish_reason, endmark: choice.endmark || null };
  }
}

// Streams one answer: into a new message, or onto the last one when continuing.
async function generate(toolChoice, continuing = false) {
  let body;
  try {
    body = requestBody(toolChoice, continuing);
  } catch (e) {
    const note = "the JSON schema box does not hold valid JSON: " + e.message;
    push({ role: "assistant", content: "", stop: { note, error: true } }).update(true);
    return null;
  }
  const message = continuing ? state.conversation.messages.at(-1) : { role: "assistant", content: "" };
  const turn = continuing ? state.turns.at(-1) : push(message);
  message.stop = null;
  message.tokens = message.tokens || [];
  turn.update(true);
  state.controller = new AbortController();
  setBusy(true);
  const view = $("conversation");
  try {
    await streamChat(body, setting("api_key"), state.controller.signal, (chunk) => {
      for (const choice of chunk.choices || []) addDelta(message, choice);
      turn.update();
      view.scrollTop = view.scrollHeight;
    });
    if (!message.stop) message.stop = { note: "stopped: the stream ended without a reason" };
  } catch (e) {
    message.stop = e.name === "AbortError"
      ? { note: "stopped: you pressed Stop" }
      : { note: "error: " + e.message, error: true };
  } finally {
    state.controller = null;
    setBusy(false);
    turn.update(true);
    await save();
  }
  return message;
}

async function runCall(call, turn, i) {
  const name = call.function.name;
  let args = {};
  try {
    args = JSON.parse(call.function.arguments || "{}");
  } catch {
    /* the tool's server says what is wrong with them */
  }
  if (!offeredTools().some((t) => t.tool === name)) return { error: `there is no tool named ${name}` };
  const allowed = state.conversation.allowedTools;
  if (!allowed.includes(name)) $("stop").disabled = false; // Stop denies the call
  let answer = allowed.includes(name) ? "run" : await turn.approve(i);
  if (answer === "always") {
    allowed.push(name);
    showAllowedTools();
    answer = "run";
  }
  if (answer === "deny" || state.stopped) return { error: "the user did not allow this call" };
  turn.callStatus(i, "running…");
  state.controller = new AbortController();
  setBusy(true);
  try {
    return await runTool(name, args, setting("api_key"), state.controller.signal);
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

async function runCalls(message, turn) {
  for (const [i, call] of (message.tool_calls || []).entries()) {
    if (state.stopped) return false;
    const result = await runCall(call, turn, i);
    const error = result.error !== undefined;
    turn.callStatus(i, error ? "failed" : "ran");
    const text = error ? "Error: " + result.error : String(result.plain_text_response ?? JSON.stringify(result));
    push({ role: "tool", tool_call_id: call.id, name: call.function.name, content: text, error });
    await save();
  }
  return !state.stopped;
}

export async function agentLoop(continuing = false) {
  state.stopped = false;
  let choice = setting("tool_choice") || "auto";
  const steps = Math.max(1, Number(setting("max_steps")) || 5);
  for (let step = 0; step < steps; step++) {
    if (step === steps - 1 && step > 0) choice = "none"; // the last step answers, no tools
    const message = await generate(choice, continuing && step === 0);
    if (!message || state.stopped || !(message.tool_calls && message.tool_calls.length)) break;
    const turn = state.turns[state.conversation.messages.indexOf(message)];
    if (!(await runCalls(message, turn))) break;
    if (choice === "required") choice = "auto"; // forced once: then the model may answer
  }
  await drawList();
  refreshServerInfo(); // a model may have loaded for this answer
}

export function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

export function stop() {
  state.stopped = true;
  if (state.controller) state.controller.abort();
  for (const t of state.turns) if (t && t.cancelApproval) t.cancelApproval();
}
