/*
 * storage — where a received instance lives: a file under
 * DATA_DIR/instances/<study>/<series>/ and a row in DATA_DIR/ainode.db.
 *
 * The one promise of this module: when storage_commit() returns
 * STORAGE_OK, the instance survives a crash of the process and a loss of
 * power. Its file is on stable storage (file fsync'ed, directory entry
 * fsync'ed) and its row is committed in SQLite's WAL. Only then may the
 * receiver answer C-STORE success.
 *
 * The file is the source of truth; the row is an index of it. Rows are
 * committed without waiting for the disk (WAL, synchronous=NORMAL): a
 * killed process loses none, and a power cut can lose only the last ones,
 * which the start-up repair rebuilds from their durable files. Whatever
 * would make a file unreferenced (a resend replacing it) is committed with
 * a full sync first, so a row never points to a removed file.
 *
 * Start-up repair, after an unclean stop: DATA_DIR/tmp is emptied (bytes
 * never acknowledged) and every file under instances/ without a row is
 * either indexed again, when it reads as a complete instance, or removed.
 *
 * A repeated SOP Instance UID in the same series, study and patient is
 * handled "last write wins": the new file is stored under a fresh name,
 * the row is switched to it, and only then is the old file removed. A
 * study that receives an instance after it was complete goes back to
 * "receiving" and completes again after the stable time.
 *
 * What is stored is never moved nor renamed by a later instance: one that
 * contradicts it is refused with STORAGE_EINTEGRITY and changes nothing
 * (see storage_commit).
 *
 * All functions are safe to call from several threads on one handle.
 *
 * The header is sectioned by what each part of the module owns: errors,
 * opening (storage/db.c), instances (instance.c), completion (plan.c), the
 * job queue (job.c), holds (hold.c), the outbox (outbox.c), result files (result.c),
 * listings (listing.c), retention (retention.c), counts by state
 * (counts.c) and the audit trail (audit.c).
 */
#ifndef AINODE_STORAGE_H
#define AINODE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/attr.h"
#include "common/plan.h"

struct storage;

/* ---- errors -------------------------------------------------------------- */

enum storage_error {
    STORAGE_OK = 0,
    STORAGE_EINVAL = -1,    /* the instance cannot be used: missing or invalid UIDs */
    STORAGE_EIO = -2,       /* disk, file system or database failure */
    STORAGE_ENOMEM = -3,
    STORAGE_ENOTFOUND = -4,
    STORAGE_ECONFLICT = -5, /* the study changed meanwhile: plan it again later */
    STORAGE_EVERSION = -6,  /* the store's schema version is not one this code can use */
    STORAGE_EINTEGRITY = -7,/* the instance contradicts what is stored: refused, nothing changed */
    STORAGE_EACCESS = -8,   /* DATA_DIR is writable by every user: refused */
};

/* The class of ERR, for any code above. */
const char *storage_strerror(int err);

/* ---- opening (db.c) ------------------------------------------------------ */

/*
 * Reads an instance file for the start-up repair: VALUES[ATTR_COUNT] in
 * attr.def's order (NULL where absent), *TRANSFER_SYNTAX and *CALLING_AE,
 * each malloc'ed for the caller of the callback to free. Returns 0, or
 * non-zero when PATH is not a complete, readable instance.
 */
typedef int (*storage_read_fn)(void *ud, const char *path, char **values,
                               char **transfer_syntax, char **calling_ae);

/* Files and directories storage creates are private to the node's user
 * and group: files 0640 (instances, results, temporary files, the
 * database and its -wal and -shm), directories 0750, whatever the umask.
 * Opening for serving creates DATA_DIR 0750; an existing one writable by
 * every user is refused (STORAGE_EACCESS: anyone could replace what it
 * stores), one readable by every user or writable by its group is used
 * with a warning in the log. */

/* Opens (creating if needed) the store under DATA_DIR, brings its schema
 * to this code's version (numbered migrations, one transaction; a store of
 * a newer version is refused with STORAGE_EVERSION) and, after an unclean
 * stop, repairs it (see above). READ may be NULL: unindexed files are then
 * removed rather than indexed again. */
