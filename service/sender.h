/*
 * sender — delivers the outbox: one thread takes the items that are due,
 * a study's files for one destination together over one association
 * (dicom/network.h), and records each outcome in the store. A transient
 * failure is tried again after a growing wait; a permanent one, or the last
 * allowed attempt, dead-letters the item with its reason until `ainode
 * retry`. The thread waits on a struct waiter (common/wait.h) and takes a
 * reference to the configuration in force for each round.
 */
#ifndef AINODE_SERVICE_SENDER_H
#define AINODE_SERVICE_SENDER_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct config_destination;
struct sender;
struct storage;

/* Starts the thread that delivers the outbox of ST under CFG (the sender
 * takes a reference to CFG). 0 with *OUT set, or -1 with the reason in ERR. */
int sender_start(struct config *cfg, struct storage *st, struct sender **out, char *err,
                 size_t errlen);

/* Items were queued: deliver now rather than at the next poll. */
void sender_wake(struct sender *s);

/* A reloaded configuration (the sender takes a reference to CFG and drops
 * the old one): used from the next round on. */
void sender_set_config(struct sender *s, struct config *cfg);

/* Stops the thread after the send in progress, drops the configuration
 * and frees S. NULL is accepted. */
void sender_stop(struct sender *s);

/* The next attempt after ATTEMPTS failed ones of an item for D, as of
 * NOW_MS, with JITTER in [0, 1); -1 when there is to be none. */
int64_t sender_next_attempt(const struct config_destination *d, int attempts, int64_t now_ms,
                            double jitter);

#endif
