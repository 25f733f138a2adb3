/*
 * sender.c — delivers the outbox.
 *
 * One thread takes the items that are due, a study's files for one
 * destination together, and sends them over one association (dicom/). An
 * item the destination accepted (success or warning) is sent. A transient
 * failure (network error, timeout, busy peer, status 0xA7xx) schedules it
 * again after a wait that grows by the destination's factor up to its
 * maximum, with jitter so that many waiting items do not all come back at
 * once; after max_attempts it is dead-lettered. A permanent one (association
 * rejected permanently, no accepted presentation context, 0xA9xx, 0xCxxx)
 * is dead-lettered at once: trying again would be refused again. A
 * dead-lettered item waits, with its reason, for `ainode retry`.
 */
#include "service/sender.h"

#include "common/clock.h"
#include "common/crashpoint.h"
#include "common/error.h"
#include "common/log.h"
#include "common/wait.h"
#include "config/config.h"
#include "dicom/network.h"
#include "service/metrics.h"
#include "storage/storage.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 1000 /* due items are looked for at least this often */

struct sender {
    pthread_mutex_t cfg_lock;     /* guards CFG: swapped by a reload, referenced per round */
    struct config *cfg;
    struct storage *store;
    pthread_t thread;
    int started;
    struct waiter waiter;         /* wakes the thread; stops it */
    unsigned int seed;            /* rand_r() state for the jitter: this thread's alone */
};

/* The due items, copied out of the database. */
struct batch {
    struct storage_outbox_item *items;
    size_t n, cap;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int collect_due(void *ud, const struct storage_outbox_item *it)
{
    struct batch *b = ud;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 32;
        struct storage_outbox_item *v = realloc(b->items, cap * sizeof *v);
        if (!v)
            return 1;
        b->items = v;
        b->cap = cap;
    }
    struct storage_outbox_item *c = &b->items[b->n++];
    *c = *it;
    c->destination = dup_or_null(it->destination);
    c->study_uid = dup_or_null(it->study_uid);
    c->kind = dup_or_null(it->kind);
    c->path = dup_or_null(it->path);
    c->sop_class_uid = dup_or_null(it->sop_class_uid);
    c->sop_instance_uid = dup_or_null(it->sop_instance_uid);
    c->transfer_syntax = dup_or_null(it->transfer_syntax);
    c->state = NULL;
    c->error = NULL;
    return 0;
}

static void free_batch(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct storage_outbox_item *c = &b->items[i];
        free((char *)c->destination);
        free((char *)c->study_uid);
        free((char *)c->kind);
        free((char *)c->path);
        free((char *)c->sop_class_uid);
        free((char *)c->sop_instance_uid);
        free((char *)c->transfer_syntax);
    }
    free(b->items);
    memset(b, 0, sizeof *b);
}

/* When attempt number ATTEMPTS (counting the one that just failed) is to
 * be followed by another: NOW + backoff, or -1 when it was the last. */
int64_t sender_next_attempt(const struct config_destination *d, int attempts, int64_t now_ms,
                            double jitter)
{
    if (attempts >= d->max_attempts)
        return -1;
    double wait = d->retry_initial_seconds * pow(d->retry_factor, attempts - 1);
    if (wait > d->retry_max_seconds)
        wait = d->retry_max_seconds;
    /* JITTER in [0, 1): +-20 % */
    wait *= 0.8 + 0.4 * jitter;
    return now_ms + (int64_t)(wait * 1000.0);
}

/* The audit trail: one row per attempt to send IT to D (NULL when the
 * destination is gone from the configuration). */
static void audit(struct sender *s, const struct config_destination *d,
                  const struct storage_outbox_item *it, int64_t now, const char *outcome,
                  const char *why)
{
    char peer[CONFIG_AE_MAX + 300] = "";
    if (d)
        snprintf(peer, sizeof peer, "%s@%s:%d", d->ae_title, d->host, d->port);
    struct storage_audit_result r = {
        .time_ms = now,
        .kind = it->kind,
        .destination = it->destination,
        .peer = d ? peer : NULL,
        .sop_instance_uid = it->sop_instance_uid,
        .outcome = outcome,
        .error = why,
        .attempts = it->attempts + 1,
    };
    if (storage_audit_result(s->store, &r) != STORAGE_OK)
        log_event(LOG_ERROR, "audit.failed", LOG_IDS(.item = it->id, .dest = it->destination),
                  "cannot record the outbox item in the audit trail");
}

