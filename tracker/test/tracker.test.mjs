// Unit tests of the built ESM tracker (dist/tracker.mjs) against a fake browser and fake clock.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { fakeBrowser } from "./fake-browser.mjs";

const T = await import("../dist/tracker.mjs");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const endpoint = "https://events.example/events";
const siteKey = "pk_test";
const settle = () => new Promise((r) => setImmediate(r));
// Advances the fake clock in steps, letting answered requests settle in between as they would.
const tick = async (ms) => {
  for (let left = ms; left > 0; left -= 100) {
    mock.timers.tick(Math.min(100, left));
    await settle();
  }
};
// Every queued event in localStorage, whichever page's key holds it.
const queueKeys = (b) => [...b.store.keys()].filter((k) => k.startsWith("_wa_q"));
const stored = (b) => queueKeys(b).flatMap((k) => JSON.parse(b.store.get(k)));

beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: Date.UTC(2026, 0, 1) }));
// A timer left by one test must be cleared while its fake clock is still active (the mock's
// clearTimeout of another clock's timer would remove one of the new clock's): an idle init does it.
afterEach(() => {
  fakeBrowser();
  T.init({ endpoint, siteKey, autoPageviews: false, requireConsent: true });
  mock.timers.reset();
});

test("a page view on init, sent after the flush interval as {site_key, events}", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey });
  await tick(999);
  assert.equal(b.requests.length, 0, "nothing before the flush interval");
  await tick(1);
  assert.equal(b.requests.length, 1);
  const [req] = b.requests;
  assert.equal(req.endpoint, endpoint);
  assert.equal(req.method, "POST");
  assert.equal(req.keepalive, true);
  assert.equal(req.credentials, "omit");
  const body = JSON.parse(req.body);
  assert.deepEqual(Object.keys(body), ["site_key", "sent_at", "events"]);
  assert.equal(body.site_key, siteKey);
  assert.equal(body.sent_at, "2026-01-01T00:00:01.000Z", "the browser's clock when it sent");
  const [e] = body.events;
  assert.equal(e.event_type, "page_view");
  assert.match(e.event_id, UUID);
  assert.equal(e.occurred_at, "2026-01-01T00:00:00.000Z");
  assert.equal(e.url, "https://shop.example/");
  assert.equal(e.referrer, "https://search.example/");
  assert.deepEqual(e.properties, { title: "Shop" });
  assert.ok(e.anonymous_id && e.session_id);
  assert.equal(queueKeys(b).length > 0, false, "the acknowledged event left the queue");
});

test("anonymous_id is stable across page loads; session_id ends after 30 minutes idle", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey, autoPageviews: false });
  T.track("a");
  await tick(29 * 60 * 1000);
  const [a] = b.sent();
  fakeBrowser({ keepStorage: true });
  T.init({ endpoint, siteKey, autoPageviews: false });
  T.track("b");
  await tick(30 * 60 * 1000 + 1);
  T.track("c");
  await tick(1000);
  const [bb, c] = b.sent();
  assert.equal(a.anonymous_id, bb.anonymous_id);
  assert.equal(bb.anonymous_id, c.anonymous_id);
  assert.equal(a.session_id, bb.session_id, "29 minutes idle: same session");
  assert.notEqual(bb.session_id, c.session_id, "30 minutes idle: a new session");
});

test("a full batch is sent at once, without waiting for the timer", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey, autoPageviews: false, batchSize: 5 });
  for (let i = 0; i < 5; i++) T.track("click", { i });
  await settle();
  assert.equal(b.requests.length, 1);
  assert.equal(b.bodies()[0].events.length, 5);
  assert.deepEqual(b.bodies()[0].events.map((e) => e.properties.i), [0, 1, 2, 3, 4]);
});

test("one request at a time: while one is out nothing else is sent; its answer sends the next full batch", async () => {
  const b = fakeBrowser();
  let release;
  b.answer = () => new Promise((r) => (release = () => r(202)));
  T.init({ endpoint, siteKey, autoPageviews: false, batchSize: 2 });
  for (let i = 0; i < 6; i++) T.track("e", { i });
  await tick(3000);
  assert.equal(b.requests.length, 1);
  release();
  await settle();
  await tick(1);
  assert.equal(b.requests.length, 2, "the next full batch at once");
  release();
  await settle();
  await tick(1);
  release();
  await settle();
  await tick(1);
  assert.deepEqual(b.sent().map((e) => e.properties.i), [0, 1, 2, 3, 4, 5]);
  assert.equal(stored(b).length, 0);
});

