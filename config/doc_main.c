/*
 * ainode-config-doc — writes the configuration reference generated from
 * the key tables: to FILE, to stdout without one, or with --check compares
 * FILE with it and exits 1 when they differ (the test that keeps
 * docs/configuration.md in step).
 */
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *generate(size_t *len)
{
    char *buf = NULL;
    FILE *m = open_memstream(&buf, len);
    if (!m)
        return NULL;
    config_write_reference(m);
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n == cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    size_t len;
    char *text = generate(&len);
    if (!text) {
        fprintf(stderr, "ainode-config-doc: out of memory\n");
        return 2;
    }
    int rc = 0;
    if (argc == 3 && !strcmp(argv[1], "--check")) {
        size_t have_len = 0;
        char *have = slurp(argv[2], &have_len);
        if (!have) {
            fprintf(stderr, "ainode-config-doc: cannot read %s\n", argv[2]);
            rc = 2;
        } else if (have_len != len || memcmp(have, text, len)) {
            fprintf(stderr,
                    "ainode-config-doc: %s is not what the key tables say; run "
                    "`cmake --build build --target config-doc` and commit the result\n",
                    argv[2]);
            rc = 1;
        }
        free(have);
    } else if (argc == 2) {
        FILE *f = fopen(argv[1], "wb");
        if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "ainode-config-doc: cannot write %s\n", argv[1]);
            rc = 2;
        }
    } else if (argc == 1) {
        fwrite(text, 1, len, stdout);
    } else {
        fprintf(stderr, "usage: ainode-config-doc [FILE | --check FILE]\n");
        rc = 2;
    }
    free(text);
    return rc;
}
