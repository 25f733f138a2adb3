/*
 * pipeline_image.c — one image model on one series: every image (every
 * frame of a multi-frame object) rendered as displayed, letterboxed to the
 * model's size, normalised, and run in batches; the scores become
 * probabilities per image and per series.
 *
 *   decode      header checks, then each file rendered (dicom/render.cpp)
 *   preprocess  letterbox and mean/std into the batch (inference/picture.c)
 *   model       one forward per batch of input.batch images
 *   postprocess activation, then the series' probability per class; a
 *               regression's values as given, then the series' per value;
 *               a detection's boxes mapped back onto their source images;
 *               a segmentation's labels decided per model pixel and mapped
 *               back onto each source image through its letterbox
 */
#include "service/pipeline.h"
#include "service/pipeline_internal.h"

#include "common/checked.h"
#include "common/crashpoint.h"
#include "config/config.h"
#include "dicom/image.h"
#include "inference/inference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The buffers of one run, reused from batch to batch. */
struct batch {
    const struct config_model *cm;
    struct infer_model *model;
    float *input;                 /* batch x channels x size[0] x size[1] */
    float *output;                /* batch x classes (a detection: batch x max_boxes x 6;
                                   * a segmentation: batch x classes x size0 x size1) */
    uint8_t *model_labels;        /* a segmentation: one image's labels on the model grid */
    struct infer_letterbox *lb;   /* each image's letterbox mapping */
    int (*dims)[2];               /* and its source rows, columns */
    size_t box_cap;
    size_t plane;                 /* channels x size[0] x size[1] */
    int filled;                   /* images in INPUT now */
    size_t done;                  /* images run so far */
    struct pipeline_output *out;
    double model_seconds;
    int forwards;
};

/* Turns row X of scores (N classes) into probabilities as the manifest
 * says; -1 when a score is not a number or, without an activation, not a
 * probability. */
