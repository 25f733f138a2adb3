/*
 * retention.c — deleting finished studies (see storage.h).
 */
#include "storage/internal.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* A study may go: no job will still read its instances or write results,
 * and no send (pending, or dead-lettered awaiting the administrator) still
 * needs its files. Qualifies the studies table. */
#define STUDY_FINISHED                                                                  \
    " studies.state IN ('complete', 'discarded')"                                      \
    " AND NOT EXISTS(SELECT 1 FROM jobs j WHERE j.study_uid=studies.study_uid"          \
    "   AND j.state IN ('queued', 'running'))"                                          \
    " AND NOT EXISTS(SELECT 1 FROM outbox o WHERE o.state IN ('pending', 'failed')"     \
    "   AND (o.study_uid=studies.study_uid OR o.job_id IN"                              \
    "     (SELECT j2.id FROM jobs j2 WHERE j2.study_uid=studies.study_uid)))"

void storage_set_retain_hook(struct storage *st, void (*fn)(void *ud, const char *study_uid),
                             void *ud)
{
    st->retain_hook = fn;
    st->retain_hook_ud = ud;
}

static int unlink_fn(void *ud, sqlite3_stmt *row)
{
    (void)ud;
    const char *path = db_text(row, 0);
    return path && file_unlink_gone(path) != 0 ? STORAGE_EIO : 0;
}

/* Only files under DATA_DIR/results/ are the study's own results. */
static int unlink_result_fn(void *ud, sqlite3_stmt *row)
{
    struct storage *st = ud;
    const char *path = db_text(row, 0);
    size_t n = strlen(st->results_dir);
    if (!path || strncmp(path, st->results_dir, n) != 0 || path[n] != '/')
        return 0;
    return file_unlink_gone(path) != 0 ? STORAGE_EIO : 0;
}

static int unlink_results_fn(void *ud, sqlite3_stmt *row)
{
    struct storage *st = ud;
    static const char *const suffix[] = {"json", "labels.gz", "seg.dcm", "sr.dcm"};
    int rc = 0;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%lld.%s", st->results_dir,
                     (long long)sqlite3_column_int64(row, 0), suffix[i]) >= (int)sizeof path ||
            file_unlink_gone(path) != 0)
            rc = STORAGE_EIO;
    }
    return rc;
}

/* Removes the now empty series directories of STUDY_DIR and then STUDY_DIR,
 * each removal made durable. A directory that is not empty keeps an
 * instance that arrived meanwhile (or an orphan the repair deals with). */
static int remove_study_dirs(struct storage *st, const char *study_dir)
{
    DIR *d = opendir(study_dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *series = file_join(study_dir, e->d_name);
        /* Unlinks inside it are durable before its row deletion can be. */
        if (!series || (file_sync(series, 1) != 0 && errno != ENOENT))
            rc = -1;
        else
            rmdir(series);
        free(series);
    }
    closedir(d);
    if (file_sync(study_dir, 1) != 0 && errno != ENOENT)
        rc = -1;
    rmdir(study_dir);
    return file_sync(st->inst_dir, 1) != 0 ? -1 : rc;
}

/* Removes the files of UID, a study marked "deleting": its instances (by
 * their rows, so that a file placed meanwhile by a new commit stays) and
 * its jobs' results. Every unlink is durable on return, so that a power cut
 * after the rows are gone cannot bring back files the repair would index
 * again. */
static int delete_study_files(struct storage *st, const char *uid)
{
    int rc = 0;
    if (db_run(st,
               "SELECT i.path FROM instances i JOIN series se USING(series_uid)"
               " WHERE se.study_uid=?1",
               unlink_fn, NULL, "t", uid) != STORAGE_OK)
        rc = -1;
    if (db_run(st, "SELECT id FROM jobs WHERE study_uid=?1", unlink_results_fn, st, "t", uid) !=
        STORAGE_OK)
        rc = -1;
    /* Result files under other names, as recorded by their jobs and sends. */
    if (db_run(st,
               "SELECT result FROM jobs WHERE study_uid=?1 AND result IS NOT NULL"
               " UNION SELECT path FROM outbox WHERE job_id IN"
               "  (SELECT id FROM jobs WHERE study_uid=?1)",
               unlink_result_fn, st, "t", uid) != STORAGE_OK)
        rc = -1;
    if (file_sync(st->results_dir, 1) != 0 && errno != ENOENT)
        rc = -1;
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/%s", st->inst_dir, uid) >= (int)sizeof dir ||
        remove_study_dirs(st, dir) != 0)
        rc = -1;
    return rc;
}

