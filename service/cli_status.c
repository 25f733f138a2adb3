/* cli_status.c — `ainode status` (what the store holds, as a table or
 * JSON), `ainode retry` (dead-lettered sends or a quarantined job back to
 * the queue) and
 * `ainode reload` (the running node re-reads its configuration). */
#include "service/cli.h"

#include "common/clock.h"
#include "config/config.h"
#include "storage/storage.h"

#include <errno.h>
#include <signal.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int add_study_json(void *ud, const struct storage_study *s)
{
    json_t *studies = ud;
    char when[40];
    clock_format_time(s->last_received_ms, when, sizeof when);
    /* "held": why it is held back from completion (null: it is not); with
     * state complete, it was processed without all its instances. */
    json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:o}", "id", (json_int_t)s->id,
                          "study_uid", s->study_uid, "state", s->state, "instances",
                          (json_int_t)s->instances, "series", (json_int_t)s->series,
                          "last_received", when, "held",
                          s->held ? json_string(s->held) : json_null());
    if (!o)
        return 1;
    if (s->completed_ms) {
        clock_format_time(s->completed_ms, when, sizeof when);
        json_object_set_new(o, "completed", json_string(when));
    }
    return json_array_append_new(studies, o);
}

static int add_job_json(void *ud, const struct storage_job_row *j)
{
    json_t *jobs = ud;
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "id", (json_int_t)j->id, "study_uid",
                          j->study_uid, "series_uid", j->series_uid, "model", j->model, "state",
                          j->state, "attempts", (json_int_t)j->attempts);
    if (!o)
        return 1;
    json_t *series = j->series ? json_loads(j->series, 0, NULL) : NULL;
    json_object_set_new(o, "series", series ? series : json_array());
    /* A not-applicable job did not fail: its reason is no error. */
    int na = !strcmp(j->state, STORAGE_JOB_NOT_APPLICABLE);
    json_object_set_new(o, "error", j->error && !na ? json_string(j->error) : json_null());
    json_object_set_new(o, "reason", j->error && na ? json_string(j->error) : json_null());
    json_object_set_new(o, "model_sha256",
                        j->model_sha256 ? json_string(j->model_sha256) : json_null());
    json_object_set_new(o, "manifest_sha256",
                        j->manifest_sha256 ? json_string(j->manifest_sha256) : json_null());
    json_object_set_new(o, "stage", j->stage ? json_string(j->stage) : json_null());
    /* Run time of the last attempt: so far while running, in total once ended. */
    json_t *secs = json_null();
    if (j->started_ms && j->finished_ms)
        secs = json_real((j->finished_ms - j->started_ms) / 1000.0);
    else if (j->started_ms)
        secs = json_real((clock_now_ms() - j->started_ms) / 1000.0);
    json_object_set_new(o, "seconds", secs);
    char when[40];
    if (j->started_ms) {
        clock_format_time(j->started_ms, when, sizeof when);
        json_object_set_new(o, "started", json_string(when));
    }
    if (j->finished_ms) {
        clock_format_time(j->finished_ms, when, sizeof when);
        json_object_set_new(o, "finished", json_string(when));
    }
    json_object_set_new(o, "result", j->result ? json_string(j->result) : json_null());
    json_t *summary = j->summary ? json_loads(j->summary, 0, NULL) : NULL;
    /* A job of an encoder group names the group and the encoder's forwards. */
    json_t *group = json_object_get(summary, "encoder");
    if (group) {
        json_object_set(o, "encoder", group);
        json_object_del(summary, "encoder");
    }
    /* A classification's summary holds findings (each with a probability),
     * a regression's values, a detection's classes with their boxes,
     * an encoder's its features; a segmentation's, labels. */
    const char *key = "labels", *k;
    json_t *v;
    json_object_foreach(summary, k, v) {
        if (json_object_get(v, "probability"))
            key = "findings";
        else if (json_object_get(v, "value"))
            key = "values";
        else if (json_object_get(v, "best_score"))
            key = "detections";
        break;
    }
    if (json_object_get(summary, "features"))
        key = "embedding";
    json_object_set_new(o, key, summary ? summary : json_null());
    return json_array_append_new(jobs, o);
}

