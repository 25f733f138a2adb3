/*
 * fuzz_config — the configuration loader: YAML, the key tables, the rules
 * language and the model manifests it names. A configuration file is an
 * admin's, but `reload` and `check-config` read whatever is in it, and a
 * bad byte must give a problem line, never a crash.
 */
#include "fuzz.h"

#include "config/config.h"

static void ignore(void *ud, const char *line)
{
    (void)ud;
    (void)line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_file(data, size, path);
    if (fd < 0)
        return 0;
    struct config *cfg = NULL;
    if (config_load(path, &cfg, ignore, NULL) == 0)
        config_unref(cfg);
    close(fd);
    return 0;
}
