// End-of-test summary shared by the scripts.
//
// A script that exports handleSummary() replaces k6's own end-of-test text, and the helper that
// re-creates it (textSummary) lives in a jslib that k6 fetches over the network. So this writes:
//   - ${SUMMARY_DIR:-bench/out}/<name>-summary.json : k6's full summary object, plus a `loadtest`
//     block (script name, API_URL, the mix/threshold knobs used, pass/fail);
//   - stdout: a short text summary of its own (thresholds, checks, requests, events).

import { envStr } from './mix.js';

function fmtNum(v, digits = 2) {
  if (v === undefined || v === null || Number.isNaN(v)) return '-';
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(digits);
}

function fmtMs(v) {
  if (v === undefined || v === null) return '-';
  return v >= 1000 ? `${(v / 1000).toFixed(2)}s` : `${v.toFixed(2)}ms`;
}

function pad(s, n) {
  s = String(s);
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

// The statistic a threshold expression tests: "p(95)<500" -> "p(95)", "rate>0.99" -> "rate".
function thresholdStat(expr) {
  const m = /^\s*([a-z]+(?:\(\s*[\d.]+\s*\))?)/.exec(expr);
  return m ? m[1].replace(/\s+/g, '') : null;
}

function collectChecks(group, out) {
  for (const c of group.checks || []) out.push(c);
  for (const g of group.groups || []) collectChecks(g, out);
  return out;
}

function thresholdLines(metrics) {
  const lines = [];
  let failed = 0;
  for (const name of Object.keys(metrics).sort()) {
    const m = metrics[name];
    if (!m.thresholds) continue;
    for (const expr of Object.keys(m.thresholds)) {
      const ok = m.thresholds[expr].ok;
      if (!ok) failed++;
      const stat = thresholdStat(expr);
      let value = stat && m.values ? m.values[stat] : undefined;
      if (value !== undefined && m.contains === 'time' && stat !== 'count' && stat !== 'rate') value = fmtMs(value);
      else value = fmtNum(value, 4);
      lines.push(`  ${ok ? 'PASS' : 'FAIL'} ${name} ${expr}  (${stat}=${value})`);
    }
  }
  return { lines, failed };
}

export function textReport(name, data, failedThresholds, tlines) {
  const m = data.metrics;
  const v = (metric, stat) => (m[metric] && m[metric].values ? m[metric].values[stat] : undefined);
  const secs = data.state.testRunDurationMs / 1000;
  const out = [];
  out.push('');
  out.push(`== ${name}: ${envStr('API_URL', 'http://127.0.0.1:3000')}  (${secs.toFixed(1)}s) ==`);
  out.push('THRESHOLDS');
  out.push(...tlines);
  const checks = collectChecks(data.root_group, []);
  const passes = checks.reduce((a, c) => a + c.passes, 0);
  const fails = checks.reduce((a, c) => a + c.fails, 0);
  out.push(`CHECKS  ${passes + fails} evaluated, ${fails} failed (${fmtNum(passes + fails ? (100 * passes) / (passes + fails) : 100)}% ok)`);
  for (const c of checks) {
    out.push(`  ${c.fails === 0 ? 'ok ' : 'BAD'} ${pad(c.name, 52)} ${c.passes} ok / ${c.fails} failed`);
  }
  out.push('REQUESTS');
  out.push(`  http_reqs ${fmtNum(v('http_reqs', 'count'))} (${fmtNum(v('http_reqs', 'rate'))}/s)  failed ${fmtNum(100 * (v('http_req_failed', 'rate') || 0))}%  throttled(429/503) ${fmtNum(v('throttled_requests', 'count') || 0)}`);
  out.push(`  duration avg ${fmtMs(v('http_req_duration', 'avg'))}  med ${fmtMs(v('http_req_duration', 'med'))}  p95 ${fmtMs(v('http_req_duration', 'p(95)'))}  p99 ${fmtMs(v('http_req_duration', 'p(99)'))}  max ${fmtMs(v('http_req_duration', 'max'))}`);
  out.push(`  iterations ${fmtNum(v('iterations', 'count'))}  dropped ${fmtNum(v('dropped_iterations', 'count') || 0)}  vus_max ${fmtNum(v('vus_max', 'max'))}  batch avg ${fmtNum(v('batch_size', 'avg'))} events, body avg ${fmtNum(v('body_bytes', 'avg'), 0)} B`);
  out.push('EVENTS');
  out.push(`  sent ${fmtNum(v('sent_events', 'count') || 0)}  accepted ${fmtNum(v('accepted_events', 'count') || 0)} (${fmtNum(v('accepted_events', 'rate') || 0)}/s)  rejected ${fmtNum(v('rejected_events', 'count') || 0)}  unaccepted ${fmtNum(v('unaccepted_events', 'count') || 0)}  re-posted ${fmtNum(v('duplicate_events', 'count') || 0)} in ${fmtNum(v('duplicate_requests', 'count') || 0)} requests`);
  const perType = Object.keys(m)
    .filter((k) => k.startsWith('accepted_events{event_type:'))
    .map((k) => `${k.slice('accepted_events{event_type:'.length, -1)}=${fmtNum(m[k].values.count)}`);
  if (perType.length) out.push(`  accepted by type: ${perType.join(' ')}`);
  out.push(failedThresholds === 0 ? 'RESULT: all thresholds passed' : `RESULT: ${failedThresholds} threshold(s) FAILED`);
  out.push('');
  return out.join('\n');
}

/** Returns a handleSummary() for the script `name`. */
export function summaryHandler(name, knobs) {
  return function handleSummary(data) {
    const dir = envStr('SUMMARY_DIR', 'bench/out').replace(/\/+$/, '');
    const { lines, failed } = thresholdLines(data.metrics);
    data.loadtest = {
      script: name,
      api_url: envStr('API_URL', 'http://127.0.0.1:3000'),
      knobs: knobs || {},
      thresholds_failed: failed,
      passed: failed === 0,
    };
    return {
      stdout: textReport(name, data, failed, lines),
      [`${dir}/${name}-summary.json`]: JSON.stringify(data, null, 2),
    };
  };
}

/** The environment knobs worth recording with a run. */
export function knobs(names) {
  const out = {};
  for (const n of names) if (__ENV[n] !== undefined) out[n] = __ENV[n];
  return out;
}
