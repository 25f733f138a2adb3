/*
 * jobs.c — the inference workers.
 *
 * When a study completes, runner_plan() (called by storage inside the
 * completing transaction) picks the models the rules ask for, one job per
 * (series, model). Each model has its own pool of worker threads; a worker
 * claims a job with a lease, renews the lease while the model runs, and
 * finishes the job as done (results written under DATA_DIR/results) or
 * failed (with the reason). Workers run at a lower CPU priority than the
 * receiver, which must keep its speed while models run.
 *
 * A job, start to end: the series' files are decoded (dicom/), assembled
 * into one volume along the slice normal, prepared as the manifest says
 * (clip, scale, resample to the model's spacing), run through the model
 * patch by patch, and the labels brought back onto the source grid.
 */
#include "config/config.h"
#include "dicom/dicom.h"
#include "inference/inference.h"
#include "service/log.h"
#include "service/service.h"
#include "storage/storage.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LEASE_MS 60000            /* a job whose worker vanished runs again after this */
#define RENEW_EVERY_MS 10000
#define IDLE_WAIT_MS 1000         /* a worker rechecks the queue at least this often */
#define MAX_TILT_DEGREES 1.0

struct worker {
    struct runner *r;
    const struct config_model *model;
    int index;
    pthread_t thread;
    int started;
    char owner[160];
};

struct runner {
    const struct config *cfg;
    struct storage *store;
    struct worker *workers;
    size_t n_workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    unsigned long wakeups;        /* bumped by runner_wake() */
    atomic_int stopping;
};

/* ------------------------------------------------------------------ */
/* Planning                                                            */

void runner_plan(void *ud, const struct storage_series *s, struct storage_plan *plan)
{
    const struct config *cfg = ud;
    /* The first rule that matches decides. */
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct config_rule *rule = &cfg->rules[i];
        if (rule->match_modality &&
            (!s->modality || strcasecmp(rule->match_modality, s->modality) != 0))
            continue;
        for (size_t m = 0; m < rule->n_run; m++)
            storage_plan_add(plan, rule->run[m]);
        return;
    }
}

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

static int is_localizer(const char *image_type)
{
    return strstr(image_type, "LOCALIZER") != NULL;
}

/* Reads and decodes every instance of the series into slices. */
static int load_slices(const struct config_manifest *mf, const struct series_files *files,
                       struct dicom_image **images, struct infer_slice **slices_out,
                       size_t *n_out, char *err, size_t errlen)
{
    size_t n = 0, cap = 0;
    struct infer_slice *slices = NULL;
    for (size_t i = 0; i < files->n; i++) {
        char why[256];
        if (dicom_image_read(files->path[i], &images[i], why, sizeof why) != 0) {
            snprintf(err, errlen, "instance %zu of the series cannot be used: %s", i + 1, why);
            goto fail;
        }
        const struct dicom_image *img = images[i];
        if (is_localizer(img->image_type)) {
            snprintf(err, errlen, "a localizer is mixed into the series");
            goto fail;
        }
        if (mf->modality && strcasecmp(mf->modality, img->modality) != 0) {
            snprintf(err, errlen, "the series is %s; the model takes %s",
                     img->modality[0] ? img->modality : "of no modality", mf->modality);
            goto fail;
        }
        if (!img->has_geometry) {
            snprintf(err, errlen,
                     "an image lacks its position, orientation or pixel spacing");
            goto fail;
        }
        for (int f = 0; f < img->frames; f++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                struct infer_slice *ns = realloc(slices, cap * sizeof *ns);
                if (!ns) {
                    snprintf(err, errlen, "out of memory");
                    goto fail;
                }
                slices = ns;
            }
            struct infer_slice *s = &slices[n++];
            s->pixels = img->pixels + (size_t)f * img->rows * img->cols;
            s->rows = img->rows;
            s->cols = img->cols;
            memcpy(s->position, img->positions + 3 * f, sizeof s->position);
            memcpy(s->orientation, img->orientations + 6 * f, sizeof s->orientation);
            memcpy(s->pixel_spacing, img->pixel_spacing, sizeof s->pixel_spacing);
            s->source = (int)i;
            s->frame = f;
        }
    }
    *slices_out = slices;
    *n_out = n;
    return 0;
fail:
    free(slices);
    return -1;
}

static void preprocess(const struct config_manifest *mf, struct infer_volume *v)
{
    size_t n = (size_t)v->grid.nx * v->grid.ny * v->grid.nz;
    if (!mf->has_clip && mf->scale_offset == 0 && mf->scale_factor == 1)
        return;
    for (size_t i = 0; i < n; i++) {
        double x = v->data[i];
        if (mf->has_clip)
            x = x < mf->clip[0] ? mf->clip[0] : x > mf->clip[1] ? mf->clip[1] : x;
        v->data[i] = (float)((x + mf->scale_offset) * mf->scale_factor);
    }
}

