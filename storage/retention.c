/*
 * retention.c — deleting finished studies (see storage.h).
 *
 * The lock every C-STORE commit needs is never held while files go:
 *   1. under the lock, one synced transaction deletes the study's rows and
 *      records in retention_files every file they named;
 *   2. with no lock held, the files are removed and the removals flushed;
 *   3. under the lock, their records go.
 * An instance arriving meanwhile for the study finds no rows: it is
 * indexed as the first of a study received afresh, in a file of its own:
 * link() never replaces a recorded file that still exists, and the names
 * being removed are reserved (storage->doomed) until their records are
 * gone durably, so a record only ever names a file of a deleted study.
 * After a stop in the middle, storage_open() removes what is recorded
 * before its repair could index such files again.
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

/* A study may go: no job will still read its instances or write results
 * (a quarantined one awaits the administrator, who may run it again), and
 * no send (pending, or dead-lettered awaiting the administrator) still
 * needs its files. Qualifies the studies table. */
#define STUDY_FINISHED                                                                  \
    " studies.state IN ('complete', 'discarded')"                                      \
    " AND NOT EXISTS(SELECT 1 FROM jobs j WHERE j.study_uid=studies.study_uid"          \
    "   AND j.state IN ('queued', 'running', 'quarantined'))"                           \
    " AND NOT EXISTS(SELECT 1 FROM outbox o WHERE o.state IN ('pending', 'failed')"     \
    "   AND (o.study_uid=studies.study_uid OR o.job_id IN"                              \
    "     (SELECT j2.id FROM jobs j2 WHERE j2.study_uid=studies.study_uid)))"

void storage_set_retain_hook(struct storage *st, void (*fn)(void *ud, const char *study_uid),
                             void *ud)
{
    st->retain_hook = fn;
    st->retain_hook_ud = ud;
}

/* ------------------------------------------------------------------------ */
/* Detaching a study: its rows go, the files they named are recorded        */

/*
 * Deletes the rows of UID and records in retention_files every file they
 * named: its instances, its jobs' results (by job id, and as recorded by
 * the jobs and their sends, when under DATA_DIR/results/), and its
 * instance directory. Runs in the caller's transaction, under st->lock.
 * ?1 is the study, ?2 the results directory, ?3 the study's directory.
 */
static int detach_study(struct storage *st, const char *uid)
{
    static const char *const sql[] = {
        "INSERT OR IGNORE INTO retention_files(path)"
        " SELECT i.path FROM instances i JOIN series se USING(series_uid)"
        " WHERE se.study_uid=?1",
        /* Every name storage_result_name() gives a job's files. */
        "INSERT OR IGNORE INTO retention_files(path)"
        " SELECT ?2 || '/' || j.id || '.' || x.suffix FROM jobs j,"
        "  (SELECT 'json' AS suffix UNION ALL SELECT 'labels.gz' UNION ALL SELECT 'seg.dcm'"
        "   UNION ALL SELECT 'sr.dcm') x"
        " WHERE j.study_uid=?1",
        "INSERT OR IGNORE INTO retention_files(path)"
        " SELECT p FROM (SELECT result AS p FROM jobs WHERE study_uid=?1"
        "  UNION SELECT path FROM outbox WHERE job_id IN"
        "   (SELECT id FROM jobs WHERE study_uid=?1))"
        " WHERE p IS NOT NULL AND substr(p, 1, length(?2) + 1) = ?2 || '/'",
        "INSERT OR IGNORE INTO retention_files(path, directory) VALUES(?3, 1)",
        "DELETE FROM outbox WHERE study_uid=?1 OR job_id IN"
        " (SELECT id FROM jobs WHERE study_uid=?1)",
        "DELETE FROM job_destinations WHERE job_id IN (SELECT id FROM jobs WHERE study_uid=?1)",
        "DELETE FROM jobs WHERE study_uid=?1",
        "DELETE FROM instances WHERE series_uid IN"
        " (SELECT series_uid FROM series WHERE study_uid=?1)",
        "DELETE FROM series WHERE study_uid=?1",
        "CREATE TEMP TABLE IF NOT EXISTS retain_patient(id INTEGER)",
        "DELETE FROM temp.retain_patient",
        "INSERT INTO temp.retain_patient SELECT patient FROM studies WHERE study_uid=?1",
        "DELETE FROM studies WHERE study_uid=?1",
        "DELETE FROM patients WHERE id IN (SELECT id FROM temp.retain_patient)"
        " AND NOT EXISTS(SELECT 1 FROM studies WHERE patient=patients.id)",
    };
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/%s", st->inst_dir, uid) >= (int)sizeof dir)
        return STORAGE_EINVAL;
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        /* Statements without ?2 or ?3 ignore them. */
        int rc = db_run(st, sql[i], NULL, NULL, "ttt", uid, st->results_dir, dir);
        if (rc != STORAGE_OK)
            return rc;
    }
    /* The cached parents may name the rows just deleted. */
    free(st->last_parents);
    st->last_parents = NULL;
    return STORAGE_OK;
}

