/*
 * limits — the bounds the node puts on what a file may claim.
 *
 * Every byte of an image comes from the network. Before anything is
 * allocated from a header, its geometry and sizes are held against these
 * bounds; a file or series beyond them is refused with a reason (the job
 * fails, the node keeps running). They are set far beyond any real
 * acquisition, so that they only ever stop hostile or broken files.
 */
#ifndef AINODE_COMMON_LIMITS_H
#define AINODE_COMMON_LIMITS_H

/* Pixel Spacing and the gap between slices (mm). The coarsest real grids
 * (nuclear medicine, dose grids) are ~10 mm; 100 mm per pixel is a
 * hostile value that would blow up any resampled grid. */
#define LIMIT_MAX_SPACING_MM 100.0

/* |coordinate| of an Image Position Patient (mm): 1 km. Scanners report
 * a few metres at most; the bound keeps every product of positions and
 * cosines far from overflow. */
#define LIMIT_MAX_POSITION_MM 1e6

/* Direction cosines: each of the row and column vectors unit length, and
 * the two orthogonal, within this (|len^2 - 1|, |row . col|). */
#define LIMIT_ORIENTATION_TOLERANCE 1e-2

/* Rows x Columns x Frames of one image: 2^28 pixels (1 GiB of float),
 * e.g. 1024 CT frames of 512 x 512. */
#define LIMIT_MAX_IMAGE_PIXELS ((size_t)1 << 28)

/* Rows x Columns of one frame: 2^26 pixels (8192 x 8192; the largest
 * detectors are about 4300 x 4300). A codec decodes a frame whole: a tiny
 * JPEG 2000 frame can claim this much, and no more. */
#define LIMIT_MAX_FRAME_PIXELS ((size_t)1 << 26)

/* Number of Frames of one image. Each frame costs its own geometry and
 * functional groups whatever its size (a file of millions of 1x1 frames). */
#define LIMIT_MAX_FRAMES 65536L

/* Fragments of encapsulated pixel data in one image. */
#define LIMIT_MAX_FRAGMENTS ((size_t)1 << 20)

/* The float volume of one job, in bytes, unless node.max_job_memory_mb
 * says otherwise (this is its default): 1430 MiB (375 M voxels) holds a
 * 1400-slice 512 x 512 CT. A job peaks at about twice this (decoded slices
 * and the volume while assembling; the volume and its resampled copy).
 * Applied to the decoded series, the assembled volume, the resampled
 * volume and the sliding window's buffers. */
#define LIMIT_JOB_VOLUME_MIB 1430
#define LIMIT_JOB_VOLUME_BYTES ((size_t)LIMIT_JOB_VOLUME_MIB * 1024 * 1024)

#endif