int storage_open(const char *data_dir, storage_read_fn read, void *read_ud,
                 struct storage **out, char *err, size_t errlen);

/* The schema version this code writes (PRAGMA user_version). */
int storage_schema_version(void);

/* What the repair at open did: files indexed again and files removed. */
void storage_repair_counts(const struct storage *st, int *reindexed, int *removed);

/* Whether DATA_DIR holds a store: 1 yes, 0 no (a node never ran there:
 * nothing recorded, not an error), -1 it cannot be told (no permission to
 * look: ERR says so, and that the commands run as the node's user). */
int storage_exists(const char *data_dir, char *err, size_t errlen);

/* Opens an existing store read-only (for status); nothing is repaired or
 * migrated: a store of another schema version is refused (STORAGE_EVERSION). */
int storage_open_readonly(const char *data_dir, struct storage **out, char *err, size_t errlen);

/* Opens an existing store for an administrative change (retry) while the
 * node may be running; nothing is repaired or migrated, every commit is
 * synced. */
int storage_open_admin(const char *data_dir, struct storage **out, char *err, size_t errlen);

/* Flushes the index, marks a clean stop (the next open skips the repair
 * scan) and closes. */
void storage_close(struct storage *st);

/* ---- instances (instance.c) ---------------------------------------------- */

/* One received instance, as handed to storage_commit(): ATTR holds the
 * values of attr.def's attributes (NULL when absent; multi-valued ones
 * joined with '\'). */
struct storage_instance {
    const char *attr[ATTR_COUNT];
    const char *transfer_syntax;  /* UID the dataset was received in */
    const char *calling_ae;
    const char *called_ae;
    const char *source_addr;
    int64_t received_ms;          /* wall clock, ms since the epoch */
};

/* What storage_commit does with an instance it refuses as contradicting
 * the store (STORAGE_EINTEGRITY). */
enum storage_conflict_policy {
    STORAGE_CONFLICT_REFUSE = 0,     /* the default: its file is removed */
    STORAGE_CONFLICT_QUARANTINE,     /* its file is kept, unindexed, under DATA_DIR/quarantine */
};

/* Sets the policy for instances refused as contradicting the store. */
void storage_set_conflict_policy(struct storage *st, enum storage_conflict_policy policy);

/* Writes a fresh temporary file name under DATA_DIR/tmp into BUF and
 * creates it empty and private (0640), for the caller to write (a writer
 * that truncates keeps the mode). Left unused, open empties it. */
int storage_temp_path(struct storage *st, char *buf, size_t len);

/*
 * Makes TEMP_PATH durable and indexed as INST (see the promise above).
 * TEMP_PATH is consumed: on success it has moved into place, on failure it
 * is removed (or, refused with the quarantine policy, kept aside). ERR
 * receives a short reason on failure, naming attributes, never values.
 *
 * STORAGE_EINTEGRITY, and nothing stored changes, when INST contradicts
 * the store: its SOP Instance UID is stored in another series or for
 * another patient (Patient ID and issuer), its Series Instance UID in
 * another study, or its Patient ID with another PatientName,
 * PatientBirthDate or PatientSex (compared where both are given; an
 * instance without a Patient ID has no identity to contradict). Any of
 * these would otherwise move or rename what other instances already rely
 * on. A new instance of a stored study that names another patient is
 * stored in that study, which stays with its patient.
 */
int storage_commit(struct storage *st, const char *temp_path,
                   const struct storage_instance *inst, char *err, size_t errlen);

/* Looks up the stored path of SOP_INSTANCE_UID into BUF. */
int storage_instance_path(struct storage *st, const char *sop_instance_uid,
                          char *buf, size_t len);

/* Calls FN with the stored path of each instance of SERIES_UID. */
typedef int (*storage_path_fn)(void *ud, const char *sop_instance_uid, const char *path);
int storage_foreach_instance(struct storage *st, const char *series_uid, storage_path_fn fn,
                             void *ud);

/* Calls FN with the stored path of each instance of every series job
 * JOB_ID covers (one, or a study's for a model that takes the study),
 * series by series in the job's order. */
int storage_foreach_job_instance(struct storage *st, int64_t job_id, storage_path_fn fn,
                                 void *ud);

