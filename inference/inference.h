/*
 * inference — from decoded slices to a label volume on the source grid.
 *
 * Plain C API. Two parts live behind it:
 *   - model.cpp, the only code that touches libtorch: load a TorchScript
 *     file on a device, run it on a float tensor, read the output. No C++
 *     type or exception crosses this header.
 *   - volume.c, window.c, resample.c (C11): assemble slices into one
 *     geometric volume (or refuse, with a reason), resample it, and run a
 *     model over it patch by patch (sliding window).
 * Nothing here knows DICOM files: the caller decodes them (dicom/) and
 * hands over slices. This folder builds and tests on its own, with any
 * libtorch CMake finds (Debian's libtorch-dev, or Torch_DIR).
 *
 * Errors: functions return 0 or a negative INFER_E* code (named by
 * inference_strerror()) and write a one-line reason into the caller's ERR
 * buffer (common/error.h's error_set()).
 */
#ifndef AINODE_INFERENCE_H
#define AINODE_INFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define INFER_API __attribute__((visibility("default")))
#else
#define INFER_API
#endif

enum infer_error {
    INFER_OK = 0,
    INFER_EINVAL = -1,    /* bad argument, bad input geometry */
    INFER_EDEVICE = -2,   /* device unknown or not available (e.g. no CUDA) */
    INFER_EMODEL = -3,    /* model file unreadable or failed to run */
    INFER_ENOMEM = -4,
    INFER_EREFUSED = -5,  /* the slices cannot form one volume (reason in ERR) */
    INFER_ECANCELLED = -6, /* the progress callback asked to stop */
    INFER_ELIMIT = -7,    /* a volume or buffer over the job's memory budget (reason in ERR) */
};

/* The voxels of one float volume a job may hold when the caller gives no
 * limit (0). */
#define INFER_DEFAULT_MAX_VOXELS (LIMIT_JOB_VOLUME_BYTES / sizeof(float))

/* A short text for an INFER_E* code ("model file unreadable or failed to
 * run"); never NULL. */
INFER_API const char *inference_strerror(int code);

/* ---------------------------------------------------------------------
 * Models (libtorch)
 */

struct infer_model;

/* A dense float tensor, C order. DATA is malloc'ed; infer_tensor_free(). */
struct infer_tensor {
    float *data;
    int64_t shape[8];
    int ndim;
};

INFER_API void infer_tensor_free(struct infer_tensor *t);

/* Loads the TorchScript file at PATH onto DEVICE ("cpu", "cuda", "cuda:N").
 * A CUDA device on a machine without one (or without a CUDA libtorch) is
 * INFER_EDEVICE with a clear reason, never a silent CPU run. */
INFER_API int infer_model_load(const char *path, const char *device, struct infer_model **out,
                               char *err, size_t errlen);

/* The number format a model runs in. fp16 and bf16 need a CUDA device:
 * the module's floating parameters and buffers are converted once at load,
 * each input is copied to the device as float and converted there, and
 * outputs come back to the host as float. */
enum infer_precision {
    INFER_FP32 = 0,
    INFER_FP16 = 1,
    INFER_BF16 = 2,
};

/* "fp32", "fp16", "bf16"; "?" for any other value. */
INFER_API const char *infer_precision_name(enum infer_precision p);

/* infer_model_load with a precision (infer_model_load is PRECISION
 * INFER_FP32). fp16 or bf16 on the CPU is INFER_EDEVICE ("precision fp16
 * needs a CUDA device (device is cpu)"), never a silent fp32 run. */
INFER_API int infer_model_load_ex(const char *path, const char *device,
                                  enum infer_precision precision, struct infer_model **out,
                                  char *err, size_t errlen);

/* Runs the model's forward on INPUT (SHAPE, NDIM dims; on the host) and
 * returns its first output, copied to the host as float, in OUT. Safe to
 * call from one thread at a time per model. */
INFER_API int infer_model_run(struct infer_model *m, const float *input, const int64_t *shape,
                              int ndim, struct infer_tensor *out, char *err, size_t errlen);

/* The same, into the caller's BUF of CAPACITY floats (reused from run to
 * run). On the CPU in fp32 the model reads INPUT in place (no copy) and
 * the output is copied once into BUF; on CUDA, INPUT goes to the device in
 * one copy per call through a pinned host buffer the model keeps. OUT_SHAPE (8 entries) and *OUT_NDIM get
 * the output's shape; an output larger than CAPACITY is INFER_EMODEL. */
