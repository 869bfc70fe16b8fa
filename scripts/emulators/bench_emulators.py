#!/usr/bin/env python3
"""CPU cost of the local emulators (dynalite, kinesalite) per item / record / KB.

Starts its OWN emulator instance from this directory (dynalite.js / kinesalite.js) on a
loopback port that is not the stack's (default 14568 / 14567), drives it at a fixed load,
and reads the emulator process's CPU time (utime+stime of all its threads, GC helpers
included) from /proc/<pid>/stat before and after each measured window. The emulator is
killed at the end. Only 127.0.0.1 is ever contacted.

Client: plain http.client keep-alive connections (one per thread) sending the same JSON 1.0/1.1
protocol and SigV4 Authorization header an AWS SDK sends (the emulators check that the header is
present and well formed, not the signature), so the Python client stays cheap and does not
compete with the emulator for the 2 cores. boto3 is used only for setup and for the
faithfulness checks at the end (GetItem of sampled items compared field by field; GetRecords
payloads compared byte for byte).

dynalite: BatchWriteItem of 25 items shaped like schemas/src/dynamo.rs (event_id uuid HASH key,
event_type, occurred_at, received_at, anonymous_id, session_id, url, referrer, user_agent,
client_ip, site, properties, expires_at N), PAY_PER_REQUEST table, no GSI. Measured windows run
at --rate items/s (default 5000, the sustained-run rate) on a fresh table, then the table is
filled unthrottled to --fill items (the fill is also measured, per 200k chunk, to show growth),
then the same windows run again on the large table. `--indexes erasure` creates the table with
the two global secondary indexes forget first queried (issue #23: by_anonymous_id, by_user_id,
hash key only, INCLUDE site), so every item is written to one index too, or two when it has a
user_id (--user-id-share of the items, default none). It reproduces the measurement in
bench/RESULTS.md "#23: DynamoDB indexes for erasure" that led to dropping them: the table has no
index now (forget deletes a visitor's items by the event IDs of its lake rows).

kinesalite: PutRecords of --batch records of --size bytes (25000 = ~50 packed events, 500 = one
event), then GetRecords (Limit 10000) reading all of them back; CPU ms per record and per KB,
separately for put and get.

Exact commands used for docs/emulators.md (python3 = any python with boto3; the project venv's
.local/venv/bin/python if present). Configurations were run concurrently, each on its own port,
so that they share the machine's noise:

  cd scripts/emulators
  B="python3 bench_emulators.py dynalite --fill 1000000 --reps 2 --window 50000 --large-window 150000"
  $B --label baseline --port 14568 &
  $B --label utf8 --port 14578 --env DYNALITE_STORE_ENCODING=utf8 &
  $B --label semi64 --port 14588 --node-args=--max-semi-space-size=64 &
  $B --label utf8+semi64 --port 14598 --env DYNALITE_STORE_ENCODING=utf8 \
     --node-args=--max-semi-space-size=64 &
  wait
  $B --label leveldb-shm --fill 500000 --env DYNALITE_STORE_DIR=/dev/shm

The emulator started here runs dynalite's own store (memory-level) unless --env DYNALITE_STORE=btree
is given; the local stack runs the B+ tree store (btree-level.js). Compared side by side for
docs/emulators.md "A B+ tree store":

  B="python3 bench_emulators.py dynalite --fill 1500000 --reps 2 --window 30000 --large-window 60000 --rate 0 --threads 2"
  $B --label memory --port 14568 &
  $B --label btree --port 14578 --env DYNALITE_STORE=btree --node-args=--max-old-space-size=8192 &
  wait

For bench/RESULTS.md "#23: DynamoDB indexes for erasure" (one after the other, alternating,
unthrottled so items/s is the ceiling, then at the sustained run's 4,000 items/s for CPU per item):

  G="python3 bench_emulators.py dynalite --fill 0 --reps 3 --window 20000 --user-id-share 0.3"
  for i in 1 2; do $G --rate 0 --label no-index; $G --rate 0 --label erasure-indexes --indexes erasure; done
  $G --rate 4000 --label no-index; $G --rate 4000 --label erasure-indexes --indexes erasure
  K="python3 bench_emulators.py kinesalite --reps 3"
  $K --label baseline --size 25000 --records 6000 --get-limit 400
  $K --label baseline --size 500 --records 60000 --get-limit 10000
  (add --node-args="--trace-gc ..." to see GC; --node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"
  for a profile, written when the benchmark stops the emulator)

Each run appends one JSON line to --out (default /tmp/bench_emulators.jsonl).
"""
import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = '127.0.0.1'
TICK = os.sysconf('SC_CLK_TCK')


