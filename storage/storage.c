/*
 * storage.c — the durable instance store and its SQLite index.
 *
 * Layout under DATA_DIR:
 *   ainode.db                     SQLite (WAL)
 *   tmp/                          incoming bytes; emptied at every open
 *   instances/<study>/<series>/   <sop>.dcm (or <sop>.N.dcm after a resend)
 *
 * Commit order (storage_commit), chosen so that a crash at any point leaves
 * either nothing or a complete instance:
 *   1. link() it to a fresh final name    (never overwrites: EEXIST -> next N),
 *      and unlink the temporary name
 *   2. fsync the file                     (bytes durable)
 *   3. fsync the series directory         (name durable)
 *   4. INSERT/UPDATE the rows, COMMIT      (index; WAL, no wait for the disk)
 *   5. unlink the previous version of a resent instance
 *      (that commit waits for the disk: the old file goes only once no
 *      durable row can point to it)
 * After an unclean stop, a linked file without a row (a crash between 1
 * and 4, or a power cut that took the last WAL frames) is indexed again if
 * it reads as a complete instance, and removed otherwise.
 */
#include "storage/storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

const char *const storage_attr_keywords[SA_COUNT] = {
    [SA_SOP_CLASS_UID] = "SOPClassUID",
    [SA_SOP_INSTANCE_UID] = "SOPInstanceUID",
    [SA_STUDY_INSTANCE_UID] = "StudyInstanceUID",
    [SA_SERIES_INSTANCE_UID] = "SeriesInstanceUID",
    [SA_PATIENT_ID] = "PatientID",
    [SA_ISSUER_OF_PATIENT_ID] = "IssuerOfPatientID",
    [SA_PATIENT_NAME] = "PatientName",
    [SA_PATIENT_BIRTH_DATE] = "PatientBirthDate",
    [SA_PATIENT_SEX] = "PatientSex",
    [SA_STUDY_DATE] = "StudyDate",
    [SA_STUDY_TIME] = "StudyTime",
    [SA_ACCESSION_NUMBER] = "AccessionNumber",
    [SA_STUDY_ID] = "StudyID",
    [SA_STUDY_DESCRIPTION] = "StudyDescription",
    [SA_MODALITY] = "Modality",
    [SA_BODY_PART_EXAMINED] = "BodyPartExamined",
    [SA_SERIES_DESCRIPTION] = "SeriesDescription",
    [SA_PROTOCOL_NAME] = "ProtocolName",
    [SA_MANUFACTURER] = "Manufacturer",
    [SA_SERIES_NUMBER] = "SeriesNumber",
    [SA_INSTANCE_NUMBER] = "InstanceNumber",
    [SA_IMAGE_TYPE] = "ImageType",
    [SA_SLICE_THICKNESS] = "SliceThickness",
    [SA_ROWS] = "Rows",
    [SA_COLUMNS] = "Columns",
    [SA_NUMBER_OF_FRAMES] = "NumberOfFrames",
    [SA_CONTRAST_BOLUS_AGENT] = "ContrastBolusAgent",
};

struct storage {
    storage_read_fn read;
    void *read_ud;
    int reindexed, removed;   /* by the repair at open */
    int sync_full;            /* commits wait for the disk (only while opening) */
    /* The patient, study and series values of the last instance indexed:
     * the next instance of the same series (the usual case) only touches
     * its study's receive time and its own row. */
    char *last_parents;
    char *data_dir;
    char *tmp_dir;
    char *inst_dir;
    sqlite3 *db;
    int readonly;             /* not the serving process: no upkeep at open or close */
    pthread_mutex_t lock;     /* one writer connection, serialised */
    atomic_ulong temp_seq;
    sqlite3_stmt *st_patient_upsert;
    sqlite3_stmt *st_study_upsert;
    sqlite3_stmt *st_study_touch;
    sqlite3_stmt *st_series_upsert;
    sqlite3_stmt *st_inst_old;
    sqlite3_stmt *st_inst_upsert;
    sqlite3_stmt *st_prune_series;
    sqlite3_stmt *st_prune_studies;
};

static const char SCHEMA[] =
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
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt);";

const char *storage_strerror(int err)
{
    switch (err) {
    case STORAGE_OK: return "ok";
    case STORAGE_EINVAL: return "instance cannot be used";
    case STORAGE_EIO: return "storage failure";
    case STORAGE_ENOMEM: return "out of memory";
    case STORAGE_ENOTFOUND: return "not found";
    }
    return "unknown storage error";
}

static void seterr(char *err, size_t len, const char *fmt, ...)
{
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

int storage_uid_valid(const char *s)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    const char *comp = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t clen = (size_t)(p - comp);
            if (clen == 0)
                return 0;
            if (clen > 1 && comp[0] == '0')
                return 0;
            if (*p == '\0')
                return 1;
            comp = p + 1;
        } else if (*p < '0' || *p > '9') {
            return 0;
        }
    }
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int fsync_path(const char *path, int directory)
{
    int fd = open(path, (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* mkdir that makes a newly created directory's name durable in PARENT. */
static int mkdir_durable(const char *parent, const char *path)
{
    if (mkdir(path, 0750) == 0)
        return fsync_path(parent, 1);
    return errno == EEXIST ? 0 : -1;
}

static int remove_tree_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *p = path_join(dir, e->d_name);
        if (!p || unlink(p) != 0)
            rc = -1;
        free(p);
    }
    closedir(d);
    return rc;
}

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        seterr(err, errlen, "sqlite: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return STORAGE_EIO;
    }
    return STORAGE_OK;
}

static int prepare(struct storage *st, sqlite3_stmt **stmt, const char *sql)
{
    return sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL)
                   == SQLITE_OK
               ? 0
               : -1;
}

static int prepare_all(struct storage *st)
{
    if (prepare(st, &st->st_patient_upsert,
                "INSERT INTO patients(patient_id, issuer, patient_name, birth_date, sex)"
                " VALUES(?1, ?2, ?3, ?4, ?5)"
                " ON CONFLICT(patient_id, issuer) DO UPDATE SET"
                "  patient_name=excluded.patient_name, birth_date=excluded.birth_date,"
                "  sex=excluded.sex"
                " RETURNING id") ||
        prepare(st, &st->st_study_upsert,
                "INSERT INTO studies(study_uid, patient, study_date, study_time,"
                "  accession_number, study_id, study_description, state,"
                "  first_received, last_received)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, 'receiving', ?8, ?8)"
                " ON CONFLICT(study_uid) DO UPDATE SET"
                "  patient=excluded.patient, study_date=excluded.study_date,"
                "  study_time=excluded.study_time,"
                "  accession_number=excluded.accession_number,"
                "  study_id=excluded.study_id,"
                "  study_description=excluded.study_description,"
                "  state='receiving', completed_at=NULL,"
                "  last_received=max(last_received, excluded.last_received)") ||
        prepare(st, &st->st_study_touch,
                "UPDATE studies SET state='receiving', completed_at=NULL,"
                "  last_received=max(last_received, ?2) WHERE study_uid=?1") ||
        prepare(st, &st->st_series_upsert,
                "INSERT INTO series(series_uid, study_uid, modality, body_part_examined,"
                "  series_description, protocol_name, manufacturer, series_number)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                " ON CONFLICT(series_uid) DO UPDATE SET"
                "  study_uid=excluded.study_uid, modality=excluded.modality,"
                "  body_part_examined=excluded.body_part_examined,"
                "  series_description=excluded.series_description,"
                "  protocol_name=excluded.protocol_name,"
                "  manufacturer=excluded.manufacturer,"
                "  series_number=excluded.series_number") ||
        prepare(st, &st->st_inst_old,
                "SELECT i.path, i.series_uid, s.study_uid FROM instances i"
                " JOIN series s USING(series_uid) WHERE i.sop_instance_uid=?1") ||
        prepare(st, &st->st_inst_upsert,
                "INSERT INTO instances(sop_instance_uid, series_uid, sop_class_uid,"
                "  transfer_syntax, instance_number, image_type, slice_thickness,"
                "  rows, columns, number_of_frames, calling_ae, called_ae, source_addr,"
                "  received_at, path, size, contrast_bolus_agent)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
                "  ?15, ?16, ?17)"
                " ON CONFLICT(sop_instance_uid) DO UPDATE SET"
                "  series_uid=excluded.series_uid, sop_class_uid=excluded.sop_class_uid,"
                "  transfer_syntax=excluded.transfer_syntax,"
                "  instance_number=excluded.instance_number,"
                "  image_type=excluded.image_type,"
                "  slice_thickness=excluded.slice_thickness, rows=excluded.rows,"
                "  columns=excluded.columns, number_of_frames=excluded.number_of_frames,"
                "  calling_ae=excluded.calling_ae, called_ae=excluded.called_ae,"
                "  source_addr=excluded.source_addr, received_at=excluded.received_at,"
                "  path=excluded.path, size=excluded.size,"
                "  contrast_bolus_agent=excluded.contrast_bolus_agent") ||
        /* A resend that moved an instance to another series/study may leave
         * empty ones behind; they are dropped in the same transaction. */
        prepare(st, &st->st_prune_series,
                "DELETE FROM series WHERE series_uid=?1 AND NOT EXISTS"
                " (SELECT 1 FROM instances WHERE series_uid=?1)") ||
        prepare(st, &st->st_prune_studies,
                "DELETE FROM studies WHERE study_uid=?1 AND NOT EXISTS"
                " (SELECT 1 FROM series WHERE study_uid=?1)"))
        return -1;
    return 0;
}

