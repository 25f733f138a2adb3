/*
 * clock — the node's wall clock: milliseconds since the epoch, as stored in
 * the database and shown by `status`, and their ISO 8601 form.
 */
#ifndef AINODE_COMMON_CLOCK_H
#define AINODE_COMMON_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the epoch (wall clock). */
int64_t clock_now_ms(void);

/* Formats MS (since the epoch) as ISO 8601 UTC into BUF (LEN bytes), e.g.
 * 2026-01-31T12:00:00.250Z. */
void clock_format_time(int64_t ms, char *buf, size_t len);

#endif
