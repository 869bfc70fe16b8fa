#!/usr/bin/env bash
# One-command local AWS stack for the pipeline, everything bound to 127.0.0.1:
#
#   kinesalite (Kinesis)                 127.0.0.1:4567
#   dynalite (DynamoDB)                  127.0.0.1:4568
#   moto server (S3 + Secrets Manager)   127.0.0.1:4566
#   PostgreSQL (database analytics)      127.0.0.1:5432
#
# Usage: scripts/local-stack.sh up|down|status|env|postgres
#   up      install deps if needed (.local/venv via scripts/venv.sh, scripts/emulators/node_modules
#           via npm ci, the producer's country database via scripts/geoip.sh), start whatever is not already answering on its port, make sure PostgreSQL
#           runs (installing it from Debian packages if absent) with database analytics, create the
#           stream/bucket/table/secret (scripts/bootstrap_resources.py), apply DB migrations
#           (stream-consumer migrate), print the endpoints. Idempotent: a second run is quick
#           and restarts nothing.
#   down    stop exactly what `up` started (pid files in .local/run/); PostgreSQL only if `up`
#           started it.
#   status  which services answer (exit 0 if all are up, 3 otherwise).
#   env     print `export ...` lines for the local stack (same as `source scripts/env.sh`).
#   postgres only make sure PostgreSQL runs with the hll extension (installing both when absent),
#           for tools that need nothing else (scripts/ledger-bench.sh); `down` stops it if this
#           started it.
#
# Env: STREAM_NAME, LAKE_BUCKET, DYNAMODB_TABLE   resource names (defaults in scripts/env.sh)
#      SKIP_MIGRATIONS=1                          skip the `stream-consumer migrate` step
#      DYNALITE_STORE=btree|memory (btree)        dynalite's in-memory store (docs/emulators.md)
#      DYNALITE_HEAP_MB (8192)                    dynalite's V8 heap limit, MB
#      CARGO_TARGET_DIR                           default $HOME/.cache/web-analytics-pipeline/target
# Emulator data lives in memory: `down` + `up` starts from empty Kinesis/DynamoDB/S3.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT
RUN_DIR="$ROOT/.local/run"
VENV="$ROOT/.local/venv"
EMU_DIR="$ROOT/scripts/emulators"
HOST=127.0.0.1
KINESIS_PORT=4567
DYNAMODB_PORT=4568
MOTO_PORT=4566
PG_PORT="${LOCAL_STACK_PG_PORT:-5432}" # override only for testing this script against a scratch cluster
PG_DB=analytics
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"

log() { printf 'local-stack: %s\n' "$*" >&2; }
die() { printf 'local-stack: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR == 1 { next } !/^#/ || /^# shellcheck/ { exit } { sub(/^# ?/, ""); print }' "$0"; }

# --------------------------------------------------------------------------------------------
# helpers

port_open() { # port -> 0 if something accepts TCP connections on 127.0.0.1:port
  timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

lock() { # serialise up/down of this checkout
  mkdir -p "$RUN_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$RUN_DIR/lock"
    if ! flock -n 9; then
      log "waiting for another local-stack.sh up/down to finish (lock $RUN_DIR/lock)"
      flock -w 600 9 || die "gave up waiting for the lock $RUN_DIR/lock (held by: $(fuser "$RUN_DIR/lock" 2>/dev/null || echo '?'))"
    fi
  fi
}

# Background services: name | port | marker (substring of its command line, guards against pid reuse)
SERVICES=(kinesalite dynalite moto)
svc_port() { case "$1" in kinesalite) echo $KINESIS_PORT ;; dynalite) echo $DYNAMODB_PORT ;; moto) echo $MOTO_PORT ;; esac; }
svc_marker() { case "$1" in kinesalite) echo kinesalite.js ;; dynalite) echo dynalite.js ;; moto) echo moto_server ;; esac; }
svc_label() { case "$1" in kinesalite) echo "Kinesis (kinesalite)" ;; dynalite) echo "DynamoDB (dynalite)" ;; moto) echo "S3+SecretsManager (moto)" ;; esac; }
svc_cmd() { # name -> sets the array CMD
  case "$1" in
    kinesalite) CMD=(node "$EMU_DIR/kinesalite.js") ;;
    # The table lives in the B+ tree store (scripts/emulators/btree-level.js; DYNALITE_STORE=memory
    # for dynalite's own memory-level), whose values are strings on the V8 heap: ~1.3 KB per item,
    # so a 10-minute sustained run (3M items) needs more than node's default ~4 GB heap limit.
    dynalite) CMD=(env "DYNALITE_STORE=${DYNALITE_STORE:-btree}" node "--max-old-space-size=${DYNALITE_HEAP_MB:-8192}" "$EMU_DIR/dynalite.js") ;;
    moto) CMD=("$VENV/bin/moto_server" -H "$HOST" -p "$MOTO_PORT") ;;
  esac
}

