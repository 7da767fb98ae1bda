// The server's routes the page uses: chat completions (streamed), models, and MCP tools.
// Every request goes to the server that served the page; nothing else is ever fetched.

export function headers(apiKey) {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

async function failure(response) {
  const body = await response.json().catch(() => ({}));
  const message = (body.error && (body.error.message || body.error)) || "HTTP " + response.status;
  return new Error(message);
}

// Streams /v1/chat/completions; `onChunk` gets each parsed SSE chunk.
export async function streamChat(body, apiKey, signal, onChunk) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(apiKey),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      const line = block.split("\n").find((l) => l.startsWith("data: "));
      if (!line || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
      onChunk(chunk);
    }
  }
}

export async function listModels(apiKey) {
  const response = await fetch("/v1/models", { headers: headers(apiKey) });
  if (!response.ok) throw await failure(response);
  return (await response.json()).data || [];
}

// GET /tools: [] when the server runs no MCP servers (its 403) or cannot be asked.
export async function listTools(apiKey) {
  try {
    const response = await fetch("/tools", { headers: headers(apiKey) });
    return response.ok ? await response.json() : [];
  } catch {
    return [];
  }
}

// POST /tools: {plain_text_response} or {error}; a failed request is an error result too,
// so that the agent loop always has something to give the model.
export async function runTool(name, params, apiKey, signal) {
  try {
    const response = await fetch("/tools", {
      method: "POST",
      headers: headers(apiKey),
      body: JSON.stringify({ tool: name, params }),
      signal,
    });
    if (!response.ok) return { error: (await failure(response)).message };
    return await response.json();
  } catch (e) {
    return { error: e.name === "AbortError" ? "stopped before the tool answered" : e.message };
  }
}

// Hook for router mode's download progress (the hub work adds `GET /models/sse`): calls
// `onEvent` with each event's data while the stream lasts; does nothing where it is absent.
export async function watchModels(apiKey, onEvent) {
  try {
    const response = await fetch("/models/sse", { headers: headers(apiKey) });
    const type = response.headers.get("content-type") || "";
    if (!response.ok || !type.startsWith("text/event-stream")) return;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).split("\n").find((l) => l.startsWith("data: "));
        buffer = buffer.slice(cut + 2);
        if (line) {
          try {
            onEvent(JSON.parse(line.slice(6)));
          } catch {
            /* not JSON: not for us */
          }
        }
      }
    }
  } catch {
    /* no such route here */
  }
}
