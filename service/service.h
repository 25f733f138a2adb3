/*
 * service — the ainode daemon and its command line.
 *
 * main.c dispatches the sub-commands; serve.c runs the node (libuv loop:
 * signals and the study-completion timer; the DICOM acceptor on a thread
 * of its own); jobs.c runs the models on completed studies; status.c
 * prints what the store holds.
 */
#ifndef AINODE_SERVICE_H
#define AINODE_SERVICE_H

#include <stdint.h>
#include <stddef.h>

#include "inference/inference.h"

struct config;
struct config_model;

struct storage;
struct runner;
struct attr_series;
struct plan;

struct sender;

/* Starts the inference workers of every model in CFG (jobs.c). Fails when
 * a model's device is not available. SENDER (may be NULL) is woken when
 * a finished job has put results in the outbox (SENDER is woken). */
/* -1 with a message in ERR when a model of CFG names a device this host
 * lacks (runner_start and reload refuse such a configuration). */
int runner_check_devices(const struct config *cfg, char *err, size_t errlen);
int runner_start(const struct config *cfg, struct storage *st, struct sender *sender,
                 struct runner **out, char *err, size_t errlen);
/* New jobs were queued: idle workers look now. */
void runner_wake(struct runner *r);
/* A reloaded configuration: workers of added models start, workers of
 * removed models (or beyond a lowered count) leave after their current job,
 * and the others use it from their next job on. CFG must outlive the
 * runner. */
void runner_set_config(struct runner *r, const struct config *cfg);
/* Stops the workers (a running job goes back to the queue) and frees R. */
void runner_stop(struct runner *r);

/* Starts the thread that delivers the outbox (sender.c). */
int sender_start(const struct config *cfg, struct storage *st, struct sender **out, char *err,
                 size_t errlen);
/* Items were queued: deliver now rather than at the next poll. */
void sender_wake(struct sender *s);
/* A reloaded configuration: used from the next round on. CFG must outlive
 * the sender. */
void sender_set_config(struct sender *s, const struct config *cfg);
void sender_stop(struct sender *s);
/* The next attempt after ATTEMPTS failed ones of an item for D, as of
 * NOW_MS, with JITTER in [0, 1); -1 when there is to be none. */
struct config_destination;
int64_t sender_next_attempt(const struct config_destination *d, int attempts, int64_t now_ms,
                            double jitter);

/* `ainode reload`: validates the configuration and asks the node serving
 * its data directory to re-read it (SIGHUP). */
int reload_command(const struct config *cfg);

/* `ainode explain`: how the rules of CFG treat each series of a stored
 * study (one argument: its Study Instance UID) or of DICOM files. */
int explain_command(const struct config *cfg, char *const *args, int n);

/* `ainode retry`: dead-lettered outbox item ID (or all when ID < 0) go
 * back to the queue. */
int retry_command(const struct config *cfg, int64_t id);

/* Seconds spent in each stage of one pipeline run (pipeline.c). */
struct pipeline_timing {
    double decode, assemble, preprocess, model, postprocess;
    double seg, sr;               /* writing the results (jobs only) */
};

/* Labels on the source series' grid; slice k came from frame frame[k] of
 * the file source[k] (an index into the paths given). SOURCES is the
 * series as parsed once (headers only by now), for the result writers. */
struct dicom_sources;
struct pipeline_output {
    struct infer_grid grid;
    uint8_t *labels;
    int *source;
    int *frame;
    struct dicom_sources *sources;
};

#define PIPELINE_CANCELLED (-2)

/* Runs CM (loaded as MODEL) on the series in PATHS. Returns 0, -1 with the
 * reason in ERR, or PIPELINE_CANCELLED when PROGRESS asked to stop. */
int pipeline_run(const struct config_model *cm, struct infer_model *model,
                 const char *const *paths, size_t n_paths,
                 int (*progress)(void *ud, long done, long total), void *progress_ud,
                 struct pipeline_output *out, struct pipeline_timing *t, char *err,
                 size_t errlen);
void pipeline_output_free(struct pipeline_output *o);

/* The result document of a job (grid, source slices, label counts, the
 * seconds of each stage, the SEG and SR instances), and in *SUMMARY the
 * label counts alone; both malloc'ed JSON text. */
char *pipeline_result_json(const struct config_model *cm, const struct pipeline_output *o,
                           const char *const *sops, int64_t job_id, const char *study_uid,
                           const char *series_uid, const struct pipeline_timing *t,
                           const char *seg_uid, const char *sr_uid, char **summary);
/* The label counts and volumes alone, as JSON text. */
char *pipeline_summary_json(const struct config_model *cm, const struct pipeline_output *o);

/* Sets up malloc for model runs (large buffers reused, not remapped). */
void pipeline_tune_allocator(void);

/* `ainode infer`: runs MODEL on the files (or folders) in PATHS in this
 * process and prints the labels and the time of each stage as JSON. */
int infer_command(const struct config *cfg, const char *model, char *const *paths, int n,
                  const char *labels_out);

/* Runs the node until SIGTERM/SIGINT. Returns the process exit code. */
int serve_run(const struct config *cfg);

/* Prints the studies of the store named by CFG as a table or JSON. */
int status_print(const struct config *cfg, int json);

/* Milliseconds since the epoch (wall clock). */
int64_t service_now_ms(void);

/* Formats MS (since the epoch) as ISO 8601 UTC, e.g. 2026-01-31T12:00:00.250Z. */
void service_format_time(int64_t ms, char *buf, size_t len);

#endif
