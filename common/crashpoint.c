/*
 * crashpoint.c — see crashpoint.h. Compiled into every build but linked
 * only by code built with AINODE_CRASH_POINTS: the shipped binary never
 * references it.
 */
#define AINODE_CRASH_POINTS
#include "common/crashpoint.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* AINODE_CRASH_AT, read once: the variable is set before the process
 * starts, and getenv() racing a setenv() elsewhere is undefined. */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char target[128];          /* "" when no point is armed */
static long target_nth = 1;       /* the pass that kills, from 1 */
static atomic_long passes;        /* passes of the armed point so far */

static void read_target(void)
{
    const char *v = getenv("AINODE_CRASH_AT");
    if (!v || !*v || strlen(v) >= sizeof target)
        return;
    snprintf(target, sizeof target, "%s", v);
    char *colon = strchr(target, ':');
    if (colon) {
        *colon = '\0';
        char *end;
        long n = strtol(colon + 1, &end, 10);
        target_nth = *end == '\0' && n > 0 ? n : 1;
    }
}

void crashpoint_hit(const char *name)
{
    pthread_once(&once, read_target);
    if (!target[0] || strcmp(name, target) != 0)
        return;
    if (atomic_fetch_add(&passes, 1) + 1 != target_nth)
        return;
    /* One line for the test to see which point killed the node; write(2),
     * not stdio, whose lock another thread may hold. */
    char line[192];
    int n = snprintf(line, sizeof line, "crash point %s reached: kill -9\n", name);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line);
        (void)w;
    }
    kill(getpid(), SIGKILL);
    for (;;)
        pause(); /* never returns: the signal cannot be caught */
}
