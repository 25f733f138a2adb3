/*
 * nodelock.c — the lock a serving node holds on its data directory
 * (nodelock.h).
 */
#include "service/nodelock.h"

#include "common/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct nodelock {
    int fd;
};

static int lock_path(const char *data_dir, char *buf, size_t len, char *err, size_t errlen)
{
    int n = snprintf(buf, len, "%s/%s", data_dir, NODELOCK_FILE);
    if (n < 0 || (size_t)n >= len)
        return error_set(err, errlen, NODELOCK_EIO, "the data directory path is too long");
    return NODELOCK_OK;
}

/* The PID written in the file FD, 0 when there is none (yet). */
static pid_t read_pid(int fd)
{
    char buf[32];
    ssize_t got = pread(fd, buf, sizeof buf - 1, 0);
    if (got <= 0)
        return 0;
    buf[got] = '\0';
    char *end = NULL;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (errno || end == buf || (*end && *end != '\n') || v <= 0 || v > INT_MAX)
        return 0;
    return (pid_t)v;
}

int nodelock_acquire(const char *data_dir, struct nodelock **out, char *err, size_t errlen)
{
    *out = NULL;
    char path[PATH_MAX];
    if (lock_path(data_dir, path, sizeof path, err, errlen) != NODELOCK_OK)
        return NODELOCK_EIO;
    /* The lock is taken before the store is opened, which would otherwise
     * create the directory (with the same mode: it checks it afterwards). */
    if (mkdir(data_dir, 0750) != 0 && errno != EEXIST)
        return error_set(err, errlen, NODELOCK_EIO, "cannot create %s: %s", data_dir,
                         strerror(errno));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return error_set(err, errlen, NODELOCK_EIO, "cannot open %s: %s", path, strerror(errno));
    /* `ainode reload` holds the lock shared for an instant when it finds no
     * node: that is not a node, so wait it out (50 x 10 ms). */
    for (int tries = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; tries++) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK) {
            int e = errno;
            close(fd);
            return error_set(err, errlen, NODELOCK_EIO, "cannot lock %s: %s", path, strerror(e));
        }
        if (tries == 50) {
            pid_t other = read_pid(fd);
            close(fd);
            if (other)
                return error_set(err, errlen, NODELOCK_EBUSY,
                                 "another ainode (pid %ld) is serving %s: it holds %s",
                                 (long)other, data_dir, path);
            return error_set(err, errlen, NODELOCK_EBUSY,
                             "another ainode is serving %s: it holds %s", data_dir, path);
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return error_set(err, errlen, NODELOCK_EIO, "cannot write %s: %s", path, strerror(e));
    }
    struct nodelock *l = malloc(sizeof *l);
    if (!l) {
        close(fd);
        return error_set(err, errlen, NODELOCK_EIO, "out of memory");
    }
    l->fd = fd;
    *out = l;
    return NODELOCK_OK;
}

void nodelock_release(struct nodelock *l)
{
    if (!l)
        return;
    /* Emptied first: a reader that finds the lock free then names no PID. */
    if (ftruncate(l->fd, 0) != 0) {
        /* nothing to do: the lock, dropped below, is what counts */
    }
    close(l->fd);
    free(l);
}

/* 1 when process PID has the file of FD open, 0 when it has not, -1 (with
 * errno) when its descriptors cannot be read. */
static int has_open(pid_t pid, int fd)
{
    struct stat want;
    if (fstat(fd, &want) != 0)
        return -1;
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        struct stat sb;
        if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &sb, 0) == 0)
            found = sb.st_dev == want.st_dev && sb.st_ino == want.st_ino;
    }
    closedir(d);
    return found;
}

int nodelock_holder(const char *data_dir, pid_t *pid, char *err, size_t errlen)
{
    *pid = 0;
    char path[PATH_MAX];
    if (lock_path(data_dir, path, sizeof path, err, errlen) != NODELOCK_OK)
        return NODELOCK_EIO;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return error_set(err, errlen, NODELOCK_ENONE, "no node is serving %s (no %s)", data_dir,
                         path);
    if (fd < 0)
        return error_set(err, errlen, NODELOCK_EIO, "cannot open %s: %s", path, strerror(errno));
    int rc;
    while ((rc = flock(fd, LOCK_SH | LOCK_NB)) != 0 && errno == EINTR)
        ;
    if (rc == 0) { /* nobody holds it: whatever it names is not a node of this directory */
        pid_t named = read_pid(fd);
        close(fd);
        if (named)
            return error_set(err, errlen, NODELOCK_ENONE,
                             "no node is serving %s: %s is not locked (the pid it names, %ld, "
                             "is not a node of this directory)",
                             data_dir, path, (long)named);
        return error_set(err, errlen, NODELOCK_ENONE, "no node is serving %s: %s is not locked",
                         data_dir, path);
    }
    if (errno != EWOULDBLOCK) {
        int e = errno;
        close(fd);
        return error_set(err, errlen, NODELOCK_EIO, "cannot test the lock %s: %s", path,
                         strerror(e));
    }
    /* Held. The holder writes its PID right after taking the lock; the file
     * could still name another process (a node that has just started, or a
     * hand-edited file): only a process that has this file open counts. */
    pid_t named = read_pid(fd);
    if (!named) {
        close(fd);
        return error_set(err, errlen, NODELOCK_ESTALE,
                         "%s is locked but names no pid yet (a node is starting); try again",
                         path);
    }
    int open_there = has_open(named, fd);
    int e = errno;
    close(fd);
    if (open_there < 0)
        return error_set(err, errlen, NODELOCK_ESTALE,
                         "%s is locked; cannot check that pid %ld holds it: %s", path,
                         (long)named, e == ENOENT ? "no such process" : strerror(e));
    if (!open_there)
        return error_set(err, errlen, NODELOCK_ESTALE,
                         "%s is locked, but pid %ld, which it names, does not hold it", path,
                         (long)named);
    *pid = named;
    return NODELOCK_OK;
}
