// Open-model sustained load for issue #21: a constant arrival rate of requests that each carry
// the same number of valid events, so the offered load is exactly RATE x EVENTS_PER_REQUEST
// events/s whatever the pipeline does (k6 starts requests on schedule, not when the last one
// answered; a slow API shows as dropped_iterations, not as a lower rate).
//
//   RATE                requests per second (default 100)
//   EVENTS_PER_REQUEST  valid events in each request, 1..500 (default 50: 5,000 events/s)
//   DURATION            how long (default 10m)
//   PRE_VUS / MAX_VUS   VUs allocated up front / at most (default 100 / 1000)
//   MAX_DROPPED_PCT     % of the planned requests k6 may fail to start (default 1)
//   + API_URL, SITE_KEY, ACK_LOG(_FILE), REQ_TIMEOUT and the thresholds CHECKS_RATE,
//     FAILED_RATE, P95_MS, P99_MS (lib/mix.js)
//
// The events are the mix's (lib/mix.js): its types and properties follow the tracking plans
// (schemas/tracking-plan/*.json), so none is rejected. Unlike sustained.js there are no client
// retries, invalid events, beacons or gzip bodies: every request is 50 new events as a JSON
// array, and every event acknowledged is one event the pipeline must land. They are built and
// acknowledged by lib/open-batch.js (pre-serialized templates from the mix's generator, a fresh
// event_id and occurred_at per event, no parsing of an all-accepted answer): about half the k6
// CPU of building them with lib/mix.js (loadtest/README.md, "What k6 costs").
//
//   scripts/bench-sustained.sh                                  # the whole harness (make bench-sustained)
//   RATE=20 DURATION=60s ACK_LOG_FILE=bench/out/open-acks.ndjson scripts/k6.sh run loadtest/k6/sustained-open.js

import { commonThresholds, summaryTrendStats, envNum, envStr, parseDuration, secs } from './lib/mix.js';
import { buildOpenBatch, sendOpenBatch } from './lib/open-batch.js';
import { summaryHandler, knobs } from './lib/summary.js';

const RATE = envNum('RATE', 100);
const EVENTS_PER_REQUEST = Math.floor(envNum('EVENTS_PER_REQUEST', 50));
if (EVENTS_PER_REQUEST < 1 || EVENTS_PER_REQUEST > 500) {
  throw new Error(`EVENTS_PER_REQUEST=${EVENTS_PER_REQUEST} must be 1..500 (the API's batch limit)`);
}
const DURATION = parseDuration(envStr('DURATION', '10m'));
const planned = RATE * DURATION;

const thresholds = commonThresholds();
// k6 could not start a request on time: the target is slower than RATE allows with MAX_VUS.
thresholds.dropped_iterations = [`count<=${Math.floor((planned * envNum('MAX_DROPPED_PCT', 1)) / 100)}`];

export const options = {
  summaryTrendStats,
  thresholds,
  scenarios: {
    sustained_open: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: secs(DURATION),
      preAllocatedVUs: envNum('PRE_VUS', 100),
      maxVUs: envNum('MAX_VUS', 1000),
      gracefulStop: '15s',
    },
  },
};

export default function () {
  sendOpenBatch(buildOpenBatch(EVENTS_PER_REQUEST));
}

export const handleSummary = summaryHandler('sustained-open', knobs([
  'RATE', 'EVENTS_PER_REQUEST', 'DURATION', 'PRE_VUS', 'MAX_VUS', 'MAX_DROPPED_PCT', 'P95_MS', 'P99_MS',
  'CHECKS_RATE', 'FAILED_RATE',
]));