/* 1 when S is a valid DICOM UID (PS3.5 9.1: 1..64 chars of digits and
 * dots, no empty component, no leading zero in a multi-digit component). */
int storage_uid_valid(const char *s);

/* ---- completion (plan.c) ------------------------------------------------- */

/*
 * Storage does not decide when a study is complete nor what runs on it.
 * The caller lists the studies still receiving, reads a due one's series
 * rows, computes a plan (common/plan.h) outside any store lock and commits
 * it with storage_commit_plan(), which applies it only if nothing arrived
 * since the rows were read.
 */

/* A study still receiving. */
struct storage_receiving {
    int64_t id;                   /* its row id: how the log names it (status shows it) */
    const char *study_uid;
    int held;                     /* held back from completion (storage_study_hold) */
    int64_t first_received_ms;
    int64_t last_received_ms;     /* what storage_commit_plan compares */
};

typedef int (*storage_receiving_fn)(void *ud, const struct storage_receiving *r);

/* Calls FN with each study still receiving, oldest first; stops early if
 * FN returns non-zero. */
int storage_foreach_receiving(struct storage *st, storage_receiving_fn fn, void *ud);

/* The series of STUDY_UID as the planner sees them (common/attr.h): each
 * attribute from the series' row, its study's and patient's, and its first
 * instance's (lowest InstanceNumber); how its first instance arrived, and
 * how many instances it has. *ROWS (N of them, none for an unknown study)
 * is the caller's, freed with storage_series_free(). */
int storage_study_series(struct storage *st, const char *study_uid, struct attr_series **rows,
                         size_t *n);
void storage_series_free(struct attr_series *rows, size_t n);

/*
 * In one transaction: if STUDY_UID is still receiving and its last
 * instance arrived at LAST_RECEIVED_MS, it becomes complete as of NOW_MS
 * (or "discarded" with DISCARD: kept for retention, nothing runs on it and
 * PLAN, which may then be NULL, is ignored), PLAN's jobs are queued with
 * their destinations and priorities, the instances of its forwarded series
 * go to the outbox, and its series are recorded as matched or unmatched.
 * Otherwise STORAGE_ECONFLICT and nothing changes. *N_QUEUED (may be NULL)
 * gets the jobs and forwarded instances queued.
 */
int storage_commit_plan(struct storage *st, const char *study_uid, int64_t last_received_ms,
                        const struct plan *plan, int discard, int64_t now_ms, int *n_queued);

/*
 * Plans a stored study again (`ainode reprocess`): in one transaction, the
 * jobs of PLAN are queued as new ones, as storage_commit_plan queues them
 * (not-applicable ones recorded so), except a job whose model already has
 * one queued or running on the same first series (*N_SKIPPED, may be
 * NULL, counts those); PLAN's forwards and unmatched series are ignored
 * (the instances were forwarded when the study completed; `retry` sends a
 * failed one again). *N_QUEUED (may be NULL) gets the jobs queued that
 * will run. A node serving the store claims them like any other job.
 * STORAGE_ENOTFOUND when the study is not stored; STORAGE_ECONFLICT when
 * it is still receiving (it is planned when it completes) or being
 * deleted.
 */
int storage_replan(struct storage *st, const char *study_uid, const struct plan *plan,
                   int64_t now_ms, int *n_queued, int *n_skipped);

/* ---- holds (hold.c) ------------------------------------------------------ */

/*
 * A study may be held back from completion: instances of it were refused
 * (the disk below node.min_free_disk_mb), so what is stored is probably
 * not all of it. The hold is a column of the study, so it outlives a
 * restart; the caller decides when to hold and release (service/node.c),
 * storage_foreach_receiving reports it and status shows it with REASON.
 * A study processed while held (completion.max_wait_seconds) keeps the
 * mark: status shows it as incomplete.
 */
#define STORAGE_HOLD_REFUSED "instances refused: disk below the free-space floor"

/* Holds STUDY_UID with REASON. *ID (may be NULL) gets its row id, *NEWLY
 * (may be NULL) 1 when it was not held before. STORAGE_ENOTFOUND when the
 * study is not stored. */
