/* bridle check-config FILE, new-key, hash-key KEY. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "lib/util.h"
#include "router/config.h"

int check_config_main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bridle %s ARG\n", argv[1]);
        return 2;
    }
    char err[1024];
    bridle_config *c = config_load(argv[2], err, sizeof err);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int enabled = 0;
    for (int i = 0; i < config_n_models(c); i++)
        enabled += config_model(c, i)->enabled;
    printf("%s: ok (%d providers, %d models of which %d enabled, %d routes, %d keys)\n", argv[2],
           config_n_providers(c), config_n_models(c), enabled, config_n_routes(c),
           config_n_keys(c));
    config_free(c);
    return 0;
}

int new_key_main(int argc, char **argv)
{
    char hex[65], key[70], sha[65];
    if (!util_random_hex(hex, 24)) {
        fprintf(stderr, "bridle: cannot read random bytes\n");
        return 1;
    }
    snprintf(key, sizeof key, "bk-%s", hex);
    util_sha256_hex(key, strlen(key), sha);
    printf("key: %s\nsha256: %s\n", key, sha);
    return 0;
}

int hash_key_main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bridle %s ARG\n", argv[1]);
        return 2;
    }
    char sha[65];
    util_sha256_hex(argv[2], strlen(argv[2]), sha);
    printf("%s\n", sha);
    return 0;
}
