# Shared by the test scripts (sourced, not run).

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# install_packages PACKAGE...: installs Debian packages without starting the services they bring
# (the tests start their own instances).
install_packages() {
  [ $# -gt 0 ] || return 0
  echo "installing: $*"
  local policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  [ "$policy_added" -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
  return 0
}

# start_postgres: a throwaway PostgreSQL cluster for the test run (initdb in a temporary
# directory, a free loopback port, password authentication), as the `postgres` user when we are
# root (the server refuses root). Sets PASSERELLE_TEST_POSTGRES to its `postgres` database's URL
# and PG_TEST_PID to the server's PID; stop_postgres stops it by that PID and removes the
# directory.
start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bin/postgres" ] || { echo "PostgreSQL's server is not installed" >&2; return 1; }
  PG_TEST_DIR=$(mktemp -d /tmp/passerelle-pg.XXXXXX)
  chmod 755 "$PG_TEST_DIR"
  local port password run=()
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password="pw-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
  printf '%s' "$password" > "$PG_TEST_DIR/pwfile"
  mkdir "$PG_TEST_DIR/data"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres:postgres "$PG_TEST_DIR"
    run=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  "${run[@]}" "$bin/initdb" -D "$PG_TEST_DIR/data" -U passerelle --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$PG_TEST_DIR/pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --no-sync > "$PG_TEST_DIR/initdb.log" 2>&1 || { cat "$PG_TEST_DIR/initdb.log" >&2; return 1; }
  "${run[@]}" "$bin/postgres" -D "$PG_TEST_DIR/data" -c listen_addresses=127.0.0.1 -c port="$port" \
    -c unix_socket_directories="$PG_TEST_DIR/data" -c fsync=off -c max_connections=400 \
    > "$PG_TEST_DIR/postgres.log" 2>&1 < /dev/null &
  PG_TEST_PID=$!
  local i
  for i in $(seq 1 300); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.1
  done
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || { cat "$PG_TEST_DIR/postgres.log" >&2; return 1; }
  export PASSERELLE_TEST_POSTGRES="postgres://passerelle:$password@127.0.0.1:$port/postgres"
  echo "PostgreSQL test server on 127.0.0.1:$port (PID $PG_TEST_PID)"
}

stop_postgres() {
  [ -n "${PG_TEST_PID:-}" ] || return 0
  kill -INT "$PG_TEST_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 150); do kill -0 "$PG_TEST_PID" 2>/dev/null || break; sleep 0.1; done
  kill -QUIT "$PG_TEST_PID" 2>/dev/null || true
  sleep 0.5
  kill -KILL "$PG_TEST_PID" 2>/dev/null || true
  rm -rf "$PG_TEST_DIR"
  PG_TEST_PID=
}
