/*
 * listing.c — what `ainode status` shows: studies, jobs and the series no
 * rule matched.
 */
#include "storage/internal.h"

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
