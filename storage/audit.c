/*
 * audit.c — the audit trail: a row per association request and per send
 * attempt (migration 6), their listing for `ainode audit` and their own
 * retention, independent of the studies'.
 */
#include "storage/internal.h"

int storage_audit_association(struct storage *st, const struct storage_audit_association *a)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "INSERT INTO audit_associations(started_ms, ended_ms, calling_ae, called_ae,"
                    "  address, tls_peer, stored, refused, outcome)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    NULL, NULL, "IItttoiit", a->started_ms, a->ended_ms,
                    a->calling_ae ? a->calling_ae : "", a->called_ae ? a->called_ae : "",
                    a->address ? a->address : "", a->tls_peer, a->stored, a->refused,
                    a->outcome ? a->outcome : "");
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_audit_result(struct storage *st, const struct storage_audit_result *r)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "INSERT INTO audit_results(time_ms, kind, destination, peer,"
                    "  sop_instance_uid, outcome, error, attempts)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    NULL, NULL, "Ittootoi", r->time_ms, r->kind ? r->kind : "",
                    r->destination ? r->destination : "", r->peer, r->sop_instance_uid,
                    r->outcome ? r->outcome : "", r->error, r->attempts);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

struct each {
    union {
        storage_audit_association_fn assoc;
        storage_audit_result_fn result;
    } fn;
    void *ud;
};

static int assoc_fn(void *ud, sqlite3_stmt *row)
{
    struct each *e = ud;
    struct storage_audit_association a = {
        .id = sqlite3_column_int64(row, 0),
        .started_ms = sqlite3_column_int64(row, 1),
        .ended_ms = sqlite3_column_int64(row, 2),
        .calling_ae = db_text(row, 3),
        .called_ae = db_text(row, 4),
        .address = db_text(row, 5),
        .tls_peer = db_text(row, 6),
        .stored = sqlite3_column_int(row, 7),
        .refused = sqlite3_column_int(row, 8),
        .outcome = db_text(row, 9),
    };
    return e->fn.assoc(e->ud, &a) ? 1 : 0;
}

int storage_audit_foreach_association(struct storage *st, int64_t since_ms,
                                      storage_audit_association_fn fn, void *ud)
{
    struct each e = {.fn.assoc = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT id, started_ms, ended_ms, calling_ae, called_ae, address, tls_peer,"
                    "  stored, refused, outcome FROM audit_associations"
                    " WHERE started_ms >= ?1 ORDER BY started_ms, id",
                    assoc_fn, &e, "I", since_ms);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int result_fn(void *ud, sqlite3_stmt *row)
{
    struct each *e = ud;
    struct storage_audit_result r = {
        .id = sqlite3_column_int64(row, 0),
        .time_ms = sqlite3_column_int64(row, 1),
        .kind = db_text(row, 2),
        .destination = db_text(row, 3),
        .peer = db_text(row, 4),
        .sop_instance_uid = db_text(row, 5),
        .outcome = db_text(row, 6),
        .error = db_text(row, 7),
        .attempts = sqlite3_column_int(row, 8),
    };
    return e->fn.result(e->ud, &r) ? 1 : 0;
}

int storage_audit_foreach_result(struct storage *st, int64_t since_ms,
                                 storage_audit_result_fn fn, void *ud)
{
    struct each e = {.fn.result = fn, .ud = ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT id, time_ms, kind, destination, peer, sop_instance_uid, outcome,"
                    "  error, attempts FROM audit_results"
                    " WHERE time_ms >= ?1 ORDER BY time_ms, id",
                    result_fn, &e, "I", since_ms);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_audit_retain(struct storage *st, int64_t older_than_ms, int *deleted)
{
    int n = 0;
    pthread_mutex_lock(&st->lock);
    int rc = db_begin(st);
    if (rc == STORAGE_OK) {
        rc = db_run(st, "DELETE FROM audit_associations WHERE started_ms < ?1", NULL, NULL, "I",
                    older_than_ms);
        n += rc == STORAGE_OK ? db_changes(st) : 0;
        if (rc == STORAGE_OK)
            rc = db_run(st, "DELETE FROM audit_results WHERE time_ms < ?1", NULL, NULL, "I",
                        older_than_ms);
        n += rc == STORAGE_OK ? db_changes(st) : 0;
        if (rc == STORAGE_OK)
            rc = db_commit(st);
        if (rc != STORAGE_OK)
            db_rollback(st);
    }
    pthread_mutex_unlock(&st->lock);
    if (deleted)
        *deleted = rc == STORAGE_OK ? n : 0;
    return rc;
}
