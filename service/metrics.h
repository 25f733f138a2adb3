/*
 * metrics — what the running node counts, for GET /metrics and the status
 * page (http.h): instances and bytes received, associations accepted and
 * rejected by reason, jobs finished with their queue wait and run time per
 * model, sends per destination with the last success and failure, and
 * whether each model loaded.
 *
 * The receiver's threads, the model workers and the sender bump these as
 * they go, so every call is cheap and safe from any thread: unlabelled
 * counters are C11 atomics; labelled ones (per model, per destination) sit
 * in small fixed tables under one short lock, taken once per job or send,
 * never per byte. There is one set per process, zero at its start.
 *
 * What lives in the store (studies, jobs and outbox items by state) is not
 * counted here: http.c reads it from the store at each scrape.
 */
#ifndef AINODE_SERVICE_METRICS_H
#define AINODE_SERVICE_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Why an association was refused: the label of
 * ainode_associations_rejected_total. */
enum metrics_rejection {
    METRICS_REJECT_ADDRESS = 0,      /* node.allowed_addresses: closed at accept */
    METRICS_REJECT_CALLING_AE,
    METRICS_REJECT_CALLED_AE,
    METRICS_REJECT_MAX_ASSOCIATIONS,
    METRICS_REJECT_MAX_PER_CALLER,
    METRICS_REJECT_BUSY,
    METRICS_REJECT_TLS,              /* the TLS handshake failed */
    METRICS_REJECT_UNREADABLE,       /* the association request could not be read */
    METRICS_REJECT_COUNT
};

/* Where a model of the configuration stands in its workers. */
enum metrics_model_state {
    METRICS_MODEL_UNKNOWN = 0,       /* no worker has tried yet */
    METRICS_MODEL_LOADING,
    METRICS_MODEL_LOADED,
    METRICS_MODEL_FAILED,            /* with the reason */
};

/* An instance was stored (BYTES: its file), or refused. */
void metrics_instance_received(uint64_t bytes);
void metrics_instance_refused(void);

/* An association was accepted, or rejected for WHY. */
void metrics_association_accepted(void);
void metrics_association_rejected(enum metrics_rejection why);

/* A worker claimed a job of MODEL first queued WAIT_SECONDS ago. */
void metrics_job_claimed(const char *model, double wait_seconds);

/* A job of MODEL ended, done or failed, after RUN_SECONDS. */
void metrics_job_finished(const char *model, int done, double run_seconds);

/* An outbox item of KIND (seg, sr, forward) was sent to DESTINATION, or
 * an attempt failed with ERROR, at NOW_MS. */
void metrics_send_succeeded(const char *destination, const char *kind, int64_t now_ms);
void metrics_send_failed(const char *destination, const char *kind, int64_t now_ms,
                         const char *error);

/* Model NAME's workers are loading it, have loaded it, or failed to with
 * ERROR (may be NULL otherwise). */
void metrics_model_state(const char *name, enum metrics_model_state state, const char *error);

/* Where model NAME stands; its last load error goes to ERR (ERRLEN bytes,
 * empty when none). */
enum metrics_model_state metrics_model_get(const char *name, char *err, size_t errlen);

/* What one destination's sends came to since the start. */
struct metrics_destination {
    char name[128];
    uint64_t sent, failed;           /* files sent; attempts that failed */
    int64_t last_sent_ms, last_failed_ms; /* 0: none yet */
    char last_error[256];            /* of the last failed attempt */
};

/* Copies the destinations that sent or failed anything into OUT (up to
 * MAX of them), in the order they first did; returns how many. */
size_t metrics_destinations(struct metrics_destination *out, size_t max);

/* Writes every metric above in the Prometheus text format 0.0.4, with its
 * HELP and TYPE lines, to OUT; VERSION goes into ainode_build_info. */
void metrics_write(FILE *out, const char *version);

#endif
