/*
 * node.c — the running node.
 *
 * Threads: libuv's loop thread coordinates (signals, the completion timer,
 * reload, the wake-up when the DICOM server ends); the DICOM server accepts
 * on a thread of its own and negotiates and receives on per-association
 * threads; the runner's workers and the sender block on models and peers
 * on theirs; retention, which deletes files and may take seconds, runs on
 * libuv's work queue. libuv stays because one loop thread that owns the
 * timers and signals needs no locks for them and sees every event in order;
 * whatever may block runs on a thread so that the loop never waits on it.
 *
 * Where an instance goes: dicom/ accepts the association and streams the
 * data set into a file under DATA_DIR/tmp (on_temp_path), then on_stored()
 * hands it to storage_commit(), which makes it durable and indexed; only
 * then is the C-STORE answered with success. Below node.min_free_disk_mb a
 * C-STORE is refused before its data set is read (on_store_begin), and the
 * studies of that association are held back from completion (struct
 * holds, storage_study_hold). Who may connect is decided at accept time by
 * address (on_admit) and at negotiation by AE title (on_associate). A
 * timer completes the studies that are due (idle for stable_seconds, past
 * max_wait_seconds, or with their required series): it reads each one's
 * series rows, plans it with the rules outside any store lock and commits
 * the plan, which the store refuses when an instance arrived meanwhile (the
 * study is then planned again later). Another timer starts retention on the
 * work queue, one run at a time; the stop waits for a run in progress.
 */
#include "service/node.h"

#include "common/attr.h"
#include "common/clock.h"
#include "common/crashpoint.h"
#include "common/log.h"
#include "common/plan.h"
#include "config/config.h"
#include "dicom/image.h"
#include "dicom/network.h"
#include "rules/rules.h"
#include "service/cli.h"
#include "service/nodelock.h"
#include "service/notify.h"
#include "service/pipeline.h"
#include "service/runner.h"
#include "service/sender.h"
#include "service/http.h"
#include "service/metrics.h"
#include "storage/storage.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define RETENTION_EVERY_MS 60000
#define STATUS_EVERY_MS 5000      /* STATUS= lines to the service manager */

/*
 * Studies held back from completion. A C-STORE refused for lack of disk
 * space is refused before its data set is read, so its study is unknown;
 * what is known is the association. A study that received instances on an
 * association where one was refused is probably missing some, and is held:
 * the completion timer leaves it receiving (except at max_wait_seconds)
 * until a later association that has none refused delivers instances of it
 * again, i.e. the sender has sent it again. The hold itself is the store's
 * (storage_study_hold), so that it outlives a restart and status shows it;
 * only the running associations are tracked here.
 *
 * The log names studies by their row id ("study #12", as status shows
 * it), never by UID: see docs/architecture.md, "Logs".
 */
struct assoc_track {
    uint64_t id;                  /* dicom_peer.association_id */
    int refused;                  /* instances refused for lack of space */
    char (*studies)[65];          /* studies it stored instances of */
    size_t n, cap;
    struct assoc_track *next;
};

struct holds {
    pthread_mutex_t lock;
    struct assoc_track *assocs;   /* running associations that stored or were refused */
};

struct node {
    /* The configuration in force, one reference: replaced whole by a
     * reload, which drops the old one (the runner and the sender hold
     * references of their own for what they use). The loop thread is the
     * only writer and reads it freely; other threads read it under
     * CFG_LOCK. */
    struct config *cfg;
    pthread_mutex_t cfg_lock;
    struct storage *store;
    struct dicom_server *dicom;
    struct runner *runner;
    struct sender *sender;
    struct http_server *http;     /* node.http, or NULL */
    atomic_int accepting;         /* the DICOM listener runs and no stop began (readyz) */
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t completion;
    uv_timer_t retention;
    uv_timer_t watchdog;          /* WATCHDOG=1 from the loop: a stuck loop stops it */
    uv_timer_t status;            /* STATUS= lines, under a service manager only */
    uv_async_t dicom_done;
    pthread_t dicom_thread;       /* threads are pthreads everywhere; libuv only coordinates */
    /* Retention on the work queue: one run at a time; a request while one
     * runs makes it run again once done. */
    uv_work_t retain_work;
    int retain_running, retain_again;
    int retain_days, retain_high_water, retain_deleted;
    int retain_audit_days;        /* node.audit_retention_days, 0: kept for ever */
    char retain_err[512];
    int loop_done;                /* uv_run returned: retention runs inline */
    struct holds holds;
    int64_t space_log_ms;         /* last "refusing: disk space" line (rate limit) */
    int64_t started_ms;           /* silence before it is not a sender's (complete_due) */
    int waiting;                  /* studies receiving after the last completion run */
    int stopping;
    int exit_code;
};

static enum dicom_assoc_decision on_associate(void *ud, const struct dicom_peer *p)
{
    struct node *n = ud;
    enum dicom_assoc_decision d = DICOM_ASSOC_ACCEPT;
    pthread_mutex_lock(&n->cfg_lock);
    if (strcmp(p->called_ae, n->cfg->node.ae_title) != 0)
        d = DICOM_ASSOC_REJECT_CALLED_AE;
    else if (!config_caller_allowed(n->cfg, p->calling_ae))
        d = DICOM_ASSOC_REJECT_CALLING_AE;
    /* Any client can claim any AE title; over TLS the title may be tied to
     * the certificate the CA vouched for. */
    else if (p->tls && n->cfg->node.tls.callers_match_certificate &&
             (!p->tls_common_name || strcmp(p->tls_common_name, p->calling_ae) != 0))
        d = DICOM_ASSOC_REJECT_CALLING_AE;
    pthread_mutex_unlock(&n->cfg_lock);
    return d;
}

