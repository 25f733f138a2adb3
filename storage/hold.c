/*
 * hold.c — studies held back from completion.
 *
 * The hold is the study's `held` column (its reason), so a study whose
 * instances were refused stays held across a restart of the node: the
 * completion reads it with the receiving studies (plan.c), status with the
 * listing (listing.c). Who holds and releases is the node's business
 * (service/node.c); this file only records it.
 */
#include "storage/internal.h"

struct hold_row {
    int64_t id;
    int found, held;
};

static int hold_row_fn(void *ud, sqlite3_stmt *row)
{
    struct hold_row *h = ud;
    h->found = 1;
    h->id = sqlite3_column_int64(row, 0);
    h->held = sqlite3_column_type(row, 1) != SQLITE_NULL;
    return 1;
}

/* Sets the study's hold to REASON (NULL releases it), under the lock. */
static int set_hold(struct storage *st, const char *study_uid, const char *reason, int64_t *id,
                    int *was_held)
{
    struct hold_row h = {0};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st, "SELECT rowid, held FROM studies WHERE study_uid=?1", hold_row_fn, &h,
                    "t", study_uid);
    if (rc == STORAGE_OK && !h.found)
        rc = STORAGE_ENOTFOUND;
    /* Written only when it changes: a release at the end of every clean
     * association must not cost a write. */
    if (rc == STORAGE_OK && h.held != (reason != NULL))
        rc = db_run(st, "UPDATE studies SET held=?2 WHERE study_uid=?1", NULL, NULL, "tt",
                    study_uid, reason);
    pthread_mutex_unlock(&st->lock);
    if (id)
        *id = h.id;
    if (was_held)
        *was_held = h.held;
    return rc;
}

int storage_study_hold(struct storage *st, const char *study_uid, const char *reason,
                       int64_t *id, int *newly)
{
    int was = 0;
    int rc = set_hold(st, study_uid, reason ? reason : STORAGE_HOLD_REFUSED, id, &was);
    if (newly)
        *newly = rc == STORAGE_OK && !was;
    return rc;
}

int storage_study_release(struct storage *st, const char *study_uid, int64_t *id,
                          int *was_held)
{
    int rc = set_hold(st, study_uid, NULL, id, was_held);
    if (rc == STORAGE_ENOTFOUND) { /* gone (retention): nothing held */
        if (was_held)
            *was_held = 0;
        return STORAGE_OK;
    }
    return rc;
}
