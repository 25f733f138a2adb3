/*
 * internal.h — what the files of storage/ share; not part of the public API.
 *
 *   file.c       durable-file primitives: fsync of files and directories,
 *                directories made durably, fresh names, write-and-rename
 *   db.c         the database: open modes, numbered migrations, the schema
 *                check against common/attr.def, and db_run(), the one loop
 *                that prepares, binds, steps and finalizes a statement
 *   instance.c   commit and index of received instances, the start-up repair
 *   plan.c       completion: receiving studies, series rows, plan commit
 *   hold.c       studies held back from completion (refused instances)
 *   job.c        the job queue
 *   outbox.c     the outbox
 *   result.c     result files
 *   retention.c  deleting finished studies
 *   listing.c    what status shows: studies, jobs, unmatched series; the
 *                paged, filtered listings of studies and jobs (cursors)
 *   counts.c     studies, jobs and outbox items counted by state (metrics)
 *   audit.c      the audit trail: associations and sends, their listing
 *                and their own retention
 */
#ifndef AINODE_STORAGE_INTERNAL_H
#define AINODE_STORAGE_INTERNAL_H

#include "common/attr.h"
#include "common/error.h"
#include "storage/storage.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/types.h>

/* Open modes. */
enum storage_mode {
    STORAGE_MODE_SERVE,           /* the node: creates, migrates, repairs */
    STORAGE_MODE_READONLY,        /* status, explain */
    STORAGE_MODE_ADMIN,           /* retry, while the node may run: every commit synced */
};

struct storage {
    enum storage_mode mode;
    storage_read_fn read;
    void *read_ud;
    int reindexed, removed;       /* by the repair at open */
    int sync_full;                /* commits wait for the disk (only while opening) */
    /* The patient, study and series values of the last instance indexed:
     * the next instance of the same series (the usual case) only touches
     * its study's receive time and its own row. */
    char *last_parents;
    char *data_dir;
    char *tmp_dir;
    char *inst_dir;
    char *results_dir;
    char *quarantine_dir;         /* refused instances, kept aside (conflict policy) */
    char *crash_record;           /* DATA_DIR/job-crash (see storage_crash_record_path) */
    atomic_int conflict_policy;   /* enum storage_conflict_policy */
    sqlite3 *db;
    pthread_mutex_t lock;         /* one writer connection, serialised */
    atomic_ulong temp_seq;
    /* The index upserts, generated from attr.def at open (instance.c). */
    sqlite3_stmt *st_patient_upsert;
    sqlite3_stmt *st_study_upsert;
    sqlite3_stmt *st_study_touch;
    sqlite3_stmt *st_series_upsert;
    sqlite3_stmt *st_inst_old;
    sqlite3_stmt *st_inst_upsert;
    /* What an instance must agree with (instance.c). */
    sqlite3_stmt *st_series_study;
    sqlite3_stmt *st_study_patient;
    sqlite3_stmt *st_patient_demographics;
    /* The series rows query, generated from attr.def at open (plan.c). */
    char *series_rows_sql;
    /* The files retention is removing, and their names: a new instance
     * must not take one of those names until their records are gone
     * durably (see retention.c). */
    pthread_mutex_t doomed_lock;
    char *const *doomed;
    size_t n_doomed;
    /* For tests: called by retention while it removes a study's files,
     * with no lock held (see storage_set_retain_hook). */
    void (*retain_hook)(void *ud, const char *study_uid);
    void *retain_hook_ud;
    /* Directory flushes shared among concurrent commits (file.c). */
    struct file_dir_syncs *dir_syncs;
};

/* ---- file.c ---- */

/* A + "/" + B, malloc'ed; NULL when out of memory. */
char *file_join(const char *a, const char *b);
/* fsync of a file, or of a directory (DIRECTORY non-zero); errno kept. */
int file_sync(const char *path, int directory);
/* Directory flushes shared by the threads that ask for the same directory
 * at once (group commit): one fsync serves every caller whose entry was
 * made before it began. */
struct file_dir_syncs;
struct file_dir_syncs *file_dir_syncs_new(void);
void file_dir_syncs_free(struct file_dir_syncs *s);
/* Returns once DIR has been flushed by an fsync that began after this
 * call: 0, or -1 with errno when that fsync (or a later one of DIR that
 * the caller waited for) failed. */
