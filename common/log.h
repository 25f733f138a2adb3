/*
 * log — one line per event on stderr: "TIME LEVEL message".
 * Thread-safe. Nothing that identifies a patient is logged at the default
 * level (info): UIDs and attribute values appear only at debug. Control
 * characters and bytes outside ASCII in a message are escaped (\n, \xNN),
 * so that a value from the network (an AE title, a library's message)
 * never forges a line.
 */
#ifndef AINODE_COMMON_LOG_H
#define AINODE_COMMON_LOG_H

/* The one log-level scale of the node: config, the DICOM shim's callback
 * and the log all use it. */
enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "error", "warn", "info", "debug". */
const char *log_level_name(enum log_level level);

#endif
