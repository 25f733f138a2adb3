/*
 * runner.c — the worker pool of each model.
 *
 * A worker claims a job of its model, runs it (job.c) and claims the next;
 * with none to claim it waits on the runner's waiter until a wake
 * (runner_wake: jobs were queued) or IDLE_WAIT_MS. The configuration a
 * worker's model came from is held by reference while the worker uses it:
 * a reload swaps the runner's configuration and drops the old one, which
 * is freed once the last worker moved on from it.
 */
/* SCHED_IDLE is Linux-specific. */
#define _GNU_SOURCE
#include "service/runner.h"

#include "common/clock.h"
#include "common/crashpoint.h"
#include "common/error.h"
#include "common/log.h"
#include "common/wait.h"
#include "config/config.h"
#include "inference/inference.h"
#include "service/job.h"
#include "service/metrics.h"
#include "service/sender.h"
#include "storage/storage.h"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The configuration's precision is handed to inference as it is. */
_Static_assert(CONFIG_PRECISION_FP32 == (int)INFER_FP32 &&
                   CONFIG_PRECISION_FP16 == (int)INFER_FP16 &&
                   CONFIG_PRECISION_BF16 == (int)INFER_BF16,
               "config_precision and infer_precision differ");

#define IDLE_WAIT_MS 1000         /* a worker rechecks the queue at least this often */

struct worker {
    struct runner *r;
    char name[128];               /* the model's name: what it looks up after a reload */
    pthread_t thread;
    atomic_int retire;            /* leave after the current job (model removed or fewer workers) */
    char owner[160];
};

struct runner {
    pthread_mutex_t cfg_lock;     /* guards CFG: swapped by a reload, referenced by workers */
    struct config *cfg;
    struct storage *store;
    struct sender *sender;
    struct waiter waiter;         /* wakes idle workers; stops them all */
    struct worker **workers;      /* every worker started, retired ones too (joined at stop) */
    size_t n_workers;
};

/* The configuration in force, with a reference the caller drops. */
static struct config *current_config(struct runner *r)
{
    pthread_mutex_lock(&r->cfg_lock);
    struct config *cfg = config_ref(r->cfg);
    pthread_mutex_unlock(&r->cfg_lock);
    return cfg;
}

static int worker_stopping(void *ud)
{
    return waiter_stopping(&((struct runner *)ud)->waiter);
}

/* Loads model NAME (FILE, on DEVICE in PRECISION) for a worker; the
 * metrics say how it went (readyz and the status page show it). */
static int load_model(const char *name, const char *file, const char *device, int precision,
                      struct infer_model **out, char *err, size_t errlen)
{
    metrics_model_state(name, METRICS_MODEL_LOADING, NULL);
    int rc = infer_model_load_ex(file, device, (enum infer_precision)precision, out, err, errlen);
    metrics_model_state(name, rc == INFER_OK ? METRICS_MODEL_LOADED : METRICS_MODEL_FAILED, err);
    return rc;
}

/* A first claim's wait in the queue (a job claimed again waited for its
 * worker, not for the queue). */
static void claimed(const struct storage_job *job, int64_t now_ms)
{
    if (job->attempts == 1)
        metrics_job_claimed(job->model, (now_ms - job->created_ms) / 1000.0);
}

/* A head runs on its encoder's workers, with none of its own. */
static int has_workers(const struct config_model *m)
{
    return m->manifest.from == NULL;
}

/* The most jobs of one series an encoder's worker claims at once. */
#define GROUP_MAX 64

/* An encoder's worker: the heads of CFG that read ENCODER's features,
 * each loaded on the encoder's device, and the JSON array of the group's
 * model names (the encoder first) it claims jobs of. */
struct heads {
    struct job_head *h;
    char **errors;
    size_t n;
    char *models;
};

static void heads_free(struct heads *hs)
{
    for (size_t i = 0; i < hs->n; i++) {
        infer_model_free(hs->h[i].model);
        free(hs->errors[i]);
    }
    free(hs->h);
    free(hs->errors);
    free(hs->models);
    memset(hs, 0, sizeof *hs);
}