int file_sync_dir_shared(struct file_dir_syncs *s, const char *dir);
/* mkdir PATH (0750 whatever the umask) and make its name durable in
 * PARENT; 0 when it exists. */
int file_mkdir_durable(const char *parent, const char *path);
/* Unlinks every entry of DIR (not recursive); 0 when DIR does not exist. */
int file_empty_dir(const char *dir);
/* Unlinks PATH; a missing file is not an error. */
int file_unlink_gone(const char *path);
/* Links TEMP to a fresh name in DIR ("<name>.dcm", else "<name>.N.dcm")
 * so that an existing file is never overwritten, nor a name TAKEN (may be
 * NULL) says is reserved; the name goes to OUT. */
int file_link_fresh(const char *temp, const char *dir, const char *name, char *out,
                    size_t outlen, int (*taken)(void *ud, const char *path), void *ud);
/* Writes DATA to DIR/NAME (0640) through a flushed temporary file and a
 * rename whose directory entry is flushed too; the final path goes to PATH. */
int file_write_durable(const char *dir, const char *name, const void *data, size_t len,
                       char *path, size_t pathlen);

/* ---- db.c ---- */

/* Called with each row of db_run(): 0 goes on, > 0 stops (db_run then
 * returns STORAGE_OK), < 0 stops and is returned. */
typedef int (*db_row_fn)(void *ud, sqlite3_stmt *row);

/*
 * Runs SQL with the arguments ARGS describes, one character each:
 *   t  const char *, bound as text (NULL as NULL)
 *   o  const char *, optional: NULL or "" bound as NULL
 *   i  int
 *   I  int64_t
 * and calls ROW (may be NULL) with every row. Returns STORAGE_OK or
 * STORAGE_EIO. The caller holds st->lock or is alone with the handle.
 */
int db_run(struct storage *st, const char *sql, db_row_fn row, void *ud, const char *args, ...);
/* The same with a statement prepared once (it is reset afterwards). */
int db_step(sqlite3_stmt *s, db_row_fn row, void *ud);
/* Rows changed by the last INSERT, UPDATE or DELETE. */
int db_changes(struct storage *st);
/* sqlite3_exec of SQL (several statements allowed); the reason to ERR. */
int db_exec(struct storage *st, const char *sql, char *err, size_t errlen);
int db_begin(struct storage *st);
int db_commit(struct storage *st);
void db_rollback(struct storage *st);
/* A transaction whose commit is on disk when it returns (synchronous=FULL
 * for it alone): for changes that must precede removing a file.
 * db_end_synced commits when RC is STORAGE_OK, else rolls back, and
 * returns the outcome. */
int db_begin_synced(struct storage *st);
int db_end_synced(struct storage *st, int rc);
/* Binds V as text, NULL (absent or empty), or by attr KIND (an INT kind
 * as an integer when it reads as one, else NULL). */
void db_bind_attr(sqlite3_stmt *s, int i, enum attr_kind kind, const char *v);
/* Column I as text (NULL when NULL). */
const char *db_text(sqlite3_stmt *s, int i);
/* The texts V (N of them) as a JSON array, for json_each() in a
 * statement; malloc'ed, NULL when out of memory. Any text is escaped. */
char *db_json_array(const char *const *v, size_t n);
/* The table of attributes of LEVEL. */
const char *db_level_table(enum attr_level level);

/* ---- instance.c ---- */

int instance_prepare(struct storage *st, char *err, size_t errlen);
void instance_finalize(struct storage *st);
int instance_repair(struct storage *st);

/* ---- job.c ---- */

/* At open for serving: quarantines the jobs that were inside a stage when
 * the previous process died (see storage.h) and queues again the other
 * jobs it left running; then removes the crash record. */
int job_recover(struct storage *st, char *err, size_t errlen);

/* ---- plan.c ---- */

int plan_prepare(struct storage *st);

/* ---- retention.c ---- */

/* Finishes every deletion a stop or a failure interrupted; at open, or
 * with no lock held. */
int retention_finish(struct storage *st, char *err, size_t errlen);

/* For tests: FN (may be NULL) is called each time retention removes a
 * study's files, after the first file went, with no lock held. */
void storage_set_retain_hook(struct storage *st, void (*fn)(void *ud, const char *study_uid),
                             void *ud);

#endif