our_pid() { # name -> prints pid if the pid file points at a live process of that service
  local pidfile="$RUN_DIR/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(svc_marker "$1")" || return 1
  echo "$pid"
}

start_service() { # name
  local name="$1" port pid log
  port="$(svc_port "$name")"
  log="$RUN_DIR/$name.log"
  if pid="$(our_pid "$name")"; then
    log "$name: already running (pid $pid)"
    return 0
  fi
  rm -f "$RUN_DIR/$name.pid"
  if port_open "$port"; then
    log "$name: $HOST:$port already answering (not started by this checkout; leaving it alone)"
    return 0
  fi
  [ -f "$log" ] && mv -f "$log" "$log.prev"
  # setsid: own session, survives the caller's terminal; 9>&- : do not inherit the up/down lock.
  local CMD
  svc_cmd "$name"
  setsid "${CMD[@]}" >"$log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN_DIR/$name.pid"
  log "$name: started (pid $!, log ${log#"$ROOT"/})"
  FRESH_EMULATOR=1
}

# The emulators keep everything in memory, so one that was just started is empty. PostgreSQL
# keeps its data; a database left from an earlier stack would hold checkpoints for sequence
# numbers the new stream never had, dedup claims and counts for events the new lake lacks. So
# when any emulator starts empty, the database starts empty too: the stores stay one pipeline.
reset_database_if_fresh() {
  [ "${FRESH_EMULATOR:-0}" = 1 ] || return 0
  if [ -n "$(pg_psql -d postgres -Atqc "select 1 from pg_database where datname = '$PG_DB'")" ]; then
    log "postgres: emulators started empty; resetting database $PG_DB to match"
    pg_psql -d postgres -qc "drop database $PG_DB with (force)" >/dev/null
    pg_psql -d postgres -qc "create database $PG_DB" >/dev/null
  fi
}

wait_service() { # name [timeout_s]
  local name="$1" timeout="${2:-60}" port start
  port="$(svc_port "$name")"
  start=$SECONDS
  while ! port_open "$port"; do
    # Plain liveness here: just after the fork the child's command line is still ours.
    if [ -f "$RUN_DIR/$name.pid" ] && ! kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
      log "$name exited; last lines of $RUN_DIR/$name.log:"
      tail -n 20 "$RUN_DIR/$name.log" >&2 || true
      rm -f "$RUN_DIR/$name.pid"
      die "$name did not start on $HOST:$port"
    fi
    [ $((SECONDS - start)) -lt "$timeout" ] || die "$name: nothing answers on $HOST:$port after ${timeout}s (log: $RUN_DIR/$name.log)"
    sleep 0.1
  done
  # Lost a start race against another checkout: its server answers, ours exited.
  if [ -f "$RUN_DIR/$name.pid" ] && ! kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
    rm -f "$RUN_DIR/$name.pid"
    log "$name: $HOST:$port answered by another process; using it"
  fi
}

