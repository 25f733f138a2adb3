/*
 * pipeline_internal.h — what pipeline.c (volumes and slices) and
 * pipeline_image.c (images, heads) share; not for the rest of service/.
 */
#ifndef AINODE_SERVICE_PIPELINE_INTERNAL_H
#define AINODE_SERVICE_PIPELINE_INTERNAL_H

#include "config/config.h"
#include "inference/inference.h"

#include <time.h>

/* Voxels of float data one job of CM may hold (decoded series, assembled
 * and resampled volume, rendered images, the model's buffers):
 * node.max_job_memory_mb, lowered by the manifest (config_load works it
 * out per model). */
static inline size_t pipeline_max_voxels(const struct config_model *cm)
{
    return cm->job_max_voxels ? cm->job_max_voxels : INFER_DEFAULT_MAX_VOXELS;
}

/* Monotonic seconds, for the stage timings. */
struct pipeline_output;

/* Counts O's labels per slice into O->LABEL_COUNTS (nothing without
 * labels, or when counted already): 0, or -1 out of memory. */
int pipeline_count_labels(struct pipeline_output *o);

static inline double pipeline_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
