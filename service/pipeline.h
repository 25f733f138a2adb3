/*
 * pipeline — one model on one series, from files to labels: decode,
 * assemble, preprocess, run the model, map the labels back onto the source
 * grid. It owns no thread and no store: a job (job.h) and `ainode infer`
 * (cli.h) call it. It also writes the result document of a job (JSON).
 */
#ifndef AINODE_SERVICE_PIPELINE_H
#define AINODE_SERVICE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "inference/inference.h"

struct config_manifest;
struct config_model;
struct dicom_sources;

/* Error codes of pipeline_run: 0 or one of these. */
enum {
    PIPELINE_EFAILED = -1,        /* the series or the model failed: the reason is in ERR */
    PIPELINE_ECANCELLED = -2,     /* the progress callback asked to stop */
};

/* A short text for a PIPELINE_E* code. */
const char *pipeline_strerror(int code);

/* Seconds spent in each stage of one pipeline run. */
struct pipeline_timing {
    double decode, assemble, preprocess, model, postprocess;
    double seg, sr;               /* writing the results (jobs only) */
};

/* One box of a detection, on its source image: pixel corners in DICOM
 * image coordinates (0,0 the top-left corner of the top-left pixel), x
 * along columns, y along rows, within the image and not empty. */
struct pipeline_box {
    size_t image;                 /* index of the image evaluated (source[], frame[]) */
    int cls;                      /* class number, 1..n_classes */
    double x1, y1, x2, y2;
    double score;
};

/* What a run gives. A volume model: labels on the source series' grid;
 * slice k came from frame frame[k] of the file source[k] (an index into
 * the paths given). An image model (classification): image k was frame
 * frame[k] of file source[k], with a probability per class; the series
 * gets one per class (the manifest's aggregate of its images'). SOURCES is
 * the series as parsed once (headers only by now), for the result writers.
 * Everything is owned by the output: pipeline_output_free(). */
struct pipeline_output {
    struct infer_grid grid;
    uint8_t *labels;
    /* With LABELS: how many voxels of each label slice k holds (nz x 256,
     * common/labels.h), counted once for the summary, the SEG and the SR. */
    int64_t *label_counts;
    int *source;
    int *frame;
    struct dicom_sources *sources;
    size_t n_images;              /* image models: images evaluated */
    int n_classes;
    float *image_probability;     /* n_images x n_classes */
    double *probability;          /* n_classes: over the series */
    /* An encoder (output.kind embedding): its features per image instead,
     * n_images x n_features, and how often its forward ran for them. */
    float *features;
    int n_features;
    int forwards;
    /* A regression: n_values named values per image (n_images x n_values)
     * and the series' (the manifest's aggregate of its images'). */
    int n_values;
    float *image_value;
    double *value;
    /* A detection: its boxes, by image then as the model gave them; the
     * classes' series probability is the best score of their boxes, 0
     * without any (n_classes set, probability filled). */
    struct pipeline_box *boxes;
    size_t n_boxes;
};

/* Runs CM (loaded as MODEL) on the series in PATHS. PROGRESS (may be NULL)
 * is called as the model advances; a non-zero return stops the run. Returns
 * 0 with *OUT filled, PIPELINE_EFAILED with the reason in ERR, or
 * PIPELINE_ECANCELLED. On failure *OUT holds nothing to free. */
int pipeline_run(const struct config_model *cm, struct infer_model *model,
                 const char *const *paths, size_t n_paths,
                 int (*progress)(void *ud, long done, long total), void *progress_ud,
                 struct pipeline_output *out, struct pipeline_timing *t, char *err,
                 size_t errlen);
void pipeline_output_free(struct pipeline_output *o);

/* Runs the head HEAD (loaded as MODEL) on the features of ENCODED (an
 * encoder's output) in batches of its input.batch: OUT gets the images'
 * and the series' probabilities, and copies of ENCODED's image sources;
 * its SOURCES stays NULL (the caller's set is ENCODED's). Returns 0 or
 * PIPELINE_EFAILED with the reason in ERR. */
int pipeline_run_head(const struct config_model *head, struct infer_model *model,
                      const struct pipeline_output *encoded, struct pipeline_output *out,
                      struct pipeline_timing *t, char *err, size_t errlen);

/* A classification's scores, one row of output.channels per image or
 * slice (N rows): made probabilities (in place) as MF's activation says,
 * then OUT's per-image and per-series probabilities. PIPELINE_EFAILED with
 * the reason in ERR when a score is not one. */
int pipeline_take_scores(const struct config_manifest *mf, float *scores, size_t n,
                         struct pipeline_output *out, char *err, size_t errlen);

/* pipeline_run for a model whose input.kind is image (pipeline_image.c):
 * every frame of every file rendered as displayed, letterboxed and
 * normalised, run in batches; the output's probabilities filled. */
int pipeline_run_images(const struct config_model *cm, struct infer_model *model,
                        const char *const *paths, size_t n_paths,
                        int (*progress)(void *ud, long done, long total), void *progress_ud,
                        struct pipeline_output *out, struct pipeline_timing *t, char *err,
                        size_t errlen);

/* The result document of a job (grid, source slices, label counts, the
 * seconds of each stage, the SEG and SR instances; LABELS_FILE names the
 * label file beside it; a classification has its images and findings
 * instead of a grid, slices and labels, a regression its images' and the
 * series' values, a detection its images, its boxes and per class their
 * number and best score), and in *SUMMARY the label counts (or findings,
 * values, detections) alone; both
 * malloc'ed JSON text (the caller frees them). SOPS[i] is the SOP Instance
 * UID of PATHS[i] given to pipeline_run. */
char *pipeline_result_json(const struct config_model *cm, const struct pipeline_output *o,
                           const char *const *sops, int64_t job_id, const char *study_uid,
                           const char *series_uid, const char *labels_file,
                           const struct pipeline_timing *t, const char *seg_uid,
                           const char *sr_uid, char **summary);
/* 1 when class I of a classification is present: the series'
 * probability at or above the class's threshold. */
int pipeline_class_present(const struct config_manifest *mf, const struct pipeline_output *o,
                           size_t i);
/* The label counts and volumes alone, as malloc'ed JSON text. */
char *pipeline_summary_json(const struct config_model *cm, const struct pipeline_output *o);

/* Sets up malloc for model runs (large buffers reused, not remapped). */
void pipeline_tune_allocator(void);

#endif
