// The browser tracker: builds events in the shape of schemas/event.schema.json and posts them in
// batches to the producer's POST /events as `{"site_key": …, "events": [...]}` with a text/plain
// body, a CORS "simple request": no preflight, and the same body works for fetch and a beacon.
// Delivery is at least once; the producer stores each event_id once, so every resend is safe.

/** Options of {@link init}. */
export interface Options {
  /** URL of the producer's `POST /events`, e.g. `https://events.example.com/events`. */
  endpoint: string;
  /** The site's public write key (`pk_…`). */
  siteKey: string;
  /** Send and store nothing until `consent(true)`; the choice is remembered. Default `false`. */
  requireConsent?: boolean;
  /** Keep the anonymous id, session, consent and queue in memory only (no browser storage). Default `false`. */
  cookieless?: boolean;
  /** Record a page view on init and on every History API navigation. Default `true`. */
  autoPageviews?: boolean;
  /** Do nothing when Do-Not-Track or Global Privacy Control is on. Default `true`. */
  respectDoNotTrack?: boolean;
  /** Events per request; a full batch is sent at once. Default `20`. */
  batchSize?: number;
  /** Milliseconds an event waits for others before a request is sent. Default `1000`. */
  flushInterval?: number;
  /** Events kept while the endpoint cannot be reached; beyond it the oldest are dropped. Default `500`. */
  maxQueue?: number;
  /** Called with every event the tracker creates (debugging, tests). */
  onEvent?: (event: TrackedEvent) => void;
}

/** One event as sent to the producer. */
export interface TrackedEvent {
  event_id: string;
  event_type: string;
  occurred_at: string;
  anonymous_id: string;
  session_id: string;
  user_id?: string;
  url: string;
  referrer?: string;
  properties?: Record<string, unknown>;
}

type Config = Required<Omit<Options, "onEvent">> & Pick<Options, "onEvent">;

/** A session ends after this long without an event (ms). */
export const SESSION_TIMEOUT_MS = 30 * 60 * 1000;
// A keepalive request's body may be at most 64 KiB (Fetch standard); stay below it.
const KEEPALIVE_BYTES = 60000;
const MAX_BACKOFF_MS = 60000;
const PREFIX = "_wa_";

let o: Config | undefined;
let queue: TrackedEvent[] = [];
const inflight = new Set<string>();
let memory: Record<string, string | undefined> = {};
let timer: ReturnType<typeof setTimeout> | 0 = 0;
let retryAt = 0;
// Body length of the keepalive requests now out: the 64 KiB quota is for all of them together.
let keptAlive = 0;
let attempt = 0;
// The consent choice: "1" given, "0" refused, undefined not asked.
let choice: string | undefined;
let blocked = false;
let lastUrl = "";
let wired = false;
// This page's queue key: each page load has its own, so two open tabs never overwrite each
// other's queue; a new page adopts (and resends) what earlier pages left behind.
let queueKey = "q";

function read(key: string): string | undefined {
  if (!o!.cookieless) {
    try {
      const v = localStorage.getItem(PREFIX + key);
      if (v != null) return v;
    } catch {
      // Storage can be disabled or full; memory is the fallback.
    }
  }
  return memory[key];
}

function write(key: string, value?: string): void {
  memory[key] = value;
  if (o!.cookieless) return;
  try {
    if (value == null) localStorage.removeItem(PREFIX + key);
    else localStorage.setItem(PREFIX + key, value);
  } catch {
    // As in read(): the in-memory copy still works for this page.
  }
}

