/*
 * job.c — the job queue: claim with a lease, renew, release, finish; the
 * stage markers and what open does with the jobs a dead node left.
 */
#include "storage/internal.h"

#include "common/crashpoint.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int claimed_fn(void *ud, sqlite3_stmt *row)
{
    struct storage_job *job = ud;
    job->id = sqlite3_column_int64(row, 0);
    snprintf(job->study_uid, sizeof job->study_uid, "%s", db_text(row, 1));
    snprintf(job->series_uid, sizeof job->series_uid, "%s", db_text(row, 2));
    job->attempts = sqlite3_column_int(row, 3);
    snprintf(job->model, sizeof job->model, "%s", db_text(row, 4));
    job->created_ms = sqlite3_column_int64(row, 5);
    return 0;
}

static int destination_fn(void *ud, sqlite3_stmt *row)
{
    struct storage_job *job = ud;
    char **d = realloc(job->destinations, (job->n_destinations + 1) * sizeof *d);
    if (!d)
        return STORAGE_ENOMEM;
    job->destinations = d;
    if (!(d[job->n_destinations] = strdup(db_text(row, 0))))
        return STORAGE_ENOMEM;
    job->n_destinations++;
    return 0;
}

void storage_job_clear(struct storage_job *job)
{
    for (size_t i = 0; i < job->n_destinations; i++)
        free(job->destinations[i]);
    free(job->destinations);
    memset(job, 0, sizeof *job);
}

/* Claims the first runnable job, by priority then age, of the models
 * named in MODELS (a JSON array), on the very series of job LIKE when LIKE
 * is not negative. */
static int claim(struct storage *st, const char *models, int64_t like, const char *owner,
                 int64_t now_ms, int64_t lease_ms, struct storage_job *job)
{
    int rc;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        memset(job, 0, sizeof *job);
        job->id = -1;
        rc = db_run(st,
                    "UPDATE jobs SET state='running', lease_owner=?2, lease_until=?3 + ?4,"
                    "  started_at=?3, attempts=attempts + 1, stage=NULL, stage_started=NULL"
                    " WHERE id=(SELECT id FROM jobs WHERE model IN (SELECT value FROM json_each(?1))"
                    "  AND (?5 < 0 OR series=(SELECT series FROM jobs WHERE id=?5))"
                    "  AND (state='queued' OR"
                    "  (state='running' AND lease_until < ?3)) ORDER BY priority, id LIMIT 1)"
                    " RETURNING id, study_uid, series_uid, attempts, model, created_at",
                    claimed_fn, job, "ttIII", models, owner, now_ms, lease_ms, like);
        if (rc != STORAGE_OK)
            break;
        if (job->id < 0) {
            rc = STORAGE_ENOTFOUND;
            break;
        }
        if (job->attempts <= STORAGE_JOB_MAX_ATTEMPTS) {
            rc = db_run(st,
                        "SELECT destination FROM job_destinations WHERE job_id=?1"
                        " ORDER BY position",
                        destination_fn, job, "I", job->id);
            if (rc != STORAGE_OK)
                storage_job_clear(job);
            break;
        }
        /* It has been claimed and lost too often: give up on it. */
        char msg[128];
        snprintf(msg, sizeof msg, "gave up after %d attempts (the worker stopped each time)",
                 STORAGE_JOB_MAX_ATTEMPTS);
        if ((rc = db_run(st,
                         "UPDATE jobs SET state='failed', error=?2, finished_at=?3,"
                         "  lease_owner=NULL, lease_until=NULL WHERE id=?1",
                         NULL, NULL, "ItI", job->id, msg, now_ms)) != STORAGE_OK)
            break;
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_job_claim(struct storage *st, const char *model, const char *owner, int64_t now_ms,
                      int64_t lease_ms, struct storage_job *job)
{
    /* Model names are letters, digits, '_', '.' and '-' (config.h): a
     * JSON string as they are. */
    char models[160];
    if ((size_t)snprintf(models, sizeof models, "[\"%s\"]", model) >= sizeof models)
        return STORAGE_EINVAL;
    return claim(st, models, -1, owner, now_ms, lease_ms, job);
}

int storage_job_claim_among(struct storage *st, const char *models, int64_t like_job,
                            const char *owner, int64_t now_ms, int64_t lease_ms,
                            struct storage_job *job)
{
    return claim(st, models, like_job, owner, now_ms, lease_ms, job);
}

/* Runs an UPDATE of job ID held by OWNER (?1, ?2; VALUE is ?3 when ARGS
 * names it): STORAGE_ENOTFOUND when the owner no longer holds it. */
static int update_held(struct storage *st, const char *sql, const char *args, int64_t id,
                       const char *owner, int64_t value)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st, sql, NULL, NULL, args, id, owner, value);
    if (rc == STORAGE_OK && db_changes(st) != 1)
        rc = STORAGE_ENOTFOUND;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_job_renew(struct storage *st, int64_t id, const char *owner, int64_t until_ms)
{
    return update_held(st,
                       "UPDATE jobs SET lease_until=?3 WHERE id=?1 AND lease_owner=?2"
                       " AND state='running'",
                       "ItI", id, owner, until_ms);
}

