#!/usr/bin/env bash
# The local stand-in for the AWS schedules (terraform/compactor.tf: EventBridge runs the compactor
# at minute 15 of every hour over the last 24 closed hours; S3 lifecycle and DynamoDB TTL need no
# schedule there). `scripts/pipeline.sh up` starts this loop beside the producer and the
# consumer (pid and log in .local/run/schedule.*) and `down` stops it.
#
# Every COMPACT_EVERY_SECONDS (default 600; 0 = never) it runs `compactor --hours-back 24`, and at
# most every RETENTION_EVERY_SECONDS (default 3600; 0 = never) `retention` (README, "Retention"). The first
# runs start at once. A run that fails is logged and the loop goes on: both commands are
# idempotent and finish, on their next run, whatever a failed or killed run left.
#
#   COMPACTOR=path/to/compactor RETENTION=path/to/retention scripts/schedule.sh
#
# SIGTERM stops the loop; a run in progress gets the SIGTERM too (both are crash-safe).
set -uo pipefail
compactor="${COMPACTOR:?path of the compactor binary}"
retention="${RETENTION:?path of the retention binary}"
every="${COMPACT_EVERY_SECONDS:-600}"
retention_every="${RETENTION_EVERY_SECONDS:-3600}"
hours_back="${COMPACT_HOURS_BACK:-24}"

log() { printf '{"timestamp":"%s","level":"INFO","target":"schedule","message":"%s"}\n' "$(date -u +%FT%TZ)" "$*"; }

child=""
stopping=0
on_term() {
  stopping=1
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap on_term TERM INT

# run NAME CMD...: one run in the background, so a SIGTERM to this loop is handled at once.
run() {
  local name="$1" status started=$SECONDS
  shift
  "$@" &
  child=$!
  wait "$child"; status=$?
  # `wait` returns early when a trapped signal arrives: wait for the run itself to end.
  while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
  child=""
  log "$name exited $status after $((SECONDS - started)) s"
}

log "schedule started: compactor every ${every} s (last ${hours_back} closed hours), retention every ${retention_every} s"
last_retention=""
# With compaction off the loop still wakes every minute, for retention.
tick=$(( every > 0 ? every : 60 ))
while [ "$stopping" = 0 ]; do
  [ "$every" -gt 0 ] && run compactor "$compactor" --hours-back "$hours_back"
  if [ "$stopping" = 0 ] && [ "$retention_every" -gt 0 ] \
    && { [ -z "$last_retention" ] || [ $((SECONDS - last_retention)) -ge "$retention_every" ]; }; then
    last_retention=$SECONDS
    run retention "$retention"
  fi
  [ "$stopping" = 0 ] || break
  sleep "$tick" &
  child=$!
  wait "$child" 2>/dev/null
  kill "$child" 2>/dev/null
  child=""
done
log "schedule stopped"
