/* status.c — `ainode status`: what the store holds, as a table or JSON. */
#include "config/config.h"
#include "service/service.h"
#include "storage/storage.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/stat.h>

static int add_study_json(void *ud, const struct storage_study *s)
{
    json_t *studies = ud;
    char when[40];
    service_format_time(s->last_received_ms, when, sizeof when);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s}", "study_uid", s->study_uid, "state",
                          s->state, "instances", (json_int_t)s->instances, "series",
                          (json_int_t)s->series, "last_received", when);
    if (!o)
        return 1;
    if (s->completed_ms) {
        service_format_time(s->completed_ms, when, sizeof when);
        json_object_set_new(o, "completed", json_string(when));
    }
    return json_array_append_new(studies, o);
}

static int print_study_row(void *ud, const struct storage_study *s)
{
    int *count = ud;
    char when[40];
    service_format_time(s->last_received_ms, when, sizeof when);
    printf("%-64s  %-9s  %6lld  %9lld  %s\n", s->study_uid, s->state, (long long)s->series,
           (long long)s->instances, when);
    (*count)++;
    return 0;
}

int status_print(const struct config *cfg, int json)
{
    struct storage *st = NULL;
    char err[512] = "";
    char db[4096];
    struct stat sb;
    snprintf(db, sizeof db, "%s/ainode.db", cfg->node.data_dir);
    /* A node that never ran has an empty store, which is not an error. */
    int exists = stat(db, &sb) == 0;
    if (exists && storage_open_readonly(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (json) {
        json_t *root = json_object();
        json_t *studies = json_array();
        json_object_set_new(root, "studies", studies);
        if (st && storage_foreach_study(st, add_study_json, studies) != STORAGE_OK)
            rc = 1;
        if (rc == 0) {
            json_dumpf(root, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
        }
        json_decref(root);
    } else {
        int count = 0;
        printf("%-64s  %-9s  %6s  %9s  %s\n", "STUDY INSTANCE UID", "STATE", "SERIES",
               "INSTANCES", "LAST RECEIVED (UTC)");
        if (st && storage_foreach_study(st, print_study_row, &count) != STORAGE_OK)
            rc = 1;
        printf("%d stud%s\n", count, count == 1 ? "y" : "ies");
    }
    if (rc)
        fprintf(stderr, "ainode: cannot read the database in %s\n", cfg->node.data_dir);
    storage_close(st);
    return rc;
}
