/* `bridle cost`: spend reports over the usage ledger (usage_events_v, made by
 * migrations/0001_usage_events.sql), for people (aligned tables) and scripts
 * (--json).
 *
 *   bridle cost summary   [--period day|week|month] [--from TS] [--to TS]
 *   bridle cost breakdown --by model|provider|key|team|agent|task|feature|user|tier|day [...]
 *   bridle cost top       [--limit N] [...]
 *   common: [--json] [--database-url URL]  (env DATABASE_URL)
 *
 * A period is the window ending now: day = last 24 hours, week = last 7 days,
 * month = last 30 days; --from / --to (any PostgreSQL timestamptz literal)
 * override either end. Rows count when from <= ts < to.
 *
 * Money is summed by PostgreSQL over bigint pico-dollars (exact numeric) and
 * printed here from the integer's digits: no floating point anywhere. JSON
 * carries dollars with all 12 decimals ("cost_usd": 0.012500000000) and the
 * exact integer ("cost_pusd": 12500000000); tables round to 6 decimals.
 *
 * Blocking libpq: a CLI, never on the serving path. */
#ifndef BRIDLE_REPORT_H
#define BRIDLE_REPORT_H

#include <stdbool.h>
#include <stddef.h>

/* Exit status: 0 done, 1 failed (database unreachable, schema missing, bad
 * query), 2 usage. */
int cost_main(int argc, char **argv);

/* Formats an integer amount of pico-dollars given as decimal digits (any
 * size, optional sign: sums can exceed int64) as dollars with `decimals`
 * (0..12) decimals, rounding half away from zero; `group` adds thousands
 * separators. "-12345678901234", 6, true -> "-12.345679". */
void report_format_pusd(const char *pusd, int decimals, bool group, char *out, size_t outlen);

#endif
