/*
 * labels — what a label map holds, counted once for every reader.
 *
 * A label map is NZ planes of PLANE bytes, one label (0..255) per voxel.
 * The summaries, the SEG (which segments have a frame on which slice) and
 * the SR (each segment's largest cross-section) all need how many voxels
 * of each label each plane holds: one pass gives it to all of them.
 */
#ifndef AINODE_COMMON_LABELS_H
#define AINODE_COMMON_LABELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Entries of a count table: 256 per plane. */
#define LABELS_PER_PLANE 256

/* Into COUNTS (NZ x 256, caller-allocated), how many voxels of each label
 * plane k of LABELS holds: COUNTS[k * 256 + v]. */
void labels_count(const uint8_t *labels, size_t plane, size_t nz, int64_t *counts);

/* The voxels of label V over all NZ planes of COUNTS. */
int64_t labels_total(const int64_t *counts, size_t nz, int v);

#ifdef __cplusplus
}
#endif
#endif