test("SPA navigation: pushState and popstate record page views, a replaceState to the same URL does not", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey });
  history.pushState({}, "", "/cart");
  history.replaceState({ scroll: 1 }, "");
  b.back("/");
  await tick(1000);
  const views = b.sent();
  assert.deepEqual(views.map((e) => e.url), ["https://shop.example/", "https://shop.example/cart", "https://shop.example/"]);
  assert.deepEqual(views.map((e) => e.referrer), ["https://search.example/", "https://shop.example/", "https://shop.example/cart"]);
});

test("network errors are retried with backoff and the same event_id, and the queue survives a reload", async () => {
  const b = fakeBrowser();
  b.answer = new TypeError("Failed to fetch");
  T.init({ endpoint, siteKey, autoPageviews: false });
  T.track("signup");
  await tick(1000);
  assert.equal(b.requests.length, 1);
  const id = b.sent()[0].event_id;
  assert.deepEqual(stored(b).map((e) => e.event_id), [id], "kept in localStorage");
  await tick(500);
  assert.equal(b.requests.length, 1, "no retry before the backoff (at least 1 s)");
  await tick(2000);
  assert.equal(b.requests.length, 2, "retried after the backoff");
  // A reload while it is still failing: the next page load adopts the stored event under its
  // own key (two open tabs never write the same key) and sends it.
  const before = queueKeys(b);
  const b2 = fakeBrowser({ keepStorage: true });
  T.init({ endpoint, siteKey, autoPageviews: false });
  assert.equal(queueKeys(b2).length, 1);
  assert.notDeepEqual(queueKeys(b2), before, "the new page writes its own key");
  await tick(1000);
  assert.deepEqual(b2.sent().map((e) => e.event_id), [id], "same event_id after the reload");
  assert.equal(queueKeys(b2).length > 0, false);
});

test("429 and 503 honour Retry-After; 4xx answers are final", async () => {
  const b = fakeBrowser();
  b.answer = [429, 5];
  T.init({ endpoint, siteKey, autoPageviews: false });
  T.track("a");
  await tick(1000);
  assert.equal(b.requests.length, 1);
  await tick(4900);
  assert.equal(b.requests.length, 1, "waits the 5 s Retry-After");
  b.answer = [503, 2];
  await tick(100);
  assert.equal(b.requests.length, 2);
  b.answer = 202;
  await tick(2000);
  assert.equal(b.requests.length, 3);
  assert.equal(new Set(b.sent().map((e) => e.event_id)).size, 1, "one event_id across the retries");
  assert.equal(queueKeys(b).length > 0, false);

  b.answer = 400;
  T.track("b");
  await tick(1000);
  assert.equal(b.requests.length, 4);
  assert.equal(queueKeys(b).length > 0, false, "a 400 is not retried");
  await tick(120000);
  assert.equal(b.requests.length, 4);
});

test("the offline queue is bounded: the oldest events are dropped", async () => {
  const b = fakeBrowser();
  b.answer = new TypeError("offline");
  T.init({ endpoint, siteKey, autoPageviews: false, maxQueue: 5, batchSize: 100 });
  for (let i = 0; i < 8; i++) T.track("e", { i });
  assert.deepEqual(stored(b).map((e) => e.properties.i), [3, 4, 5, 6, 7]);
});

test("coming back online sends at once, without waiting for the backoff", async () => {
  const b = fakeBrowser();
  b.answer = new TypeError("offline");
  T.init({ endpoint, siteKey, autoPageviews: false });
  T.track("a");
  await tick(1000);
  await tick(1000);
  const before = b.requests.length;
  b.answer = 202;
  b.fire("online");
  await settle();
  assert.equal(b.requests.length, before + 1);
  assert.equal(queueKeys(b).length > 0, false);
});

test("hiding the page sends everything queued with keepalive, even during a backoff", async () => {
  const b = fakeBrowser();
  b.answer = new TypeError("offline");
  T.init({ endpoint, siteKey, autoPageviews: false, batchSize: 3, flushInterval: 60000 });
  T.track("a");
  T.track("b");
  T.track("c"); // a full batch: sent and failed, so a backoff is running
  await settle();
  T.track("d");
  b.answer = 202;
  b.hide();
  await settle();
  const last = b.requests.slice(1);
  assert.equal(last.length, 2, "two batches of at most 3");
  assert.ok(last.every((r) => r.keepalive));
  assert.deepEqual(b.sent().slice(3).map((e) => e.event_type), ["a", "b", "c", "d"]);
  assert.equal(queueKeys(b).length > 0, false);
});

