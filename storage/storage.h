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
 * A repeated SOP Instance UID is handled "last write wins": the new file
 * is stored under a fresh name, the row is switched to it, and only then
 * is the old file removed. A study that receives an instance after it was
 * complete goes back to "receiving" and completes again after the stable
 * time.
 *
 * All functions are safe to call from several threads on one handle.
 */
#ifndef AINODE_STORAGE_H
#define AINODE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

struct storage;

enum storage_error {
    STORAGE_OK = 0,
    STORAGE_EINVAL = -1,  /* the instance cannot be used: missing or invalid UIDs */
    STORAGE_EIO = -2,     /* disk, file system or database failure */
    STORAGE_ENOMEM = -3,
    STORAGE_ENOTFOUND = -4,
};

const char *storage_strerror(int err);

/* The DICOM attributes indexed for every instance, by keyword. The
 * receiver reads these from the stored file and passes their values in the
 * same order (NULL when absent; multi-valued ones joined with '\'). */
enum storage_attr {
    SA_SOP_CLASS_UID,
    SA_SOP_INSTANCE_UID,
    SA_STUDY_INSTANCE_UID,
    SA_SERIES_INSTANCE_UID,
    SA_PATIENT_ID,
    SA_ISSUER_OF_PATIENT_ID,
    SA_PATIENT_NAME,
    SA_PATIENT_BIRTH_DATE,
    SA_PATIENT_SEX,
    SA_STUDY_DATE,
    SA_STUDY_TIME,
    SA_ACCESSION_NUMBER,
    SA_STUDY_ID,
    SA_STUDY_DESCRIPTION,
    SA_MODALITY,
    SA_BODY_PART_EXAMINED,
    SA_SERIES_DESCRIPTION,
    SA_PROTOCOL_NAME,
    SA_MANUFACTURER,
    SA_SERIES_NUMBER,
    SA_INSTANCE_NUMBER,
    SA_IMAGE_TYPE,
    SA_SLICE_THICKNESS,
    SA_ROWS,
    SA_COLUMNS,
    SA_NUMBER_OF_FRAMES,
    SA_CONTRAST_BOLUS_AGENT,
    SA_COUNT
};

extern const char *const storage_attr_keywords[SA_COUNT];

/* One received instance, as handed to storage_commit(). */
struct storage_instance {
    const char *attr[SA_COUNT];
    const char *transfer_syntax;  /* UID the dataset was received in */
    const char *calling_ae;
    const char *called_ae;
    const char *source_addr;
    int64_t received_ms;          /* wall clock, ms since the epoch */
};

/*
 * Reads an instance file for the start-up repair: VALUES[SA_COUNT] (NULL
 * where absent), *TRANSFER_SYNTAX and *CALLING_AE are malloc'ed for the
 * caller of the callback to free. Returns 0, or non-zero when PATH is not a
 * complete, readable instance.
 */
typedef int (*storage_read_fn)(void *ud, const char *path, char **values,
                               char **transfer_syntax, char **calling_ae);

/* Opens (creating if needed) the store under DATA_DIR and, after an
 * unclean stop, repairs it (see above). READ may be NULL: unindexed files
 * are then removed rather than indexed again. */
int storage_open(const char *data_dir, storage_read_fn read, void *read_ud,
                 struct storage **out, char *err, size_t errlen);

/* What the repair at open did: files indexed again and files removed. */
void storage_repair_counts(const struct storage *st, int *reindexed, int *removed);

/* Opens an existing store read-only (for status); nothing is repaired. */
int storage_open_readonly(const char *data_dir, struct storage **out, char *err, size_t errlen);

/* Opens an existing store for an administrative change (retry) while the
 * node may be running; nothing is repaired, every commit is synced. */
int storage_open_admin(const char *data_dir, struct storage **out, char *err, size_t errlen);

/* Flushes the index, marks a clean stop (the next open skips the repair
 * scan) and closes. */
void storage_close(struct storage *st);

/* Writes a fresh temporary file name under DATA_DIR/tmp into BUF. */
int storage_temp_path(struct storage *st, char *buf, size_t len);