def cpu_ms(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / TICK  # utime, stime


def rss_mb(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return 0.0


def sigv4_headers(service, target, body, content_type):
    """A syntactically real SigV4 header set (key 'local'/'local', region us-east-1)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime('%Y%m%dT%H%M%SZ')
    day = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = 'content-type;host;x-amz-date;x-amz-target'
    canonical = '\n'.join(['POST', '/', '', f'content-type:{content_type}', f'host:{HOST}',
                           f'x-amz-date:{amz_date}', f'x-amz-target:{target}', '', signed, payload_hash])
    scope = f'{day}/us-east-1/{service}/aws4_request'
    to_sign = '\n'.join(['AWS4-HMAC-SHA256', amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = hmac.new(b'AWS4local', day.encode(), hashlib.sha256).digest()
    for part in ('us-east-1', service, 'aws4_request'):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        'Content-Type': content_type, 'X-Amz-Target': target, 'X-Amz-Date': amz_date,
        'Authorization': f'AWS4-HMAC-SHA256 Credential=local/{scope}, SignedHeaders={signed}, Signature={sig}',
    }


class Client:
    def __init__(self, port, service, ctype):
        self.port, self.service, self.ctype = port, service, ctype
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def call(self, target, obj):
        return self.call_raw(target, json.dumps(obj, separators=(',', ':')).encode())

    def call_raw(self, target, body):
        for attempt in range(3):
            try:
                self.conn.request('POST', '/', body, sigv4_headers(self.service, target, body, self.ctype))
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                if attempt == 2:
                    raise
        if r.status != 200:
            raise RuntimeError(f'{target}: HTTP {r.status}: {data[:300]!r}')
        return json.loads(data)


def start_emulator(name, port, node_args, env_extra):
    env = dict(os.environ)
    env['DYNALITE_PORT' if name == 'dynalite' else 'KINESALITE_PORT'] = str(port)
    env.update(env_extra)
    cmd = ['node', *node_args, os.path.join(HERE, f'{name}.js')]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    head = ''
    for _ in range(50):  # --trace-gc may print before the listening line
        line = p.stdout.readline()
        head += line
        if 'listening' in line or not line:
            break
    if 'listening' not in line:
        p.kill()
        raise SystemExit(f'{name} did not start: {head}{p.stdout.read()}')
    threading.Thread(target=lambda: [sys.stderr.write(f'[{name}] {x}') for x in p.stdout], daemon=True).start()
    return p


def run_threads(n_threads, work):
    errs = []

    def wrap(i):
        try:
            work(i)
        except Exception as e:  # surface it, do not hang
            errs.append(e)
    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]


# ---------------------------------------------------------------- dynalite
EVENT_TYPES = ['page_view', 'click', 'scroll', 'form_submit', 'custom']
UA = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
      'Chrome/126.0.0.0 Safari/537.36')


def make_item(rng, now, user_id_share=0.0):
    t = now - datetime.timedelta(milliseconds=rng.randint(0, 5000))
    iso = lambda d: d.strftime('%Y-%m-%dT%H:%M:%S.') + f'{d.microsecond // 1000:03d}Z'  # noqa: E731
    return {
        'event_id': {'S': str(uuid.UUID(int=rng.getrandbits(128), version=4))},
        'event_type': {'S': rng.choice(EVENT_TYPES)},
        'occurred_at': {'S': iso(t)},
        'received_at': {'S': iso(now)},
        'anonymous_id': {'S': str(uuid.UUID(int=rng.getrandbits(128), version=4))},
        'session_id': {'S': str(uuid.UUID(int=rng.getrandbits(128), version=4))},
        'url': {'S': f'https://shop.example.com/products/{rng.randint(1, 99999)}?ref=home'},
        'referrer': {'S': 'https://www.google.com/'},
        'user_agent': {'S': UA},
        'client_ip': {'S': f'203.0.113.{rng.randint(1, 254)}'},
        'site': {'S': f'site-{rng.randint(1, 20)}'},
        'properties': {'S': json.dumps({'button': 'buy', 'price': rng.randint(1, 500)})},
        'expires_at': {'N': str(int(now.timestamp()) + 30 * 86400)},
        # Only items with a user_id are in by_user_id (a sparse index); the draw comes last so
        # that items without one are the same as before --user-id-share existed.
        **({'user_id': {'S': f'user-{rng.randint(1, 10**9)}'}} if user_id_share and rng.random() < user_id_share else {}),
    }


# forget's former indexes (issue #23, dropped after this benchmark): --indexes erasure only.
ERASURE_INDEXES = [
    {'IndexName': name, 'KeySchema': [{'AttributeName': attr, 'KeyType': 'HASH'}],
     'Projection': {'ProjectionType': 'INCLUDE', 'NonKeyAttributes': ['site']}}
    for name, attr in (('by_anonymous_id', 'anonymous_id'), ('by_user_id', 'user_id'))
]


def dynalite_bodies(table, n_items, threads, seed, sample, user_id_share=0.0):
    """Pre-built BatchWriteItem bodies (25 items each), one list per thread, so that building
    them is not timed and the GIL-bound client can keep up with the target rate."""
    rng = random.Random(seed)
    now = datetime.datetime.now(datetime.timezone.utc)
    out = [[] for _ in range(threads)]
    for k in range(n_items // 25):
        items = [make_item(rng, now, user_id_share) for _ in range(25)]
        if len(sample) < 200 and rng.random() < 0.02:
            sample.append(items[0])
        body = {'RequestItems': {table: [{'PutRequest': {'Item': it}} for it in items]}}
        out[k % threads].append(json.dumps(body, separators=(',', ':')).encode())
    return out


def dynalite_writes(port, bodies, rate):
    """Send the bodies (one thread per list) at `rate` items/s in total (0 = unthrottled)."""
    threads = len(bodies)

    def work(i):
        c = Client(port, 'dynamodb', 'application/x-amz-json-1.0')
        t0 = time.monotonic()
        interval = 25.0 * threads / rate if rate else 0.0
        for k, body in enumerate(bodies[i]):
            r = c.call_raw('DynamoDB_20120810.BatchWriteItem', body)
            if r.get('UnprocessedItems'):
                raise RuntimeError(f'unprocessed items: {r}')
            if interval:
                delay = t0 + (k + 1) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    run_threads(threads, work)
    return 25 * sum(len(b) for b in bodies)


def bench_dynalite(a, proc, res):
    import boto3
    ddb = boto3.client('dynamodb', endpoint_url=f'http://{HOST}:{a.port}', region_name='us-east-1',
                       aws_access_key_id='local', aws_secret_access_key='local')
    table = 'bench_events'
    indexes = ERASURE_INDEXES if a.indexes == 'erasure' else []
    key_attrs = ['event_id'] + [ix['KeySchema'][0]['AttributeName'] for ix in indexes]
    ddb.create_table(TableName=table, BillingMode='PAY_PER_REQUEST',
                     KeySchema=[{'AttributeName': 'event_id', 'KeyType': 'HASH'}],
                     AttributeDefinitions=[{'AttributeName': n, 'AttributeType': 'S'} for n in key_attrs],
                     **({'GlobalSecondaryIndexes': indexes} if indexes else {}))
    user_id_share = a.user_id_share
    res['indexes'] = [ix['IndexName'] for ix in indexes]
    res['user_id_share'] = user_id_share
    sample, total, seed = [], 0, 1

    def window(kind, n, rate):
        nonlocal total, seed
        seed += 1
        bodies = dynalite_bodies(table, n, a.threads, seed, sample, user_id_share)
        c0, w0 = cpu_ms(proc.pid), time.monotonic()
        done = dynalite_writes(a.port, bodies, rate)
        c1, w1 = cpu_ms(proc.pid), time.monotonic()
        total += done
        row = {'phase': kind, 'items_before': total - done, 'items': done, 'cpu_ms_per_item': round((c1 - c0) / done, 4),
               'items_per_s': round(done / (w1 - w0)), 'rss_mb': round(rss_mb(proc.pid))}
        print(json.dumps(row), flush=True)
        res['windows'].append(row)

    window('warmup', 10000, a.rate)  # JIT warm-up, not summarised
    for _ in range(a.reps):
        window('fresh', a.window, a.rate)
    while total < a.fill:
        window('fill', min(200000, a.fill - total), 0)
    if a.fill:
        for _ in range(a.reps):
            window('large', a.large_window, a.rate)
    # faithfulness: every sampled item reads back identical, and the table counts every write
    for it in sample:
        got = ddb.get_item(TableName=table, Key={'event_id': it['event_id']}, ConsistentRead=True).get('Item')
        if got != it:
            raise SystemExit(f'MISMATCH for {it["event_id"]}: {got}')
    res['check'] = {'sampled_items_identical': len(sample), 'written': total}
    # With the indexes: each sampled item is found through them, as forget looked for it when it
    # had them (the visitor's key, a filter on its site), and an index holds exactly its
    # attribute's items.
    for it in sample if indexes else []:
        for ix in indexes:
            attr = ix['KeySchema'][0]['AttributeName']
            if attr not in it:
                continue
            got = ddb.query(TableName=table, IndexName=ix['IndexName'], KeyConditionExpression='#k = :v',
                            FilterExpression='site = :s', ExpressionAttributeNames={'#k': attr},
                            ExpressionAttributeValues={':v': it[attr], ':s': it['site']})['Items']
            if it['event_id'] not in [g['event_id'] for g in got]:
                raise SystemExit(f'{ix["IndexName"]} does not find {it["event_id"]}: {got}')
        res['check']['sampled_items_found_by_index'] = len(sample)
    print(json.dumps(res['check']), flush=True)
    for kind in ('fresh', 'large'):
        v = [w['cpu_ms_per_item'] for w in res['windows'] if w['phase'] == kind]
        if v:
            res[kind] = {'mean': round(sum(v) / len(v), 4), 'min': min(v), 'max': max(v)}


# ---------------------------------------------------------------- kinesalite
def bench_kinesalite(a, proc, res):
    import base64
    import boto3
    kin = boto3.client('kinesis', endpoint_url=f'http://{HOST}:{a.port}', region_name='us-east-1',
                       aws_access_key_id='local', aws_secret_access_key='local')
    stream = 'bench_events'
    kin.create_stream(StreamName=stream, ShardCount=a.shards)
    kin.get_waiter('stream_exists').wait(StreamName=stream, WaiterConfig={'Delay': 0.2})
    shards = [s['ShardId'] for s in kin.describe_stream(StreamName=stream)['StreamDescription']['Shards']]
    rng = random.Random(7)
    payloads = [base64.b64encode(rng.randbytes(a.size)).decode() for _ in range(8)]
    batch = max(1, min(a.batch, 500, (5 * 1024 * 1024) // (a.size + 64)))
    kb = a.size / 1024.0

    for rep in range(a.reps):
        iters = {s: kin.get_shard_iterator(StreamName=stream, ShardId=s, ShardIteratorType='LATEST')['ShardIterator']
                 for s in shards}
        per_thread = a.records // a.threads

        def put(i):
            c = Client(a.port, 'kinesis', 'application/x-amz-json-1.1')
            n, t0 = 0, time.monotonic()
            interval = batch * a.threads / a.rate if a.rate else 0.0
            while n < per_thread:
                k = min(batch, per_thread - n)
                recs = [{'Data': payloads[(n + j) % 8], 'PartitionKey': uuid.uuid4().hex} for j in range(k)]
                r = c.call('Kinesis_20131202.PutRecords', {'StreamName': stream, 'Records': recs})
                if r['FailedRecordCount']:
                    raise RuntimeError('failed records')
                n += k
                if interval:
                    d = t0 + (n / batch) * interval - time.monotonic()
                    if d > 0:
                        time.sleep(d)
        c0, w0 = cpu_ms(proc.pid), time.monotonic()
        run_threads(a.threads, put)
        c1, w1 = cpu_ms(proc.pid), time.monotonic()
        n_put = per_thread * a.threads

        got, checked = 0, 0
        c = Client(a.port, 'kinesis', 'application/x-amz-json-1.1')
        g0 = cpu_ms(proc.pid)
        for s, it in iters.items():
            while it:
                r = c.call('Kinesis_20131202.GetRecords', {'ShardIterator': it, 'Limit': a.get_limit})
                for rec in r['Records']:
                    if rec['Data'] not in payloads:  # byte-for-byte what was put
                        raise SystemExit('MISMATCH in GetRecords data')
                    checked += 1
                got += len(r['Records'])
                it = r.get('NextShardIterator') if r['Records'] else None
        g1 = cpu_ms(proc.pid)
        if got != n_put:
            raise SystemExit(f'read back {got} of {n_put} records')
        row = {'rep': rep, 'records': n_put, 'size': a.size, 'batch': batch,
               'put_ms_per_record': round((c1 - c0) / n_put, 4), 'put_ms_per_kb': round((c1 - c0) / n_put / kb, 4),
               'get_ms_per_record': round((g1 - g0) / got, 4), 'get_ms_per_kb': round((g1 - g0) / got / kb, 4),
               'put_records_per_s': round(n_put / (w1 - w0)), 'rss_mb': round(rss_mb(proc.pid))}
        print(json.dumps(row), flush=True)
        res['windows'].append(row)
    for key in ('put_ms_per_record', 'put_ms_per_kb', 'get_ms_per_record', 'get_ms_per_kb'):
        v = sorted(w[key] for w in res['windows'])
        res[key] = {'mean': round(sum(v) / len(v), 4), 'min': v[0], 'max': v[-1]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('emulator', choices=['dynalite', 'kinesalite'])
    p.add_argument('--label', default='baseline')
    p.add_argument('--node-args', default='', help='space-separated node/V8 flags, e.g. --max-semi-space-size=64')
    p.add_argument('--env', action='append', default=[], help='KEY=VALUE for the emulator process (repeatable)')
    p.add_argument('--port', type=int, default=None, help='default 14568 (dynalite) / 14567 (kinesalite)')
    p.add_argument('--threads', type=int, default=3)
    p.add_argument('--rate', type=float, default=None,
                   help='items (dynalite) or records (kinesalite) per s in measured windows; 0 = unthrottled')
    p.add_argument('--reps', type=int, default=2, help='measured windows per phase')
    p.add_argument('--window', type=int, default=100000, help='dynalite: items per measured window (fresh table)')
    p.add_argument('--large-window', type=int, default=150000,
                   help='dynalite: items per measured window on the large table (long enough to include major GCs)')
    p.add_argument('--fill', type=int, default=1000000, help='dynalite: fill the table to this many items, 0 = skip')
    p.add_argument('--indexes', choices=['none', 'erasure'], default='none',
                   help="dynalite: 'erasure' = the table has forget's two former GSIs (issue #23's measurement)")
    p.add_argument('--user-id-share', type=float, default=0.0,
                   help='dynalite: share of items with a user_id (with --indexes erasure, those are in by_user_id)')
    p.add_argument('--records', type=int, default=20000, help='kinesalite: records per rep')
    p.add_argument('--size', type=int, default=25000, help='kinesalite: bytes of Data per record')
    p.add_argument('--batch', type=int, default=500, help='kinesalite: records per PutRecords (capped at 5 MiB)')
    p.add_argument('--shards', type=int, default=2)
    p.add_argument('--get-limit', type=int, default=10000)
    p.add_argument('--out', default='/tmp/bench_emulators.jsonl')
    a = p.parse_args()
    if a.port is None:
        a.port = 14568 if a.emulator == 'dynalite' else 14567
    if a.port in (3000, 4567, 4568, 5000, 5432, 9101, 9102):
        raise SystemExit('refusing a port of the running stack')
    if a.rate is None:
        a.rate = 5000 if a.emulator == 'dynalite' else 0
    env_extra = dict(e.split('=', 1) for e in a.env)
    node_args = a.node_args.split()
    proc = start_emulator(a.emulator, a.port, node_args, env_extra)
    res = {'emulator': a.emulator, 'label': a.label, 'node_args': node_args, 'env': env_extra,
           'loadavg': open('/proc/loadavg').read().split()[:3], 'windows': []}
    try:
        (bench_dynalite if a.emulator == 'dynalite' else bench_kinesalite)(a, proc, res)
        res['loadavg_end'] = open('/proc/loadavg').read().split()[:3]
        res['peak_rss_mb'] = max(w['rss_mb'] for w in res['windows'])
        with open(a.out, 'a') as f:
            f.write(json.dumps(res) + '\n')
        print(json.dumps({k: v for k, v in res.items() if k != 'windows'}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == '__main__':
    main()