int storage_study_hold(struct storage *st, const char *study_uid, const char *reason,
                       int64_t *id, int *newly);

/* Ends the hold of STUDY_UID, if any. *ID (may be NULL) gets its row id,
 * *WAS_HELD (may be NULL) 1 when it was held. */
int storage_study_release(struct storage *st, const char *study_uid, int64_t *id,
                          int *was_held);

/* ---- jobs (job.c) -------------------------------------------------------- */

/*
 * Jobs: queued -> running -> done | failed | quarantined. A worker claims
 * a job with a lease (owner + expiry), renews it while it works and
 * finishes it as its owner. A lease that expired (its worker died or hung)
 * lets the job be claimed again; jobs left running by a previous process
 * are queued again by storage_open(). A job claimed more than
 * STORAGE_JOB_MAX_ATTEMPTS times fails instead of running again (it keeps
 * killing its worker).
 *
 * A job that may crash the node does so inside a risky stage (decoding its
 * series, running the model, writing its results): its worker records the
 * stage (storage_job_stage) before entering it and clears it after. A job
 * storage_open() finds inside a stage was running when its node died:
 *   - it is quarantined at once when the crash record names it: the node
 *     crashed (a fatal signal) while it was inside a stage;
 *   - otherwise (killed from outside, out of memory, power cut: the cause
 *     is unknown) it runs again, and is quarantined the
 *     STORAGE_JOB_MAX_STOPS-th time this happens.
 * A quarantined job keeps its reason ("the node crashed (SIGSEGV) during
 * inference") and never runs again by itself: storage_job_retry queues it
 * again. A clean stop gives a running job back (storage_job_release),
 * which clears its stage: it is never quarantined.
 */
/* A job whose series is outside its model's input.accept is recorded in
 * this state by storage_commit_plan, its reason as its error, and ends
 * there: never claimed, retried or requeued. */
#define STORAGE_JOB_NOT_APPLICABLE "not_applicable"

#define STORAGE_JOB_MAX_ATTEMPTS 3
#define STORAGE_JOB_MAX_STOPS 2

struct storage_job {
    int64_t id;
    char study_uid[65];
    char series_uid[65];
    char model[128];
    char **destinations;          /* where its results go, in the rule's order */
    size_t n_destinations;
    int attempts;                 /* including this one */
    int64_t created_ms;           /* when it was queued */
};

/* Releases what a claimed JOB holds (its destinations) and empties it. */
void storage_job_clear(struct storage_job *job);

/* Claims the oldest runnable job of MODEL for OWNER until NOW_MS + LEASE_MS
 * into *JOB (overwritten: release it with storage_job_clear()).
 * STORAGE_ENOTFOUND when there is none. */
int storage_job_claim(struct storage *st, const char *model, const char *owner, int64_t now_ms,
                      int64_t lease_ms, struct storage_job *job);

/* The same for the models named in MODELS, a JSON array of model names
 * (an encoder and its heads), and only on the very series of job LIKE_JOB
 * when it is not negative: a worker claims the first job of a group, then
 * the group's other jobs on those series, so that the encoder runs once
 * for them all. */
int storage_job_claim_among(struct storage *st, const char *models, int64_t like_job,
                            const char *owner, int64_t now_ms, int64_t lease_ms,
                            struct storage_job *job);

/* Extends the lease; STORAGE_ENOTFOUND when OWNER no longer holds it. */
int storage_job_renew(struct storage *st, int64_t id, const char *owner, int64_t until_ms);

/* Gives a job OWNER holds back to the queue, not counting this attempt
 * (the node is stopping; the job did not fail). */
int storage_job_release(struct storage *st, int64_t id, const char *owner);

/* Records that job ID, held by OWNER, enters STAGE ("decode",
 * "inference", "results") at NOW_MS, or left it (STAGE NULL). Committed
 * when it returns: a kill of the process right after finds it.
 * STORAGE_ENOTFOUND when OWNER no longer holds it. */
int storage_job_stage(struct storage *st, int64_t id, const char *owner, const char *stage,
                      int64_t now_ms);

