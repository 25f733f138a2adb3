/*
 * pipeline.c — one model on one series, from files to labels.
 *
 *   decode      every file's pixels after the Modality LUT (dicom/), straight into
 *               the volume's planes: as int16 when the model reads the values
 *               as they are and they are all integers in its range (CT in HU:
 *               half the memory), else as float
 *   assemble    one volume, slices ordered along their normal, or a refusal
 *   preprocess  clip and scale as the manifest says; resample to its spacing
 *   model       the model patch by patch (sliding window)
 *   postprocess labels back onto the source grid; counts and volumes
 *
 * Used by one job (job.c) and by `ainode infer` (cli_infer.c).
 */
#include "service/pipeline.h"
#include "service/pipeline_internal.h"

#include "common/buffer.h"
#include "common/checked.h"
#include "common/crashpoint.h"
#include "common/labels.h"
#include "common/limits.h"
#include "config/config.h"
#include "dicom/image.h"
#include "inference/inference.h"

#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_TILT_DEGREES 1.0

const char *pipeline_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case PIPELINE_EFAILED: return "the series or the model failed";
    case PIPELINE_ECANCELLED: return "cancelled";
    default: return "unknown pipeline error";
    }
}

void pipeline_tune_allocator(void)
{
    /* A model run allocates and frees tensors of tens of MB per patch.
     * glibc would map and unmap each (a page fault per 4 KB touched, every
     * time); kept on the heap they are reused. Memory goes back to the
     * system after each job (malloc_trim in the workers). */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

static int is_localizer(const char *image_type)
{
    return strstr(image_type, "LOCALIZER") != NULL;
}

/* Lists the frames of every file of SRC as slices, from the headers alone
 * (pixels NULL): what the model takes and the geometry are checked before
 * anything is decoded. */
static int list_slices(const struct config_manifest *mf, const struct dicom_sources *src,
                       struct infer_slice **slices_out, size_t *n_out, char *err, size_t errlen)
{
    size_t n = 0, cap = 0;
    struct infer_slice *slices = NULL;
    for (size_t i = 0; i < dicom_sources_count(src); i++) {
        const struct dicom_image *img = dicom_sources_image(src, i);
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
            snprintf(err, errlen, "an image lacks its position, orientation or pixel spacing");
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
            s->pixels = NULL;
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

/* Decoding files straight into a volume's planes, on several threads:
 * thread t takes files t, t + T, t + 2T, ... */
struct decode_part {
    struct dicom_sources *src;
    struct infer_volume *v;
    const size_t *first;          /* each file's first slice, n_files + 1 */
    const size_t *z;              /* slice -> plane */
    uint8_t *wide;                /* files whose values need floats (set, or read) */
    size_t start, step;
    size_t failed;                /* first file that failed, or SIZE_MAX */
    char why[512];
};

/* Decodes file I into planes of P's volume (int16 or float, as it is laid
 * out); a multi-frame file's frames go through FRAMES, grown as needed. */
static int decode_file(struct decode_part *p, size_t i, void **frames, size_t *frames_cap)
{
    const size_t plane = (size_t)p->v->grid.nx * (size_t)p->v->grid.ny;
    const size_t nf = p->first[i + 1] - p->first[i];
    const size_t size = p->v->data16 ? sizeof *p->v->data16 : sizeof *p->v->data;
    char *base = p->v->data16 ? (char *)p->v->data16 : (char *)p->v->data;
    void *into = base + p->z[p->first[i]] * plane * size;
    if (nf > 1) {
        if (nf * plane > *frames_cap) {
            free(*frames);
            *frames_cap = nf * plane; /* within the volume: no overflow */
            if (!(*frames = malloc(*frames_cap * size))) {
                *frames_cap = 0;
                snprintf(p->why, sizeof p->why, "out of memory");
                return DICOM_ENOMEM;
            }
        }
        into = *frames;
    }
    const size_t cap = nf > 1 ? *frames_cap : plane;
    int rc = p->v->data16
                 ? dicom_sources_decode_into_int16(p->src, i, into, cap, p->why, sizeof p->why)
                 : dicom_sources_decode_into(p->src, i, into, cap, p->why, sizeof p->why);
    if (rc != DICOM_OK)
        return rc;
    for (size_t f = 0; nf > 1 && f < nf; f++)
        memcpy(base + p->z[p->first[i] + f] * plane * size, (char *)*frames + f * plane * size,
               plane * size);
    return DICOM_OK;
}

static void *decode_part_main(void *arg)
{
    struct decode_part *p = arg;
    const size_t n_files = dicom_sources_count(p->src);
    const int narrow = p->v->data16 != NULL;
    void *frames = NULL;
    size_t frames_cap = 0;
    for (size_t i = p->start; i < n_files; i += p->step) {
        /* The second pass, into floats, decodes only the files the first
         * could not keep narrow. */
        if (!narrow && p->wide && !p->wide[i])
            continue;
        int rc = decode_file(p, i, &frames, &frames_cap);
        if (rc == DICOM_ERANGE && narrow) {
            p->wide[i] = 1;
            continue;
        }
        if (rc != DICOM_OK) {
            p->failed = i;
            break;
        }
    }
    free(frames);
    return NULL;
}

/* Runs the parts of one pass over SRC into V on up to THREADS threads.
 * WIDE (may be NULL) marks the files an int16 pass could not take, or
 * limits a float pass to them. */
static int decode_pass(struct dicom_sources *src, struct infer_volume *v, const size_t *first,
                       const size_t *z, uint8_t *wide, int threads, char *err, size_t errlen)
{
    enum { MAX_DECODERS = 16 };
    const size_t n_files = dicom_sources_count(src);
    size_t n = threads < 1 ? 1 : threads > MAX_DECODERS ? MAX_DECODERS : (size_t)threads;
    n = n > n_files ? n_files : n;
    struct decode_part parts[MAX_DECODERS];
    pthread_t tid[MAX_DECODERS];
    size_t started = 1;
    for (size_t t = 0; t < n; t++)
        parts[t] = (struct decode_part){src, v, first, z, wide, t, n, SIZE_MAX, ""};
    /* The caller's thread decodes part 0; a thread that cannot start
     * leaves its part to the caller too. */
    for (size_t t = 1; t < n; t++, started++)
        if (pthread_create(&tid[t], NULL, decode_part_main, &parts[t]) != 0)
            break;
    decode_part_main(&parts[0]);
    for (size_t t = started; t < n; t++)
        decode_part_main(&parts[t]);
    for (size_t t = 1; t < started; t++)
        pthread_join(tid[t], NULL);
    size_t worst = 0;
    for (size_t t = 1; t < n; t++)
        if (parts[t].failed < parts[worst].failed)
            worst = t;
    if (parts[worst].failed != SIZE_MAX) {
        snprintf(err, errlen, "the series cannot be used: %s", parts[worst].why);
        return -1;
    }
    return 0;
}

/* Decodes every file of SRC into the planes of V (laid out by
 * infer_volume_layout) on up to THREADS threads; each file is decoded
 * once, straight into its planes. An int16 volume whose files do not all
 * fit int16 becomes a float one: its planes are widened and the files
 * that did not fit are decoded again, as floats. On failure ERR names the
 * first file that failed. */
static int decode_into_volume(struct dicom_sources *src, struct infer_volume *v, int threads,
                              char *err, size_t errlen)
{
    const size_t nz = (size_t)v->grid.nz, n_files = dicom_sources_count(src);
    size_t *first = calloc(n_files + 1, sizeof *first);
    size_t *z = malloc(nz * sizeof *z);
    uint8_t *wide = v->data16 ? calloc(n_files, 1) : NULL;
    int rc = -1;
    if (!first || !z || (v->data16 && !wide)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_files; i++)
        first[i + 1] = first[i] + (size_t)dicom_sources_image(src, i)->frames;
    for (size_t k = 0; k < nz; k++)
        z[first[v->source[k]] + (size_t)v->frame[k]] = k;
    if (decode_pass(src, v, first, z, wide, threads, err, errlen) != 0)
        goto out;
    if (wide && memchr(wide, 1, n_files)) {
        if (infer_volume_widen(v) != INFER_OK) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        if (decode_pass(src, v, first, z, wide, threads, err, errlen) != 0)
            goto out;
    }
    rc = 0;
out:
    free(first);
    free(z);
    free(wide);
    return rc;
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

int pipeline_count_labels(struct pipeline_output *o)
{
    if (!o->labels || o->label_counts)
        return 0;
    size_t nz = (size_t)o->grid.nz;
    if (!(o->label_counts = malloc(nz * LABELS_PER_PLANE * sizeof *o->label_counts)))
        return -1;
    labels_count(o->labels, (size_t)o->grid.nx * o->grid.ny, nz, o->label_counts);
    return 0;
}

void pipeline_output_free(struct pipeline_output *o)
{
    free(o->labels);
    free(o->label_counts);
    free(o->source);
    free(o->frame);
    free(o->image_probability);
    free(o->probability);
    free(o->features);
    free(o->image_value);
    free(o->value);
    free(o->boxes);
    dicom_sources_close(o->sources);
    memset(o, 0, sizeof *o);
}

int pipeline_run(const struct config_model *cm, struct infer_model *model,
                 const char *const *paths, size_t n_paths,
                 int (*progress)(void *ud, long done, long total), void *progress_ud,
                 struct pipeline_output *out, struct pipeline_timing *t, char *err,
                 size_t errlen)
{
    const struct config_manifest *mf = &cm->manifest;
    struct dicom_sources *src = NULL;
    struct infer_slice *slices = NULL;
    struct infer_volume vol = {0}, scaled = {0};
    uint8_t *model_labels = NULL;
    size_t n_slices = 0;
    int rc = PIPELINE_EFAILED;
    if (mf->input_kind == CONFIG_INPUT_IMAGE)
        return pipeline_run_images(cm, model, paths, n_paths, progress, progress_ud, out, t, err,
                                   errlen);
    memset(out, 0, sizeof *out);
    memset(t, 0, sizeof *t);

    double t0 = pipeline_seconds();
    if (n_paths == 0) {
        snprintf(err, errlen, "the series has no instances");
        return PIPELINE_EFAILED;
    }
    /* Headers first: sizes (against the job's budget), geometry, modality
     * and the volume's shape are all checked before a pixel is decoded. */
    char why[512];
    if (dicom_sources_parse(paths, n_paths, pipeline_max_voxels(cm), &src, why, sizeof why) !=
        DICOM_OK) {
        snprintf(err, errlen, "the series cannot be used: %s", why);
        goto out;
    }
    if (list_slices(mf, src, &slices, &n_slices, err, errlen) != 0)
        goto out;
    struct infer_volume_limits lim = {mf->min_slices, MAX_TILT_DEGREES, 0.05, pipeline_max_voxels(cm)};
    if (infer_volume_check(slices, n_slices, &lim, &vol.grid, err, errlen) != INFER_OK)
        goto out;
    /* The model's grid too: a resample over the budget fails before decoding. */
    if (mf->has_spacing && infer_grid_respace(&vol.grid, mf->spacing, pipeline_max_voxels(cm),
                                              &scaled.grid, err, errlen) != INFER_OK)
        goto out;
    /* The volume is laid out from the headers; each file is then decoded
     * straight into its planes, never into a copy of its own. */
    double t1 = pipeline_seconds();
    /* Kept as int16 (half the memory) while the model reads it as it is:
     * clipping, scaling and resampling need floats. */
    const enum infer_voxel voxel = !mf->has_clip && mf->scale_offset == 0 &&
                                           mf->scale_factor == 1 && !mf->has_spacing
                                       ? INFER_VOXEL_INT16
                                       : INFER_VOXEL_FLOAT;
    if (infer_volume_layout(slices, n_slices, &lim, voxel, &vol, err, errlen) != INFER_OK)
        goto out;
    double t_laid = pipeline_seconds();
    t->assemble = t_laid - t1;
    if (decode_into_volume(src, &vol, cm->threads, err, errlen) != 0)
        goto out;
    double t2 = pipeline_seconds();
    t->decode = (t1 - t0) + (t2 - t_laid);

    preprocess(mf, &vol);
    const struct infer_volume *input = &vol;
    if (mf->has_spacing) {
        /* The grid is checked against the budget before its buffer exists. */
        if (infer_grid_respace(&vol.grid, mf->spacing, pipeline_max_voxels(cm), &scaled.grid, err,
                               errlen) != INFER_OK)
            goto out;
        size_t n;
        if (!size_mul3_ok((size_t)scaled.grid.nx, (size_t)scaled.grid.ny,
                          (size_t)scaled.grid.nz, &n) ||
            !size_mul_ok(n, sizeof *scaled.data, &n) || !(scaled.data = buffer_alloc(n))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        infer_resample(vol.data, &vol.grid, &scaled.grid, scaled.data);
        free(vol.data); /* only its grid is needed from here on */
        vol.data = NULL;
        input = &scaled;
    }
    double t3 = pipeline_seconds();
    t->preprocess = t3 - t2;

    if (mf->input_kind == CONFIG_INPUT_SLICES && mf->output_kind == CONFIG_OUTPUT_CLASSIFICATION) {
        /* A score row per slice; the slices are the series' own. */
        size_t n = (size_t)vol.grid.nz, cells;
        float *scores = NULL;
        if (!size_mul_ok(n, (size_t)mf->channels, &cells) ||
            !(scores = malloc(cells * sizeof *scores))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        struct infer_window sw = {.channels = mf->channels, .progress = progress,
                                  .progress_ud = progress_ud, .max_voxels = pipeline_max_voxels(cm)};
        CRASH_POINT("inference.model");
        int src_rc = infer_slices(model, &vol, mf->batch, mf->context, &sw, NULL, scores, err,
                                  errlen);
        t->model = pipeline_seconds() - t3;
        if (src_rc == INFER_OK &&
            pipeline_take_scores(mf, scores, n, out, err, errlen) == 0) {
            out->source = vol.source;
            out->frame = vol.frame;
            vol.source = vol.frame = NULL;
            out->sources = src;
            src = NULL;
            rc = 0;
        } else {
            rc = src_rc == INFER_ECANCELLED ? PIPELINE_ECANCELLED : PIPELINE_EFAILED;
            pipeline_output_free(out);
        }
        free(scores);
        goto out;
    }

    size_t model_vox = (size_t)input->grid.nx * input->grid.ny * input->grid.nz;
    size_t src_vox = (size_t)vol.grid.nx * vol.grid.ny * vol.grid.nz;
    if (!(model_labels = buffer_alloc(model_vox))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    struct infer_window win = {
        .patch = {mf->patch[0], mf->patch[1], mf->patch[2]},
        .margin = {mf->margin[0], mf->margin[1], mf->margin[2]},
        .overlap = mf->overlap,
        .blend = mf->blend == CONFIG_BLEND_GAUSSIAN ? INFER_BLEND_GAUSSIAN : INFER_BLEND_CONSTANT,
        .channels = mf->channels,
        .decision = mf->decision == CONFIG_DECISION_THRESHOLD ? INFER_THRESHOLD : INFER_ARGMAX,
        .threshold = (float)mf->threshold,
        .progress = progress,
        .progress_ud = progress_ud,
        .max_voxels = pipeline_max_voxels(cm),
    };
    CRASH_POINT("inference.model"); /* the volume ready, the model about to run */
    int irc = mf->input_kind == CONFIG_INPUT_SLICES
                  ? infer_slices(model, input, mf->batch, mf->context, &win, model_labels, NULL,
                                 err, errlen)
                  : infer_sliding_window(model, input, &win, model_labels, err, errlen);
    if (irc != INFER_OK) {
        rc = irc == INFER_ECANCELLED ? PIPELINE_ECANCELLED : PIPELINE_EFAILED;
        goto out;
    }
    double t4 = pipeline_seconds();
    t->model = t4 - t3;

    if (input == &scaled) {
        if (!(out->labels = buffer_alloc(src_vox))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        infer_resample_labels(model_labels, &scaled.grid, &vol.grid, out->labels);
    } else {
        out->labels = model_labels;
        model_labels = NULL;
    }
    out->grid = vol.grid;
    out->source = vol.source;
    out->frame = vol.frame;
    vol.source = vol.frame = NULL;
    out->sources = src;
    src = NULL;
    if (pipeline_count_labels(out) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    t->postprocess = pipeline_seconds() - t4;
    rc = 0;
out:
    dicom_sources_close(src);
    free(slices);
    infer_volume_free(&vol);
    infer_volume_free(&scaled);
    free(model_labels);
    return rc;
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

/* An image segmentation's per-label pixel counts and areas: a projection
 * image has no volume. The area is in mm2 where every image holding the
 * label has a Pixel Spacing (each counted with its own), else null. */
static json_t *image_label_summary(const struct config_manifest *mf,
                                   const struct pipeline_output *o)
{
    const struct infer_grid *g = &o->grid;
    int64_t counts[256] = {0};
    double area[256] = {0};
    int no_spacing[256] = {0};
    for (int k = 0; k < g->nz; k++) {
        const int64_t *here = o->label_counts + (size_t)k * LABELS_PER_PLANE;
        const struct dicom_image *img =
            o->sources ? dicom_sources_image(o->sources, (size_t)o->source[k]) : NULL;
        const double pixel_mm2 = img ? img->pixel_spacing[0] * img->pixel_spacing[1] : 0;
        for (int v = 0; v < 256; v++) {
            counts[v] += here[v];
            area[v] += (double)here[v] * pixel_mm2;
            no_spacing[v] |= here[v] > 0 && !(pixel_mm2 > 0);
        }
    }
    json_t *sum = json_object();
    for (size_t i = 0; i < mf->n_labels; i++) {
        const struct config_label *l = &mf->labels[i];
        char key[8];
        snprintf(key, sizeof key, "%d", l->value);
        json_object_set_new(sum, key,
                            json_pack("{s:s, s:I, s:o}", "name", l->name, "pixels",
                                      (json_int_t)counts[l->value], "area_mm2",
                                      no_spacing[l->value] ? json_null()
                                                           : json_real(area[l->value])));
    }
    return sum;
}

/* The per-label voxel counts and volumes. */
static json_t *label_summary(const struct config_manifest *mf, const struct pipeline_output *o)
{
    if (mf->input_kind == CONFIG_INPUT_IMAGE)
        return image_label_summary(mf, o);
    const struct infer_grid *g = &o->grid;
    int64_t counts[256];
    for (int v = 0; v < 256; v++)
        counts[v] = labels_total(o->label_counts, (size_t)g->nz, v);
    double voxel_ml = g->spacing[0] * g->spacing[1] * g->spacing[2] / 1000.0;
    json_t *sum = json_object();
    for (size_t i = 0; i < mf->n_labels; i++) {
        const struct config_label *l = &mf->labels[i];
        char key[8];
        snprintf(key, sizeof key, "%d", l->value);
        json_object_set_new(sum, key,
                            json_pack("{s:s, s:I, s:f}", "name", l->name, "voxels",
                                      (json_int_t)counts[l->value], "volume_ml",
                                      (double)counts[l->value] * voxel_ml));
    }
    return sum;
}

/* Per class: its name, the series' probability and whether it is present. */
static json_t *finding_summary(const struct config_manifest *mf, const struct pipeline_output *o)
{
    json_t *sum = json_object();
    for (size_t i = 0; i < mf->n_classes && (int)i < o->n_classes; i++) {
        const struct config_class *c = &mf->classes[i];
        char key[8];
        snprintf(key, sizeof key, "%d", c->value);
        json_object_set_new(sum, key,
                            json_pack("{s:s, s:f, s:b}", "name", c->name, "probability",
                                      o->probability[i], "present",
                                      pipeline_class_present(mf, o, i)));
    }
    return sum;
}

/* Per value of a regression: its name, the series' value and its unit. */
static json_t *value_summary(const struct config_manifest *mf, const struct pipeline_output *o)
{
    json_t *sum = json_object();
    for (size_t i = 0; i < mf->n_values && (int)i < o->n_values; i++) {
        const struct config_value *v = &mf->values[i];
        char key[8];
        snprintf(key, sizeof key, "%d", v->value);
        json_object_set_new(sum, key,
                            json_pack("{s:s, s:f, s:s}", "name", v->name, "value", o->value[i],
                                      "unit", v->unit.value));
    }
    return sum;
}

/* Per class of a detection: its name, its boxes and their best score. */
static json_t *detection_summary(const struct config_manifest *mf,
                                 const struct pipeline_output *o)
{
    json_t *sum = json_object();
    for (size_t i = 0; i < mf->n_classes && (int)i < o->n_classes; i++) {
        const struct config_class *c = &mf->classes[i];
        json_int_t n = 0;
        for (size_t b = 0; b < o->n_boxes; b++)
            n += o->boxes[b].cls == c->value;
        char key[8];
        snprintf(key, sizeof key, "%d", c->value);
        json_object_set_new(sum, key,
                            json_pack("{s:s, s:I, s:f}", "name", c->name, "boxes", n,
                                      "best_score", o->probability[i]));
    }
    return sum;
}

/* A detection's boxes, each on its image in source pixel corners. */
static json_t *boxes_json(const struct config_manifest *mf, const struct pipeline_output *o,
                          const char *const *sops)
{
    json_t *boxes = json_array();
    for (size_t i = 0; i < o->n_boxes; i++) {
        const struct pipeline_box *b = &o->boxes[i];
        json_array_append_new(
            boxes, json_pack("{s:s, s:i, s:i, s:s, s:f, s:[f, f, f, f]}", "sop_instance_uid",
                             sops[o->source[b->image]], "frame", o->frame[b->image], "class",
                             b->cls, "name", mf->classes[b->cls - 1].name, "score", b->score,
                             "box", b->x1, b->y1, b->x2, b->y2));
    }
    return boxes;
}

int pipeline_class_present(const struct config_manifest *mf, const struct pipeline_output *o,
                           size_t i)
{
    return o->probability[i] >= mf->classes[i].threshold;
}

/* The images a classification evaluated, each with its probabilities (an
 * encoder's: with its features). */
static json_t *images_json(const struct pipeline_output *o, const char *const *sops)
{
    json_t *images = json_array();
    int n = o->features ? o->n_features : o->value ? o->n_values : o->n_classes;
    const float *v = o->features ? o->features : o->value ? o->image_value : o->image_probability;
    const char *key = o->features ? "features" : o->value ? "values" : "probabilities";
    for (size_t k = 0; k < o->n_images; k++) {
        json_t *p = json_array();
        for (int c = 0; v && c < n; c++)
            json_array_append_new(p, json_real(v[k * (size_t)n + (size_t)c]));
        if (!v) { /* a detection: its boxes are listed apart */
            json_decref(p);
            json_array_append_new(images, json_pack("{s:s, s:i}", "sop_instance_uid",
                                                    sops[o->source[k]], "frame", o->frame[k]));
            continue;
        }
        json_array_append_new(images, json_pack("{s:s, s:i, s:o}", "sop_instance_uid",
                                                sops[o->source[k]], "frame", o->frame[k], key,
                                                p));
    }
    return images;
}

/* What an encoder's job gives: features per image. */
static json_t *feature_summary(const struct pipeline_output *o)
{
    return json_pack("{s:i, s:I}", "features", o->n_features, "images",
                     (json_int_t)o->n_images);
}

/* What traces a result to the exact model: its algorithm, and the SHA-256
 * of its model file and manifest (null when unknown). */
static json_t *identity_json(const struct config_model *cm)
{
    const struct config_manifest *m = &cm->manifest;
    json_t *o = json_pack("{s:s, s:s}", "algorithm_name", m->algorithm_name,
                          "algorithm_version", m->algorithm_version);
    if (!o)
        return json_null();
    json_object_set_new(o, "model_sha256",
                        cm->sha256[0] ? json_string(cm->sha256) : json_null());
    json_object_set_new(o, "manifest_sha256",
                        m->sha256[0] ? json_string(m->sha256) : json_null());
    json_object_set_new(o, "intended_use",
                        m->intended_use ? json_string(m->intended_use) : json_null());
    return o;
}

char *pipeline_result_json(const struct config_model *cm, const struct pipeline_output *o,
                           const char *const *sops, int64_t job_id, const char *study_uid,
                           const char *series_uid, const char *labels_file,
                           const struct pipeline_timing *t, const char *seg_uid,
                           const char *sr_uid, char **summary)
{
    json_t *sum, *doc;
    const struct config_manifest *mf = &cm->manifest;
    if (o->probability || o->features || o->value) {
        const int detection = mf->output_kind == CONFIG_OUTPUT_DETECTION;
        sum = o->features  ? feature_summary(o)
              : o->value   ? value_summary(mf, o)
              : detection ? detection_summary(mf, o)
                           : finding_summary(mf, o);
        doc = json_pack("{s:I, s:s, s:s, s:s, s:o, s:O}", "job", (json_int_t)job_id,
                        "study_uid", study_uid, "series_uid", series_uid, "model", cm->name,
                        "images", images_json(o, sops),
                        o->features  ? "embedding"
                        : o->value   ? "values"
                        : detection ? "detections"
                                     : "findings",
                        sum);
        if (doc && detection)
            json_object_set_new(doc, "boxes", boxes_json(mf, o, sops));
    } else {
        sum = label_summary(&cm->manifest, o);
        json_t *slices = json_array();
        for (int k = 0; k < o->grid.nz; k++)
            json_array_append_new(slices, json_pack("{s:s, s:i}", "sop_instance_uid",
                                                    sops[o->source[k]], "frame", o->frame[k]));
        /* The label file: gzip of one byte per voxel of "grid", slice k of
         * it made from slices[k] of the source series. */
        doc = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:o, s:O}", "job", (json_int_t)job_id,
                        "study_uid", study_uid, "series_uid", series_uid, "model", cm->name,
                        "labels_file", labels_file, "grid", grid_json(&o->grid), "slices",
                        slices, "labels", sum);
    }
    if (doc) {
        json_object_set_new(doc, "seconds",
                            json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "decode", t->decode,
                                      "assemble", t->assemble, "preprocess", t->preprocess,
                                      "model", t->model, "postprocess", t->postprocess, "seg",
                                      t->seg, "sr", t->sr));
        json_object_set_new(doc, "identity", identity_json(cm));
        if (seg_uid)
            json_object_set_new(doc, "seg_sop_instance_uid", json_string(seg_uid));
        if (sr_uid)
            json_object_set_new(doc, "sr_sop_instance_uid", json_string(sr_uid));
    }
    *summary = json_dumps(sum, JSON_COMPACT | JSON_SORT_KEYS);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(sum);
    json_decref(doc);
    return text;
}

char *pipeline_summary_json(const struct config_model *cm, const struct pipeline_output *o)
{
    const struct config_manifest *mf = &cm->manifest;
    json_t *sum = o->features      ? feature_summary(o)
                  : o->value       ? value_summary(mf, o)
                  : mf->output_kind == CONFIG_OUTPUT_DETECTION ? detection_summary(mf, o)
                  : o->probability ? finding_summary(&cm->manifest, o)
                                   : label_summary(&cm->manifest, o);
    char *text = json_dumps(sum, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sum);
    return text;
}
