/*
 * log — one line per event on stderr, as key=value fields (logfmt):
 *
 *   ts=2026-12-03T10:00:00.123Z level=info event=job.done job=12 study=4
 *      model=ct-bone-body msg="done in 1.2 s"
 *
 * or, with log_format json, one JSON object per line with the same keys.
 * When stderr is the systemd journal (JOURNAL_STREAM names it), each line
 * starts with its syslog priority, "<3>" to "<7>", and leaves out ts (the
 * journal stamps every line itself).
 *
 * Thread-safe. Nothing that identifies a patient is logged at the default
 * level (info): the ids are the store's row numbers and the configuration's
 * names; UIDs and attribute values appear only at debug. Control characters
 * and bytes outside ASCII are escaped (\n, \xNN; \u00NN in JSON), so that a
 * value from the network (an AE title, a library's message) never forges a
 * line or a field.
 */
#ifndef AINODE_COMMON_LOG_H
#define AINODE_COMMON_LOG_H

/* The one log-level scale of the node: config, the DICOM shim's callback
 * and the log all use it. */
enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

/* What a line is about. Zero and NULL fields are left out. */
struct log_ids {
    long long study;  /* the store's study number (status shows it) */
    long long job;
    long long item;   /* an outbox item */
    const char *model;
    const char *dest; /* a destination's name */
    const char *peer; /* a calling AE title */
    const char *addr; /* a peer's network address */
};

/* Both may change while other threads log (a reload). */
void log_set_level(enum log_level level);
void log_set_format(enum log_format format);
int log_enabled(enum log_level level);

/* Writes one line: EVENT (a dotted name such as "job.done", or NULL), the
 * fields of IDS (or NULL) and the message FMT. */
void log_event(enum log_level level, const char *event, const struct log_ids *ids,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The ids of a line, in place: log_event(LOG_INFO, "job.done", LOG_IDS(.job = id), ...). */
#define LOG_IDS(...) (&(struct log_ids){__VA_ARGS__})

/* A line with neither event nor ids. */
#define log_msg(level, ...) log_event((level), NULL, NULL, __VA_ARGS__)

/* The line's fields, for a caller with a ready message (the DICOM shim's). */
void log_line(enum log_level level, const char *event, const struct log_ids *ids,
              const char *msg);

/* "error", "warn", "info", "debug". */
const char *log_level_name(enum log_level level);

#endif
