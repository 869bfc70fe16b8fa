// A cheap builder and sender of all-valid event batches, for sustained-open.js.
//
// lib/mix.js builds each event as a fresh object (a few dozen Math.random calls, two
// crypto.randomUUID, a Date), JSON.stringifies the batch, then JSON.parses the answer and walks
// it. In k6's JavaScript interpreter that is about 0.1 ms of CPU per event, a large share of what
// a 2-core machine has for the whole pipeline at 5,000 events/s. This module sends requests of
// the same kind for a fraction of it (numbers: loadtest/README.md, "What k6 costs"):
//
//   * templates: the type-specific part of an event (url, referrer, properties) comes from the
//     mix's own generator (makeEvent) and is kept pre-serialized, per event type. A VU starts
//     with about 20 templates (per type in proportion to the mix's weights, at least one each)
//     and makes REFRESH_PER_REQUEST more per request (types drawn with the mix's weights; a type
//     keeps at most POOL_MAX, a new one then replacing a random one), so the variety keeps growing;
//   * per event only what must be new is spliced in by string concatenation: the event type,
//     drawn with the mix's weights, then a template of that type; a new event_id; occurred_at =
//     now - 0..5 s to the millisecond (one of TIMES_PER_REQUEST such instants per request); and
//     the VU's simulated visitor (anonymous_id, session_id, user_agent, user_id for 30%), which
//     lives as the mix's: 5..80 events, a new session with probability 1/20 at each later event;
//   * event_id: one crypto.randomUUID() per request gives the last 28 characters (90 random
//     bits, with the version-4 and RFC 4122 variant digits); each event of the request gets its
//     own first 8 hex digits, from a per-VU table of 512 distinct random ones read from a random
//     offset. The ids of a request differ by construction, and from any other request's by those
//     90 random bits: as unique as random UUIDs, and as spread over the key space;
//   * the answer: the producer's 202 for a batch it took whole is exactly
//     {"accepted":N,"event_ids":["<id 0>",...,"<id N-1>"],"rejected":[]} (serde_json, ids in
//     request order). When the body is that string, every event is acknowledged without parsing
//     it; any other answer (a rejected event, a 429/503, another status or body) goes to the mix's
//     settle(): the same contract checks and acknowledgements as every other script;
//   * the ack log keeps its format, one console.log line {"ack":"<id>","t":"<type>"} per
//     acknowledged event (loadtest/src/acks.rs and scripts/sustained_check.py read one ack per
//     line), through console.log looked up once per VU (looking it up on `console` costs about a
//     quarter of each call).
//
// The fields and their values are the mix's, so the events are valid the same way
// (schemas/tracking-plan/*.json); only their order in the object differs (the visitor's fields
// are kept together), which JSON objects do not care about.
//
// Nearly every statement below runs 50 times a request: the loop in buildOpenBatch is written
// for the fewest interpreter operations (k6's interpreter costs about 60 ns each).

import http from 'k6/http';
import { check } from 'k6';
import {
  makeEvent, uuidv4, settle, EVENT_TYPES, WEIGHTS, USER_AGENTS, EVENTS_URL, SITE_KEY, REQ_TIMEOUT,
  ACK_LOG, acceptedEvents, sentEvents, batchSize, bodyBytes,
} from './mix.js';

const POOL_MAX = 256; // templates a VU keeps per type at most
const REFRESH_PER_REQUEST = 1; // new templates a VU makes per request
const TIMES_PER_REQUEST = 16; // distinct occurred_at instants per request
const ID_PREFIXES = 512; // distinct event_id heads per VU: at least the API's batch limit (500)

const TYPE_OF_PERCENT = [];
WEIGHTS.forEach((w, t) => { for (let i = 0; i < w; i++) TYPE_OF_PERCENT.push(t); });
if (TYPE_OF_PERCENT.length !== 100) throw new Error('lib/mix.js WEIGHTS must add up to 100');
const TYPE_TAGS = EVENT_TYPES.map((t) => ({ event_type: t }));
const NTYPES = EVENT_TYPES.length;
const MS3 = [];
for (let i = 0; i < 1000; i++) MS3.push(String(1000 + i).slice(1));

