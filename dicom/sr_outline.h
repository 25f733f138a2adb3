// sr_outline.h — inside dicom/ only: the planar region the SR draws for a
// segment (sr.cpp): its largest cross-section, the outline of that
// cross-section's largest connected piece, and the sizes measured on it.
// Plain geometry on the label volume; no DCMTK.
#ifndef AINODE_DICOM_SR_OUTLINE_H
#define AINODE_DICOM_SR_OUTLINE_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ainode_dicom {

// A point in DICOM image coordinates (PS3.3 C.18.6.1.2): column, row, with
// 0,0 the top-left corner of the top-left pixel, so that pixel (c, r)
// spans c..c+1 and r..r+1 and its centre is c+0.5, r+0.5. The outline runs
// along pixel edges, so its corners are whole numbers.
struct outline_point {
    int column, row;
};

struct cross_section {
    int slice = -1;      // k; -1 when the label has no voxel at all
    int64_t pixels = 0;  // voxels of the label on that slice, every piece
    // The outer boundary of the largest 8-connected piece of the label on
    // that slice (ties: the piece met first in row-major order), one
    // point per change of direction, closed: the last point repeats the
    // first. Holes inside the piece are not outlined.
    std::vector<outline_point> outline;
};

// Voxels of each label value on each slice of LABELS (NZ x NY x NX, one
// byte per voxel, row-major): counts[k * 256 + value]. One pass.
std::vector<int64_t> slice_counts(const uint8_t *labels, int nx, int ny, int nz);

// The largest cross-section of LABEL: the slice with the most voxels of
// it (ties: the lowest k), with COUNTS from slice_counts.
cross_section largest_cross_section(const uint8_t *labels, int nx, int ny, int nz, int label,
                                    const std::vector<int64_t> &counts);

// The largest distance between two points of OUTLINE in mm, with
// COLUMN_SPACING between columns and ROW_SPACING between rows.
double longest_diameter(const std::vector<outline_point> &outline, double column_spacing,
                        double row_spacing);

} // namespace ainode_dicom

#endif
