/*
 * plan.c — completing a study: the studies still receiving, the series
 * rows the planner reads, and the commit of the plan it made.
 *
 * Storage decides nothing here. The caller lists the receiving studies,
 * reads a due study's series rows, computes a plan outside any lock and
 * commits it with storage_commit_plan(), which applies it only if the
 * study has not received anything since (compare-and-set on
 * last_received): an instance that arrives meanwhile wins, and the study is
 * planned again once it is due again.
 */
#include "storage/internal.h"

#include "common/crashpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Receiving studies                                                        */

struct each_receiving {
    storage_receiving_fn fn;
    void *ud;
};

static int receiving_fn(void *ud, sqlite3_stmt *row)
{
    struct each_receiving *e = ud;
    struct storage_receiving r = {
        .study_uid = db_text(row, 0),
        .first_received_ms = sqlite3_column_int64(row, 1),
        .last_received_ms = sqlite3_column_int64(row, 2),
        .id = sqlite3_column_int64(row, 3),
        .held = sqlite3_column_type(row, 4) != SQLITE_NULL,
    };
    return e->fn(e->ud, &r) ? 1 : 0;
}

int storage_foreach_receiving(struct storage *st, storage_receiving_fn fn, void *ud)
{
    struct each_receiving e = {fn, ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT study_uid, first_received, last_received, rowid, held FROM studies"
                    " WHERE state='receiving' ORDER BY first_received, study_uid",
                    receiving_fn, &e, NULL);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Series rows, from attr.def                                               */

/* Columns 0..ATTR_COUNT-1 are the attributes, in attr.def's order; then: */
enum { COL_INSTANCES = ATTR_COUNT, COL_CALLING_AE, COL_CALLED_AE, COL_SOURCE_ADDRESS };

int plan_prepare(struct storage *st)
{
    /* Each attribute from its level's row: the series', its study's, its
     * patient's, and its first instance's (lowest InstanceNumber). */
    static const char *const alias[] = {
        [ATTR_LEVEL_PATIENT] = "p", [ATTR_LEVEL_STUDY] = "st",
        [ATTR_LEVEL_SERIES] = "se", [ATTR_LEVEL_INSTANCE] = "fi"};
    const char *number = attr_table[ATTR_INSTANCE_NUMBER].column;
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    if (!f)
        return STORAGE_ENOMEM;
    fprintf(f, "SELECT ");
    for (int i = 0; i < ATTR_COUNT; i++) {
        const struct attr_info *a = &attr_table[i];
        if (a->kind == ATTR_KIND_INT)
            fprintf(f, "CAST(%s.%s AS TEXT), ", alias[a->level], a->column);
        else
            fprintf(f, "%s.%s, ", alias[a->level], a->column);
    }
    fprintf(f,
            "(SELECT count(*) FROM instances i WHERE i.series_uid=se.series_uid),"
            " fi.calling_ae, fi.called_ae, fi.source_addr"
            " FROM series se"
            " LEFT JOIN studies st ON st.study_uid=se.study_uid"
            " LEFT JOIN patients p ON p.id=st.patient"
            " LEFT JOIN instances fi ON fi.sop_instance_uid=("
            "   SELECT i.sop_instance_uid FROM instances i"
            "   WHERE i.series_uid=se.series_uid"
            "   ORDER BY i.%s IS NULL, CAST(i.%s AS INTEGER), i.sop_instance_uid LIMIT 1)"
            " WHERE se.study_uid=?1 ORDER BY se.series_uid",
            number, number);
    if (fclose(f) != 0) {
        free(sql);
        return STORAGE_ENOMEM;
    }
    free(st->series_rows_sql);
    st->series_rows_sql = sql;
    return STORAGE_OK;
}

struct rows {
    struct attr_series *v;
    size_t n, cap;
};

static char *dup_col(sqlite3_stmt *row, int i, int *failed)
{
    const char *s = db_text(row, i);
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *failed = 1;
    return d;
}

static int series_row_fn(void *ud, sqlite3_stmt *row)
{
    struct rows *r = ud;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        struct attr_series *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return STORAGE_ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    struct attr_series *s = &r->v[r->n++];
    memset(s, 0, sizeof *s);
    int failed = 0;
    for (int i = 0; i < ATTR_COUNT; i++)
        s->value[i] = dup_col(row, i, &failed);
    s->instances = sqlite3_column_int64(row, COL_INSTANCES);
    s->calling_ae = dup_col(row, COL_CALLING_AE, &failed);
    s->called_ae = dup_col(row, COL_CALLED_AE, &failed);
    s->source_address = dup_col(row, COL_SOURCE_ADDRESS, &failed);
    return failed ? STORAGE_ENOMEM : 0;
}

int storage_study_series(struct storage *st, const char *study_uid, struct attr_series **rows,
                         size_t *n)
{
    struct rows r = {0};
    *rows = NULL;
    *n = 0;
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st, st->series_rows_sql, series_row_fn, &r, "t", study_uid);
    pthread_mutex_unlock(&st->lock);
    if (rc != STORAGE_OK) {
        storage_series_free(r.v, r.n);
        return rc;
    }
    *rows = r.v;
    *n = r.n;
    return STORAGE_OK;
}