static json_t *grid_json(const struct infer_grid *g)
{
    json_t *o = json_pack("{s:i, s:i, s:i}", "nx", g->nx, "ny", g->ny, "nz", g->nz);
    json_t *origin = json_array(), *spacing = json_array(), *dir = json_array();
    for (int i = 0; i < 3; i++) {
        json_array_append_new(origin, json_real(g->origin[i]));
        json_array_append_new(spacing, json_real(g->spacing[i]));
    }
    for (int i = 0; i < 9; i++)
        json_array_append_new(dir, json_real(g->dir[i]));
    json_object_set_new(o, "origin", origin);
    json_object_set_new(o, "spacing", spacing);
    json_object_set_new(o, "direction", dir);
    return o;
}

/* The per-label voxel counts and volumes: the job's summary. */
static json_t *label_summary(const struct config_manifest *mf, const uint8_t *labels,
                             size_t nvox, const struct infer_grid *g)
{
    int64_t counts[256] = {0};
    for (size_t i = 0; i < nvox; i++)
        counts[labels[i]]++;
    double voxel_ml = g->spacing[0] * g->spacing[1] * g->spacing[2] / 1000.0;
    json_t *o = json_object();
    for (size_t i = 0; i < mf->n_labels; i++) {
        const struct config_label *l = &mf->labels[i];
        char key[8];
        snprintf(key, sizeof key, "%d", l->value);
        json_object_set_new(o, key,
                            json_pack("{s:s, s:I, s:f}", "name", l->name, "voxels",
                                      (json_int_t)counts[l->value], "volume_ml",
                                      (double)counts[l->value] * voxel_ml));
    }
    return o;
}

