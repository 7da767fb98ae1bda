// endmark's chat page: streams /v1/chat/completions and shows why each answer stopped,
// with each token's probability and its top alternatives on hover. No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
const tooltip = $("tooltip");
let history = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text || "";
  div.appendChild(body);
  conversation.appendChild(div);
  conversation.scrollTop = conversation.scrollHeight;
  return div;
}

function pct(logprob) {
  return (Math.exp(logprob) * 100).toFixed(1) + "%";
}

function addToken(target, text, info) {
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = text;
  if (info) {
    span.dataset.prob = pct(info.logprob);
    span.dataset.alternatives = JSON.stringify(
      (info.top_logprobs || []).map((t) => [t.token, pct(t.logprob)])
    );
  }
  target.appendChild(span);
}

function describeStop(info, finishReason) {
  if (!info) return "stopped: " + (finishReason || "unknown");
  if (info.grammar_complete) return "stopped: the grammar was complete";
  if (info.stopping_token) {
    const t = info.stopping_token;
    return `stopped: end token ${t.text} (id ${t.id}, learned from ${t.source})`;
  }
  if (info.stopping_word) return `stopped: stop word ${JSON.stringify(info.stopping_word)}`;
  if (info.stop_type === "limit") {
    return info.truncated ? "stopped: the context is full" : "stopped: token limit (length)";
  }
  return "stopped: " + info.stop_type;
}

function setReason(turn, text, isError) {
  const p = document.createElement("div");
  p.className = "stop-reason" + (isError ? " error" : "");
  p.textContent = text;
  turn.appendChild(p);
}

async function send(text) {
  history.push({ role: "user", content: text });
  addTurn("user", text);
  const turn = addTurn("assistant", "");
  const target = turn.querySelector(".text");
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = {
    messages,
    stream: true,
    temperature: parseFloat($("temperature").value),
    max_tokens: parseInt($("max-tokens").value, 10),
    logprobs: true,
    top_logprobs: 5,
  };
  const schema = $("schema").value.trim();
  if (schema) {
    try {
      body.response_format = {
        type: "json_schema",
        json_schema: { name: "answer", schema: JSON.parse(schema) },
      };
    } catch (e) {
      setReason(turn, "the JSON schema box does not hold valid JSON: " + e.message, true);
      history.pop();
      return;
    }
  }
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  let answer = "";
  let finished = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || "HTTP " + response.status);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const content = (choice.delta && choice.delta.content) || "";
          const tokens = (choice.logprobs && choice.logprobs.content) || [];
          if (tokens.length === 1) addToken(target, content, tokens[0]);
          else if (content) addToken(target, content, null);
          answer += content;
          if (choice.finish_reason) {
            finished = true;
            setReason(turn, describeStop(choice.endmark, choice.finish_reason), false);
          }
        }
        conversation.scrollTop = conversation.scrollHeight;
      }
    }
    history.push({ role: "assistant", content: answer });
  } catch (e) {
    if (e.name === "AbortError") {
      setReason(turn, "stopped: you pressed Stop", false);
      history.push({ role: "assistant", content: answer });
    } else {
      setReason(turn, "error: " + e.message, true);
      history.pop();
    }
  } finally {
    if (!finished && !turn.querySelector(".stop-reason")) setReason(turn, "stopped", false);
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || controller) return;
  $("message").value = "";
  send(text);
});

$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", () => controller && controller.abort());

$("clear").addEventListener("click", () => {
  if (controller) controller.abort();
  history = [];
  conversation.textContent = "";
});

conversation.addEventListener("mouseover", (event) => {
  const span = event.target.closest(".tok");
  if (!span || !span.dataset.prob) return;
  const rows = JSON.parse(span.dataset.alternatives || "[]");
  tooltip.textContent = "";
  const head = document.createElement("div");
  head.textContent = `${JSON.stringify(span.textContent)}  p=${span.dataset.prob}`;
  tooltip.appendChild(head);
  const table = document.createElement("table");
  for (const [token, p] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = JSON.stringify(token);
    tr.insertCell().textContent = p;
  }
  tooltip.appendChild(table);
  const rect = span.getBoundingClientRect();
  tooltip.style.left = rect.left + "px";
  tooltip.style.top = rect.bottom + 6 + "px";
  tooltip.hidden = false;
});

conversation.addEventListener("mouseout", (event) => {
  if (event.target.closest(".tok")) tooltip.hidden = true;
});

fetch("/v1/models", { headers: headers() })
  .then((r) => r.json())
  .then((d) => { $("model").textContent = d.data ? d.data[0].id : ""; })
  .catch(() => {});