void storage_series_free(struct attr_series *rows, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        for (int i = 0; i < ATTR_COUNT; i++)
            free((char *)rows[k].value[i]);
        free((char *)rows[k].calling_ae);
        free((char *)rows[k].called_ae);
        free((char *)rows[k].source_address);
    }
    free(rows);
}

/* ------------------------------------------------------------------------ */
/* Plan commit                                                              */

static int set_routing(struct storage *st, const char *study_uid, const char *series_uid,
                       const char *routing)
{
    return db_run(st, "UPDATE series SET routing=?3 WHERE series_uid=?1 AND study_uid=?2",
                  NULL, NULL, "ttt", series_uid, study_uid, routing);
}

static int row_id_fn(void *ud, sqlite3_stmt *row)
{
    *(int64_t *)ud = sqlite3_column_int64(row, 0);
    return 0;
}

static int queue_job(struct storage *st, const char *study_uid, const struct plan_job *j,
                     int64_t now_ms)
{
    int64_t id = -1;
    /* Not applicable: recorded as ended with its reason, so that nothing
     * claims, retries or requeues it. */
    int rc = db_run(st,
                    "INSERT INTO jobs(study_uid, series_uid, series, model, created_at, priority,"
                    "  state, error, finished_at)"
                    " VALUES(?1, ?2, json_array(?2), ?3, ?4, ?5,"
                    "  CASE WHEN ?6 IS NULL THEN 'queued' ELSE '" STORAGE_JOB_NOT_APPLICABLE "' END,"
                    "  ?6, CASE WHEN ?6 IS NULL THEN NULL ELSE ?4 END) RETURNING id",
                    row_id_fn, &id, "tttIit", study_uid, j->series_uid, j->model, now_ms,
                    (int)j->priority, j->not_applicable);
    for (size_t s = 0; rc == STORAGE_OK && s < j->n_more_series; s++)
        rc = db_run(st, "UPDATE jobs SET series=json_insert(series, '$[#]', ?2) WHERE id=?1",
                    NULL, NULL, "It", id, j->more_series[s]);
    for (size_t d = 0; rc == STORAGE_OK && d < j->n_destinations; d++)
        rc = db_run(st,
                    "INSERT INTO job_destinations(job_id, position, destination)"
                    " VALUES(?1, ?2, ?3)",
                    NULL, NULL, "Iit", id, (int)d, j->destinations[d]);
    return rc;
}

/* Puts every instance of the series in the outbox for its destination,
 * its stored file as it is. */
static int queue_forward(struct storage *st, const char *study_uid,
                         const struct plan_forward *f, int64_t now_ms, int *n)
{
    int rc = db_run(st,
                    "INSERT INTO outbox(destination, study_uid, kind, path, sop_class_uid,"
                    "  sop_instance_uid, transfer_syntax, next_attempt, created_at)"
                    " SELECT ?1, ?2, 'forward', i.path, i.sop_class_uid, i.sop_instance_uid,"
                    "  i.transfer_syntax, ?3, ?3 FROM instances i JOIN series se"
                    "  USING(series_uid) WHERE i.series_uid=?4 AND se.study_uid=?2"
                    " ORDER BY i.sop_instance_uid",
                    NULL, NULL, "ttIt", f->destination, study_uid, now_ms, f->series_uid);
    if (rc == STORAGE_OK)
        *n += db_changes(st);
    return rc;
}