int storage_job_release(struct storage *st, int64_t id, const char *owner)
{
    return update_held(st,
                       "UPDATE jobs SET state='queued', attempts=attempts - 1,"
                       "  lease_owner=NULL, lease_until=NULL, started_at=NULL,"
                       "  stage=NULL, stage_started=NULL"
                       " WHERE id=?1 AND lease_owner=?2 AND state='running'",
                       "It", id, owner, 0);
}

static int study_fn(void *ud, sqlite3_stmt *row)
{
    char **study = ud;
    *study = strdup(db_text(row, 0));
    return *study ? 0 : STORAGE_ENOMEM;
}

int storage_job_finish(struct storage *st, int64_t id, const char *owner, int64_t now_ms,
                       const char *error, const char *result, const char *summary,
                       const struct storage_send_item *items, size_t n_items)
{
    char *study = NULL;
    int rc;
    pthread_mutex_lock(&st->lock);
    if ((rc = db_begin(st)) != STORAGE_OK)
        goto out;
    rc = db_run(st,
                "UPDATE jobs SET state=?3, error=?4, result=?5, summary=?6,"
                "  finished_at=?7, lease_owner=NULL, lease_until=NULL,"
                "  stage=NULL, stage_started=NULL"
                " WHERE id=?1 AND lease_owner=?2 AND state='running'"
                " RETURNING study_uid",
                study_fn, &study, "Ittooo" "I", id, owner, error ? "failed" : "done", error,
                result, summary, now_ms);
    if (rc == STORAGE_OK && !study)
        rc = STORAGE_ENOTFOUND; /* another worker holds it now */
    /* The results and the decision to send them are recorded together: a
     * crash leaves either a job to run again or items to send. */
    for (size_t i = 0; rc == STORAGE_OK && !error && i < n_items; i++) {
        const struct storage_send_item *it = &items[i];
        rc = db_run(st,
                    "INSERT INTO outbox(destination, study_uid, job_id, kind, path,"
                    "  sop_class_uid, sop_instance_uid, transfer_syntax,"
                    "  next_attempt, created_at)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                    NULL, NULL, "ttIttttt" "I", it->destination, study, id, it->kind, it->path,
                    it->sop_class_uid, it->sop_instance_uid, it->transfer_syntax, now_ms);
    }
    if (rc == STORAGE_OK) {
        CRASH_POINT("results.before_commit"); /* done and outbox rows, not committed */
        rc = db_commit(st);
    }
    if (rc != STORAGE_OK)
        db_rollback(st);
    else
        CRASH_POINT("results.committed"); /* to send, the sender not woken */
out:
    pthread_mutex_unlock(&st->lock);
    free(study);
    return rc;
}

int storage_job_stage(struct storage *st, int64_t id, const char *owner, const char *stage,
                      int64_t now_ms)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "UPDATE jobs SET stage=?3, stage_started=CASE WHEN ?3 IS NULL THEN NULL"
                    "  ELSE ?4 END WHERE id=?1 AND lease_owner=?2 AND state='running'",
                    NULL, NULL, "ItoI", id, owner, stage, now_ms);
    if (rc == STORAGE_OK && db_changes(st) != 1)
        rc = STORAGE_ENOTFOUND;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

const char *storage_crash_record_path(const struct storage *st)
{
    return st->crash_record;
}

int storage_job_retry(struct storage *st, int64_t id)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "UPDATE jobs SET state='queued', error=NULL, attempts=0, stops=0,"
                    "  started_at=NULL, finished_at=NULL, stage=NULL, stage_started=NULL"
                    " WHERE id=?1 AND state='quarantined'",
                    NULL, NULL, "I", id);
    if (rc == STORAGE_OK && db_changes(st) != 1)
        rc = STORAGE_ENOTFOUND;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* At open                                                                  */

#define MAX_CRASHED 64

/* The crash record: jobs named in it, and the signal each died of. */
struct crashed {
    int64_t id[MAX_CRASHED];
    int sig[MAX_CRASHED];
    int n;
};

