// A minimal browser for the unit tests: the globals the tracker touches (location, history,
// document, navigator, localStorage, fetch, event listeners), recording every request. The
// tracker wires its listeners and History API hooks once per page, so the globals are made once
// and `fakeBrowser()` only resets their state between tests.
const listeners = {};
const store = new Map();
const requests = [];
const nav = {};
let href = "";
let answer = 202;
const g = globalThis;
g.location = { get href() { return href; } };
g.history = {
  pushState(_s, _t, u) { href = new URL(u, href).href; },
  replaceState(_s, _t, u) { if (u) href = new URL(u, href).href; },
};
g.document = {
  title: "Shop",
  referrer: "https://search.example/",
  visibilityState: "visible",
  addEventListener: (t, f) => (listeners[t] ||= []).push(f),
};
g.addEventListener = (t, f) => (listeners[t] ||= []).push(f);
Object.defineProperty(g, "navigator", { value: nav, configurable: true });
g.localStorage = {
  getItem: (k) => (store.has(k) ? store.get(k) : null),
  setItem: (k, v) => store.set(k, String(v)),
  removeItem: (k) => store.delete(k),
  key: (i) => [...store.keys()][i] ?? null,
  get length() { return store.size; },
};
g.fetch = async (endpoint, init) => {
  requests.push({ endpoint, ...init });
  const a = await (typeof answer === "function" ? answer(JSON.parse(init.body)) : answer);
  if (a instanceof Error) throw a;
  const [status, retryAfter] = Array.isArray(a) ? a : [a];
  return { status, headers: { get: (h) => (h === "retry-after" && retryAfter != null ? String(retryAfter) : null) } };
};

const fire = (type) => {
  for (const f of listeners[type] || []) f({ type });
};

/** Resets the fake page to `url` with empty storage; returns the handles a test needs. */
export function fakeBrowser({ url = "https://shop.example/", dnt, gpc, keepStorage = false } = {}) {
  href = url;
  answer = 202;
  requests.length = 0;
  if (!keepStorage) store.clear();
  nav.doNotTrack = dnt;
  nav.globalPrivacyControl = gpc;
  g.document.visibilityState = "visible";
  return {
    requests,
    store,
    fire,
    /** What later fetch calls answer: a status, [status, retryAfterSeconds], an Error to throw, a promise of one, or a function of the body giving one. */
    set answer(a) { answer = a; },
    back(u) { href = new URL(u, href).href; fire("popstate"); },
    hide() { g.document.visibilityState = "hidden"; fire("visibilitychange"); },
    bodies: () => requests.map((r) => JSON.parse(r.body)),
    sent: () => requests.flatMap((r) => JSON.parse(r.body).events),
  };
}
