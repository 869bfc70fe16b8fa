// Smoke: a closed-model ramp of the realistic mix (lib/mix.js) to SMOKE_VUS virtual users.
// Each VU sends its next request as soon as the previous one is answered (no sleep), so the
// request rate is whatever the API sustains at that concurrency.
//
//   SMOKE_VUS       peak VUs (default 50)
//   SMOKE_DURATION  whole run (default 2m): ramp 0 -> SMOKE_VUS over the first 3/4, hold the last 1/4
//   + the mix knobs (lib/mix.js) and thresholds: CHECKS_RATE, FAILED_RATE, P95_MS, P99_MS
//
//   scripts/k6.sh run loadtest/k6/smoke.js
//   SMOKE_DURATION=15s SMOKE_VUS=10 scripts/k6.sh run loadtest/k6/smoke.js

import { sendMix, commonThresholds, summaryTrendStats, envNum, envStr, parseDuration, secs } from './lib/mix.js';
import { summaryHandler, knobs } from './lib/summary.js';

const VUS = Math.max(1, Math.floor(envNum('SMOKE_VUS', 50)));
const TOTAL = parseDuration(envStr('SMOKE_DURATION', '2m'));

export const options = {
  summaryTrendStats,
  thresholds: commonThresholds(),
  scenarios: {
    smoke: {
      executor: 'ramping-vus',
      startVUs: 1,
      stages: [
        { duration: secs(TOTAL * 0.75), target: VUS },
        { duration: secs(TOTAL * 0.25), target: VUS },
      ],
      gracefulRampDown: '10s',
      gracefulStop: '10s',
    },
  },
};

export default function () {
  sendMix();
}

export const handleSummary = summaryHandler('smoke', knobs([
  'SMOKE_VUS', 'SMOKE_DURATION', 'MIX_MAX_BATCH', 'MIX_SINGLE_RATIO', 'DUP_RATIO', 'INVALID_RATIO',
  'BEACON_RATIO', 'GZIP_RATIO', 'P95_MS', 'P99_MS', 'CHECKS_RATE', 'FAILED_RATE',
]));