static int print_job_row(void *ud, const struct storage_job_row *j)
{
    int *count = ud;
    if (*count == 0)
        printf("\n%-6s  %-24s  %-14s  %8s  %s\n", "JOB", "MODEL", "STATE", "SECONDS",
               "ERROR OR REASON");
    double secs = j->started_ms && j->finished_ms ? (j->finished_ms - j->started_ms) / 1000.0
                  : j->started_ms                  ? (clock_now_ms() - j->started_ms) / 1000.0
                                                   : 0;
    printf("%-6lld  %-24s  %-14s  %8.1f  %s\n", (long long)j->id, j->model, j->state, secs,
           j->error ? j->error : "");
    (*count)++;
    return 0;
}

static int add_outbox_json(void *ud, const struct storage_outbox_item *it)
{
    json_t *items = ud;
    char when[40];
    clock_format_time(it->next_attempt_ms, when, sizeof when);
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i}", "id", (json_int_t)it->id,
                          "destination", it->destination, "kind", it->kind, "study_uid",
                          it->study_uid, "sop_instance_uid", it->sop_instance_uid, "state",
                          it->state, "attempts", it->attempts);
    if (!o)
        return 1;
    json_object_set_new(o, "next_attempt",
                        strcmp(it->state, "pending") ? json_null() : json_string(when));
    json_object_set_new(o, "error", it->error ? json_string(it->error) : json_null());
    if (it->sent_ms) {
        clock_format_time(it->sent_ms, when, sizeof when);
        json_object_set_new(o, "sent", json_string(when));
    }
    return json_array_append_new(items, o);
}

static int print_outbox_row(void *ud, const struct storage_outbox_item *it)
{
    int *count = ud;
    if (*count == 0)
        printf("\n%-6s  %-16s  %-4s  %-8s  %8s  %s\n", "ITEM", "DESTINATION", "KIND", "STATE",
               "ATTEMPTS", "ERROR");
    printf("%-6lld  %-16s  %-4s  %-8s  %8d  %s\n", (long long)it->id, it->destination, it->kind,
           it->state, it->attempts, it->error && strcmp(it->state, "sent") ? it->error : "");
    (*count)++;
    return 0;
}

int cli_reload(const struct config *cfg)
{
    char pidfile[4096];
    snprintf(pidfile, sizeof pidfile, "%s/ainode.pid", cfg->node.data_dir);
    FILE *f = fopen(pidfile, "r");
    long pid = 0;
    if (!f || fscanf(f, "%ld", &pid) != 1 || pid <= 0) {
        if (f)
            fclose(f);
        fprintf(stderr, "ainode: no node is serving %s (no %s)\n", cfg->node.data_dir, pidfile);
        return 1;
    }
    fclose(f);
    if (kill((pid_t)pid, SIGHUP) != 0) {
        fprintf(stderr, "ainode: cannot signal the node (pid %ld): %s\n", pid, strerror(errno));
        return 1;
    }
    printf("%s: OK; reload requested from the node (pid %ld): its log tells the outcome\n",
           cfg->path, pid);
    return 0;
}