/* Records the identity of what runs job ID, held by OWNER: the SHA-256
 * (hex; NULL: unknown) of its model file and of its manifest, so that its
 * result can be traced to the exact weights. STORAGE_ENOTFOUND when OWNER
 * no longer holds it. */
int storage_job_identity(struct storage *st, int64_t id, const char *owner,
                         const char *model_sha256, const char *manifest_sha256);

/*
 * The crash record: DATA_DIR/job-crash, written by the node as it dies of
 * a fatal signal, one line "JOB_ID SIGNAL" per job then inside a stage,
 * read and removed by the next storage_open(). The path is fixed at open
 * (the string lives as long as ST), so a signal handler may use it.
 */
const char *storage_crash_record_path(const struct storage *st);

/* Queues a quarantined job again, as new (attempts and stops reset).
 * STORAGE_ENOTFOUND when job ID is not quarantined. */
int storage_job_retry(struct storage *st, int64_t id);

/* A file a finished job leaves to send. */
struct storage_send_item {
    const char *destination;
    const char *kind;             /* "seg", "sr", ... (shown in status) */
    const char *path;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax;
};

/* Ends a job OWNER holds: done (ERROR NULL, RESULT the result file, ITEMS
 * put in the outbox in the same transaction) or failed (ERROR the reason).
 * STORAGE_ENOTFOUND when OWNER lost it. */
int storage_job_finish(struct storage *st, int64_t id, const char *owner, int64_t now_ms,
                       const char *error, const char *result, const char *summary,
                       const struct storage_send_item *items, size_t n_items);

/* ---- the outbox (outbox.c) ----------------------------------------------- */

/*
 * The outbox: files to send, each pending until a destination accepted it
 * (sent) or it ran out of attempts (failed: dead-lettered until
 * storage_outbox_retry). Sending the same item again sends the same file,
 * so a destination may see an instance twice, never a different one.
 */
struct storage_outbox_item {
    int64_t id;
    const char *destination;
    const char *study_uid;
    const char *kind;
    const char *path;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax;
    const char *state;            /* pending | sent | failed */
    const char *error;            /* the last failure, or NULL */
    int attempts;
    int64_t next_attempt_ms;
    int64_t sent_ms;              /* 0 unless sent */
};

typedef int (*storage_outbox_fn)(void *ud, const struct storage_outbox_item *it);

/* Calls FN for each pending item due by NOW_MS, grouped by destination and
 * study (so that one study's files can share an association). */
int storage_outbox_due(struct storage *st, int64_t now_ms, storage_outbox_fn fn, void *ud);

/* Calls FN for every item, oldest first. */
int storage_foreach_outbox(struct storage *st, storage_outbox_fn fn, void *ud);

/* Records an attempt: sent, or failed with ERROR and then pending again
 * from NEXT_ATTEMPT_MS, or dead-lettered when NEXT_ATTEMPT_MS < 0. */
int storage_outbox_record(struct storage *st, int64_t id, int64_t now_ms, int sent,
                          const char *error, int64_t next_attempt_ms);

/* Puts dead-lettered items back in the queue, due now, with their attempts
 * reset: item ID, or all failed ones when ID < 0. *N gets how many. */
int storage_outbox_retry(struct storage *st, int64_t id, int64_t now_ms, int *n);

/* ---- result files (result.c) --------------------------------------------- */

/* The files a job leaves under DATA_DIR/results. */
enum storage_result_kind {
    STORAGE_RESULT_SEG,           /* <ID>.seg.dcm: the DICOM SEG */
    STORAGE_RESULT_SR,            /* <ID>.sr.dcm: the DICOM SR */
    STORAGE_RESULT_LABELS,        /* <ID>.labels.gz: one byte per voxel, gzip */
    STORAGE_RESULT_JSON,          /* <ID>.json: the result document */
};

/* The one place result files are named: writes the file name (no folder)
 * of KIND for job JOB_ID into BUF (LEN bytes). STORAGE_EINVAL when it does
 * not fit or KIND is unknown. */
int storage_result_name(int64_t job_id, enum storage_result_kind kind, char *buf, size_t len);

