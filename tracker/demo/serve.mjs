// The demo page's static server (loopback only): the demo SPA for every path (so a reload of
// /cart still loads the app), the built tracker under /tracker.min.js, the page's settings under
// /config.js, and /counts: the pipeline's PostgreSQL counts per event type, so a visitor sees the
// events they clicked arrive.
//
//   node tracker/demo/serve.mjs   env: DEMO_HOST (127.0.0.1) DEMO_PORT (8080)
//     DEMO_ENDPOINT (http://127.0.0.1:3000/events) DEMO_SITE_KEY (pk_local_demo)
//     DEMO_REQUIRE_CONSENT (1) DATABASE_URL (postgres://postgres@127.0.0.1:5432/analytics)
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";

const here = new URL(".", import.meta.url).pathname;
const env = (name, fallback) => process.env[name] || fallback;
const host = env("DEMO_HOST", "127.0.0.1");
const port = Number(env("DEMO_PORT", "8080"));
const config = {
  endpoint: env("DEMO_ENDPOINT", "http://127.0.0.1:3000/events"),
  siteKey: env("DEMO_SITE_KEY", "pk_local_demo"),
  requireConsent: env("DEMO_REQUIRE_CONSENT", "1") === "1",
};
const database = env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/analytics");
if (!/^(127\.|localhost$)/.test(host)) throw new Error(`DEMO_HOST=${host}: the demo server binds to loopback only`);

const counts = () =>
  new Promise((resolve) =>
    execFile("psql", ["-w", "-X", "-At", "-F", "\t", "-c", "select event_type, event_count from event_type_counts order by 1", database],
      { timeout: 5000 }, (err, stdout, stderr) =>
        resolve(err ? { error: (stderr || err.message).trim() } : {
          counts: Object.fromEntries(stdout.trim().split("\n").filter(Boolean).map((l) => l.split("\t")).map(([t, n]) => [t, Number(n)])),
        })));

const files = {
  "/tracker.min.js": [`${here}../dist/tracker.min.js`, "text/javascript"],
  "/app.js": [`${here}app.js`, "text/javascript"],
};

createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  const send = (status, type, body) => {
    res.writeHead(status, { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" });
    res.end(body);
  };
  try {
    if (path === "/config.js") return send(200, "text/javascript", `window.DEMO_CONFIG = ${JSON.stringify(config)};\n`);
    if (path === "/counts") return send(200, "application/json", JSON.stringify(await counts()));
    if (path === "/favicon.ico") return send(204, "text/plain", "");
    const [file, type] = files[path] || [`${here}index.html`, "text/html"];
    send(200, type, await readFile(file));
  } catch (e) {
    send(500, "text/plain", `demo server: ${e.message}\n`);
  }
}).listen(port, host, () => console.log(`demo page: http://${host}:${port}/ (events to ${config.endpoint}, key ${config.siteKey})`));
