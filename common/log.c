#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current = LOG_INFO;
static _Atomic int format = LOG_FORMAT_TEXT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const lower[] = {"error", "warn", "info", "debug"};
/* syslog(3) priorities: err, warning, info, debug. */
static const char priority[] = {'3', '4', '6', '7'};

void log_set_level(enum log_level level)
{
    atomic_store(&current, (int)level);
}

void log_set_format(enum log_format f)
{
    atomic_store(&format, (int)f);
}

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load(&current);
}

const char *log_level_name(enum log_level level)
{
    return lower[level];
}

/* systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it connects
 * to the journal; stderr is that stream only if it is the same file (a
 * redirection in between makes it something else). Asked per line: a
 * line costs a write(2) anyway, and stderr may be moved. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
           (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* A line being built: appends stop at the end, less room for the closing
 * characters, so an over-long line is cut and still ends well. */
struct line {
    char b[2048];
    size_t n;
};
#define LINE_ROOM (sizeof(((struct line *)0)->b) - 4)

static void put(struct line *l, const char *s, size_t len)
{
    if (l->n + len > LINE_ROOM)
        return;
    memcpy(l->b + l->n, s, len);
    l->n += len;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Whether a text value must be quoted: empty, or with a space, '=', a
 * quote, a backslash or a byte that is escaped. */
static int needs_quotes(const char *v)
{
    if (!*v)
        return 1;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p >= 0x7f || *p == '=' || *p == '"' || *p == '\\')
            return 1;
    return 0;
}

/* Appends V escaped: in text, \" \\ \n and \xNN for other control bytes and
 * bytes outside ASCII; in JSON, \" \\ \n and \u00NN. A character is added
 * whole or not at all. */
static void put_escaped(struct line *l, const char *v, int json)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        char e[8];
        size_t len;
        if (*p == '"' || *p == '\\') {
            e[0] = '\\', e[1] = (char)*p, len = 2;
        } else if (*p == '\n') {
            e[0] = '\\', e[1] = 'n', len = 2;
        } else if (*p < 0x20 || *p >= 0x7f) {
            len = (size_t)snprintf(e, sizeof e, json ? "\\u%04x" : "\\x%02x", *p);
        } else {
            e[0] = (char)*p, len = 1;
        }
        if (l->n + len > LINE_ROOM)
            return;
        put(l, e, len);
    }
}

static void field_str(struct line *l, int json, const char *key, const char *v)
{
    if (!v)
        return;
    if (json) {
        put(l, ",\"", 2);
        puts_(l, key);
        put(l, "\":\"", 3);
        put_escaped(l, v, 1);
        put(l, "\"", 1);
        return;
    }
    if (l->n)
        put(l, " ", 1);
    puts_(l, key);
    put(l, "=", 1);
    int q = needs_quotes(v);
    if (q)
        put(l, "\"", 1);
    put_escaped(l, v, 0);
    if (q)
        put(l, "\"", 1);
}

static void field_num(struct line *l, int json, const char *key, long long v)
{
    if (!v)
        return;
    char num[32];
    snprintf(num, sizeof num, "%lld", v);
    if (json) {
        put(l, ",\"", 2);
        puts_(l, key);
        put(l, "\":", 2);
    } else {
        put(l, " ", 1);
        puts_(l, key);
        put(l, "=", 1);
    }
    puts_(l, num);
}

void log_line(enum log_level level, const char *event, const struct log_ids *ids,
              const char *msg)
{
    if (!log_enabled(level))
        return;
    int journal = stderr_is_journal();
    int json = atomic_load(&format) == LOG_FORMAT_JSON;
    struct line l = {.n = 0};
    if (journal) {
        char pri[3] = {'<', priority[level], '>'};
        put(&l, pri, 3);
    }
    if (json)
        put(&l, "{", 1);
    if (!journal) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        char stamp[40];
        size_t k = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + k, sizeof stamp - k, ".%03ldZ", (long)(tv.tv_usec / 1000));
        if (json) {
            put(&l, "\"ts\":\"", 6);
            puts_(&l, stamp);
            put(&l, "\",", 2);
        } else {
            put(&l, "ts=", 3);
            puts_(&l, stamp);
            put(&l, " ", 1);
        }
    }
    if (json) {
        put(&l, "\"level\":\"", 9);
        puts_(&l, lower[level]);
        put(&l, "\"", 1);
    } else {
        put(&l, "level=", 6);
        puts_(&l, lower[level]);
    }
    field_str(&l, json, "event", event);
    if (ids) {
        field_num(&l, json, "study", ids->study);
        field_num(&l, json, "job", ids->job);
        field_num(&l, json, "item", ids->item);
        field_str(&l, json, "model", ids->model);
        field_str(&l, json, "dest", ids->dest);
        field_str(&l, json, "peer", ids->peer);
        field_str(&l, json, "addr", ids->addr);
    }
    /* The message last, always quoted in text: it is a sentence. */
    if (json) {
        put(&l, ",\"msg\":\"", 8);
        put_escaped(&l, msg, 1);
        memcpy(l.b + l.n, "\"}\n", 3);
        l.n += 3;
    } else {
        put(&l, " msg=\"", 6);
        put_escaped(&l, msg, 0);
        memcpy(l.b + l.n, "\"\n", 2);
        l.n += 2;
    }
    /* One write per line, under the lock, so lines of threads never mix. */
    pthread_mutex_lock(&lock);
    for (size_t off = 0; off < l.n;) {
        ssize_t w = write(STDERR_FILENO, l.b + off, l.n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    pthread_mutex_unlock(&lock);
}

void log_event(enum log_level level, const char *event, const struct log_ids *ids,
               const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_line(level, event, ids, msg);
}