static void finalize_all(struct storage *st)
{
    sqlite3_stmt **all[] = {&st->st_patient_upsert, &st->st_study_upsert, &st->st_study_touch,
                            &st->st_series_upsert,  &st->st_inst_old,
                            &st->st_inst_upsert,    &st->st_prune_series,
                            &st->st_prune_studies};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(*all[i]);
        *all[i] = NULL;
    }
}

static int meta_get_int(struct storage *st, const char *key, int dflt)
{
    sqlite3_stmt *s;
    int v = dflt;
    if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key=?1", -1, &s, NULL)
        != SQLITE_OK)
        return dflt;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

static int meta_set_int(struct storage *st, const char *key, int value)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO meta(key, value) VALUES(?1, ?2)"
                           " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           -1, &s, NULL)
        != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, value);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(s);
    return rc;
}

static int path_is_indexed(sqlite3_stmt *q, const char *path)
{
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
    return sqlite3_step(q) == SQLITE_ROW;
}

static int index_instance(struct storage *st, const struct storage_instance *inst,
                          const char *path, int64_t size, char **old_path, char *err,
                          size_t errlen);

/* Indexes again a complete instance file that no row references. Its
 * place in the tree must be the one its UIDs give. */
static int reindex_file(struct storage *st, const char *path, const char *study_dir_name,
                        const char *series_dir_name, const struct stat *sb)
{
    char *values[SA_COUNT] = {0};
    char *ts = NULL, *calling = NULL;
    int rc = STORAGE_EINVAL;
    if (!st->read || st->read(st->read_ud, path, values, &ts, &calling) != 0)
        goto out;
    const char *sop = values[SA_SOP_INSTANCE_UID];
    const char *base = strrchr(path, '/') + 1;
    size_t sop_len = sop ? strlen(sop) : 0;
    if (!storage_uid_valid(values[SA_SOP_CLASS_UID]) || !storage_uid_valid(sop) ||
        !storage_uid_valid(values[SA_STUDY_INSTANCE_UID]) ||
        !storage_uid_valid(values[SA_SERIES_INSTANCE_UID]) || !storage_uid_valid(ts) ||
        strcmp(values[SA_STUDY_INSTANCE_UID], study_dir_name) != 0 ||
        strcmp(values[SA_SERIES_INSTANCE_UID], series_dir_name) != 0 ||
        strncmp(base, sop, sop_len) != 0 || base[sop_len] != '.')
        goto out;
    struct storage_instance inst;
    memset(&inst, 0, sizeof inst);
    for (int i = 0; i < SA_COUNT; i++)
        inst.attr[i] = values[i];
    inst.transfer_syntax = ts;
    inst.calling_ae = calling;
    inst.received_ms = (int64_t)sb->st_mtime * 1000;
    char *old_path = NULL;
    rc = index_instance(st, &inst, path, (int64_t)sb->st_size, &old_path, NULL, 0);
    if (rc == STORAGE_OK && old_path && strcmp(old_path, path) != 0)
        unlink(old_path); /* this file is the newer version of a resend */
    free(old_path);
out:
    for (int i = 0; i < SA_COUNT; i++)
        free(values[i]);
    free(ts);
    free(calling);
    return rc;
}

/* The start-up repair after an unclean stop: every file under instances/
 * that no row references is indexed again when complete, else removed;
 * empty directories go too. */
static int repair_store(struct storage *st)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM instances WHERE path=?1", -1, &q, NULL)
        != SQLITE_OK)
        return -1;
    int rc = 0;
    DIR *d1 = opendir(st->inst_dir);
    if (!d1) {
        sqlite3_finalize(q);
        return errno == ENOENT ? 0 : -1;
    }
    struct dirent *e1;
    while ((e1 = readdir(d1))) {
        if (e1->d_name[0] == '.')
            continue;
        char *study = path_join(st->inst_dir, e1->d_name);
        DIR *d2 = study ? opendir(study) : NULL;
        struct dirent *e2;
        while (d2 && (e2 = readdir(d2))) {
            if (e2->d_name[0] == '.')
                continue;
            char *series = path_join(study, e2->d_name);
            DIR *d3 = series ? opendir(series) : NULL;
            struct dirent *e3;
            while (d3 && (e3 = readdir(d3))) {
                if (e3->d_name[0] == '.')
                    continue;
                char *f = path_join(series, e3->d_name);
                struct stat sb;
                if (f && !path_is_indexed(q, f)) {
                    if (stat(f, &sb) == 0 &&
                        reindex_file(st, f, e1->d_name, e2->d_name, &sb) == STORAGE_OK)
                        st->reindexed++;
                    else if (unlink(f) == 0)
                        st->removed++;
                    else
                        rc = -1;
                }
                free(f);
            }
            if (d3)
                closedir(d3);
            if (series)
                rmdir(series); /* fails harmlessly unless empty */
            free(series);
        }
        if (d2)
            closedir(d2);
        if (study)
            rmdir(study);
        free(study);
    }
    closedir(d1);
    sqlite3_finalize(q);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Retention: deleting a finished study (see storage.h).                    */

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

static int unlink_gone(const char *path)
{
    return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Runs SQL with ?1 bound to UID, calling FN(UD, first column) for each row. */
static int query_uid(struct storage *st, const char *sql, const char *uid,
                     int (*fn)(void *ud, const char *value), void *ud)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, uid, -1, SQLITE_STATIC);
    int rc, failed = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(s, 0);
        if (v && fn(ud, v) != 0)
            failed = 1;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE && !failed ? 0 : -1;
}

static int unlink_cb(void *ud, const char *path)
{
    (void)ud;
    return unlink_gone(path);
}

/* Only files under DATA_DIR/results/ are the study's own results. */
static int unlink_result_path_cb(void *ud, const char *path)
{
    struct storage *st = ud;
    size_t n = strlen(st->data_dir);
    if (strncmp(path, st->data_dir, n) != 0 || strncmp(path + n, "/results/", 9) != 0)
        return 0;
    return unlink_gone(path);
}

static int unlink_results_cb(void *ud, const char *job_id)
{
    struct storage *st = ud;
    static const char *const suffix[] = {"json", "labels.gz", "seg.dcm", "sr.dcm"};
    int rc = 0;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/results/%s.%s", st->data_dir, job_id, suffix[i])
                >= (int)sizeof path ||
            unlink_gone(path) != 0)
            rc = -1;
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
        char *series = path_join(study_dir, e->d_name);
        /* Unlinks inside it are durable before its row deletion can be. */
        if (!series || (fsync_path(series, 1) != 0 && errno != ENOENT))
            rc = -1;
        else
            rmdir(series);
        free(series);
    }
    closedir(d);
    if (fsync_path(study_dir, 1) != 0 && errno != ENOENT)
        rc = -1;
    rmdir(study_dir);
    return fsync_path(st->inst_dir, 1) != 0 ? -1 : rc;
}

/* Removes the files of UID, a study marked "deleting": its instances (by
 * their rows, so that a file placed meanwhile by a new commit stays) and
 * its jobs' results. Every unlink is durable on return, so that a power cut
 * after the rows are gone cannot bring back files the repair would index
 * again. */