/* At accept time, before a thread or a byte of DICOM is spent on the
 * connection: node.allowed_addresses (reloadable, hence under the lock). */
static int on_admit(void *ud, const char *address)
{
    struct node *n = ud;
    pthread_mutex_lock(&n->cfg_lock);
    int ok = config_address_allowed(n->cfg, address);
    pthread_mutex_unlock(&n->cfg_lock);
    if (!ok)
        metrics_association_rejected(METRICS_REJECT_ADDRESS);
    return ok;
}

/* The record of association ID, created when CREATE; NULL when absent or
 * out of memory. Called with the holds locked. */
static struct assoc_track *track_of(struct holds *h, uint64_t id, int create)
{
    for (struct assoc_track *t = h->assocs; t; t = t->next)
        if (t->id == id)
            return t;
    if (!create)
        return NULL;
    struct assoc_track *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->id = id;
    t->next = h->assocs;
    h->assocs = t;
    return t;
}

static int uid_index(char (*list)[65], size_t n, const char *uid)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], uid))
            return (int)i;
    return -1;
}

/* Adds UID to *LIST (N, CAP) unless there; 0, or -1 out of memory. */
static int uid_add(char (**list)[65], size_t *n, size_t *cap, const char *uid)
{
    if (uid_index(*list, *n, uid) >= 0)
        return 0;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        char(*l)[65] = realloc(*list, c * sizeof *l);
        if (!l)
            return -1;
        *list = l;
        *cap = c;
    }
    snprintf((*list)[(*n)++], 65, "%s", uid);
    return 0;
}

/* Holds STUDY back from completion, in the store. */
static void hold_study(struct node *n, const char *study)
{
    int64_t id = 0;
    int newly = 0;
    int rc = storage_study_hold(n->store, study, STORAGE_HOLD_REFUSED, &id, &newly);
    if (rc == STORAGE_ENOTFOUND)
        return; /* deleted by retention meanwhile: nothing left to hold */
    if (rc != STORAGE_OK) {
        log_event(LOG_ERROR, "study.hold_failed", NULL,
                  "cannot hold a study back from completion: %s", storage_strerror(rc));
        return;
    }
    if (!newly)
        return;
    log_event(LOG_WARN, "study.held", LOG_IDS(.study = id),
              "held back from completion: instances sent with it were refused for lack of "
              "disk space; it completes once they arrive again on an association with none "
              "refused (or at completion.max_wait_seconds)");
    log_event(LOG_DEBUG, "study.uid", LOG_IDS(.study = id), "%s", study);
}

/* node.min_free_disk_mb: checked for each C-STORE before its data set is
 * read, so that a full disk costs the sender an answer, not a half-written
 * file. */
static uint16_t on_store_begin(void *ud, const struct dicom_peer *p, char *comment, size_t len)
{
    struct node *n = ud;
    struct statvfs vfs;
    pthread_mutex_lock(&n->cfg_lock);
    int64_t floor_mb = n->cfg->node.min_free_disk_mb;
    int known = floor_mb && statvfs(n->cfg->node.data_dir, &vfs) == 0;
    pthread_mutex_unlock(&n->cfg_lock);
    if (!known)
        return DICOM_STATUS_SUCCESS; /* off, or unknown: the write itself will tell */
    uint64_t free_mb = ((uint64_t)vfs.f_bavail * vfs.f_frsize) >> 20;
    if (free_mb >= (uint64_t)floor_mb)
        return DICOM_STATUS_SUCCESS;
    struct holds *h = &n->holds;
    pthread_mutex_lock(&h->lock);
    struct assoc_track *t = track_of(h, p->association_id, 1);
    if (t && !t->refused) {
        t->refused = 1;
        for (size_t i = 0; i < t->n; i++)
            hold_study(n, t->studies[i]);
    }
    int64_t now = clock_now_ms();
    int say = now - n->space_log_ms >= 10000;
    if (say)
        n->space_log_ms = now;
    pthread_mutex_unlock(&h->lock);
    if (say) /* one line per 10 s, however many are refused */
        log_event(LOG_WARN, "instance.refused_disk", LOG_IDS(.peer = p->calling_ae),
                  "refusing instances from %s: %llu MiB free for the data, below "
                  "node.min_free_disk_mb (%lld MiB)",
                  p->calling_ae, (unsigned long long)free_mb, (long long)floor_mb);
    metrics_instance_refused();
    snprintf(comment, len, "not enough free disk space");
    return DICOM_STATUS_OUT_OF_RESOURCES;
}

/* Records that association P stored an instance of STUDY. */
static void track_stored(struct node *n, const struct dicom_peer *p, const char *study)
{
    if (!study || !*study)
        return;
    struct holds *h = &n->holds;
    pthread_mutex_lock(&h->lock);
    struct assoc_track *t = track_of(h, p->association_id, 1);
    if (!t || uid_add(&t->studies, &t->n, &t->cap, study) != 0)
        log_msg(LOG_ERROR, "out of memory tracking an association's studies");
    else if (t->refused)
        hold_study(n, study);
    pthread_mutex_unlock(&h->lock);
}

/* An association ended: with none refused, the studies it delivered are
 * whole again (the sender sent them again) and no longer held. */