/** A v4 UUID: crypto.randomUUID where it exists (secure contexts), else built from random bytes. */
export function uuid(): string {
  const c = globalThis.crypto;
  if (c && c.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && c.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = (Math.random() * 256) | 0;
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  let h = "";
  b.forEach((x) => (h += (x + 256).toString(16).slice(1)));
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The tracker's keys in localStorage (without the prefix). */
function storedKeys(): string[] {
  const out: string[] = [];
  try {
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      if (k && k.startsWith(PREFIX)) out.push(k.slice(PREFIX.length));
    }
  } catch {
    // No storage: nothing stored.
  }
  return out;
}

const off = () => !o || blocked || choice == "0" || (o.requireConsent && choice != "1");

function save(): void {
  write(queueKey, queue.length ? JSON.stringify(queue) : undefined);
}

function session(now: number): string {
  const [id, at] = (read("s") || "").split(" ");
  const current = id && now - +at < SESSION_TIMEOUT_MS ? id : uuid();
  write("s", `${current} ${now}`);
  return current;
}

function schedule(): void {
  // While a request is out, its answer reschedules (a timer now would only spin on it).
  if (timer || !o || off() || inflight.size) return;
  const pending = queue.length - inflight.size;
  if (pending <= 0) return;
  const wait = Math.max(retryAt - Date.now(), pending >= o.batchSize ? 0 : o.flushInterval);
  timer = setTimeout(() => flush(), wait);
}

function drop(ids: Set<string>): void {
  queue = queue.filter((e) => !ids.has(e.event_id));
  save();
}

async function send(batch: TrackedEvent[], body: string): Promise<void> {
  const ids = new Set(batch.map((e) => e.event_id));
  ids.forEach((id) => inflight.add(id));
  let status = 0;
  let retryAfter = 0;
  const size = body.length + keptAlive < KEEPALIVE_BYTES ? body.length : 0;
  keptAlive += size;
  try {
    const r = await fetch(o!.endpoint, { method: "POST", body, keepalive: !!size, credentials: "omit" });
    status = r.status;
    retryAfter = +(r.headers.get("retry-after") || 0);
  } catch {
    // Offline, DNS, a refused connection or a CORS refusal: all look alike here; retry later.
  }
  keptAlive -= size;
  ids.forEach((id) => inflight.delete(id));
  if (status && status != 429 && status < 500) {
    // Accepted (202, rejected events listed in the body) or refused for good (4xx): resending
    // the same body would get the same answer.
    drop(ids);
    attempt = retryAt = 0;
  } else {
    attempt++;
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
    retryAt = Date.now() + (retryAfter > 0 ? retryAfter * 1000 : backoff);
  }
  schedule();
}

/**
 * Sends what is queued now: one batch, or on `unload` everything that fits in keepalive
 * requests (which outlive the page). Called by the tracker itself; call it to send sooner.
 */
export function flush(unload?: boolean): void {
  if (timer) clearTimeout(timer);
  timer = 0;
  if (off() || (!unload && (inflight.size || Date.now() < retryAt))) return schedule();
  let pending = queue.filter((e) => !inflight.has(e.event_id));
  let budget = KEEPALIVE_BYTES - keptAlive;
  while (pending.length) {
    const batch = pending.slice(0, o!.batchSize);
    pending = pending.slice(o!.batchSize);
    // sent_at: this browser's clock now, so the producer can correct every occurred_at in the
    // batch for this clock's error (events queued offline included; see the README).
    const body = JSON.stringify({ site_key: o!.siteKey, sent_at: new Date().toISOString(), events: batch });
    if (unload && (budget -= body.length) < 0) break;
    void send(batch, body);
    if (!unload) break;
  }
}

/** Records an event of `type` (`^[a-z][a-z0-9_]{0,63}$`) with optional `properties`. */
export function track(type: string, properties?: Record<string, unknown>): void {
  record(type, properties);
}

function record(type: string, properties?: Record<string, unknown>, referrer?: string): void {
  if (off()) return;
  const now = Date.now();
  const e: TrackedEvent = {
    event_id: uuid(),
    event_type: type,
    occurred_at: new Date(now).toISOString(),
    anonymous_id: read("a") || (write("a", uuid()), read("a")!),
    session_id: session(now),
    url: location.href.slice(0, 2048),
  };
  const user = read("u");
  if (user) e.user_id = user;
  if (referrer) e.referrer = referrer.slice(0, 2048);
  if (properties) e.properties = properties;
  queue.push(e);
  if (queue.length > o!.maxQueue) queue.splice(0, queue.length - o!.maxQueue);
  save();
  if (o!.onEvent) o!.onEvent(e);
  if (queue.length - inflight.size >= o!.batchSize) flush();
  else schedule();
}

/** Records a page view of the current URL (done for you unless `autoPageviews: false`). */
export function page(properties?: Record<string, unknown>): void {
  if (off()) return;
  const referrer = lastUrl || document.referrer;
  lastUrl = location.href;
  record("page_view", { title: document.title, ...properties }, referrer);
}

/** Attaches `userId` to this and later events; `identify()` forgets it. */
export function identify(userId?: string | null): void {
  if (!off()) write("u", userId ? String(userId).slice(0, 128) : undefined);
}

/**
 * The consent switch. `true` lets events through (and records the current page view);
 * `false` stops tracking and erases the queue and the stored ids.
 */
export function consent(yes: boolean): void {
  if (!o) return;
  choice = yes ? "1" : "0";
  if (!yes) {
    queue = [];
    for (const k of storedKeys()) write(k);
  }
  write("c", choice);
  if (!yes) return;
  if (o.autoPageviews && lastUrl != location.href) page();
  flush();
}

function navigated(): void {
  if (o && o.autoPageviews && location.href != lastUrl) page();
}

function wire(): void {
  wired = true;
  for (const name of ["pushState", "replaceState"] as const) {
    const original = history[name];
    history[name] = function (this: History, ...args: Parameters<History["pushState"]>) {
      original.apply(this, args);
      navigated();
    };
  }
  addEventListener("popstate", navigated);
  addEventListener("online", () => {
    attempt = retryAt = 0;
    flush();
  });
  // pagehide covers closing and navigating away; visibilitychange covers a tab hidden and then
  // discarded, or a mobile app switch, where pagehide may never come.
  addEventListener("pagehide", () => flush(true));
  document.addEventListener("visibilitychange", () => document.visibilityState == "hidden" && flush(true));
}

/** Starts the tracker. Call once per page; a second call replaces the options. */
export function init(options: Options): void {
  const n = navigator as Navigator & { globalPrivacyControl?: boolean };
  o = {
    requireConsent: false,
    cookieless: false,
    autoPageviews: true,
    respectDoNotTrack: true,
    batchSize: 20,
    flushInterval: 1000,
    maxQueue: 500,
    ...options,
  };
  if (timer) clearTimeout(timer);
  timer = 0;
  inflight.clear();
  keptAlive = 0;
  memory = {};
  lastUrl = "";
  attempt = retryAt = 0;
  blocked = o.respectDoNotTrack && (n.doNotTrack == "1" || !!n.globalPrivacyControl);
  choice = read("c");
  queueKey = "q" + uuid().slice(0, 8);
  queue = [];
  if (!off()) {
    // Events left by earlier pages (a reload, a crash, another tab): resending one that was in
    // fact delivered is harmless, the pipeline keeps each event_id once.
    for (const k of storedKeys()) {
      if (k[0] != "q") continue;
      try {
        for (const e of JSON.parse(read(k) || "[]") as TrackedEvent[]) {
          if (!queue.some((x) => x.event_id == e.event_id)) queue.push(e);
        }
      } catch {
        // A damaged entry is dropped with its key.
      }
      write(k);
    }
    queue.splice(0, queue.length - o.maxQueue);
    save();
  }
  if (!wired) wire();
  if (o.autoPageviews) page();
  schedule();
}