static int delete_study_files(struct storage *st, const char *uid)
{
    int rc = 0;
    if (query_uid(st,
                  "SELECT i.path FROM instances i JOIN series se USING(series_uid)"
                  " WHERE se.study_uid=?1",
                  uid, unlink_cb, NULL) != 0)
        rc = -1;
    if (query_uid(st, "SELECT id FROM jobs WHERE study_uid=?1", uid, unlink_results_cb, st) != 0)
        rc = -1;
    /* Result files under other names, as recorded by their jobs and sends. */
    if (query_uid(st,
                  "SELECT result FROM jobs WHERE study_uid=?1 AND result IS NOT NULL"
                  " UNION SELECT path FROM outbox WHERE job_id IN"
                  "  (SELECT id FROM jobs WHERE study_uid=?1)",
                  uid, unlink_result_path_cb, st) != 0)
        rc = -1;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/results", st->data_dir);
    if (fsync_path(dir, 1) != 0 && errno != ENOENT)
        rc = -1;
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
    if (exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0))
        return -1;
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(st->db, sql[i], -1, &s, NULL) != SQLITE_OK) {
            exec_sql(st->db, "ROLLBACK", NULL, 0);
            return -1;
        }
        if (sqlite3_bind_parameter_count(s) > 0)
            sqlite3_bind_text(s, 1, uid, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
            exec_sql(st->db, "ROLLBACK", NULL, 0);
            return -1;
        }
    }
    if (exec_sql(st->db, "COMMIT", NULL, 0)) {
        exec_sql(st->db, "ROLLBACK", NULL, 0);
        return -1;
    }
    /* The cached parents may name the rows just deleted. */
    free(st->last_parents);
    st->last_parents = NULL;
    return 0;
}

static int finish_deletion_cb(void *ud, const char *uid)
{
    struct storage *st = ud;
    if (delete_study_files(st, uid) != 0)
        return -1;
    return delete_study_rows(st, uid);
}

/* Finishes every study left "deleting" (by a stop in the middle, or a
 * failure). Called with st->lock held or single-threaded at open. */