stop_service() { # name
  local name="$1" pid
  if ! pid="$(our_pid "$name")"; then
    if [ -f "$RUN_DIR/$name.pid" ]; then
      log "$name: not running (stale pid file removed)"
      rm -f "$RUN_DIR/$name.pid"
    elif port_open "$(svc_port "$name")"; then
      log "$name: $HOST:$(svc_port "$name") is up but was not started by this checkout; leaving it"
    else
      log "$name: not running"
    fi
    return 0
  fi
  terminate "$pid" 50 0.1 || log "$name: pid $pid ignored SIGTERM for 5s; sent SIGKILL"
  rm -f "$RUN_DIR/$name.pid"
  log "$name: stopped (pid $pid)"
}

ensure_npm() {
  command -v node >/dev/null 2>&1 || die "node not found: install Node.js >= 20 (needed for kinesalite/dynalite)"
  command -v npm >/dev/null 2>&1 || die "npm not found: install npm (comes with Node.js)"
  local major want stamp="$EMU_DIR/node_modules/.local-stack.sha256"
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 20 ] || log "WARNING: node $(node -v) is older than 20 (dynalite 4 declares node >= 20)"
  want="$( { node -v; sha256sum <"$EMU_DIR/package-lock.json"; } | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "npm ci --prefix scripts/emulators"
  # --ignore-scripts: the only install scripts are leveldown/classic-level's node-gyp-build checks;
  # they ship prebuilt binaries and the emulators run in memory anyway.
  npm ci --prefix "$EMU_DIR" --ignore-scripts --no-audit --no-fund --loglevel=error >&2 \
    || die "npm ci in scripts/emulators failed (no network to the npm registry?)"
  echo "$want" >"$stamp"
}

# --------------------------------------------------------------------------------------------
# PostgreSQL

pg_psql() { psql -w -h "$HOST" -p "$PG_PORT" -U postgres -X -v ON_ERROR_STOP=1 "$@"; }

