/*
 * listing.c — what `ainode status` shows: studies, jobs and the series no
 * rule matched.
 */
#include "storage/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The caller's function and its argument, for the row functions below. */
struct each {
    union {
        storage_study_fn study;
        storage_job_fn job;
        storage_unmatched_fn unmatched;
    } fn;
    void *ud;
};

static int study_fn(void *ud, sqlite3_stmt *row)
{
    struct each *e = ud;
    struct storage_study s = {
        .study_uid = db_text(row, 0),
        .state = db_text(row, 1),
        .instances = sqlite3_column_int64(row, 2),
        .series = sqlite3_column_int64(row, 3),
        .last_received_ms = sqlite3_column_int64(row, 4),
        .completed_ms = sqlite3_column_int64(row, 5),
        .id = sqlite3_column_int64(row, 6),
        .held = db_text(row, 7),
    };
    return e->fn.study(e->ud, &s) ? 1 : 0;
}

int storage_foreach_study(struct storage *st, storage_study_fn fn, void *ud)
{
    struct each e = {.fn.study = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT st.study_uid, st.state,"
                    "  (SELECT count(*) FROM instances i JOIN series se USING(series_uid)"
                    "    WHERE se.study_uid=st.study_uid),"
                    "  (SELECT count(*) FROM series se WHERE se.study_uid=st.study_uid),"
                    "  st.last_received, coalesce(st.completed_at, 0), st.rowid, st.held"
                    " FROM studies st ORDER BY st.first_received, st.study_uid",
                    study_fn, &e, NULL);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int job_fn(void *ud, sqlite3_stmt *row)
{
    struct each *e = ud;
    struct storage_job_row j = {
        .id = sqlite3_column_int64(row, 0),
        .study_uid = db_text(row, 1),
        .series_uid = db_text(row, 2),
        .model = db_text(row, 3),
        .state = db_text(row, 4),
        .error = db_text(row, 5),
        .result = db_text(row, 6),
        .summary = db_text(row, 7),
        .attempts = sqlite3_column_int(row, 8),
        .created_ms = sqlite3_column_int64(row, 9),
        .started_ms = sqlite3_column_int64(row, 10),
        .finished_ms = sqlite3_column_int64(row, 11),
        .stage = db_text(row, 12),
        .model_sha256 = db_text(row, 13),
        .manifest_sha256 = db_text(row, 14),
        .series = db_text(row, 15),
    };
    return e->fn.job(e->ud, &j) ? 1 : 0;
}

int storage_foreach_job(struct storage *st, storage_job_fn fn, void *ud)
{
    struct each e = {.fn.job = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT id, study_uid, series_uid, model, state, error, result,"
                    "  summary, attempts, created_at, coalesce(started_at, 0),"
                    "  coalesce(finished_at, 0), stage, model_sha256, manifest_sha256,"
                    "  coalesce(series, json_array(series_uid))"
                    " FROM jobs ORDER BY id",
                    job_fn, &e, NULL);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int unmatched_fn(void *ud, sqlite3_stmt *row)
{
    struct each *e = ud;
    return e->fn.unmatched(e->ud, db_text(row, 0), db_text(row, 1),
                                         db_text(row, 2))
               ? 1
               : 0;
}

int storage_foreach_unmatched(struct storage *st, storage_unmatched_fn fn, void *ud)
{
    struct each e = {.fn.unmatched = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT study_uid, series_uid, coalesce(modality, '') FROM series"
                    " WHERE routing='unmatched' ORDER BY study_uid, series_uid",
                    unmatched_fn, &e, NULL);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Paged listings                                                           */

/*
 * A cursor is the sort key of a page's last row, "<list><order><time>.<id>"
 * ("sn1767225600250.12": studies, newest first): the next page is the rows
 * strictly after that key in that order. The key is unique (the row id
 * breaks ties), so nothing is read twice or skipped, and what is stored
 * meanwhile sorts before the first page, never inside a later one.
 */
static void cursor_write(char *buf, char list, int oldest_first, int64_t t, int64_t id)
{
    snprintf(buf, STORAGE_CURSOR_LEN, "%c%c%lld.%lld", list, oldest_first ? 'o' : 'n',
             (long long)t, (long long)id);
}

static int cursor_read(const char *c, char list, int oldest_first, int64_t *t, int64_t *id)
{
    if (c[0] != list || c[1] != (oldest_first ? 'o' : 'n'))
        return -1;
    char *end;
    errno = 0;
    long long a = strtoll(c + 2, &end, 10);
    if (end == c + 2 || *end != '.' || errno)
        return -1;
    const char *b = end + 1;
    long long i = strtoll(b, &end, 10);
    if (end == b || *end || errno || i < 0)
        return -1;
    *t = a;
    *id = i;
    return 0;
}

static int one_of(const char *s, const char *const *values)
{
    for (; *values; values++)
        if (!strcmp(s, *values))
            return 1;
    return 0;
}

/* A page being read: the caller's function, and the key of the last row
 * it was given, which the next page starts after. */
struct page {
    struct each e;
    db_row_fn row;                /* study_fn or job_fn */
    int limit;                    /* < 0: no pages */
    int given;
    int more;                     /* a row past the page exists */
    int key_time, key_id;         /* the columns of the sort key */
    int64_t last_time, last_id;
};

static int page_fn(void *ud, sqlite3_stmt *row)
{
    struct page *p = ud;
    if (p->limit >= 0 && p->given == p->limit) {
        p->more = 1; /* the row after the page: there is a next one */
        return 1;
    }
    p->given++;
    p->last_time = sqlite3_column_int64(row, p->key_time);
    p->last_id = sqlite3_column_int64(row, p->key_id);
    return p->row(&p->e, row);
}

/*
 * Reads the page F selects from SELECT_FROM (columns, FROM and WHERE of
 * rows of list LIST), ordered by TIME then ID (column expressions, both
 * read by the row function at KEY_TIME and KEY_ID), with WHERE terms for
 * the state (STATE_COL), since, study (STUDY_COL) and model (MODEL_TERM,
 * a condition on ?4).
 */
static int list_page(struct storage *st, const struct storage_filter *f, char list,
                     const char *select_from, const char *time, const char *id,
                     const char *state_col, const char *study_col, const char *model_term,
                     const char *const *states, struct page *p, char *next_cursor, char *err,
                     size_t errlen)
{
    static const struct storage_filter none;
    if (!f)
        f = &none;
    if (next_cursor)
        *next_cursor = '\0';
    int limit = f->limit ? f->limit : STORAGE_LIST_DEFAULT_LIMIT;
    if (limit != STORAGE_LIST_ALL && (limit < 1 || limit > STORAGE_LIST_MAX_LIMIT))
        return error_set(err, errlen, STORAGE_EINVAL, "a page holds 1 to %d rows, not %d",
                         STORAGE_LIST_MAX_LIMIT, limit);
    if (f->state && !one_of(f->state, states)) {
        char known[256] = "";
        for (const char *const *s = states; *s; s++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s",
                     s == states ? "" : ", ", *s);
        return error_set(err, errlen, STORAGE_EINVAL, "unknown state '%s' (one of: %s)",
                         f->state, known);
    }
    int64_t after_time = 0, after_id = 0;
    int after = f->cursor && *f->cursor;
    if (after && cursor_read(f->cursor, list, f->oldest_first, &after_time, &after_id) != 0)
        return error_set(err, errlen, STORAGE_EINVAL,
                         "'%s' is not a cursor of this listing in this order", f->cursor);
    char *sql = NULL;
    size_t len = 0;
    FILE *q = open_memstream(&sql, &len);
    if (!q)
        return error_set(err, errlen, STORAGE_ENOMEM, "out of memory");
    fprintf(q, "%s", select_from);
    if (f->state)
        fprintf(q, " AND %s=?1", state_col);
    if (f->since_ms)
        fprintf(q, " AND %s>=?2", time);
    if (f->study_uid)
        fprintf(q, " AND %s=?3", study_col);
    if (f->model)
        fprintf(q, " AND %s", model_term);
    /* Strictly after the cursor's key; the first term alone bounds the
     * index range, the second breaks ties inside it. */
    const char *cmp = f->oldest_first ? ">" : "<";
    if (after)
        fprintf(q, " AND %s%s=?5 AND (%s%s?5 OR %s%s?6)", time, cmp, time, cmp, id, cmp);
    const char *dir = f->oldest_first ? "" : " DESC";
    fprintf(q, " ORDER BY %s%s, %s%s", time, dir, id, dir);
    if (limit != STORAGE_LIST_ALL)
        fprintf(q, " LIMIT ?7"); /* one more than the page: is there a next one? */
    if (fclose(q) != 0) {
        free(sql);
        return error_set(err, errlen, STORAGE_ENOMEM, "out of memory");
    }
    p->limit = limit == STORAGE_LIST_ALL ? -1 : limit;
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st, sql, page_fn, p, "tItoIIi", f->state, f->since_ms, f->study_uid,
                    f->model, after_time, after_id, limit + 1);
    pthread_mutex_unlock(&st->lock);
    free(sql);
    if (rc != STORAGE_OK)
        return error_set(err, errlen, rc, "cannot read the store: %s", storage_strerror(rc));
    if (p->more && next_cursor)
        cursor_write(next_cursor, list, f->oldest_first, p->last_time, p->last_id);
    return STORAGE_OK;
}

int storage_list_studies(struct storage *st, const struct storage_filter *f, storage_study_fn fn,
                         void *ud, char *next_cursor, char *err, size_t errlen)
{
    static const char *const states[] = {"receiving", "complete", "discarded", "deleting",
                                         NULL};
    struct page p = {.e = {.fn.study = fn, .ud = ud}, .row = study_fn, .key_time = 8,
                     .key_id = 6};
    return list_page(st, f, 's',
                     "SELECT st.study_uid, st.state,"
                     "  (SELECT count(*) FROM instances i JOIN series se USING(series_uid)"
                     "    WHERE se.study_uid=st.study_uid),"
                     "  (SELECT count(*) FROM series se WHERE se.study_uid=st.study_uid),"
                     "  st.last_received, coalesce(st.completed_at, 0), st.rowid, st.held,"
                     "  st.first_received"
                     " FROM studies st WHERE 1",
                     "st.first_received", "st.rowid", "st.state", "st.study_uid",
                     /* Through the study's few jobs ("+" keeps the planner
                      * off the model's index, which holds every job of it). */
                     "EXISTS(SELECT 1 FROM jobs j WHERE j.study_uid=st.study_uid"
                     " AND +j.model=?4)",
                     states, &p, next_cursor, err, errlen);
}

#define JOB_COLUMNS                                                                            \
    "SELECT id, study_uid, series_uid, model, state, error, result,"                           \
    "  summary, attempts, created_at, coalesce(started_at, 0),"                                \
    "  coalesce(finished_at, 0), stage, model_sha256, manifest_sha256,"                        \
    "  coalesce(series, json_array(series_uid))"                                               \
    " FROM jobs"

int storage_list_jobs(struct storage *st, const struct storage_filter *f, storage_job_fn fn,
                      void *ud, char *next_cursor, char *err, size_t errlen)
{
    static const char *const states[] = {"queued", "running", "done", "failed", "quarantined",
                                         STORAGE_JOB_NOT_APPLICABLE, NULL};
    struct page p = {.e = {.fn.job = fn, .ud = ud}, .row = job_fn, .key_time = 9, .key_id = 0};
    return list_page(st, f, 'j', JOB_COLUMNS " WHERE 1", "created_at", "id", "state",
                     "study_uid", "model=?4", states, &p, next_cursor, err, errlen);
}

int storage_foreach_job_of(struct storage *st, const char *const *study_uids, size_t n,
                           int oldest_first, storage_job_fn fn, void *ud)
{
    char *uids = db_json_array(study_uids, n);
    if (!uids)
        return STORAGE_ENOMEM;
    struct each e = {.fn.job = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    oldest_first ? JOB_COLUMNS " WHERE study_uid IN (SELECT value FROM"
                                               " json_each(?1)) ORDER BY id"
                                 : JOB_COLUMNS " WHERE study_uid IN (SELECT value FROM"
                                               " json_each(?1)) ORDER BY id DESC",
                    job_fn, &e, "t", uids);
    pthread_mutex_unlock(&st->lock);
    free(uids);
    return rc;
}

int storage_foreach_unmatched_of(struct storage *st, const char *const *study_uids, size_t n,
                                 storage_unmatched_fn fn, void *ud)
{
    char *uids = db_json_array(study_uids, n);
    if (!uids)
        return STORAGE_ENOMEM;
    struct each e = {.fn.unmatched = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT study_uid, series_uid, coalesce(modality, '') FROM series"
                    " WHERE routing='unmatched' AND study_uid IN (SELECT value FROM"
                    " json_each(?1)) ORDER BY study_uid, series_uid",
                    unmatched_fn, &e, "t", uids);
    pthread_mutex_unlock(&st->lock);
    free(uids);
    return rc;
}