static void record_failure(struct sender *s, const struct config_destination *d,
                           const struct storage_outbox_item *it, enum dicom_send_outcome outcome,
                           const char *why)
{
    int64_t now = clock_now_ms();
    double jitter = d ? (double)rand_r(&s->seed) / ((double)RAND_MAX + 1.0) : 0;
    int64_t next = d && outcome == DICOM_SEND_TRANSIENT
                       ? sender_next_attempt(d, it->attempts + 1, now, jitter)
                       : -1;
    storage_outbox_record(s->store, it->id, now, 0, why, next);
    metrics_send_failed(it->destination, it->kind, now, why);
    audit(s, d, it, now, next >= 0                          ? "transient"
                         : outcome == DICOM_SEND_PERMANENT ? "permanent"
                                                           : "dead-lettered",
          why);
    if (next >= 0)
        log_event(LOG_WARN, "send.retry", LOG_IDS(.item = it->id, .dest = it->destination), "%s failed, next try in %lld s: %s", it->kind,
                  (long long)((next - now) / 1000), why);
    else if (outcome == DICOM_SEND_PERMANENT)
        log_event(LOG_ERROR, "send.dead_letter", LOG_IDS(.item = it->id, .dest = it->destination), "%s refused for good: %s", it->kind, why);
    else
        log_event(LOG_ERROR, "send.dead_letter", LOG_IDS(.item = it->id, .dest = it->destination), "%s failed for good after %d attempt%s: %s",
                  it->kind, it->attempts + 1, it->attempts ? "s" : "", why);
}

