/*
 * cli_audit — `ainode audit`: the audit trail of the store (every
 * association request and every send attempt, storage.h), as tables or
 * JSON, from a time on.
 */
#ifndef AINODE_SERVICE_CLI_AUDIT_H
#define AINODE_SERVICE_CLI_AUDIT_H

#include <stdint.h>

struct config;

/*
 * Reads WHEN as a time, in ms since the epoch, into *OUT: an ISO 8601 date
 * or date and time in UTC (2026-12-01, 2026-12-01T10:00,
 * 2026-12-01T10:00:30, an optional trailing Z), or a span back from NOW_MS
 * (30m, 24h, 7d). Returns 0, or -1 when WHEN is neither.
 */
int cli_audit_parse_since(const char *when, int64_t now_ms, int64_t *out);

/* `ainode audit`: the associations and send attempts recorded in CFG's
 * store from SINCE_MS on (0: all), as tables or (JSON non-zero) as JSON.
 * The table shows no UID; the JSON gives each result's SOP Instance UID. */
int cli_audit(const struct config *cfg, int64_t since_ms, int json);

#endif
