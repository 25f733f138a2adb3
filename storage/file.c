/*
 * file.c — durable-file primitives.
 *
 * A name is durable only once its directory is flushed, and a file's bytes
 * only once the file is: each helper here says which of the two it does.
 */
#include "storage/internal.h"

#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *file_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

int file_sync(const char *path, int directory)
{
    int fd = open(path, (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* One directory some commits are waiting on. Tickets are handed out in
 * order; a flush covers every ticket handed out before it began. */
struct dir_sync {
    struct dir_sync *next;
    char *path;
    int users;                    /* threads inside file_sync_dir_shared for it */
    int running;
    uint64_t issued;              /* last ticket handed out */
    uint64_t done;                /* every ticket up to this one is flushed */
    uint64_t failed;              /* a flush covering tickets up to this one failed */
    int error;                    /* its errno */
};

struct file_dir_syncs {
    pthread_mutex_t lock;
    pthread_cond_t flushed;
    struct dir_sync *active;
};

struct file_dir_syncs *file_dir_syncs_new(void)
{
    struct file_dir_syncs *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->flushed, NULL);
    return s;
}

void file_dir_syncs_free(struct file_dir_syncs *s)
{
    if (!s)
        return;
    pthread_cond_destroy(&s->flushed);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int file_sync_dir_shared(struct file_dir_syncs *s, const char *dir)
{
    if (!s)
        return file_sync(dir, 1);
    pthread_mutex_lock(&s->lock);
    struct dir_sync *d = s->active;
    while (d && strcmp(d->path, dir) != 0)
        d = d->next;
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d || !(d->path = strdup(dir))) {
            pthread_mutex_unlock(&s->lock);
            free(d);
            return file_sync(dir, 1);
        }
        d->next = s->active;
        s->active = d;
    }
    d->users++;
    const uint64_t ticket = ++d->issued;
    while (d->done < ticket) {
        if (d->running) {
            pthread_cond_wait(&s->flushed, &s->lock);
            continue;
        }
        /* Lead: one fsync for every ticket issued so far, all of whose
         * directory entries were made before it begins. */
        const uint64_t upto = d->issued;
        d->running = 1;
        pthread_mutex_unlock(&s->lock);
        int rc = file_sync(dir, 1);
        int err = errno;
        pthread_mutex_lock(&s->lock);
        d->running = 0;
        d->done = upto;
        if (rc != 0) {
            d->failed = upto;
            d->error = err;
        }
        pthread_cond_broadcast(&s->flushed);
    }
    /* A failure at or after this ticket's flush fails it too: answering
     * failure for a flushed entry loses nothing (the sender sends again). */
    int rc = d->failed >= ticket ? -1 : 0;
    int err = d->error;
    if (--d->users == 0) {
        struct dir_sync **p = &s->active;
        while (*p != d)
            p = &(*p)->next;
        *p = d->next;
        free(d->path);
        free(d);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc != 0)
        errno = err;
    return rc;
}

int file_mkdir_durable(const char *parent, const char *path)
{
    /* chmod: the mode whatever the umask. */
    if (mkdir(path, 0750) == 0)
        return chmod(path, 0750) == 0 ? file_sync(parent, 1) : -1;
    return errno == EEXIST ? 0 : -1;
}

int file_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *p = file_join(dir, e->d_name);
        if (!p || unlink(p) != 0)
            rc = -1;
        free(p);
    }
    closedir(d);
    return rc;
}

int file_unlink_gone(const char *path)
{
    return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

int file_link_fresh(const char *temp, const char *dir, const char *name, char *out,
                    size_t outlen, int (*taken)(void *ud, const char *path), void *ud)
{
    for (unsigned n = 0; n < 100000; n++) {
        int w = n == 0 ? snprintf(out, outlen, "%s/%s.dcm", dir, name)
                       : snprintf(out, outlen, "%s/%s.%u.dcm", dir, name, n);
        if (w < 0 || (size_t)w >= outlen) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (taken && taken(ud, out))
            continue;
        if (link(temp, out) == 0)
            return 0;
        if (errno != EEXIST)
            return -1;
    }
    errno = EEXIST;
    return -1;
}

int file_write_durable(const char *dir, const char *name, const void *data, size_t len,
                       char *path, size_t pathlen)
{
    char tmp[PATH_MAX];
    if (snprintf(path, pathlen, "%s/%s", dir, name) >= (int)pathlen ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (fchmod(fd, 0640) != 0) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    int saved = errno;
    if (left > 0 || fsync(fd) != 0) {
        if (left == 0)
            saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return file_sync(dir, 1);
}
