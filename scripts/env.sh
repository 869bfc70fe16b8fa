# shellcheck shell=bash
# Environment for running producer-api / stream-consumer / tools against the local stack
# started by `scripts/local-stack.sh up` (all endpoints on 127.0.0.1).
#
#   source scripts/env.sh        # or: eval "$(bash scripts/local-stack.sh env)"
#
# Every variable keeps a value the caller already set (${VAR:-default}), so e.g.
#   STREAM_NAME=my-stream source scripts/env.sh
# works. local-stack.sh reads its resource names from this file too.
export AWS_ENDPOINT_URL_KINESIS="${AWS_ENDPOINT_URL_KINESIS:-http://127.0.0.1:4567}"
export AWS_ENDPOINT_URL_DYNAMODB="${AWS_ENDPOINT_URL_DYNAMODB:-http://127.0.0.1:4568}"
export AWS_ENDPOINT_URL_S3="${AWS_ENDPOINT_URL_S3:-http://127.0.0.1:4566}"
export AWS_ENDPOINT_URL_SECRETS_MANAGER="${AWS_ENDPOINT_URL_SECRETS_MANAGER:-http://127.0.0.1:4566}"
export AWS_ENDPOINT_URL_SQS="${AWS_ENDPOINT_URL_SQS:-http://127.0.0.1:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
export STREAM_NAME="${STREAM_NAME:-analytics-events}"
export LAKE_BUCKET="${LAKE_BUCKET:-analytics-lake}"
export DYNAMODB_TABLE="${DYNAMODB_TABLE:-analytics-events}"
# The consumer's on-failure queue on moto (123456789012 is moto's account): `replay queue` reads
# it; the local runner sends to it only when RUNNER_ON_FAILURE_QUEUE_URL is set as well.
export ON_FAILURE_QUEUE_URL="${ON_FAILURE_QUEUE_URL:-http://127.0.0.1:4566/123456789012/analytics-consumer-failures}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/analytics}"
export DATABASE_SECRET_ARN="${DATABASE_SECRET_ARN:-analytics/postgres}"
export DATABASE_HOST="${DATABASE_HOST:-127.0.0.1}"
export DATABASE_PORT="${DATABASE_PORT:-5432}"
export DATABASE_NAME="${DATABASE_NAME:-analytics}"
# The sites allowed to write (config/sites.json: one site, local-demo) and the key local clients
# (k6, the fault suite, curl examples) send as X-Site-Key.
export SITES_CONFIG="${SITES_CONFIG:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/config/sites.json}"
export SITE_KEY="${SITE_KEY:-pk_local_demo}"
# The producer's country lookup (README "Country lookup"): on when scripts/geoip.sh installed the
# database (local-stack.sh up does), else empty, i.e. off. `GEOIP_COUNTRY_DB= source
# scripts/env.sh` (set, empty) keeps it off.
_geoip_db="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.local/geoip/country.mmdb"
[ -n "${GEOIP_COUNTRY_DB+set}" ] || [ ! -f "$_geoip_db" ] || GEOIP_COUNTRY_DB="$_geoip_db"
export GEOIP_COUNTRY_DB="${GEOIP_COUNTRY_DB-}"
unset _geoip_db