static void on_association_end(void *ud, const struct dicom_peer *p)
{
    struct node *n = ud;
    struct holds *h = &n->holds;
    pthread_mutex_lock(&h->lock);
    struct assoc_track **pp = &h->assocs;
    while (*pp && (*pp)->id != p->association_id)
        pp = &(*pp)->next;
    struct assoc_track *t = *pp;
    if (t)
        *pp = t->next;
    pthread_mutex_unlock(&h->lock);
    if (!t)
        return;
    for (size_t i = 0; !t->refused && i < t->n; i++) {
        int64_t id = 0;
        int was = 0;
        int rc = storage_study_release(n->store, t->studies[i], &id, &was);
        if (rc != STORAGE_OK)
            log_event(LOG_ERROR, "study.release_failed", LOG_IDS(.study = id),
                      "cannot end the hold of the study: %s", storage_strerror(rc));
        else if (was)
            log_event(LOG_INFO, "study.released", LOG_IDS(.study = id),
                      "held back for refused instances, sent again: it completes as usual");
    }
    free(t->studies);
    free(t);
}

/* The audit trail: every association request, accepted or not, with what
 * became of it. A failure to record it is logged and changes nothing else. */
static void on_association_ended(void *ud, const struct dicom_association_report *r)
{
    struct node *n = ud;
    struct storage_audit_association a = {
        .started_ms = r->started_ms,
        .ended_ms = r->ended_ms,
        .calling_ae = r->calling_ae,
        .called_ae = r->called_ae,
        .address = r->address,
        .tls_peer = r->tls_peer,
        .stored = (int)r->stored,
        .refused = (int)r->refused,
        .outcome = r->outcome,
    };
    if (storage_audit_association(n->store, &a) != STORAGE_OK)
        log_event(LOG_ERROR, "audit.failed", LOG_IDS(.peer = r->calling_ae, .addr = r->address),
                  "cannot record an association from %s in the audit trail", r->address);
    static const enum metrics_rejection why[] = {
        [DICOM_REJECTION_MAX_ASSOCIATIONS] = METRICS_REJECT_MAX_ASSOCIATIONS,
        [DICOM_REJECTION_MAX_PER_CALLER] = METRICS_REJECT_MAX_PER_CALLER,
        [DICOM_REJECTION_CALLING_AE] = METRICS_REJECT_CALLING_AE,
        [DICOM_REJECTION_CALLED_AE] = METRICS_REJECT_CALLED_AE,
        [DICOM_REJECTION_BUSY] = METRICS_REJECT_BUSY,
        [DICOM_REJECTION_TLS] = METRICS_REJECT_TLS,
        [DICOM_REJECTION_UNREADABLE] = METRICS_REJECT_UNREADABLE,
    };
    if (r->rejection == DICOM_REJECTION_NONE)
        metrics_association_accepted();
    else if ((size_t)r->rejection < sizeof why / sizeof why[0])
        metrics_association_rejected(why[r->rejection]);
}

static void holds_free(struct holds *h)
{
    while (h->assocs) {
        struct assoc_track *t = h->assocs;
        h->assocs = t->next;
        free(t->studies);
        free(t);
    }
}

static int on_temp_path(void *ud, char *buf, size_t len)
{
    struct node *n = ud;
    return storage_temp_path(n->store, buf, len);
}

