/*
 * service — the ainode daemon and its command line.
 *
 * main.c dispatches the sub-commands; serve.c runs the node (libuv loop:
 * signals and the study-completion timer; the DICOM acceptor on a thread
 * of its own); status.c prints what the store holds.
 */
#ifndef AINODE_SERVICE_H
#define AINODE_SERVICE_H

#include <stdint.h>
#include <stddef.h>

struct config;

/* Runs the node until SIGTERM/SIGINT. Returns the process exit code. */
int serve_run(const struct config *cfg);

/* Prints the studies of the store named by CFG as a table or JSON. */
int status_print(const struct config *cfg, int json);

/* Milliseconds since the epoch (wall clock). */
int64_t service_now_ms(void);

/* Formats MS (since the epoch) as ISO 8601 UTC, e.g. 2026-01-31T12:00:00.250Z. */
void service_format_time(int64_t ms, char *buf, size_t len);

#endif