/* Writes a job's results durably: DATA_DIR/results/<ID>.labels.gz (LABELS,
 * NBYTES, already gzip-compressed by the caller) and then
 * DATA_DIR/results/<ID>.json (JSON), whose path goes to PATH; LABELS NULL
 * writes no label file (a classification has none). Each file is
 * written to a temporary name, flushed and renamed. */
int storage_write_result(struct storage *st, int64_t id, const char *json, const void *labels,
                         size_t nbytes, char *path, size_t pathlen, char *err, size_t errlen);

/* Makes the file TMP (written by the caller anywhere under DATA_DIR)
 * durable as DATA_DIR/results/NAME, whose path goes to PATH. */
int storage_adopt_result(struct storage *st, const char *tmp, const char *name, char *path,
                         size_t pathlen, char *err, size_t errlen);

/* A fresh temporary path under DATA_DIR/results for a result being written. */
int storage_result_temp(struct storage *st, const char *name, char *path, size_t pathlen);

/* ---- listings (listing.c) ------------------------------------------------ */

struct storage_study {
    int64_t id;                   /* its row id, as the log names it */
    const char *study_uid;
    const char *state;            /* receiving | complete | discarded | deleting */
    int64_t instances;
    int64_t series;
    int64_t last_received_ms;
    int64_t completed_ms;         /* 0 when not complete */
    const char *held;             /* why it is held back (see holds), or NULL */
};

typedef int (*storage_study_fn)(void *ud, const struct storage_study *s);

/* Calls FN for each study, oldest first; stops early if FN returns non-zero. */
int storage_foreach_study(struct storage *st, storage_study_fn fn, void *ud);

struct storage_job_row {
    int64_t id;
    const char *study_uid;
    const char *series_uid;
    const char *series;           /* JSON array of every series it covers (the first is
                                   * SERIES_UID; more for a model that takes the study) */
    const char *model;
    const char *state;
    const char *stage;            /* the stage a running job is in, or NULL */
    const char *error;            /* the reason when failed or quarantined, else NULL */
    const char *result;           /* result file, NULL unless done */
    const char *summary;          /* JSON text, NULL unless done */
    const char *model_sha256;     /* identity it ran with (storage_job_identity), or NULL */
    const char *manifest_sha256;
    int attempts;
    int64_t created_ms, started_ms, finished_ms; /* 0 when not yet */
};

typedef int (*storage_job_fn)(void *ud, const struct storage_job_row *j);

/* Calls FN for each job, oldest first. */
int storage_foreach_job(struct storage *st, storage_job_fn fn, void *ud);

/* Calls FN with each series of a completed study that no rule matched. */
typedef int (*storage_unmatched_fn)(void *ud, const char *study_uid, const char *series_uid,
                                    const char *modality);
int storage_foreach_unmatched(struct storage *st, storage_unmatched_fn fn, void *ud);

/* ---- paged listings (listing.c) ------------------------------------------ */

/*
 * What `ainode status`, `ainode jobs` and the HTTP API list: a page of
 * studies or of jobs, filtered, newest first unless asked otherwise.
 *
 * Studies are ordered by when they were first received, jobs by when they
 * were created (ties by row id). A page ends with a cursor, an opaque
 * string naming the last row's place in that order; the next page is the
 * rows after it, with the same filter. Rows stored meanwhile come before
 * the first page (they are newer), never inside a later one: paging on
 * reads every row that was there exactly once. Each page is read through
 * an index (migration 9), whatever its depth: its cost is the page's rows,
 * not the rows before it.
 */
#define STORAGE_LIST_DEFAULT_LIMIT 100 /* a page's rows when the filter says 0 */
#define STORAGE_LIST_MAX_LIMIT 10000   /* the most a filter may ask for */
#define STORAGE_LIST_ALL (-1)          /* as a limit: no pages, every row */
#define STORAGE_CURSOR_LEN 48          /* a cursor's bytes, with its NUL */

/* Which rows, and how many. Every member may be left zero: all rows, a
 * page of STORAGE_LIST_DEFAULT_LIMIT, newest first. */
