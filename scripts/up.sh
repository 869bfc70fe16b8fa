#!/usr/bin/env bash
# `make up`: the local AWS stack, the pipeline (producer :3000, consumer runner) and Prometheus,
# all on 127.0.0.1, in the background. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/local-stack.sh up
bash scripts/pipeline.sh up
bash scripts/prometheus.sh up
cat <<MSG

The pipeline is up (everything on 127.0.0.1):
  send events     curl -X POST http://127.0.0.1:3000/events -H 'content-type: application/json' -H 'x-site-key: pk_local_demo' -d '{"event_type":"page_view"}'
  metrics         http://127.0.0.1:9101/metrics (producer), http://127.0.0.1:9102/metrics (consumer)
  Prometheus      http://127.0.0.1:9090   (lag: max(consumer_millis_behind_latest))
  logs            .local/run/producer.log, .local/run/consumer.log, .local/run/schedule.log
  schedule        compactor every ${COMPACT_EVERY_SECONDS:-600} s, retention hourly (make retention runs it now)
  stores          source scripts/env.sh; psql "\$DATABASE_URL" -c 'table event_type_counts'
  stop            make down
MSG
