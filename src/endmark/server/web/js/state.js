// What the page holds while it runs: the open conversation, its DOM turns, the running
// request, and what the server offers. One object, shared by the page's modules.

export const state = {
  conversation: null, // the open one (store.js's record)
  turns: [], // its DOM turns, by message index
  controller: null, // the running request's AbortController
  stopped: false, // Stop or Esc was pressed during this agent loop
  tools: [], // GET /tools
  models: [], // GET /v1/models
};

export const $ = (id) => document.getElementById(id);