static uint16_t on_stored(void *ud, const struct dicom_received *r, char *err, size_t errlen)
{
    struct node *n = ud;
    struct storage_instance inst;
    memset(&inst, 0, sizeof inst);
    for (int i = 0; i < ATTR_COUNT; i++)
        inst.attr[i] = r->values[i];
    inst.transfer_syntax = r->transfer_syntax;
    inst.calling_ae = r->peer->calling_ae;
    inst.called_ae = r->peer->called_ae;
    inst.source_addr = r->peer->address;
    inst.received_ms = clock_now_ms();
    struct stat sb; /* its size, before the commit moves it */
    uint64_t bytes = stat(r->temp_path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    int rc = storage_commit(n->store, r->temp_path, &inst, err, errlen);
    if (rc == STORAGE_OK) {
        metrics_instance_received(bytes);
        log_event(LOG_DEBUG, "instance.stored", LOG_IDS(.peer = r->peer->calling_ae), "stored %s",
                  r->sop_instance_uid);
        track_stored(n, r->peer, r->values[ATTR_STUDY_INSTANCE_UID]);
        CRASH_POINT("ingest.acknowledging"); /* the sender will send it again */
        return DICOM_STATUS_SUCCESS;
    }
    /* An instance contradicting the store is the sender's to correct, not
     * to retry: a failure (Cxxx), not "out of resources" (A7xx). */
    int refused = rc == STORAGE_EINVAL || rc == STORAGE_EINTEGRITY;
    metrics_instance_refused();
    log_event(refused ? LOG_WARN : LOG_ERROR, "instance.refused",
              LOG_IDS(.peer = r->peer->calling_ae, .addr = r->peer->address),
              "refused an instance from %s: %s", r->peer->calling_ae, err);
    return refused ? DICOM_STATUS_CANNOT_UNDERSTAND : DICOM_STATUS_OUT_OF_RESOURCES;
}

/* The keywords of the indexed attributes (attr.def's order), then the
 * calling AE kept in the meta header: what the receiver and the repair
 * read from a file. */
static const char *read_keywords[ATTR_COUNT + 1];

static void init_read_keywords(void)
{
    for (int i = 0; i < ATTR_COUNT; i++)
        read_keywords[i] = attr_table[i].keyword;
    read_keywords[ATTR_COUNT] = "SourceApplicationEntityTitle";
}

/* The storage repair reads instance files through the DICOM shim. */
static int read_for_repair(void *ud, const char *path, char **values, char **ts,
                           char **calling_ae)
{
    (void)ud;
    char *got[ATTR_COUNT + 1];
    char err[256];
    if (dicom_read_values(path, read_keywords, ATTR_COUNT + 1, got, ts, err, sizeof err) != 0) {
        /* ERR starts with the path, which names the instance's UIDs. */
        log_event(LOG_WARN, "repair.removed", NULL,
                  "a file under instances/ is not a complete instance; it is removed");
        log_event(LOG_DEBUG, "repair.removed", NULL, "%s", err);
        return -1;
    }
    memcpy(values, got, ATTR_COUNT * sizeof *values);
    *calling_ae = got[ATTR_COUNT];
    return 0;
}

static void on_dicom_log(void *ud, int level, const char *event, const char *peer,
                         const char *addr, const char *msg)
{
    (void)ud;
    log_line((enum log_level)level, event, LOG_IDS(.peer = peer, .addr = addr), msg);
}

/* Deletes what the retention settings say may go (never a study with
 * unfinished jobs or sends): every minute, and when studies complete. The
 * deletion runs on libuv's work queue (retain_run), off the loop thread,
 * so that completion ticks and the stop never wait for it. */
static void retain_run(uv_work_t *req)
{
    struct node *n = req->data;
    n->retain_deleted = 0;
    n->retain_err[0] = '\0';
    int64_t now = clock_now_ms();
    /* The audit trail has its own retention, whatever the studies'. */
    int audit_deleted = 0;
    if (n->retain_audit_days &&
        storage_audit_retain(n->store, now - (int64_t)n->retain_audit_days * 86400 * 1000,
                             &audit_deleted) != STORAGE_OK)
        log_event(LOG_ERROR, "retention.failed", NULL,
                  "retention: cannot delete old rows of the audit trail");
    if (audit_deleted)
        log_event(LOG_INFO, "retention.audit", NULL,
                  "retention: %d audit row%s older than %d days deleted", audit_deleted,
                  audit_deleted == 1 ? "" : "s", n->retain_audit_days);
    if ((n->retain_days || n->retain_high_water) &&
        storage_retain(n->store, now, n->retain_days, n->retain_high_water,
                       &n->retain_deleted, n->retain_err, sizeof n->retain_err) != STORAGE_OK)
        log_event(LOG_ERROR, "retention.failed", NULL, "retention: %s", n->retain_err);
    if (n->retain_deleted)
        log_event(LOG_INFO, "retention.studies", NULL, "retention: %d stud%s deleted",
                  n->retain_deleted, n->retain_deleted == 1 ? "y" : "ies");
}

static void retain(struct node *n);

static void retain_done(uv_work_t *req, int status)
{
    struct node *n = req->data;
    (void)status;
    n->retain_running = 0;
    if (n->retain_again && !n->stopping) {
        n->retain_again = 0;
        retain(n);
    }
}

static void retain(struct node *n)
{
    const struct config *cfg = n->cfg;
    if (!cfg->node.retention_days && !cfg->node.disk_high_water_percent &&
        !cfg->node.audit_retention_days)
        return;
    if (n->retain_running) {
        n->retain_again = 1;
        return;
    }
    n->retain_days = cfg->node.retention_days;
    n->retain_high_water = cfg->node.disk_high_water_percent;
    n->retain_audit_days = cfg->node.audit_retention_days;
    n->retain_work.data = n;
    if (n->loop_done) {
        retain_run(&n->retain_work); /* the last completion at the stop */
        return;
    }
    if (uv_queue_work(n->loop, &n->retain_work, retain_run, retain_done) == 0)
        n->retain_running = 1;
    else
        log_msg(LOG_ERROR, "retention: cannot queue the work");
}

static void on_retention_timer(uv_timer_t *t)
{
    retain(t->data);
}

/* The receiving studies, copied out for the completion checks. */
struct receiving {
    char (*uid)[65];
    int64_t *first_ms, *last_ms;
    int64_t *id;                  /* row ids, for the log */
    int *held;
    size_t n, cap;
};

static int collect_receiving(void *ud, const struct storage_receiving *s)
{
    struct receiving *r = ud;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        char(*u)[65] = realloc(r->uid, cap * sizeof *u);
        if (!u)
            return 1;
        r->uid = u;
        int64_t *f = realloc(r->first_ms, cap * sizeof *f);
        if (!f)
            return 1;
        r->first_ms = f;
        int64_t *l = realloc(r->last_ms, cap * sizeof *l);
        if (!l)
            return 1;
        r->last_ms = l;
        int64_t *id = realloc(r->id, cap * sizeof *id);
        if (!id)
            return 1;
        r->id = id;
        int *h = realloc(r->held, cap * sizeof *h);
        if (!h)
            return 1;
        r->held = h;
        r->cap = cap;
    }
    snprintf(r->uid[r->n], sizeof r->uid[r->n], "%s", s->study_uid);
    r->first_ms[r->n] = s->first_received_ms;
    r->id[r->n] = s->id;
    r->held[r->n] = s->held;
    r->last_ms[r->n++] = s->last_received_ms;
    return 0;
}

/* Why a receiving study is due now, if it is. */
enum due { DUE_NOT, DUE_STABLE, DUE_MAX_WAIT, DUE_REQUIRED };

/* Says which jobs of study ID's committed PLAN were recorded as not
 * applicable, and why (status and explain say it too). */
static void log_not_applicable(int64_t id, const struct plan *plan)
{
    for (size_t j = 0; j < plan->n_jobs; j++)
        if (plan->jobs[j].not_applicable)
            log_event(LOG_INFO, "job.not_applicable",
                      LOG_IDS(.study = id, .model = plan->jobs[j].model),
                      "a series is not applicable to the model (%s): recorded, not run",
                      plan->jobs[j].not_applicable);
}