/* ------------------------------------------------------------------------ */
/* Removing the recorded files                                              */

struct doomed {
    char **path;
    int *directory;
    int *removed;
    size_t n;
};

static int doomed_fn(void *ud, sqlite3_stmt *row)
{
    struct doomed *d = ud;
    char **p = realloc(d->path, (d->n + 1) * sizeof *p);
    if (p)
        d->path = p;
    int *dir = p ? realloc(d->directory, (d->n + 1) * sizeof *dir) : NULL;
    if (dir)
        d->directory = dir;
    int *rm = dir ? realloc(d->removed, (d->n + 1) * sizeof *rm) : NULL;
    if (rm)
        d->removed = rm;
    if (!rm || !(p[d->n] = strdup(db_text(row, 0))))
        return STORAGE_ENOMEM;
    dir[d->n] = sqlite3_column_int(row, 1);
    rm[d->n] = 0;
    d->n++;
    return 0;
}

static void doomed_free(struct doomed *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->path[i]);
    free(d->path);
    free(d->directory);
    free(d->removed);
    memset(d, 0, sizeof *d);
}

/* The recorded files, under st->lock. */
static int doomed_list(struct storage *st, struct doomed *d)
{
    return db_run(st, "SELECT path, directory FROM retention_files ORDER BY directory, path",
                  doomed_fn, d, NULL);
}

/* While D's files go, no new instance may take their names (a name freed
 * by an unlink could otherwise be taken, and a stop before the records go
 * would have the next open remove an acknowledged file). */
static void doomed_publish(struct storage *st, const struct doomed *d)
{
    pthread_mutex_lock(&st->doomed_lock);
    st->doomed = d ? d->path : NULL;
    st->n_doomed = d ? d->n : 0;
    pthread_mutex_unlock(&st->doomed_lock);
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
        /* Unlinks inside it are durable before their record goes. */
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

/* Removes the files of D, with no lock held: receiving carries on, and
 * flushes the removals, so that a power cut cannot bring back a file the
 * repair would index again. A record goes once its file is unlinked: a
 * record then always names a file that still exists, whose name no new
 * instance can take (link() never replaces). UID (may be NULL) names the
 * study for the test hook. Returns 0, or -1 when something stays. */
static int doomed_remove(struct storage *st, struct doomed *d, const char *uid)
{
    int hooked = 0, rc = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->directory[i])
            continue;
        d->removed[i] = file_unlink_gone(d->path[i]) == 0;
        if (!d->removed[i])
            rc = -1;
        if (!hooked && st->retain_hook) {
            hooked = 1;
            st->retain_hook(st->retain_hook_ud, uid ? uid : "");
        }
    }
    /* Results live in one directory, instances under their study's. */
    if (file_sync(st->results_dir, 1) != 0 && errno != ENOENT)
        rc = -1;
    for (size_t i = 0; i < d->n; i++)
        if (d->directory[i]) {
            d->removed[i] = remove_study_dirs(st, d->path[i]) == 0;
            if (!d->removed[i])
                rc = -1;
        }
    return rc;
}

/* Drops the records of the files D removed, under st->lock, in a synced
 * commit: once their names are free again, no record may come back. */