static void heads_load(struct heads *hs, const struct config *cfg,
                       const struct config_model *encoder)
{
    heads_free(hs);
    size_t len = strlen(encoder->name) + 8;
    for (size_t i = 0; i < cfg->n_models; i++)
        len += strlen(cfg->models[i].name) + 4;
    hs->h = calloc(cfg->n_models, sizeof *hs->h);
    hs->errors = calloc(cfg->n_models, sizeof *hs->errors);
    hs->models = malloc(len);
    if (!hs->h || !hs->errors || !hs->models) {
        log_event(LOG_ERROR, "model.load_failed", LOG_IDS(.model = encoder->name),
                  "out of memory for the encoder's heads");
        heads_free(hs);
        return;
    }
    /* Model names are letters, digits, '_', '.' and '-': JSON strings as they are. */
    size_t at = (size_t)snprintf(hs->models, len, "[\"%s\"", encoder->name);
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        if (!m->manifest.from || strcmp(m->manifest.from, encoder->name) != 0)
            continue;
        at += (size_t)snprintf(hs->models + at, len - at, ",\"%s\"", m->name);
        struct job_head *h = &hs->h[hs->n];
        char err[512] = "";
        h->cfg = m;
        if (load_model(m->name, m->file, encoder->device, encoder->precision, &h->model, err,
                       sizeof err) != INFER_OK) {
            log_event(LOG_ERROR, "model.load_failed", LOG_IDS(.model = m->name),
                      "model %s cannot be loaded: %s", m->name, err);
            hs->errors[hs->n] = strdup(err);
            h->load_error = hs->errors[hs->n];
        }
        hs->n++;
    }
    snprintf(hs->models + at, len - at, "]");
}

/* Claims a job of the group HS names, then the group's other runnable jobs
 * on its series: into JOBS (GROUP_MAX), their count returned (0: none). */
