/*
 * nodelock — one node per data directory.
 *
 * A serving node holds DATA_DIR/ainode.lock with an exclusive flock(2) for
 * its whole life; the file also names its PID, for `ainode reload`. The
 * kernel drops the lock when the process ends, however it ends, so a lock
 * that is not held means that no node serves the directory, whatever PID
 * the file still names. A second node on the same directory is refused
 * before it touches the store (its start-up repair would rewrite files the
 * first one is writing).
 */
#ifndef AINODE_SERVICE_NODELOCK_H
#define AINODE_SERVICE_NODELOCK_H

#include <stddef.h>
#include <sys/types.h>

#define NODELOCK_FILE "ainode.lock"

enum {
    NODELOCK_OK = 0,
    NODELOCK_EBUSY = -1,  /* another node holds the lock */
    NODELOCK_ENONE = -2,  /* no node holds it */
    NODELOCK_ESTALE = -3, /* held, but not by the process the file names */
    NODELOCK_EIO = -4,    /* the directory or the file cannot be used */
};

struct nodelock;

/* Takes the lock of DATA_DIR (created, mode 0750, when missing) and writes
 * this process's PID into it. 0 with *OUT set (the caller owns it, freed by
 * nodelock_release), or NODELOCK_EBUSY / NODELOCK_EIO with the reason in
 * ERR. The descriptor is close-on-exec: no program the node starts could
 * keep the lock after it. */
int nodelock_acquire(const char *data_dir, struct nodelock **out, char *err, size_t errlen);

/* Drops the lock and frees L (NULL is accepted). The file stays: removing
 * it could let two nodes hold locks on two different files of one name. */
void nodelock_release(struct nodelock *l);

/* The PID of the node serving DATA_DIR: 0 with *PID set only when the lock
 * is held and the process the file names has that very file open.
 * Otherwise NODELOCK_ENONE (no node serves it), NODELOCK_ESTALE (the lock
 * is held but the file names another process, or one that cannot be
 * checked) or NODELOCK_EIO, with the reason in ERR. Takes the lock shared
 * for an instant when nobody holds it (nodelock_acquire waits that out). */
int nodelock_holder(const char *data_dir, pid_t *pid, char *err, size_t errlen);

#endif
