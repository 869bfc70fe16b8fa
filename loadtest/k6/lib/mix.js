// The realistic traffic mix shared by every load-test script (smoke, sustained, spike).
//
// One call of `sendMix()` is one HTTP request to POST /events: a single event or a batch, with
// a share of client retries (the same body re-posted verbatim), of events that fail validation,
// of `text/plain` sendBeacon bodies and of gzip-encoded bodies. Every response body is checked
// against the contract (producer-api/openapi.yaml, README.md), and every event the API
// acknowledged is counted in `accepted_events{event_type}` and, with ACK_LOG=1, written as one
// console line `{"ack":"<event_id>","t":"<event_type>"}` for the end-to-end verifier
// (run k6 with --console-output=<file>; see loadtest/README.md for the exact line format).
//
// Environment knobs (all optional):
//   API_URL          base URL of the API (default http://127.0.0.1:3000); POST goes to $API_URL/events
//   SITE_KEY         the site's write key, sent as X-Site-Key (default pk_local_demo, config/sites.json)
//   MIX_MAX_BATCH    largest batch, 1..500 (default 50; 1 = single events only)
//   MIX_SINGLE_RATIO share of requests that carry one bare event object (default 0.5); the
//                    others carry 2..MIX_MAX_BATCH events (uniform), as an array or {"events": [...]}
//   DUP_RATIO        share of requests that re-post an earlier body verbatim (default 0.05)
//   INVALID_RATIO    share of events that fail validation (default 0.02)
//   BEACON_RATIO     share of requests sent as text/plain, like navigator.sendBeacon (default 0.1)
//   GZIP_RATIO       share of requests sent with Content-Encoding: gzip (default 0.1)
//   ACK_LOG          1 = console.log one line per acknowledged event (default off)
//   REQ_TIMEOUT      per-request timeout (default 10s)

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

// ---------------------------------------------------------------------------------------------
// Environment

