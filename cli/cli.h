/* The command-line tools: each `bridle CMD` other than `serve`
 * (server/serve.h) is one function here, called by cli/main.c with the
 * whole argv (argv[1] is the command). Each returns the process's exit
 * status: 0 done, 1 failed, 2 usage. They may block: none runs on the
 * serving path. */
#ifndef BRIDLE_CLI_H
#define BRIDLE_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* bridle route --config FILE --request FILE.json [--header 'x-bridle-task: classify'] ...
 * prints the plan for one request without calling anyone (cli/route.c). */
int route_main(int argc, char **argv);
/* bridle simulate --config FILE --workload FILE.jsonl [--baseline MODEL] [--json]
 * projects a workload's cost per day and month under the policy vs the
 * baseline (cli/route.c). */
int simulate_main(int argc, char **argv);

/* bridle migrate [--database-url URL] [--dry-run] [--status] (env
 * DATABASE_URL): cli/migrate.c. */
int migrate_main(int argc, char **argv);

/* bridle ledger rollup [--limit N] [--json] | status [--json] (env
 * DATABASE_URL): the rollup step of migration 0006 by hand (cli/ledger.c). */
int ledger_main(int argc, char **argv);

/* bridle cost summary|breakdown|top: spend reports over the usage ledger
 * (cli/cost.c, which says more). */
int cost_main(int argc, char **argv);

/* Formats an integer amount of pico-dollars given as decimal digits (any
 * size, optional sign: sums can exceed int64) as dollars with `decimals`
 * (0..12) decimals, rounding half away from zero; `group` adds thousands
 * separators. "-12345678901234", 6, true -> "-12.345679". */
void report_format_pusd(const char *pusd, int decimals, bool group, char *out, size_t outlen);

/* bridle batch submit FILE.jsonl [--wait] | status ID | results ID: the
 * Batch API of a running gateway (cli/batch.c). */
int batch_main(int argc, char **argv);

/* bridle check-config FILE, new-key, hash-key KEY: cli/keys.c. */
int check_config_main(int argc, char **argv);
int new_key_main(int argc, char **argv);
int hash_key_main(int argc, char **argv);
/* bridle keys create|list|revoke, bridle teams set|list (DATABASE_URL):
 * cli/keys.c. */
int keys_main(int argc, char **argv);
int teams_main(int argc, char **argv);

#endif