static int doomed_forget(struct storage *st, const struct doomed *d)
{
    int rc = db_begin_synced(st);
    for (size_t i = 0; rc == STORAGE_OK && i < d->n; i++)
        if (d->removed[i])
            rc = db_run(st, "DELETE FROM retention_files WHERE path=?1", NULL, NULL, "t",
                        d->path[i]);
    return db_end_synced(st, rc);
}

/* Lists the recorded files under the lock, removes them without it, and
 * forgets those removed under it again. */
static int remove_recorded(struct storage *st, const char *uid)
{
    struct doomed d = {0};
    pthread_mutex_lock(&st->lock);
    int rc = doomed_list(st, &d);
    pthread_mutex_unlock(&st->lock);
    if (rc == STORAGE_OK && d.n) {
        doomed_publish(st, &d);
        int removed = doomed_remove(st, &d, uid);
        pthread_mutex_lock(&st->lock);
        rc = doomed_forget(st, &d);
        pthread_mutex_unlock(&st->lock);
        doomed_publish(st, NULL);
        if (rc == STORAGE_OK && removed != 0)
            rc = STORAGE_EIO;
    }
    doomed_free(&d);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Finishing interrupted deletions                                          */

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

/* Detaches every study an earlier release left "deleting", in one synced
 * transaction, under st->lock. */
static int detach_left_deleting(struct storage *st)
{
    struct uids u = {0};
    int rc = db_run(st, "SELECT study_uid FROM studies WHERE state='deleting'", collect_uid_fn,
                    &u, NULL);
    if (rc == STORAGE_OK && u.n) {
        rc = db_begin_synced(st);
        for (size_t i = 0; rc == STORAGE_OK && i < u.n; i++)
            rc = detach_study(st, u.v[i]);
        rc = db_end_synced(st, rc);
    }
    for (size_t i = 0; i < u.n; i++)
        free(u.v[i]);
    free(u.v);
    return rc;
}

int retention_finish(struct storage *st, char *err, size_t errlen)
{
    pthread_mutex_lock(&st->lock);
    int rc = detach_left_deleting(st);
    pthread_mutex_unlock(&st->lock);
    if (rc == STORAGE_OK)
        rc = remove_recorded(st, NULL);
    if (rc != STORAGE_OK)
        return error_set(err, errlen, rc, "cannot finish deleting studies: %s",
                         rc == STORAGE_EIO && errno ? strerror(errno) : storage_strerror(rc));
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
    return 1;
}

/* Deletes the oldest finished study whose completion is before CUTOFF_MS:
 * its rows go and its files are recorded in one synced commit under the
 * lock (the record must be on disk before any file goes), then the files
 * go with no lock held. Returns 1 when a study went, 0 when none is
 * eligible, -1 on failure (recorded files are removed on a later run). */
static int retain_one(struct storage *st, int64_t cutoff_ms, char *err, size_t errlen)
{
    char uid[128] = "";
    pthread_mutex_lock(&st->lock);
    int rc = db_begin_synced(st);
    if (rc == STORAGE_OK)
        rc = db_run(st,
                    "SELECT study_uid FROM studies WHERE" STUDY_FINISHED
                    " AND coalesce(completed_at, last_received) < ?1"
                    " ORDER BY last_received, study_uid LIMIT 1",
                    uid_fn, uid, "I", cutoff_ms);
    if (rc == STORAGE_OK && uid[0])
        rc = detach_study(st, uid);
    int failed = rc != STORAGE_OK;
    if (failed) /* the reason, before the rollback clears it */
        error_set(err, errlen, rc, "sqlite: %s", sqlite3_errmsg(st->db));
    if ((rc = db_end_synced(st, rc)) != STORAGE_OK && !failed)
        error_set(err, errlen, rc, "sqlite: %s", sqlite3_errmsg(st->db));
    pthread_mutex_unlock(&st->lock);
    if (rc != STORAGE_OK)
        return -1;
    if (!uid[0])
        return 0;
    if (remove_recorded(st, uid) != STORAGE_OK) {
        error_set(err, errlen, -1, "cannot remove the files of a deleted study: %s",
                  strerror(errno)); /* no UID: this text is logged */
        return -1;
    }
    return 1;
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
    if (retention_finish(st, err, errlen) != STORAGE_OK)
        rc = -1;
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
