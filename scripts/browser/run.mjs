// The browser half of `make test-browser`: headless Debian chromium (puppeteer-core over CDP)
// uses the demo shop like a visitor, through every path the tracker has to survive, and writes
// down every event the page created, for scripts/test-browser.sh to reconcile against the stores.
//
//   node scripts/browser/run.mjs   env: PAGE_URL (an allowed origin), FORBIDDEN_URL (an origin
//     the site does not allow), ENDPOINT (the producer's /events), OUT (a directory), SITE_ID
//     (the demo key's site), LIMITED_KEY and LIMITED_SITE_ID (optional: a site with a low rate
//     limit, for the 429 phase), CHROMIUM
//
// Writes OUT/created.ndjson (one {"ack": event_id, "t": event_type, "site": site id} per event the
// allowed page created: the verifier's ack format), OUT/forbidden.json (the ids the forbidden page created) and
// OUT/browser.json (what was seen). Exits 1 on the first failed check.
import { writeFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const PAGE_URL = env("PAGE_URL");
const FORBIDDEN_URL = env("FORBIDDEN_URL");
const ENDPOINT = env("ENDPOINT");
const OUT = env("OUT");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SITE_ID = env("SITE_ID");
// A second site with a tight rate limit (optional): the phase that meets 429 and Retry-After.
const LIMITED_KEY = process.env.LIMITED_KEY;
const LIMITED_SITE_ID = process.env.LIMITED_SITE_ID;
const LIMITED_EVENTS = 800;

const say = (msg) => console.log(`browser-test: ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class Failed extends Error {}
const check = (ok, msg) => {
  if (!ok) throw new Failed(msg);
};
async function waitFor(what, probe, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > until) throw new Failed(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

const created = []; // every event the allowed page created, in order
const forbidden = []; // every event the forbidden page created
const acked = new Set(); // event ids the producer answered 202 for
const statuses = []; // [origin, status] of every POST /events answered
let failedRequests = 0; // POST /events that failed in the network (offline, blocked)
let phase = "start";
const requestsIn = {}; // phase -> POST /events requests sent
const timeline = []; // [ms, "request" | status, retryAfter] of the allowed page's POST /events

const isEvents = (r) => r.url().startsWith(ENDPOINT) && r.method() === "POST";

async function watch(page, sink) {
  await page.exposeFunction("__waCreated", (e) => sink.push({ ...e, phase }));
  page.on("request", (r) => {
    if (!isEvents(r)) return;
    requestsIn[phase] = (requestsIn[phase] || 0) + 1;
    if (sink === created) timeline.push([Date.now(), "request"]);
  });
  page.on("requestfailed", (r) => {
    if (isEvents(r)) failedRequests++;
  });
  page.on("response", async (r) => {
    if (!isEvents(r.request())) return;
    if (sink === created) {
      statuses.push([new URL(page.url()).origin, r.status()]);
      timeline.push([Date.now(), r.status(), Number(r.headers()["retry-after"] || 0)]);
    }
    if (r.status() !== 202) return;
    try {
      for (const id of (await r.json()).event_ids || []) acked.add(id);
    } catch {
      // The page may be gone (closed or reloaded) before the body is read; the stores decide.
    }
  });
}

// The event ids queued in localStorage, under whichever page's queue key.
const storedQueue = (page) =>
  page.evaluate(() =>
    Object.keys(localStorage).filter((k) => k.startsWith("_wa_q")).flatMap((k) => JSON.parse(localStorage.getItem(k)).map((e) => e.event_id)));
const trackerKeys = (page) => page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("_wa_")));
const allAcked = () => created.every((e) => acked.has(e.event_id));
const createdIn = (p) => created.filter((e) => e.phase === p).length;

async function clickRoute(page, path) {
  await page.click(`a[href="${path}"]`);
  await waitFor(`the URL to become ${path}`, async () => new URL(page.url()).pathname === path, 5000);
}

async function visitor(browser) {
  const page = await browser.newPage();
  await watch(page, created);
  let blocking = false;
  await page.setRequestInterception(true);
  page.on("request", (r) => {
    if (r.isInterceptResolutionHandled()) return;
    if (blocking && isEvents(r)) r.abort("connectionrefused");
    else r.continue();
  });

  phase = "before_consent";
  say(`opening ${PAGE_URL} (consent required)`);
  await page.goto(PAGE_URL, { waitUntil: "load" });
  check(await page.$eval("#consent", (el) => !el.hidden), "the consent banner is not shown");
  await clickRoute(page, "/products");
  await page.click("#add");
  await clickRoute(page, "/");
  await sleep(2500); // longer than the flush interval
  check(created.length === 0, `${created.length} events created before consent`);
  check(!requestsIn.before_consent, `${requestsIn.before_consent} requests sent before consent`);
  check((await trackerKeys(page)).length === 0, `tracker storage written before consent: ${await trackerKeys(page)}`);
  say("before consent: 0 events, 0 requests, nothing stored");

  phase = "spa";
  await page.click("#accept");
  for (const path of ["/products", "/cart", "/checkout"]) await clickRoute(page, path);
  await page.click("#add");
  await page.click("#add");
  await page.click("#login");
  await page.click("#buy");
  await page.goBack(); // popstate
  await waitFor("the SPA events to be acknowledged", async () => allAcked());
  const views = created.filter((e) => e.phase === "spa" && e.event_type === "page_view").map((e) => new URL(e.url).pathname);
  check(JSON.stringify(views) === JSON.stringify(["/", "/products", "/cart", "/checkout", "/cart"]), `SPA page views: ${views}`);
  check(created.filter((e) => e.event_type === "purchase").every((e) => e.user_id === "demo-user"), "purchase without user_id");
  say(`SPA: ${createdIn("spa")} events (page views ${views.join(" ")}), all acknowledged`);

  phase = "offline";
  await page.setOfflineMode(true);
  await clickRoute(page, "/products");
  await page.click("#add");
  await page.click("#buy");
  await waitFor("a failed request while offline", async () => failedRequests > 0, 10000);
  const queued = await storedQueue(page);
  check(created.filter((e) => e.phase === "offline").every((e) => queued.includes(e.event_id)), "offline events not in the localStorage queue");
  check(created.filter((e) => e.phase === "offline").every((e) => !acked.has(e.event_id)), "an offline event was acknowledged");
  say(`offline: ${createdIn("offline")} events queued in localStorage, ${failedRequests} requests failed`);
  await page.setOfflineMode(false);
  await waitFor("the offline events to be acknowledged after coming back online", async () => allAcked());
  say("back online: the queue drained, all acknowledged");

  phase = "reload";
  blocking = true;
  const failedBefore = failedRequests;
  await clickRoute(page, "/cart");
  await page.click("#add");
  await waitFor("a blocked request", async () => failedRequests > failedBefore, 10000);
  const before = created.filter((e) => e.phase === "reload").map((e) => e.event_id);
  say(`reload: ${before.length} events queued while the endpoint is unreachable; reloading`);
  await page.reload({ waitUntil: "load" });
  const survived = await storedQueue(page);
  check(before.every((id) => survived.includes(id)), "events queued before the reload are not in the queue after it");
  blocking = false;
  await waitFor("the events queued across the reload to be acknowledged", async () => allAcked(), 90000);
  say(`reload: the ${before.length} queued events survived the reload and were sent by the new page`);

  if (LIMITED_KEY) await rateLimited(page);

  phase = "close";
  // Long timers: what is queued now leaves only through the pagehide flush of the closing tab.
  await page.evaluate(() =>
    window.WebAnalytics.init({ ...window.DEMO_CONFIG, flushInterval: 600000, batchSize: 100, onEvent: (e) => window.__waCreated(e) }));
  await page.click("#add");
  await page.click("#buy");
  await sleep(300);
  const pending = created.filter((e) => e.phase === "close");
  check(pending.every((e) => !acked.has(e.event_id)) && !requestsIn.close, "events were sent before the tab closed");
  say(`close: ${pending.length} events still queued; closing the tab`);
  await page.close({ runBeforeUnload: true });
  await sleep(1500);
}

async function rateLimited(page) {
  phase = "rate_limit";
  const from = timeline.length;
  say(`rate limit: ${LIMITED_EVENTS} events at once for site ${LIMITED_SITE_ID}, whose limit is lower`);
  await page.evaluate(
    (siteKey, n) => {
      const T = window.WebAnalytics;
      T.init({ ...window.DEMO_CONFIG, siteKey, autoPageviews: false, batchSize: 100, maxQueue: 1000, onEvent: (e) => window.__waCreated(e) });
      for (let i = 0; i < n; i++) T.track("bulk_click", { i });
    },
    LIMITED_KEY,
    LIMITED_EVENTS,
  );
  await waitFor("the rate-limited events to be acknowledged", async () => allAcked(), 120000);
  const seen = timeline.slice(from);
  const limited = seen.filter(([, s]) => s === 429);
  check(limited.length > 0, `no 429 for ${LIMITED_EVENTS} events over the site's limit (answers: ${seen.map(([, s]) => s)})`);
  // Every 429 must be followed by a pause of at least its Retry-After (CDP timestamps: 100 ms slack).
  for (let i = 0; i < seen.length; i++) {
    const [t, status, retryAfter] = seen[i];
    if (status !== 429) continue;
    const next = seen.slice(i + 1).find(([, kind]) => kind === "request");
    check(!next || next[0] - t >= retryAfter * 1000 - 100, `a request ${next && next[0] - t} ms after a 429 with Retry-After ${retryAfter}`);
  }
  say(`rate limit: ${limited.length} answers 429 (Retry-After ${[...new Set(limited.map(([, , r]) => r))].join("/")} s) honoured; all ${LIMITED_EVENTS} acknowledged`);
}

async function stranger(browser) {
  phase = "forbidden";
  const page = await browser.newPage();
  await watch(page, forbidden);
  say(`opening ${FORBIDDEN_URL} (an origin the site does not allow)`);
  // A refused CORS request fails in the page without a readable response (puppeteer reports it
  // as failed); the raw answer's status is still visible to DevTools, so read it there.
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable");
  const urls = new Map();
  cdp.on("Network.requestWillBeSent", (e) => e.request.method === "POST" && urls.set(e.requestId, e.request.url));
  cdp.on("Network.responseReceivedExtraInfo", (e) => {
    if ((urls.get(e.requestId) || "").startsWith(ENDPOINT)) statuses.push([new URL(FORBIDDEN_URL).origin, e.statusCode]);
  });
  await page.goto(FORBIDDEN_URL, { waitUntil: "load" });
  await page.click("#accept");
  await clickRoute(page, "/products");
  await page.click("#add");
  const origin = new URL(FORBIDDEN_URL).origin;
  await waitFor("the producer's answer to the forbidden origin", async () => statuses.some(([o]) => o === origin), 15000);
  const answers = statuses.filter(([o]) => o === origin).map(([, s]) => s);
  check(answers.every((s) => s === 403), `forbidden origin answered ${answers}`);
  check(forbidden.every((e) => !acked.has(e.event_id)), "an event of the forbidden origin was acknowledged");
  // The browser hides a refused answer's body from the page and from DevTools: ask the same
  // question outside the browser to see the reason the producer gives.
  const direct = await fetch(ENDPOINT, {
    method: "POST",
    headers: { origin, "content-type": "text/plain" },
    body: JSON.stringify({ site_key: process.env.SITE_KEY || "pk_local_demo", events: [{ event_type: "probe" }] }),
  });
  const reason = await direct.json().catch(() => ({}));
  check(direct.status === 403 && typeof reason.error === "string", `a POST with Origin ${origin}: ${direct.status} ${JSON.stringify(reason)}`);
  say(`forbidden origin: ${forbidden.length} events created, every request answered 403 (${answers.length}); the producer says: ${reason.error}`);
  await page.close();
}

const started = Date.now();
const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Root in a container: chromium's sandbox needs user namespaces it may not have.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--no-first-run"],
});
let status = 0;
try {
  say(`${await browser.version()} headless`);
  await visitor(browser);
  await stranger(browser);
} catch (e) {
  status = 1;
  console.error(`browser-test: FAILED in phase ${phase}: ${e instanceof Failed ? e.message : e.stack}`);
} finally {
  await browser.close().catch(() => {});
}
const siteOf = (e) => (e.phase === "rate_limit" ? LIMITED_SITE_ID : SITE_ID);
writeFileSync(`${OUT}/created.ndjson`, created.map((e) => JSON.stringify({ ack: e.event_id, t: e.event_type, site: siteOf(e) })).join("\n") + "\n");
writeFileSync(`${OUT}/forbidden.json`, JSON.stringify(forbidden.map((e) => e.event_id)));
writeFileSync(`${OUT}/browser.json`, JSON.stringify({ created, forbidden, statuses, requestsIn, failedRequests, seconds: (Date.now() - started) / 1000 }, null, 1));
const phases = [...new Set(created.map((e) => e.phase))].map((p) => `${p} ${createdIn(p)}`).join(", ");
say(`${status ? "FAILED" : "ok"}: ${created.length} events created (${phases}), ${forbidden.length} on the forbidden origin, ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(status);
