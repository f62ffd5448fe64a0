/* bridle: the gateway and its subcommands.
 *
 *   bridle serve --config FILE [--listen HOST:PORT]
 *   bridle check-config FILE
 *   bridle new-key
 *   bridle hash-key KEY
 *   bridle keys create|list|revoke, bridle teams set|list             (cli/keys.c)
 *   bridle version
 *   bridle migrate [--database-url URL] [--dry-run | --status]     (cli/migrate.c)
 *   bridle cost summary|breakdown|top|alert [...]                (cli/cost.c)
 *   bridle route --config FILE --request FILE.json [...]         (cli/route.c)
 *   bridle simulate --config FILE --workload FILE.jsonl [...]    (cli/route.c)
 *   bridle batch submit FILE.jsonl [--wait] | status ID | results ID (cli/batch.c) */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "server/serve.h"

static int usage(FILE *f, int code)
{
    fprintf(
        f,
        "usage:\n"
        "  bridle serve --config FILE [--listen HOST:PORT]   (env BRIDLE_CONFIG, BRIDLE_LISTEN)\n"
        "  bridle check-config FILE\n"
        "  bridle new-key [--admin]                         print a new client (or admin) key and "
        "its sha256\n"
        "  bridle hash-key KEY                              print the sha256 of a key\n"
        "  bridle keys create --team TEAM [...] | list | revoke ID   keys in PostgreSQL\n"
        "  bridle teams set NAME [--budget-daily USD ...] | list     (bridle keys --help)\n"
        "  bridle version\n"
        "  bridle migrate [--database-url URL] [--dry-run | --status]   (env DATABASE_URL)\n"
        "  bridle ledger rollup [--limit N] [--json] | status   move pending usage into the "
        "rollups\n"
        "  bridle cost summary|breakdown|top [--period day|week|month] [--json] ...\n"
        "  bridle cost alert [--threshold 0.75] [--json]   budgets near or over their limit\n"
        "                                                   (bridle cost --help)\n"
        "  bridle route --config FILE --request FILE.json [--header 'x-bridle-task: T'] [--json]\n"
        "                                                   the routing decision, no calls\n"
        "  bridle simulate --config FILE --workload FILE.jsonl [--baseline MODEL] [--json]\n"
        "                                                   projected cost per day/month vs "
        "baseline\n"
        "  bridle batch submit FILE.jsonl [--wait] | status ID | results ID [--errors]\n"
        "                                                   a running gateway's Batch API "
        "(BRIDLE_URL, BRIDLE_KEY)\n");
    return code;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage(stderr, 2);
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) return serve_main(argc, argv);
    if (strcmp(cmd, "check-config") == 0) return check_config_main(argc, argv);
    if (strcmp(cmd, "new-key") == 0) return new_key_main(argc, argv);
    if (strcmp(cmd, "hash-key") == 0) return hash_key_main(argc, argv);
    if (strcmp(cmd, "keys") == 0) return keys_main(argc, argv);
    if (strcmp(cmd, "teams") == 0) return teams_main(argc, argv);
    if (strcmp(cmd, "migrate") == 0) return migrate_main(argc, argv);
    if (strcmp(cmd, "ledger") == 0) return ledger_main(argc, argv);
    if (strcmp(cmd, "cost") == 0) return cost_main(argc, argv);
    if (strcmp(cmd, "route") == 0) return route_main(argc, argv);
    if (strcmp(cmd, "simulate") == 0) return simulate_main(argc, argv);
    if (strcmp(cmd, "batch") == 0) return batch_main(argc, argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("bridle %s\n", BRIDLE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout, 0);
    fprintf(stderr, "bridle: unknown command \"%s\"\n", cmd);
    return usage(stderr, 2);
}