int cli_retry(const struct config *cfg, int64_t id)
{
    struct storage *st = NULL;
    char err[512] = "";
    if (storage_open_admin(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    int n = 0;
    int rc = storage_outbox_retry(st, id, clock_now_ms(), &n);
    storage_close(st);
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot update the outbox in %s\n", cfg->node.data_dir);
        return 1;
    }
    if (id >= 0 && n == 0) {
        fprintf(stderr, "ainode: outbox item %lld is not a failed one\n", (long long)id);
        return 1;
    }
    printf("%d item%s queued again\n", n, n == 1 ? "" : "s");
    return 0;
}

int cli_retry_job(const struct config *cfg, int64_t id)
{
    struct storage *st = NULL;
    char err[512] = "";
    if (storage_open_admin(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    int rc = storage_job_retry(st, id);
    storage_close(st);
    if (rc == STORAGE_ENOTFOUND) {
        fprintf(stderr, "ainode: job %lld is not a quarantined one\n", (long long)id);
        return 1;
    }
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot update the jobs in %s\n", cfg->node.data_dir);
        return 1;
    }
    printf("job %lld queued again\n", (long long)id);
    return 0;
}

static int add_unmatched_json(void *ud, const char *study_uid, const char *series_uid,
                              const char *modality)
{
    return json_array_append_new(ud, json_pack("{s:s, s:s, s:s}", "study_uid", study_uid,
                                                "series_uid", series_uid, "modality",
                                                modality));
}

static int print_unmatched_row(void *ud, const char *study_uid, const char *series_uid,
                               const char *modality)
{
    int *count = ud;
    (void)study_uid;
    if (*count == 0)
        printf("\nseries no rule matched:\n");
    printf("  %-64s  %s\n", series_uid, modality);
    (*count)++;
    return 0;
}

static int print_study_row(void *ud, const struct storage_study *s)
{
    int *count = ud;
    char when[40];
    clock_format_time(s->last_received_ms, when, sizeof when);
    /* A held study shows as such: "held" while it waits for its refused
     * instances, "incomplete" once processed without them. */
    const char *state = !s->held                          ? s->state
                        : !strcmp(s->state, "receiving") ? "held"
                                                          : "incomplete";
    printf("%-6lld  %-64s  %-10s  %6lld  %9lld  %s%s%s\n", (long long)s->id, s->study_uid, state,
           (long long)s->series, (long long)s->instances, when, s->held ? "  " : "",
           s->held ? s->held : "");
    (*count)++;
    return 0;
}

int cli_status(const struct config *cfg, int json)
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
        json_t *jobs = json_array();
        json_object_set_new(root, "studies", studies);
        json_t *outbox = json_array(), *unmatched = json_array();
        json_object_set_new(root, "jobs", jobs);
        json_object_set_new(root, "outbox", outbox);
        json_object_set_new(root, "unmatched_series", unmatched);
        if (st && (storage_foreach_study(st, add_study_json, studies) != STORAGE_OK ||
                   storage_foreach_job(st, add_job_json, jobs) != STORAGE_OK ||
                   storage_foreach_outbox(st, add_outbox_json, outbox) != STORAGE_OK ||
                   storage_foreach_unmatched(st, add_unmatched_json, unmatched) != STORAGE_OK))
            rc = 1;
        if (rc == 0) {
            json_dumpf(root, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
        }
        json_decref(root);
    } else {
        int count = 0;
        printf("%-6s  %-64s  %-10s  %6s  %9s  %s\n", "STUDY", "STUDY INSTANCE UID", "STATE",
               "SERIES", "INSTANCES", "LAST RECEIVED (UTC)");
        if (st && storage_foreach_study(st, print_study_row, &count) != STORAGE_OK)
            rc = 1;
        printf("%d stud%s\n", count, count == 1 ? "y" : "ies");
        int jobs = 0, items = 0, unmatched = 0;
        if (st && (storage_foreach_job(st, print_job_row, &jobs) != STORAGE_OK ||
                   storage_foreach_outbox(st, print_outbox_row, &items) != STORAGE_OK ||
                   storage_foreach_unmatched(st, print_unmatched_row, &unmatched) != STORAGE_OK))
            rc = 1;
    }
    if (rc)
        fprintf(stderr, "ainode: cannot read the database in %s\n", cfg->node.data_dir);
    storage_close(st);
    return rc;
}
