/*
 * explain.c — `ainode explain`: for each series, every rule in order, which
 * of its conditions held or failed, and what the node would do.
 *
 * The series come from the store (a study UID) or from DICOM files read
 * directly (the calling AE, called AE and source address of files are
 * unknown, so conditions on them do not hold).
 */
#include "common/attr.h"
#include "config/config.h"
#include "dicom/dicom.h"
#include "service/service.h"
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One series' attributes, as the planner sees them: name/value pairs. */
struct series_attrs {
    char *series_uid;
    char *names[64];
    char *values[64];
    int n;
};

static void attrs_set(struct series_attrs *a, const char *name, const char *value)
{
    if (!value || a->n >= 64)
        return;
    a->names[a->n] = strdup(name);
    a->values[a->n] = strdup(value);
    a->n++;
}

static void attrs_free(struct series_attrs *a)
{
    for (int i = 0; i < a->n; i++) {
        free(a->names[i]);
        free(a->values[i]);
    }
    free(a->series_uid);
    memset(a, 0, sizeof *a);
}

static const char *attrs_get(void *ud, const char *attribute)
{
    const struct series_attrs *a = ud;
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->names[i], attribute))
            return a->values[i];
    return NULL;
}

static void on_trace(void *ud, const struct config_rule *rule, const char *where, int held,
                     const char *value)
{
    (void)ud;
    (void)rule;
    printf("      %-40s %-6s (series value: %s)\n", where, held ? "held" : "failed",
           value ? value : "absent");
}

static void print_list(const char *what, char *const *names, size_t n)
{
    if (!n)
        return;
    printf("      %s:", what);
    for (size_t i = 0; i < n; i++)
        printf(" %s", names[i]);
    printf("\n");
}

/* Prints every rule in order for one series read through GET. */
static void explain_series(const struct config *cfg, const char *series_uid, rules_get_fn get,
                           void *ud)
{
    const char *modality = get(ud, "Modality"), *instances = get(ud, "instances");
    printf("series %s (%s, %s instance%s)\n", series_uid, modality ? modality : "no modality",
           instances ? instances : "?", instances && !strcmp(instances, "1") ? "" : "s");
    int decided = 0;
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct config_rule *r = &cfg->rules[i];
        if (decided) {
            printf("  rule %s: not evaluated (an earlier rule matched and does not continue)\n",
                   r->name);
            continue;
        }
        printf("  rule %s:\n", r->name);
        int m = rules_match(r, get, ud, on_trace, NULL);
        printf("    %s\n", m ? "MATCHES" : "does not match");
        if (!m)
            continue;
        print_list("runs", r->run, r->n_run);
        print_list("sends results to", r->send_to, r->n_send_to);
        print_list("forwards to", r->forward_to, r->n_forward_to);
        if (!r->continues)
            decided = 1;
    }
    if (!decided && cfg->n_rules)
        printf("  -> %s\n", "no rule decided: the series is recorded as unmatched");
}

/* Reads the attributes of the files given and explains each series. */
static int explain_files(const struct config *cfg, char *const *paths, int n)
{
    struct series_attrs series[64];
    int ns = 0, rc = 0;
    const char *const keywords[] = {"SeriesInstanceUID", "Modality", "BodyPartExamined",
                                    "StudyDescription", "SeriesDescription", "ProtocolName",
                                    "Manufacturer", "ImageType", "SliceThickness", "Rows",
                                    "Columns", "NumberOfFrames", "SOPClassUID"};
    const size_t nk = sizeof keywords / sizeof keywords[0];
    int counts[64] = {0};
    for (int i = 0; i < n; i++) {
        char *values[sizeof keywords / sizeof keywords[0]];
        char err[256];
        if (dicom_read_values(paths[i], keywords, nk, values, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "ainode: %s\n", err);
            rc = 1;
            continue;
        }
        const char *uid = values[0] ? values[0] : "(no series UID)";
        int s = 0;
        while (s < ns && strcmp(series[s].series_uid, uid))
            s++;
        if (s == ns && ns < 64) {
            memset(&series[ns], 0, sizeof series[ns]);
            series[ns].series_uid = strdup(uid);
            for (size_t k = 1; k < nk; k++)
                attrs_set(&series[ns], keywords[k], values[k]);
            ns++;
        }
        if (s < 64)
            counts[s]++;
        dicom_free_values(values, nk);
    }
    for (int s = 0; s < ns; s++) {
        char count[16];
        snprintf(count, sizeof count, "%d", counts[s]);
        attrs_set(&series[s], "instances", count);
        explain_series(cfg, series[s].series_uid, attrs_get, &series[s]);
        attrs_free(&series[s]);
    }
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
    for (size_t i = 0; i < n; i++) {
        struct rules_series rs = {.series = &rows[i]};
        explain_series(cfg, rows[i].value[ATTR_SERIES_INSTANCE_UID], rules_series_get, &rs);
    }
    storage_series_free(rows, n);
    if (n == 0) {
        fprintf(stderr, "ainode: no study %s in the store\n", study_uid);
        return 1;
    }
    return 0;
}

int explain_command(const struct config *cfg, char *const *args, int n)
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
