#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static enum log_level current = LOG_INFO;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_set_level(enum log_level level)
{
    current = level;
}

int log_enabled(enum log_level level)
{
    return level <= current;
}

const char *log_level_name(enum log_level level)
{
    static const char *const lower[] = {"error", "warn", "info", "debug"};
    return lower[level];
}

/* Copies MSG into OUT (LEN bytes) with control characters and bytes
 * outside ASCII escaped: the whole formatted message passes here, so no
 * value from the network (an AE title, a library's message, a file name)
 * can start a line of its own or smuggle terminal escapes or bytes that
 * are not valid UTF-8 into the log. */
static void escape(const char *msg, char *out, size_t len)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && o + 5 < len; p++) {
        if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (*p < 0x20 || *p >= 0x7f) {
            o += (size_t)snprintf(out + o, len - o, "\\x%02x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[1024], safe[1024]; /* an escaped line is cut at 1 KB, never split */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    escape(msg, safe, sizeof safe);
    pthread_mutex_lock(&lock);
    fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, (long)(tv.tv_usec / 1000), names[level], safe);
    pthread_mutex_unlock(&lock);
}