test("on hide, keepalive bodies stay within 60 KB together; what does not fit stays queued", async () => {
  const b = fakeBrowser();
  b.answer = () => new Promise(() => {}); // the page is going away: no answer ever arrives
  T.init({ endpoint, siteKey, autoPageviews: false, batchSize: 20, flushInterval: 60000, maxQueue: 1000 });
  const pad = "x".repeat(900);
  // Full batches go out as they fill (keepalive too), and count against the quota of the hide flush.
  for (let i = 0; i < 209; i++) T.track("big", { pad });
  b.hide();
  const bytes = b.requests.reduce((n, r) => n + r.body.length, 0);
  assert.ok(bytes <= 60000, `${bytes} bytes in keepalive requests`);
  assert.ok(b.requests.length >= 2);
  assert.ok(b.requests.every((r) => r.keepalive));
  assert.equal(stored(b).length, 209, "everything stays queued until answered");
});

test("consent required: nothing is sent or stored before consent(true); consent(false) erases", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey, requireConsent: true });
  T.track("before_consent");
  T.identify("u1");
  await tick(5000);
  assert.equal(b.requests.length, 0);
  assert.equal(b.store.size, 0, "no storage written before consent");
  T.consent(true);
  T.track("after_consent");
  await tick(2000);
  assert.deepEqual(b.sent().map((e) => e.event_type), ["page_view", "after_consent"]);
  assert.equal(b.store.get("_wa_c"), "1");
  // The choice is remembered on the next page load.
  const b2 = fakeBrowser({ keepStorage: true });
  T.init({ endpoint, siteKey, requireConsent: true });
  await tick(1000);
  assert.deepEqual(b2.sent().map((e) => e.event_type), ["page_view"]);
  T.consent(false);
  T.track("after_refusal");
  await tick(5000);
  assert.equal(b2.requests.length, 1);
  assert.deepEqual([...b2.store.keys()], ["_wa_c"]);
  assert.equal(b2.store.get("_wa_c"), "0");
});

for (const [name, nav] of [["Do-Not-Track", { dnt: "1" }], ["Global Privacy Control", { gpc: true }]]) {
  test(`${name} on: nothing is sent or stored (unless respectDoNotTrack: false)`, async () => {
    const b = fakeBrowser(nav);
    T.init({ endpoint, siteKey });
    T.track("a");
    T.flush(true);
    await tick(5000);
    assert.equal(b.requests.length, 0);
    assert.equal(b.store.size, 0);
    T.init({ endpoint, siteKey, respectDoNotTrack: false });
    await tick(1000);
    assert.equal(b.requests.length, 1);
  });
}

test("cookie-less mode: no storage at all, a new anonymous_id per page load", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey, cookieless: true });
  T.identify("user-7");
  T.track("a");
  await tick(1000);
  const [view1, a] = b.sent();
  fakeBrowser({ keepStorage: true });
  T.init({ endpoint, siteKey, cookieless: true });
  await tick(1000);
  assert.equal(b.store.size, 0);
  const [view2] = b.sent();
  assert.equal(a.user_id, "user-7");
  assert.equal(view1.anonymous_id, a.anonymous_id);
  assert.notEqual(a.anonymous_id, view2.anonymous_id);
});

test("identify attaches user_id to later events; identify() forgets it", async () => {
  const b = fakeBrowser();
  T.init({ endpoint, siteKey, autoPageviews: false });
  T.track("anon");
  T.identify("42");
  T.track("known");
  T.identify();
  T.track("anon_again");
  await tick(1000);
  assert.deepEqual(b.sent().map((e) => e.user_id), [undefined, "42", undefined]);
});

test("uuid falls back to getRandomValues and to Math.random when randomUUID is missing", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  try {
    Object.defineProperty(globalThis, "crypto", { value: { getRandomValues: (b) => b.fill(255) }, configurable: true });
    assert.equal(T.uuid(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true });
    const ids = new Set(Array.from({ length: 100 }, () => T.uuid()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, UUID);
  } finally {
    Object.defineProperty(globalThis, "crypto", saved);
  }
  assert.match(T.uuid(), UUID);
});
