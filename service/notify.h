/*
 * notify — tells the service manager how the node is doing, through
 * sd_notify(3): READY=1 once it listens, STATUS= lines, WATCHDOG=1 from
 * the event loop and STOPPING=1 when it stops. Outside systemd (no
 * NOTIFY_SOCKET in the environment) every call does nothing.
 */
#ifndef AINODE_SERVICE_NOTIFY_H
#define AINODE_SERVICE_NOTIFY_H

#include <stdint.h>

/* Non-zero when a service manager listens (NOTIFY_SOCKET is set): what
 * would be computed only for a STATUS= line can be skipped otherwise. */
int notify_enabled(void);

/* READY=1 with STATUS= set to the text formatted from FMT. */
void notify_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STATUS= set to the text formatted from FMT. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STOPPING=1 with STATUS= set to the text formatted from FMT. */
void notify_stopping(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1: the event loop is alive. */
void notify_watchdog(void);

/* How often to send WATCHDOG=1, in milliseconds: half of the service
 * manager's WATCHDOG_USEC for this process (at least 1), or 0 when it
 * expects none. */
uint64_t notify_watchdog_interval_ms(void);

#endif