static int activate(enum config_activation a, float *x, int n)
{
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return -1;
    if (a == CONFIG_ACTIVATION_SOFTMAX) {
        float top = x[0];
        for (int i = 1; i < n; i++)
            top = x[i] > top ? x[i] : top;
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += exp((double)x[i] - top);
        for (int i = 0; i < n; i++)
            x[i] = (float)(exp((double)x[i] - top) / sum);
    } else if (a == CONFIG_ACTIVATION_SIGMOID) {
        for (int i = 0; i < n; i++)
            x[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
    } else {
        for (int i = 0; i < n; i++)
            if (x[i] < 0 || x[i] > 1)
                return -1;
    }
    return 0;
}

/* Appends BOX to O's boxes. */
static int add_box(struct batch *b, const struct pipeline_box *box)
{
    struct pipeline_output *o = b->out;
    if (o->n_boxes == b->box_cap) {
        size_t cap = b->box_cap ? 2 * b->box_cap : 16;
        struct pipeline_box *p = realloc(o->boxes, cap * sizeof *p);
        if (!p)
            return -1;
        o->boxes = p;
        b->box_cap = cap;
    }
    o->boxes[o->n_boxes++] = *box;
    return 0;
}

/* A detection's rows (N per image: x1, y1, x2, y2, score, class in input
 * pixels) become boxes on the source images: the letterbox undone (input
 * corner X is source corner (X - left) / scale), clipped to the image;
 * rows below output.score_threshold, of class below 1, or empty once
 * clipped are dropped. -1 with ERR for a row that is not a box. */
static int take_boxes(struct batch *b, int n, char *err, size_t errlen)
{
    const struct config_manifest *mf = &b->cm->manifest;
    for (int i = 0; i < b->filled; i++) {
        const size_t image = b->done + (size_t)i;
        const struct infer_letterbox *lb = &b->lb[i];
        const double rows = b->dims[i][0], cols = b->dims[i][1];
        for (int r = 0; r < n; r++) {
            const float *row = b->output + ((size_t)i * (size_t)n + (size_t)r) * 6;
            for (int j = 0; j < 6; j++)
                if (!isfinite(row[j])) {
                    snprintf(err, errlen, "box %d of image %zu is not finite", r + 1, image + 1);
                    return -1;
                }
            if (row[4] < mf->score_threshold || row[5] < 1)
                continue;
            if (row[5] != floorf(row[5]) || row[5] > mf->channels || row[4] > 1) {
                snprintf(err, errlen, "box %d of image %zu has class %g and score %g; classes "
                                      "are 1..%d, scores 0..1", r + 1, image + 1,
                         (double)row[5], (double)row[4], mf->channels);
                return -1;
            }
            struct pipeline_box box = {.image = image, .cls = (int)row[5], .score = row[4]};
            box.x1 = fmin(fmax((row[0] - lb->left) / lb->scale, 0), cols);
            box.x2 = fmin(fmax((row[2] - lb->left) / lb->scale, 0), cols);
            box.y1 = fmin(fmax((row[1] - lb->top) / lb->scale, 0), rows);
            box.y2 = fmin(fmax((row[3] - lb->top) / lb->scale, 0), rows);
            if (!(box.x2 > box.x1 && box.y2 > box.y1))
                continue;
            double *p = &b->out->probability[box.cls - 1];
            *p = box.score > *p ? box.score : *p;
            if (add_box(b, &box) != 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

/* "1, 2, 3": the first dimensions of a tensor of shape SHAPE (ND of them). */
static void shape_text(const int64_t *shape, int nd, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int i = 0, n = 0; i < nd && i < 8 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, "%s%lld", i ? ", " : "", (long long)shape[i]);
}

/* Checks a detection's output shape, then takes its boxes. */
static int detect_batch(struct batch *b, const int64_t *oshape, int ond, char *err,
                        size_t errlen)
{
    const struct config_manifest *mf = &b->cm->manifest;
    if (ond != 3 || oshape[0] != b->filled || oshape[1] < 0 || oshape[1] > mf->max_boxes ||
        oshape[2] != 6) {
        char got[96];
        shape_text(oshape, ond, got, sizeof got);
        snprintf(err, errlen, "the model gave an output of shape [%s]; the manifest expects "
                              "[%d, at most %d, 6] (images, output.max_boxes, box)", got,
                 b->filled, mf->max_boxes);
        return -1;
    }
    if (take_boxes(b, (int)oshape[1], err, errlen) != 0)
        return -1;
    b->done += (size_t)b->filled;
    b->filled = 0;
    return 0;
}

/* A segmentation's output [images, channels, size0, size1]: each image's
 * labels decided on the model grid (argmax or threshold, as a volume's),
 * then mapped back onto its source pixels (infer_letterbox_unmap). */
static int segment_batch(struct batch *b, const int64_t *oshape, int ond, char *err,
                         size_t errlen)
{
    const struct config_manifest *mf = &b->cm->manifest;
    const int s0 = mf->size[0], s1 = mf->size[1];
    if (ond != 4 || oshape[0] != b->filled || oshape[1] != mf->channels || oshape[2] != s0 ||
        oshape[3] != s1) {
        char got[96];
        shape_text(oshape, ond, got, sizeof got);
        snprintf(err, errlen, "the model gave an output of shape [%s]; the manifest expects "
                              "[%d, %d, %d, %d] (images, output.channels, input.size)", got,
                 b->filled, mf->channels, s0, s1);
        return -1;
    }
    const size_t plane = (size_t)s0 * (size_t)s1;
    const struct infer_window w = {
        .channels = mf->channels,
        .decision = mf->decision == CONFIG_DECISION_THRESHOLD ? INFER_THRESHOLD : INFER_ARGMAX,
        .threshold = (float)mf->threshold,
    };
    struct pipeline_output *o = b->out;
    const size_t image_plane = (size_t)o->grid.nx * (size_t)o->grid.ny;
    for (int i = 0; i < b->filled; i++) {
        const float *scores = b->output + (size_t)i * (size_t)mf->channels * plane;
        const size_t image = b->done + (size_t)i;
        /* A NaN would lose every comparison and pass for background. */
        for (size_t v = 0; v < (size_t)mf->channels * plane; v++)
            if (!isfinite(scores[v])) {
                snprintf(err, errlen, "the model's scores for image %zu are not finite",
                         image + 1);
                return -1;
            }
        infer_decide(scores, mf->channels, plane, &w, b->model_labels);
        if (infer_letterbox_unmap(b->model_labels, s0, s1, &b->lb[i], b->dims[i][0],
                                  b->dims[i][1], o->labels + image * image_plane) != INFER_OK) {
            snprintf(err, errlen, "image %zu cannot be mapped back from the model", image + 1);
            return -1;
        }
    }
    b->done += (size_t)b->filled;
    b->filled = 0;
    return 0;
}

/* Runs the images in B's input; their probabilities go to the output. */
static int run_batch(struct batch *b, char *err, size_t errlen)
{
    const struct config_manifest *mf = &b->cm->manifest;
    if (b->filled == 0)
        return 0;
    int k = mf->channels;
    size_t cap = (size_t)mf->batch * (size_t)k;
    if (mf->output_kind == CONFIG_OUTPUT_DETECTION)
        cap = (size_t)mf->batch * (size_t)mf->max_boxes * 6;
    if (mf->output_kind == CONFIG_OUTPUT_SEGMENTATION)
        cap = b->plane / (size_t)mf->in_channels * (size_t)mf->batch * (size_t)k;
    int64_t shape[4] = {b->filled, mf->in_channels, mf->size[0], mf->size[1]}, oshape[8];
    /* A head's input is a row of features per image. */
    if (mf->from)
        shape[1] = b->out->n_features;
    int ond = 0;
    double t0 = pipeline_seconds();
    int rc = infer_model_run_into(b->model, b->input, shape, mf->from ? 2 : 4, b->output,
                                  cap, oshape, &ond, err, errlen);
    b->model_seconds += pipeline_seconds() - t0;
    b->forwards++;
    if (rc != INFER_OK)
        return -1;
    if (mf->output_kind == CONFIG_OUTPUT_DETECTION)
        return detect_batch(b, oshape, ond, err, errlen);
    if (mf->output_kind == CONFIG_OUTPUT_SEGMENTATION)
        return segment_batch(b, oshape, ond, err, errlen);
    if (ond != 2 || oshape[0] != b->filled || oshape[1] != k) {
        char got[96];
        shape_text(oshape, ond, got, sizeof got);
        snprintf(err, errlen, "the model gave an output of shape [%s]; the manifest expects "
                              "[%d, %d] (images, output.channels)", got, b->filled, k);
        return -1;
    }
    if (mf->output_kind == CONFIG_OUTPUT_EMBEDDING) {
        for (int i = 0; i < b->filled * k; i++)
            if (!isfinite(b->output[i])) {
                snprintf(err, errlen, "the model's features for image %zu are not finite",
                         b->done + (size_t)(i / k) + 1);
                return -1;
            }
        memcpy(b->out->features + b->done * (size_t)k, b->output,
               (size_t)b->filled * (size_t)k * sizeof *b->output);
        b->done += (size_t)b->filled;
        b->filled = 0;
        return 0;
    }
    if (mf->output_kind == CONFIG_OUTPUT_REGRESSION) {
        for (int i = 0; i < b->filled * k; i++)
            if (!isfinite(b->output[i])) {
                snprintf(err, errlen, "the model's values for image %zu are not finite",
                         b->done + (size_t)(i / k) + 1);
                return -1;
            }
        memcpy(b->out->image_value + b->done * (size_t)k, b->output,
               (size_t)b->filled * (size_t)k * sizeof *b->output);
        b->done += (size_t)b->filled;
        b->filled = 0;
        return 0;
    }
    for (int i = 0; i < b->filled; i++) {
        float *row = b->output + (size_t)i * k;
        if (activate(mf->activation, row, k) != 0) {
            snprintf(err, errlen, "the model's scores for image %zu are not %s",
                     b->done + (size_t)i + 1,
                     mf->activation == CONFIG_ACTIVATION_NONE ? "probabilities (0..1)"
                                                              : "finite numbers");
            return -1;
        }
        memcpy(b->out->image_probability + (b->done + (size_t)i) * (size_t)k, row,
               (size_t)k * sizeof *row);
    }
    b->done += (size_t)b->filled;
    b->filled = 0;
    return 0;
}

/* The series' N numbers from the images' (n_images x N at IMAGE): the max
 * or mean of each. */
static void aggregate_into(const struct config_manifest *mf, size_t n_images, int n,
                           const float *image, double *series)
{
    for (int c = 0; c < n; c++) {
        double acc = 0;
        for (size_t i = 0; i < n_images; i++) {
            double p = image[i * (size_t)n + (size_t)c];
            /* values may be negative: the max starts from the first image */
            acc = mf->aggregate == CONFIG_AGGREGATE_MEAN ? acc + p : i == 0 || p > acc ? p : acc;
        }
        if (mf->aggregate == CONFIG_AGGREGATE_MEAN)
            acc /= (double)n_images;
        series[c] = acc;
    }
}

/* The series' probability of each class, or each value. */
static void aggregate(const struct config_manifest *mf, struct pipeline_output *o)
{
    if (mf->output_kind == CONFIG_OUTPUT_REGRESSION)
        aggregate_into(mf, o->n_images, o->n_values, o->image_value, o->value);
    else if (mf->output_kind == CONFIG_OUTPUT_CLASSIFICATION)
        aggregate_into(mf, o->n_images, o->n_classes, o->image_probability, o->probability);
}

/* The arrays OUT's n_images results go to: features for an encoder,
 * probabilities for a classification. */
static int output_arrays(const struct config_manifest *mf, struct pipeline_output *o)
{
    size_t n = o->n_images * (size_t)mf->channels;
    if (mf->output_kind == CONFIG_OUTPUT_SEGMENTATION)
        return 0; /* labels, allocated once the images' size is known */
    if (mf->output_kind == CONFIG_OUTPUT_EMBEDDING) {
        o->n_features = mf->channels;
        return (o->features = malloc(n * sizeof *o->features)) ? 0 : -1;
    }
    if (mf->output_kind == CONFIG_OUTPUT_REGRESSION) {
        o->n_values = mf->channels;
        return (o->image_value = calloc(n, sizeof *o->image_value)) &&
                       (o->value = calloc((size_t)mf->channels, sizeof *o->value))
                   ? 0
                   : -1;
    }
    o->n_classes = mf->channels;
    if (mf->output_kind == CONFIG_OUTPUT_DETECTION) /* boxes are added as they come */
        return (o->probability = calloc((size_t)mf->channels, sizeof *o->probability)) ? 0 : -1;
    if (!(o->image_probability = calloc(n, sizeof *o->image_probability)) ||
        !(o->probability = calloc((size_t)mf->channels, sizeof *o->probability)))
        return -1;
    return 0;
}

int pipeline_run_head(const struct config_model *head, struct infer_model *model,
                      const struct pipeline_output *encoded, struct pipeline_output *out,
                      struct pipeline_timing *t, char *err, size_t errlen)
{
    const struct config_manifest *mf = &head->manifest;
    struct batch b = {.cm = head, .model = model, .out = out};
    size_t d = (size_t)encoded->n_features, n = encoded->n_images;
    memset(out, 0, sizeof *out);
    memset(t, 0, sizeof *t);
    double t0 = pipeline_seconds();
    out->n_images = n;
    out->n_features = encoded->n_features;
    b.plane = d;
    if (output_arrays(mf, out) != 0 ||
        !(b.output = malloc((size_t)mf->batch * (size_t)mf->channels * sizeof *b.output)) ||
        !(out->source = malloc(n * sizeof *out->source)) ||
        !(out->frame = malloc(n * sizeof *out->frame))) {
        free(b.output);
        pipeline_output_free(out);
        snprintf(err, errlen, "out of memory");
        return PIPELINE_EFAILED;
    }
    memcpy(out->source, encoded->source, n * sizeof *out->source);
    memcpy(out->frame, encoded->frame, n * sizeof *out->frame);
    /* The features are the batches: a head's input is rows of them. */
    for (size_t i = 0; i < n;) {
        size_t take = n - i < (size_t)mf->batch ? n - i : (size_t)mf->batch;
        b.filled = (int)take;
        b.input = encoded->features + i * d;
        if (run_batch(&b, err, errlen) != 0) {
            free(b.output);
            pipeline_output_free(out);
            return PIPELINE_EFAILED;
        }
        i += take;
    }
    free(b.output);
    double t1 = pipeline_seconds();
    aggregate(mf, out);
    out->forwards = b.forwards;
    t->model = b.model_seconds;
    t->postprocess = pipeline_seconds() - t1;
    t->preprocess = (t1 - t0) - b.model_seconds;
    return 0;
}

/* Checks the files of SRC against the model and counts their images. A
 * segmentation's images must share one size: one SEG holds them all, and
 * every frame of a SEG has the same rows and columns. */
static int count_images(const struct config_manifest *mf, const struct dicom_sources *src,
                        size_t *n, char *err, size_t errlen)
{
    *n = 0;
    const struct dicom_image *first = dicom_sources_image(src, 0);
    for (size_t i = 0; i < dicom_sources_count(src); i++) {
        const struct dicom_image *img = dicom_sources_image(src, i);
        if (mf->modality && strcasecmp(mf->modality, img->modality) != 0) {
            snprintf(err, errlen, "the series is %s; the model takes %s",
                     img->modality[0] ? img->modality : "of no modality", mf->modality);
            return -1;
        }
        if (mf->output_kind == CONFIG_OUTPUT_SEGMENTATION &&
            (img->rows != first->rows || img->cols != first->cols)) {
            snprintf(err, errlen, "instance %zu has %d x %d pixels (columns x rows), instance 1 "
                                  "%d x %d: a segmentation of images writes one SEG, whose "
                                  "images must all have the same size",
                     i + 1, img->cols, img->rows, first->cols, first->rows);
            return -1;
        }
        *n += (size_t)img->frames;
    }
    return 0;
}

/* A segmentation's label images (one per image evaluated, on its source
 * grid) and the scratch of one image's labels on the model grid, within
 * the job's budget. The grid says the images' size; its spacing is the
 * first image's Pixel Spacing (0 without one) and it has no slice gap. */
static int segmentation_arrays(const struct config_model *cm, const struct dicom_sources *src,
                               struct batch *b, char *err, size_t errlen)
{
    const struct config_manifest *mf = &cm->manifest;
    struct pipeline_output *o = b->out;
    const struct dicom_image *first = dicom_sources_image(src, 0);
    size_t n;
    if (!size_mul3_ok((size_t)first->rows, (size_t)first->cols, o->n_images, &n) ||
        n > pipeline_max_voxels(cm)) {
        snprintf(err, errlen, "the labels of %zu images of %d x %d are over the job's memory "
                              "budget", o->n_images, first->cols, first->rows);
        return -1;
    }
    o->grid = (struct infer_grid){.nx = first->cols, .ny = first->rows, .nz = (int)o->n_images,
                                  .spacing = {first->pixel_spacing[1], first->pixel_spacing[0], 0},
                                  .dir = {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    if (!(o->labels = calloc(n, 1)) ||
        !(b->model_labels = malloc((size_t)mf->size[0] * (size_t)mf->size[1]))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int pipeline_run_images(const struct config_model *cm, struct infer_model *model,
                        const char *const *paths, size_t n_paths,
                        int (*progress)(void *ud, long done, long total), void *progress_ud,
                        struct pipeline_output *out, struct pipeline_timing *t, char *err,
                        size_t errlen)
{
    const struct config_manifest *mf = &cm->manifest;
    struct dicom_sources *src = NULL;
    struct batch b = {.cm = cm, .model = model, .out = out};
    float *picture = NULL;
    size_t picture_cap = 0, n_images = 0;
    int rc = PIPELINE_EFAILED;
    char why[512];
    memset(out, 0, sizeof *out);
    memset(t, 0, sizeof *t);

    double t0 = pipeline_seconds(), prep = 0;
    if (n_paths == 0) {
        snprintf(err, errlen, "the series has no instances");
        return PIPELINE_EFAILED;
    }
    if (dicom_sources_parse(paths, n_paths, pipeline_max_voxels(cm), &src, why, sizeof why) !=
        DICOM_OK) {
        snprintf(err, errlen, "the series cannot be used: %s", why);
        goto out;
    }
    if (count_images(mf, src, &n_images, err, errlen) != 0)
        goto out;
    /* The batch, like every other buffer of a job, within its budget. */
    b.plane = (size_t)mf->in_channels * (size_t)mf->size[0] * (size_t)mf->size[1];
    size_t batch_floats;
    if (!size_mul_ok(b.plane, (size_t)mf->batch, &batch_floats) ||
        batch_floats > pipeline_max_voxels(cm)) {
        snprintf(err, errlen, "a batch of %d images of %d x %d is over the job's memory budget",
                 mf->batch, mf->size[1], mf->size[0]);
        goto out;
    }
    out->n_images = n_images;
    /* A segmentation's scores: output.channels planes of input.size per image. */
    size_t out_floats = (size_t)mf->batch *
                        (mf->output_kind == CONFIG_OUTPUT_DETECTION ? (size_t)mf->max_boxes * 6
                                                                    : (size_t)mf->channels);
    if (mf->output_kind == CONFIG_OUTPUT_SEGMENTATION &&
        (!size_mul3_ok(out_floats, (size_t)mf->size[0], (size_t)mf->size[1], &out_floats) ||
         out_floats > pipeline_max_voxels(cm))) {
        snprintf(err, errlen, "the scores of a batch of %d images (%d channels of %d x %d) are "
                              "over the job's memory budget",
                 mf->batch, mf->channels, mf->size[1], mf->size[0]);
        goto out;
    }
    if (mf->output_kind == CONFIG_OUTPUT_SEGMENTATION &&
        segmentation_arrays(cm, src, &b, err, errlen) != 0)
        goto out;
    if (!(b.input = malloc(batch_floats * sizeof *b.input)) ||
        !(b.output = malloc(out_floats * sizeof *b.output)) ||
        !(b.lb = calloc((size_t)mf->batch, sizeof *b.lb)) ||
        !(b.dims = calloc((size_t)mf->batch, sizeof *b.dims)) ||
        output_arrays(mf, out) != 0 ||
        !(out->source = malloc(n_images * sizeof *out->source)) ||
        !(out->frame = malloc(n_images * sizeof *out->frame))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }

    struct dicom_render how = {.channels = mf->in_channels, .has_window = mf->has_window,
                               .window_center = mf->window[0], .window_width = mf->window[1]};
    const double *mean = mf->n_mean ? mf->mean : NULL, *std = mf->n_std ? mf->std : NULL;
    size_t k = 0;
    CRASH_POINT("inference.model");
    for (size_t i = 0; i < dicom_sources_count(src); i++) {
        const struct dicom_image *img = dicom_sources_image(src, i);
        size_t plane = (size_t)img->rows * (size_t)img->cols * (size_t)mf->in_channels, need;
        if (!size_mul_ok(plane, (size_t)img->frames, &need) || need > pipeline_max_voxels(cm)) {
            snprintf(err, errlen, "instance %zu (of %zu): its rendered frames are over the "
                                  "job's memory budget", i + 1, n_paths);
            goto out;
        }
        if (need > picture_cap) {
            free(picture);
            if (!(picture = malloc(need * sizeof *picture))) {
                snprintf(err, errlen, "out of memory");
                goto out;
            }
            picture_cap = need;
        }
        if (dicom_sources_render(src, i, &how, picture, picture_cap, why, sizeof why) !=
            DICOM_OK) {
            snprintf(err, errlen, "instance %zu (of %zu) cannot be used: %s", i + 1, n_paths,
                     why);
            goto out;
        }
        double r1 = pipeline_seconds();
        for (int f = 0; f < img->frames; f++, k++) {
            out->source[k] = (int)i;
            out->frame[k] = f;
            b.dims[b.filled][0] = img->rows;
            b.dims[b.filled][1] = img->cols;
            infer_letterbox(picture + (size_t)f * plane, mf->in_channels, img->rows, img->cols,
                            b.input + (size_t)b.filled * b.plane, mf->size[0], mf->size[1],
                            mean, std, &b.lb[b.filled]);
            b.filled++;
            if (b.filled == mf->batch) {
                prep += pipeline_seconds() - r1;
                if (run_batch(&b, err, errlen) != 0)
                    goto out;
                if (progress && progress(progress_ud, (long)b.done, (long)n_images)) {
                    rc = PIPELINE_ECANCELLED;
                    goto out;
                }
                r1 = pipeline_seconds();
            }
        }
        prep += pipeline_seconds() - r1;
    }
    if (run_batch(&b, err, errlen) != 0)
        goto out;
    double t4 = pipeline_seconds();
    out->forwards = b.forwards;
    aggregate(mf, out);
    /* The rendered images are gone; the headers stay for the SR. */
    dicom_sources_drop_pixels(src);
    out->sources = src;
    src = NULL;
    /* Decoding: the header checks and the rendering. */
    t->decode = (t4 - t0) - prep - b.model_seconds;
    t->preprocess = prep;
    t->model = b.model_seconds;
    if (pipeline_count_labels(out) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    t->postprocess = pipeline_seconds() - t4;
    rc = 0;
out:
    if (rc != 0)
        pipeline_output_free(out);
    dicom_sources_close(src);
    free(picture);
    free(b.input);
    free(b.output);
    free(b.lb);
    free(b.dims);
    free(b.model_labels);
    return rc;
}

int pipeline_take_scores(const struct config_manifest *mf, float *scores, size_t n,
                         struct pipeline_output *out, char *err, size_t errlen)
{
    out->n_images = n;
    if (output_arrays(mf, out) != 0) {
        snprintf(err, errlen, "out of memory");
        return PIPELINE_EFAILED;
    }
    for (size_t i = 0; i < n; i++) {
        float *row = scores + i * (size_t)mf->channels;
        if (activate(mf->activation, row, mf->channels) != 0) {
            snprintf(err, errlen, "the model's scores for slice %zu are not %s", i + 1,
                     mf->activation == CONFIG_ACTIVATION_NONE ? "probabilities (0..1)"
                                                              : "finite numbers");
            return PIPELINE_EFAILED;
        }
    }
    memcpy(out->image_probability, scores, n * (size_t)mf->channels * sizeof *scores);
    aggregate(mf, out);
    return 0;
}