/* Sends ITEMS[0..n), all for one destination and study, under CFG. */
static void send_group(struct sender *s, const struct config *cfg,
                       struct storage_outbox_item *items, size_t n)
{
    const struct config_destination *d = config_find_destination(cfg, items[0].destination);
    if (!d) {
        for (size_t i = 0; i < n; i++)
            record_failure(s, NULL, &items[i], DICOM_SEND_PERMANENT,
                           "the destination is not in the configuration");
        return;
    }
    struct dicom_send_file *files = calloc(n, sizeof *files);
    if (!files)
        return; /* tried again on the next round */
    for (size_t i = 0; i < n; i++) {
        files[i].path = items[i].path;
        files[i].sop_class_uid = items[i].sop_class_uid;
        files[i].sop_instance_uid = items[i].sop_instance_uid;
        files[i].transfer_syntax = items[i].transfer_syntax;
    }
    struct dicom_send_peer peer = {
        .calling_ae = cfg->node.ae_title,
        .called_ae = d->ae_title,
        .host = d->host,
        .port = d->port,
        .timeout_seconds = cfg->node.network_timeout_seconds,
    };
    struct dicom_tls_config tls = {
        .certificate = d->tls.certificate,
        .private_key = d->tls.private_key,
        .ca_certificates = d->tls.ca_certificates,
        .verify = d->tls.verify_server ? DICOM_TLS_VERIFY_REQUIRED : DICOM_TLS_VERIFY_OFF,
    };
    if (d->tls.enabled)
        peer.tls = &tls;
    /* The results (seg, sr) and forwarded instances have points of their own. */
    int forward = !strcmp(items[0].kind, "forward");
    CRASH_POINT(forward ? "forward.before_association" : "send.before_association");
    /* Each file carries its outcome, the association's when it failed. */
    char err[512] = "";
    dicom_send(&peer, files, n, err, sizeof err);
    /* The destination has them, the outbox says pending: sent again. */
    CRASH_POINT(forward ? "forward.sent" : "send.accepted");
    int sent = 0, warned = 0;
    uint16_t first_warning = 0;
    for (size_t i = 0; i < n; i++) {
        if (files[i].outcome == DICOM_SEND_SENT) {
            int64_t now = clock_now_ms();
            storage_outbox_record(s->store, items[i].id, now, 1, NULL, 0);
            metrics_send_succeeded(items[i].destination, items[i].kind, now);
            /* A warning (e.g. B000: the peer coerced attributes) is kept
             * with the audit row: the peer has the instance, maybe changed. */
            char warning[80] = "";
            if (files[i].status != 0x0000) {
                snprintf(warning, sizeof warning, "kept with warning status 0x%04x",
                         files[i].status);
                if (!warned++)
                    first_warning = files[i].status;
            }
            audit(s, d, &items[i], now, "sent", warning[0] ? warning : NULL);
            CRASH_POINT(forward ? "forward.marked" : "send.marked");
            sent++;
        } else {
            record_failure(s, d, &items[i], files[i].outcome, files[i].error);
        }
    }
    if (sent)
        log_event(LOG_INFO, "send.done", LOG_IDS(.dest = d->name), "sent %d result%s to %s", sent,
                  sent == 1 ? "" : "s", d->name);
    /* One line for the association: a PACS that coerces answers B000 to
     * every instance of a study. Each item's status is in its audit row. */
    if (warned)
        log_event(LOG_WARN, "send.warning", LOG_IDS(.dest = d->name),
                  "%s answered %d of the %d sent with a warning status (the first 0x%04x): "
                  "kept, but attributes may have been changed or dropped; ainode audit shows "
                  "each",
                  d->name, warned, sent, first_warning);
    free(files);
}

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    uint64_t seen = 0;
    while (!waiter_stopping(&s->waiter)) {
        /* One round under one configuration: a reload meanwhile applies
         * from the next round on. */
        pthread_mutex_lock(&s->cfg_lock);
        struct config *cfg = config_ref(s->cfg);
        pthread_mutex_unlock(&s->cfg_lock);
        struct batch b = {0};
        if (storage_outbox_due(s->store, clock_now_ms(), collect_due, &b) != STORAGE_OK)
            log_event(LOG_ERROR, "store.read_failed", NULL, "cannot read the outbox");
        size_t start = 0;
        for (size_t i = 1; i <= b.n && !waiter_stopping(&s->waiter); i++) {
            if (i < b.n && !strcmp(b.items[i].destination, b.items[start].destination) &&
                !strcmp(b.items[i].study_uid, b.items[start].study_uid))
                continue;
            send_group(s, cfg, b.items + start, i - start);
            start = i;
        }
        free_batch(&b);
        config_unref(cfg);
        waiter_wait(&s->waiter, &seen, POLL_MS);
    }
    return NULL;
}

int sender_start(struct config *cfg, struct storage *st, struct sender **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    struct sender *s = calloc(1, sizeof *s);
    if (!s)
        return error_set(err, errlen, -1, "out of memory");
    if (waiter_init(&s->waiter) != 0) {
        free(s);
        return error_set(err, errlen, -1, "cannot make the sender's waiter");
    }
    pthread_mutex_init(&s->cfg_lock, NULL);
    s->cfg = config_ref(cfg);
    s->store = st;
    s->seed = (unsigned int)clock_now_ms();
    if (pthread_create(&s->thread, NULL, sender_main, s) != 0) {
        sender_stop(s);
        return error_set(err, errlen, -1, "cannot start the sender thread");
    }
    s->started = 1;
    *out = s;
    return 0;
}

void sender_set_config(struct sender *s, struct config *cfg)
{
    pthread_mutex_lock(&s->cfg_lock);
    struct config *old = s->cfg;
    s->cfg = config_ref(cfg);
    pthread_mutex_unlock(&s->cfg_lock);
    config_unref(old);
    sender_wake(s);
}

void sender_wake(struct sender *s)
{
    waiter_wake(&s->waiter);
}

void sender_stop(struct sender *s)
{
    if (!s)
        return;
    waiter_stop(&s->waiter);
    if (s->started)
        pthread_join(s->thread, NULL);
    waiter_destroy(&s->waiter);
    pthread_mutex_destroy(&s->cfg_lock);
    config_unref(s->cfg);
    free(s);
}
