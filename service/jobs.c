/*
 * jobs.c — the inference workers.
 *
 * When a study is due, runner_plan_study() turns the rules' decisions on
 * its series rows into a plan (one job per series and model, forwards),
 * which the node commits to the store. Each model has its own pool of worker threads; a worker
 * claims a job with a lease, renews the lease while the model runs, and
 * finishes the job as done (results written under DATA_DIR/results) or
 * failed (with the reason). Workers run at a lower CPU priority than the
 * receiver, which must keep its speed while models run.
 *
 * What a job computes is pipeline.c's.
 */
/* SCHED_IDLE is Linux-specific. */
#define _GNU_SOURCE
#include "config/config.h"
#include "dicom/results.h"
#include "inference/inference.h"
#include "common/attr.h"
#include "common/log.h"
#include "common/plan.h"
#include "service/service.h"
#include "storage/storage.h"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#define LEASE_MS 60000            /* a job whose worker vanished runs again after this */
#define RENEW_EVERY_MS 10000
#define IDLE_WAIT_MS 1000         /* a worker rechecks the queue at least this often */

struct worker {
    struct runner *r;
    const struct config_model *model;
    char name[128];               /* the model's name: what it looks up after a reload */
    pthread_t thread;
    atomic_int retire;            /* leave after the current job (model removed or fewer workers) */
    char owner[160];
};

struct runner {
    _Atomic(const struct config *) cfg; /* swapped by runner_set_config on reload */
    struct storage *store;
    struct sender *sender;
    struct worker **workers;      /* every worker started, retired ones too (joined at stop) */
    size_t n_workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    unsigned long wakeups;        /* bumped by runner_wake() */
    atomic_int stopping;
};

/* ------------------------------------------------------------------ */
/* One job                                                             */

struct series_files {
    char **sop, **path;
    size_t n, cap;
};

static int collect_file(void *ud, const char *sop, const char *path)
{
    struct series_files *f = ud;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        char **a = realloc(f->sop, cap * sizeof *a), **b;
        if (!a)
            return 1;
        f->sop = a;
        if (!(b = realloc(f->path, cap * sizeof *b)))
            return 1;
        f->path = b;
        f->cap = cap;
    }
    f->sop[f->n] = strdup(sop);
    f->path[f->n] = strdup(path);
    if (!f->sop[f->n] || !f->path[f->n]) {
        free(f->sop[f->n]);
        free(f->path[f->n]);
        return 1;
    }
    f->n++;
    return 0;
}

static void free_files(struct series_files *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->sop[i]);
        free(f->path[i]);
    }
    free(f->sop);
    free(f->path);
}

struct job_ctx {
    struct worker *w;
    const struct storage_job *job;
    int64_t last_renew_ms;
    int lost;                     /* the lease went to another worker */
};

static int on_progress(void *ud, long done, long total)
{
    struct job_ctx *jc = ud;
    (void)done, (void)total;
    if (atomic_load(&jc->w->r->stopping))
        return 1;
    int64_t now = service_now_ms();
    if (now - jc->last_renew_ms >= RENEW_EVERY_MS) {
        jc->last_renew_ms = now;
        if (storage_job_renew(jc->w->r->store, jc->job->id, jc->w->owner, now + LEASE_MS) ==
            STORAGE_ENOTFOUND) {
            jc->lost = 1;
            return 1;
        }
    }
    return 0;
}

