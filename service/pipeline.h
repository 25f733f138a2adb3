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

/* Labels on the source series' grid; slice k came from frame frame[k] of
 * the file source[k] (an index into the paths given). SOURCES is the
 * series as parsed once (headers only by now), for the result writers.
 * Everything is owned by the output: pipeline_output_free(). */
struct pipeline_output {
    struct infer_grid grid;
    uint8_t *labels;
    int *source;
    int *frame;
    struct dicom_sources *sources;
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

/* The result document of a job (grid, source slices, label counts, the
 * seconds of each stage, the SEG and SR instances; LABELS_FILE names the
 * label file beside it), and in *SUMMARY the label counts alone; both
 * malloc'ed JSON text (the caller frees them). SOPS[i] is the SOP Instance
 * UID of PATHS[i] given to pipeline_run. */
char *pipeline_result_json(const struct config_model *cm, const struct pipeline_output *o,
                           const char *const *sops, int64_t job_id, const char *study_uid,
                           const char *series_uid, const char *labels_file,
                           const struct pipeline_timing *t, const char *seg_uid,
                           const char *sr_uid, char **summary);
/* The label counts and volumes alone, as malloc'ed JSON text. */
char *pipeline_summary_json(const struct config_model *cm, const struct pipeline_output *o);

/* Sets up malloc for model runs (large buffers reused, not remapped). */
void pipeline_tune_allocator(void);

#endif
