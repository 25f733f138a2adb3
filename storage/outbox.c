/*
 * outbox.c — files to send: pending until a destination accepts them or
 * they run out of attempts (dead-lettered until retried).
 */
#include "storage/internal.h"

#include "common/crashpoint.h"

#include <stdlib.h>

struct each_item {
    storage_outbox_fn fn;
    void *ud;
};

#define OUTBOX_COLUMNS                                                                         \
    "SELECT id, destination, study_uid, kind, path, sop_class_uid, sop_instance_uid,"          \
    "  transfer_syntax, state, error, attempts, next_attempt, coalesce(sent_at, 0) FROM outbox"

static int item_fn(void *ud, sqlite3_stmt *row)
{
    struct each_item *e = ud;
    struct storage_outbox_item it = {
        .id = sqlite3_column_int64(row, 0),
        .destination = db_text(row, 1),
        .study_uid = db_text(row, 2),
        .kind = db_text(row, 3),
        .path = db_text(row, 4),
        .sop_class_uid = db_text(row, 5),
        .sop_instance_uid = db_text(row, 6),
        .transfer_syntax = db_text(row, 7),
        .state = db_text(row, 8),
        .error = db_text(row, 9),
        .attempts = sqlite3_column_int(row, 10),
        .next_attempt_ms = sqlite3_column_int64(row, 11),
        .sent_ms = sqlite3_column_int64(row, 12),
    };
    return e->fn(e->ud, &it) ? 1 : 0;
}

int storage_outbox_due(struct storage *st, int64_t now_ms, storage_outbox_fn fn, void *ud)
{
    struct each_item e = {fn, ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    OUTBOX_COLUMNS " WHERE state='pending' AND next_attempt <= ?1"
                                   " ORDER BY destination, study_uid, id",
                    item_fn, &e, "I", now_ms);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_foreach_outbox(struct storage *st, storage_outbox_fn fn, void *ud)
{
    struct each_item e = {fn, ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st, OUTBOX_COLUMNS " ORDER BY id", item_fn, &e, NULL);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_foreach_outbox_of(struct storage *st, const char *const *study_uids, size_t n,
                              int oldest_first, storage_outbox_fn fn, void *ud)
{
    char *uids = db_json_array(study_uids, n);
    if (!uids)
        return STORAGE_ENOMEM;
    struct each_item e = {fn, ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    oldest_first ? OUTBOX_COLUMNS " WHERE study_uid IN (SELECT value FROM"
                                                  " json_each(?1)) ORDER BY id"
                                 : OUTBOX_COLUMNS " WHERE study_uid IN (SELECT value FROM"
                                                  " json_each(?1)) ORDER BY id DESC",
                    item_fn, &e, "t", uids);
    pthread_mutex_unlock(&st->lock);
    free(uids);
    return rc;
}

int storage_outbox_record(struct storage *st, int64_t id, int64_t now_ms, int sent,
                          const char *error, int64_t next_attempt_ms)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "UPDATE outbox SET attempts=attempts + 1, error=?3,"
                    "  state=CASE WHEN ?2 THEN 'sent' WHEN ?4 < 0 THEN 'failed'"
                    "    ELSE 'pending' END,"
                    "  sent_at=CASE WHEN ?2 THEN ?5 ELSE NULL END,"
                    "  next_attempt=CASE WHEN ?4 < 0 THEN next_attempt ELSE ?4 END"
                    " WHERE id=?1 AND state='pending'",
                    NULL, NULL, "IioII", id, sent ? 1 : 0, sent ? NULL : error,
                    sent ? now_ms : next_attempt_ms, now_ms);
    if (rc == STORAGE_OK && db_changes(st) != 1)
        rc = STORAGE_ENOTFOUND;
    /* Recorded, its audit row not written yet. */
    if (rc == STORAGE_OK)
        CRASH_POINT(sent ? "outbox.marked_sent" : "outbox.failure_recorded");
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_outbox_retry(struct storage *st, int64_t id, int64_t now_ms, int *n)
{
    *n = 0;
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "UPDATE outbox SET state='pending', attempts=0, next_attempt=?2,"
                    "  error=NULL WHERE state='failed' AND (?1 < 0 OR id=?1)",
                    NULL, NULL, "II", id, now_ms);
    if (rc == STORAGE_OK)
        *n = db_changes(st);
    pthread_mutex_unlock(&st->lock);
    return rc;
}
