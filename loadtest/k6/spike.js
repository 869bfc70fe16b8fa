// Spike: the realistic mix (lib/mix.js) at a baseline arrival rate, a sudden climb to
// SPIKE_FACTOR x baseline, a hold at the peak, and back to baseline to watch recovery.
//
//   SPIKE_BASE_RATE   baseline requests per second (default 50)
//   SPIKE_FACTOR      peak = factor x baseline (default 10)
//   SPIKE_DURATION    whole run (default 2m), split as: baseline 25%, climb 5%, peak 25%,
//                     fall 5%, baseline 40%
//   PRE_VUS / MAX_VUS VUs allocated up front / at most (default 50 / 400)
//   MAX_DROPPED_PCT   % of the planned requests k6 may fail to start for lack of VUs (default 1)
//   + the mix knobs (lib/mix.js) and thresholds: CHECKS_RATE, FAILED_RATE, P95_MS, P99_MS
//
//   scripts/k6.sh run loadtest/k6/spike.js
//   SPIKE_BASE_RATE=10 SPIKE_DURATION=20s scripts/k6.sh run loadtest/k6/spike.js

import { sendMix, commonThresholds, summaryTrendStats, envNum, envStr, parseDuration, secs } from './lib/mix.js';
import { summaryHandler, knobs } from './lib/summary.js';

const BASE = envNum('SPIKE_BASE_RATE', 50);
const PEAK = BASE * envNum('SPIKE_FACTOR', 10);
const TOTAL = parseDuration(envStr('SPIKE_DURATION', '2m'));

const shape = [
  [0.25, BASE], // baseline
  [0.05, PEAK], // climb
  [0.25, PEAK], // peak
  [0.05, BASE], // fall
  [0.40, BASE], // recovery at baseline
];
const stages = shape.map(([share, target]) => ({ duration: secs(TOTAL * share), target }));

// Requests k6 plans to start (the area under the rate curve), for the dropped-iterations budget.
let planned = 0;
let from = BASE;
for (const st of stages) {
  const d = Number(st.duration.slice(0, -1));
  planned += (d * (from + st.target)) / 2;
  from = st.target;
}

const thresholds = commonThresholds();
thresholds.dropped_iterations = [`count<=${Math.floor((planned * envNum('MAX_DROPPED_PCT', 1)) / 100)}`];

export const options = {
  summaryTrendStats,
  thresholds,
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: BASE,
      timeUnit: '1s',
      stages,
      preAllocatedVUs: envNum('PRE_VUS', 50),
      maxVUs: envNum('MAX_VUS', 400),
      gracefulStop: '15s',
    },
  },
};

export default function () {
  sendMix();
}

export const handleSummary = summaryHandler('spike', knobs([
  'SPIKE_BASE_RATE', 'SPIKE_FACTOR', 'SPIKE_DURATION', 'PRE_VUS', 'MAX_VUS', 'MIX_MAX_BATCH',
  'MIX_SINGLE_RATIO', 'DUP_RATIO', 'INVALID_RATIO', 'BEACON_RATIO', 'GZIP_RATIO', 'P95_MS', 'P99_MS',
  'CHECKS_RATE', 'FAILED_RATE',
]));