// --- per VU (module state is per VU in k6) ---------------------------------------------------

let pools = null; // per type index: templates {t, head, rest, ack}
let poolOfPercent = null; // 100 entries: the pool of the type each percent draws
let heads = null; // ID_PREFIXES random 8-hex-digit event_id heads, twice over (slices never wrap)
let leads = null; // per head: ',{"event_id":"<head>' (the start of the next event in the body)
let ackLeads = null; // per head: '{"ack":"<head>'
let log = null; // console.log, looked up in the first iteration (the init context's logs elsewhere)

function addTemplate(ev) {
  const t = EVENT_TYPES.indexOf(ev.event_type);
  const tpl = {
    t,
    head: `","event_type":"${ev.event_type}","occurred_at":"`,
    rest: `"url":${JSON.stringify(ev.url)},"referrer":${JSON.stringify(ev.referrer)},`
      + `"properties":${JSON.stringify(ev.properties)}}`,
    ack: `","t":"${ev.event_type}"}`,
  };
  const pool = pools[t];
  if (pool.length < POOL_MAX) pool.push(tpl);
  else pool[Math.floor(Math.random() * POOL_MAX)] = tpl;
}

function setUp() {
  pools = EVENT_TYPES.map(() => []);
  EVENT_TYPES.forEach((type, t) => {
    for (let i = Math.max(1, Math.round(WEIGHTS[t] / 5)); i > 0; i--) addTemplate(makeEvent(type));
  });
  poolOfPercent = TYPE_OF_PERCENT.map((t) => pools[t]);
  // Distinct by construction: a random start plus multiples of an odd step, modulo 2^32.
  heads = [];
  let x = parseInt(crypto.randomUUID().slice(0, 8), 16);
  for (let i = 0; i < ID_PREFIXES; i++) {
    heads.push((x + 0x100000000).toString(16).slice(1));
    x = (x + 0x9e3779b9) % 0x100000000;
  }
  heads = heads.concat(heads);
  leads = heads.map((h) => `,{"event_id":"${h}`);
  ackLeads = heads.map((h) => `{"ack":"${h}`);
  log = console.log;
}

// The VU's simulated visitor, as lib/mix.js's currentVisitor(), kept as one JSON fragment. Instead
// of a 1-in-20 draw at every event, the number of events until the next new session is drawn
// once (geometric, p = 1/20): the same distribution.
let vLeft = 0; // events this visitor still makes (the mix's `left`)
let vToSession = 0; // events of this visitor until a new session
let vAnon = '';
let vUa = '';
let vUser = '';
let vFrag = ''; // '","anonymous_id":…,"session_id":…,"user_agent":…,["user_id":…,]'
function untilNewSession() {
  return Math.max(1, Math.ceil(Math.log(1 - Math.random()) / Math.log(0.95)));
}
function newSession() {
  vFrag = `","anonymous_id":"${vAnon}","session_id":"s_${uuidv4()}","user_agent":${vUa},${vUser}`;
  vToSession = untilNewSession();
}
function newVisitor() {
  vAnon = uuidv4();
  vUa = JSON.stringify(USER_AGENTS[Math.floor(Math.random() * USER_AGENTS.length)]);
  vUser = Math.random() < 0.3 ? `"user_id":"u_${1 + Math.floor(Math.random() * 5000000)}",` : '';
  vLeft = 5 + Math.floor(Math.random() * 76);
  newSession();
}

// "YYYY-MM-DDTHH:MM:SS.mmmZ" of a Unix time in ms; the part up to the second is cached.
let isoSec = NaN;
let isoPrefix = '';
function isoMs(ms) {
  const sec = Math.floor(ms / 1000);
  if (sec !== isoSec) {
    isoSec = sec;
    isoPrefix = new Date(sec * 1000).toISOString().slice(0, 20);
  }
  return isoPrefix + MS3[ms - sec * 1000];
}

