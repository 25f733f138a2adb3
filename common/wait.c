#include "common/wait.h"

#include <errno.h>
#include <time.h>

int waiter_init(struct waiter *w)
{
    w->wakeups = 0;
    atomic_init(&w->stopping, 0);
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        return -1;
    pthread_condattr_t attr;
    int ok = pthread_condattr_init(&attr) == 0;
    if (ok) {
        ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&w->cond, &attr) == 0;
        pthread_condattr_destroy(&attr);
    }
    if (!ok) {
        pthread_mutex_destroy(&w->lock);
        return -1;
    }
    return 0;
}

void waiter_wake(struct waiter *w)
{
    pthread_mutex_lock(&w->lock);
    w->wakeups++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int waiter_wait(struct waiter *w, uint64_t *seen, int64_t timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t)(timeout_ms / 1000);
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&w->lock);
    /* Loop: a spurious wake-up of the condition variable is not a wake. */
    while (w->wakeups == *seen && !atomic_load(&w->stopping)) {
        int rc = timeout_ms >= 0 ? pthread_cond_timedwait(&w->cond, &w->lock, &deadline)
                                 : pthread_cond_wait(&w->cond, &w->lock);
        if (rc == ETIMEDOUT)
            break;
    }
    *seen = w->wakeups;
    pthread_mutex_unlock(&w->lock);
    return atomic_load(&w->stopping) ? 1 : 0;
}

void waiter_stop(struct waiter *w)
{
    /* Set under the lock: a thread between its check and its sleep
     * cannot miss it. */
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->stopping, 1);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int waiter_stopping(struct waiter *w)
{
    return atomic_load(&w->stopping);
}

void waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}
