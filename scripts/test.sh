#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine and runs every test:
# formatting, clippy (warnings are errors) and the whole workspace's tests, the end-to-end tests
# against real ngIRCd, InspIRCd, Prosody, Synapse and PostgreSQL servers on loopback included, and the
# container image built from the Dockerfile and run on Docker's engine; then a short run of every
# fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

# Test servers from Debian's packages (tests start their own instances on free loopback ports).
missing=()
[ -x /usr/sbin/ngircd ] || command -v ngircd >/dev/null 2>&1 || missing+=(ngircd)
# InspIRCd, whose flood control can be turned off, for the long fault-injection runs.
[ -x /usr/sbin/inspircd ] || command -v inspircd >/dev/null 2>&1 || missing+=(inspircd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # throwaway certificates for TLS tests
# Prosody, the XMPP server (accounts, a MUC component, HTTP file sharing, external components).
[ -x /usr/bin/prosody ] || command -v prosody >/dev/null 2>&1 || missing+=(prosody)
# nginx, the reverse proxy deploy/nginx.conf is for (tests/proxy.rs runs it on loopback).
[ -x /usr/sbin/nginx ] || missing+=(nginx)
# Chromium, headless, to look at the status page as people do (tests/status_page.rs).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# PostgreSQL, the shared store (src/store/postgres.rs) and cluster mode's coordination.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
install_packages "${missing[@]}"

# Synapse from PyPI in a virtual environment kept between runs (tests start throwaway homeservers
# on loopback from it). Pinned so every run tests against the same homeserver.
SYNAPSE_VERSION=1.163.2
export PASSERELLE_SYNAPSE_VENV="${PASSERELLE_SYNAPSE_VENV:-$HOME/.cache/passerelle-venv}"
if ! "$PASSERELLE_SYNAPSE_VENV/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '$SYNAPSE_VERSION')" 2>/dev/null; then
  echo "installing matrix-synapse $SYNAPSE_VERSION into $PASSERELLE_SYNAPSE_VENV"
  python3 -m venv "$PASSERELLE_SYNAPSE_VENV"
  "$PASSERELLE_SYNAPSE_VENV/bin/pip" install -q --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
fi

# Docker's engine, started for the tests and stopped by its PID when this script ends, and the
# image built from the Dockerfile as written on local base images (tests/container.rs runs it).
trap 'bash scripts/container.sh down; stop_postgres' EXIT
bash scripts/container.sh up
export DOCKER_HOST="unix://${PASSERELLE_DOCKER_RUN:-/run/passerelle-docker}/docker.sock"
export PASSERELLE_DOCKER=/usr/bin/docker PASSERELLE_TEST_IMAGE=passerelle:test

# One throwaway PostgreSQL server for the run, stopped by its PID when this script ends; each
# test makes a database of its own in it (tests that restart the server start their own).
start_postgres

# One target directory kept between runs, so CI builds incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/passerelle-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== fuzz (short runs; the longer run is in docs/reliability.md)"
bash scripts/fuzz.sh "${PASSERELLE_FUZZ_SECONDS:-20}"
