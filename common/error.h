/*
 * error — how ainode reports failures.
 *
 * Every module returns int: 0 on success, a negative code of its own
 * (MODULE_E...) on failure, with MODULE_strerror() for the class of the
 * failure. Where the caller needs the particulars (which file, which
 * attribute), the function also takes a caller-owned buffer ERR of
 * ERRLEN bytes and writes one line into it with error_set().
 */
#ifndef AINODE_COMMON_ERROR_H
#define AINODE_COMMON_ERROR_H

#include <stddef.h>

/* Formats one line into ERR (ERRLEN bytes; nothing when ERR is NULL or
 * ERRLEN is 0): line breaks become spaces, so a reason from a library
 * never forges a second log line. Returns CODE, so that a failure can be
 * reported and returned in one statement: return error_set(err, len, X_EIO, ...). */
int error_set(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