/**
 * `n` (1..500) new valid events of the mix's kind as a JSON array. Returns what sendOpenBatch
 * needs: {body, n, base, off (the ids are heads[off + i] + base), tpls (per event), perType
 * (events per type index), expected (the producer's 202 body when it takes them all)}.
 */
export function buildOpenBatch(n) {
  if (pools === null) setUp();
  for (let i = 0; i < REFRESH_PER_REQUEST; i++) addTemplate(makeEvent());

  const base = crypto.randomUUID().slice(8); // "-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
  const off = Math.floor(Math.random() * ID_PREFIXES);
  const now = Date.now();
  const times = new Array(TIMES_PER_REQUEST);
  for (let i = 0; i < TIMES_PER_REQUEST; i++) times[i] = isoMs(now - Math.floor(Math.random() * 5001));
  const perType = new Array(NTYPES).fill(0);
  const tpls = new Array(n);
  // The body is parts.join(base): part i ends with the head of event i's id, base follows.
  const parts = new Array(n + 1);
  parts[0] = `[{"event_id":"${heads[off]}`;
  let k = off;
  for (let i = 0; i < n; i++) {
    const pool = poolOfPercent[(Math.random() * 100) | 0];
    const tpl = pool[(Math.random() * pool.length) | 0];
    tpls[i] = tpl;
    perType[tpl.t]++;
    if (vLeft <= 0) newVisitor();
    else if (--vToSession <= 0) newSession();
    vLeft--;
    parts[i + 1] = `${tpl.head}${times[(Math.random() * TIMES_PER_REQUEST) | 0]}Z${vFrag}${tpl.rest}${leads[++k]}`;
  }
  // The last part ends with the head of a next event that is not there: end the array instead.
  const last = parts[n];
  parts[n] = `${last.slice(0, last.length - 22)}]`;
  return {
    body: parts.join(base),
    n,
    base,
    off,
    tpls,
    perType,
    expected: `{"accepted":${n},"event_ids":["${heads.slice(off, off + n).join(`${base}","`)}${base}"],"rejected":[]}`,
  };
}

const PARAMS = {
  headers: { 'Content-Type': 'application/json', 'X-Site-Key': SITE_KEY },
  tags: { name: 'POST /events', kind: 'batch', enc: 'json' },
  timeout: REQ_TIMEOUT,
};
// lib/mix.js settle()'s checks for a request of valid events, when the answer is the expected one.
const PASSED = () => true;
const FAST_CHECKS = {
  'status 202': PASSED,
  'accepted = valid events sent': PASSED,
  'event_ids length = accepted': PASSED,
  'every sent event_id acknowledged': PASSED,
  'only sent event_ids acknowledged': PASSED,
  'rejected lists the invalid indices': PASSED,
};

/** The event_ids of a batch from buildOpenBatch, in order. */
export function batchIds(b) {
  return heads.slice(b.off, b.off + b.n).map((h) => h + b.base);
}

/** Posts a batch from buildOpenBatch, checks the answer and acknowledges the accepted events. */
export function sendOpenBatch(b) {
  const res = http.post(EVENTS_URL, b.body, PARAMS);
  sentEvents.add(b.n);
  batchSize.add(b.n);
  bodyBytes.add(b.body.length);

  if (res.status === 202 && res.body === b.expected) {
    // The producer took every event and rejected none: what settle() would conclude, unparsed.
    if (ACK_LOG) {
      const { base, tpls } = b;
      for (let i = 0, k = b.off; i < b.n; i++, k++) log(`${ackLeads[k]}${base}${tpls[i].ack}`);
    }
    const { perType } = b;
    for (let t = 0; t < NTYPES; t++) if (perType[t] > 0) acceptedEvents.add(perType[t], TYPE_TAGS[t]);
    check(res, FAST_CHECKS);
    return res;
  }
  const ids = batchIds(b);
  const valid = ids.map((id, i) => ({ id, type: EVENT_TYPES[b.tpls[i].t] }));
  return settle({ body: b.body, ct: 'application/json', gzip: false, n: b.n, valid, invalid: [] }, res);
}