/* Deletes the rows of UID, a study marked "deleting", in one transaction. */
static int delete_study_rows(struct storage *st, const char *uid)
{
    static const char *const sql[] = {
        "DELETE FROM outbox WHERE study_uid=?1 OR job_id IN"
        " (SELECT id FROM jobs WHERE study_uid=?1)",
        "DELETE FROM jobs WHERE study_uid=?1",
        "DELETE FROM instances WHERE series_uid IN"
        " (SELECT series_uid FROM series WHERE study_uid=?1)",
        "DELETE FROM series WHERE study_uid=?1",
        "CREATE TEMP TABLE IF NOT EXISTS retain_patient(id INTEGER)",
        "DELETE FROM temp.retain_patient",
        "INSERT INTO temp.retain_patient SELECT patient FROM studies WHERE study_uid=?1",
        "DELETE FROM studies WHERE study_uid=?1 AND state='deleting'",
        "DELETE FROM patients WHERE id IN (SELECT id FROM temp.retain_patient)"
        " AND NOT EXISTS(SELECT 1 FROM studies WHERE patient=patients.id)",
    };
    if (db_begin(st) != STORAGE_OK)
        return -1;
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        /* Extra arguments are ignored by statements without ?1. */
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(st->db, sql[i], -1, &s, NULL) != SQLITE_OK) {
            db_rollback(st);
            return -1;
        }
        if (sqlite3_bind_parameter_count(s) > 0)
            sqlite3_bind_text(s, 1, uid, -1, SQLITE_STATIC);
        int rc = db_step(s, NULL, NULL);
        sqlite3_finalize(s);
        if (rc != STORAGE_OK) {
            db_rollback(st);
            return -1;
        }
    }
    if (db_commit(st) != STORAGE_OK) {
        db_rollback(st);
        return -1;
    }
    /* The cached parents may name the rows just deleted. */
    free(st->last_parents);
    st->last_parents = NULL;
    return 0;
}

static int finish_deletion(struct storage *st, const char *uid)
{
    if (delete_study_files(st, uid) != 0)
        return -1;
    return delete_study_rows(st, uid);
}

struct uids {
    char **v;
    size_t n;
};

static int collect_uid_fn(void *ud, sqlite3_stmt *row)
{
    struct uids *u = ud;
    char **v = realloc(u->v, (u->n + 1) * sizeof *v);
    if (!v)
        return STORAGE_ENOMEM;
    u->v = v;
    if (!(v[u->n] = strdup(db_text(row, 0))))
        return STORAGE_ENOMEM;
    u->n++;
    return 0;
}

/* Finishes every study left "deleting" (by a stop in the middle, or a
 * failure). Called with st->lock held or single-threaded at open. */
static int finish_deletions(struct storage *st)
{
    struct uids u = {0};
    /* Collected first: the deletions' transactions must not run under the
     * open statement that lists them. */
    int rc = db_run(st, "SELECT study_uid FROM studies WHERE state='deleting'", collect_uid_fn,
                    &u, NULL) == STORAGE_OK
                 ? 0
                 : -1;
    for (size_t i = 0; i < u.n; i++) {
        if (rc == 0 && finish_deletion(st, u.v[i]) != 0)
            rc = -1;
        free(u.v[i]);
    }
    free(u.v);
    return rc;
}

int retention_finish(struct storage *st, char *err, size_t errlen)
{
    if (finish_deletions(st) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot finish deleting studies: %s",
                         sqlite3_errmsg(st->db));
    return STORAGE_OK;
}

