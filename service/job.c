/*
 * job.c — one job: decode -> infer -> write results -> finish.
 *
 * The SEG and SR are written first (their UIDs are fixed from then on:
 * every later send of them is the same instance), then the labels and the
 * result document; the job is finished with its outbox items in one
 * transaction of the store. What a job computes is pipeline.c's.
 *
 * The stages that may crash the node are marked in the store before they
 * start and cleared when they end (storage_job_stage): "inference" (the
 * pipeline: decoding the series and running the model, one call) and
 * "results" (writing the SEG, the SR and the result files). The crash
 * guard adds what the store cannot learn by itself: which jobs were inside
 * a stage when the node died of a fatal signal (the crash record, see
 * storage.h). The next start quarantines those at once.
 */
#include "service/job.h"

#include "common/clock.h"
#include "common/crashpoint.h"
#include "common/error.h"
#include "common/labels.h"
#include "common/log.h"
#include "config/config.h"
#include "dicom/results.h"
#include "inference/inference.h"
#include "service/metrics.h"
#include "service/pipeline.h"
#include "storage/storage.h"

#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------------------ */
/* The crash guard                                                          */

/* The jobs inside a stage now, one slot per worker that is in one: what
 * the fatal signal handler reads. Only lock-free atomics and a path fixed
 * before the handler is installed: it runs in a dying process. */
#define GUARD_SLOTS 64

static atomic_llong guard_jobs[GUARD_SLOTS];
static _Thread_local int guard_slot = -1; /* the slot of this thread's job */
static char guard_path[4096];
static atomic_int guard_installed;

/* Writes "JOB SIG\n" with async-signal-safe calls only. */
static void guard_write(int fd, long long job, int sig)
{
    char line[48], tmp[24];
    size_t n = 0;
    for (int part = 0; part < 2; part++) {
        unsigned long long v = part == 0 ? (unsigned long long)job : (unsigned long long)sig;
        size_t k = 0;
        do
            tmp[k++] = (char)('0' + v % 10);
        while ((v /= 10) && k < sizeof tmp);
        while (k)
            line[n++] = tmp[--k];
        line[n++] = part == 0 ? ' ' : '\n';
    }
    ssize_t w = write(fd, line, n);
    (void)w;
}

/* A fatal signal: records the job this thread was running inside a stage
 * (or, when another thread died, e.g. one libtorch started for the model,
 * every job inside a stage), then dies of the signal as it would have. */
