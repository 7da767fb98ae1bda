// Conversations kept in the browser (IndexedDB): one record per conversation, with its
// messages, its settings and the tools it allows. Nothing leaves the browser.

const DB = "endmark";
const STORE = "conversations";

let opened = null;

function db() {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB, 1);
      request.onupgradeneeded = () => {
        request.result.createObjectStore(STORE, { keyPath: "id" });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opened;
}

async function run(mode, work) {
  const store = (await db()).transaction(STORE, mode).objectStore(STORE);
  return new Promise((resolve, reject) => {
    const request = work(store);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export function newConversation(settings = {}) {
  const now = Date.now();
  return {
    id: crypto.randomUUID ? crypto.randomUUID() : String(now) + Math.random(),
    title: "New chat",
    created: now,
    updated: now,
    settings: { ...settings },
    allowedTools: [],
    messages: [],
  };
}

export async function listConversations() {
  const all = await run("readonly", (s) => s.getAll());
  return all.sort((a, b) => b.updated - a.updated);
}

export function getConversation(id) {
  return run("readonly", (s) => s.get(id));
}

export function saveConversation(conversation) {
  conversation.updated = Date.now();
  // A structured clone of plain data: drop anything the page attached that is not data.
  return run("readwrite", (s) => s.put(JSON.parse(JSON.stringify(conversation))));
}

export function deleteConversation(id) {
  return run("readwrite", (s) => s.delete(id));
}

// Export: a JSON file of every conversation. Import: the same shape (or one conversation);
// an id already here gets a fresh one, so nothing is overwritten.
export async function exportAll() {
  return { endmark: "conversations", version: 1, conversations: await listConversations() };
}

export async function importAll(data) {
  const list = Array.isArray(data) ? data : data.conversations || [data];
  let count = 0;
  for (const c of list) {
    if (!c || !Array.isArray(c.messages)) continue;
    const fresh = { ...newConversation(c.settings || {}), ...c };
    if (await getConversation(fresh.id)) fresh.id = newConversation().id;
    await saveConversation(fresh);
    count += 1;
  }
  return count;
}
