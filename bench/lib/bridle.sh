# shellcheck shell=bash
# What both bridle bench targets share (bench/targets/bridle.sh and
# bridle-ledger.sh source it).

# What bench/targets/bridle-limits.sh and bench/run.sh's callgrind "limits"
# run add to the bench key: budgets and rate limits far above what a run
# spends, so that nothing is refused and only their cost is measured.
BRIDLE_BENCH_LIMITS_EXTRA=', "budget_daily_usd": 1000000, "budget_weekly_usd": 2000000, "budget_monthly_usd": 5000000, "rpm": 100000000, "tokens_per_hour": 100000000000, "usd_per_hour": 1000000'

# Writes bridle's bench config to FILE: listen on PORT, one openai-kind
# provider at the harness's mock, model gpt-4o-mini, one key (SHA-256 of
# $BENCH_KEY). EXTRA: more top-level members, e.g. a "database" section,
# each followed by a comma. BRIDLE_BENCH_KEY_EXTRA: more members of the key
# (e.g. a budget and a rate limit: bench/targets/bridle-limits.sh), each
# preceded by a comma.
bench_bridle_config() { # FILE PORT [EXTRA]
  local sha
  sha=$(printf '%s' "$BENCH_KEY" | sha256sum | cut -d' ' -f1)
  cat >"$1" <<CONF
{
  ${3:-}
  "listen": "127.0.0.1:$2",
  "log_level": "${BRIDLE_BENCH_LOG_LEVEL:-warn}",
  "limits": { "max_connections": 16384 },
  "providers": {
    "upstream": { "kind": "openai", "base_url": "$UPSTREAM_BASE_URL", "api_key": "sk-bench" }
  },
  "models": { "gpt-4o-mini": { "provider": "upstream" } },
  "keys": [ { "id": "bench", "sha256": "$sha", "team": "bench"${BRIDLE_BENCH_KEY_EXTRA:-} } ]
}
CONF
}

# Fails, naming NAME, unless exactly one process listens on PORT. bridle
# refuses an address in use, but a run measured against a port something
# else shares would be wrong silently, so the bench checks for itself.
bench_bridle_alone() { # NAME PORT
  [ "$(ss -Hltn "sport = :$2" | wc -l)" -eq 1 ] ||
    { echo "$1: another process also listens on port $2" >&2; return 1; }
}
