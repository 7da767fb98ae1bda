// The conversation's DOM: one `.turn` per message. An answer has a folded reasoning block,
// its text as markdown, a token view (click a token for its alternatives), tool-call cards
// and a stop badge saying why it ended.

import { renderMarkdown } from "./markdown.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, label, title) {
  const b = el("button", className, label);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

export function pct(logprob) {
  return (Math.exp(logprob) * 100).toFixed(1) + "%";
}

// Why an answer stopped, in words; `detail` is endmark's block of the final chunk.
export function describeStop(stop) {
  if (!stop) return "stopped";
  if (stop.note) return stop.note;
  const d = stop.endmark;
  let text;
  if (!d) text = "stopped: " + (stop.finish_reason || "unknown");
  else if (d.grammar_complete) text = "stopped: the grammar was complete";
  else if (d.stopping_token) {
    const t = d.stopping_token;
    text = `stopped: end token ${t.text} (id ${t.id}, learned from ${t.source})`;
  } else if (d.stopping_word) text = `stopped: stop word ${JSON.stringify(d.stopping_word)}`;
  else if (d.stop_type === "limit") {
    text = d.truncated ? "stopped: the context is full" : "stopped: token limit (length)";
  } else text = "stopped: " + d.stop_type;
  if (stop.finish_reason === "tool_calls") text += " · tool call";
  if (d && d.truncated_json_closed) text += " · truncated JSON closed";
  return text;
}

export function userTurn(message, index) {
  const turn = el("div", "turn user");
  turn.dataset.index = index;
  turn.appendChild(el("div", "text", message.content));
  const bar = el("div", "actions");
  bar.appendChild(button("edit", "Edit", "Edit and send again"));
  turn.appendChild(bar);
  return turn;
}

export function toolTurn(message, index) {
  const turn = el("div", "turn tool tool-result" + (message.error ? " error" : ""));
  turn.dataset.index = index;
  turn.appendChild(el("div", "card-title", `result of ${message.name || "tool"}`));
  turn.appendChild(el("pre", "text", message.content));
  return turn;
}

// An assistant turn, bound to its message: `update()` redraws what changed while streaming.
export class AssistantTurn {
  constructor(message, index) {
    this.message = message;
    this.node = el("div", "turn assistant");
    this.node.dataset.index = index;
    this.reasoning = el("details", "reasoning");
    this.reasoningTitle = el("summary", "", "Thinking");
    this.reasoningText = el("div", "reasoning-text");
    this.reasoning.append(this.reasoningTitle, this.reasoningText);
    this.text = el("div", "text markdown");
    this.tokens = el("div", "tokens");
    this.tokens.hidden = true;
    this.calls = el("div", "calls");
    this.stop = el("div", "stop-reason");
    this.bar = el("div", "actions");
    this.bar.append(
      button("show-tokens", "Tokens", "Each token with its probability: click one"),
      button("copy-answer", "Copy", "Copy the answer"),
      button("regenerate", "Regenerate", "Answer this again"),
      button("continue", "Continue", "Continue this answer (continue_final_message)"),
    );
    this.node.append(this.reasoning, this.text, this.tokens, this.calls, this.stop, this.bar);
    this.drawnTokens = 0;
    this.pending = false;
    this.update(true);
  }

  // Markdown is redrawn once per frame at most, however fast tokens come.
  update(now = false) {
    if (now) return this.draw();
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const m = this.message;
    this.reasoning.hidden = !m.reasoning;
    this.reasoningText.textContent = m.reasoning || "";
    const words = (m.reasoning || "").trim().split(/\s+/).filter(Boolean).length;
    this.reasoningTitle.textContent = m.content || m.stop ? `Thought (${words} words)` : "Thinking…";
    renderMarkdown(this.text, m.content || "");
    this.drawTokens();
    this.drawCalls();
    this.stop.hidden = !m.stop;
    this.stop.className = "stop-reason" + (m.stop && m.stop.error ? " error" : "");
    this.stop.textContent = m.stop ? describeStop(m.stop) : "";
    this.bar.hidden = !m.stop;
  }

  drawTokens() {
    const tokens = this.message.tokens || [];
    for (; this.drawnTokens < tokens.length; this.drawnTokens++) {
      const [text, logprob, alternatives] = tokens[this.drawnTokens];
      const span = el("span", "tok", text);
      if (logprob !== null && logprob !== undefined) {
        span.dataset.prob = pct(logprob);
        span.dataset.alternatives = JSON.stringify(
          (alternatives || []).map(([t, lp]) => [t, pct(lp)]),
        );
      }
      this.tokens.appendChild(span);
    }
    this.node.querySelector(".show-tokens").hidden = tokens.length === 0;
  }

  drawCalls() {
    const calls = this.message.tool_calls || [];
    while (this.calls.children.length < calls.length) {
      const card = el("div", "tool-card");
      card.append(el("div", "card-title"), el("pre", "arguments"), el("div", "approval"));
      this.calls.appendChild(card);
    }
    calls.forEach((call, i) => {
      const card = this.calls.children[i];
      card.dataset.name = call.function.name;
      card.querySelector(".card-title").textContent = `calls ${call.function.name}`;
      let args = call.function.arguments || "";
      try {
        args = JSON.stringify(JSON.parse(args), null, 2);
      } catch {
        /* still streaming: show it as it is */
      }
      card.querySelector(".arguments").textContent = args;
    });
  }

  // Asks before a call runs: resolves "run", "always" or "deny".
  approve(index) {
    const card = this.calls.children[index];
    const box = card.querySelector(".approval");
    box.textContent = "";
    const run = button("approve", "Run", "Run this call");
    const always = button("allow-always", "Always allow", "Run this tool without asking, in this chat");
    const deny = button("deny", "Deny", "Do not run it");
    box.append(el("span", "muted", "Run this tool? "), run, always, deny);
    run.focus();
    return new Promise((resolve) => {
      const done = (answer) => {
        box.textContent = answer === "deny" ? "denied" : "running…";
        resolve(answer);
      };
      run.onclick = () => done("run");
      always.onclick = () => done("always");
      deny.onclick = () => done("deny");
      this.cancelApproval = () => done("deny");
    });
  }

  callStatus(index, text) {
    const card = this.calls.children[index];
    if (card) card.querySelector(".approval").textContent = text;
  }
}

// The token popover: on hover and on click (touch screens have no hover).
export function installTokenPopover(container, tooltip) {
  const show = (span) => {
    const rows = JSON.parse(span.dataset.alternatives || "[]");
    tooltip.textContent = "";
    tooltip.appendChild(el("div", "", `${JSON.stringify(span.textContent)}  p=${span.dataset.prob}`));
    const table = document.createElement("table");
    for (const [token, p] of rows) {
      const tr = table.insertRow();
      tr.insertCell().textContent = JSON.stringify(token);
      tr.insertCell().textContent = p;
    }
    tooltip.appendChild(table);
    const rect = span.getBoundingClientRect();
    tooltip.style.left = Math.min(rect.left, window.innerWidth - 220) + "px";
    tooltip.style.top = rect.bottom + 6 + "px";
    tooltip.hidden = false;
  };
  container.addEventListener("mouseover", (event) => {
    const span = event.target.closest(".tok");
    if (span && span.dataset.prob) show(span);
  });
  container.addEventListener("mouseout", (event) => {
    if (event.target.closest(".tok")) tooltip.hidden = true;
  });
  container.addEventListener("click", (event) => {
    const span = event.target.closest(".tok");
    if (span && span.dataset.prob) show(span);
  });
}