struct storage_filter {
    const char *state;            /* studies: receiving | complete | discarded | deleting;
                                   * jobs: queued | running | done | failed | quarantined |
                                   * not_applicable; NULL: any */
    int64_t since_ms;             /* studies first received, jobs created at or after it
                                   * (ms since the epoch); 0: any time */
    const char *study_uid;        /* only this study, or only its jobs; NULL: any */
    const char *model;            /* jobs of this model; studies with a job of it; NULL: any */
    int limit;                    /* rows per page, 1..STORAGE_LIST_MAX_LIMIT;
                                   * 0: STORAGE_LIST_DEFAULT_LIMIT; STORAGE_LIST_ALL: every row */
    const char *cursor;           /* the NEXT_CURSOR of the previous page; NULL or "": the first */
    int oldest_first;             /* the other order (a cursor is valid in its own order only) */
};

/* Calls FN with each study of the page F selects; stops early if FN
 * returns non-zero. NEXT_CURSOR (STORAGE_CURSOR_LEN bytes) gets the cursor
 * of the next page, or "" when this page is the last. STORAGE_EINVAL, with
 * the reason in ERR, for a filter that cannot be used (an unknown state, a
 * limit out of range, a cursor that is not one of studies in this order). */
int storage_list_studies(struct storage *st, const struct storage_filter *f, storage_study_fn fn,
                         void *ud, char *next_cursor, char *err, size_t errlen);

/* The same for jobs. */
int storage_list_jobs(struct storage *st, const struct storage_filter *f, storage_job_fn fn,
                      void *ud, char *next_cursor, char *err, size_t errlen);

/* What belongs to the studies of a page (STUDY_UIDS, N of them): their
 * jobs, by id, and their outbox items, by id (newest first unless
 * OLDEST_FIRST), and their series no rule matched. */
int storage_foreach_job_of(struct storage *st, const char *const *study_uids, size_t n,
                           int oldest_first, storage_job_fn fn, void *ud);
int storage_foreach_outbox_of(struct storage *st, const char *const *study_uids, size_t n,
                              int oldest_first, storage_outbox_fn fn, void *ud);
int storage_foreach_unmatched_of(struct storage *st, const char *const *study_uids, size_t n,
                                 storage_unmatched_fn fn, void *ud);

/* ---- retention (retention.c) --------------------------------------------- */

/*
 * A study may be deleted once it is finished: complete, with no
 * job queued or running and no outbox item pending or failed (a
 * dead-lettered send still needs the administrator, so it keeps its study).
 * Deleting one removes its instance files, its jobs' result files and all
 * its rows (instances, series, study, jobs, outbox, and its patient when no
 * other study has it).
 *
 * It never holds the store's lock while files go, so receiving carries on:
 * in one synced commit under the lock the study's rows are deleted and the
 * files they named recorded as to be removed; the files then go with no
 * lock held (each removal flushed); then the record goes. An instance
 * arriving meanwhile for that study finds no rows and starts it afresh,
 * in a file of its own. After a stop in the middle, storage_open() finishes
 * the removal (a file some instance row names again is kept). A study left
 * "deleting" by an earlier release is finished the same way.
 *
 * storage_retain deletes, oldest last_received first, (1) every finished
 * study completed more than RETENTION_DAYS before NOW_MS (0: none), then
 * (2) while the file system holding DATA_DIR is fuller than
 * HIGH_WATER_PERCENT (0: never), the next oldest finished study, until it
 * is not or none is left. *STUDIES_DELETED (may be NULL) gets how many
 * went. Instances may keep arriving meanwhile: one for a study being
 * deleted starts that study again.
 */
int storage_retain(struct storage *st, int64_t now_ms, int retention_days,
                   int high_water_percent, int *studies_deleted, char *err, size_t errlen);

/* Puts in *PERCENT how full the file system holding DATA_DIR is:
 * 100 * (blocks - blocks available to unprivileged users) / blocks.
 * Returns 0, or non-zero when it cannot tell. */
typedef int (*storage_usage_fn)(void *ud, const char *data_dir, double *percent);

/* storage_retain with the disk usage measured by USAGE (for tests; NULL
 * measures with statvfs). */
int storage_retain_with_usage(struct storage *st, int64_t now_ms, int retention_days,
                              int high_water_percent, storage_usage_fn usage, void *usage_ud,
                              int *studies_deleted, char *err, size_t errlen);