/*
 * Makes TEMP_PATH durable and indexed as INST (see the promise above).
 * TEMP_PATH is consumed: on success it has moved into place, on failure it
 * is removed. ERR receives a short reason on failure.
 */
int storage_commit(struct storage *st, const char *temp_path,
                   const struct storage_instance *inst, char *err, size_t errlen);

/* A series of a study that has just completed, as handed to the planner:
 * the series' own attributes, its study's and patient's, and those of its
 * first instance (lowest InstanceNumber). Each is NULL when not known. */
struct storage_series {
    const char *study_uid;
    const char *series_uid;
    const char *modality;
    const char *body_part_examined;
    const char *series_description;
    const char *protocol_name;
    const char *manufacturer;
    const char *series_number;
    /* the study and the patient */
    const char *study_description;
    const char *accession_number;
    const char *study_id;
    const char *study_date;
    const char *patient_id;
    const char *patient_sex;
    /* the first instance */
    const char *sop_class_uid;
    const char *image_type;       /* backslash-separated values */
    const char *slice_thickness;
    const char *rows;
    const char *columns;
    const char *number_of_frames;
    const char *contrast_bolus_agent;
    const char *calling_ae;       /* of the association that brought it */
    const char *called_ae;
    const char *source_address;
    int64_t instances;
};

typedef int (*storage_series_fn)(void *ud, const struct storage_series *s);

/* Calls FN with each series of STUDY_UID as the planner would see it. */
int storage_foreach_series(struct storage *st, const char *study_uid, storage_series_fn fn,
                           void *ud);

/* Collects what is to happen to one series: models to run
 * (storage_plan_add), each with the destinations its results go to
 * (comma-separated names, or NULL) and its priority (lower is claimed
 * first: 0 stat, 1 normal, 2 low); and destinations that receive the
 * series' instances unchanged (storage_plan_forward). */
struct storage_plan;
void storage_plan_add(struct storage_plan *plan, const char *model, const char *send_to,
                      int priority);
void storage_plan_forward(struct storage_plan *plan, const char *destination);

/* Decides what happens to S through storage_plan_add/_forward. */
typedef void (*storage_plan_fn)(void *ud, const struct storage_series *s,
                                struct storage_plan *plan);

/* Moves every study idle for STABLE_SECONDS (as of NOW_MS) from
 * "receiving" to "complete" and, in the same transaction, queues one job
 * per (series, model) that PLAN (may be NULL) asks for, and puts the
 * instances to forward in the outbox; a crash can never leave a complete
 * study without its jobs and forwards. *N_COMPLETED and *N_JOBS get how
 * many studies moved and jobs or forwarded instances were queued. */
int storage_complete_due(struct storage *st, int64_t now_ms, int stable_seconds,
                         storage_plan_fn plan, void *plan_ud, int *n_completed, int *n_jobs);

/* Calls FN with each series of a completed study that no rule matched. */
typedef int (*storage_unmatched_fn)(void *ud, const char *study_uid, const char *series_uid,
                                    const char *modality);
int storage_foreach_unmatched(struct storage *st, storage_unmatched_fn fn, void *ud);

/* Calls FN with each study still receiving: its UID and when its first
 * instance arrived. */
typedef int (*storage_receiving_fn)(void *ud, const char *study_uid, int64_t first_received_ms);
int storage_foreach_receiving(struct storage *st, storage_receiving_fn fn, void *ud);

/* Completes STUDY_UID now if it is still receiving, planning its jobs like
 * storage_complete_due; or, with DISCARD, marks it "discarded" (kept for
 * retention, nothing runs on it). *N_JOBS gets the jobs and forwards. */
int storage_complete_study(struct storage *st, const char *study_uid, int64_t now_ms,
                           int discard, storage_plan_fn plan, void *plan_ud, int *n_jobs);

/*
 * Jobs: queued -> running -> done | failed. A worker claims a job with a
 * lease (owner + expiry), renews it while it works and finishes it as its
 * owner. A lease that expired (its worker died or hung) lets the job be
 * claimed again; jobs left running by a previous process are queued again
 * by storage_open(). A job claimed more than STORAGE_JOB_MAX_ATTEMPTS times
 * fails instead of running again (it keeps killing its worker).
 */
