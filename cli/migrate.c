/* `bridle migrate`: applies or lists the embedded migrations (db/migrate.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "db/migrate.h"

static int migrate_usage(FILE *f, int code)
{
    fprintf(f,
            "usage: bridle migrate [--database-url URL] [--dry-run | --status]\n"
            "  applies the embedded migrations in order (env DATABASE_URL when no --database-url)\n"
            "  --dry-run   list what would be applied, change nothing\n"
            "  --status    list every migration and whether it is applied\n");
    return code;
}

int migrate_main(int argc, char **argv)
{
    const char *url = getenv("DATABASE_URL");
    bool dry_run = false, status = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--database-url") == 0 && i + 1 < argc)
            url = argv[++i];
        else if (strncmp(argv[i], "--database-url=", 15) == 0)
            url = argv[i] + 15;
        else if (strcmp(argv[i], "--dry-run") == 0)
            dry_run = true;
        else if (strcmp(argv[i], "--status") == 0)
            status = true;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return migrate_usage(stdout, 0);
        else {
            fprintf(stderr, "bridle migrate: unexpected argument \"%s\"\n", argv[i]);
            return migrate_usage(stderr, 2);
        }
    }
    if (!url || !*url) {
        fprintf(stderr,
                "bridle migrate: no database: pass --database-url URL or set DATABASE_URL\n");
        return 2;
    }
    char err[2048];
    int rc = status ? migrate_print_status(url, err, sizeof err)
                    : migrate_apply(url, dry_run, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "bridle migrate: %s\n", err);
        return 1;
    }
    return 0;
}