static int statvfs_usage(void *ud, const char *data_dir, double *percent)
{
    (void)ud;
    struct statvfs sv;
    if (statvfs(data_dir, &sv) != 0 || sv.f_blocks == 0)
        return -1;
    *percent = 100.0 * (double)(sv.f_blocks - sv.f_bavail) / (double)sv.f_blocks;
    return 0;
}

static int uid_fn(void *ud, sqlite3_stmt *row)
{
    snprintf(ud, 128, "%s", db_text(row, 0));
    return 0;
}

/* Marks the oldest finished study whose completion is before CUTOFF_MS
 * "deleting" and removes its files and rows. Eligibility is checked in the
 * very statement that marks it, whose commit is synced: the mark must be
 * on disk before any file goes. Returns 1 when a study went, 0 when none
 * is eligible, -1 on failure (a marked study is then finished later). */
static int retain_one(struct storage *st, int64_t cutoff_ms, char *err, size_t errlen)
{
    char uid[128] = "";
    pthread_mutex_lock(&st->lock);
    if (!st->sync_full)
        db_exec(st, "PRAGMA synchronous=FULL", NULL, 0);
    int rc = db_run(st,
                    "UPDATE studies SET state='deleting' WHERE study_uid=("
                    " SELECT study_uid FROM studies WHERE" STUDY_FINISHED
                    " AND coalesce(completed_at, last_received) < ?1"
                    " ORDER BY last_received, study_uid LIMIT 1) RETURNING study_uid",
                    uid_fn, uid, "I", cutoff_ms) == STORAGE_OK
                 ? (uid[0] ? 1 : 0)
                 : -1;
    if (!st->sync_full)
        db_exec(st, "PRAGMA synchronous=NORMAL", NULL, 0);
    if (rc < 0)
        error_set(err, errlen, rc, "sqlite: %s", sqlite3_errmsg(st->db));
    if (rc == 1 && finish_deletion(st, uid) != 0)
        rc = error_set(err, errlen, -1, "cannot delete study %s: %s", uid, strerror(errno));
    /* Held throughout: an instance arriving for this study is indexed only
     * once its old rows are gone, and starts it afresh. */
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_retain_with_usage(struct storage *st, int64_t now_ms, int retention_days,
                              int high_water_percent, storage_usage_fn usage, void *usage_ud,
                              int *studies_deleted, char *err, size_t errlen)
{
    int n = 0, rc = 0;
    if (studies_deleted)
        *studies_deleted = 0;
    if (st->mode != STORAGE_MODE_SERVE)
        return STORAGE_EINVAL;
    if (!usage)
        usage = statvfs_usage;
    /* A deletion that failed earlier is retried first. */
    pthread_mutex_lock(&st->lock);
    if (finish_deletions(st) != 0)
        rc = error_set(err, errlen, -1, "cannot finish deleting studies: %s", strerror(errno));
    pthread_mutex_unlock(&st->lock);
    if (rc == 0 && retention_days > 0) {
        int64_t cutoff = now_ms - (int64_t)retention_days * 86400 * 1000;
        while ((rc = retain_one(st, cutoff, err, errlen)) == 1)
            n++;
    }
    while (rc == 0 && high_water_percent > 0) {
        double pct;
        if (usage(usage_ud, st->data_dir, &pct) != 0) {
            rc = error_set(err, errlen, -1, "cannot measure disk usage of %s", st->data_dir);
        } else if (pct <= high_water_percent) {
            break;
        } else if ((rc = retain_one(st, INT64_MAX, err, errlen)) == 1) {
            n++;
            rc = 0;
        } else {
            break; /* nothing left that may go, or a failure */
        }
    }
    if (studies_deleted)
        *studies_deleted = n;
    return rc < 0 ? STORAGE_EIO : STORAGE_OK;
}

int storage_retain(struct storage *st, int64_t now_ms, int retention_days,
                   int high_water_percent, int *studies_deleted, char *err, size_t errlen)
{
    return storage_retain_with_usage(st, now_ms, retention_days, high_water_percent, NULL, NULL,
                                     studies_deleted, err, errlen);
}
