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

struct config;

struct storage;
struct storage_series;
struct storage_plan;
struct runner;

/* Starts the inference workers of every model in CFG (jobs.c). Fails when
 * a model's device is not available. */
int runner_start(const struct config *cfg, struct storage *st, struct runner **out, char *err,
                 size_t errlen);
/* New jobs were queued: idle workers look now. */
void runner_wake(struct runner *r);
/* Stops the workers (a running job goes back to the queue) and frees R. */
void runner_stop(struct runner *r);
/* storage_plan_fn: the models CFG's rules run on a series (UD = config). */
void runner_plan(void *ud, const struct storage_series *s, struct storage_plan *plan);

/* Runs the node until SIGTERM/SIGINT. Returns the process exit code. */
int serve_run(const struct config *cfg);

/* Prints the studies of the store named by CFG as a table or JSON. */
int status_print(const struct config *cfg, int json);

/* Milliseconds since the epoch (wall clock). */
int64_t service_now_ms(void);

/* Formats MS (since the epoch) as ISO 8601 UTC, e.g. 2026-01-31T12:00:00.250Z. */
void service_format_time(int64_t ms, char *buf, size_t len);

#endif
