/*
 * log — one line per event on stderr: "TIME LEVEL message".
 * Thread-safe. Nothing that identifies a patient is logged at the default
 * level (info): UIDs and attribute values appear only at debug.
 */
#ifndef AINODE_LOG_H
#define AINODE_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
