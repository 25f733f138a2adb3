/*
 * instance.c — received instances: commit, index and the start-up repair.
 *
 * Layout under DATA_DIR:
 *   ainode.db                     SQLite (WAL)
 *   tmp/                          incoming bytes; emptied at every open
 *   instances/<study>/<series>/   <sop>.dcm (or <sop>.N.dcm after a resend)
 *   quarantine/                   <sop>.dcm: instances refused as contradicting
 *                                 the store, kept with the quarantine policy
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
 * A resend of the very bytes stored is answered success and changes
 * nothing, its study's state included (same_as_stored).
 * After an unclean stop, a linked file without a row (a crash between 1
 * and 4, or a power cut that took the last WAL frames) is indexed again if
 * it reads as a complete instance, and removed otherwise.
 *
 * The rows: one per patient, study, series and instance, each holding the
 * attributes attr.def puts at its level. The upserts are generated from
 * attr.def when the store opens, so a new attribute is indexed without a
 * line here.
 */
#include "storage/internal.h"

#include "common/crashpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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

int storage_temp_path(struct storage *st, char *buf, size_t len)
{
    unsigned long seq = atomic_fetch_add(&st->temp_seq, 1);
    int n = snprintf(buf, len, "%s/%ld-%lu.part", st->tmp_dir, (long)getpid(), seq);
    if (n < 0 || (size_t)n >= len)
        return STORAGE_EINVAL;
    /* Made here, private: the writer (DCMTK's, or any) truncates it and
     * keeps its mode, so received bytes are never readable by others. */
    int fd = open(buf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return STORAGE_EIO;
    int rc = fchmod(fd, 0640);
    close(fd);
    if (rc != 0) {
        unlink(buf);
        return STORAGE_EIO;
    }
    CRASH_POINT("ingest.temp_created");
    return STORAGE_OK;
}

/* ------------------------------------------------------------------------ */
/* The upserts, from attr.def                                               */

/* The attributes that identify a row of their level: its conflict target,
 * bound as '' when absent (a patient without an ID or issuer). */
static int attr_is_key(int id)
{
    return id == ATTR_PATIENT_ID || id == ATTR_ISSUER_OF_PATIENT_ID ||
           id == ATTR_STUDY_INSTANCE_UID || id == ATTR_SERIES_INSTANCE_UID ||
           id == ATTR_SOP_INSTANCE_UID;
}

/*
 * INSERT INTO <table of LEVEL>(<its attribute columns>, EXT_COLS)
 *   VALUES(?N_EXT+1 ..., EXT_VALS) ON CONFLICT(<its keys>)
 *   DO UPDATE SET <each other attribute column>=excluded.<column>, EXT_SET TAIL
 * The N_EXT parameters of EXT_VALS come first (?1..?N_EXT). The patient's
 * columns keep their stored value where the instance has none: an
 * instance without a PatientName must not blank the patient's.
 */
static char *build_upsert(enum attr_level level, int n_ext, const char *ext_cols,
                          const char *ext_vals, const char *ext_set, const char *tail)
{
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    if (!f)
        return NULL;
    fprintf(f, "INSERT INTO %s(", db_level_table(level));
    int n = 0;
    for (int i = 0; i < ATTR_COUNT; i++)
        if (attr_table[i].level == level)
            fprintf(f, "%s%s", n++ ? ", " : "", attr_table[i].column);
    fprintf(f, "%s%s) VALUES(", ext_cols ? ", " : "", ext_cols ? ext_cols : "");
    for (int j = 0; j < n; j++)
        fprintf(f, "%s?%d", j ? ", " : "", n_ext + 1 + j);
    fprintf(f, "%s%s) ON CONFLICT(", ext_vals ? ", " : "", ext_vals ? ext_vals : "");
    n = 0;
    for (int i = 0; i < ATTR_COUNT; i++)
        if (attr_table[i].level == level && attr_is_key(i))
            fprintf(f, "%s%s", n++ ? ", " : "", attr_table[i].column);
    fprintf(f, ") DO UPDATE SET ");
    n = 0;
    for (int i = 0; i < ATTR_COUNT; i++)
        if (attr_table[i].level == level && !attr_is_key(i))
            fprintf(f, level == ATTR_LEVEL_PATIENT ? "%s%s=coalesce(excluded.%s, %s)"
                                                   : "%s%s=excluded.%s",
                    n++ ? ", " : "", attr_table[i].column, attr_table[i].column,
                    attr_table[i].column);
    fprintf(f, "%s%s %s", ext_set && n ? ", " : "", ext_set ? ext_set : "", tail ? tail : "");
    if (fclose(f) != 0) {
        free(sql);
        return NULL;
    }
    return sql;
}

/* Binds the attributes of LEVEL from A, after N_EXT other parameters. */
static void bind_level(sqlite3_stmt *s, enum attr_level level, int n_ext, const char *const *a)
{
    int j = n_ext + 1;
    for (int i = 0; i < ATTR_COUNT; i++) {
        if (attr_table[i].level != level)
            continue;
        if (attr_is_key(i))
            sqlite3_bind_text(s, j, a[i] ? a[i] : "", -1, SQLITE_STATIC);
        else
            db_bind_attr(s, j, attr_table[i].kind, a[i]);
        j++;
    }
}

static int prepare_owned(struct storage *st, sqlite3_stmt **stmt, char *sql)
{
    if (!sql)
        return STORAGE_ENOMEM;
    int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
    free(sql);
    return rc == SQLITE_OK ? STORAGE_OK : STORAGE_EIO;
}

static int prepare(struct storage *st, sqlite3_stmt **stmt, const char *sql)
{
    return prepare_owned(st, stmt, strdup(sql));
}

int instance_prepare(struct storage *st, char *err, size_t errlen)
{
    const char *study_col = attr_table[ATTR_STUDY_INSTANCE_UID].column;
    const char *series_col = attr_table[ATTR_SERIES_INSTANCE_UID].column;
    char cols[128], set[128], old[256], series_study[128], study_patient[256],
        demographics[256];
    snprintf(cols, sizeof cols, "%s", study_col);
    snprintf(set, sizeof set, "%s=excluded.%s", study_col, study_col);
    snprintf(old, sizeof old,
             "SELECT i.path, i.%s, s.%s FROM instances i JOIN series s USING(%s)"
             " WHERE i.%s=?1",
             series_col, study_col, series_col, attr_table[ATTR_SOP_INSTANCE_UID].column);
    snprintf(series_study, sizeof series_study, "SELECT %s FROM series WHERE %s=?1", study_col,
             series_col);
    snprintf(study_patient, sizeof study_patient,
             "SELECT p.%s, p.%s, p.id FROM studies s JOIN patients p ON p.id=s.patient"
             " WHERE s.%s=?1",
             attr_table[ATTR_PATIENT_ID].column, attr_table[ATTR_ISSUER_OF_PATIENT_ID].column,
             study_col);
    snprintf(demographics, sizeof demographics,
             "SELECT %s, %s, %s FROM patients WHERE %s=?1 AND %s=?2",
             attr_table[ATTR_PATIENT_NAME].column, attr_table[ATTR_PATIENT_BIRTH_DATE].column,
             attr_table[ATTR_PATIENT_SEX].column, attr_table[ATTR_PATIENT_ID].column,
             attr_table[ATTR_ISSUER_OF_PATIENT_ID].column);
    int rc;
    if ((rc = prepare_owned(st, &st->st_patient_upsert,
                            build_upsert(ATTR_LEVEL_PATIENT, 0, NULL, NULL, NULL,
                                         "RETURNING id"))) ||
        (rc = prepare_owned(
             st, &st->st_study_upsert,
             build_upsert(ATTR_LEVEL_STUDY, 2, "patient, state, first_received, last_received",
                          "?1, 'receiving', ?2, ?2",
                          "patient=excluded.patient, state='receiving', completed_at=NULL,"
                          " last_received=max(last_received, excluded.last_received)",
                          NULL))) ||
        (rc = prepare(st, &st->st_study_touch,
                      "UPDATE studies SET state='receiving', completed_at=NULL,"
                      "  last_received=max(last_received, ?2) WHERE study_uid=?1")) ||
        (rc = prepare_owned(st, &st->st_series_upsert,
                            build_upsert(ATTR_LEVEL_SERIES, 1, cols, "?1", set, NULL))) ||
        (rc = prepare(st, &st->st_inst_old, old)) ||
        (rc = prepare_owned(
             st, &st->st_inst_upsert,
             build_upsert(ATTR_LEVEL_INSTANCE, 8,
                          "series_uid, transfer_syntax, calling_ae, called_ae, source_addr,"
                          " received_at, path, size",
                          "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8",
                          "series_uid=excluded.series_uid,"
                          " transfer_syntax=excluded.transfer_syntax,"
                          " calling_ae=excluded.calling_ae, called_ae=excluded.called_ae,"
                          " source_addr=excluded.source_addr, received_at=excluded.received_at,"
                          " path=excluded.path, size=excluded.size",
                          NULL))) ||
        (rc = prepare(st, &st->st_series_study, series_study)) ||
        (rc = prepare(st, &st->st_study_patient, study_patient)) ||
        (rc = prepare(st, &st->st_patient_demographics, demographics)))
        return error_set(err, errlen, rc, "sqlite: %s", sqlite3_errmsg(st->db));
    return STORAGE_OK;
}

void instance_finalize(struct storage *st)
{
    sqlite3_stmt **all[] = {&st->st_patient_upsert,   &st->st_study_upsert,
                            &st->st_study_touch,      &st->st_series_upsert,
                            &st->st_inst_old,         &st->st_inst_upsert,
                            &st->st_series_study,     &st->st_study_patient,
                            &st->st_patient_demographics};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(*all[i]);
        *all[i] = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Index                                                                    */

/* The values INST gives its patient, study and series rows, as one string. */
static char *parents_key(const struct storage_instance *inst)
{
    size_t len = 1;
    for (int i = 0; i < ATTR_COUNT; i++)
        if (attr_table[i].level != ATTR_LEVEL_INSTANCE)
            len += (inst->attr[i] ? strlen(inst->attr[i]) : 0) + 2;
    char *key = malloc(len), *p = key;
    if (!key)
        return NULL;
    *p = '\0';
    for (int i = 0; i < ATTR_COUNT; i++) {
        if (attr_table[i].level == ATTR_LEVEL_INSTANCE)
            continue;
        const char *v = inst->attr[i];
        /* \x1e marks an absent value, \x1f ends each value. */
        p += sprintf(p, "%s\x1f", v ? v : "\x1e");
    }
    return key;
}

struct old_row {
    char *path, *series, *study;
};

static int old_row_fn(void *ud, sqlite3_stmt *row)
{
    struct old_row *o = ud;
    o->path = strdup(db_text(row, 0));
    o->series = strdup(db_text(row, 1));
    o->study = strdup(db_text(row, 2));
    return 1;
}

static int row_id_fn(void *ud, sqlite3_stmt *row)
{
    *(int64_t *)ud = sqlite3_column_int64(row, 0);
    return 1;
}

struct texts {
    char *v[3];
    int found;
};

static int texts_fn(void *ud, sqlite3_stmt *row)
{
    struct texts *t = ud;
    t->found = 1;
    for (int i = 0; i < 3 && i < sqlite3_column_count(row); i++) {
        const char *v = db_text(row, i);
        if (v && !(t->v[i] = strdup(v)))
            return STORAGE_ENOMEM;
    }
    return 1;
}

static void texts_free(struct texts *t)
{
    for (int i = 0; i < 3; i++)
        free(t->v[i]);
    memset(t, 0, sizeof *t);
}

/* Runs S bound to A and B (B may be NULL) into *T. */
static int texts_query(sqlite3_stmt *s, const char *a, const char *b, struct texts *t)
{
    memset(t, 0, sizeof *t);
    sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
    return db_step(s, texts_fn, t);
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* 1 when the stored value OLD and the received NEW of attribute ID both
 * exist and differ (as attr.def compares them: TEXT ignoring case). */
static int value_differs(enum attr_id id, const char *old, const char *new)
{
    if (!old || !*old || !new || !*new)
        return 0;
    return attr_table[id].kind == ATTR_KIND_TEXT ? strcasecmp(old, new) != 0
                                                 : strcmp(old, new) != 0;
}

/*
 * STORAGE_EINTEGRITY when INST contradicts the rows above it (its series
 * in another study; its patient with other demographics; resent (RESEND),
 * its study for another patient), with the reason in ERR: attribute names
 * only, since the reason is logged and sent back to the caller.
 *
 * A new instance of a stored study that names another patient is kept in
 * that study, which stays its patient's: *KEEP_PATIENT gets the study's
 * patient row, else -1 (the instance's own patient row applies). A study
 * is never moved to another patient; refusing such an instance would
 * refuse studies whose modalities disagree on the Patient ID.
 * Called with st->lock held.
 */
static int check_parents(struct storage *st, const struct storage_instance *inst, int resend,
                         int64_t *keep_patient, char *err, size_t errlen)
{
    const char *const *a = inst->attr;
    const char *pid = or_empty(a[ATTR_PATIENT_ID]), *issuer = or_empty(a[ATTR_ISSUER_OF_PATIENT_ID]);
    struct texts t;
    int rc;

    if ((rc = texts_query(st->st_series_study, a[ATTR_SERIES_INSTANCE_UID], NULL, &t)))
        goto io;
    int moved = t.found && strcmp(or_empty(t.v[0]), a[ATTR_STUDY_INSTANCE_UID]) != 0;
    texts_free(&t);
    if (moved)
        return error_set(err, errlen, STORAGE_EINTEGRITY,
                         "SeriesInstanceUID already stored in another study");

    *keep_patient = -1;
    if ((rc = texts_query(st->st_study_patient, a[ATTR_STUDY_INSTANCE_UID], NULL, &t)))
        goto io;
    moved = t.found && (strcmp(or_empty(t.v[0]), pid) != 0 || strcmp(or_empty(t.v[1]), issuer) != 0);
    int64_t study_patient = t.found && t.v[2] ? strtoll(t.v[2], NULL, 10) : -1;
    texts_free(&t);
    if (moved && resend)
        return error_set(err, errlen, STORAGE_EINTEGRITY,
                         "SOPInstanceUID already stored for another PatientID");
    if (moved) {
        *keep_patient = study_patient;
        return STORAGE_OK; /* its patient's values are not stored: nothing to compare */
    }

    /* Without a Patient ID, instances share one anonymous patient row:
     * there is no identity to contradict. */
    if (!*pid)
        return STORAGE_OK;
    if ((rc = texts_query(st->st_patient_demographics, pid, issuer, &t)))
        goto io;
    static const enum attr_id demo[] = {ATTR_PATIENT_NAME, ATTR_PATIENT_BIRTH_DATE,
                                        ATTR_PATIENT_SEX};
    char which[128] = "";
    for (size_t i = 0; t.found && i < sizeof demo / sizeof demo[0]; i++)
        if (value_differs(demo[i], t.v[i], a[demo[i]])) {
            size_t n = strlen(which);
            snprintf(which + n, sizeof which - n, "%s%s", n ? ", " : "",
                     attr_table[demo[i]].keyword);
        }
    texts_free(&t);
    if (which[0])
        return error_set(err, errlen, STORAGE_EINTEGRITY,
                         "PatientID already stored with another %s", which);
    return STORAGE_OK;
io:
    texts_free(&t);
    return error_set(err, errlen, rc == STORAGE_ENOMEM ? rc : STORAGE_EIO, "sqlite: %s",
                     sqlite3_errmsg(st->db));
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
    const char *study = a[ATTR_STUDY_INSTANCE_UID], *series = a[ATTR_SERIES_INSTANCE_UID];
    struct old_row old = {0};
    char *parents = NULL;
    *old_path = NULL;

    sqlite3_bind_text(st->st_inst_old, 1, a[ATTR_SOP_INSTANCE_UID], -1, SQLITE_STATIC);
    db_step(st->st_inst_old, old_row_fn, &old);
    /* A resend stays in its series: moving it would change what its
     * study held (and drop a study left empty). */
    if (old.series && strcmp(old.series, series) != 0) {
        int rc = error_set(err, errlen, STORAGE_EINTEGRITY,
                           "SOPInstanceUID already stored in another %s",
                           strcmp(old.study, study) != 0 ? "study" : "series");
        free(old.path);
        free(old.series);
        free(old.study);
        return rc;
    }
    parents = parents_key(inst);
    if (!parents) {
        free(old.path);
        free(old.series);
        free(old.study);
        return error_set(err, errlen, STORAGE_ENOMEM, "out of memory");
    }
    /* The rows above the last instance indexed were checked then. */
    int same_parents = st->last_parents && strcmp(parents, st->last_parents) == 0;
    int64_t keep_patient = -1;
    int crc = same_parents ? STORAGE_OK
                           : check_parents(st, inst, old.path != NULL, &keep_patient, err, errlen);
    if (crc != STORAGE_OK) {
        free(parents);
        free(old.path);
        free(old.series);
        free(old.study);
        return crc;
    }
    *old_path = old.path;
    int full_sync = old.path && !st->sync_full;
    if (full_sync)
        db_exec(st, "PRAGMA synchronous=FULL", NULL, 0);
    if (db_exec(st, "BEGIN IMMEDIATE", err, errlen))
        goto fail_quiet;

    if (same_parents) {
        sqlite3_stmt *s = st->st_study_touch;
        sqlite3_bind_text(s, 1, study, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, inst->received_ms);
        if (db_step(s, NULL, NULL))
            goto fail;
        if (db_changes(st) == 1)
            goto instance_row;
        /* The study row went away since: write all rows again. */
    }

    int64_t patient = keep_patient;
    if (patient < 0) {
        bind_level(st->st_patient_upsert, ATTR_LEVEL_PATIENT, 0, a);
        if (db_step(st->st_patient_upsert, row_id_fn, &patient) || patient < 0)
            goto fail;
    }

    sqlite3_bind_int64(st->st_study_upsert, 1, patient);
    sqlite3_bind_int64(st->st_study_upsert, 2, inst->received_ms);
    bind_level(st->st_study_upsert, ATTR_LEVEL_STUDY, 2, a);
    if (db_step(st->st_study_upsert, NULL, NULL))
        goto fail;

    sqlite3_bind_text(st->st_series_upsert, 1, study, -1, SQLITE_STATIC);
    bind_level(st->st_series_upsert, ATTR_LEVEL_SERIES, 1, a);
    if (db_step(st->st_series_upsert, NULL, NULL))
        goto fail;

instance_row:;
    sqlite3_stmt *s = st->st_inst_upsert;
    sqlite3_bind_text(s, 1, series, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, inst->transfer_syntax, -1, SQLITE_STATIC);
    db_bind_attr(s, 3, ATTR_KIND_TEXT, inst->calling_ae);
    db_bind_attr(s, 4, ATTR_KIND_TEXT, inst->called_ae);
    db_bind_attr(s, 5, ATTR_KIND_TEXT, inst->source_addr);
    sqlite3_bind_int64(s, 6, inst->received_ms);
    sqlite3_bind_text(s, 7, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, size);
    bind_level(s, ATTR_LEVEL_INSTANCE, 8, a);
    if (db_step(s, NULL, NULL))
        goto fail;

    CRASH_POINT("ingest.before_commit"); /* the rows written, not committed */
    if (db_exec(st, "COMMIT", err, errlen))
        goto fail_rollback;
    if (full_sync)
        db_exec(st, "PRAGMA synchronous=NORMAL", NULL, 0);
    free(st->last_parents);
    st->last_parents = parents;
    free(old.series);
    free(old.study);
    return STORAGE_OK;
fail:
    error_set(err, errlen, STORAGE_EIO, "sqlite: %s", sqlite3_errmsg(st->db));
fail_rollback:
    db_rollback(st);
fail_quiet:
    if (full_sync)
        db_exec(st, "PRAGMA synchronous=NORMAL", NULL, 0);
    free(st->last_parents);
    st->last_parents = NULL;
    free(parents);
    free(*old_path);
    *old_path = NULL;
    free(old.series);
    free(old.study);
    return STORAGE_EIO;
}

/* ------------------------------------------------------------------------ */
/* Commit                                                                   */

/* A name retention is removing a file under (see retention.c). */
static int name_doomed(void *ud, const char *path)
{
    struct storage *st = ud;
    int found = 0;
    pthread_mutex_lock(&st->doomed_lock);
    for (size_t i = 0; i < st->n_doomed && !found; i++)
        found = !strcmp(st->doomed[i], path);
    pthread_mutex_unlock(&st->doomed_lock);
    return found;
}

void storage_set_conflict_policy(struct storage *st, enum storage_conflict_policy policy)
{
    atomic_store(&st->conflict_policy, (int)policy);
}

/* A refused instance's file PATH: removed, or with the quarantine policy
 * moved (durably, unindexed) to DATA_DIR/quarantine, where the repair
 * never looks. */
static void set_aside(struct storage *st, const char *path, const char *sop)
{
    char kept[PATH_MAX];
    if (atomic_load(&st->conflict_policy) == STORAGE_CONFLICT_QUARANTINE &&
        file_mkdir_durable(st->data_dir, st->quarantine_dir) == 0 &&
        file_link_fresh(path, st->quarantine_dir, sop, kept, sizeof kept, NULL, NULL) == 0 &&
        file_sync(st->quarantine_dir, 1) != 0)
        unlink(kept); /* not durably kept: as good as refused */
    unlink(path);
}

/* Reads up to LEN bytes of FD into BUF (fewer only at the end of the file);
 * the count, or -1. */
static ssize_t read_full(int fd, unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* 1 when the file at PATH holds exactly the bytes stored for SOP, else 0
 * (none stored, unreadable, or other bytes). */
static int same_as_stored(struct storage *st, const char *sop, const char *path)
{
    char stored[PATH_MAX];
    if (storage_instance_path(st, sop, stored, sizeof stored) != STORAGE_OK)
        return 0;
    enum { CHUNK = 64 * 1024 };
    unsigned char *a = malloc(2 * CHUNK);
    int fa = open(path, O_RDONLY | O_CLOEXEC), fb = open(stored, O_RDONLY | O_CLOEXEC);
    struct stat sa, sb;
    int same = a && fa >= 0 && fb >= 0 && fstat(fa, &sa) == 0 && fstat(fb, &sb) == 0 &&
               sa.st_size == sb.st_size;
    while (same) {
        ssize_t na = read_full(fa, a, CHUNK), nb = read_full(fb, a + CHUNK, CHUNK);
        same = na >= 0 && na == nb && memcmp(a, a + CHUNK, (size_t)na) == 0;
        if (na < CHUNK)
            break;
    }
    if (fa >= 0)
        close(fa);
    if (fb >= 0)
        close(fb);
    free(a);
    return same;
}

int storage_commit(struct storage *st, const char *temp_path,
                   const struct storage_instance *inst, char *err, size_t errlen)
{
    const char *const *a = inst->attr;
    static const enum attr_id required[] = {ATTR_SOP_CLASS_UID, ATTR_SOP_INSTANCE_UID,
                                            ATTR_STUDY_INSTANCE_UID, ATTR_SERIES_INSTANCE_UID};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        const char *v = a[required[i]];
        const char *why = !v || !*v ? "missing" : !storage_uid_valid(v) ? "invalid" : NULL;
        /* These reach file names: only the strict UID grammar is allowed. */
        if (why) {
            unlink(temp_path);
            return error_set(err, errlen, STORAGE_EINVAL, "%s %s", why,
                             attr_table[required[i]].keyword);
        }
    }
    if (!inst->transfer_syntax || !storage_uid_valid(inst->transfer_syntax)) {
        unlink(temp_path);
        return error_set(err, errlen, STORAGE_EINVAL, "invalid transfer syntax");
    }

    char study_dir[PATH_MAX], series_dir[PATH_MAX], final[PATH_MAX];
    int rc = STORAGE_EIO;
    struct stat sb;
    final[0] = '\0';
    if (snprintf(study_dir, sizeof study_dir, "%s/%s", st->inst_dir,
                 a[ATTR_STUDY_INSTANCE_UID]) >= (int)sizeof study_dir ||
        snprintf(series_dir, sizeof series_dir, "%s/%s", study_dir,
                 a[ATTR_SERIES_INSTANCE_UID]) >= (int)sizeof series_dir) {
        error_set(err, errlen, rc, "path too long");
        goto fail;
    }
    CRASH_POINT("ingest.received"); /* the bytes in tmp/, nothing else done */
    /* The very bytes stored already: a sender that got no answer (the node
     * died between the commit and the response) sends them again, maybe
     * after its study was completed. Stored, and nothing changes: received
     * again, the study would be processed again and its results sent again
     * under new UIDs. (Retention may remove the stored file right after
     * this; as it would have a moment after a first commit.) */
    if (same_as_stored(st, a[ATTR_SOP_INSTANCE_UID], temp_path)) {
        unlink(temp_path);
        return STORAGE_OK;
    }
    /* Private before it has a name under instances/, however it was
     * written. */
    if (chmod(temp_path, 0640) != 0) {
        error_set(err, errlen, rc, "cannot make the received file private: %s",
                  strerror(errno));
        goto fail;
    }
    /* Retention may remove the (empty) directories of this study between
     * the mkdir and the link: make them again. */
    for (int tries = 0;; tries++) {
        if (file_mkdir_durable(st->inst_dir, study_dir) != 0 ||
            file_mkdir_durable(study_dir, series_dir) != 0) {
            if (errno == ENOENT && tries < 5)
                continue;
            error_set(err, errlen, rc, "cannot create directory: %s", strerror(errno));
            goto fail;
        }
        if (file_link_fresh(temp_path, series_dir, a[ATTR_SOP_INSTANCE_UID], final,
                            sizeof final, name_doomed, st) == 0)
            break;
        if (errno == ENOENT && tries < 5 && access(temp_path, F_OK) == 0)
            continue;
        error_set(err, errlen, rc, "cannot place file: %s", strerror(errno));
        final[0] = '\0';
        goto fail;
    }
    /* Linking before flushing is safe: until the row commits, the file is
     * unindexed, and the repair after a crash checks it. With the temporary
     * name gone the file has one name, so a file system that flushes a new
     * file's directory with the file (ext4, with or without a journal)
     * leaves the directory fsync below almost nothing to do. */
    unlink(temp_path);
    CRASH_POINT("ingest.linked"); /* named, not flushed, not indexed */
    if (file_sync(final, 0) != 0 || stat(final, &sb) != 0) {
        error_set(err, errlen, rc, "cannot flush received file: %s", strerror(errno));
        goto fail;
    }
    /* Concurrent commits into the series share one directory flush. */
    if (file_sync_dir_shared(st->dir_syncs, series_dir) != 0) {
        error_set(err, errlen, rc, "cannot flush directory: %s", strerror(errno));
        goto fail;
    }
    CRASH_POINT("ingest.flushed"); /* durable, not indexed: the repair's to index */
    char *old_path = NULL;
    pthread_mutex_lock(&st->lock);
    rc = index_instance(st, inst, final, (int64_t)sb.st_size, &old_path, err, errlen);
    pthread_mutex_unlock(&st->lock);
    if (rc == STORAGE_EINTEGRITY) {
        set_aside(st, final, a[ATTR_SOP_INSTANCE_UID]);
        final[0] = '\0';
        /* Directories made for this instance alone go (rmdir fails
         * harmlessly on one that holds other instances; a commit racing
         * this makes its directories again, see above). */
        rmdir(series_dir);
        rmdir(study_dir);
        goto fail;
    }
    if (rc != STORAGE_OK)
        goto fail;
    CRASH_POINT("ingest.indexed"); /* stored, not yet answered */
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

/* ------------------------------------------------------------------------ */
/* Repair                                                                   */

/* Indexes again a complete instance file that no row references. Its
 * place in the tree must be the one its UIDs give. */
static int reindex_file(struct storage *st, const char *path, const char *study_dir_name,
                        const char *series_dir_name, const struct stat *sb)
{
    char *values[ATTR_COUNT] = {0};
    char *ts = NULL, *calling = NULL;
    int rc = STORAGE_EINVAL;
    if (!st->read || st->read(st->read_ud, path, values, &ts, &calling) != 0)
        goto out;
    const char *sop = values[ATTR_SOP_INSTANCE_UID];
    const char *base = strrchr(path, '/') + 1;
    size_t sop_len = sop ? strlen(sop) : 0;
    if (!storage_uid_valid(values[ATTR_SOP_CLASS_UID]) || !storage_uid_valid(sop) ||
        !storage_uid_valid(values[ATTR_STUDY_INSTANCE_UID]) ||
        !storage_uid_valid(values[ATTR_SERIES_INSTANCE_UID]) || !storage_uid_valid(ts) ||
        strcmp(values[ATTR_STUDY_INSTANCE_UID], study_dir_name) != 0 ||
        strcmp(values[ATTR_SERIES_INSTANCE_UID], series_dir_name) != 0 ||
        strncmp(base, sop, sop_len) != 0 || base[sop_len] != '.')
        goto out;
    struct storage_instance inst;
    memset(&inst, 0, sizeof inst);
    for (int i = 0; i < ATTR_COUNT; i++)
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
    for (int i = 0; i < ATTR_COUNT; i++)
        free(values[i]);
    free(ts);
    free(calling);
    return rc;
}

static int found_fn(void *ud, sqlite3_stmt *row)
{
    (void)row;
    *(int *)ud = 1;
    return 1;
}

static int path_is_indexed(sqlite3_stmt *q, const char *path)
{
    int found = 0;
    sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
    db_step(q, found_fn, &found);
    return found;
}

/* The start-up repair after an unclean stop: every file under instances/
 * that no row references is indexed again when complete, else removed;
 * empty directories go too. */
int instance_repair(struct storage *st)
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
        char *study = file_join(st->inst_dir, e1->d_name);
        DIR *d2 = study ? opendir(study) : NULL;
        struct dirent *e2;
        while (d2 && (e2 = readdir(d2))) {
            if (e2->d_name[0] == '.')
                continue;
            char *series = file_join(study, e2->d_name);
            DIR *d3 = series ? opendir(series) : NULL;
            struct dirent *e3;
            while (d3 && (e3 = readdir(d3))) {
                if (e3->d_name[0] == '.')
                    continue;
                char *f = file_join(series, e3->d_name);
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
/* Look-ups                                                                 */

struct path_buf {
    char *buf;
    size_t len;
    int found;
};

static int path_fn(void *ud, sqlite3_stmt *row)
{
    struct path_buf *p = ud;
    snprintf(p->buf, p->len, "%s", db_text(row, 0));
    p->found = 1;
    return 1;
}

int storage_instance_path(struct storage *st, const char *sop_instance_uid, char *buf,
                          size_t len)
{
    struct path_buf p = {buf, len, 0};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st, "SELECT path FROM instances WHERE sop_instance_uid=?1", path_fn, &p,
                    "t", sop_instance_uid);
    pthread_mutex_unlock(&st->lock);
    return rc != STORAGE_OK ? rc : p.found ? STORAGE_OK : STORAGE_ENOTFOUND;
}

struct each_path {
    storage_path_fn fn;
    void *ud;
};

static int each_path_fn(void *ud, sqlite3_stmt *row)
{
    struct each_path *e = ud;
    return e->fn(e->ud, db_text(row, 0), db_text(row, 1)) ? 1 : 0;
}

int storage_foreach_instance(struct storage *st, const char *series_uid, storage_path_fn fn,
                             void *ud)
{
    struct each_path e = {fn, ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT sop_instance_uid, path FROM instances WHERE series_uid=?1"
                    " ORDER BY sop_instance_uid",
                    each_path_fn, &e, "t", series_uid);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int storage_foreach_job_instance(struct storage *st, int64_t job_id, storage_path_fn fn,
                                 void *ud)
{
    struct each_path e = {fn, ud};
    pthread_mutex_lock(&st->lock);
    int rc = db_run(st,
                    "SELECT i.sop_instance_uid, i.path FROM jobs j, json_each(j.series) s"
                    " JOIN instances i ON i.series_uid=s.value"
                    " WHERE j.id=?1 ORDER BY s.key, i.sop_instance_uid",
                    each_path_fn, &e, "I", job_id);
    pthread_mutex_unlock(&st->lock);
    return rc;
}