/* Plans study I of R from its series rows and commits the plan, outside
 * any store lock while planning. Returns 1 when it completed, 0 when it
 * changed meanwhile (it is planned again once due again) or failed. */
static int complete_study(struct node *n, const struct config *cfg, const struct receiving *r,
                          size_t i, enum due due, struct attr_series *rows, size_t n_rows,
                          int64_t now, int *queued)
{
    const struct config_completion *cc = &cfg->completion;
    int discard = due == DUE_MAX_WAIT && cc->on_max_wait == CONFIG_ON_MAX_WAIT_DISCARD;
    struct plan plan = {0};
    int jobs = 0;
    if (!discard && rules_plan(cfg, rows, n_rows, &plan) != 0) {
        log_event(LOG_ERROR, "study.plan_failed", LOG_IDS(.study = r->id[i]),
                  "out of memory planning the study");
        plan_free(&plan);
        return 0;
    }
    int rc = storage_commit_plan(n->store, r->uid[i], r->last_ms[i], &plan, discard, now, &jobs);
    if (rc == STORAGE_OK)
        log_not_applicable(r->id[i], &plan);
    plan_free(&plan);
    if (rc == STORAGE_ECONFLICT) {
        log_event(LOG_DEBUG, "study.replan", LOG_IDS(.study = r->id[i]),
                  "%s received more while it was planned", r->uid[i]);
        return 0;
    }
    if (rc != STORAGE_OK) {
        log_event(LOG_ERROR, "study.complete_failed", LOG_IDS(.study = r->id[i]),
                  "cannot complete the study: %s", storage_strerror(rc));
        return 0;
    }
    *queued += jobs;
    const struct log_ids *ids = LOG_IDS(.study = r->id[i]);
    if (discard)
        log_event(LOG_WARN, "study.discarded", ids,
                  "still receiving after max_wait_seconds (%d s): discarded",
                  cc->max_wait_seconds);
    else if (due == DUE_MAX_WAIT)
        log_event(LOG_WARN, "study.complete", ids,
                  "still receiving after max_wait_seconds (%d s): processed with what it "
                  "has%s, %d job%s or forward%s queued",
                  cc->max_wait_seconds,
                  r->held[i] ? " (instances were refused: status marks it)" : "", jobs,
                  jobs == 1 ? "" : "s", jobs == 1 ? "" : "s");
    else
        log_event(LOG_INFO, "study.complete", ids, "%s: complete, %d job%s or forward%s queued",
                  due == DUE_STABLE ? "no new instance for node.stable_seconds"
                                    : "all its required series arrived",
                  jobs, jobs == 1 ? "" : "s", jobs == 1 ? "" : "s");
    log_event(LOG_DEBUG, "study.uid", ids, "%s", r->uid[i]);
    return 1;
}

/* Completes every receiving study that is due: idle for stable_seconds,
 * past max_wait_seconds, or with all its required series. Returns when the
 * next of the others becomes due by time (INT64_MAX: none). */
static int64_t complete_due(struct node *n)
{
    const struct config *cfg = n->cfg;
    const struct config_completion *cc = &cfg->completion;
    int64_t now = clock_now_ms();
    struct receiving r = {0};
    int queued = 0, any = 0, ended = 0;
    int64_t next = INT64_MAX;
    if (storage_foreach_receiving(n->store, collect_receiving, &r) != STORAGE_OK)
        log_event(LOG_ERROR, "store.read_failed", NULL, "cannot read the receiving studies");
    for (size_t i = 0; i < r.n; i++) {
        enum due due = DUE_NOT;
        struct attr_series *rows = NULL;
        size_t n_rows = 0;
        /* While the node was down no sender could reach it: a study is
         * idle since its last instance or the start, whichever is later.
         * A sender whose transfer a stop cut short sends the rest again
         * once the node is back, before the study is planned: planned
         * earlier, it would be processed half received, then again whole. */
        int64_t idle_since = r.last_ms[i] > n->started_ms ? r.last_ms[i] : n->started_ms;
        int64_t stable_at = idle_since + (int64_t)cfg->node.stable_seconds * 1000;
        int64_t max_wait_at = cc->max_wait_seconds
                                  ? r.first_ms[i] + (int64_t)cc->max_wait_seconds * 1000
                                  : INT64_MAX;
        if (now >= stable_at)
            due = DUE_STABLE;
        else if (now >= max_wait_at)
            due = DUE_MAX_WAIT;
        else if (cc->required.n_any) {
            if (storage_study_series(n->store, r.uid[i], &rows, &n_rows) != STORAGE_OK)
                log_event(LOG_ERROR, "store.read_failed", LOG_IDS(.study = r.id[i]),
                      "cannot read the series of the study");
            else if (rules_required_met(cfg, rows, n_rows))
                due = DUE_REQUIRED;
        }
        /* Instances refused for lack of space: not complete until sent
         * again, or until max_wait_seconds gives up waiting for them. */
        if ((due == DUE_STABLE || due == DUE_REQUIRED) && r.held[i])
            due = now >= max_wait_at ? DUE_MAX_WAIT : DUE_NOT;
        if (due != DUE_NOT && !rows &&
            storage_study_series(n->store, r.uid[i], &rows, &n_rows) != STORAGE_OK) {
            log_event(LOG_ERROR, "store.read_failed", LOG_IDS(.study = r.id[i]),
                      "cannot read the series of the study");
            due = DUE_NOT;
        }
        if (due == DUE_NOT) {
            /* A held study past stable_seconds is due again at max_wait only
             * (a resend wakes completion by itself): its stable time is in
             * the past, and waiting for it would spin. */
            int64_t at = r.held[i] && now >= stable_at ? max_wait_at
                         : stable_at < max_wait_at    ? stable_at
                                                      : max_wait_at;
            next = at < next ? at : next;
        }
        if (due != DUE_NOT &&
            complete_study(n, cfg, &r, i, due, rows, n_rows, now, &queued)) {
            any = 1;
            ended++;
        }
        storage_series_free(rows, n_rows);
    }
    n->waiting = (int)r.n - ended;
    free(r.uid);
    free(r.first_ms);
    free(r.last_ms);
    free(r.id);
    free(r.held);
    if (queued && n->runner)
        runner_wake(n->runner);
    if (queued && n->sender)
        sender_wake(n->sender); /* instances to forward */
    if (any)
        retain(n);
    return next;
}