static size_t claim_group(struct runner *r, const struct heads *hs, const char *owner,
                          struct storage_job *jobs)
{
    size_t n = 0;
    int64_t now = clock_now_ms();
    if (storage_job_claim_among(r->store, hs->models, -1, owner, now, JOB_LEASE_MS,
                                &jobs[0]) != STORAGE_OK)
        return 0;
    for (n = 1; n < GROUP_MAX; n++)
        if (storage_job_claim_among(r->store, hs->models, jobs[0].id, owner, now,
                                    JOB_LEASE_MS, &jobs[n]) != STORAGE_OK)
            break;
    for (size_t i = 0; i < n; i++)
        claimed(&jobs[i], now);
    return n;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct runner *r = w->r;
    /* Inference yields the CPU to the receiver: SCHED_IDLE runs only
     * when nothing else wants the CPU, and the threads libtorch starts
     * from here inherit it. */
    struct sched_param sp = {0};
    if (sched_setscheduler((pid_t)syscall(SYS_gettid), SCHED_IDLE, &sp) != 0)
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);

    /* HELD: the configuration CM belongs to (one reference). */
    struct config *held = current_config(r);
    const struct config_model *cm = config_find_model(held, w->name);
    char err[512] = "";
    struct infer_model *model = NULL;
    if (cm) {
        infer_set_threads(cm->threads);
        if (load_model(cm->name, cm->file, cm->device, cm->precision, &model, err,
                       sizeof err) != INFER_OK)
            log_event(LOG_ERROR, "model.load_failed", LOG_IDS(.model = cm->name),
                      "model %s cannot be loaded: %s", cm->name, err);
    }

    struct heads hs = {0};
    int encoder = cm && cm->manifest.output_kind == CONFIG_OUTPUT_EMBEDDING;
    if (encoder)
        heads_load(&hs, held, cm);

    uint64_t seen = 0;
    while (cm && !waiter_stopping(&r->waiter) && !atomic_load(&w->retire)) {
        /* A reloaded configuration applies from the next job on: its
         * manifest at once, a changed file, device, precision or thread count after
         * loading the model again. */
        struct config *now = current_config(r);
        if (now != held) {
            const struct config_model *now_cm = config_find_model(now, w->name);
            if (!now_cm) {
                config_unref(now);
                break;
            }
            /* new weights under the same path: the identity results carry
             * must be that of the model that runs */
            if (strcmp(now_cm->file, cm->file) || strcmp(now_cm->device, cm->device) ||
                now_cm->threads != cm->threads || strcmp(now_cm->sha256, cm->sha256) ||
                now_cm->precision != cm->precision) {
                infer_model_free(model);
                model = NULL;
                infer_set_threads(now_cm->threads);
                if (load_model(now_cm->name, now_cm->file, now_cm->device, now_cm->precision,
                               &model, err, sizeof err) != INFER_OK)
                    log_event(LOG_ERROR, "model.load_failed", LOG_IDS(.model = now_cm->name),
                              "model %s cannot be loaded: %s", now_cm->name, err);
            }
            config_unref(held);
            held = now;
            cm = now_cm;
            encoder = cm->manifest.output_kind == CONFIG_OUTPUT_EMBEDDING;
            if (encoder)
                heads_load(&hs, held, cm); /* heads come and go with the configuration */
            else
                heads_free(&hs);
        } else {
            config_unref(now);
        }
        if (encoder) {
            struct storage_job group[GROUP_MAX];
            size_t n = hs.models ? claim_group(r, &hs, w->owner, group) : 0;
            if (n == 0) {
                waiter_wait(&r->waiter, &seen, IDLE_WAIT_MS);
                continue;
            }
            for (size_t i = 0; i < n; i++)
                log_event(LOG_INFO, "job.running",
                          LOG_IDS(.job = group[i].id, .model = group[i].model),
                          "attempt %d, with encoder %s", group[i].attempts, cm->name);
            struct job_context ctx = {
                .store = r->store, .model_cfg = cm, .model = model, .load_error = err,
                .owner = w->owner, .stopping = worker_stopping, .stopping_ud = r,
                .heads = hs.h, .n_heads = hs.n,
            };
            if (job_run_group(&ctx, group, n) > 0 && r->sender)
                sender_wake(r->sender);
            for (size_t i = 0; i < n; i++)
                storage_job_clear(&group[i]);
            infer_model_trim(model);
            malloc_trim(0);
            continue;
        }
        struct storage_job job;
        int64_t now_ms = clock_now_ms();
        int rc = storage_job_claim(r->store, cm->name, w->owner, now_ms, JOB_LEASE_MS, &job);
        if (rc != STORAGE_OK) {
            if (rc != STORAGE_ENOTFOUND)
                log_event(LOG_ERROR, "store.read_failed", LOG_IDS(.model = cm->name),
                          "cannot claim jobs for %s from the database", cm->name);
            waiter_wait(&r->waiter, &seen, IDLE_WAIT_MS);
            continue;
        }
        claimed(&job, now_ms);
        log_event(LOG_INFO, "job.running", LOG_IDS(.job = job.id, .model = cm->name), "attempt %d",
                  job.attempts);
        CRASH_POINT("job.claimed"); /* leased, in no stage */
        struct job_context ctx = {
            .store = r->store,
            .model_cfg = cm,
            .model = model,
            .load_error = err,
            .owner = w->owner,
            .stopping = worker_stopping,
            .stopping_ud = r,
        };
        char why[512];
        if (job_run(&ctx, &job, why, sizeof why) == JOB_DONE && job.n_destinations &&
            r->sender)
            sender_wake(r->sender);
        storage_job_clear(&job);
        infer_model_trim(model);
        malloc_trim(0); /* an idle node hands a job's memory back */
    }
    heads_free(&hs);
    infer_model_free(model);
    config_unref(held);
    return NULL;
}

/* Starts a worker for model M. Its lease owner is unique in the process,
 * so a worker started on reload never shares one with a retiring worker. */