/* DATA (LEN bytes) as a gzip stream in *OUT (malloc'ed), fast level. */
static int gzip_buffer(const uint8_t *data, size_t len, unsigned char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    size_t cap = deflateBound(&z, (uLong)len) + 64;
    *out = malloc(cap);
    if (!*out) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len; /* label volumes stay far below 4 GB */
    z.next_out = *out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* The DICOM results of a done job: files to send and what the writers
 * wrote (SOP class, instance, transfer syntax). */
struct job_results {
    char seg_path[4096], sr_path[4096];
    struct dicom_written seg, sr;
};

/* The one place result files of a job are named: DATA_DIR/results/<ID>.<KIND>.dcm. */
static void result_name(int64_t job_id, const char *kind, char *buf, size_t len)
{
    snprintf(buf, len, "%lld.%s.dcm", (long long)job_id, kind);
}

/* Writes the job's SEG and SR durably under DATA_DIR/results. Their UIDs
 * are fixed from here on: every later send of them is the same instance. */
static double seconds_since(int64_t start_ms)
{
    return (service_now_ms() - start_ms) / 1000.0;
}

static int write_dicom_results(struct runner *r, const struct config_model *cm,
                               const struct storage_job *job, const struct pipeline_output *out,
                               struct job_results *res, struct pipeline_timing *t, char *err,
                               size_t errlen)
{
    const struct config_manifest *mf = &cm->manifest;
    size_t nvox = (size_t)out->grid.nx * out->grid.ny * out->grid.nz;
    int64_t counts[256] = {0};
    for (size_t i = 0; i < nvox; i++)
        counts[out->labels[i]]++;
    double voxel_ml = out->grid.spacing[0] * out->grid.spacing[1] * out->grid.spacing[2] / 1000.0;

    int rc = -1;
    struct dicom_segment *segs = calloc(mf->n_labels ? mf->n_labels : 1, sizeof *segs);
    if (!segs) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < mf->n_labels; i++) {
        const struct config_label *l = &mf->labels[i];
        segs[i] = (struct dicom_segment){
            .number = l->value,
            .label = l->name,
            .category = {l->category.value, l->category.scheme, l->category.meaning},
            .type = {l->type.value, l->type.scheme, l->type.meaning},
            .color = {l->color[0], l->color[1], l->color[2]},
            .voxels = counts[l->value],
            .volume_ml = (double)counts[l->value] * voxel_ml,
        };
    }
    char description[65]; /* LO: 64 characters */
    snprintf(description, sizeof description, "%s",
             mf->series_description ? mf->series_description : mf->algorithm_name);
    struct dicom_result dr = {
        .sources = out->sources,
        .source_files = out->source,
        .source_frames = out->frame,
        .nx = out->grid.nx,
        .ny = out->grid.ny,
        .nz = out->grid.nz,
        .labels = out->labels,
        .segments = segs,
        .n_segments = mf->n_labels,
        .algorithm_name = mf->algorithm_name,
        .algorithm_version = mf->algorithm_version,
        .algorithm_family = {mf->algorithm_family.value, mf->algorithm_family.scheme,
                             mf->algorithm_family.meaning},
        .series_description = description,
        .series_number = mf->series_number,
        .manufacturer = "ainode",
        .software_version = AINODE_VERSION,
    };
    char name[64], tmp[4096];
    int64_t t0 = service_now_ms();
    result_name(job->id, "seg", name, sizeof name);
    if (storage_result_temp(r->store, name, tmp, sizeof tmp) != STORAGE_OK ||
        dicom_write_seg(&dr, tmp, &res->seg, err, errlen) != DICOM_OK ||
        storage_adopt_result(r->store, tmp, name, res->seg_path, sizeof res->seg_path, err,
                             errlen) != STORAGE_OK) {
        if (!err[0])
            snprintf(err, errlen, "cannot write the segmentation");
        goto out;
    }
    t->seg = seconds_since(t0);
    t0 = service_now_ms();
    result_name(job->id, "sr", name, sizeof name);
    if (storage_result_temp(r->store, name, tmp, sizeof tmp) != STORAGE_OK ||
        dicom_write_sr(&dr, &res->seg, tmp, &res->sr, err, errlen) != DICOM_OK ||
        storage_adopt_result(r->store, tmp, name, res->sr_path, sizeof res->sr_path, err,
                             errlen) != STORAGE_OK) {
        if (!err[0])
            snprintf(err, errlen, "cannot write the measurement report");
        goto out;
    }
    t->sr = seconds_since(t0);
    rc = 0;
out:
    free(segs);
    return rc;
}

/* Runs JOB; on failure returns -1 with the reason in ERR (stored on the
 * job), -2 when the stop interrupted it, -3 when its lease was lost. */