static void guard_on_signal(int sig)
{
    int fd = open(guard_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0) {
        int mine = guard_slot;
        for (int i = 0; i < GUARD_SLOTS; i++) {
            long long job = atomic_load(&guard_jobs[i]);
            if (job > 0 && (mine < 0 || mine == i))
                guard_write(fd, job, sig);
        }
        fsync(fd);
        close(fd);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

int job_guard_install(struct storage *store)
{
    if (atomic_exchange(&guard_installed, 1))
        return 0;
    snprintf(guard_path, sizeof guard_path, "%s", storage_crash_record_path(store));
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = guard_on_signal;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        if (sigaction(fatal[i], &sa, NULL) != 0)
            return -1;
    return 0;
}

/* JOB enters STAGE: marked in the store first (what any death finds),
 * then in the guard (what a crash adds). */
static void stage_enter(const struct job_context *ctx, const struct storage_job *job,
                        const char *stage)
{
    int rc = storage_job_stage(ctx->store, job->id, ctx->owner, stage, clock_now_ms());
    if (rc != STORAGE_OK)
        log_event(LOG_WARN, "job.stage_failed", LOG_IDS(.job = job->id, .model = job->model), "cannot record its stage: %s",
                  storage_strerror(rc));
    if (guard_slot < 0)
        for (int i = 0; i < GUARD_SLOTS && guard_slot < 0; i++) {
            long long free_slot = 0;
            if (atomic_compare_exchange_strong(&guard_jobs[i], &free_slot, (long long)job->id))
                guard_slot = i;
        }
    else
        atomic_store(&guard_jobs[guard_slot], (long long)job->id);
}

/* JOB left its stage: out of the guard, then out of the store. */
static void stage_leave(const struct job_context *ctx, const struct storage_job *job)
{
    if (guard_slot >= 0) {
        atomic_store(&guard_jobs[guard_slot], 0);
        guard_slot = -1;
    }
    storage_job_stage(ctx->store, job->id, ctx->owner, NULL, clock_now_ms());
}

const char *job_strerror(int result)
{
    switch (result) {
    case JOB_DONE: return "done";
    case JOB_FAILED: return "failed";
    case JOB_INTERRUPTED: return "interrupted by the stop";
    case JOB_LEASE_LOST: return "its lease went to another worker";
    default: return "unknown job result";
    }
}

/* The series' files: SOP Instance UIDs and paths, in the store's order. */
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

struct progress_ctx {
    const struct job_context *ctx;
    const struct storage_job *jobs; /* the job, or the jobs of a group, whose leases */
    size_t n_jobs;                  /* are renewed while the model runs */
    int64_t last_renew_ms;
    int lost;                     /* the lease went to another worker */
};

static int on_progress(void *ud, long done, long total)
{
    struct progress_ctx *pc = ud;
    (void)done, (void)total;
    if (pc->ctx->stopping && pc->ctx->stopping(pc->ctx->stopping_ud))
        return 1;
    int64_t now = clock_now_ms();
    if (now - pc->last_renew_ms >= JOB_RENEW_EVERY_MS) {
        pc->last_renew_ms = now;
        for (size_t i = 0; i < pc->n_jobs; i++)
            if (storage_job_renew(pc->ctx->store, pc->jobs[i].id, pc->ctx->owner,
                                  now + JOB_LEASE_MS) == STORAGE_ENOTFOUND) {
                pc->lost = 1;
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

static double seconds_since(int64_t start_ms)
{
    return (clock_now_ms() - start_ms) / 1000.0;
}

/* The result fields every writer of CM's results shares. */
static struct dicom_result result_of(const struct config_model *cm, const struct pipeline_output *out,
                                     char description[65])
{
    const struct config_manifest *mf = &cm->manifest;
    snprintf(description, 65, "%s", /* LO: 64 characters */
             mf->series_description ? mf->series_description : mf->algorithm_name);
    return (struct dicom_result){
        .sources = out->sources,
        .source_files = out->source,
        .source_frames = out->frame,
        .algorithm_name = mf->algorithm_name,
        .algorithm_version = mf->algorithm_version,
        .algorithm_family = {mf->algorithm_family.value, mf->algorithm_family.scheme,
                             mf->algorithm_family.meaning},
        .series_description = description,
        .series_number = mf->series_number,
        .manufacturer = "ainode",
        .software_version = AINODE_VERSION,
        .model_sha256 = cm->sha256[0] ? cm->sha256 : NULL,
        .manifest_sha256 = mf->sha256[0] ? mf->sha256 : NULL,
        .intended_use = mf->intended_use,
    };
}

/* Writes the SR of DR (referencing SEG, NULL for a classification)
 * durably under DATA_DIR/results; RES and T get its path and seconds. */
static int write_sr(struct storage *store, const struct storage_job *job,
                    const struct dicom_result *dr, const struct dicom_written *seg,
                    struct job_results *res, struct pipeline_timing *t, char *err,
                    size_t errlen)
{
    char name[64], tmp[4096];
    int64_t t0 = clock_now_ms();
    if (storage_result_name(job->id, STORAGE_RESULT_SR, name, sizeof name) != STORAGE_OK ||
        storage_result_temp(store, name, tmp, sizeof tmp) != STORAGE_OK ||
        dicom_write_sr(dr, seg, tmp, &res->sr, err, errlen) != DICOM_OK ||
        storage_adopt_result(store, tmp, name, res->sr_path, sizeof res->sr_path, err,
                             errlen) != STORAGE_OK) {
        if (!err[0])
            error_set(err, errlen, -1, "cannot write the measurement report");
        return -1;
    }
    CRASH_POINT("results.sr_written");
    t->sr = seconds_since(t0);
    return 0;
}

/* A detection's boxes for its SR, each named after its class and its
 * number among that class's boxes ("Nodule 1", "Nodule 2", ...): NAMES
 * holds the text. NULL when out of memory. */
static struct dicom_box *sr_boxes(const struct config_manifest *mf,
                                  const struct pipeline_output *out, char (**names)[80])
{
    size_t n = out->n_boxes ? out->n_boxes : 1;
    struct dicom_box *boxes = calloc(n, sizeof *boxes);
    int *seen = calloc(mf->n_classes + 1, sizeof *seen);
    *names = calloc(n, sizeof **names);
    if (!boxes || !seen || !*names) {
        free(boxes);
        free(seen);
        free(*names);
        *names = NULL;
        return NULL;
    }
    for (size_t i = 0; i < out->n_boxes; i++) {
        const struct pipeline_box *b = &out->boxes[i];
        const struct config_class *c = &mf->classes[b->cls - 1];
        snprintf((*names)[i], sizeof (*names)[i], "%s %d", c->name, ++seen[b->cls]);
        boxes[i] = (struct dicom_box){
            .name = (*names)[i],
            .finding = {c->finding.value, c->finding.scheme, c->finding.meaning},
            .slice = (int)b->image,
            .x1 = b->x1, .y1 = b->y1, .x2 = b->x2, .y2 = b->y2,
            .score = b->score,
        };
    }
    free(seen);
    return boxes;
}

/* Writes the SR of an image model durably under DATA_DIR/results, no SEG:
 * a classification's findings, a regression's values, or a detection's
 * classes (present when they have a box, the best score their certainty)
 * and boxes. */
static int write_findings(struct storage *store, const struct config_model *cm,
                          const struct storage_job *job, const struct pipeline_output *out,
                          struct job_results *res, struct pipeline_timing *t, char *err,
                          size_t errlen)
{
    const struct config_manifest *mf = &cm->manifest;
    const int regression = mf->output_kind == CONFIG_OUTPUT_REGRESSION;
    const int detection = mf->output_kind == CONFIG_OUTPUT_DETECTION;
    struct dicom_finding *findings = calloc(mf->n_classes ? mf->n_classes : 1, sizeof *findings);
    struct dicom_value *values = calloc(mf->n_values ? mf->n_values : 1, sizeof *values);
    struct dicom_box *boxes = NULL;
    char (*box_names)[80] = NULL;
    if (!findings || !values || (detection && !(boxes = sr_boxes(mf, out, &box_names)))) {
        free(findings);
        free(values);
        return error_set(err, errlen, -1, "out of memory");
    }
    for (size_t i = 0; !regression && i < mf->n_classes; i++) {
        const struct config_class *c = &mf->classes[i];
        int present = detection ? 0 : pipeline_class_present(mf, out, i);
        /* A detection's class is present with any box: its boxes already
         * passed output.score_threshold. */
        for (size_t b = 0; detection && b < out->n_boxes; b++)
            present |= out->boxes[b].cls == c->value;
        findings[i] = (struct dicom_finding){
            .name = c->name,
            .finding = {c->finding.value, c->finding.scheme, c->finding.meaning},
            .probability = out->probability[i],
            .present = present,
        };
    }
    for (size_t i = 0; regression && i < mf->n_values; i++) {
        const struct config_value *v = &mf->values[i];
        values[i] = (struct dicom_value){
            .name = v->name,
            .concept = {v->concept.value, v->concept.scheme, v->concept.meaning},
            .unit = {v->unit.value, v->unit.scheme, v->unit.meaning},
            .value = out->value[i],
        };
    }
    char description[65];
    struct dicom_result dr = result_of(cm, out, description);
    dr.nz = (int)out->n_images;
    if (regression) {
        dr.values = values;
        dr.n_values = mf->n_values;
    } else {
        dr.findings = findings;
        dr.n_findings = mf->n_classes;
    }
    if (detection) {
        dr.boxes = boxes;
        dr.n_boxes = out->n_boxes;
    }
    int rc = write_sr(store, job, &dr, NULL, res, t, err, errlen);
    free(findings);
    free(values);
    free(boxes);
    free(box_names);
    return rc;
}

/* Writes the job's SEG and SR durably under DATA_DIR/results. */
static int write_dicom_results(struct storage *store, const struct config_model *cm,
                               const struct storage_job *job, const struct pipeline_output *out,
                               struct job_results *res, struct pipeline_timing *t, char *err,
                               size_t errlen)
{
    const struct config_manifest *mf = &cm->manifest;
    if (mf->output_kind == CONFIG_OUTPUT_CLASSIFICATION ||
        mf->output_kind == CONFIG_OUTPUT_REGRESSION || mf->output_kind == CONFIG_OUTPUT_DETECTION)
        return write_findings(store, cm, job, out, res, t, err, errlen);
    if (mf->output_kind == CONFIG_OUTPUT_EMBEDDING)
        return 0; /* features are for heads: nothing goes to a PACS */
    int64_t counts[256];
    for (int v = 0; v < 256; v++)
        counts[v] = labels_total(out->label_counts, (size_t)out->grid.nz, v);
    /* Images (input.kind image) have no depth: no volume, the SR gives areas. */
    const int images = mf->input_kind == CONFIG_INPUT_IMAGE;
    double voxel_ml = images ? 0
                             : out->grid.spacing[0] * out->grid.spacing[1] *
                                   out->grid.spacing[2] / 1000.0;

    int rc = -1;
    struct dicom_segment *segs = calloc(mf->n_labels ? mf->n_labels : 1, sizeof *segs);
    if (!segs) {
        error_set(err, errlen, -1, "out of memory");
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
    char description[65];
    struct dicom_result dr = result_of(cm, out, description);
    dr.nx = out->grid.nx;
    dr.ny = out->grid.ny;
    dr.nz = out->grid.nz;
    dr.labels = out->labels;
    dr.label_counts = out->label_counts;
    dr.images = images;
    dr.segments = segs;
    dr.n_segments = mf->n_labels;
    char name[64], tmp[4096];
    int64_t t0 = clock_now_ms();
    if (storage_result_name(job->id, STORAGE_RESULT_SEG, name, sizeof name) != STORAGE_OK ||
        storage_result_temp(store, name, tmp, sizeof tmp) != STORAGE_OK ||
        dicom_write_seg(&dr, tmp, &res->seg, err, errlen) != DICOM_OK ||
        storage_adopt_result(store, tmp, name, res->seg_path, sizeof res->seg_path, err,
                             errlen) != STORAGE_OK) {
        if (!err[0])
            error_set(err, errlen, -1, "cannot write the segmentation");
        goto out;
    }
    CRASH_POINT("results.seg_written"); /* a SEG on disk that nothing refers to */
    t->seg = seconds_since(t0);
    rc = write_sr(store, job, &dr, &res->seg, res, t, err, errlen);
out:
    free(segs);
    return rc;
}

/* Computes JOB's results: JOB_DONE with RESULT (the result document's
 * path), *SUMMARY and RES filled, else JOB_FAILED (reason in ERR),
 * JOB_INTERRUPTED or JOB_LEASE_LOST. */
static int compute(const struct job_context *ctx, const struct storage_job *job, char *result,
                   size_t resultlen, char **summary, struct job_results *res, char *err,
                   size_t errlen)
{
    const struct config_model *cm = ctx->model_cfg;
    struct series_files files = {0};
    struct pipeline_output out = {0};
    struct pipeline_timing t;
    char *text = NULL;
    unsigned char *packed = NULL;
    size_t packed_len = 0;
    int rc = JOB_FAILED;

    if (storage_foreach_job_instance(ctx->store, job->id, collect_file, &files) !=
        STORAGE_OK) {
        error_set(err, errlen, JOB_FAILED, "cannot list the series' instances");
        goto done;
    }
    struct progress_ctx pc = {ctx, job, 1, clock_now_ms(), 0};
    stage_enter(ctx, job, "inference");
    CRASH_POINT("inference.started");
    int prc = pipeline_run(cm, ctx->model, (const char *const *)files.path, files.n, on_progress,
                           &pc, &out, &t, err, errlen);
    stage_leave(ctx, job);
    if (prc == PIPELINE_ECANCELLED) {
        rc = pc.lost ? JOB_LEASE_LOST : JOB_INTERRUPTED;
        goto done;
    }
    if (prc != 0)
        goto done;
    CRASH_POINT("inference.done"); /* labels in memory only */
    stage_enter(ctx, job, "results");
    if (write_dicom_results(ctx->store, cm, job, &out, res, &t, err, errlen) != 0)
        goto done;
    char labels_name[64];
    storage_result_name(job->id, STORAGE_RESULT_LABELS, labels_name, sizeof labels_name);
    text = pipeline_result_json(cm, &out, (const char *const *)files.sop, job->id, job->study_uid,
                                job->series_uid, labels_name, &t,
                                res->seg_path[0] ? res->seg.sop_instance_uid : NULL,
                                res->sr.sop_instance_uid, summary);
    if (!text || !*summary) {
        error_set(err, errlen, JOB_FAILED, "out of memory");
        goto done;
    }
    size_t nvox = (size_t)out.grid.nx * out.grid.ny * out.grid.nz;
    /* Label volumes compress ~100-fold: writing (and flushing) them whole
     * would compete with the receiver's own flushes for the disk. A
     * classification has no labels. */
    if (out.labels && gzip_buffer(out.labels, nvox, &packed, &packed_len) != 0) {
        error_set(err, errlen, JOB_FAILED, "cannot compress the labels");
        goto done;
    }
    if (storage_write_result(ctx->store, job->id, text, packed, packed_len, result, resultlen,
                             err, errlen) != STORAGE_OK)
        goto done;
    CRASH_POINT("results.files_written"); /* every file written, the job still running */
    log_event(LOG_DEBUG, "job.stages", LOG_IDS(.job = job->id, .model = job->model),
              "decode %.2f s, assemble %.2f s, preprocess %.2f s, model %.2f s, "
              "postprocess %.2f s, SEG %.2f s, SR %.2f s",
              t.decode, t.assemble, t.preprocess, t.model, t.postprocess,
            t.seg, t.sr);
    rc = JOB_DONE;
done:
    if (guard_slot >= 0)
        stage_leave(ctx, job);
    free_files(&files);
    pipeline_output_free(&out);
    free(text);
    free(packed);
    return rc;
}

/* Records which weights and manifest run JOB, before anything of it runs. */
static void record_identity(const struct job_context *ctx, const struct storage_job *job,
                            const struct config_model *cm)
{
    const char *model = cm->sha256[0] ? cm->sha256 : NULL;
    const char *manifest = cm->manifest.sha256[0] ? cm->manifest.sha256 : NULL;
    if (storage_job_identity(ctx->store, job->id, ctx->owner, model, manifest) != STORAGE_OK)
        log_event(LOG_WARN, "job.identity_failed", LOG_IDS(.job = job->id, .model = job->model), "could not record the model's identity");
}

/* Records how JOB ended (JR, from START_MS): finished with its result
 * document RESULT, SUMMARY and an outbox item per result file of RES and
 * destination, failed with WHY, or given back to the queue. Returns JR, or
 * JOB_LEASE_LOST when another worker took it over meanwhile. */
static int finish(const struct job_context *ctx, const struct storage_job *job, int jr,
                  int64_t start_ms, const char *result, const char *summary,
                  const struct job_results *res, char *why, size_t whylen)
{
    /* Each destination of the job gets the SEG (when there is one) and the SR. */
    struct storage_send_item *items = calloc(2 * job->n_destinations + 1, sizeof *items);
    size_t n_items = 0;
    if (!items && jr == JOB_DONE)
        jr = error_set(why, whylen, JOB_FAILED, "out of memory");
    for (size_t d = 0; jr == JOB_DONE && d < job->n_destinations; d++) {
        if (res->seg_path[0])
            items[n_items++] = (struct storage_send_item){
                job->destinations[d], "seg", res->seg_path, res->seg.sop_class_uid,
                res->seg.sop_instance_uid, res->seg.transfer_syntax};
        if (res->sr_path[0]) /* an encoder's features go nowhere */
            items[n_items++] = (struct storage_send_item){
                job->destinations[d], "sr", res->sr_path, res->sr.sop_class_uid,
                res->sr.sop_instance_uid, res->sr.transfer_syntax};
    }
    int64_t end = clock_now_ms();
    if (jr == JOB_INTERRUPTED) {
        storage_job_release(ctx->store, job->id, ctx->owner);
        log_event(LOG_INFO, "job.interrupted", LOG_IDS(.job = job->id, .model = job->model), "interrupted by the stop, queued again");
    } else if (jr == JOB_LEASE_LOST) {
        log_event(LOG_WARN, "job.lease_lost", LOG_IDS(.job = job->id, .model = job->model), "its lease was taken over; dropping this run");
    } else {
        int frc = storage_job_finish(ctx->store, job->id, ctx->owner, end,
                                     jr == JOB_DONE ? NULL : why, jr == JOB_DONE ? result : NULL,
                                     summary, items, n_items);
        if (frc == STORAGE_ENOTFOUND) {
            log_event(LOG_WARN, "job.lease_lost", LOG_IDS(.job = job->id, .model = job->model),
                      "its lease was taken over before it ended; dropping this run");
            jr = JOB_LEASE_LOST;
        } else if (frc != STORAGE_OK) {
            log_event(LOG_WARN, "job.finish_failed", LOG_IDS(.job = job->id, .model = job->model), "could not record its end: %s",
                      storage_strerror(frc));
        } else {
            metrics_job_finished(job->model, jr == JOB_DONE, (end - start_ms) / 1000.0);
            if (jr == JOB_DONE)
                log_event(LOG_INFO, "job.done", LOG_IDS(.job = job->id, .model = job->model), "done in %.1f s",
                          (end - start_ms) / 1000.0);
            else
                log_event(LOG_WARN, "job.failed", LOG_IDS(.job = job->id, .model = job->model), "failed: %s", why);
        }
    }
    free(items);
    return jr;
}

int job_run(const struct job_context *ctx, const struct storage_job *job, char *why,
            size_t whylen)
{
    record_identity(ctx, job, ctx->model_cfg);
    int64_t start = clock_now_ms();
    char result[4096] = "";
    char *summary = NULL;
    struct job_results res;
    memset(&res, 0, sizeof res);
    if (whylen)
        why[0] = '\0';
    int jr = ctx->model ? compute(ctx, job, result, sizeof result, &summary, &res, why, whylen)
                        : error_set(why, whylen, JOB_FAILED, "the model cannot be loaded: %s",
                                    ctx->load_error ? ctx->load_error : "unknown reason");
    jr = finish(ctx, job, jr, start, result, summary, &res, why, whylen);
    free(summary);
    return jr;
}

/* ------------------------------------------------------------------------ */
/* Encoder groups                                                           */

/* The group's record: its jobs, and the encoder's runs, forwards, seconds. */
static json_t *group_json(const struct job_context *ctx, const struct storage_job *jobs,
                          size_t n, const struct pipeline_output *enc,
                          const struct pipeline_timing *t)
{
    json_t *ids = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ids, json_integer((json_int_t)jobs[i].id));
    return json_pack("{s:s, s:o, s:i, s:i, s:f}", "model", ctx->model_cfg->name, "jobs", ids,
                     "runs", 1, "forwards", enc->forwards, "seconds", t->model);
}

/* TEXT (a JSON object, malloc'ed) with KEY = VALUE added; VALUE is taken.
 * TEXT is freed and replaced; NULL when out of memory. */
static char *json_with(char *text, const char *key, json_t *value)
{
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    char *out = NULL;
    if (doc && value && json_object_set(doc, key, value) == 0)
        out = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    return out;
}

/* The head of CTX named NAME, or NULL. */
static const struct job_head *find_head(const struct job_context *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_heads; i++)
        if (!strcmp(ctx->heads[i].cfg->name, name))
            return &ctx->heads[i];
    return NULL;
}

/* One job of a group, from the encoder's output ENC: the encoder's own
 * job keeps the features, a head's runs on them and writes its SR. */
static int group_member(const struct job_context *ctx, const struct storage_job *job,
                        const struct series_files *files, struct pipeline_output *enc,
                        json_t *group, char *result, size_t resultlen, char **summary,
                        struct job_results *res, char *err, size_t errlen)
{
    const struct config_model *cm = ctx->model_cfg;
    const struct job_head *h = NULL;
    struct pipeline_output head_out = {0};
    const struct pipeline_output *out = enc;
    struct pipeline_timing t = {0};
    char *text = NULL;
    int rc = JOB_FAILED;
    if (strcmp(job->model, cm->name) != 0 && !(h = find_head(ctx, job->model)))
        return error_set(err, errlen, JOB_FAILED, "model %s no longer reads the features of %s",
                         job->model, cm->name);
    record_identity(ctx, job, h ? h->cfg : cm);
    if (h) {
        if (!h->model)
            return error_set(err, errlen, JOB_FAILED, "the model cannot be loaded: %s",
                             h->load_error ? h->load_error : "unknown reason");
        cm = h->cfg;
        stage_enter(ctx, job, "inference");
        int prc = pipeline_run_head(cm, h->model, enc, &head_out, &t, err, errlen);
        stage_leave(ctx, job);
        if (prc != 0)
            return JOB_FAILED;
        head_out.sources = enc->sources; /* borrowed for the SR */
        out = &head_out;
        stage_enter(ctx, job, "results");
        if (write_findings(ctx->store, cm, job, out, res, &t, err, errlen) != 0)
            goto done;
    }
    text = pipeline_result_json(cm, out, (const char *const *)files->sop, job->id,
                                job->study_uid, job->series_uid, "", &t, NULL,
                                res->sr_path[0] ? res->sr.sop_instance_uid : NULL, summary);
    text = json_with(text, "encoder", group);
    *summary = json_with(*summary, "encoder", group);
    if (!text || !*summary) {
        error_set(err, errlen, JOB_FAILED, "out of memory");
        goto done;
    }
    if (storage_write_result(ctx->store, job->id, text, NULL, 0, result, resultlen, err,
                             errlen) != STORAGE_OK)
        goto done;
    rc = JOB_DONE;
done:
    if (guard_slot >= 0)
        stage_leave(ctx, job);
    head_out.sources = NULL;
    pipeline_output_free(&head_out);
    free(text);
    return rc;
}

size_t job_run_group(const struct job_context *ctx, const struct storage_job *jobs, size_t n)
{
    int64_t start = clock_now_ms();
    struct series_files files = {0};
    struct pipeline_output enc = {0};
    struct pipeline_timing t = {0};
    char why[512] = "";
    size_t done = 0;
    int jr = JOB_FAILED;
    if (n == 0)
        return 0;
    if (!ctx->model) {
        error_set(why, sizeof why, JOB_FAILED, "the encoder %s cannot be loaded: %s",
                  ctx->model_cfg->name, ctx->load_error ? ctx->load_error : "unknown reason");
    } else if (storage_foreach_job_instance(ctx->store, jobs[0].id, collect_file, &files) !=
               STORAGE_OK) {
        error_set(why, sizeof why, JOB_FAILED, "cannot list the series' instances");
    } else {
        /* The encoder's run is every job's inference: a crash in it counts
         * against each (the store's marks; the guard holds the last). */
        struct progress_ctx pc = {ctx, jobs, n, clock_now_ms(), 0};
        for (size_t i = 0; i < n; i++)
            stage_enter(ctx, &jobs[i], "inference");
        int prc = pipeline_run(ctx->model_cfg, ctx->model, (const char *const *)files.path,
                               files.n, on_progress, &pc, &enc, &t, why, sizeof why);
        for (size_t i = 0; i < n; i++)
            storage_job_stage(ctx->store, jobs[i].id, ctx->owner, NULL, clock_now_ms());
        if (guard_slot >= 0)
            stage_leave(ctx, &jobs[n - 1]);
        jr = prc == PIPELINE_ECANCELLED ? (pc.lost ? JOB_LEASE_LOST : JOB_INTERRUPTED)
             : prc != 0                 ? JOB_FAILED
                                        : JOB_DONE;
        if (prc != 0 && prc != PIPELINE_ECANCELLED) {
            char inner[sizeof why];
            snprintf(inner, sizeof inner, "%s", why);
            error_set(why, sizeof why, JOB_FAILED, "the encoder %s: %s", ctx->model_cfg->name,
                      inner);
        }
    }
    json_t *group = jr == JOB_DONE ? group_json(ctx, jobs, n, &enc, &t) : NULL;
    if (group)
        log_event(LOG_INFO, "encoder.done", LOG_IDS(.model = ctx->model_cfg->name),
                  "%d forward(s) in %.2f s for %zu job(s) of one series", enc.forwards, t.model,
                  n);
    for (size_t i = 0; i < n; i++) {
        char result[4096] = "", err[512] = "";
        char *summary = NULL;
        struct job_results res;
        memset(&res, 0, sizeof res);
        int r = jr;
        if (r == JOB_DONE)
            r = group_member(ctx, &jobs[i], &files, &enc, group, result, sizeof result,
                             &summary, &res, err, sizeof err);
        else
            snprintf(err, sizeof err, "%s", why);
        if (finish(ctx, &jobs[i], r, start, result, summary, &res, err, sizeof err) == JOB_DONE)
            done++;
        free(summary);
    }
    json_decref(group);
    free_files(&files);
    pipeline_output_free(&enc);
    return done;
}