/* Completion runs when the next study becomes due, to the millisecond,
 * and at least every quarter of stable_seconds (between 0.1 and 1 s): a
 * study that arrives meanwhile is then seen, and its required series. */
static void on_completion_timer(uv_timer_t *t)
{
    struct node *n = t->data;
    int64_t next = complete_due(n);
    int64_t tick = (int64_t)n->cfg->node.stable_seconds * 1000 / 4;
    tick = tick < 100 ? 100 : tick > 1000 ? 1000 : tick;
    int64_t now = clock_now_ms();
    int64_t wait = next == INT64_MAX ? tick : next - now;
    wait = wait < 1 ? 1 : wait > tick ? tick : wait;
    uv_timer_start(t, on_completion_timer, (uint64_t)wait, 0);
}

static void log_config_error(void *ud, const char *line)
{
    ++*(int *)ud; /* the problems, counted */
    log_msg(LOG_ERROR, "%s", line);
}

/* SIGHUP: re-read the configuration file. A valid one takes effect for
 * what happens from now on (associations, studies completing, jobs
 * starting, sends); an invalid one is refused and the old one stays. */
static void set_conflict_policy(struct storage *store, const struct config *cfg)
{
    storage_set_conflict_policy(store, cfg->node.integrity_conflicts ==
                                               CONFIG_CONFLICTS_QUARANTINE
                                           ? STORAGE_CONFLICT_QUARANTINE
                                           : STORAGE_CONFLICT_REFUSE);
}

static void reload(struct node *n)
{
    struct config *old = n->cfg;
    log_event(LOG_INFO, "config.reloading", NULL, "reloading %s", old->path);
    struct config *cfg = NULL;
    int problems = 0;
    int rc = config_load(old->path, &cfg, log_config_error, &problems);
    if (rc != 0) {
        log_event(LOG_ERROR, "config.reload_refused", NULL,
                  "reload refused: %d problem%s in %s; the running configuration stays",
                  problems, problems == 1 ? "" : "s", old->path);
        return;
    }
    char keys[512], why[320];
    if (config_restart_changes(old, cfg, keys, sizeof keys) > 0) {
        log_event(LOG_ERROR, "config.reload_refused", NULL,
                  "reload refused: %s changed: restart ainode to apply; the running "
                  "configuration stays", keys);
        config_unref(cfg);
        return;
    }
    /* A model on a device that is not there is refused here as at start. */
    if (runner_check_devices(cfg, why, sizeof why) != 0) {
        log_event(LOG_ERROR, "config.reload_refused", NULL,
                  "reload refused: %s; the running configuration stays", why);
        config_unref(cfg);
        return;
    }
    /* The node's reference moves to the new configuration; the old one is
     * freed once the runner's workers and the sender let it go too. */
    pthread_mutex_lock(&n->cfg_lock);
    n->cfg = cfg;
    pthread_mutex_unlock(&n->cfg_lock);
    log_set_level(cfg->node.log_level);
    log_set_format(cfg->node.log_format);
    set_conflict_policy(n->store, cfg);
    sender_set_config(n->sender, cfg);
    runner_set_config(n->runner, cfg);
    config_unref(old);
    log_event(LOG_INFO, "config.reloaded", NULL,
              "reloaded: %zu rule%s, %zu model%s, %zu destination%s", cfg->n_rules,
              cfg->n_rules == 1 ? "" : "s", cfg->n_models, cfg->n_models == 1 ? "" : "s",
              cfg->n_destinations, cfg->n_destinations == 1 ? "" : "s");
}

static void on_sighup(uv_signal_t *s, int signum)
{
    (void)signum;
    reload(s->data);
}

static void *dicom_thread_main(void *arg)
{
    struct node *n = arg;
    dicom_server_run(n->dicom);
    atomic_store(&n->accepting, 0);
    uv_async_send(&n->dicom_done);
    return NULL;
}