static int finish_deletions(struct storage *st)
{
    char *list = NULL;
    size_t n = 0;
    /* Collected first: the callback's transactions must not run under the
     * open statement that lists them. */
    FILE *mem = open_memstream(&list, &n);
    if (!mem)
        return -1;
    sqlite3_stmt *s;
    int rc = -1;
    if (sqlite3_prepare_v2(st->db, "SELECT study_uid FROM studies WHERE state='deleting'", -1,
                           &s, NULL) == SQLITE_OK) {
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW)
            fprintf(mem, "%s\n", (const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
        rc = r == SQLITE_DONE ? 0 : -1;
    }
    fclose(mem);
    for (char *p = list, *nl; rc == 0 && p && (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = '\0';
        if (finish_deletion_cb(st, p) != 0)
            rc = -1;
    }
    free(list);
    return rc;
}

/* MODE: 0 the serving process, 1 read-only, 2 an administrative writer. */
static int open_common(const char *data_dir, int mode, storage_read_fn read,
                       void *read_ud, struct storage **out, char *err, size_t errlen)
{
    int readonly = mode != 0;
    *out = NULL;
    struct storage *st = calloc(1, sizeof *st);
    if (!st)
        return STORAGE_ENOMEM;
    st->readonly = readonly;
    st->read = read;
    st->read_ud = read_ud;
    st->sync_full = 1;
    pthread_mutex_init(&st->lock, NULL);
    st->data_dir = strdup(data_dir);
    st->tmp_dir = path_join(data_dir, "tmp");
    st->inst_dir = path_join(data_dir, "instances");
    char *dbpath = path_join(data_dir, "ainode.db");
    int rc = STORAGE_ENOMEM;
    if (!st->data_dir || !st->tmp_dir || !st->inst_dir || !dbpath)
        goto fail;

    rc = STORAGE_EIO;
    if (!readonly) {
        if (mkdir(data_dir, 0750) != 0 && errno != EEXIST) {
            seterr(err, errlen, "cannot create %s: %s", data_dir, strerror(errno));
            goto fail;
        }
        if (mkdir_durable(data_dir, st->tmp_dir) || mkdir_durable(data_dir, st->inst_dir)) {
            seterr(err, errlen, "cannot create directories under %s: %s", data_dir,
                   strerror(errno));
            goto fail;
        }
    }
    int flags = mode == 1   ? SQLITE_OPEN_READONLY
                : mode == 2 ? SQLITE_OPEN_READWRITE
                            : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(dbpath, &st->db, flags | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        seterr(err, errlen, "cannot open %s: %s", dbpath,
               st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 10000);
    if (readonly) {
        /* A missing schema means nothing was ever received. */
        rc = exec_sql(st->db, "SELECT 1 FROM studies LIMIT 1", err, errlen);
        if (rc == 0 && mode == 2)
            rc = exec_sql(st->db, "PRAGMA synchronous=FULL", err, errlen);
        if (rc)
            goto fail;
    } else {
        rc = exec_sql(st->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                      "PRAGMA foreign_keys=ON;",
                      err, errlen);
        if (rc == 0)
            rc = exec_sql(st->db, SCHEMA, err, errlen);
        if (rc)
            goto fail;
        if (remove_tree_files(st->tmp_dir) != 0) {
            seterr(err, errlen, "cannot empty %s: %s", st->tmp_dir, strerror(errno));
            rc = STORAGE_EIO;
            goto fail;
        }
        if (prepare_all(st) != 0) {
            seterr(err, errlen, "sqlite: %s", sqlite3_errmsg(st->db));
            rc = STORAGE_EIO;
            goto fail;
        }
        if (!meta_get_int(st, "clean_stop", 1) && repair_store(st) != 0) {
            seterr(err, errlen, "cannot repair %s: %s", st->inst_dir, strerror(errno));
            rc = STORAGE_EIO;
            goto fail;
        }
        /* Cheap, so done after any stop: a deletion interrupted midway
         * would otherwise leave rows pointing to removed files. */
        if (finish_deletions(st) != 0) {
            seterr(err, errlen, "cannot finish deleting studies: %s", sqlite3_errmsg(st->db));
            rc = STORAGE_EIO;
            goto fail;
        }
        /* This process is the only one that runs jobs: whatever a previous
         * one left running is runnable again. */
        rc = exec_sql(st->db,
                      "UPDATE jobs SET state='queued', lease_owner=NULL, lease_until=NULL"
                      " WHERE state='running'",
                      err, errlen);
        if (rc)
            goto fail;
        /* Durable before any instance is acknowledged: a power cut from
         * here on must lead to the repair. Then rows stop waiting for the
         * disk (see storage.h). */
        st->sync_full = 0;
        if (meta_set_int(st, "clean_stop", 0) != 0 ||
            exec_sql(st->db, "PRAGMA synchronous=NORMAL", err, errlen) != STORAGE_OK) {
            seterr(err, errlen, "sqlite: %s", sqlite3_errmsg(st->db));
            rc = STORAGE_EIO;
            goto fail;
        }
    }
    free(dbpath);
    *out = st;
    return STORAGE_OK;
fail:
    free(dbpath);
    finalize_all(st);
    if (st->db)
        sqlite3_close(st->db);
    free(st->data_dir);
    free(st->tmp_dir);
    free(st->inst_dir);
    pthread_mutex_destroy(&st->lock);
    free(st);
    return rc;
}

int storage_open(const char *data_dir, storage_read_fn read, void *read_ud,
                 struct storage **out, char *err, size_t errlen)
{
    return open_common(data_dir, 0, read, read_ud, out, err, errlen);
}

int storage_open_readonly(const char *data_dir, struct storage **out, char *err, size_t errlen)
{
    return open_common(data_dir, 1, NULL, NULL, out, err, errlen);
}

int storage_open_admin(const char *data_dir, struct storage **out, char *err, size_t errlen)
{
    return open_common(data_dir, 2, NULL, NULL, out, err, errlen);
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
    finalize_all(st);
    free(st->last_parents);
    /* One synced commit makes every earlier WAL frame durable too. */
    if (!st->readonly && exec_sql(st->db, "PRAGMA synchronous=FULL", NULL, 0) == STORAGE_OK)
        meta_set_int(st, "clean_stop", 1);
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->lock);
    free(st->data_dir);
    free(st->tmp_dir);
    free(st->inst_dir);
    free(st);
}

int storage_temp_path(struct storage *st, char *buf, size_t len)
{
    unsigned long seq = atomic_fetch_add(&st->temp_seq, 1);
    int n = snprintf(buf, len, "%s/%ld-%lu.part", st->tmp_dir, (long)getpid(), seq);
    return n < 0 || (size_t)n >= len ? STORAGE_EINVAL : STORAGE_OK;
}

static void bind_opt(sqlite3_stmt *s, int i, const char *v)
{
    if (v && *v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static void bind_int_opt(sqlite3_stmt *s, int i, const char *v)
{
    char *end;
    long long n = v ? strtoll(v, &end, 10) : 0;
    if (v && *v && *end == '\0')
        sqlite3_bind_int64(s, i, n);
    else
        sqlite3_bind_null(s, i);
}

static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* The values INST gives its patient, study and series rows, as one string. */
static char *parents_key(const struct storage_instance *inst)
{
    static const enum storage_attr parent_attrs[] = {
        SA_PATIENT_ID,        SA_ISSUER_OF_PATIENT_ID, SA_PATIENT_NAME,
        SA_PATIENT_BIRTH_DATE, SA_PATIENT_SEX,         SA_STUDY_INSTANCE_UID,
        SA_STUDY_DATE,        SA_STUDY_TIME,           SA_ACCESSION_NUMBER,
        SA_STUDY_ID,          SA_STUDY_DESCRIPTION,    SA_SERIES_INSTANCE_UID,
        SA_MODALITY,          SA_BODY_PART_EXAMINED,   SA_SERIES_DESCRIPTION,
        SA_PROTOCOL_NAME,     SA_MANUFACTURER,         SA_SERIES_NUMBER,
    };
    size_t n = sizeof parent_attrs / sizeof parent_attrs[0], len = 1;
    for (size_t i = 0; i < n; i++)
        len += (inst->attr[parent_attrs[i]] ? strlen(inst->attr[parent_attrs[i]]) : 0) + 2;
    char *key = malloc(len), *p = key;
    if (!key)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *v = inst->attr[parent_attrs[i]];
        /* \x1e marks an absent value, \x1f ends each value. */
        p += sprintf(p, "%s\x1f", v ? v : "\x1e");
    }
    return key;
}

/* Writes the rows for INST in one transaction; *OLD_PATH receives the path
 * of the version this one replaces (caller frees), if any. A replacing
 * transaction waits for the disk: the caller then removes the old file,
 * and no durable row may still point to it. Called with st->lock held (or
 * single-threaded at open), which also makes the look-up before BEGIN
 * consistent: this connection is the only writer. */
static int index_instance(struct storage *st, const struct storage_instance *inst,
                          const char *path, int64_t size, char **old_path, char *err,
                          size_t errlen)
{
    const char *const *a = inst->attr;
    char *old_series = NULL, *old_study = NULL, *parents = NULL;
    *old_path = NULL;

    sqlite3_stmt *s = st->st_inst_old;
    sqlite3_bind_text(s, 1, a[SA_SOP_INSTANCE_UID], -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
        *old_path = strdup((const char *)sqlite3_column_text(s, 0));
        old_series = strdup((const char *)sqlite3_column_text(s, 1));
        old_study = strdup((const char *)sqlite3_column_text(s, 2));
    }
    sqlite3_reset(s);
    int full_sync = *old_path && !st->sync_full;
    if (full_sync)
        exec_sql(st->db, "PRAGMA synchronous=FULL", NULL, 0);
    if (exec_sql(st->db, "BEGIN IMMEDIATE", err, errlen))
        goto fail_quiet;

    parents = parents_key(inst);
    if (!parents)
        goto fail;
    if (st->last_parents && strcmp(parents, st->last_parents) == 0) {
        s = st->st_study_touch;
        sqlite3_bind_text(s, 1, a[SA_STUDY_INSTANCE_UID], -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, inst->received_ms);
        if (step_done(s))
            goto fail;
        if (sqlite3_changes(st->db) == 1)
            goto instance_row;
        /* The study row went away since: write all rows again. */
    }

    s = st->st_patient_upsert;
    sqlite3_bind_text(s, 1, a[SA_PATIENT_ID] ? a[SA_PATIENT_ID] : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a[SA_ISSUER_OF_PATIENT_ID] ? a[SA_ISSUER_OF_PATIENT_ID] : "", -1,
                      SQLITE_STATIC);
    bind_opt(s, 3, a[SA_PATIENT_NAME]);
    bind_opt(s, 4, a[SA_PATIENT_BIRTH_DATE]);
    bind_opt(s, 5, a[SA_PATIENT_SEX]);
    int64_t patient = -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        patient = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (patient < 0)
        goto fail;

    s = st->st_study_upsert;
    sqlite3_bind_text(s, 1, a[SA_STUDY_INSTANCE_UID], -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, patient);
    bind_opt(s, 3, a[SA_STUDY_DATE]);
    bind_opt(s, 4, a[SA_STUDY_TIME]);
    bind_opt(s, 5, a[SA_ACCESSION_NUMBER]);
    bind_opt(s, 6, a[SA_STUDY_ID]);
    bind_opt(s, 7, a[SA_STUDY_DESCRIPTION]);
    sqlite3_bind_int64(s, 8, inst->received_ms);
    if (step_done(s))
        goto fail;

    s = st->st_series_upsert;
    sqlite3_bind_text(s, 1, a[SA_SERIES_INSTANCE_UID], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a[SA_STUDY_INSTANCE_UID], -1, SQLITE_STATIC);
    bind_opt(s, 3, a[SA_MODALITY]);
    bind_opt(s, 4, a[SA_BODY_PART_EXAMINED]);
    bind_opt(s, 5, a[SA_SERIES_DESCRIPTION]);
    bind_opt(s, 6, a[SA_PROTOCOL_NAME]);
    bind_opt(s, 7, a[SA_MANUFACTURER]);
    bind_opt(s, 8, a[SA_SERIES_NUMBER]);
    if (step_done(s))
        goto fail;

instance_row:
    s = st->st_inst_upsert;
    sqlite3_bind_text(s, 1, a[SA_SOP_INSTANCE_UID], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a[SA_SERIES_INSTANCE_UID], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, a[SA_SOP_CLASS_UID], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, inst->transfer_syntax, -1, SQLITE_STATIC);
    bind_opt(s, 5, a[SA_INSTANCE_NUMBER]);
    bind_opt(s, 6, a[SA_IMAGE_TYPE]);
    bind_opt(s, 7, a[SA_SLICE_THICKNESS]);
    bind_int_opt(s, 8, a[SA_ROWS]);
    bind_int_opt(s, 9, a[SA_COLUMNS]);
    bind_int_opt(s, 10, a[SA_NUMBER_OF_FRAMES]);
    bind_opt(s, 11, inst->calling_ae);
    bind_opt(s, 12, inst->called_ae);
    bind_opt(s, 13, inst->source_addr);
    sqlite3_bind_int64(s, 14, inst->received_ms);
    sqlite3_bind_text(s, 15, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 16, size);
    bind_opt(s, 17, a[SA_CONTRAST_BOLUS_AGENT]);
    if (step_done(s))
        goto fail;

    if (old_series && strcmp(old_series, a[SA_SERIES_INSTANCE_UID]) != 0) {
        sqlite3_bind_text(st->st_prune_series, 1, old_series, -1, SQLITE_STATIC);
        if (step_done(st->st_prune_series))
            goto fail;
        sqlite3_bind_text(st->st_prune_studies, 1, old_study, -1, SQLITE_STATIC);
        if (step_done(st->st_prune_studies))
            goto fail;
    }
    if (exec_sql(st->db, "COMMIT", err, errlen))
        goto fail_rollback;
    if (full_sync)
        exec_sql(st->db, "PRAGMA synchronous=NORMAL", NULL, 0);
    free(st->last_parents);
    st->last_parents = old_series ? NULL : parents; /* a move may have pruned rows */
    if (old_series)
        free(parents);
    free(old_series);
    free(old_study);
    return STORAGE_OK;
fail:
    seterr(err, errlen, "sqlite: %s", sqlite3_errmsg(st->db));
fail_rollback:
    exec_sql(st->db, "ROLLBACK", NULL, 0);
fail_quiet:
    if (full_sync)
        exec_sql(st->db, "PRAGMA synchronous=NORMAL", NULL, 0);
    free(st->last_parents);
    st->last_parents = NULL;
    free(parents);
    free(*old_path);
    *old_path = NULL;
    free(old_series);
    free(old_study);
    return STORAGE_EIO;
}

/* Links TEMP to a fresh name in SERIES_DIR ("<sop>.dcm", else "<sop>.N.dcm")
 * so that an existing, acknowledged version is never overwritten. */
static int link_fresh(const char *temp, const char *series_dir, const char *sop, char *out,
                      size_t outlen)
{
    for (unsigned n = 0; n < 100000; n++) {
        int w = n == 0 ? snprintf(out, outlen, "%s/%s.dcm", series_dir, sop)
                       : snprintf(out, outlen, "%s/%s.%u.dcm", series_dir, sop, n);
        if (w < 0 || (size_t)w >= outlen) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (link(temp, out) == 0)
            return 0;
        if (errno != EEXIST)
            return -1;
    }
    errno = EEXIST;
    return -1;
}

int storage_commit(struct storage *st, const char *temp_path,
                   const struct storage_instance *inst, char *err, size_t errlen)
{
    const char *const *a = inst->attr;
    static const enum storage_attr required[] = {SA_SOP_CLASS_UID, SA_SOP_INSTANCE_UID,
                                                 SA_STUDY_INSTANCE_UID,
                                                 SA_SERIES_INSTANCE_UID};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        const char *v = a[required[i]];
        if (!v || !*v) {
            seterr(err, errlen, "missing %s", storage_attr_keywords[required[i]]);
            unlink(temp_path);
            return STORAGE_EINVAL;
        }
        /* These reach file names: only the strict UID grammar is allowed. */
        if (!storage_uid_valid(v)) {
            seterr(err, errlen, "invalid %s", storage_attr_keywords[required[i]]);
            unlink(temp_path);
            return STORAGE_EINVAL;
        }
    }
    if (!inst->transfer_syntax || !storage_uid_valid(inst->transfer_syntax)) {
        seterr(err, errlen, "invalid transfer syntax");
        unlink(temp_path);
        return STORAGE_EINVAL;
    }

    char study_dir[PATH_MAX], series_dir[PATH_MAX], final[PATH_MAX];
    int rc = STORAGE_EIO;
    struct stat sb;
    final[0] = '\0';
    if (snprintf(study_dir, sizeof study_dir, "%s/%s", st->inst_dir,
                 a[SA_STUDY_INSTANCE_UID]) >= (int)sizeof study_dir ||
        snprintf(series_dir, sizeof series_dir, "%s/%s", study_dir,
                 a[SA_SERIES_INSTANCE_UID]) >= (int)sizeof series_dir) {
        seterr(err, errlen, "path too long");
        goto fail;
    }
    /* Retention may remove the (empty) directories of this study between
     * the mkdir and the link: make them again. */
    for (int tries = 0;; tries++) {
        if (mkdir_durable(st->inst_dir, study_dir) != 0 ||
            mkdir_durable(study_dir, series_dir) != 0) {
            if (errno == ENOENT && tries < 5)
                continue;
            seterr(err, errlen, "cannot create directory: %s", strerror(errno));
            goto fail;
        }
        if (link_fresh(temp_path, series_dir, a[SA_SOP_INSTANCE_UID], final, sizeof final)
            == 0)
            break;
        if (errno == ENOENT && tries < 5 && access(temp_path, F_OK) == 0)
            continue;
        seterr(err, errlen, "cannot place file: %s", strerror(errno));
        final[0] = '\0';
        goto fail;
    }
    /* Linking before flushing is safe: until the row commits, the file is
     * unindexed, and the repair after a crash checks it. With the temporary
     * name gone the file has one name, so a file system that flushes a new
     * file's directory with the file (ext4, with or without a journal)
     * leaves the directory fsync below almost nothing to do. */
    unlink(temp_path);
    if (fsync_path(final, 0) != 0 || stat(final, &sb) != 0) {
        seterr(err, errlen, "cannot flush received file: %s", strerror(errno));
        goto fail;
    }
    if (fsync_path(series_dir, 1) != 0) {
        seterr(err, errlen, "cannot flush directory: %s", strerror(errno));
        goto fail;
    }
    char *old_path = NULL;
    pthread_mutex_lock(&st->lock);
    rc = index_instance(st, inst, final, (int64_t)sb.st_size, &old_path, err, errlen);
    pthread_mutex_unlock(&st->lock);
    if (rc != STORAGE_OK)
        goto fail;
    if (old_path && strcmp(old_path, final) != 0)
        unlink(old_path); /* a crash here leaves an orphan the scan removes */
    free(old_path);
    return STORAGE_OK;
fail:
    if (final[0])
        unlink(final);
    unlink(temp_path);
    return rc;
}

struct storage_plan {
    char **models;
    char **send_to;
    int *priority;
    size_t n, cap;
    char **forward;
    size_t n_forward;
    int failed;
};

void storage_plan_add(struct storage_plan *plan, const char *model, const char *send_to,
                      int priority)
{
    if (plan->n == plan->cap) {
        size_t cap = plan->cap ? plan->cap * 2 : 4;
        char **m = realloc(plan->models, cap * sizeof *m);
        if (m)
            plan->models = m;
        char **d = m ? realloc(plan->send_to, cap * sizeof *d) : NULL;
        if (d)
            plan->send_to = d;
        int *p = d ? realloc(plan->priority, cap * sizeof *p) : NULL;
        if (p)
            plan->priority = p;
        if (!m || !d || !p) {
            plan->failed = 1;
            return;
        }
        plan->cap = cap;
    }
    plan->models[plan->n] = strdup(model);
    plan->send_to[plan->n] = send_to && *send_to ? strdup(send_to) : NULL;
    plan->priority[plan->n] = priority;
    if (!plan->models[plan->n] || (send_to && *send_to && !plan->send_to[plan->n])) {
        free(plan->models[plan->n]);
        free(plan->send_to[plan->n]);
        plan->failed = 1;
        return;
    }
    plan->n++;
}

void storage_plan_forward(struct storage_plan *plan, const char *destination)
{
    for (size_t i = 0; i < plan->n_forward; i++)
        if (!strcmp(plan->forward[i], destination))
            return; /* two rules forwarding to one place: send once */
    char **f = realloc(plan->forward, (plan->n_forward + 1) * sizeof *f);
    if (!f || !(f[plan->n_forward] = strdup(destination))) {
        if (f)
            plan->forward = f;
        plan->failed = 1;
        return;
    }
    plan->forward = f;
    plan->n_forward++;
}

static void plan_reset(struct storage_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        free(plan->models[i]);
        free(plan->send_to[i]);
    }
    for (size_t i = 0; i < plan->n_forward; i++)
        free(plan->forward[i]);
    plan->n = 0;
    plan->n_forward = 0;
}

static void plan_free(struct storage_plan *plan)
{
    plan_reset(plan);
    free(plan->models);
    free(plan->send_to);
    free(plan->priority);
    free(plan->forward);
}

static const char *col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

/* Calls FN for each series of STUDY with what the planner and explain see:
 * its own attributes, its study's and patient's, and its first instance's
 * (lowest instance number). The caller holds st->lock. */
static int series_rows(struct storage *st, const char *study, storage_series_fn fn, void *ud)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT se.series_uid, se.modality, se.body_part_examined,"
                           "  se.series_description, se.protocol_name, se.manufacturer,"
                           "  (SELECT count(*) FROM instances i WHERE i.series_uid=se.series_uid),"
                           "  se.series_number, st.study_description, st.accession_number,"
                           "  st.study_id, st.study_date, p.patient_id, p.sex,"
                           "  fi.sop_class_uid, fi.image_type, fi.slice_thickness,"
                           "  CAST(fi.rows AS TEXT), CAST(fi.columns AS TEXT),"
                           "  CAST(fi.number_of_frames AS TEXT), fi.calling_ae, fi.called_ae,"
                           "  fi.source_addr, fi.contrast_bolus_agent"
                           " FROM series se"
                           " LEFT JOIN studies st ON st.study_uid=se.study_uid"
                           " LEFT JOIN patients p ON p.id=st.patient"
                           " LEFT JOIN instances fi ON fi.sop_instance_uid=("
                           "   SELECT i.sop_instance_uid FROM instances i"
                           "   WHERE i.series_uid=se.series_uid"
                           "   ORDER BY i.instance_number IS NULL,"
                           "     CAST(i.instance_number AS INTEGER), i.sop_instance_uid LIMIT 1)"
                           " WHERE se.study_uid=?1 ORDER BY se.series_uid",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(q, 1, study, -1, SQLITE_STATIC);
    int step, rc = 0;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        struct storage_series se = {
            .study_uid = study,
            .series_uid = col_text(q, 0),
            .modality = col_text(q, 1),
            .body_part_examined = col_text(q, 2),
            .series_description = col_text(q, 3),
            .protocol_name = col_text(q, 4),
            .manufacturer = col_text(q, 5),
            .instances = sqlite3_column_int64(q, 6),
            .series_number = col_text(q, 7),
            .study_description = col_text(q, 8),
            .accession_number = col_text(q, 9),
            .study_id = col_text(q, 10),
            .study_date = col_text(q, 11),
            .patient_id = col_text(q, 12),
            .patient_sex = col_text(q, 13),
            .sop_class_uid = col_text(q, 14),
            .image_type = col_text(q, 15),
            .slice_thickness = col_text(q, 16),
            .rows = col_text(q, 17),
            .columns = col_text(q, 18),
            .number_of_frames = col_text(q, 19),
            .calling_ae = col_text(q, 20),
            .called_ae = col_text(q, 21),
            .source_address = col_text(q, 22),
            .contrast_bolus_agent = col_text(q, 23),
        };
        if ((rc = fn(ud, &se)) != 0)
            break;
    }
    sqlite3_finalize(q);
    return rc ? rc : step == SQLITE_DONE ? 0 : -1;
}

