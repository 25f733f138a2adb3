/*
 * db.c — the database: open modes, numbered migrations, the schema check
 * against common/attr.def, and the one statement loop the other files use.
 *
 * Schema versions: PRAGMA user_version holds the number of migrations
 * applied. Opening for serving applies the missing ones in order, in one
 * transaction with the new version number, so a store is at one version or
 * the next, never between. A store from before versions were recorded has
 * user_version 0 and the tables of migration 1, which creates only what is
 * missing: it is recognised and migrated like an empty one. A migration is
 * history: once released it never changes; what attr.def adds comes with a
 * migration of its own, and open checks that every attribute has its
 * column, so a forgotten migration fails at once with its name.
 */
#include "storage/internal.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Migration N is migrations[N - 1]. */
static const char *const migrations[] = {
    /* 1: the schema of the first release (tables made if missing). */
    "CREATE TABLE IF NOT EXISTS meta("
    "  key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS patients("
    "  id INTEGER PRIMARY KEY,"
    "  patient_id TEXT NOT NULL, issuer TEXT NOT NULL,"
    "  patient_name TEXT, birth_date TEXT, sex TEXT,"
    "  UNIQUE(patient_id, issuer));"
    "CREATE TABLE IF NOT EXISTS studies("
    "  study_uid TEXT PRIMARY KEY,"
    "  patient INTEGER REFERENCES patients(id),"
    "  study_date TEXT, study_time TEXT, accession_number TEXT, study_id TEXT,"
    "  study_description TEXT,"
    "  state TEXT NOT NULL DEFAULT 'receiving',"
    "  first_received INTEGER NOT NULL, last_received INTEGER NOT NULL,"
    "  completed_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS studies_state ON studies(state);"
    "CREATE TABLE IF NOT EXISTS series("
    "  series_uid TEXT PRIMARY KEY,"
    "  study_uid TEXT NOT NULL REFERENCES studies(study_uid),"
    "  modality TEXT, body_part_examined TEXT, series_description TEXT,"
    "  protocol_name TEXT, manufacturer TEXT, series_number TEXT,"
    "  routing TEXT);" /* NULL until its study completes; then matched | unmatched */
    "CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);"
    "CREATE TABLE IF NOT EXISTS instances("
    "  sop_instance_uid TEXT PRIMARY KEY,"
    "  series_uid TEXT NOT NULL REFERENCES series(series_uid),"
    "  sop_class_uid TEXT NOT NULL, transfer_syntax TEXT NOT NULL,"
    "  instance_number TEXT, image_type TEXT, slice_thickness TEXT,"
    "  rows INTEGER, columns INTEGER, number_of_frames INTEGER, contrast_bolus_agent TEXT,"
    "  calling_ae TEXT, called_ae TEXT, source_addr TEXT,"
    "  received_at INTEGER NOT NULL,"
    "  path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);"
    "CREATE TABLE IF NOT EXISTS jobs("
    "  id INTEGER PRIMARY KEY,"
    "  study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, model TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'queued',"
    "  priority INTEGER NOT NULL DEFAULT 1,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  lease_owner TEXT, lease_until INTEGER,"
    "  error TEXT, result TEXT, summary TEXT, send_to TEXT,"
    "  created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(model, state, priority, id);"
    "CREATE INDEX IF NOT EXISTS jobs_study ON jobs(study_uid);"
    "CREATE TABLE IF NOT EXISTS outbox("
    "  id INTEGER PRIMARY KEY,"
    "  destination TEXT NOT NULL, study_uid TEXT NOT NULL, job_id INTEGER,"
    "  kind TEXT NOT NULL, path TEXT NOT NULL,"
    "  sop_class_uid TEXT NOT NULL, sop_instance_uid TEXT NOT NULL,"
    "  transfer_syntax TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt INTEGER NOT NULL, error TEXT,"
    "  created_at INTEGER NOT NULL, sent_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt);",
    /* 2: ViewPosition (0018,5101). */
    "ALTER TABLE series ADD COLUMN view_position TEXT;",
    /* 3: a job's destinations as rows, not comma-separated text; job ids
     * never reused (AUTOINCREMENT), so neither are result file names; the
     * files of deleted studies still to be removed (retention.c). */
    "CREATE TEMP TABLE split_destinations AS"
    "  WITH RECURSIVE split(job_id, position, rest, destination) AS ("
    "    SELECT id, -1, send_to || ',', NULL FROM jobs WHERE coalesce(send_to, '') <> ''"
    "    UNION ALL"
    "    SELECT job_id, position + 1, substr(rest, instr(rest, ',') + 1),"
    "      substr(rest, 1, instr(rest, ',') - 1) FROM split WHERE rest <> '')"
    "  SELECT job_id, position, destination FROM split"
    "  WHERE coalesce(destination, '') <> '';"
    "CREATE TABLE jobs_v3("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, model TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'queued',"
    "  priority INTEGER NOT NULL DEFAULT 1,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  lease_owner TEXT, lease_until INTEGER,"
    "  error TEXT, result TEXT, summary TEXT,"
    "  created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER);"
    "INSERT INTO jobs_v3 SELECT id, study_uid, series_uid, model, state, priority, attempts,"
    "  lease_owner, lease_until, error, result, summary, created_at, started_at, finished_at"
    "  FROM jobs;"
    "DROP TABLE jobs;"
    "ALTER TABLE jobs_v3 RENAME TO jobs;"
    "CREATE INDEX jobs_claim ON jobs(model, state, priority, id);"
    "CREATE INDEX jobs_study ON jobs(study_uid);"
    "CREATE TABLE job_destinations("
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  position INTEGER NOT NULL, destination TEXT NOT NULL,"
    "  PRIMARY KEY(job_id, position));"
    "INSERT INTO job_destinations SELECT job_id, position, destination"
    "  FROM temp.split_destinations;"
    "DROP TABLE temp.split_destinations;"
    "CREATE TABLE retention_files("
    "  path TEXT PRIMARY KEY, directory INTEGER NOT NULL DEFAULT 0);",
    /* 4: the risky stage a running job is in (NULL between stages) and how
     * often the node stopped during one of its stages: a job found inside
     * a stage at open was running when its node died (job.c). */
    "ALTER TABLE jobs ADD COLUMN stage TEXT;"
    "ALTER TABLE jobs ADD COLUMN stage_started INTEGER;"
    "ALTER TABLE jobs ADD COLUMN stops INTEGER NOT NULL DEFAULT 0;",
    /* 5: why a study is held back from completion (NULL: it is not);
     * a column so that the hold outlives a restart (hold.c). */
    "ALTER TABLE studies ADD COLUMN held TEXT;",
    /* 6: the audit trail (audit.c): every association request and every
     * attempt to send a result or a forwarded instance. */
    "CREATE TABLE audit_associations("
    "  id INTEGER PRIMARY KEY,"
    "  started_ms INTEGER NOT NULL, ended_ms INTEGER NOT NULL,"
    "  calling_ae TEXT NOT NULL, called_ae TEXT NOT NULL, address TEXT NOT NULL,"
    "  tls_peer TEXT,"
    "  stored INTEGER NOT NULL, refused INTEGER NOT NULL, outcome TEXT NOT NULL);"
    "CREATE INDEX audit_associations_started ON audit_associations(started_ms);"
    "CREATE TABLE audit_results("
    "  id INTEGER PRIMARY KEY,"
    "  time_ms INTEGER NOT NULL, kind TEXT NOT NULL, destination TEXT NOT NULL,"
    "  peer TEXT, sop_instance_uid TEXT,"
    "  outcome TEXT NOT NULL, error TEXT, attempts INTEGER NOT NULL);"
    "CREATE INDEX audit_results_time ON audit_results(time_ms);",
    /* 7: PixelSpacing (0028,0030) and PhotometricInterpretation (0028,0004),
     * for the models' input.accept; the SHA-256 of the model file and of
     * its manifest a job ran with (its identity, set as it starts). */
    "ALTER TABLE instances ADD COLUMN pixel_spacing TEXT;"
    "ALTER TABLE instances ADD COLUMN photometric_interpretation TEXT;"
    "ALTER TABLE jobs ADD COLUMN model_sha256 TEXT;"
    "ALTER TABLE jobs ADD COLUMN manifest_sha256 TEXT;",
    /* 8: every series a job covers, as a JSON array (the first is
     * series_uid): a model that takes the study runs once on several. */
    "ALTER TABLE jobs ADD COLUMN series TEXT;"
    "UPDATE jobs SET series=json_array(series_uid);",
    /* 9: the paged listings (listing.c), newest first: studies by
     * (first_received, rowid), jobs by (created_at, id), each alone and
     * after an equality filter (state; a job's model), so that a page
     * reads its rows and no others; the sends of a page's studies. Every
     * index of a rowid table ends with the rowid, which breaks ties. The
     * state index of studies is kept whole in the new (state,
     * first_received) one. */
    "CREATE INDEX studies_recent ON studies(first_received);"
    "CREATE INDEX studies_state_recent ON studies(state, first_received);"
    "DROP INDEX IF EXISTS studies_state;"
    "CREATE INDEX jobs_recent ON jobs(created_at);"
    "CREATE INDEX jobs_state_recent ON jobs(state, created_at);"
    "CREATE INDEX jobs_model_recent ON jobs(model, created_at);"
    "CREATE INDEX outbox_study ON outbox(study_uid);",
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

int storage_schema_version(void)
{
    return SCHEMA_VERSION;
}

const char *storage_strerror(int err)
{
    switch (err) {
    case STORAGE_OK: return "ok";
    case STORAGE_EINVAL: return "instance cannot be used";
    case STORAGE_EIO: return "storage failure";
    case STORAGE_ENOMEM: return "out of memory";
    case STORAGE_ENOTFOUND: return "not found";
    case STORAGE_ECONFLICT: return "the study changed meanwhile";
    case STORAGE_EVERSION: return "the store has a schema version this ainode cannot use";
    case STORAGE_EINTEGRITY: return "the instance contradicts what is stored";
    case STORAGE_EACCESS: return "the data directory is writable by every user";
    }
    return "unknown storage error";
}

/* ------------------------------------------------------------------------ */
/* Statements                                                               */

const char *db_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

void db_bind_attr(sqlite3_stmt *s, int i, enum attr_kind kind, const char *v)
{
    if (!v || !*v) {
        sqlite3_bind_null(s, i);
        return;
    }
    if (kind == ATTR_KIND_INT) {
        char *end;
        long long n = strtoll(v, &end, 10);
        if (*end == '\0')
            sqlite3_bind_int64(s, i, n);
        else
            sqlite3_bind_null(s, i);
        return;
    }
    sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

static void bind_args(sqlite3_stmt *s, const char *args, va_list ap)
{
    for (int i = 1; args && *args; args++, i++) {
        const char *v;
        switch (*args) {
        case 't':
            v = va_arg(ap, const char *);
            if (v)
                sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(s, i);
            break;
        case 'o':
            db_bind_attr(s, i, ATTR_KIND_TEXT, va_arg(ap, const char *));
            break;
        case 'i':
            sqlite3_bind_int(s, i, va_arg(ap, int));
            break;
        case 'I':
            sqlite3_bind_int64(s, i, va_arg(ap, int64_t));
            break;
        }
    }
}

int db_step(sqlite3_stmt *s, db_row_fn row, void *ud)
{
    int rc, stop = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        if (row && (stop = row(ud, s)) != 0)
            break;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (stop)
        return stop < 0 ? stop : STORAGE_OK;
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

int db_run(struct storage *st, const char *sql, db_row_fn row, void *ud, const char *args, ...)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return STORAGE_EIO;
    va_list ap;
    va_start(ap, args);
    bind_args(s, args, ap);
    va_end(ap);
    int rc = db_step(s, row, ud);
    sqlite3_finalize(s);
    return rc;
}

int db_changes(struct storage *st)
{
    return sqlite3_changes(st->db);
}

int db_exec(struct storage *st, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        error_set(err, errlen, STORAGE_EIO, "sqlite: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return STORAGE_EIO;
    }
    return STORAGE_OK;
}

int db_begin(struct storage *st)
{
    return db_exec(st, "BEGIN IMMEDIATE", NULL, 0);
}

int db_commit(struct storage *st)
{
    return db_exec(st, "COMMIT", NULL, 0);
}

void db_rollback(struct storage *st)
{
    db_exec(st, "ROLLBACK", NULL, 0);
}

int db_begin_synced(struct storage *st)
{
    if (!st->sync_full)
        db_exec(st, "PRAGMA synchronous=FULL", NULL, 0);
    return db_begin(st);
}

int db_end_synced(struct storage *st, int rc)
{
    if (rc == STORAGE_OK)
        rc = db_commit(st);
    if (rc != STORAGE_OK)
        db_rollback(st);
    if (!st->sync_full)
        db_exec(st, "PRAGMA synchronous=NORMAL", NULL, 0);
    return rc;
}

char *db_json_array(const char *const *uids, size_t n)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        return NULL;
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",\"" : "\"", f);
        for (const unsigned char *c = (const unsigned char *)uids[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                fprintf(f, "\\%c", *c);
            else if (*c < 0x20)
                fprintf(f, "\\u%04x", *c);
            else
                fputc(*c, f);
        }
        fputc('"', f);
    }
    fputc(']', f);
    if (fclose(f) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

const char *db_level_table(enum attr_level level)
{
    static const char *const tables[] = {"patients", "studies", "series", "instances"};
    return tables[level];
}

/* ------------------------------------------------------------------------ */
/* Versions                                                                 */

static int row_int(void *ud, sqlite3_stmt *row)
{
    *(int *)ud = sqlite3_column_int(row, 0);
    return 1;
}

/* The version of the store: user_version, where 0 with tables means the
 * first release (1), and 0 without them an empty file (0). */
static int store_version(struct storage *st, int *version)
{
    int v = 0, tables = 0;
    if (db_run(st, "PRAGMA user_version", row_int, &v, NULL) != STORAGE_OK ||
        db_run(st, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='studies'",
               row_int, &tables, NULL) != STORAGE_OK)
        return STORAGE_EIO;
    *version = v == 0 && tables ? 1 : v;
    return STORAGE_OK;
}

/* Applies the migrations after the stored version, all in one transaction. */
static int migrate(struct storage *st, char *err, size_t errlen)
{
    int v = 0;
    if (db_run(st, "PRAGMA user_version", row_int, &v, NULL) != STORAGE_OK)
        return error_set(err, errlen, STORAGE_EIO, "sqlite: %s", sqlite3_errmsg(st->db));
    if (v > SCHEMA_VERSION)
        return error_set(err, errlen, STORAGE_EVERSION,
                         "the store in %s has schema version %d, written by a newer ainode "
                         "(this one knows up to %d): refusing to open it",
                         st->data_dir, v, SCHEMA_VERSION);
    if (v == SCHEMA_VERSION)
        return STORAGE_OK;
    if (db_exec(st, "BEGIN IMMEDIATE", err, errlen) != STORAGE_OK)
        return STORAGE_EIO;
    for (int i = v; i < SCHEMA_VERSION; i++) {
        if (db_exec(st, migrations[i], err, errlen) != STORAGE_OK) {
            size_t n = strlen(err ? err : "");
            if (err && n < errlen)
                snprintf(err + n, errlen - n, " (migration %d)", i + 1);
            db_rollback(st);
            return STORAGE_EIO;
        }
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", SCHEMA_VERSION);
    if (db_exec(st, sql, err, errlen) != STORAGE_OK || db_exec(st, "COMMIT", err, errlen)) {
        db_rollback(st);
        return STORAGE_EIO;
    }
    return STORAGE_OK;
}

/* Every attribute of attr.def has its column: a migration that adds it was
 * not forgotten. */
static int check_columns(struct storage *st, char *err, size_t errlen)
{
    for (int i = 0; i < ATTR_COUNT; i++) {
        char sql[256];
        sqlite3_stmt *s;
        snprintf(sql, sizeof sql, "SELECT %s FROM %s LIMIT 0", attr_table[i].column,
                 db_level_table(attr_table[i].level));
        if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
            return error_set(err, errlen, STORAGE_EVERSION,
                             "the store has no column %s.%s for %s (common/attr.def): "
                             "a migration is missing (%s)",
                             db_level_table(attr_table[i].level), attr_table[i].column,
                             attr_table[i].keyword, sqlite3_errmsg(st->db));
        sqlite3_finalize(s);
    }
    return STORAGE_OK;
}

/* A read-only or administrative open uses the store as it is: only the
 * node migrates. */
static int check_version(struct storage *st, char *err, size_t errlen)
{
    int v;
    if (store_version(st, &v) != STORAGE_OK)
        return error_set(err, errlen, STORAGE_EIO, "sqlite: %s", sqlite3_errmsg(st->db));
    if (v == 0)
        return error_set(err, errlen, STORAGE_ENOTFOUND, "no store in %s (nothing received)",
                         st->data_dir);
    if (v > SCHEMA_VERSION)
        return error_set(err, errlen, STORAGE_EVERSION,
                         "the store in %s has schema version %d, written by a newer ainode "
                         "(this one knows up to %d)",
                         st->data_dir, v, SCHEMA_VERSION);
    if (v < SCHEMA_VERSION)
        return error_set(err, errlen, STORAGE_EVERSION,
                         "the store in %s has schema version %d, this ainode uses %d: start "
                         "the node once to migrate it",
                         st->data_dir, v, SCHEMA_VERSION);
    return STORAGE_OK;
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                           */

static int meta_clean_stop(void *ud, sqlite3_stmt *row)
{
    *(int *)ud = sqlite3_column_int(row, 0);
    return 1;
}

static int set_clean_stop(struct storage *st, int value)
{
    return db_run(st,
                  "INSERT INTO meta(key, value) VALUES('clean_stop', ?1)"
                  " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                  NULL, NULL, "i", value);
}

static void free_handle(struct storage *st)
{
    instance_finalize(st);
    if (st->db)
        sqlite3_close(st->db);
    free(st->last_parents);
    free(st->series_rows_sql);
    free(st->data_dir);
    free(st->tmp_dir);
    free(st->inst_dir);
    free(st->results_dir);
    free(st->quarantine_dir);
    free(st->crash_record);
    pthread_mutex_destroy(&st->lock);
    pthread_mutex_destroy(&st->doomed_lock);
    file_dir_syncs_free(st->dir_syncs);
    free(st);
}

/* The node's upkeep at open: migrations, the repair after an unclean
 * stop, deletions left unfinished, jobs left running. */
static int open_serving(struct storage *st, char *err, size_t errlen)
{
    int rc;
    if (file_mkdir_durable(st->data_dir, st->tmp_dir) ||
        file_mkdir_durable(st->data_dir, st->inst_dir))
        return error_set(err, errlen, STORAGE_EIO, "cannot create directories under %s: %s",
                         st->data_dir, strerror(errno));
    if ((rc = db_exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                          "PRAGMA foreign_keys=ON;", err, errlen)) ||
        (rc = migrate(st, err, errlen)) || (rc = check_columns(st, err, errlen)))
        return rc;
    if (file_empty_dir(st->tmp_dir) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot empty %s: %s", st->tmp_dir,
                         strerror(errno));
    if ((rc = instance_prepare(st, err, errlen)) != STORAGE_OK)
        return rc;
    if (plan_prepare(st) != STORAGE_OK)
        return STORAGE_ENOMEM;
    int clean = 1;
    if (db_run(st, "SELECT value FROM meta WHERE key='clean_stop'", meta_clean_stop, &clean,
               NULL) != STORAGE_OK)
        return error_set(err, errlen, STORAGE_EIO, "sqlite: %s", sqlite3_errmsg(st->db));
    /* Cheap, so done after any stop: a deletion interrupted midway would
     * otherwise leave files nothing refers to. Before the repair, which
     * would index those files again. */
    if ((rc = retention_finish(st, err, errlen)) != STORAGE_OK)
        return rc;
    if (!clean && instance_repair(st) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot repair instances/: %s",
                         strerror(errno));
    /* This process is the only one that runs jobs: whatever a previous
     * one left running is runnable again, unless it killed that one. */
    if ((rc = job_recover(st, err, errlen)) != STORAGE_OK)
        return rc;
    /* Durable before any instance is acknowledged: a power cut from here
     * on must lead to the repair. Then rows stop waiting for the disk
     * (see storage.h). */
    st->sync_full = 0;
    if (set_clean_stop(st, 0) != STORAGE_OK ||
        db_exec(st, "PRAGMA synchronous=NORMAL", err, errlen) != STORAGE_OK)
        return error_set(err, errlen, STORAGE_EIO, "sqlite: %s", sqlite3_errmsg(st->db));
    return STORAGE_OK;
}

/* Creates DATA_DIR private, or checks that an existing one is: refused
 * when every user may write in it, a warning when every user may read it
 * or its group may write (an administrator may mean that). */
static int data_dir_private(const char *data_dir, char *err, size_t errlen)
{
    if (mkdir(data_dir, 0750) == 0)
        return chmod(data_dir, 0750) == 0
                   ? STORAGE_OK
                   : error_set(err, errlen, STORAGE_EIO, "cannot make %s private: %s", data_dir,
                               strerror(errno));
    struct stat sb;
    if (errno != EEXIST || stat(data_dir, &sb) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot create %s: %s", data_dir,
                         strerror(errno));
    unsigned perm = (unsigned)sb.st_mode & 07777;
    if (sb.st_mode & S_IWOTH)
        return error_set(err, errlen, STORAGE_EACCESS,
                         "the data directory %s has mode %04o: every user may write in it and "
                         "replace what it stores; make it private (chmod 750 %s)",
                         data_dir, perm, data_dir);
    if (sb.st_mode & (S_IROTH | S_IXOTH | S_IWGRP))
        log_event(LOG_WARN, "store.permissions", NULL,
                  "the data directory %s has mode %04o: %s; chmod 750 %s makes it private",
                  data_dir, perm,
                  sb.st_mode & (S_IROTH | S_IXOTH) ? "every user may read the instances it holds"
                                                   : "its group may write in it",
                  data_dir);
    return STORAGE_OK;
}

/* The database file, made (or, from an earlier release, turned) 0640
 * before SQLite opens it: SQLite gives the -wal and -shm files the mode
 * of the database. */
static int db_file_private(const char *dbpath, char *err, size_t errlen)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", dbpath, suffix[i]);
        int fd = open(path, O_RDWR | O_CLOEXEC | (i == 0 ? O_CREAT : 0), 0640);
        if (fd < 0 && (i > 0 && errno == ENOENT))
            continue;
        if (fd < 0 || fchmod(fd, 0640) != 0) {
            int saved = errno;
            if (fd >= 0)
                close(fd);
            return error_set(err, errlen, STORAGE_EIO, "cannot make %s private: %s", path,
                             strerror(saved));
        }
        close(fd);
    }
    return STORAGE_OK;
}

static int open_mode(const char *data_dir, enum storage_mode mode, storage_read_fn read,
                     void *read_ud, struct storage **out, char *err, size_t errlen)
{
    *out = NULL;
    struct storage *st = calloc(1, sizeof *st);
    if (!st)
        return error_set(err, errlen, STORAGE_ENOMEM, "out of memory");
    st->mode = mode;
    st->read = read;
    st->read_ud = read_ud;
    st->sync_full = 1;
    pthread_mutex_init(&st->lock, NULL);
    pthread_mutex_init(&st->doomed_lock, NULL);
    st->data_dir = strdup(data_dir);
    st->tmp_dir = file_join(data_dir, "tmp");
    st->inst_dir = file_join(data_dir, "instances");
    st->results_dir = file_join(data_dir, "results");
    st->quarantine_dir = file_join(data_dir, "quarantine");
    st->crash_record = file_join(data_dir, "job-crash");
    st->dir_syncs = file_dir_syncs_new();
    char *dbpath = file_join(data_dir, "ainode.db");
    int rc;
    if (!st->data_dir || !st->tmp_dir || !st->inst_dir || !st->results_dir || !st->dir_syncs ||
        !st->quarantine_dir || !st->crash_record || !dbpath) {
        rc = error_set(err, errlen, STORAGE_ENOMEM, "out of memory");
        goto fail;
    }
    if (mode == STORAGE_MODE_SERVE &&
        ((rc = data_dir_private(data_dir, err, errlen)) != STORAGE_OK ||
         (rc = db_file_private(dbpath, err, errlen)) != STORAGE_OK))
        goto fail;
    int flags = mode == STORAGE_MODE_READONLY ? SQLITE_OPEN_READONLY
                : mode == STORAGE_MODE_ADMIN  ? SQLITE_OPEN_READWRITE
                                              : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(dbpath, &st->db, flags | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        rc = error_set(err, errlen, STORAGE_EIO, "cannot open %s: %s", dbpath,
                       st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 10000);
    if (mode == STORAGE_MODE_SERVE) {
        rc = open_serving(st, err, errlen);
    } else {
        rc = check_version(st, err, errlen);
        if (rc == STORAGE_OK)
            rc = check_columns(st, err, errlen);
        if (rc == STORAGE_OK && plan_prepare(st) != STORAGE_OK)
            rc = error_set(err, errlen, STORAGE_ENOMEM, "out of memory");
        if (rc == STORAGE_OK && mode == STORAGE_MODE_ADMIN)
            rc = db_exec(st, "PRAGMA synchronous=FULL", err, errlen);
    }
    if (rc != STORAGE_OK)
        goto fail;
    free(dbpath);
    *out = st;
    return STORAGE_OK;
fail:
    free(dbpath);
    free_handle(st);
    return rc;
}

int storage_open(const char *data_dir, storage_read_fn read, void *read_ud,
                 struct storage **out, char *err, size_t errlen)
{
    return open_mode(data_dir, STORAGE_MODE_SERVE, read, read_ud, out, err, errlen);
}

int storage_exists(const char *data_dir, char *err, size_t errlen)
{
    char db[PATH_MAX];
    struct stat sb;
    if (snprintf(db, sizeof db, "%s/ainode.db", data_dir) >= (int)sizeof db) {
        error_set(err, errlen, -1, "%s: path too long", data_dir);
        return -1;
    }
    if (stat(db, &sb) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    /* Above all EACCES: the data directory is the node user's alone. An
     * empty listing here would tell the admin that nothing was stored. */
    error_set(err, errlen, -1, "cannot read %s: %s (run the command as the user the node runs "
                               "as, e.g. sudo -u ainode)", db, strerror(errno));
    return -1;
}

int storage_open_readonly(const char *data_dir, struct storage **out, char *err, size_t errlen)
{
    return open_mode(data_dir, STORAGE_MODE_READONLY, NULL, NULL, out, err, errlen);
}

int storage_open_admin(const char *data_dir, struct storage **out, char *err, size_t errlen)
{
    return open_mode(data_dir, STORAGE_MODE_ADMIN, NULL, NULL, out, err, errlen);
}

void storage_repair_counts(const struct storage *st, int *reindexed, int *removed)
{
    *reindexed = st->reindexed;
    *removed = st->removed;
}

void storage_close(struct storage *st)
{
    if (!st)
        return;
    instance_finalize(st);
    /* One synced commit makes every earlier WAL frame durable too. */
    if (st->mode == STORAGE_MODE_SERVE &&
        db_exec(st, "PRAGMA synchronous=FULL", NULL, 0) == STORAGE_OK)
        set_clean_stop(st, 1);
    free_handle(st);
}