static int start_worker(struct runner *r, const struct config_model *m, char *err, size_t errlen)
{
    struct worker **ws = realloc(r->workers, (r->n_workers + 1) * sizeof *ws);
    struct worker *w = calloc(1, sizeof *w);
    if (ws)
        r->workers = ws;
    if (!ws || !w) {
        free(w);
        return error_set(err, errlen, -1, "out of memory");
    }
    w->r = r;
    snprintf(w->name, sizeof w->name, "%s", m->name);
    snprintf(w->owner, sizeof w->owner, "%ld/%s/%zu", (long)getpid(), m->name, r->n_workers);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        free(w);
        return error_set(err, errlen, -1, "cannot start a worker thread for %s", m->name);
    }
    r->workers[r->n_workers++] = w;
    return 0;
}

/* A device that is not there is an error, never a CPU run. */
int runner_check_devices(const struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->n_models; i++) {
        char why[256];
        if (infer_device_check(cfg->models[i].device, why, sizeof why) != INFER_OK)
            return error_set(err, errlen, -1, "model %s: %s", cfg->models[i].name, why);
    }
    return 0;
}

int runner_start(struct config *cfg, struct storage *st, struct sender *sender,
                 struct runner **out, char *err, size_t errlen)
{
    *out = NULL;
    if (runner_check_devices(cfg, err, errlen) != 0)
        return -1;
    /* A job that crashes the node must not crash it again at each start. */
    if (job_guard_install(st) != 0)
        return error_set(err, errlen, -1, "cannot install the crash guard of the jobs");
    struct runner *r = calloc(1, sizeof *r);
    if (!r)
        return error_set(err, errlen, -1, "out of memory");
    if (waiter_init(&r->waiter) != 0) {
        free(r);
        return error_set(err, errlen, -1, "cannot make the workers' waiter");
    }
    pthread_mutex_init(&r->cfg_lock, NULL);
    r->cfg = config_ref(cfg);
    r->store = st;
    r->sender = sender;
    for (size_t i = 0; i < cfg->n_models; i++)
        for (int j = 0; has_workers(&cfg->models[i]) && j < cfg->models[i].workers; j++)
            if (start_worker(r, &cfg->models[i], err, errlen) != 0) {
                runner_stop(r);
                return -1;
            }
    *out = r;
    return 0;
}

/* The workers of MODEL that are not retiring. */
static int active_workers(struct runner *r, const char *model)
{
    int n = 0;
    for (size_t i = 0; i < r->n_workers; i++)
        n += !strcmp(r->workers[i]->name, model) && !atomic_load(&r->workers[i]->retire);
    return n;
}

void runner_set_config(struct runner *r, struct config *cfg)
{
    pthread_mutex_lock(&r->cfg_lock);
    struct config *old = r->cfg;
    r->cfg = config_ref(cfg);
    pthread_mutex_unlock(&r->cfg_lock);
    config_unref(old);
    /* Models removed, or fewer workers: the extra ones finish their job. */
    for (size_t i = r->n_workers; i-- > 0;) {
        struct worker *w = r->workers[i];
        if (atomic_load(&w->retire))
            continue;
        const struct config_model *m = config_find_model(cfg, w->name);
        if (!m || !has_workers(m) || active_workers(r, w->name) > m->workers) {
            atomic_store(&w->retire, 1);
            log_event(LOG_INFO, "worker.retired", LOG_IDS(.model = w->name), "a worker retires");
        }
    }
    /* Models added, or more workers. */
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        char err[256];
        for (int j = active_workers(r, m->name); has_workers(m) && j < m->workers; j++)
            if (start_worker(r, m, err, sizeof err) != 0)
                log_msg(LOG_ERROR, "%s", err);
            else
                log_event(LOG_INFO, "worker.started", LOG_IDS(.model = m->name), "a worker starts");
    }
    runner_wake(r);
}

void runner_wake(struct runner *r)
{
    waiter_wake(&r->waiter);
}

void runner_stop(struct runner *r)
{
    if (!r)
        return;
    waiter_stop(&r->waiter);
    for (size_t i = 0; i < r->n_workers; i++) {
        pthread_join(r->workers[i]->thread, NULL);
        free(r->workers[i]);
    }
    waiter_destroy(&r->waiter);
    pthread_mutex_destroy(&r->cfg_lock);
    config_unref(r->cfg);
    free(r->workers);
    free(r);
}
