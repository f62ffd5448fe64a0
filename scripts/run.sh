#!/usr/bin/env bash
# Local development stack: PostgreSQL 15 (throwaway cluster in var/pg), the
# mock provider (build/bridle-mock) and the gateway (build/bridle serve).
#
#   scripts/run.sh start     start what is not running yet, print how to use it
#   scripts/run.sh stop      stop everything (idempotent)
#   scripts/run.sh status    what runs
#
# Everything lives under ./var/ (gitignored): var/pg (cluster), var/pgsock
# (its socket), var/log/*.log, var/run/*.pid, var/dev-key (the dev client key,
# kept across runs), var/dev-admin-key (the dev admin key, for the admin API
# under /v1/bridle/admin/), var/env (the URLs of the running stack).
# Ports: PostgreSQL 5433, mock 18181, bridle 8080 — or the next free one
# (override the start with BRIDLE_PG_PORT, BRIDLE_MOCK_PORT, BRIDLE_PORT).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAR=$ROOT/var
BUILD=${BUILD:-build}
[[ $BUILD == /* ]] || BUILD=$ROOT/$BUILD
BRIDLE=$BUILD/bridle
MOCK=$BUILD/bridle-mock
CONFIG=${BRIDLE_RUN_CONFIG:-$ROOT/config/bridle.json}
PGDATA=$VAR/pg
PGSOCK=$VAR/pgsock
RUN=$VAR/run
LOG=$VAR/log

say() { printf '%s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# --- small helpers ------------------------------------------------------------

port_busy() { # PORT → 0 when something accepts connections on it
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
  fi
  return 1
}

free_port() { # START → first free port from START on
  local p=$1
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}

# pid of a component if its pid file names a live process whose command line
# contains NEEDLE; removes stale pid files.
live_pid() { # NAME NEEDLE
  local f=$RUN/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(head -n1 "$f" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
    echo "$pid"
    return 0
  fi
  rm -f "$f"
  return 1
}

stop_pid() { # NAME NEEDLE
  local pid i
  pid=$(live_pid "$1" "$2") || { say "$1: not running"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$1: did not stop on SIGTERM within 5 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$1.pid"
  say "$1: stopped (pid $pid)"
}

env_get() { # KEY → value from var/env
  [[ -f $VAR/env ]] || return 1
  sed -n "s/^$1=//p" "$VAR/env" | tail -n1
}

env_set() { # KEY VALUE
  mkdir -p "$VAR"
  touch "$VAR/env"
  grep -v "^$1=" "$VAR/env" >"$VAR/env.tmp" || true
  printf '%s=%s\n' "$1" "$2" >>"$VAR/env.tmp"
  mv "$VAR/env.tmp" "$VAR/env"
}

# --- PostgreSQL ---------------------------------------------------------------

PG_BIN=
find_pg() {
  local d
  for d in $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then PG_BIN=$d; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(command -v pg_ctl)")
    return 0
  fi
  die "PostgreSQL server binaries not found (apt-get install postgresql, or make deps)"
}

# Commands on the cluster run as the postgres system user when we are root
# (PostgreSQL refuses to run as root), else as ourselves.
if [[ $(id -u) -eq 0 ]]; then
  PG_USER=postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  PG_USER=$(id -un)
  as_pg() { "$@"; }
fi

pg_pid() {
  local pid
  [[ -f $PGDATA/postmaster.pid ]] || return 1
  pid=$(head -n1 "$PGDATA/postmaster.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

pg_psql() { # DB ARGS...
  local db=$1
  shift
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PG_PORT" -U "$PG_USER" -d "$db" "$@"
}

start_pg() {
  find_pg
  mkdir -p "$PGDATA" "$PGSOCK" "$LOG" "$RUN"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$PGDATA" "$PGSOCK"
    chmod 700 "$PGDATA"
    touch "$LOG/postgres.log"
    chown postgres: "$LOG/postgres.log"
    as_pg test -w "$PGDATA" ||
      die "the postgres user cannot reach $PGDATA (a parent directory is not world-executable)"
  fi
  if ((${#PGSOCK} > 90)); then
    die "socket directory path too long for a Unix socket: $PGSOCK"
  fi

  if PG_PID=$(pg_pid); then
    PG_PORT=$(env_get PG_PORT || true)
    [[ -n $PG_PORT ]] || PG_PORT=$(sed -n 4p "$PGDATA/postmaster.pid")
    say "postgres: already running (pid $PG_PID, port $PG_PORT)"
  else
    if [[ ! -f $PGDATA/PG_VERSION ]]; then
      say "postgres: creating a cluster in var/pg"
      as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$VAR/initdb.log" 2>&1 ||
        { cat "$VAR/initdb.log" >&2; die "initdb failed"; }
    fi
    PG_PORT=$(free_port "${BRIDLE_PG_PORT:-5433}")
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG/postgres.log" -w -t 30 \
      -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1" start >/dev/null ||
      { tail -n 20 "$LOG/postgres.log" >&2; die "PostgreSQL did not start"; }
    PG_PID=$(pg_pid) || die "PostgreSQL started but postmaster.pid is missing"
    say "postgres: started (pid $PG_PID, port $PG_PORT)"
  fi
  echo "$PG_PID" >"$RUN/postgres.pid"
  env_set PG_PORT "$PG_PORT"

  if [[ -z $(pg_psql postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'bridle'") ]]; then
    pg_psql postgres -c "CREATE DATABASE bridle"
    say "postgres: created database bridle"
  fi
  DATABASE_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/bridle"
  echo "$DATABASE_URL" >"$VAR/database_url"
  env_set DATABASE_URL "$DATABASE_URL"
  export DATABASE_URL
  migrate
}

# Applies migrations/*.sql. `build/bridle migrate` does it when it exists;
# until then, files not yet recorded in schema_migrations are applied here,
# each in one transaction.
migrate() {
  local f v n=0
  compgen -G "$ROOT/migrations/*.sql" >/dev/null || return 0
  if [[ -x $BRIDLE ]] && "$BRIDLE" migrate --help >/dev/null 2>&1; then
    DATABASE_URL=$DATABASE_URL "$BRIDLE" migrate >"$LOG/migrate.log" 2>&1 ||
      { cat "$LOG/migrate.log" >&2; die "bridle migrate failed"; }
    say "postgres: migrations applied (bridle migrate)"
    return 0
  fi
  pg_psql bridle -c "CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())" 2>/dev/null
  for f in "$ROOT"/migrations/*.sql; do
    v=$(basename "$f" .sql)
    if [[ -z $(pg_psql bridle -tAc "SELECT 1 FROM schema_migrations WHERE version = '$v'") ]]; then
      # psql runs as the postgres user, who may not read the file: feed it on stdin
      { cat "$f"; printf '\nINSERT INTO schema_migrations(version) VALUES (%s);\n' "'$v'"; } |
        pg_psql bridle --single-transaction -f - >>"$LOG/migrate.log" 2>&1 ||
        { tail -n 20 "$LOG/migrate.log" >&2; die "migration $v failed"; }
      n=$((n + 1))
    fi
  done
  ((n == 0)) || say "postgres: applied $n migration(s)"
}

stop_pg() {
  find_pg
  if pg_pid >/dev/null; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null
    say "postgres: stopped"
  else
    say "postgres: not running"
  fi
  rm -f "$RUN/postgres.pid"
}

# --- mock, key, gateway ---------------------------------------------------------

wait_for_line() { # FILE PATTERN PID TRIES(0.1 s)
  local i
  for ((i = 0; i < $4; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_mock() {
  local pid port
  [[ -x $MOCK ]] || die "$MOCK not built (run make)"
  if pid=$(live_pid mock bridle-mock); then
    BRIDLE_MOCK_URL=$(env_get BRIDLE_MOCK_URL)
    say "mock: already running (pid $pid, $BRIDLE_MOCK_URL)"
  else
    port=$(free_port "${BRIDLE_MOCK_PORT:-18181}")
    nohup "$MOCK" --listen "127.0.0.1:$port" >"$LOG/mock.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$RUN/mock.pid"
    wait_for_line "$LOG/mock.log" "listening on" "$pid" 100 ||
      { tail -n 20 "$LOG/mock.log" >&2; stop_pid mock bridle-mock >/dev/null; die "bridle-mock did not start"; }
    BRIDLE_MOCK_URL=http://127.0.0.1:$port
    say "mock: started (pid $pid, $BRIDLE_MOCK_URL)"
  fi
  env_set BRIDLE_MOCK_URL "$BRIDLE_MOCK_URL"
  export BRIDLE_MOCK_URL
}

dev_key() {
  local out
  if [[ ! -s $VAR/dev-key ]]; then
    out=$("$BRIDLE" new-key) || die "bridle new-key failed"
    (umask 077 && printf '%s\n' "$out" >"$VAR/dev-key")
    say "key: generated a dev client key into var/dev-key"
  fi
  chmod 600 "$VAR/dev-key"
  DEV_KEY=$(sed -n 's/^key: *//p' "$VAR/dev-key")
  BRIDLE_DEV_KEY_SHA256=$(sed -n 's/^sha256: *//p' "$VAR/dev-key")
  if [[ -z $BRIDLE_DEV_KEY_SHA256 && -n $DEV_KEY ]]; then
    BRIDLE_DEV_KEY_SHA256=$(printf '%s' "$DEV_KEY" | sha256sum | cut -d' ' -f1)
  fi
  [[ -n $DEV_KEY && -n $BRIDLE_DEV_KEY_SHA256 ]] || die "var/dev-key is not 'key: …' + 'sha256: …'; delete it to regenerate"
  export BRIDLE_DEV_KEY_SHA256
}

# The dev admin key: a config key of "kind": "admin" (config keys work
# without the database), for /v1/bridle/admin/ only.
dev_admin_key() {
  local out
  if [[ ! -s $VAR/dev-admin-key ]]; then
    out=$("$BRIDLE" new-key --admin) || die "bridle new-key --admin failed"
    (umask 077 && printf '%s\n' "$out" >"$VAR/dev-admin-key")
    say "key: generated a dev admin key into var/dev-admin-key"
  fi
  chmod 600 "$VAR/dev-admin-key"
  DEV_ADMIN_KEY=$(sed -n 's/^key: *//p' "$VAR/dev-admin-key")
  BRIDLE_DEV_ADMIN_KEY_SHA256=$(sed -n 's/^sha256: *//p' "$VAR/dev-admin-key")
  [[ $DEV_ADMIN_KEY == bk-admin-* && -n $BRIDLE_DEV_ADMIN_KEY_SHA256 ]] ||
    die "var/dev-admin-key is not 'key: bk-admin-…' + 'sha256: …'; delete it to regenerate"
  export BRIDLE_DEV_ADMIN_KEY_SHA256
}

start_bridle() {
  local pid port i
  [[ -x $BRIDLE ]] || die "$BRIDLE not built (run make)"
  dev_key
  dev_admin_key
  if pid=$(live_pid bridle "bridle serve"); then
    BRIDLE_URL=$(env_get BRIDLE_URL)
    say "bridle: already running (pid $pid, $BRIDLE_URL)"
    return 0
  fi
  port=$(free_port "${BRIDLE_PORT:-8080}")
  BRIDLE_URL=http://127.0.0.1:$port
  nohup "$BRIDLE" serve --config "$CONFIG" --listen "127.0.0.1:$port" >"$LOG/bridle.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$RUN/bridle.pid"
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$RUN/bridle.pid"
      say "bridle: exited during start-up; last lines of var/log/bridle.log:" >&2
      tail -n 30 "$LOG/bridle.log" >&2
      exit 1
    fi
    curl -fsS -o /dev/null --max-time 1 "$BRIDLE_URL/readyz" 2>/dev/null && break
    sleep 0.1
  done
  if ((i == 100)); then
    say "bridle: /readyz did not answer 200 within 10 s; last lines of var/log/bridle.log:" >&2
    tail -n 30 "$LOG/bridle.log" >&2
    stop_pid bridle "bridle serve" >/dev/null
    exit 1
  fi
  say "bridle: started (pid $pid, $BRIDLE_URL)"
  env_set BRIDLE_URL "$BRIDLE_URL"
}

print_info() {
  local body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
  local sbody='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
  local ebody='{"model":"text-embedding-3-small","input":["Hello","world"],"dimensions":8}'
  cat <<INFO

bridle is running.
  base URL:        $BRIDLE_URL/v1        (OpenAI SDK: baseURL: "$BRIDLE_URL/v1")
  DATABASE_URL=$DATABASE_URL
  BRIDLE_MOCK_URL=$BRIDLE_MOCK_URL
  BRIDLE_DEV_KEY_SHA256=$BRIDLE_DEV_KEY_SHA256
  dev key:         $DEV_KEY   (var/dev-key)
  admin key:       $DEV_ADMIN_KEY   (var/dev-admin-key; /v1/bridle/admin/ only)
  logs:            var/log/bridle.log, var/log/mock.log, var/log/postgres.log

Try it:
  curl $BRIDLE_URL/v1/chat/completions -H "Authorization: Bearer $DEV_KEY" -H "Content-Type: application/json" -d '$body'

Streaming:
  curl -N $BRIDLE_URL/v1/chat/completions -H "Authorization: Bearer $DEV_KEY" -H "Content-Type: application/json" -d '$sbody'

Embeddings (the mock's vectors are deterministic: the same text, the same vector):
  curl $BRIDLE_URL/v1/embeddings -H "Authorization: Bearer $DEV_KEY" -H "Content-Type: application/json" -d '$ebody'

The response cache is on: send the first curl twice with "temperature":0 and
compare the x-bridle-cache and x-bridle-cost-usd headers.

Metrics (Prometheus text format, loopback only):
  curl $BRIDLE_URL/metrics

Admin API (keys and teams in PostgreSQL; the CLI is 'DATABASE_URL=… build/bridle keys --help'):
  ADMIN=$DEV_ADMIN_KEY
  curl -H "Authorization: Bearer \$ADMIN" $BRIDLE_URL/v1/bridle/admin/keys
  curl -H "Authorization: Bearer \$ADMIN" -H "Content-Type: application/json" -d '{"team":"dev","budget_daily_usd":5}' $BRIDLE_URL/v1/bridle/admin/keys

Every model answers from the mock provider. Set OPENAI_API_KEY, ANTHROPIC_API_KEY
or GEMINI_API_KEY before 'make run' to send the gpt-*, claude-* or gemini-*
models (and text-embedding-3-small) to the real provider instead (then
'make stop && make run').

Stop everything: make stop
INFO
}

# --- commands -------------------------------------------------------------------

cmd_start() {
  mkdir -p "$VAR" "$LOG" "$RUN"
  start_pg
  start_mock
  start_bridle
  print_info
}

cmd_stop() {
  mkdir -p "$RUN"
  stop_pid bridle "bridle serve"
  stop_pid mock bridle-mock
  if [[ -d $PGDATA ]]; then stop_pg; else say "postgres: not running"; fi
}

cmd_status() {
  local pid rc=0
  if pid=$(live_pid bridle "bridle serve"); then
    say "bridle:   running (pid $pid, $(env_get BRIDLE_URL)/v1)"
  else
    say "bridle:   stopped"; rc=3
  fi
  if pid=$(live_pid mock bridle-mock); then
    say "mock:     running (pid $pid, $(env_get BRIDLE_MOCK_URL))"
  else
    say "mock:     stopped"; rc=3
  fi
  if pid=$(pg_pid); then
    say "postgres: running (pid $pid, $(env_get DATABASE_URL))"
  else
    say "postgres: stopped"; rc=3
  fi
  return $rc
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