static int run_job(struct worker *w, struct infer_model *model, const struct storage_job *job,
                   char *result, size_t resultlen, char **summary, struct job_results *res,
                   char *err, size_t errlen)
{
    const struct config_model *cm = w->model;
    struct runner *r = w->r;
    struct series_files files = {0};
    struct pipeline_output out = {0};
    struct pipeline_timing t;
    char *text = NULL;
    unsigned char *packed = NULL;
    size_t packed_len = 0;
    int rc = -1;

    if (storage_foreach_instance(r->store, job->series_uid, collect_file, &files) != STORAGE_OK) {
        snprintf(err, errlen, "cannot list the series' instances");
        goto done;
    }
    struct job_ctx jc = {w, job, service_now_ms(), 0};
    int prc = pipeline_run(cm, model, (const char *const *)files.path, files.n, on_progress, &jc,
                           &out, &t, err, errlen);
    if (prc == PIPELINE_CANCELLED) {
        rc = jc.lost ? -3 : -2;
        goto done;
    }
    if (prc != 0)
        goto done;
    if (write_dicom_results(r, cm, job, &out, res, &t, err, errlen) != 0)
        goto done;
    text = pipeline_result_json(cm, &out, (const char *const *)files.sop, job->id, job->study_uid,
                                job->series_uid, &t, res->seg.sop_instance_uid,
                                res->sr.sop_instance_uid, summary);
    if (!text || !*summary) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    size_t nvox = (size_t)out.grid.nx * out.grid.ny * out.grid.nz;
    /* Label volumes compress ~100-fold: writing (and flushing) them whole
     * would compete with the receiver's own flushes for the disk. */
    if (gzip_buffer(out.labels, nvox, &packed, &packed_len) != 0) {
        snprintf(err, errlen, "cannot compress the labels");
        goto done;
    }
    if (storage_write_result(r->store, job->id, text, packed, packed_len, result, resultlen, err,
                             errlen) != STORAGE_OK)
        goto done;
    log_msg(LOG_DEBUG,
            "job %lld: decode %.2f s, assemble %.2f s, preprocess %.2f s, model %.2f s, "
            "postprocess %.2f s, SEG %.2f s, SR %.2f s",
            (long long)job->id, t.decode, t.assemble, t.preprocess, t.model, t.postprocess,
            t.seg, t.sr);
    rc = 0;
done:
    free_files(&files);
    pipeline_output_free(&out);
    free(text);
    free(packed);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */

static void wait_for_work(struct runner *r, unsigned long seen)
{
    pthread_mutex_lock(&r->lock);
    if (r->wakeups == seen && !atomic_load(&r->stopping)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += IDLE_WAIT_MS / 1000;
        pthread_cond_timedwait(&r->wake, &r->lock, &ts);
    }
    pthread_mutex_unlock(&r->lock);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct runner *r = w->r;
    const struct config_model *cm = w->model;
    /* Inference yields the CPU to the receiver: SCHED_IDLE runs only
     * when nothing else wants the CPU, and the threads libtorch starts
     * from here inherit it. */
    struct sched_param sp = {0};
    if (sched_setscheduler((pid_t)syscall(SYS_gettid), SCHED_IDLE, &sp) != 0)
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    infer_set_threads(cm->threads);

    char err[512] = "";
    struct infer_model *model = NULL;
    int load_rc = infer_model_load(cm->file, cm->device, &model, err, sizeof err);
    if (load_rc != INFER_OK)
        log_msg(LOG_ERROR, "model %s cannot be loaded: %s", cm->name, err);

    while (!atomic_load(&r->stopping)) {
        pthread_mutex_lock(&r->lock);
        unsigned long seen = r->wakeups;
        pthread_mutex_unlock(&r->lock);
        /* A reloaded configuration applies from the next job on: its
         * manifest at once, a changed file, device or thread count after
         * loading the model again. */
        if (atomic_load(&w->retire))
            break;
        const struct config_model *now_cm = config_find_model(atomic_load(&r->cfg), w->name);
        if (!now_cm)
            break;
        if (now_cm != cm) {
            if (strcmp(now_cm->file, cm->file) || strcmp(now_cm->device, cm->device) ||
                now_cm->threads != cm->threads) {
                infer_model_free(model);
                model = NULL;
                infer_set_threads(now_cm->threads);
                if (infer_model_load(now_cm->file, now_cm->device, &model, err, sizeof err) !=
                    INFER_OK)
                    log_msg(LOG_ERROR, "model %s cannot be loaded: %s", now_cm->name, err);
            }
            cm = w->model = now_cm;
        }
        struct storage_job job;
        int64_t now = service_now_ms();
        int rc = storage_job_claim(r->store, cm->name, w->owner, now, LEASE_MS, &job);
        if (rc == STORAGE_ENOTFOUND) {
            wait_for_work(r, seen);
            continue;
        }
        if (rc != STORAGE_OK) {
            log_msg(LOG_ERROR, "cannot claim jobs for %s from the database", cm->name);
            wait_for_work(r, seen);
            continue;
        }
        log_msg(LOG_INFO, "job %lld: running %s (attempt %d)", (long long)job.id, cm->name,
                job.attempts);
        char result[4096] = "", why[512] = "";
        char *summary = NULL;
        struct job_results res;
        memset(&res, 0, sizeof res);
        int jr = model ? run_job(w, model, &job, result, sizeof result, &summary, &res, why,
                                 sizeof why)
                       : (snprintf(why, sizeof why, "the model cannot be loaded: %s", err), -1);
        /* Each destination of the job gets the SEG and the SR. */
        struct storage_send_item *items = calloc(2 * job.n_destinations + 1, sizeof *items);
        size_t n_items = 0;
        if (!items && jr == 0) {
            snprintf(why, sizeof why, "out of memory");
            jr = -1;
        }
        for (size_t d = 0; jr == 0 && d < job.n_destinations; d++) {
            items[n_items++] = (struct storage_send_item){
                job.destinations[d], "seg", res.seg_path, res.seg.sop_class_uid, res.seg.sop_instance_uid,
                res.seg.transfer_syntax};
            items[n_items++] = (struct storage_send_item){
                job.destinations[d], "sr", res.sr_path, res.sr.sop_class_uid, res.sr.sop_instance_uid,
                res.sr.transfer_syntax};
        }
        int64_t end = service_now_ms();
        if (jr == -2) {
            storage_job_release(r->store, job.id, w->owner);
            log_msg(LOG_INFO, "job %lld: interrupted by the stop, queued again",
                    (long long)job.id);
        } else if (jr == -3) {
            log_msg(LOG_WARN, "job %lld: its lease was taken over; dropping this run",
                    (long long)job.id);
        } else {
            if (storage_job_finish(r->store, job.id, w->owner, end, jr == 0 ? NULL : why,
                                   jr == 0 ? result : NULL, summary, items, n_items) !=
                STORAGE_OK)
                log_msg(LOG_WARN, "job %lld: could not record its end (lease lost?)",
                        (long long)job.id);
            else if (jr == 0) {
                log_msg(LOG_INFO, "job %lld: done in %.1f s", (long long)job.id,
                        (end - now) / 1000.0);
                if (n_items && r->sender)
                    sender_wake(r->sender);
            }
            else
                log_msg(LOG_WARN, "job %lld: failed: %s", (long long)job.id, why);
        }
        free(summary);
        free(items);
        storage_job_clear(&job);
        malloc_trim(0); /* an idle node hands a job's memory back */
    }
    infer_model_free(model);
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
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->r = r;
    w->model = m;
    snprintf(w->name, sizeof w->name, "%s", m->name);
    snprintf(w->owner, sizeof w->owner, "%ld/%s/%zu", (long)getpid(), m->name,
             r->n_workers);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        free(w);
        snprintf(err, errlen, "cannot start a worker thread for %s", m->name);
        return -1;
    }
    r->workers[r->n_workers++] = w;
    return 0;
}

