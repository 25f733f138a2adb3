/*
 * fsync_hold.c — an LD_PRELOAD library for the durability tests: it records
 * every fsync and fdatasync the node makes, and can hold some of them, so
 * that a test can see what was flushed before an instance was answered.
 *
 * Environment:
 *   AINODE_FSYNC_LOG=FILE         appends one line per flush, once it has
 *                                 returned: "fsync PATH RC" or "fdatasync PATH RC";
 *                                 and "hold PATH" when a flush starts waiting
 *   AINODE_FSYNC_HOLD=FLAG        while the file FLAG exists, a flush of a path
 *   AINODE_FSYNC_HOLD_SUFFIX=S    ending in S waits (before it flushes) until
 *                                 FLAG is removed
 *
 * The path is the descriptor's, read from /proc/self/fd. A line is written
 * with one write() on an O_APPEND descriptor, so that lines of concurrent
 * threads never interleave.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int descriptor_path(int fd, char *buf, size_t len)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, len - 1);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

static void log_line(const char *fmt, const char *a, const char *b)
{
    const char *log = getenv("AINODE_FSYNC_LOG");
    if (!log)
        return;
    char line[4200];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (n <= 0 || (size_t)n >= sizeof line)
        return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return b <= a && strcmp(s + a - b, suffix) == 0;
}

static void hold_if_asked(const char *path)
{
    const char *flag = getenv("AINODE_FSYNC_HOLD");
    const char *suffix = getenv("AINODE_FSYNC_HOLD_SUFFIX");
    if (!flag || !suffix || !ends_with(path, suffix) || access(flag, F_OK) != 0)
        return;
    log_line("hold %s%s\n", path, "");
    const struct timespec tick = {0, 10 * 1000 * 1000};
    while (access(flag, F_OK) == 0)
        nanosleep(&tick, NULL);
}

static int flush(const char *name, int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    char path[4096];
    if (descriptor_path(fd, path, sizeof path) != 0)
        return real(fd);
    hold_if_asked(path);
    int rc = real(fd);
    int saved = errno;
    log_line(rc == 0 ? "%s %s 0\n" : "%s %s -1\n", name, path);
    errno = saved;
    return rc;
}

int fsync(int fd)
{
    return flush("fsync", fd);
}

int fdatasync(int fd)
{
    return flush("fdatasync", fd);
}
