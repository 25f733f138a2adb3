/*
 * wait — the one way a thread of the node waits for work: sleep until
 * woken or a timeout passes, and be told to stop.
 *
 * A struct waiter is shared by the threads that wait on it (the model
 * workers, the sender) and those that wake them. Each waiting thread keeps
 * its own cursor (a uint64_t, 0 at first): waiter_wait() returns at once
 * when a wake came since the cursor was last updated, so a wake that
 * arrives while the thread is busy is not lost, and every thread sharing
 * the waiter sees it. Many wakes before one wait count as one.
 *
 *     uint64_t seen = 0;
 *     while (!waiter_stopping(&w)) {
 *         do_the_work();
 *         if (waiter_wait(&w, &seen, 1000))
 *             break;
 *     }
 *
 * The struct is public so the owner can embed it; its members are not.
 */
#ifndef AINODE_COMMON_WAIT_H
#define AINODE_COMMON_WAIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;       /* on CLOCK_MONOTONIC: a clock step is no timeout */
    uint64_t wakeups;          /* under LOCK */
    atomic_int stopping;       /* read without LOCK by busy loops */
};

/* 0, or -1 when the mutex or the condition variable cannot be made. */
int waiter_init(struct waiter *w);

/* Wakes every thread waiting on W now, and makes the next waiter_wait()
 * of every other thread return at once. */
void waiter_wake(struct waiter *w);

/* Sleeps until a wake newer than *SEEN, a stop, or TIMEOUT_MS
 * milliseconds (negative: no timeout), whichever comes first, and updates
 * *SEEN. Returns 1 when W is stopping, else 0 (woken or timed out). */
int waiter_wait(struct waiter *w, uint64_t *seen, int64_t timeout_ms);

/* Wakes every waiting thread; from now on waiter_wait() returns 1 at once. */
void waiter_stop(struct waiter *w);

/* 1 once waiter_stop() has been called, else 0. */
int waiter_stopping(struct waiter *w);

/* Frees what waiter_init() made; no thread may be waiting. */
void waiter_destroy(struct waiter *w);

#endif