export function envNum(name, dflt) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name}=${raw} is not a number`);
  return n;
}

export function envStr(name, dflt) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? dflt : raw;
}

function ratio(name, dflt) {
  const r = envNum(name, dflt);
  if (r < 0 || r > 1) throw new Error(`${name}=${r} must be between 0 and 1`);
  return r;
}

/** Parses a k6-style duration ("90s", "2m", "1m30s", "1h", "500ms") into seconds. */
export function parseDuration(text) {
  const s = String(text).trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    const n = Number(m[1]);
    total += m[2] === 'h' ? n * 3600 : m[2] === 'm' ? n * 60 : m[2] === 's' ? n : n / 1000;
    consumed += m[0].length;
  }
  if (consumed !== s.length || consumed === 0) throw new Error(`bad duration ${JSON.stringify(text)}`);
  return total;
}

/** Seconds -> a duration string k6 accepts (whole seconds, at least 1s). */
export function secs(n) {
  return `${Math.max(1, Math.round(n))}s`;
}

export const API_URL = envStr('API_URL', 'http://127.0.0.1:3000').replace(/\/+$/, '');
export const EVENTS_URL = `${API_URL}/events`;
// The site the events belong to (config/sites.json's local site by default), sent as X-Site-Key.
export const SITE_KEY = envStr('SITE_KEY', 'pk_local_demo');
const MAX_BATCH = Math.min(500, Math.max(1, Math.floor(envNum('MIX_MAX_BATCH', 50))));
const SINGLE_RATIO = ratio('MIX_SINGLE_RATIO', 0.5);
const DUP_RATIO = ratio('DUP_RATIO', 0.05);
const INVALID_RATIO = ratio('INVALID_RATIO', 0.02);
const BEACON_RATIO = ratio('BEACON_RATIO', 0.1);
const GZIP_RATIO = ratio('GZIP_RATIO', 0.1);
export const ACK_LOG = envStr('ACK_LOG', '0') === '1';
export const REQ_TIMEOUT = envStr('REQ_TIMEOUT', '10s');

// ---------------------------------------------------------------------------------------------
// Metrics

export const EVENT_TYPES = ['page_view', 'click', 'add_to_cart', 'purchase', 'signup', 'search'];
/** Relative weights of EVENT_TYPES (same order); they add up to 100. */
export const WEIGHTS = [60, 20, 8, 2, 5, 5];

/** Events the API acknowledged (202 event_ids, or the event_ids of a 429/503), by event_type. */
export const acceptedEvents = new Counter('accepted_events');
/** Events sent (valid and invalid, duplicates included). */
export const sentEvents = new Counter('sent_events');
/** Events the API rejected (indices in `rejected`). */
export const rejectedEvents = new Counter('rejected_events');
/** Valid events the API did not take (429/503 `unaccepted`): the client would retry them. */
export const unacceptedEvents = new Counter('unaccepted_events');
/** Requests that re-posted an earlier body (client retries), and the events in them. */
export const duplicateRequests = new Counter('duplicate_requests');
export const duplicateEvents = new Counter('duplicate_events');
/** Requests answered 429 or 503 (back-pressure). */
export const throttledRequests = new Counter('throttled_requests');
/** Events per request, and uncompressed body size per request in bytes. */
export const batchSize = new Trend('batch_size');
export const bodyBytes = new Trend('body_bytes');

/** The thresholds every script shares; each script adds its own latency/rate ones. */
export function commonThresholds() {
  const t = {
    checks: [`rate>${envNum('CHECKS_RATE', 0.99)}`],
    // 202 and the intentional 400s are expected (see setResponseCallback below); anything else
    // (429, 503, 5xx, timeouts, connection errors) counts as failed.
    http_req_failed: [`rate<${envNum('FAILED_RATE', 0.01)}`],
    http_req_duration: [`p(95)<${envNum('P95_MS', 500)}`, `p(99)<${envNum('P99_MS', 1500)}`],
    accepted_events: ['count>0'],
  };
  // Sub-metric thresholds that always pass: they make k6 report the per-type counts in the summary.
  for (const type of EVENT_TYPES) t[`accepted_events{event_type:${type}}`] = ['count>=0'];
  return t;
}

export const summaryTrendStats = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];

http.setResponseCallback(http.expectedStatuses(202, 400));

// ---------------------------------------------------------------------------------------------
// Random data

function pick(arr) {
  return arr[Math.floor(Math.random() * arr.length)];
}

function int(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

const TOTAL_WEIGHT = WEIGHTS.reduce((a, b) => a + b, 0);
function eventType() {
  let r = Math.random() * TOTAL_WEIGHT;
  for (let i = 0; i < EVENT_TYPES.length; i++) {
    r -= WEIGHTS[i];
    if (r < 0) return EVENT_TYPES[i];
  }
  return EVENT_TYPES[0];
}

const hasRandomUUID = typeof globalThis.crypto === 'object' && typeof globalThis.crypto.randomUUID === 'function';
/** UUID v4: Web Crypto's randomUUID (present in k6 1.x), else built from getRandomValues/Math.random. */
export function uuidv4() {
  if (hasRandomUUID) return crypto.randomUUID();
  const b = new Array(16);
  for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.map((x) => (x + 0x100).toString(16).slice(1)).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const USER_AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:141.0) Gecko/20100101 Firefox/141.0',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36 Edg/139.0.0.0',
  'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
];
const SITE = 'https://shop.example.com';
const CATEGORIES = ['shoes', 'jackets', 'outdoor', 'kitchen', 'books', 'toys', 'garden', 'audio'];
const PAGES = ['/', '/category/', '/product/', '/cart', '/checkout', '/search', '/account', '/blog/'];
const REFERRERS = [
  '', 'https://www.google.com/', 'https://duckduckgo.com/', 'https://www.bing.com/search?q=shop',
  'https://news.ycombinator.com/', 'https://t.co/a1b2c3d4e5', `${SITE}/`, `${SITE}/category/shoes`,
];
const QUERIES = ['running shoes', 'rain jacket women', 'cast iron pan', 'noise cancelling headphones',
  'kids lego set', 'garden hose 30m', 'fantasy novels', 'winter gloves'];
const LANGS = ['en-US', 'en-GB', 'de-DE', 'fr-FR', 'es-ES', 'ja-JP'];

function pageUrl(category, productId) {
  const p = pick(PAGES);
  let path = p;
  if (p === '/category/') path = `/category/${category}`;
  else if (p === '/product/') path = `/product/${category}/${productId}-${category}-item`;
  else if (p === '/blog/') path = `/blog/2025/${int(1, 12)}/how-to-choose-${category}`;
  const utm = Math.random() < 0.3
    ? `?utm_source=${pick(['newsletter', 'google', 'facebook', 'partner'])}&utm_medium=${pick(['email', 'cpc', 'social'])}&utm_campaign=autumn_sale_${int(1, 9)}`
    : '';
  return { path, url: `${SITE}${path}${utm}` };
}

function properties(type, path, category) {
  const productId = `P${int(10000, 99999)}`;
  switch (type) {
    case 'page_view':
      return { title: `${category[0].toUpperCase()}${category.slice(1)} | Example Shop`, path,
        viewport: { w: pick([390, 414, 768, 1366, 1440, 1920]), h: pick([844, 896, 1024, 768, 900, 1080]) },
        load_ms: int(120, 3200), lang: pick(LANGS), is_landing: Math.random() < 0.2 };
    case 'click':
      return { element_id: `btn-${pick(['buy', 'details', 'next', 'menu', 'filter'])}-${int(1, 40)}`,
        element_text: pick(['Add to cart', 'See details', 'Next page', 'Open menu', 'Apply filter']),
        x: int(0, 1920), y: int(0, 4000), target_url: `${SITE}/product/${category}/${productId}`, path };
    case 'add_to_cart':
      return { product_id: productId, sku: `${productId}-${pick(['S', 'M', 'L', 'XL'])}`,
        name: `Example ${category} item ${int(1, 300)}`, category, price: int(499, 29999) / 100,
        currency: 'EUR', quantity: int(1, 3), cart_size: int(1, 8) };
    case 'purchase': {
      const n = int(1, 3);
      const items = [];
      let amount = 0;
      for (let i = 0; i < n; i++) {
        const price = int(499, 29999) / 100;
        const qty = int(1, 2);
        amount += price * qty;
        items.push({ product_id: `P${int(10000, 99999)}`, price, qty });
      }
      // amount and currency as the purchase tracking plan requires (schemas/tracking-plan/purchase.json).
      return { order_id: `ORD-${int(1000000, 9999999)}`, amount: Math.round(amount * 100) / 100,
        currency: 'EUR', items, coupon: Math.random() < 0.3 ? 'AUTUMN10' : null,
        shipping: pick(['standard', 'express', 'pickup']) };
    }
    case 'signup':
      return { method: pick(['email', 'google', 'apple']), plan: pick(['free', 'plus', 'pro']),
        newsletter: Math.random() < 0.5, referral_code: Math.random() < 0.2 ? `REF${int(1000, 9999)}` : null,
        form_ms: int(8000, 95000), path };
    case 'search':
      return { query: pick(QUERIES), results: int(0, 480), page: int(1, 5),
        filters: { category, sort: pick(['relevance', 'price_asc', 'price_desc', 'newest']) },
        latency_ms: int(20, 900), path };
    default:
      return {};
  }
}

// One simulated browser per VU at a time: a visitor keeps its ids for a few dozen events.
let visitor = null;
function currentVisitor() {
  if (visitor === null || visitor.left <= 0) {
    visitor = {
      anonymous_id: uuidv4(),
      session_id: `s_${uuidv4()}`,
      user_id: Math.random() < 0.3 ? `u_${int(1, 5000000)}` : null,
      user_agent: pick(USER_AGENTS),
      left: int(5, 80),
    };
  } else if (Math.random() < 0.05) {
    visitor.session_id = `s_${uuidv4()}`; // a new session of the same visitor
  }
  return visitor;
}

/** One valid event, about 600 bytes of compact JSON. */
export function makeEvent(type) {
  const t = type || eventType();
  const v = currentVisitor();
  v.left--;
  const category = pick(CATEGORIES);
  const { path, url } = pageUrl(category, `P${int(10000, 99999)}`);
  const ev = {
    event_id: uuidv4(),
    event_type: t,
    occurred_at: new Date(Date.now() - int(0, 5000)).toISOString(),
    anonymous_id: v.anonymous_id,
    session_id: v.session_id,
    url,
    referrer: pick(REFERRERS),
    user_agent: v.user_agent,
    properties: properties(t, path, category),
  };
  if (v.user_id !== null) ev.user_id = v.user_id;
  return ev;
}

// The ways an event fails validation; each keeps the rest of the event realistic.
const BREAKERS = [
  (ev) => { ev.event_type = 'Page View'; },                  // event_type pattern
  (ev) => { ev.client_ip = '203.0.113.7'; },                  // unknown field (forging a server fact)
  (ev) => { ev.event_id = 'not-a-uuid'; },                    // event_id not a UUID
  (ev) => { delete ev.event_type; },                          // event_type missing
  (ev) => { ev.occurred_at = 'yesterday at noon'; },          // occurred_at not RFC 3339
];
function makeInvalidEvent() {
  const ev = makeEvent();
  pick(BREAKERS)(ev);
  return ev;
}

// ---------------------------------------------------------------------------------------------
// Requests

/**
 * Builds a fresh request: `body` (string), `ct`, `gzip`, and what the API must answer:
 * `valid` = [{id, type}] in request order, `invalid` = indices of events that must be rejected.
 */
export function buildRequest() {
  const single = MAX_BATCH === 1 || Math.random() < SINGLE_RATIO;
  const n = single ? 1 : int(2, MAX_BATCH);
  const events = [];
  const valid = [];
  const invalid = [];
  for (let i = 0; i < n; i++) {
    if (Math.random() < INVALID_RATIO) {
      events.push(makeInvalidEvent());
      invalid.push(i);
    } else {
      const ev = makeEvent();
      events.push(ev);
      valid.push({ id: ev.event_id, type: ev.event_type });
    }
  }
  // The three body shapes the API takes: a bare object, an array, {"events": [...]}.
  let payload;
  if (single) payload = events[0];
  else payload = Math.random() < 0.2 ? { events } : events;
  const beacon = Math.random() < BEACON_RATIO;
  return {
    body: JSON.stringify(payload),
    ct: beacon ? 'text/plain;charset=UTF-8' : 'application/json',
    gzip: Math.random() < GZIP_RATIO,
    n,
    valid,
    invalid,
  };
}

// Per-VU ring of earlier requests, re-posted verbatim to simulate client retries.
const HISTORY_MAX = 64;
const history = [];
function remember(req) {
  if (req.valid.length === 0) return; // a client would not retry a 400
  if (history.length < HISTORY_MAX) history.push(req);
  else history[Math.floor(Math.random() * HISTORY_MAX)] = req;
}

function parseJson(res) {
  try {
    return typeof res.body === 'string' && res.body.length > 0 ? JSON.parse(res.body) : null;
  } catch (_) {
    return null;
  }
}

function sameIndices(rejected, expected) {
  if (!Array.isArray(rejected) || rejected.length !== expected.length) return false;
  const got = rejected.map((r) => (r && typeof r.index === 'number' ? r.index : -1)).sort((a, b) => a - b);
  for (let i = 0; i < expected.length; i++) if (got[i] !== expected[i]) return false;
  return true;
}

function ack(ids, byId) {
  const perType = {};
  for (const id of ids) {
    const type = byId[id];
    if (type === undefined) continue; // not an id we sent: the check below flags it
    perType[type] = (perType[type] || 0) + 1;
    if (ACK_LOG) console.log(`{"ack":"${id}","t":"${type}"}`);
  }
  for (const type of Object.keys(perType)) acceptedEvents.add(perType[type], { event_type: type });
}

/**
 * A request of exactly `n` valid events of the mix's types, as a JSON array (no invalid events,
 * no gzip, no beacon): for open-model scenarios whose rate is counted in events, where every
 * request must carry the same load.
 */
export function buildBatch(n) {
  const events = [];
  const valid = [];
  for (let i = 0; i < n; i++) {
    const ev = makeEvent();
    events.push(ev);
    valid.push({ id: ev.event_id, type: ev.event_type });
  }
  return { body: JSON.stringify(events), ct: 'application/json', gzip: false, n, valid, invalid: [] };
}

/** Sends one request of the mix (a new one, or with DUP_RATIO a verbatim re-post) and checks the answer. */
export function sendMix() {
  if (history.length > 0 && Math.random() < DUP_RATIO) return send(pick(history), true);
  return send(buildRequest(), false);
}

/**
 * Sends `req` (from buildRequest or buildBatch; `dup` = a verbatim re-post of an earlier one),
 * checks the answer against the contract and acknowledges the accepted events.
 */
export function send(req, dup) {
  const kind = dup ? 'retry' : req.n === 1 ? 'single' : 'batch';
  const enc = req.gzip ? 'gzip' : req.ct.startsWith('text/plain') ? 'beacon' : 'json';
  const params = {
    headers: { 'Content-Type': req.ct, 'X-Site-Key': SITE_KEY },
    tags: { name: 'POST /events', kind, enc },
    timeout: REQ_TIMEOUT,
  };
  if (req.gzip) params.compression = 'gzip';

  const res = http.post(EVENTS_URL, req.body, params);

  sentEvents.add(req.n);
  batchSize.add(req.n);
  bodyBytes.add(req.body.length);
  if (dup) {
    duplicateRequests.add(1);
    duplicateEvents.add(req.n);
  } else {
    remember(req);
  }
  return settle(req, res);
}

/**
 * Checks the API's answer `res` to `req` (as built by buildRequest or buildBatch) against the
 * contract, counts rejected/unaccepted events and acknowledges (counts and, with ACK_LOG, logs)
 * the accepted ones. Used by send(); lib/open-batch.js calls it when its fast path does not apply.
 */
export function settle(req, res) {
  const body = parseJson(res);
  const byId = {};
  for (const v of req.valid) byId[v.id] = v.type;

  if (req.valid.length === 0) {
    // Nothing valid: the whole request is refused with 400 and every index is listed.
    check(res, {
      'all-invalid: status 400': (r) => r.status === 400,
      'all-invalid: rejected lists every index': () => body !== null && sameIndices(body.rejected, req.invalid),
    });
    if (body !== null && Array.isArray(body.rejected)) rejectedEvents.add(body.rejected.length);
    return res;
  }

  if (res.status === 429 || res.status === 503) {
    throttledRequests.add(1);
    const ids = body !== null && Array.isArray(body.event_ids) ? body.event_ids : [];
    const unacc = body !== null && Array.isArray(body.unaccepted) ? body.unaccepted.length : req.valid.length;
    ack(ids, byId);
    unacceptedEvents.add(unacc);
    check(res, {
      'status 202': () => false, // back-pressure counts against the run
      'throttled: event_ids + unaccepted = valid events': () => ids.length + unacc === req.valid.length,
      'throttled: has Retry-After': (r) => r.headers['Retry-After'] !== undefined,
    });
    return res;
  }

  const ok202 = res.status === 202 && body !== null;
  const ids = ok202 && Array.isArray(body.event_ids) ? body.event_ids : [];
  const returned = {};
  for (const id of ids) returned[id] = true;
  if (ok202) ack(ids, byId);
  if (ok202 && Array.isArray(body.rejected)) rejectedEvents.add(body.rejected.length);
  check(res, {
    'status 202': () => res.status === 202,
    'accepted = valid events sent': () => ok202 && body.accepted === req.valid.length,
    'event_ids length = accepted': () => ok202 && ids.length === body.accepted,
    'every sent event_id acknowledged': () => ok202 && req.valid.every((v) => returned[v.id] === true),
    // An invalid event's id (it still has one unless event_id itself is the broken field) must
    // never come back: every returned id has to be one of the valid events sent.
    'only sent event_ids acknowledged': () => ok202 && ids.every((id) => byId[id] !== undefined),
    'rejected lists the invalid indices': () => ok202 && sameIndices(body.rejected || [], req.invalid),
  });
  return res;
}