static void on_dicom_done(uv_async_t *a)
{
    struct node *n = a->data;
    uv_close((uv_handle_t *)&n->sigterm, NULL);
    uv_close((uv_handle_t *)&n->sigint, NULL);
    uv_close((uv_handle_t *)&n->sighup, NULL);
    uv_close((uv_handle_t *)&n->completion, NULL);
    uv_close((uv_handle_t *)&n->retention, NULL);
    uv_close((uv_handle_t *)&n->watchdog, NULL);
    uv_close((uv_handle_t *)&n->status, NULL);
    uv_close((uv_handle_t *)&n->dicom_done, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct node *n = s->data;
    if (n->stopping) {
        log_event(LOG_INFO, "node.stopping", NULL, "already stopping (waiting for %d association%s)",
                  dicom_server_active(n->dicom), dicom_server_active(n->dicom) == 1 ? "" : "s");
        return;
    }
    n->stopping = 1;
    atomic_store(&n->accepting, 0);
    const struct config *cfg = n->cfg;
    log_event(LOG_INFO, "node.stopping", NULL,
              "%s: no new associations; waiting up to %d s for %d running",
              signum == SIGTERM ? "SIGTERM" : "SIGINT", cfg->node.shutdown_grace_seconds,
              dicom_server_active(n->dicom));
    notify_stopping("stopping: waiting up to %d s for %d association%s",
                    cfg->node.shutdown_grace_seconds, dicom_server_active(n->dicom),
                    dicom_server_active(n->dicom) == 1 ? "" : "s");
    dicom_server_stop(n->dicom, cfg->node.shutdown_grace_seconds);
}

/* WATCHDOG=1, from the loop's own timer: if the loop stops turning, the
 * service manager stops hearing it and restarts the node. */
static void on_watchdog_timer(uv_timer_t *t)
{
    (void)t;
    notify_watchdog();
}

static void on_status_timer(uv_timer_t *t)
{
    struct node *n = t->data;
    int active = dicom_server_active(n->dicom);
    notify_status("listening on port %d; %d stud%s waiting to complete, %d association%s open",
                  n->cfg->node.port ? n->cfg->node.port : n->cfg->node.tls.port, n->waiting,
                  n->waiting == 1 ? "y" : "ies", active, active == 1 ? "" : "s");
}

/* What the HTTP endpoint asks of the node, on its own thread. */
static struct config *http_config(void *ud)
{
    struct node *n = ud;
    pthread_mutex_lock(&n->cfg_lock);
    struct config *cfg = config_ref(n->cfg);
    pthread_mutex_unlock(&n->cfg_lock);
    return cfg;
}

static int http_accepting(void *ud)
{
    return atomic_load(&((struct node *)ud)->accepting);
}

static void http_jobs_queued(void *ud)
{
    runner_wake(((struct node *)ud)->runner);
}

static void http_outbox_queued(void *ud)
{
    sender_wake(((struct node *)ud)->sender);
}

static int node_serve(struct node *n);

int node_run(struct config *cfg)
{
    /* Before anything touches the store: a second node on it would repair
     * and write what the first one is writing. */
    char err[512] = "";
    struct nodelock *lock = NULL;
    int lrc = nodelock_acquire(cfg->node.data_dir, &lock, err, sizeof err);
    if (lrc != NODELOCK_OK) {
        log_msg(LOG_ERROR, "%s%s", err, lrc == NODELOCK_EBUSY ? "; not starting" : "");
        return lrc == NODELOCK_EBUSY ? CLI_EXIT_IN_USE : CLI_EXIT_ERROR;
    }
    struct node n;
    memset(&n, 0, sizeof n);
    n.cfg = config_ref(cfg);
    pthread_mutex_init(&n.cfg_lock, NULL);
    pthread_mutex_init(&n.holds.lock, NULL);
    n.space_log_ms = -10000;
    int rc = node_serve(&n);
    config_unref(n.cfg);
    holds_free(&n.holds);
    pthread_mutex_destroy(&n.holds.lock);
    pthread_mutex_destroy(&n.cfg_lock);
    nodelock_release(lock);
    return rc;
}

/* Runs N (its configuration set) until the stop. */
static int node_serve(struct node *n)
{
    const struct config *cfg = n->cfg; /* until the loop runs: a reload may replace it */
    log_set_level(cfg->node.log_level);
    log_set_format(cfg->node.log_format);
    /* A write past a file size limit must fail with EFBIG (answered as out
     * of resources), not kill the node. */
    signal(SIGXFSZ, SIG_IGN);
    /* A peer that resets its connection must cost a failed write (EPIPE),
     * not the process. */
    signal(SIGPIPE, SIG_IGN);

    char err[512] = "";
    init_read_keywords();
    if (dicom_init(err, sizeof err) != 0) {
        log_msg(LOG_ERROR, "%s", err);
        return 1;
    }
    if (storage_open(cfg->node.data_dir, read_for_repair, NULL, &n->store, err, sizeof err)
        != STORAGE_OK) {
        log_msg(LOG_ERROR, "%s", err);
        return 1;
    }
    set_conflict_policy(n->store, cfg);
    int reindexed, removed;
    storage_repair_counts(n->store, &reindexed, &removed);
    if (reindexed || removed)
        log_event(LOG_WARN, "repair.done", NULL,
                "after an unclean stop: %d instance file%s indexed again, %d incomplete one%s "
                "removed",
                reindexed, reindexed == 1 ? "" : "s", removed, removed == 1 ? "" : "s");
    struct dicom_server_config dc = {
        .ae_title = cfg->node.ae_title,
        .bind = cfg->node.bind,
        .port = cfg->node.port,
        .max_associations = cfg->node.max_associations,
        .max_pdu = cfg->node.max_pdu,
        .network_timeout_seconds = cfg->node.network_timeout_seconds,
        .artim_timeout_seconds = cfg->node.artim_timeout_seconds,
        .max_associations_per_caller = cfg->node.max_associations_per_caller,
        .max_association_seconds = cfg->node.max_association_seconds,
        .max_dataset_bytes = (uint64_t)cfg->node.max_dataset_mb << 20,
        .keywords = read_keywords,
        .n_keywords = ATTR_COUNT,
        .admit = on_admit,
        .associate = on_associate,
        .store_begin = on_store_begin,
        .stored = on_stored,
        .association_end = on_association_end,
        .ended = on_association_ended,
        .temp_path = on_temp_path,
        .log = on_dicom_log,
        .ud = n,
    };
    if (cfg->node.tls.enabled) {
        dc.tls_port = cfg->node.tls.port;
        dc.tls = (struct dicom_tls_config){
            .certificate = cfg->node.tls.certificate,
            .private_key = cfg->node.tls.private_key,
            .ca_certificates = cfg->node.tls.ca_certificates,
            .verify = cfg->node.tls.verify_client == CONFIG_VERIFY_CLIENT_OFF ? DICOM_TLS_VERIFY_OFF
                      : cfg->node.tls.verify_client == CONFIG_VERIFY_CLIENT_OPTIONAL
                          ? DICOM_TLS_VERIFY_OPTIONAL
                          : DICOM_TLS_VERIFY_REQUIRED,
        };
    }
    if (dicom_server_create(&dc, &n->dicom, err, sizeof err) != 0) {
        log_msg(LOG_ERROR, "%s", err);
        storage_close(n->store);
        return 1;
    }

    if (cfg->n_models)
        pipeline_tune_allocator();
    if (sender_start(n->cfg, n->store, &n->sender, err, sizeof err) != 0 ||
        runner_start(n->cfg, n->store, n->sender, &n->runner, err, sizeof err) != 0) {
        log_msg(LOG_ERROR, "%s", err);
        sender_stop(n->sender);
        dicom_server_destroy(n->dicom);
        storage_close(n->store);
        return 1;
    }
    /* node.http: started once the runner and the sender it wakes exist. */
    struct http_node hn = {.store = n->store, .config = http_config, .accepting = http_accepting,
                           .jobs_queued = http_jobs_queued, .outbox_queued = http_outbox_queued,
                           .ud = n};
    atomic_store(&n->accepting, 1); /* the listening sockets exist */
    if (cfg->node.http.enabled && http_start(n->cfg, &hn, &n->http, err, sizeof err) != 0) {
        log_msg(LOG_ERROR, "%s", err);
        runner_stop(n->runner);
        sender_stop(n->sender);
        dicom_server_destroy(n->dicom);
        storage_close(n->store);
        return 1;
    }

    n->loop = uv_default_loop();
    uv_signal_init(n->loop, &n->sigterm);
    uv_signal_init(n->loop, &n->sigint);
    n->sigterm.data = n->sigint.data = n;
    uv_signal_start(&n->sigterm, on_signal, SIGTERM);
    uv_signal_start(&n->sigint, on_signal, SIGINT);
    uv_signal_init(n->loop, &n->sighup);
    n->sighup.data = n;
    uv_signal_start(&n->sighup, on_sighup, SIGHUP);
    uv_async_init(n->loop, &n->dicom_done, on_dicom_done);
    n->dicom_done.data = n;
    uv_timer_init(n->loop, &n->completion);
    n->completion.data = n;
    /* Studies left receiving before a restart complete stable_seconds
     * after it (complete_due); past max_wait_seconds, on the first tick. */
    n->started_ms = clock_now_ms();
    uv_timer_start(&n->completion, on_completion_timer, 0, 0);
    uv_timer_init(n->loop, &n->retention);
    n->retention.data = n;
    uv_timer_start(&n->retention, on_retention_timer, 1000, RETENTION_EVERY_MS);
    uv_timer_init(n->loop, &n->watchdog);
    uv_timer_init(n->loop, &n->status);
    n->status.data = n;

    if (pthread_create(&n->dicom_thread, NULL, dicom_thread_main, n) != 0) {
        log_msg(LOG_ERROR, "cannot start the DICOM thread");
        http_stop(n->http);
        runner_stop(n->runner);
        sender_stop(n->sender);
        dicom_server_destroy(n->dicom);
        storage_close(n->store);
        return 1;
    }
    if (cfg->node.port)
        log_event(LOG_INFO, "node.listening", NULL,
                "ainode %s listening on %s:%d (AE %s), data in %s", AINODE_VERSION,
                cfg->node.bind, cfg->node.port, cfg->node.ae_title, cfg->node.data_dir);
    else
        log_event(LOG_INFO, "node.listening", NULL,
                "ainode %s listening for DICOM TLS only on %s:%d (AE %s), data in %s",
                AINODE_VERSION, cfg->node.bind, cfg->node.tls.port, cfg->node.ae_title,
                cfg->node.data_dir);
    /* The listening sockets exist since dicom_server_create: a peer can
     * connect from now on. */
    notify_ready("listening on port %d", cfg->node.port ? cfg->node.port : cfg->node.tls.port);
    uint64_t watchdog_ms = notify_watchdog_interval_ms();
    if (watchdog_ms)
        uv_timer_start(&n->watchdog, on_watchdog_timer, 0, watchdog_ms);
    if (notify_enabled())
        uv_timer_start(&n->status, on_status_timer, STATUS_EVERY_MS, STATUS_EVERY_MS);
    uv_run(n->loop, UV_RUN_DEFAULT); /* returns once the handles closed and retention ended */
    n->loop_done = 1;
    http_stop(n->http); /* before what it reads and wakes goes */
    n->http = NULL;
    pthread_join(n->dicom_thread, NULL);
    runner_stop(n->runner);
    n->runner = NULL;
    sender_stop(n->sender);
    n->sender = NULL;
    complete_due(n);
    dicom_server_destroy(n->dicom);
    storage_close(n->store);
    uv_loop_close(n->loop);
    log_event(LOG_INFO, "node.stopped", NULL, "stopped");
    return 0;
}
