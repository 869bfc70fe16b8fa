#!/usr/bin/env bash
# `make down`: stops exactly what `make up` started, in reverse order.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/demo-page.sh down
bash scripts/pipeline.sh down
bash scripts/prometheus.sh down
bash scripts/local-stack.sh down