static void read_crash_record(const char *path, struct crashed *c)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    long long id;
    int sig;
    while (c->n < MAX_CRASHED && fscanf(f, "%lld %d", &id, &sig) == 2) {
        c->id[c->n] = id;
        c->sig[c->n++] = sig;
    }
    fclose(f);
}

static const char *signal_name(int sig, char *buf, size_t len)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    }
    snprintf(buf, len, "signal %d", sig);
    return buf;
}

/* A job the previous process left inside a stage. */
struct in_stage {
    int64_t id;
    char stage[32];
    int stops;
};

struct in_stage_list {
    struct in_stage *v;
    size_t n;
};

static int in_stage_fn(void *ud, sqlite3_stmt *row)
{
    struct in_stage_list *l = ud;
    struct in_stage *v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return STORAGE_ENOMEM;
    l->v = v;
    v[l->n].id = sqlite3_column_int64(row, 0);
    snprintf(v[l->n].stage, sizeof v[l->n].stage, "%s", db_text(row, 1));
    v[l->n].stops = sqlite3_column_int(row, 2);
    l->n++;
    return 0;
}

int job_recover(struct storage *st, char *err, size_t errlen)
{
    struct crashed crashed;
    struct in_stage_list l = {NULL, 0};
    read_crash_record(st->crash_record, &crashed);
    int rc = db_begin(st);
    if (rc == STORAGE_OK)
        rc = db_run(st,
                    "SELECT id, stage, stops FROM jobs WHERE state='running'"
                    " AND stage IS NOT NULL ORDER BY id",
                    in_stage_fn, &l, NULL);
    for (size_t i = 0; rc == STORAGE_OK && i < l.n; i++) {
        const struct in_stage *j = &l.v[i];
        char why[160], sigbuf[32];
        int sig = 0;
        for (int k = 0; k < crashed.n; k++)
            if (crashed.id[k] == j->id)
                sig = crashed.sig[k];
        if (sig)
            snprintf(why, sizeof why, "the node crashed (%s) during %s",
                     signal_name(sig, sigbuf, sizeof sigbuf), j->stage);
        else if (j->stops + 1 >= STORAGE_JOB_MAX_STOPS)
            snprintf(why, sizeof why, "the node stopped during %s %d times",
                     j->stage, j->stops + 1);
        else
            why[0] = '\0';
        /* Quarantined, or counted and queued again below. */
        rc = db_run(st,
                    "UPDATE jobs SET stops=stops + 1, state=CASE WHEN ?2 IS NULL THEN state"
                    "  ELSE 'quarantined' END, error=?2,"
                    "  finished_at=CASE WHEN ?2 IS NULL THEN NULL ELSE stage_started END"
                    " WHERE id=?1",
                    NULL, NULL, "Io", j->id, why);
    }
    if (rc == STORAGE_OK)
        rc = db_run(st,
                    "UPDATE jobs SET lease_owner=NULL, lease_until=NULL, stage=NULL,"
                    "  stage_started=NULL, state=CASE state WHEN 'running' THEN 'queued'"
                    "  ELSE state END WHERE state IN ('running', 'quarantined')"
                    "  AND (lease_owner IS NOT NULL OR stage IS NOT NULL)",
                    NULL, NULL, NULL);
    if (rc == STORAGE_OK)
        rc = db_commit(st);
    if (rc != STORAGE_OK)
        db_rollback(st);
    free(l.v);
    if (rc != STORAGE_OK)
        return error_set(err, errlen, rc, "cannot recover the jobs: %s", sqlite3_errmsg(st->db));
    /* Applied: a crash before this unlink reads the record again, which
     * then names no job left inside a stage. */
    if (unlink(st->crash_record) != 0 && errno != ENOENT)
        return error_set(err, errlen, STORAGE_EIO, "cannot remove %s: %s", st->crash_record,
                         strerror(errno));
    return STORAGE_OK;
}

int storage_job_identity(struct storage *st, int64_t id, const char *owner,
                         const char *model_sha256, const char *manifest_sha256)
{
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "UPDATE jobs SET model_sha256=?3, manifest_sha256=?4"
                    " WHERE id=?1 AND lease_owner=?2 AND state='running'",
                    NULL, NULL, "Itt" "t", id, owner, model_sha256, manifest_sha256);
    if (rc == STORAGE_OK && db_changes(st) != 1)
        rc = STORAGE_ENOTFOUND;
    pthread_mutex_unlock(&st->lock);
    return rc;
}