/* A device that is not there is an error, never a CPU run. */
int runner_check_devices(const struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->n_models; i++) {
        char why[256];
        if (infer_device_check(cfg->models[i].device, why, sizeof why) != INFER_OK) {
            snprintf(err, errlen, "model %s: %s", cfg->models[i].name, why);
            return -1;
        }
    }
    return 0;
}

int runner_start(const struct config *cfg, struct storage *st, struct sender *sender,
                 struct runner **out, char *err, size_t errlen)
{
    *out = NULL;
    if (runner_check_devices(cfg, err, errlen) != 0)
        return -1;
    struct runner *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->cfg = cfg;
    r->store = st;
    r->sender = sender;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    for (size_t i = 0; i < cfg->n_models; i++)
        for (int j = 0; j < cfg->models[i].workers; j++)
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

void runner_set_config(struct runner *r, const struct config *cfg)
{
    atomic_store(&r->cfg, cfg);
    /* Models removed, or fewer workers: the extra ones finish their job. */
    for (size_t i = r->n_workers; i-- > 0;) {
        struct worker *w = r->workers[i];
        if (atomic_load(&w->retire))
            continue;
        const struct config_model *m = config_find_model(cfg, w->name);
        if (!m || active_workers(r, w->name) > m->workers) {
            atomic_store(&w->retire, 1);
            log_msg(LOG_INFO, "model %s: a worker retires", w->name);
        }
    }
    /* Models added, or more workers. */
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        char err[256];
        for (int j = active_workers(r, m->name); j < m->workers; j++)
            if (start_worker(r, m, err, sizeof err) != 0)
                log_msg(LOG_ERROR, "%s", err);
            else
                log_msg(LOG_INFO, "model %s: a worker starts", m->name);
    }
    runner_wake(r);
}

void runner_wake(struct runner *r)
{
    pthread_mutex_lock(&r->lock);
    r->wakeups++;
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->lock);
}

void runner_stop(struct runner *r)
{
    if (!r)
        return;
    atomic_store(&r->stopping, 1);
    runner_wake(r);
    for (size_t i = 0; i < r->n_workers; i++) {
        pthread_join(r->workers[i]->thread, NULL);
        free(r->workers[i]);
    }
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    free(r->workers);
    free(r);
}