int storage_foreach_series(struct storage *st, const char *study_uid, storage_series_fn fn,
                           void *ud)
{
    pthread_mutex_lock(&st->lock);
    int rc = series_rows(st, study_uid, fn, ud);
    pthread_mutex_unlock(&st->lock);
    return rc < 0 ? STORAGE_EIO : STORAGE_OK;
}

struct plan_ctx {
    struct storage *st;
    sqlite3_stmt *ins, *fwd, *routing;
    int64_t now_ms;
    storage_plan_fn plan_fn;
    void *ud;
    struct storage_plan plan;
    int *n_jobs;
};

static int plan_series(void *ud, const struct storage_series *se)
{
    struct plan_ctx *pc = ud;
    plan_reset(&pc->plan);
    pc->plan_fn(pc->ud, se, &pc->plan);
    if (pc->plan.failed)
        return -1;
    for (size_t i = 0; i < pc->plan.n; i++) {
        sqlite3_bind_text(pc->ins, 1, se->study_uid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(pc->ins, 2, se->series_uid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(pc->ins, 3, pc->plan.models[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(pc->ins, 4, pc->now_ms);
        bind_opt(pc->ins, 5, pc->plan.send_to[i]);
        sqlite3_bind_int(pc->ins, 6, pc->plan.priority[i]);
        if (step_done(pc->ins))
            return -1;
        (*pc->n_jobs)++;
    }
    /* A series no rule matched is recorded as such (shown by status). */
    sqlite3_bind_text(pc->routing, 1, se->series_uid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(pc->routing, 2, pc->plan.n || pc->plan.n_forward ? "matched" : "unmatched",
                      -1, SQLITE_STATIC);
    if (step_done(pc->routing))
        return -1;
    /* Forwarding: every instance of the series, its stored file as it is. */
    for (size_t i = 0; i < pc->plan.n_forward; i++) {
        sqlite3_bind_text(pc->fwd, 1, pc->plan.forward[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(pc->fwd, 2, se->study_uid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(pc->fwd, 3, pc->now_ms);
        sqlite3_bind_text(pc->fwd, 4, se->series_uid, -1, SQLITE_TRANSIENT);
        if (step_done(pc->fwd))
            return -1;
        *pc->n_jobs += sqlite3_changes(pc->st->db);
    }
    return 0;
}

/* Queues the jobs PLAN asks for on every series of STUDY. */
static int plan_study(struct storage *st, const char *study, int64_t now_ms,
                      storage_plan_fn plan_fn, void *ud, int *n_jobs)
{
    struct plan_ctx pc = {st, NULL, NULL, NULL, now_ms, plan_fn, ud, {0}, n_jobs};
    int rc = -1;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO jobs(study_uid, series_uid, model, created_at, send_to,"
                           "  priority) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                           -1, &pc.ins, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(st->db,
                           "INSERT INTO outbox(destination, study_uid, kind, path, sop_class_uid,"
                           "  sop_instance_uid, transfer_syntax, next_attempt, created_at)"
                           " SELECT ?1, ?2, 'forward', path, sop_class_uid, sop_instance_uid,"
                           "  transfer_syntax, ?3, ?3 FROM instances WHERE series_uid=?4"
                           " ORDER BY sop_instance_uid",
                           -1, &pc.fwd, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(st->db, "UPDATE series SET routing=?2 WHERE series_uid=?1", -1,
                           &pc.routing, NULL) == SQLITE_OK)
        rc = series_rows(st, study, plan_series, &pc) == 0 ? 0 : -1;
    plan_free(&pc.plan);
    sqlite3_finalize(pc.ins);
    sqlite3_finalize(pc.fwd);
    sqlite3_finalize(pc.routing);
    return rc;
}

int storage_complete_due(struct storage *st, int64_t now_ms, int stable_seconds,
                         storage_plan_fn plan, void *plan_ud, int *n_completed, int *n_jobs)
{
    sqlite3_stmt *s = NULL;
    *n_completed = 0;
    *n_jobs = 0;
    pthread_mutex_lock(&st->lock);
    int rc = STORAGE_EIO;
    if (exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0))
        goto out;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE studies SET state='complete', completed_at=?1"
                           " WHERE state='receiving' AND last_received <= ?2 RETURNING study_uid",
                           -1, &s, NULL) != SQLITE_OK)
        goto rollback;
    sqlite3_bind_int64(s, 1, now_ms);
    sqlite3_bind_int64(s, 2, now_ms - (int64_t)stable_seconds * 1000);
    /* RETURNING rows are all known once the first step returns, so the
     * planning below may run while this statement is still open. */
    char **studies = NULL;
    size_t n = 0;
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        char **ns = realloc(studies, (n + 1) * sizeof *ns);
        if (!ns || !(ns[n] = strdup(col_text(s, 0)))) {
            if (ns)
                studies = ns;
            step = SQLITE_NOMEM;
            break;
        }
        studies = ns;
        n++;
    }
    sqlite3_finalize(s);
    s = NULL;
    int ok = step == SQLITE_DONE;
    for (size_t i = 0; i < n; i++) {
        if (ok && plan && plan_study(st, studies[i], now_ms, plan, plan_ud, n_jobs) != 0)
            ok = 0;
        free(studies[i]);
    }
    free(studies);
    if (!ok || exec_sql(st->db, "COMMIT", NULL, 0))
        goto rollback;
    *n_completed = (int)n;
    rc = STORAGE_OK;
    goto out;
rollback:
    sqlite3_finalize(s);
    exec_sql(st->db, "ROLLBACK", NULL, 0);
    *n_jobs = 0;
out:
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_foreach_unmatched(struct storage *st, storage_unmatched_fn fn, void *ud)
{
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->lock);
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT study_uid, series_uid, coalesce(modality, '') FROM series"
                                " WHERE routing='unmatched' ORDER BY study_uid, series_uid",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        return STORAGE_OK; /* a store from before routing was recorded */
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        if (fn(ud, col_text(s, 0), col_text(s, 1), col_text(s, 2))) {
            rc = SQLITE_DONE;
            break;
        }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

int storage_foreach_receiving(struct storage *st, storage_receiving_fn fn, void *ud)
{
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->lock);
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT study_uid, first_received FROM studies"
                                " WHERE state='receiving' ORDER BY first_received",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        return STORAGE_EIO;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        if (fn(ud, col_text(s, 0), sqlite3_column_int64(s, 1))) {
            rc = SQLITE_DONE;
            break;
        }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

int storage_complete_study(struct storage *st, const char *study_uid, int64_t now_ms,
                           int discard, storage_plan_fn plan, void *plan_ud, int *n_jobs)
{
    sqlite3_stmt *s = NULL;
    *n_jobs = 0;
    int rc = STORAGE_EIO;
    pthread_mutex_lock(&st->lock);
    if (exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0))
        goto out;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE studies SET state=?3, completed_at=?2"
                           " WHERE study_uid=?1 AND state='receiving'",
                           -1, &s, NULL) != SQLITE_OK)
        goto rollback;
    sqlite3_bind_text(s, 1, study_uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now_ms);
    sqlite3_bind_text(s, 3, discard ? "discarded" : "complete", -1, SQLITE_STATIC);
    if (step_done(s))
        goto rollback;
    int moved = sqlite3_changes(st->db);
    if (moved == 0) {
        rc = STORAGE_ENOTFOUND; /* completed meanwhile, or unknown */
        goto rollback;
    }
    if (!discard && plan && plan_study(st, study_uid, now_ms, plan, plan_ud, n_jobs) != 0)
        goto rollback;
    if (exec_sql(st->db, "COMMIT", NULL, 0))
        goto rollback;
    rc = STORAGE_OK;
    goto out;
rollback:
    exec_sql(st->db, "ROLLBACK", NULL, 0);
    *n_jobs = 0;
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_job_claim(struct storage *st, const char *model, const char *owner, int64_t now_ms,
                      int64_t lease_ms, struct storage_job *job)
{
    sqlite3_stmt *s;
    int rc = STORAGE_EIO;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        if (sqlite3_prepare_v2(
                st->db,
                "UPDATE jobs SET state='running', lease_owner=?2, lease_until=?3 + ?4,"
                "  started_at=?3, attempts=attempts + 1"
                " WHERE id=(SELECT id FROM jobs WHERE model=?1 AND (state='queued' OR"
                "  (state='running' AND lease_until < ?3)) ORDER BY priority, id LIMIT 1)"
                " RETURNING id, study_uid, series_uid, attempts, coalesce(send_to, '')",
                -1, &s, NULL) != SQLITE_OK)
            break;
        sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, now_ms);
        sqlite3_bind_int64(s, 4, lease_ms);
        int step = sqlite3_step(s);
        if (step != SQLITE_ROW) {
            rc = step == SQLITE_DONE ? STORAGE_ENOTFOUND : STORAGE_EIO;
            sqlite3_finalize(s);
            break;
        }
        memset(job, 0, sizeof *job);
        job->id = sqlite3_column_int64(s, 0);
        snprintf(job->study_uid, sizeof job->study_uid, "%s", col_text(s, 1));
        snprintf(job->series_uid, sizeof job->series_uid, "%s", col_text(s, 2));
        snprintf(job->model, sizeof job->model, "%s", model);
        job->attempts = sqlite3_column_int(s, 3);
        snprintf(job->send_to, sizeof job->send_to, "%s", col_text(s, 4));
        sqlite3_step(s);
        sqlite3_finalize(s);
        if (job->attempts <= STORAGE_JOB_MAX_ATTEMPTS) {
            rc = STORAGE_OK;
            break;
        }
        /* It has been claimed and lost too often: give up on it. */
        char msg[128];
        snprintf(msg, sizeof msg, "gave up after %d attempts (the worker stopped each time)",
                 STORAGE_JOB_MAX_ATTEMPTS);
        if (sqlite3_prepare_v2(st->db,
                               "UPDATE jobs SET state='failed', error=?2, finished_at=?3,"
                               "  lease_owner=NULL, lease_until=NULL WHERE id=?1",
                               -1, &s, NULL) != SQLITE_OK)
            break;
        sqlite3_bind_int64(s, 1, job->id);
        sqlite3_bind_text(s, 2, msg, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, now_ms);
        int done = step_done(s);
        sqlite3_finalize(s);
        if (done)
            break;
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_job_renew(struct storage *st, int64_t id, const char *owner, int64_t until_ms)
{
    sqlite3_stmt *s;
    int rc = STORAGE_EIO;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE jobs SET lease_until=?3 WHERE id=?1 AND lease_owner=?2"
                           " AND state='running'",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_text(s, 2, owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, until_ms);
        if (step_done(s) == 0)
            rc = sqlite3_changes(st->db) == 1 ? STORAGE_OK : STORAGE_ENOTFOUND;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_job_finish(struct storage *st, int64_t id, const char *owner, int64_t now_ms,
                       const char *error, const char *result, const char *summary,
                       const struct storage_send_item *items, size_t n_items)
{
    sqlite3_stmt *s = NULL, *q = NULL;
    int rc = STORAGE_EIO;
    pthread_mutex_lock(&st->lock);
    if (exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0))
        goto out;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE jobs SET state=?3, error=?4, result=?5, summary=?6,"
                           "  finished_at=?7, lease_owner=NULL, lease_until=NULL"
                           " WHERE id=?1 AND lease_owner=?2 AND state='running'"
                           " RETURNING study_uid",
                           -1, &s, NULL) != SQLITE_OK)
        goto rollback;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, error ? "failed" : "done", -1, SQLITE_STATIC);
    bind_opt(s, 4, error);
    bind_opt(s, 5, result);
    bind_opt(s, 6, summary);
    sqlite3_bind_int64(s, 7, now_ms);
    int step = sqlite3_step(s);
    if (step == SQLITE_DONE) {
        rc = STORAGE_ENOTFOUND; /* another worker holds it now */
        goto rollback;
    }
    if (step != SQLITE_ROW)
        goto rollback;
    char *study = strdup(col_text(s, 0));
    sqlite3_step(s);
    sqlite3_finalize(s);
    s = NULL;
    if (!study)
        goto rollback;
    /* The results and the decision to send them are recorded together: a
     * crash leaves either a job to run again or items to send. */
    if (!error && n_items) {
        if (sqlite3_prepare_v2(st->db,
                               "INSERT INTO outbox(destination, study_uid, job_id, kind, path,"
                               "  sop_class_uid, sop_instance_uid, transfer_syntax,"
                               "  next_attempt, created_at)"
                               " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                               -1, &q, NULL) != SQLITE_OK) {
            free(study);
            goto rollback;
        }
        for (size_t i = 0; i < n_items; i++) {
            const struct storage_send_item *it = &items[i];
            sqlite3_bind_text(q, 1, it->destination, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 2, study, -1, SQLITE_STATIC);
            sqlite3_bind_int64(q, 3, id);
            sqlite3_bind_text(q, 4, it->kind, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 5, it->path, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 6, it->sop_class_uid, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 7, it->sop_instance_uid, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 8, it->transfer_syntax, -1, SQLITE_STATIC);
            sqlite3_bind_int64(q, 9, now_ms);
            if (step_done(q)) {
                free(study);
                goto rollback;
            }
        }
    }
    free(study);
    if (exec_sql(st->db, "COMMIT", NULL, 0))
        goto rollback;
    rc = STORAGE_OK;
    goto out;
rollback:
    exec_sql(st->db, "ROLLBACK", NULL, 0);
out:
    sqlite3_finalize(s);
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int outbox_rows(struct storage *st, const char *sql, int64_t now_ms, storage_outbox_fn fn,
                       void *ud)
{
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->lock);
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        return STORAGE_EIO;
    }
    if (sqlite3_bind_parameter_count(s) > 0)
        sqlite3_bind_int64(s, 1, now_ms);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct storage_outbox_item it = {
            .id = sqlite3_column_int64(s, 0),
            .destination = col_text(s, 1),
            .study_uid = col_text(s, 2),
            .kind = col_text(s, 3),
            .path = col_text(s, 4),
            .sop_class_uid = col_text(s, 5),
            .sop_instance_uid = col_text(s, 6),
            .transfer_syntax = col_text(s, 7),
            .state = col_text(s, 8),
            .error = col_text(s, 9),
            .attempts = sqlite3_column_int(s, 10),
            .next_attempt_ms = sqlite3_column_int64(s, 11),
            .sent_ms = sqlite3_column_int64(s, 12),
        };
        if (fn(ud, &it)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

#define OUTBOX_COLUMNS                                                                         \
    "SELECT id, destination, study_uid, kind, path, sop_class_uid, sop_instance_uid,"          \
    "  transfer_syntax, state, error, attempts, next_attempt, coalesce(sent_at, 0) FROM outbox"

int storage_outbox_due(struct storage *st, int64_t now_ms, storage_outbox_fn fn, void *ud)
{
    return outbox_rows(st,
                       OUTBOX_COLUMNS " WHERE state='pending' AND next_attempt <= ?1"
                                      " ORDER BY destination, study_uid, id",
                       now_ms, fn, ud);
}

int storage_foreach_outbox(struct storage *st, storage_outbox_fn fn, void *ud)
{
    /* A store from before the outbox existed has none: nothing to list. */
    sqlite3_stmt *probe;
    pthread_mutex_lock(&st->lock);
    int exists = sqlite3_prepare_v2(st->db, "SELECT 1 FROM outbox", -1, &probe, NULL) ==
                 SQLITE_OK;
    sqlite3_finalize(probe);
    pthread_mutex_unlock(&st->lock);
    return exists ? outbox_rows(st, OUTBOX_COLUMNS " ORDER BY id", 0, fn, ud) : STORAGE_OK;
}

int storage_outbox_record(struct storage *st, int64_t id, int64_t now_ms, int sent,
                          const char *error, int64_t next_attempt_ms)
{
    sqlite3_stmt *s;
    int rc = STORAGE_EIO;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE outbox SET attempts=attempts + 1, error=?3,"
                           "  state=CASE WHEN ?2 THEN 'sent' WHEN ?4 < 0 THEN 'failed'"
                           "    ELSE 'pending' END,"
                           "  sent_at=CASE WHEN ?2 THEN ?5 ELSE NULL END,"
                           "  next_attempt=CASE WHEN ?4 < 0 THEN next_attempt ELSE ?4 END"
                           " WHERE id=?1 AND state='pending'",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_int(s, 2, sent ? 1 : 0);
        bind_opt(s, 3, sent ? NULL : error);
        sqlite3_bind_int64(s, 4, sent ? now_ms : next_attempt_ms);
        sqlite3_bind_int64(s, 5, now_ms);
        if (step_done(s) == 0)
            rc = sqlite3_changes(st->db) == 1 ? STORAGE_OK : STORAGE_ENOTFOUND;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_outbox_retry(struct storage *st, int64_t id, int64_t now_ms, int *n)
{
    sqlite3_stmt *s;
    int rc = STORAGE_EIO;
    *n = 0;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE outbox SET state='pending', attempts=0, next_attempt=?2,"
                           "  error=NULL WHERE state='failed' AND (?1 < 0 OR id=?1)",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_int64(s, 2, now_ms);
        if (step_done(s) == 0) {
            *n = sqlite3_changes(st->db);
            rc = STORAGE_OK;
        }
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_job_release(struct storage *st, int64_t id, const char *owner)
{
    sqlite3_stmt *s;
    int rc = STORAGE_EIO;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE jobs SET state='queued', attempts=attempts - 1,"
                           "  lease_owner=NULL, lease_until=NULL, started_at=NULL"
                           " WHERE id=?1 AND lease_owner=?2 AND state='running'",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_text(s, 2, owner, -1, SQLITE_STATIC);
        if (step_done(s) == 0)
            rc = sqlite3_changes(st->db) == 1 ? STORAGE_OK : STORAGE_ENOTFOUND;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* Writes DATA to DIR/NAME through a flushed temporary file and a rename. */
static int write_durable(const char *dir, const char *name, const void *data, size_t len,
                         char *path, size_t pathlen)
{
    char tmp[PATH_MAX];
    if (snprintf(path, pathlen, "%s/%s", dir, name) >= (int)pathlen ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    int saved = errno;
    if (left > 0 || fsync(fd) != 0) {
        if (left == 0)
            saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return fsync_path(dir, 1);
}

int storage_result_temp(struct storage *st, const char *name, char *path, size_t pathlen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/results", st->data_dir);
    if (mkdir_durable(st->data_dir, dir) != 0)
        return STORAGE_EIO;
    int n = snprintf(path, pathlen, "%s/.%s.tmp", dir, name);
    return n < 0 || (size_t)n >= pathlen ? STORAGE_EINVAL : STORAGE_OK;
}

int storage_adopt_result(struct storage *st, const char *tmp, const char *name, char *path,
                         size_t pathlen, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/results", st->data_dir);
    if (snprintf(path, pathlen, "%s/%s", dir, name) >= (int)pathlen || fsync_path(tmp, 0) != 0 ||
        rename(tmp, path) != 0 || fsync_path(dir, 1) != 0) {
        seterr(err, errlen, "cannot store %s/%s: %s", dir, name, strerror(errno));
        unlink(tmp);
        return STORAGE_EIO;
    }
    return STORAGE_OK;
}

int storage_write_result(struct storage *st, int64_t id, const char *json, const void *labels,
                         size_t nbytes, char *path, size_t pathlen, char *err, size_t errlen)
{
    char dir[PATH_MAX], name[64], labels_path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/results", st->data_dir);
    if (mkdir_durable(st->data_dir, dir) != 0) {
        seterr(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return STORAGE_EIO;
    }
    snprintf(name, sizeof name, "%lld.labels.gz", (long long)id);
    if (write_durable(dir, name, labels, nbytes, labels_path, sizeof labels_path) != 0) {
        seterr(err, errlen, "cannot write %s/%s: %s", dir, name, strerror(errno));
        return STORAGE_EIO;
    }
    snprintf(name, sizeof name, "%lld.json", (long long)id);
    if (write_durable(dir, name, json, strlen(json), path, pathlen) != 0) {
        seterr(err, errlen, "cannot write %s/%s: %s", dir, name, strerror(errno));
        return STORAGE_EIO;
    }
    return STORAGE_OK;
}

int storage_foreach_job(struct storage *st, storage_job_fn fn, void *ud)
{
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->lock);
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT id, study_uid, series_uid, model, state, error, result,"
                                "  summary, attempts, created_at, coalesce(started_at, 0),"
                                "  coalesce(finished_at, 0) FROM jobs ORDER BY id",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        /* A store from before jobs existed has no such table: no jobs. */
        return STORAGE_OK;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct storage_job_row j = {
            .id = sqlite3_column_int64(s, 0),
            .study_uid = col_text(s, 1),
            .series_uid = col_text(s, 2),
            .model = col_text(s, 3),
            .state = col_text(s, 4),
            .error = col_text(s, 5),
            .result = col_text(s, 6),
            .summary = col_text(s, 7),
            .attempts = sqlite3_column_int(s, 8),
            .created_ms = sqlite3_column_int64(s, 9),
            .started_ms = sqlite3_column_int64(s, 10),
            .finished_ms = sqlite3_column_int64(s, 11),
        };
        if (fn(ud, &j)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

int storage_foreach_instance(struct storage *st, const char *series_uid, storage_path_fn fn,
                             void *ud)
{
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->lock);
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT sop_instance_uid, path FROM instances WHERE series_uid=?1"
                                " ORDER BY sop_instance_uid",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        return STORAGE_EIO;
    }
    sqlite3_bind_text(s, 1, series_uid, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (fn(ud, col_text(s, 0), col_text(s, 1))) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

int storage_foreach_study(struct storage *st, storage_study_fn fn, void *ud)
{
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->lock);
    int rc = sqlite3_prepare_v2(
        st->db,
        "SELECT st.study_uid, st.state,"
        "  (SELECT count(*) FROM instances i JOIN series se USING(series_uid)"
        "    WHERE se.study_uid=st.study_uid),"
        "  (SELECT count(*) FROM series se WHERE se.study_uid=st.study_uid),"
        "  st.last_received, coalesce(st.completed_at, 0)"
        " FROM studies st ORDER BY st.first_received, st.study_uid",
        -1, &s, NULL);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        return STORAGE_EIO;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct storage_study row = {
            .study_uid = (const char *)sqlite3_column_text(s, 0),
            .state = (const char *)sqlite3_column_text(s, 1),
            .instances = sqlite3_column_int64(s, 2),
            .series = sqlite3_column_int64(s, 3),
            .last_received_ms = sqlite3_column_int64(s, 4),
            .completed_ms = sqlite3_column_int64(s, 5),
        };
        if (fn(ud, &row)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc == SQLITE_DONE ? STORAGE_OK : STORAGE_EIO;
}

int storage_instance_path(struct storage *st, const char *sop_instance_uid, char *buf,
                          size_t len)
{
    sqlite3_stmt *s;
    int rc = STORAGE_ENOTFOUND;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db, "SELECT path FROM instances WHERE sop_instance_uid=?1", -1,
                           &s, NULL)
        != SQLITE_OK) {
        pthread_mutex_unlock(&st->lock);
        return STORAGE_EIO;
    }
    sqlite3_bind_text(s, 1, sop_instance_uid, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
        snprintf(buf, len, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = STORAGE_OK;
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc;
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
        exec_sql(st->db, "PRAGMA synchronous=FULL", NULL, 0);
    sqlite3_stmt *s;
    int rc = -1;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE studies SET state='deleting' WHERE study_uid=("
                           " SELECT study_uid FROM studies WHERE" STUDY_FINISHED
                           " AND coalesce(completed_at, last_received) < ?1"
                           " ORDER BY last_received, study_uid LIMIT 1) RETURNING study_uid",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, cutoff_ms);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW)
            snprintf(uid, sizeof uid, "%s", (const char *)sqlite3_column_text(s, 0));
        r = sqlite3_reset(s) == SQLITE_OK ? r : SQLITE_ERROR;
        sqlite3_finalize(s);
        rc = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : -1;
    }
    if (!st->sync_full)
        exec_sql(st->db, "PRAGMA synchronous=NORMAL", NULL, 0);
    if (rc < 0)
        seterr(err, errlen, "sqlite: %s", sqlite3_errmsg(st->db));
    if (rc == 1 && finish_deletion_cb(st, uid) != 0) {
        seterr(err, errlen, "cannot delete study %s: %s", uid, strerror(errno));
        rc = -1;
    }
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
    if (st->readonly)
        return STORAGE_EINVAL;
    if (!usage)
        usage = statvfs_usage;
    /* A deletion that failed earlier is retried first. */
    pthread_mutex_lock(&st->lock);
    if (finish_deletions(st) != 0) {
        seterr(err, errlen, "cannot finish deleting studies: %s", strerror(errno));
        rc = -1;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == 0 && retention_days > 0) {
        int64_t cutoff = now_ms - (int64_t)retention_days * 86400 * 1000;
        while ((rc = retain_one(st, cutoff, err, errlen)) == 1)
            n++;
    }
    while (rc == 0 && high_water_percent > 0) {
        double pct;
        if (usage(usage_ud, st->data_dir, &pct) != 0) {
            seterr(err, errlen, "cannot measure disk usage of %s", st->data_dir);
            rc = -1;
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
