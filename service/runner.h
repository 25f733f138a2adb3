/*
 * runner — the inference workers: a pool of threads per model of the
 * configuration, each loading its model once and running the jobs of that
 * model one at a time (job.h). Workers claim jobs with a lease, wait for
 * work on one struct waiter (common/wait.h) and run at a lower CPU priority
 * than the receiver. A reload adds, retires or reloads workers.
 *
 * The runner holds a reference to the configuration in force; a worker
 * takes one to the configuration of its model for as long as it uses it.
 */
#ifndef AINODE_SERVICE_RUNNER_H
#define AINODE_SERVICE_RUNNER_H

#include <stddef.h>

struct config;
struct runner;
struct sender;
struct storage;

/* 0, or -1 with a message in ERR when a model of CFG names a device this
 * host lacks (runner_start and a reload refuse such a configuration). */
int runner_check_devices(const struct config *cfg, char *err, size_t errlen);

/* Starts the workers of every model in CFG (the runner takes a reference
 * to CFG) over the store ST. SENDER (may be NULL) is woken when a finished
 * job has put results in the outbox. 0 with *OUT set, or -1 with the
 * reason in ERR. */
int runner_start(struct config *cfg, struct storage *st, struct sender *sender,
                 struct runner **out, char *err, size_t errlen);

/* New jobs were queued: idle workers look now. */
void runner_wake(struct runner *r);

/* A reloaded configuration (the runner takes a reference to CFG and drops
 * the old one): workers of added models start, workers of removed models
 * (or beyond a lowered count) leave after their current job, and the
 * others use it from their next job on. */
void runner_set_config(struct runner *r, struct config *cfg);

/* Stops the workers (a running job goes back to the queue), drops the
 * configuration and frees R. NULL is accepted. */
void runner_stop(struct runner *r);

#endif
