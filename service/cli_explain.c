/*
 * cli_explain.c — `ainode explain`: for each series, every rule in order, which
 * of its conditions held or failed, and what the node would do
 * (rules_explain).
 *
 * The series come from the store (a study UID) or from DICOM files read
 * directly. Files are read for every attribute of common/attr.def, so a
 * series of files is seen as the store would index it; the calling AE,
 * called AE and source address of files are unknown, so conditions on
 * them do not hold.
 */
#include "service/cli.h"

#include "common/attr.h"
#include "config/config.h"
#include "dicom/image.h"
#include "rules/rules.h"
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One series of the files given: the values of its first instance (by
 * InstanceNumber, as the store picks them) and how many files it has. */
struct file_series {
    char *values[ATTR_COUNT];
    double first;                 /* InstanceNumber of the file VALUES came from */
    struct attr_series row;
};

static double instance_number(char *const *values)
{
    const char *s = values[ATTR_INSTANCE_NUMBER];
    return s ? strtod(s, NULL) : 1e300; /* without one: after those that have it */
}

/* Reads the attributes of the files given and explains each series. */
static int explain_files(const struct config *cfg, char *const *paths, int n)
{
    const char *keywords[ATTR_COUNT];
    for (int i = 0; i < ATTR_COUNT; i++)
        keywords[i] = attr_table[i].keyword;
    struct file_series *series = NULL;
    size_t ns = 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char *values[ATTR_COUNT];
        char err[256];
        if (dicom_read_values(paths[i], keywords, ATTR_COUNT, values, NULL, err, sizeof err) !=
            0) {
            fprintf(stderr, "ainode: %s\n", err);
            rc = 1;
            continue;
        }
        const char *uid = values[ATTR_SERIES_INSTANCE_UID];
        size_t s = 0;
        while (s < ns && !(uid ? series[s].values[ATTR_SERIES_INSTANCE_UID] &&
                                     !strcmp(series[s].values[ATTR_SERIES_INSTANCE_UID], uid)
                               : !series[s].values[ATTR_SERIES_INSTANCE_UID]))
            s++;
        if (s == ns) {
            struct file_series *a = realloc(series, (ns + 1) * sizeof *a);
            if (!a) {
                fprintf(stderr, "ainode: out of memory\n");
                dicom_free_values(values, ATTR_COUNT);
                rc = 1;
                break;
            }
            series = a;
            memset(&series[ns], 0, sizeof series[ns]);
            memcpy(series[ns].values, values, sizeof values);
            series[ns].first = instance_number(values);
            ns++;
        } else if (instance_number(values) < series[s].first) {
            dicom_free_values(series[s].values, ATTR_COUNT);
            memcpy(series[s].values, values, sizeof values);
            series[s].first = instance_number(values);
        } else {
            dicom_free_values(values, ATTR_COUNT);
        }
        series[s].row.instances++;
    }
    for (size_t s = 0; s < ns; s++) {
        for (int i = 0; i < ATTR_COUNT; i++)
            series[s].row.value[i] = series[s].values[i];
        rules_explain(cfg, &series[s].row, stdout);
        dicom_free_values(series[s].values, ATTR_COUNT);
    }
    free(series);
    return rc;
}

/* The series of a study in the store, as the planner sees them. */
static int explain_study(const struct config *cfg, const char *study_uid)
{
    struct storage *st = NULL;
    char err[512] = "";
    if (storage_open_readonly(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    struct attr_series *rows = NULL;
    size_t n = 0;
    int rc = storage_study_series(st, study_uid, &rows, &n);
    storage_close(st);
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot read the store in %s\n", cfg->node.data_dir);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        rules_explain(cfg, &rows[i], stdout);
    storage_series_free(rows, n);
    if (n == 0) {
        fprintf(stderr, "ainode: no study %s in the store\n", study_uid);
        return CLI_EXIT_NOT_FOUND;
    }
    return 0;
}

int cli_explain(const struct config *cfg, char *const *args, int n)
{
    struct stat sb;
    if (n == 1 && stat(args[0], &sb) != 0) {
        if (!storage_uid_valid(args[0])) {
            fprintf(stderr, "ainode: '%s' is neither a file nor a study UID\n", args[0]);
            return 2;
        }
        return explain_study(cfg, args[0]);
    }
    return explain_files(cfg, args, n);
}