INFER_API int infer_model_run_into(struct infer_model *m, const float *input,
                                   const int64_t *shape, int ndim, float *buf, size_t capacity,
                                   int64_t *out_shape, int *out_ndim, char *err, size_t errlen);

/* Runs the model as infer_model_run and points *OUT at its output
 * (float, C order; NULL for an empty output), which the model keeps until
 * its next run or infer_model_free(). On the CPU in fp32 that is the
 * forward's own output tensor: no copy, and no buffer of the caller's to
 * fill. OUT_SHAPE (8 entries) and *OUT_NDIM get its shape. */
INFER_API int infer_model_run_view(struct infer_model *m, const float *input,
                                   const int64_t *shape, int ndim, const float **out,
                                   int64_t *out_shape, int *out_ndim, char *err, size_t errlen);

/* Drops M's last output (infer_model_run_view; M may be NULL) and frees
 * the memory of the large CPU tensors that runs have freed and that is
 * kept for the next run's tensors of the same size (up to 512 MiB in the
 * process, for all models). The sliding window and the slice runs call it
 * when they end; call it after other runs of a job. */
INFER_API void infer_model_trim(struct infer_model *m);

INFER_API void infer_model_free(struct infer_model *m);

/* Sets libtorch's intra-op thread count for the calling thread (call it
 * at the start of each worker thread). */
INFER_API void infer_set_threads(int n);

/* Calls FN(UD, BEGIN, END) over ranges that together cover [0, N) once,
 * on the calling thread's libtorch threads (infer_set_threads), the ones
 * that run the model: work between two runs uses the same cores without
 * oversubscribing them. FN must not call libtorch. */
INFER_API void infer_parallel_for(long n, void (*fn)(void *ud, long begin, long end), void *ud);

/* 0 when DEVICE names a device this process can use, else INFER_EDEVICE
 * with the reason in ERR. */
INFER_API int infer_device_check(const char *device, char *err, size_t errlen);

/* What this process runs models with: libtorch and the GPUs it sees. */
#define INFER_MAX_DEVICES 16
struct infer_runtime {
    const char *torch_version;    /* libtorch's, as its headers say ("1.13.0") */
    long cuda_runtime;            /* the CUDA runtime libtorch was built with (12010 is
                                   * 12.1); 0: a libtorch without CUDA */
    long cudnn;                   /* cuDNN's version; 0: none or unknown */
    int cuda_available;           /* CUDA usable: a CUDA libtorch, a driver, a GPU */
    int device_count;             /* GPUs visible (CUDA_VISIBLE_DEVICES applies) */
    char device_names[INFER_MAX_DEVICES][96]; /* of the first ones, from the driver;
                                               * "" when it cannot tell */
};

/* Fills *OUT; never fails (what cannot be known is 0 or ""). */
INFER_API void infer_runtime_info(struct infer_runtime *out);

/* Writes the built-in reference model "ct-bone-body" as TorchScript to PATH
 * (see builtin.cpp for what it computes). */
INFER_API int infer_write_builtin_ct_bone_body(const char *path, char *err, size_t errlen);

/* ---------------------------------------------------------------------
 * Volumes
 */

/* One decoded 2-D slice in patient space (DICOM conventions, mm). */
struct infer_slice {
    const float *pixels;       /* rows*cols values, row-major, already rescaled */
    int rows, cols;
    double position[3];        /* ImagePositionPatient of the first pixel */
    double orientation[6];     /* ImageOrientationPatient: row cosine, column cosine */
    double pixel_spacing[2];   /* PixelSpacing: between rows, between columns */
    int source;                /* caller's index (file), kept for references */
    int frame;                 /* frame number within the source, from 0 */
};

/*
 * A regular grid in patient space: voxel (i, j, k) (column, row, slice)
 * lies at origin + i * spacing[0] * dir[0..2] + j * spacing[1] * dir[3..5]
 *                + k * spacing[2] * dir[6..8].
 */
struct infer_grid {
    int nx, ny, nz;
    double origin[3];
    double spacing[3];         /* column, row, slice spacing (mm) */
    double dir[9];             /* row cosine, column cosine, slice normal */
};

/* A volume: data[(k * ny + j) * nx + i] is voxel (i, j, k) of GRID. */
struct infer_volume {
    struct infer_grid grid;
    float *data;               /* malloc'ed; NULL when the voxels are in DATA16 */
    int16_t *data16;           /* the voxels as int16 instead (DATA NULL), when every one
                                * is an integer in int16's range (CT in HU): half the
                                * memory; the sliding window and slice runs convert
                                * them to float patch by patch. malloc'ed */
    int *source;               /* nz entries: slice k came from source[k], */
    int *frame;                /* frame[k] (both NULL for resampled volumes) */
};

