/* listing_json.c — studies, jobs, outbox items and unmatched series as
 * JSON, for status, jobs and the HTTP API (listing_json.h). */
#include "service/listing_json.h"

#include "common/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *listing_json_study(const struct storage_study *s)
{
    char when[40];
    clock_format_time(s->last_received_ms, when, sizeof when);
    /* "held": why it is held back from completion (null: it is not); with
     * state complete, it was processed without all its instances. */
    json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:o}", "id", (json_int_t)s->id,
                          "study_uid", s->study_uid, "state", s->state, "instances",
                          (json_int_t)s->instances, "series", (json_int_t)s->series,
                          "last_received", when, "held",
                          s->held ? json_string(s->held) : json_null());
    if (o && s->completed_ms) {
        clock_format_time(s->completed_ms, when, sizeof when);
        json_object_set_new(o, "completed", json_string(when));
    }
    return o;
}

json_t *listing_json_job(const struct storage_job_row *j, int64_t now_ms)
{
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "id", (json_int_t)j->id, "study_uid",
                          j->study_uid, "series_uid", j->series_uid, "model", j->model, "state",
                          j->state, "attempts", (json_int_t)j->attempts);
    if (!o)
        return NULL;
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
        secs = json_real((now_ms - j->started_ms) / 1000.0);
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
    return o;
}

json_t *listing_json_outbox_item(const struct storage_outbox_item *it)
{
    char when[40];
    clock_format_time(it->next_attempt_ms, when, sizeof when);
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i}", "id", (json_int_t)it->id,
                          "destination", it->destination, "kind", it->kind, "study_uid",
                          it->study_uid, "sop_instance_uid", it->sop_instance_uid, "state",
                          it->state, "attempts", it->attempts);
    if (!o)
        return NULL;
    json_object_set_new(o, "next_attempt",
                        strcmp(it->state, "pending") ? json_null() : json_string(when));
    json_object_set_new(o, "error", it->error ? json_string(it->error) : json_null());
    if (it->sent_ms) {
        clock_format_time(it->sent_ms, when, sizeof when);
        json_object_set_new(o, "sent", json_string(when));
    }
    return o;
}

json_t *listing_json_unmatched(const char *study_uid, const char *series_uid,
                               const char *modality)
{
    return json_pack("{s:s, s:s, s:s}", "study_uid", study_uid, "series_uid", series_uid,
                     "modality", modality);
}

/* The array the row callbacks below append to; FAILED once an append
 * failed (out of memory), which also stops the listing. */
struct rows {
    json_t *a;
    int failed;
};

static int append(struct rows *r, json_t *o)
{
    if (json_array_append_new(r->a, o) != 0)
        r->failed = 1;
    return r->failed;
}

static int add_study(void *ud, const struct storage_study *s)
{
    return append(ud, listing_json_study(s));
}

static int add_job(void *ud, const struct storage_job_row *j)
{
    return append(ud, listing_json_job(j, clock_now_ms()));
}

static int add_outbox_item(void *ud, const struct storage_outbox_item *it)
{
    return append(ud, listing_json_outbox_item(it));
}

static int add_unmatched(void *ud, const char *study_uid, const char *series_uid,
                         const char *modality)
{
    return append(ud, listing_json_unmatched(study_uid, series_uid, modality));
}

static json_t *cursor_json(const char *next)
{
    return *next ? json_string(next) : json_null();
}

static int out_of_memory(json_t *root, char *err, size_t errlen)
{
    json_decref(root);
    if (err && errlen)
        snprintf(err, errlen, "out of memory");
    return STORAGE_ENOMEM;
}

int listing_json_status(struct storage *st, const struct storage_filter *f, json_t **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    struct rows studies = {json_array(), 0}, jobs = {json_array(), 0},
                outbox = {json_array(), 0}, unmatched = {json_array(), 0};
    json_t *root = json_pack("{s:o, s:o, s:o, s:o}", "studies", studies.a, "jobs", jobs.a,
                             "outbox", outbox.a, "unmatched_series", unmatched.a);
    if (!root)
        return out_of_memory(root, err, errlen);
    char next[STORAGE_CURSOR_LEN] = "";
    if (st) {
        int rc = storage_list_studies(st, f, add_study, &studies, next, err, errlen);
        if (rc != STORAGE_OK) {
            json_decref(root);
            return rc;
        }
        size_t n = json_array_size(studies.a);
        const char **uids = malloc((n ? n : 1) * sizeof *uids);
        if (studies.failed || !uids) {
            free(uids);
            return out_of_memory(root, err, errlen);
        }
        for (size_t i = 0; i < n; i++)
            uids[i] =
                json_string_value(json_object_get(json_array_get(studies.a, i), "study_uid"));
        int oldest = f && f->oldest_first;
        rc = storage_foreach_job_of(st, uids, n, oldest, add_job, &jobs);
        if (rc == STORAGE_OK)
            rc = storage_foreach_outbox_of(st, uids, n, oldest, add_outbox_item, &outbox);
        if (rc == STORAGE_OK)
            rc = storage_foreach_unmatched_of(st, uids, n, add_unmatched, &unmatched);
        free(uids);
        if (rc == STORAGE_OK && (jobs.failed || outbox.failed || unmatched.failed))
            return out_of_memory(root, err, errlen);
        if (rc != STORAGE_OK) {
            json_decref(root);
            if (err && errlen)
                snprintf(err, errlen, "cannot read the store: %s", storage_strerror(rc));
            return rc;
        }
    }
    json_object_set_new(root, "next_cursor", cursor_json(next));
    *out = root;
    return STORAGE_OK;
}

int listing_json_jobs(struct storage *st, const struct storage_filter *f, json_t **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    struct rows jobs = {json_array(), 0};
    json_t *root = json_pack("{s:o}", "jobs", jobs.a);
    if (!root)
        return out_of_memory(root, err, errlen);
    char next[STORAGE_CURSOR_LEN] = "";
    if (st) {
        int rc = storage_list_jobs(st, f, add_job, &jobs, next, err, errlen);
        if (rc != STORAGE_OK) {
            json_decref(root);
            return rc;
        }
        if (jobs.failed)
            return out_of_memory(root, err, errlen);
    }
    json_object_set_new(root, "next_cursor", cursor_json(next));
    *out = root;
    return STORAGE_OK;
}