static int apply_plan(struct storage *st, const char *study_uid, const struct plan *plan,
                      int64_t now_ms, int *n_queued)
{
    int rc = STORAGE_OK;
    for (size_t i = 0; rc == STORAGE_OK && i < plan->n_jobs; i++) {
        rc = queue_job(st, study_uid, &plan->jobs[i], now_ms);
        if (rc == STORAGE_OK) {
            *n_queued += !plan->jobs[i].not_applicable;
            rc = set_routing(st, study_uid, plan->jobs[i].series_uid, "matched");
        }
        for (size_t s = 0; rc == STORAGE_OK && s < plan->jobs[i].n_more_series; s++)
            rc = set_routing(st, study_uid, plan->jobs[i].more_series[s], "matched");
    }
    for (size_t i = 0; rc == STORAGE_OK && i < plan->n_forwards; i++) {
        rc = queue_forward(st, study_uid, &plan->forwards[i], now_ms, n_queued);
        if (rc == STORAGE_OK)
            rc = set_routing(st, study_uid, plan->forwards[i].series_uid, "matched");
    }
    /* A series no rule matched is recorded as such (shown by status). */
    for (size_t i = 0; rc == STORAGE_OK && i < plan->n_unmatched; i++)
        rc = set_routing(st, study_uid, plan->unmatched[i], "unmatched");
    return rc;
}

int storage_commit_plan(struct storage *st, const char *study_uid, int64_t last_received_ms,
                        const struct plan *plan, int discard, int64_t now_ms, int *n_queued)
{
    int n = 0, rc;
    if (n_queued)
        *n_queued = 0;
    pthread_mutex_lock(&st->lock);
    if ((rc = db_begin(st)) != STORAGE_OK)
        goto out;
    rc = db_run(st,
                "UPDATE studies SET state=?4, completed_at=?3"
                " WHERE study_uid=?1 AND state='receiving' AND last_received=?2",
                NULL, NULL, "tIIt", study_uid, last_received_ms, now_ms,
                discard ? "discarded" : "complete");
    if (rc == STORAGE_OK && db_changes(st) != 1)
        rc = STORAGE_ECONFLICT; /* received meanwhile, completed meanwhile, or gone */
    if (rc == STORAGE_OK && !discard && plan)
        rc = apply_plan(st, study_uid, plan, now_ms, &n);
    if (rc == STORAGE_OK) {
        CRASH_POINT("complete.before_commit"); /* jobs planned, not committed */
        rc = db_commit(st);
    }
    if (rc != STORAGE_OK) {
        db_rollback(st);
        n = 0;
    } else {
        CRASH_POINT("complete.committed"); /* complete, its jobs queued, none woken */
    }
out:
    pthread_mutex_unlock(&st->lock);
    if (n_queued)
        *n_queued = n;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Planning a stored study again                                           */

static int state_fn(void *ud, sqlite3_stmt *row)
{
    const char *s = db_text(row, 0);
    snprintf(ud, 16, "%s", s ? s : "");
    return 1;
}

static int count_fn(void *ud, sqlite3_stmt *row)
{
    *(int *)ud = sqlite3_column_int(row, 0);
    return 1;
}

int storage_replan(struct storage *st, const char *study_uid, const struct plan *plan,
                   int64_t now_ms, int *n_queued, int *n_skipped)
{
    int queued = 0, skipped = 0;
    char state[16] = "";
    pthread_mutex_lock(&st->lock);
    int rc = db_begin(st);
    if (rc == STORAGE_OK)
        rc = db_run(st, "SELECT state FROM studies WHERE study_uid=?1", state_fn, state, "t",
                    study_uid);
    if (rc == STORAGE_OK && !*state)
        rc = STORAGE_ENOTFOUND;
    /* A study still receiving is planned when it completes; one being
     * deleted has no files left to run on. */
    else if (rc == STORAGE_OK && strcmp(state, "complete") && strcmp(state, "discarded"))
        rc = STORAGE_ECONFLICT;
    for (size_t i = 0; rc == STORAGE_OK && plan && i < plan->n_jobs; i++) {
        const struct plan_job *j = &plan->jobs[i];
        int pending = 0;
        /* The same model already waiting or running on the series: a
         * second job would only compute the same results twice. */
        rc = db_run(st,
                    "SELECT count(*) FROM jobs WHERE study_uid=?1 AND series_uid=?2"
                    " AND model=?3 AND state IN ('queued', 'running')",
                    count_fn, &pending, "ttt", study_uid, j->series_uid, j->model);
        if (rc != STORAGE_OK)
            break;
        if (pending) {
            skipped++;
            continue;
        }
        rc = queue_job(st, study_uid, j, now_ms);
        queued += rc == STORAGE_OK && !j->not_applicable;
    }
    if (rc == STORAGE_OK)
        rc = db_commit(st);
    if (rc != STORAGE_OK) {
        db_rollback(st);
        queued = skipped = 0;
    }
    pthread_mutex_unlock(&st->lock);
    if (n_queued)
        *n_queued = queued;
    if (n_skipped)
        *n_skipped = skipped;
    return rc;
}