struct infer_volume_limits {
    int min_slices;            /* refuse fewer slices than this */
    double max_tilt_degrees;   /* refuse when slices are sheared beyond this */
    double spacing_tolerance;  /* relative: uneven gaps beyond this are refused */
    size_t max_voxels;         /* nx*ny*nz of the volume; 0: INFER_DEFAULT_MAX_VOXELS */
};

/* Sorts SLICES along the slice normal (position . normal, never by number
 * or name) and builds one volume, or refuses with INFER_EREFUSED and a
 * reason: mixed sizes or orientations, duplicate positions, uneven gaps
 * (a missing slice), gantry tilt beyond the limit, too few slices, and
 * any geometry value that is not finite or out of common/limits.h's range
 * (positions, unit orthogonal cosines, pixel and slice spacing). A volume
 * of more than the limit's voxels is INFER_ELIMIT; nothing is allocated
 * before every check passed. */
INFER_API int infer_volume_assemble(const struct infer_slice *slices, size_t n,
                                    const struct infer_volume_limits *limits,
                                    struct infer_volume *out, char *err, size_t errlen);

enum infer_voxel { INFER_VOXEL_FLOAT, INFER_VOXEL_INT16 };

/* infer_volume_assemble without the pixels (PIXELS may be NULL): the same
 * checks, then OUT's grid, order (SOURCE, FRAME) and voxels (DATA, or
 * DATA16 for INFER_VOXEL_INT16), allocated and not filled: the caller
 * decodes each slice straight into its plane k (nx * ny voxels from
 * k * nx * ny on), with no copy in between. */
INFER_API int infer_volume_layout(const struct infer_slice *slices, size_t n,
                                  const struct infer_volume_limits *limits, enum infer_voxel voxel,
                                  struct infer_volume *out, char *err, size_t errlen);

/* Turns V's int16 voxels into float ones (DATA replaces DATA16, which is
 * freed); nothing when V is float already. INFER_ENOMEM leaves V as it
 * was. */
INFER_API int infer_volume_widen(struct infer_volume *v);

/* Every check of infer_volume_assemble, from the slices' geometry alone
 * (PIXELS may be NULL): 0 with the volume's grid in GRID (may be NULL), or
 * the refusal assembling them would give. */
INFER_API int infer_volume_check(const struct infer_slice *slices, size_t n,
                                 const struct infer_volume_limits *limits,
                                 struct infer_grid *grid, char *err, size_t errlen);

INFER_API void infer_volume_free(struct infer_volume *v);

/* Into TO, the grid covering FROM's extent with SPACING (column, row,
 * slice). Its size is computed in double: spacings that are not finite
 * and positive are INFER_EINVAL, a grid of more than MAX_VOXELS voxels
 * (0: INFER_DEFAULT_MAX_VOXELS) is INFER_ELIMIT, both with the reason in
 * ERR; TO is then left zeroed, never a wild size. */
INFER_API int infer_grid_respace(const struct infer_grid *from, const double spacing[3],
                                 size_t max_voxels, struct infer_grid *to, char *err,
                                 size_t errlen);

/* Resamples SRC (on grid FROM) onto grid TO into DST, trilinear, through
 * patient coordinates (any two grids). Points of TO outside FROM take the
 * nearest edge value. Every index is clamped into FROM, NaN included:
 * whatever the grids hold, no read falls outside SRC. */
INFER_API void infer_resample(const float *src, const struct infer_grid *from,
                              const struct infer_grid *to, float *dst);

/* The same for a label volume, nearest neighbour. */
INFER_API void infer_resample_labels(const uint8_t *src, const struct infer_grid *from,
                                     const struct infer_grid *to, uint8_t *dst);

/* ---------------------------------------------------------------------
 * Sliding-window inference
 */

enum infer_blend { INFER_BLEND_CONSTANT, INFER_BLEND_GAUSSIAN };

enum infer_decision {
    INFER_ARGMAX,      /* label = channel with the highest value (channel 0: background) */
    INFER_THRESHOLD,   /* label = c + 1 for the highest channel c whose value >= threshold */
};