#define STORAGE_JOB_MAX_ATTEMPTS 3

struct storage_job {
    int64_t id;
    char study_uid[65];
    char series_uid[65];
    char model[128];
    char send_to[1024];           /* comma-separated destination names, or "" */
    int attempts;                 /* including this one */
};

/* Claims the oldest runnable job of MODEL for OWNER until NOW_MS + LEASE_MS.
 * STORAGE_ENOTFOUND when there is none. */
int storage_job_claim(struct storage *st, const char *model, const char *owner, int64_t now_ms,
                      int64_t lease_ms, struct storage_job *job);

/* Extends the lease; STORAGE_ENOTFOUND when OWNER no longer holds it. */
int storage_job_renew(struct storage *st, int64_t id, const char *owner, int64_t until_ms);

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


/* Gives a job OWNER holds back to the queue, not counting this attempt
 * (the node is stopping; the job did not fail). */
int storage_job_release(struct storage *st, int64_t id, const char *owner);

/* Writes a job's results durably: DATA_DIR/results/<ID>.labels.gz (LABELS,
 * NBYTES, already gzip-compressed by the caller) and then
 * DATA_DIR/results/<ID>.json (JSON), whose path goes to PATH. Each file is
 * written to a temporary name, flushed and renamed. */
int storage_write_result(struct storage *st, int64_t id, const char *json, const void *labels,
                         size_t nbytes, char *path, size_t pathlen, char *err, size_t errlen);

/* Makes the file TMP (written by the caller anywhere under DATA_DIR)
 * durable as DATA_DIR/results/NAME, whose path goes to PATH. */
int storage_adopt_result(struct storage *st, const char *tmp, const char *name, char *path,
                         size_t pathlen, char *err, size_t errlen);

/* A fresh temporary path under DATA_DIR/results for a result being written. */
int storage_result_temp(struct storage *st, const char *name, char *path, size_t pathlen);

struct storage_job_row {
    int64_t id;
    const char *study_uid;
    const char *series_uid;
    const char *model;
    const char *state;
    const char *error;            /* NULL unless failed */
    const char *result;           /* result file, NULL unless done */
    const char *summary;          /* JSON text, NULL unless done */
    int attempts;
    int64_t created_ms, started_ms, finished_ms; /* 0 when not yet */
};

typedef int (*storage_job_fn)(void *ud, const struct storage_job_row *j);

/* Calls FN for each job, oldest first. */
int storage_foreach_job(struct storage *st, storage_job_fn fn, void *ud);

/* Calls FN with the stored path of each instance of SERIES_UID. */
typedef int (*storage_path_fn)(void *ud, const char *sop_instance_uid, const char *path);
int storage_foreach_instance(struct storage *st, const char *series_uid, storage_path_fn fn,
                             void *ud);

struct storage_study {
    const char *study_uid;
    const char *state;            /* "receiving" | "complete" | "deleting" */
    int64_t instances;
    int64_t series;
    int64_t last_received_ms;
    int64_t completed_ms;         /* 0 when not complete */
};

typedef int (*storage_study_fn)(void *ud, const struct storage_study *s);

/* Calls FN for each study, oldest first; stops early if FN returns non-zero. */
int storage_foreach_study(struct storage *st, storage_study_fn fn, void *ud);

/* Looks up the stored path of SOP_INSTANCE_UID into BUF. */
int storage_instance_path(struct storage *st, const char *sop_instance_uid,
                          char *buf, size_t len);

/*
 * Retention. A study may be deleted once it is finished: complete, with no
 * job queued or running and no outbox item pending or failed (a
 * dead-lettered send still needs the administrator, so it keeps its study).
 * Deleting one removes its instance files, its jobs' result files and all
 * its rows (instances, series, study, jobs, outbox, and its patient when no
 * other study has it). It is crash-safe: the study is first marked
 * "deleting" in a synced commit, then its files go, then its rows; a study
 * found "deleting" by storage_open() is finished there.
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

/* 1 when S is a valid DICOM UID (PS3.5 9.1: 1..64 chars of digits and
 * dots, no empty component, no leading zero in a multi-digit component). */
int storage_uid_valid(const char *s);

#endif