as_postgres() { # run a command as the postgres OS user (root only)
  if command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

apt_install() {
  [ "$(id -u)" = 0 ] || die "need to install $* but not root: run 'apt-get install -y $*' as root first"
  command -v apt-get >/dev/null 2>&1 || die "need to install $* but apt-get is missing (not Debian?)"
  log "installing $* from Debian packages (apt-get)"
  apt-get update -qq >&2 9>&- || die "apt-get update failed"
  # 9>&- here and below: a daemon started by the command (postinst, postmaster) must not inherit
  # the up/down lock, or the next up/down would wait for it forever.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 9>&- || die "apt-get install $* failed"
}

pg_cluster() { # prints "VERSION CLUSTER" of the Debian cluster configured for $PG_PORT
  local c=""
  if command -v pg_lsclusters >/dev/null 2>&1; then
    c="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')"
  fi
  echo "$c"
}

ensure_postgres() {
  local cluster ver name installed=0
  if port_open "$PG_PORT"; then
    if [ -f "$RUN_DIR/postgres.started" ]; then
      log "postgres: running (started by local-stack: $(cat "$RUN_DIR/postgres.started"))"
    else
      log "postgres: $HOST:$PG_PORT already answering (not started by local-stack)"
    fi
  else
    rm -f "$RUN_DIR/postgres.started"
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
      apt_install postgresql
      installed=1
    fi
    cluster="$(pg_cluster)"
    if [ -z "$cluster" ]; then
      if [ -n "$(pg_lsclusters -h 2>/dev/null)" ]; then
        pg_lsclusters >&2 || true
        die "PostgreSQL clusters exist but none is configured for port $PG_PORT; start one on $HOST:$PG_PORT"
      fi
      ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)"
      [ -n "$ver" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
      [ "$(id -u)" = 0 ] || die "no PostgreSQL cluster and not root to create one (pg_createcluster $ver main)"
      log "postgres: creating cluster $ver/main on port $PG_PORT"
      pg_createcluster -p "$PG_PORT" "$ver" main >&2 9>&- || die "pg_createcluster $ver main failed"
      cluster="$ver main"
    fi
    read -r ver name <<<"$cluster"
    if ! port_open "$PG_PORT"; then
      [ "$(id -u)" = 0 ] || [ "$(id -un)" = postgres ] || die "PostgreSQL $ver/$name is down; start it as root: pg_ctlcluster $ver $name start"
      log "postgres: starting cluster $ver/$name"
      pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 9>&- \
        || die "pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
    fi
    echo "$ver $name" >"$RUN_DIR/postgres.started"
    [ "$installed" = 0 ] || log "postgres: installed and started $ver/$name"
  fi
  local start=$SECONDS
  until port_open "$PG_PORT"; do
    [ $((SECONDS - start)) -lt 60 ] || die "PostgreSQL does not answer on $HOST:$PG_PORT after 60s"
    sleep 0.2
  done

  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  # Wait until it accepts connections (it answers TCP slightly before it is ready).
  start=$SECONDS
  until pg_isready -q -h "$HOST" -p "$PG_PORT" 2>/dev/null; do
    [ $((SECONDS - start)) -lt 60 ] || die "PostgreSQL on $HOST:$PG_PORT is not ready after 60s"
    sleep 0.2
  done

  if ! pg_psql -d postgres -Atqc 'select 1' >/dev/null 2>"$RUN_DIR/psql.err"; then
    log "postgres: 'psql -h $HOST -U postgres' failed: $(head -n 1 "$RUN_DIR/psql.err")"
    pg_fix_access
  fi
  rm -f "$RUN_DIR/psql.err"

  if [ -z "$(pg_psql -d postgres -Atqc "select 1 from pg_database where datname = '$PG_DB'")" ]; then
    if pg_psql -d postgres -qc "create database $PG_DB" 2>"$RUN_DIR/psql.err"; then
      log "postgres: created database $PG_DB"
    elif ! grep -q 'already exists' "$RUN_DIR/psql.err"; then
      cat "$RUN_DIR/psql.err" >&2
      die "could not create database $PG_DB"
    fi
    rm -f "$RUN_DIR/psql.err"
  fi
  ensure_hll
}

# Migration 0005 keeps unique visitors as HyperLogLog sketches (the `hll` extension, which
# Amazon RDS for PostgreSQL also ships). Debian packages it per server major version; the server
# reads the control file at CREATE EXTENSION time, so no restart is needed after installing.
ensure_hll() {
  [ -z "$(pg_psql -d postgres -Atqc "select 1 from pg_available_extensions where name = 'hll'")" ] || return 0
  local major
  major="$(( $(pg_psql -d postgres -Atqc 'show server_version_num') / 10000 ))"
  apt_install "postgresql-$major-hll"
  [ -n "$(pg_psql -d postgres -Atqc "select 1 from pg_available_extensions where name = 'hll'")" ] \
    || die "installed postgresql-$major-hll but PostgreSQL $major still lists no 'hll' extension"
  log "postgres: installed the hll extension (postgresql-$major-hll)"
}

# The local stack connects as postgres without a password over TCP (DATABASE_URL, secret).
# Fresh Debian clusters use scram for 127.0.0.1: fix that through the unix socket as the
# postgres OS user (create a root role too, so plain `psql` works for root).
pg_fix_access() {
  [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
    || die "cannot connect as postgres to $HOST:$PG_PORT and not root to fix it; allow passwordless loopback login for user postgres (pg_hba.conf 'host all all 127.0.0.1/32 trust')"
  as_postgres psql -X -p "$PG_PORT" -Atqc 'select 1' >/dev/null \
    || die "cannot connect to PostgreSQL as postgres, neither over TCP nor via the unix socket"
  log "postgres: connected via 'su postgres -c psql' (unix socket)"
  as_postgres psql -X -p "$PG_PORT" -v ON_ERROR_STOP=1 -qc \
    "do \$\$ begin if not exists (select from pg_roles where rolname = 'root') then create role root login superuser; end if; end \$\$" \
    || log "WARNING: could not create role root"
  local hba
  hba="$(as_postgres psql -X -p "$PG_PORT" -Atqc 'show hba_file')"
  [ -n "$hba" ] && [ -f "$hba" ] || die "cannot locate pg_hba.conf (show hba_file gave '$hba')"
  if ! grep -qE '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    cp -p "$hba" "$hba.local-stack.bak"
    {
      echo "# local dev stack (web-analytics-pipeline scripts/local-stack.sh): passwordless loopback"
      echo "host all all 127.0.0.1/32 trust"
      echo "host all all ::1/128 trust"
      cat "$hba.local-stack.bak"
    } >"$hba"
    log "postgres: added loopback trust lines to the top of $hba (backup: $hba.local-stack.bak)"
    as_postgres psql -X -p "$PG_PORT" -Atqc 'select pg_reload_conf()' >/dev/null
    sleep 0.5
  fi
  pg_psql -d postgres -Atqc 'select 1' >/dev/null \
    || die "still cannot connect as postgres to $HOST:$PG_PORT without a password; check $hba"
}

stop_postgres() {
  if [ ! -f "$RUN_DIR/postgres.started" ]; then
    if port_open "$PG_PORT"; then
      log "postgres: running but not started by local-stack; leaving it"
    else
      log "postgres: not running"
    fi
    return 0
  fi
  local ver name
  read -r ver name <"$RUN_DIR/postgres.started"
  if port_open "$PG_PORT"; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop >&2 9>&- \
      || die "pg_ctlcluster $ver $name stop failed"
    log "postgres: stopped cluster $ver/$name"
  else
    log "postgres: not running"
  fi
  rm -f "$RUN_DIR/postgres.started"
}

# --------------------------------------------------------------------------------------------
# migrations

run_migrations() {
  if [ "${SKIP_MIGRATIONS:-0}" = 1 ]; then
    log "migrations: skipped (SKIP_MIGRATIONS=1)"
    return 0
  fi
  local bin="$CARGO_TARGET_DIR/debug/stream-consumer"
  # The consumer reads its whole config at start-up (LAKE_BUCKET etc. are required) and builds
  # AWS clients: give it the local env with loopback endpoints only, whatever the caller has set.
  local run_env=(env -u DATABASE_SECRET_ARN -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL
    AWS_ENDPOINT_URL_KINESIS="http://$HOST:$KINESIS_PORT" AWS_ENDPOINT_URL_DYNAMODB="http://$HOST:$DYNAMODB_PORT"
    AWS_ENDPOINT_URL_S3="http://$HOST:$MOTO_PORT" AWS_ENDPOINT_URL_SECRETS_MANAGER="http://$HOST:$MOTO_PORT"
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION="$AWS_REGION"
    STREAM_NAME="$STREAM_NAME" LAKE_BUCKET="$LAKE_BUCKET" DYNAMODB_TABLE="$DYNAMODB_TABLE"
    DATABASE_URL="postgres://postgres@$HOST:$PG_PORT/$PG_DB" LOG_FORMAT=text)
  if [ -x "$bin" ]; then
    if [ -n "$(find "$ROOT/schemas/migrations" -newer "$bin" -type f 2>/dev/null | head -n 1)" ]; then
      log "WARNING: $bin is older than schemas/migrations; run 'cargo build --workspace --bins' to pick up new migrations"
    fi
  else
    command -v cargo >/dev/null 2>&1 || die "no $bin and no cargo to build it (set SKIP_MIGRATIONS=1 to skip migrations)"
    # Built first and then run like a built one: cargo_step is a shell function, which `env`
    # (run_env) cannot run.
    (cd "$ROOT" && cargo_step "building the consumer to apply migrations" build --workspace --bins >&2) \
      || die "'cargo build --workspace --bins' failed (set SKIP_MIGRATIONS=1 to skip this step)"
  fi
  log "migrations: ${bin/#"$HOME"/\~} migrate"
  "${run_env[@]}" "$bin" migrate >&2 \
    || die "'stream-consumer migrate' failed (set SKIP_MIGRATIONS=1 to skip this step)"
}

# --------------------------------------------------------------------------------------------
# commands

load_env() { # resource names (and the rest of the local env) from scripts/env.sh
  # shellcheck source=env.sh
  source "$ROOT/scripts/env.sh"
}

cmd_up() {
  local t0=$SECONDS name
  lock
  load_env
  bash "$ROOT/scripts/venv.sh" || die "scripts/venv.sh failed"
  ensure_npm
  # The producer's country database (scripts/env.sh turns the lookup on when it is there).
  bash "$ROOT/scripts/geoip.sh" >/dev/null || die "scripts/geoip.sh failed"
  for name in "${SERVICES[@]}"; do start_service "$name"; done
  ensure_postgres
  reset_database_if_fresh
  for name in "${SERVICES[@]}"; do wait_service "$name" 60; done

  env -u AWS_PROFILE STREAM_NAME="$STREAM_NAME" LAKE_BUCKET="$LAKE_BUCKET" DYNAMODB_TABLE="$DYNAMODB_TABLE" \
    DATABASE_SECRET_NAME="$DATABASE_SECRET_ARN" KINESIS_PORT=$KINESIS_PORT DYNAMODB_PORT=$DYNAMODB_PORT \
    MOTO_PORT="$MOTO_PORT" PG_PORT="$PG_PORT" PG_DATABASE="$PG_DB" \
    "$VENV/bin/python" "$ROOT/scripts/bootstrap_resources.py" >&2 \
    || die "creating the local AWS resources failed (logs in $RUN_DIR/)"

  run_migrations

  cat <<EOF
local stack up in $((SECONDS - t0))s (all on $HOST):
  Kinesis          http://$HOST:$KINESIS_PORT   stream $STREAM_NAME
  DynamoDB         http://$HOST:$DYNAMODB_PORT   table $DYNAMODB_TABLE
  S3               http://$HOST:$MOTO_PORT   bucket $LAKE_BUCKET
  Secrets Manager  http://$HOST:$MOTO_PORT   secret $DATABASE_SECRET_ARN
  SQS              http://$HOST:$MOTO_PORT   queue ${ON_FAILURE_QUEUE_URL##*/} (on-failure descriptors: replay queue)
  PostgreSQL       postgres://postgres@$HOST:$PG_PORT/$PG_DB
  env:  source scripts/env.sh   (or: eval "\$(bash scripts/local-stack.sh env)")
  logs: .local/run/*.log        stop: bash scripts/local-stack.sh down
EOF
}

cmd_down() {
  local name
  lock
  for name in "${SERVICES[@]}"; do stop_service "$name"; done
  stop_postgres
}

cmd_status() {
  local name port pid state all=0
  for name in "${SERVICES[@]}"; do
    port="$(svc_port "$name")"
    if port_open "$port"; then
      if pid="$(our_pid "$name")"; then state="up    pid $pid (local-stack)"; else state="up    (external)"; fi
    else
      state="down"; all=3
    fi
    printf '%-26s %s:%-5s %s\n' "$(svc_label "$name")" "$HOST" "$port" "$state"
  done
  if port_open "$PG_PORT"; then
    if [ -f "$RUN_DIR/postgres.started" ]; then state="up    (local-stack started $(cat "$RUN_DIR/postgres.started"))"; else state="up    (external)"; fi
  else
    state="down"; all=3
  fi
  printf '%-26s %s:%-5s %s\n' "PostgreSQL" "$HOST" "$PG_PORT" "$state"
  return "$all"
}

cmd_env() {
  load_env
  local var
  for var in $(sed -nE 's/^export ([A-Z0-9_]+)=.*/\1/p' "$ROOT/scripts/env.sh"); do
    printf 'export %s=%q\n' "$var" "${!var}"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  postgres) lock; ensure_postgres ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h|--help|help) usage ;;
  "") usage >&2; exit 2 ;;
  *) log "unknown command '$1'"; usage >&2; exit 2 ;;
esac