struct infer_window {
    int patch[3];              /* z, y, x; a side longer than the volume is cut to it */
    int margin[3];             /* z, y, x: context a patch needs on each side (the
                                * model's receptive radius); outputs that close to a
                                * patch edge are dropped, except at the volume's edge */
    double overlap;            /* 0 <= overlap < 1, of the patch without its margins */
    enum infer_blend blend;
    int channels;              /* output channels the model must produce */
    enum infer_decision decision;
    float threshold;           /* for INFER_THRESHOLD */
    /* Called after each patch (may be NULL); a non-zero return stops the
     * run with INFER_ECANCELLED. */
    int (*progress)(void *ud, long patches_done, long patches_total);
    void *progress_ud;
    size_t max_voxels;         /* floats the window's buffers may hold (channels x
                                * patch depth x plane, ...); 0: INFER_DEFAULT_MAX_VOXELS */
};

/*
 * Runs M over VOL patch by patch (model input 1x1xZxYxX, output
 * 1xCxZxYxX), blends overlapping outputs with the window's weights and
 * writes one label per voxel into LABELS (nz*ny*nx, caller-allocated).
 * With the margin set to the model's receptive radius, every kept output
 * saw the same input as in one whole-volume run, so the labels match it.
 * Slices are decided as soon as no later patch touches them, so memory
 * stays bounded by one slab of patch depth whatever the volume size.
 */
INFER_API int infer_sliding_window(struct infer_model *m, const struct infer_volume *vol,
                                   const struct infer_window *w, uint8_t *labels, char *err,
                                   size_t errlen);

/*
 * Runs M over VOL slice by slice (2-D and 2.5-D models): BATCH slices per
 * forward, each with CONTEXT neighbours on each side as extra channels
 * (beyond the volume's ends its end slices stand in): model input
 * B x (2 CONTEXT + 1) x Y x X. With LABELS (nz*ny*nx, caller-allocated)
 * the output must be B x CHANNELS x Y x X, decided per pixel as W says
 * (argmax or threshold); with SCORES instead (nz*CHANNELS) it must be
 * B x CHANNELS, one row per slice, copied as given. W's patch, margin,
 * overlap and blend are not used; its progress is called per batch.
 */
INFER_API int infer_slices(struct infer_model *m, const struct infer_volume *vol, int batch,
                           int context, const struct infer_window *w, uint8_t *labels,
                           float *scores, char *err, size_t errlen);

/* ---------------------------------------------------------------------
 * Pictures: 2-D images for models that read them whole
 */

/* Where a picture lands in a letterboxed model input: source pixel
 * (col, row) maps to input ((col + 0.5) * scale - 0.5 + left, likewise
 * rows with top); the picture covers ROWS x COLS input pixels. */
struct infer_letterbox {
    double scale;
    int top, left, rows, cols;
};

/*
 * Resizes SRC (CHANNELS x ROWS x COLS floats) to fit OUT_ROWS x OUT_COLS
 * keeping its aspect ratio (scale = min(OUT_ROWS / ROWS, OUT_COLS / COLS),
 * the picture's side floor(side * scale + 0.5)), bilinear with half-pixel
 * centres as torch's interpolate(align_corners=False) without antialias,
 * centred in DST (CHANNELS x OUT_ROWS x OUT_COLS) whose margin is 0; then
 * each value of channel c becomes (v - MEAN[c]) / STD[c] (MEAN, STD may be
 * NULL: 0 and 1). LB (may be NULL) gets the mapping. INFER_EINVAL for
 * sizes that are not positive.
 */
INFER_API int infer_letterbox(const float *src, int channels, int rows, int cols, float *dst,
                              int out_rows, int out_cols, const double *mean, const double *std,
                              struct infer_letterbox *lb);

/*
 * The inverse of a letterbox for labels: into DST (ROWS x COLS, the source
 * image's grid) the label of MODEL (OUT_ROWS x OUT_COLS, the model's grid)
 * at each source pixel's centre, nearest neighbour: source pixel (r, c)
 * takes model pixel (top + floor((r + 0.5) * LB->rows / ROWS),
 * left + floor((c + 0.5) * LB->cols / COLS)), the picture's extent being
 * what infer_letterbox resampled the image to. A centre outside the model
 * grid is background (0). INFER_EINVAL for sizes that are not positive.
 */
INFER_API int infer_letterbox_unmap(const uint8_t *model, int out_rows, int out_cols,
                                    const struct infer_letterbox *lb, int rows, int cols,
                                    uint8_t *dst);

/* Labels from scores: SCORES holds CHANNELS planes of PLANE values each
 * (channel c of pixel p at c * PLANE + p); LABELS gets PLANE labels,
 * decided as W's decision and threshold say (the sliding window's rule). */
INFER_API void infer_decide(const float *scores, int channels, size_t plane,
                            const struct infer_window *w, uint8_t *labels);

#ifdef __cplusplus
}
#endif
#endif