/* Runs JOB; on failure returns -1 with the reason in ERR (stored on the job). */
static int run_job(struct worker *w, struct infer_model *model, const struct storage_job *job,
                   char *result, size_t resultlen, char **summary, char *err, size_t errlen)
{
    const struct config_model *cm = w->model;
    const struct config_manifest *mf = &cm->manifest;
    struct runner *r = w->r;
    struct series_files files = {0};
    struct dicom_image **images = NULL;
    struct infer_slice *slices = NULL;
    struct infer_volume vol = {0}, scaled = {0};
    uint8_t *labels = NULL, *model_labels = NULL;
    json_t *doc = NULL;
    char *text = NULL;
    int rc = -1;
    size_t n_slices = 0;

    if (storage_foreach_instance(r->store, job->series_uid, collect_file, &files) != STORAGE_OK) {
        snprintf(err, errlen, "cannot list the series' instances");
        goto out;
    }
    if (files.n == 0) {
        snprintf(err, errlen, "the series has no instances");
        goto out;
    }
    images = calloc(files.n, sizeof *images);
    if (!images) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (load_slices(mf, &files, images, &slices, &n_slices, err, errlen) != 0)
        goto out;
    struct infer_volume_limits lim = {mf->min_slices, MAX_TILT_DEGREES, 0.05};
    if (infer_volume_assemble(slices, n_slices, &lim, &vol, err, errlen) != INFER_OK)
        goto out;
    /* The decoded images were copied into the volume. */
    for (size_t i = 0; i < files.n; i++) {
        dicom_image_free(images[i]);
        images[i] = NULL;
    }
    preprocess(mf, &vol);

    const struct infer_volume *input = &vol;
    if (mf->has_spacing) {
        infer_grid_respace(&vol.grid, mf->spacing, &scaled.grid);
        size_t n = (size_t)scaled.grid.nx * scaled.grid.ny * scaled.grid.nz;
        if (!(scaled.data = malloc(n * sizeof *scaled.data))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        infer_resample(vol.data, &vol.grid, &scaled.grid, scaled.data);
        free(vol.data);
        vol.data = NULL;
        input = &scaled;
    }

    size_t model_vox = (size_t)input->grid.nx * input->grid.ny * input->grid.nz;
    size_t src_vox = (size_t)vol.grid.nx * vol.grid.ny * vol.grid.nz;
    if (!(model_labels = malloc(model_vox))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    struct job_ctx jc = {w, job, service_now_ms(), 0};
    struct infer_window win = {
        .patch = {mf->patch[0], mf->patch[1], mf->patch[2]},
        .margin = {mf->margin[0], mf->margin[1], mf->margin[2]},
        .overlap = mf->overlap,
        .blend = mf->blend == CONFIG_BLEND_GAUSSIAN ? INFER_BLEND_GAUSSIAN : INFER_BLEND_CONSTANT,
        .channels = mf->channels,
        .decision = mf->decision == CONFIG_DECISION_THRESHOLD ? INFER_THRESHOLD : INFER_ARGMAX,
        .threshold = (float)mf->threshold,
        .progress = on_progress,
        .progress_ud = &jc,
    };
    int irc = infer_sliding_window(model, input, &win, model_labels, err, errlen);
    if (irc == INFER_ECANCELLED) {
        rc = jc.lost ? -3 : -2;
        goto out;
    }
    if (irc != INFER_OK)
        goto out;
    if (input == &scaled) {
        if (!(labels = malloc(src_vox))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        infer_resample_labels(model_labels, &scaled.grid, &vol.grid, labels);
    } else {
        labels = model_labels;
        model_labels = NULL;
    }

    json_t *sum = label_summary(mf, labels, src_vox, &vol.grid);
    json_t *slices_json = json_array();
    for (int k = 0; k < vol.grid.nz; k++)
        json_array_append_new(slices_json,
                              json_pack("{s:s, s:i}", "sop_instance_uid",
                                        files.sop[vol.source[k]], "frame", vol.frame[k]));
    char labels_name[64];
    snprintf(labels_name, sizeof labels_name, "%lld.labels", (long long)job->id);
    /* The label file: one byte per voxel of "grid", slice k of it made
     * from slices[k] of the source series. */
    doc = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:o, s:O}", "job", (json_int_t)job->id,
                    "study_uid", job->study_uid, "series_uid", job->series_uid, "model",
                    cm->name, "labels_file", labels_name, "grid", grid_json(&vol.grid),
                    "slices", slices_json, "labels", sum);
    *summary = json_dumps(sum, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sum);
    text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text || !*summary) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (storage_write_result(r->store, job->id, text, labels, src_vox, result, resultlen, err,
                             errlen) != STORAGE_OK)
        goto out;
    rc = 0;
out:
    if (images)
        for (size_t i = 0; i < files.n; i++)
            dicom_image_free(images[i]);
    free(images);
    free(slices);
    free_files(&files);
    infer_volume_free(&vol);
    infer_volume_free(&scaled);
    free(labels);
    free(model_labels);
    json_decref(doc);
    free(text);
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
    /* Inference yields the CPU to the receiver. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
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
        int jr = model ? run_job(w, model, &job, result, sizeof result, &summary, why, sizeof why)
                       : (snprintf(why, sizeof why, "the model cannot be loaded: %s", err), -1);
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
                                   jr == 0 ? result : NULL, summary) != STORAGE_OK)
                log_msg(LOG_WARN, "job %lld: could not record its end (lease lost?)",
                        (long long)job.id);
            else if (jr == 0)
                log_msg(LOG_INFO, "job %lld: done in %.1f s", (long long)job.id,
                        (end - now) / 1000.0);
            else
                log_msg(LOG_WARN, "job %lld: failed: %s", (long long)job.id, why);
        }
        free(summary);
    }
    infer_model_free(model);
    return NULL;
}

int runner_start(const struct config *cfg, struct storage *st, struct runner **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    /* A device that is not there is a start-up error, never a CPU run. */
    for (size_t i = 0; i < cfg->n_models; i++) {
        char why[256];
        if (infer_device_check(cfg->models[i].device, why, sizeof why) != INFER_OK) {
            snprintf(err, errlen, "model %s: %s", cfg->models[i].name, why);
            return -1;
        }
    }
    struct runner *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->cfg = cfg;
    r->store = st;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    for (size_t i = 0; i < cfg->n_models; i++)
        r->n_workers += (size_t)cfg->models[i].workers;
    r->workers = calloc(r->n_workers ? r->n_workers : 1, sizeof *r->workers);
    if (!r->workers) {
        snprintf(err, errlen, "out of memory");
        runner_stop(r);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < cfg->n_models; i++) {
        for (int j = 0; j < cfg->models[i].workers; j++, k++) {
            struct worker *w = &r->workers[k];
            w->r = r;
            w->model = &cfg->models[i];
            w->index = j;
            snprintf(w->owner, sizeof w->owner, "%ld/%s/%d", (long)getpid(),
                     cfg->models[i].name, j);
            if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
                snprintf(err, errlen, "cannot start a worker thread for %s",
                         cfg->models[i].name);
                runner_stop(r);
                return -1;
            }
            w->started = 1;
        }
    }
    *out = r;
    return 0;
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
    for (size_t i = 0; i < r->n_workers; i++)
        if (r->workers[i].started)
            pthread_join(r->workers[i].thread, NULL);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    free(r->workers);
    free(r);
}