/* ---- counts (counts.c) --------------------------------------------------- */

/* How many rows of TABLE are in STATE (and, for jobs, of one model; for
 * the outbox, for one destination), and when the oldest of them arrived. */
struct storage_count {
    const char *table;            /* studies | jobs | outbox */
    const char *state;            /* studies: receiving | held (receiving, held back) |
                                   * complete | discarded | deleting; jobs and outbox: theirs */
    const char *key;              /* jobs: the model; outbox: the destination; studies: NULL */
    int64_t n;
    int64_t oldest_ms;            /* first received (studies), created (jobs, outbox items) */
};

typedef int (*storage_count_fn)(void *ud, const struct storage_count *c);

/* Calls FN with each group of studies, jobs and outbox items, read in one
 * read transaction (a handle of storage_open_readonly never holds up the
 * node's writes); FN returning non-zero skips the rest of that table. */
int storage_counts(struct storage *st, storage_count_fn fn, void *ud);

/* ---- the audit trail (audit.c) ------------------------------------------- */

/*
 * What the node did on the network, kept apart from the studies: one row
 * per association request (accepted or rejected) and one per attempt to
 * send a result or a forwarded instance. Rows hold AE titles, addresses and
 * outcomes; a result row also holds the SOP Instance UID it sent, which the
 * store holds anyway (never logged at the default level). Deleting a study
 * leaves its audit rows; they go by storage_audit_retain, on their own
 * schedule.
 */

/* One association request and what became of it. */
struct storage_audit_association {
    int64_t id;                   /* set when listed; ignored when recorded */
    int64_t started_ms;           /* the request received (wall clock) */
    int64_t ended_ms;             /* the connection closed */
    const char *calling_ae;
    const char *called_ae;
    const char *address;          /* the peer's numeric address */
    const char *tls_peer;         /* the peer certificate's subject; NULL without TLS */
    int stored;                   /* C-STOREs answered with success or a warning */
    int refused;                  /* C-STOREs answered with a failure */
    const char *outcome;          /* released, aborted by peer, aborted: idle,
                                   * rejected: <reason>, network error, ... */
};

/* One attempt to send a result or a forwarded instance. */
struct storage_audit_result {
    int64_t id;                   /* set when listed; ignored when recorded */
    int64_t time_ms;
    const char *kind;             /* seg | sr | forward (the outbox item's kind) */
    const char *destination;      /* its name in the configuration */
    const char *peer;             /* AE@host:port; NULL when the destination is unknown */
    const char *sop_instance_uid; /* of what was sent */
    const char *outcome;          /* sent | transient (tried again) | dead-lettered (transient,
                                   * out of attempts) | permanent (refused for good) */
    const char *error;            /* why it was not sent; NULL when sent */
    int attempts;                 /* including this one */
};

/* Record one row each (committed without waiting for the disk, like the
 * index: a power cut may lose the last ones). TLS_PEER, PEER,
 * SOP_INSTANCE_UID and ERROR are stored as NULL when NULL or empty; other
 * NULL texts are stored empty. */
int storage_audit_association(struct storage *st, const struct storage_audit_association *a);
int storage_audit_result(struct storage *st, const struct storage_audit_result *r);

typedef int (*storage_audit_association_fn)(void *ud, const struct storage_audit_association *a);
typedef int (*storage_audit_result_fn)(void *ud, const struct storage_audit_result *r);

/* Calls FN with each association that started at or after SINCE_MS (0:
 * all), oldest first; stops early if FN returns non-zero. */
int storage_audit_foreach_association(struct storage *st, int64_t since_ms,
                                      storage_audit_association_fn fn, void *ud);

/* Calls FN with each send attempt at or after SINCE_MS (0: all), oldest
 * first; stops early if FN returns non-zero. */
int storage_audit_foreach_result(struct storage *st, int64_t since_ms,
                                 storage_audit_result_fn fn, void *ud);

/* Deletes the audit rows from before OLDER_THAN_MS (associations by the
 * time they started); *DELETED (may be NULL) gets how many went. */
int storage_audit_retain(struct storage *st, int64_t older_than_ms, int *deleted);

#endif
