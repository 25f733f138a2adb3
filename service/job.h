/*
 * job — one job, start to end: the series' files are decoded, the model
 * runs on them (pipeline.h), the SEG, the SR, the labels and the result
 * document are written durably under DATA_DIR/results, and the job is
 * finished in the store with an outbox item per result and destination,
 * or failed with its reason, or given back to the queue when the node
 * stops. The lease on the job is renewed while the model runs.
 *
 * A job owns no thread: a worker of the runner (runner.h) calls job_run()
 * for each job it claims; the unit tests call it directly.
 */
#ifndef AINODE_SERVICE_JOB_H
#define AINODE_SERVICE_JOB_H

#include <stddef.h>
#include <stdint.h>

struct config_model;
struct infer_model;
struct storage;
struct storage_job;

/* A job claimed by a worker runs again after this when its worker vanished. */
#define JOB_LEASE_MS 60000
/* How often the lease is renewed while the model runs. */
#define JOB_RENEW_EVERY_MS 10000

/* How a job_run() ended. */
enum job_result {
    JOB_DONE = 0,                 /* results written; the job is done, its sends queued */
    JOB_FAILED = -1,              /* the job is failed with the reason (in the store and WHY) */
    JOB_INTERRUPTED = -2,         /* the stop interrupted it: back in the queue */
    JOB_LEASE_LOST = -3,          /* another worker holds it now: this run is dropped */
};

/* A short text for a JOB_* result. */
const char *job_strerror(int result);

/* A head an encoder's worker runs on the encoder's features. */
struct job_head {
    const struct config_model *cfg;
    struct infer_model *model;    /* NULL when it could not be loaded (LOAD_ERROR says why) */
    const char *load_error;
};

/* What a job runs with. */
struct job_context {
    struct storage *store;
    const struct config_model *model_cfg;
    struct infer_model *model;    /* NULL when it could not be loaded (LOAD_ERROR says why) */
    const char *load_error;
    const char *owner;            /* the lease owner the job was claimed for */
    /* Asked while the model runs; non-zero stops the job (JOB_INTERRUPTED).
     * May be NULL. */
    int (*stopping)(void *ud);
    void *stopping_ud;
    /* An encoder (output.kind embedding): the heads that read its features. */
    const struct job_head *heads;
    size_t n_heads;
};

/* Installs, once per process, the handler of fatal signals (SIGSEGV,
 * SIGBUS, SIGILL, SIGFPE, SIGABRT) that writes the crash record of STORE
 * (storage.h) naming the jobs inside a stage, so that the next start
 * quarantines them. Returns 0, or -1 when a handler cannot be set. */
int job_guard_install(struct storage *store);

/* Runs JOB (claimed by CTX->owner) and records its end in the store.
 * Returns a JOB_* result; for JOB_FAILED the reason also goes to WHY
 * (WHYLEN bytes). Nothing of JOB is kept. */
int job_run(const struct job_context *ctx, const struct storage_job *job, char *why,
            size_t whylen);

/* Runs a group: JOBS (N, claimed by CTX->owner, all on one series), each
 * of CTX's encoder or of one of its heads. The encoder runs once over the
 * series, each head on its features (held in memory, never recomputed);
 * each job then ends as job_run()'s would, its result document and summary
 * naming the group's jobs and the encoder's forwards and seconds. Returns
 * how many of the jobs are done. */
size_t job_run_group(const struct job_context *ctx, const struct storage_job *jobs, size_t n);

#endif
