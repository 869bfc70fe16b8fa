// Sustained load: a constant arrival rate of the realistic mix (lib/mix.js).
//
//   RATE              requests per second (default 200; ~13 events per request on average)
//   DURATION          how long (default 2m)
//   PRE_VUS / MAX_VUS VUs allocated up front / at most (default 50 / 400)
//   MAX_DROPPED_PCT   % of the planned requests k6 may fail to start for lack of VUs (default 1)
//   + the mix knobs (lib/mix.js) and thresholds: CHECKS_RATE, FAILED_RATE, P95_MS, P99_MS
//
//   scripts/k6.sh run loadtest/k6/sustained.js            # 200 req/s for 2m at 127.0.0.1:3000
//   RATE=50 DURATION=15s scripts/k6.sh run loadtest/k6/sustained.js

import { sendMix, commonThresholds, summaryTrendStats, envNum, envStr, parseDuration, secs } from './lib/mix.js';
import { summaryHandler, knobs } from './lib/summary.js';

const RATE = envNum('RATE', 200);
const DURATION = parseDuration(envStr('DURATION', '2m'));
const planned = RATE * DURATION;

const thresholds = commonThresholds();
// k6 could not start a request on time: the target is slower than RATE allows with MAX_VUS.
thresholds.dropped_iterations = [`count<=${Math.floor((planned * envNum('MAX_DROPPED_PCT', 1)) / 100)}`];

export const options = {
  summaryTrendStats,
  thresholds,
  scenarios: {
    sustained: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: secs(DURATION),
      preAllocatedVUs: envNum('PRE_VUS', 50),
      maxVUs: envNum('MAX_VUS', 400),
      gracefulStop: '15s',
    },
  },
};

export default function () {
  sendMix();
}

export const handleSummary = summaryHandler('sustained', knobs([
  'RATE', 'DURATION', 'PRE_VUS', 'MAX_VUS', 'MIX_MAX_BATCH', 'MIX_SINGLE_RATIO', 'DUP_RATIO',
  'INVALID_RATIO', 'BEACON_RATIO', 'GZIP_RATIO', 'P95_MS', 'P99_MS', 'CHECKS_RATE', 'FAILED_RATE',
]));
