#!/usr/bin/env bash
# The container image, built and started by the tests.
#
#   scripts/container.sh up     install Docker's engine (Debian's docker.io) and debootstrap when
#                               missing, start dockerd (its own data root and socket, no bridge,
#                               no iptables), make the two local base images when missing, and
#                               build the image from the Dockerfile as written, both stages
#   scripts/container.sh down   stop that dockerd, by its PID
#
# No container registry can be reached here, so the Dockerfile's two bases are stand-ins made
# from Debian's packages: the runtime base is `debootstrap --variant=minbase bookworm` imported
# with `docker import`; the build base is the same root with gcc, libc6-dev, make and
# ca-certificates installed by its apt, plus this machine's Rust toolchain and this machine's CA
# bundle (the registries are reached through this machine's trust store). Every build and run uses the host's network: nothing
# leaves loopback but the package registries.
#
# The engine keeps its data (images and the build's cache mounts: the cargo registry and the
# release target directory) under $HOME/.cache/passerelle-docker, so a second run rebuilds only
# what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

# Debian's client, which matches Debian's engine and has BuildKit built in (another `docker` on
# the PATH may need a buildx plugin this machine lacks).
DOCKER="${PASSERELLE_DOCKER:-/usr/bin/docker}"
RUN_DIR="${PASSERELLE_DOCKER_RUN:-/run/passerelle-docker}"
DATA_ROOT="${PASSERELLE_DOCKER_ROOT:-$HOME/.cache/passerelle-docker}"
WORK="${PASSERELLE_CONTAINER_WORK:-$HOME/.cache/passerelle-container}"
export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
IMAGE="${PASSERELLE_TEST_IMAGE:-passerelle:test}"
RUNTIME_BASE=passerelle-local/runtime-base:bookworm
SUITE=bookworm
MIRROR="${PASSERELLE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

install_missing() {
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  install_packages "${missing[@]}"
}

dockerd_pid() {
  local pid
  pid="$(cat "$RUN_DIR/docker.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

start_dockerd() {
  if [ -n "$(dockerd_pid)" ] && "$DOCKER" version >/dev/null 2>&1; then
    return 0
  fi
  as_root mkdir -p "$RUN_DIR" "$DATA_ROOT"
  echo "starting dockerd (data root $DATA_ROOT)"
  # setsid: its own session, so it outlives this script's process group until `down`.
  as_root setsid /usr/sbin/dockerd \
    --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/docker.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    >"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    if "$DOCKER" version >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "dockerd did not answer within 60 s; its log:" >&2
  tail -n 40 "$RUN_DIR/dockerd.log" >&2 || true
  return 1
}

stop_dockerd() {
  local pid
  pid="$(dockerd_pid)"
  [ -n "$pid" ] || return 0
  # Containers the tests left are stopped first, then the engine (SIGTERM, by its PID).
  local left
  left="$("$DOCKER" ps -q 2>/dev/null || true)"
  [ -z "$left" ] || "$DOCKER" rm -f $left >/dev/null 2>&1 || true
  as_root kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { echo "dockerd stopped"; return 0; }
    sleep 0.5
  done
  echo "dockerd did not stop within 30 s: killed" >&2
  as_root kill -KILL "$pid" 2>/dev/null || true
}

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# One minbase root makes both bases: imported as it is, it is the runtime base; with gcc, libc6-dev,
# make and ca-certificates added by its own apt, this machine's Rust toolchain and this machine's
# CA bundle, the build base. The .debs are kept for the next machine-fresh run.
make_bases() {
  local sysroot version
  sysroot="$(rustc --print sysroot)"
  version="$(rustc --version | awk '{print $2}')"
  BUILD_BASE="passerelle-local/build-base:$version-$SUITE"
  if have_image "$RUNTIME_BASE" && have_image "$BUILD_BASE"; then return 0; fi
  local root="$WORK/root"
  echo "debootstrap --variant=minbase $SUITE (the root of both base images)"
  as_root rm -rf "$root"
  mkdir -p "$WORK/debs"
  if ! as_root debootstrap --variant=minbase --cache-dir="$WORK/debs" "$SUITE" "$root" "$MIRROR" \
      >"$WORK/debootstrap.log" 2>&1; then
    echo "debootstrap failed; its log:" >&2
    tail -n 30 "$WORK/debootstrap.log" >&2
    return 1
  fi
  if ! have_image "$RUNTIME_BASE"; then
    echo "making $RUNTIME_BASE"
    as_root tar -C "$root" -c . | "$DOCKER" import - "$RUNTIME_BASE" >/dev/null
  fi
  if ! have_image "$BUILD_BASE"; then
    echo "making $BUILD_BASE (the same root + gcc, this machine's Rust $version and CA bundle)"
    # The mirror may serve a Release file past its Valid-Until, as this machine's apt allows.
    if ! as_root chroot "$root" /bin/sh -c \
        'apt-get -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev make ca-certificates && apt-get clean' \
        >"$WORK/build-base.log" 2>&1; then
      echo "installing the build tools into the root failed; its log:" >&2
      tail -n 30 "$WORK/build-base.log" >&2
      return 1
    fi
    as_root cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    as_root mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
    # The toolchain without its documentation.
    for part in bin lib libexec; do
      [ -d "$sysroot/$part" ] && as_root cp -a "$sysroot/$part" "$root/usr/local/rust/"
    done
    as_root tar -C "$root" -c . | "$DOCKER" import \
      --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      - "$BUILD_BASE" >/dev/null
  fi
  as_root rm -rf "$root"
}

build_image() {
  echo "docker build $IMAGE (the Dockerfile as written; log in $WORK/build.log)"
  local started=$SECONDS
  if ! DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
      --build-arg "BUILD_BASE=$BUILD_BASE" --build-arg "RUNTIME_BASE=$RUNTIME_BASE" \
      -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    echo "docker build failed; the end of its log:" >&2
    tail -n 60 "$WORK/build.log" >&2
    return 1
  fi
  local size
  size="$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")"
  echo "built $IMAGE in $((SECONDS - started)) s: $((size / 1000000)) MB ($size bytes)"
}

case "${1:-}" in
  up)
    install_missing
    mkdir -p "$WORK"
    start_dockerd
    make_bases
    build_image
    ;;
  down)
    stop_dockerd
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 64
    ;;
esac
