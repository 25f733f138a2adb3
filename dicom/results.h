/*
 * dicom/results — the DICOM results of a job: a Segmentation (SEG) and a
 * Comprehensive 3D SR with a TID 1500 Imaging Measurement Report, both made
 * from the job's source set (dicom/image.h), never from the files again.
 */
#ifndef AINODE_DICOM_RESULTS_H
#define AINODE_DICOM_RESULTS_H

#include "dicom/dicom.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dicom_sources;

/* A coded concept: CodeValue, CodingSchemeDesignator, CodeMeaning. */
struct dicom_code {
    const char *value;
    const char *scheme;
    const char *meaning;
};

/* One segment: one label value of the label volume. */
struct dicom_segment {
    int number;                  /* Segment Number = label value, 1..255 */
    const char *label;           /* Segment Label */
    struct dicom_code category;  /* Segmented Property Category (SNOMED CT) */
    struct dicom_code type;      /* Segmented Property Type (SNOMED CT) */
    int color[3];                /* display colour, sRGB 0..255 */
    int64_t voxels;              /* voxels with this label */
    double volume_ml;            /* their volume */
};

/* One class of a classification: what the model found in the images. */
struct dicom_finding {
    const char *name;            /* Tracking Identifier of its group */
    struct dicom_code finding;   /* the class's finding */
    double probability;          /* 0..1, over all the images evaluated */
    int present;                 /* at or above the class's threshold */
};

/* One value of a regression over the images evaluated. */
struct dicom_value {
    const char *name;            /* Tracking Identifier of its group */
    struct dicom_code concept;   /* what is measured */
    struct dicom_code unit;      /* its UCUM unit */
    double value;
};

/* One box of a detection on image SLICE (as findings have them: frame
 * SOURCE_FRAMES[slice] of file SOURCE_FILES[slice]): pixel corners in
 * DICOM image coordinates (0,0 the top-left corner of the top-left
 * pixel), x along columns, y along rows, x1 < x2, y1 < y2. */
struct dicom_box {
    const char *name;            /* Tracking Identifier of its group */
    struct dicom_code finding;   /* its class's finding */
    int slice;
    double x1, y1, x2, y2;
    double score;                /* 0..1 */
};

/*
 * What the results are made from. Slice k of LABELS (nz x ny x nx, one byte
 * per voxel, row-major) lies exactly on frame SOURCE_FRAMES[k] of file
 * SOURCE_FILES[k] of SOURCES; the SEG copies the patient, study and frame of
 * reference of the sources and takes each frame's geometry from its source.
 */
struct dicom_result {
    const struct dicom_sources *sources;
    const int *source_files;         /* nz indexes into SOURCES */
    const int *source_frames;        /* nz 0-based frame numbers; NULL: all 0 */
    int nx, ny, nz;
    const uint8_t *labels;
    /* With LABELS, how many voxels of each label slice k holds (nz x 256,
     * common/labels.h); NULL: the writers count them. */
    const int64_t *label_counts;
    const struct dicom_segment *segments;
    size_t n_segments;
    /* A classification instead (no labels, no segments, no SEG): slice k
     * is then image k evaluated, frame SOURCE_FRAMES[k] of file
     * SOURCE_FILES[k]; NY and NX are unused. */
    const struct dicom_finding *findings;
    size_t n_findings;
    /* A regression instead: its values (no findings, no SEG). */
    const struct dicom_value *values;
    size_t n_values;
    /* A detection: a finding per class (present when it has a box; its
     * certainty the best score) and its boxes, each a planar region. */
    const struct dicom_box *boxes;
    size_t n_boxes;
    /* 1: the labels are of 2-D images (a model of input.kind image), not
     * slices of a volume. The SEG then needs no patient geometry: sources
     * without a Frame of Reference, position or orientation (CR, DX, SC,
     * US, ...) are segmented pixel for pixel, and the SR gives each
     * segment a planar group (outline, area in mm2 where the image has a
     * Pixel Spacing) and never a volume. */
    int images;
    const char *algorithm_name;
    const char *algorithm_version;
    struct dicom_code algorithm_family;
    const char *series_description; /* of the new result series */
    int series_number;
    const char *manufacturer;        /* of the results, e.g. "ainode" */
    const char *software_version;
    /* What traces the results to the exact model (each may be NULL): the
     * SHA-256 (64 lower-case hex digits) of the model file and of its
     * manifest, and the manifest's intended-use statement. */
    const char *model_sha256;
    const char *manifest_sha256;
    const char *intended_use;
};

/* What a writer wrote: the identity a sender needs. */
struct dicom_written {
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char series_uid[65];
    char transfer_syntax[65];
};

/* Writes the SEG (BINARY) for R to PATH; OUT gets what was written. */
DICOM_API int dicom_write_seg(const struct dicom_result *r, const char *path,
                              struct dicom_written *out, char *err, size_t errlen);

/* Writes the SR for R to PATH: one volumetric measurement group per
 * segment (its volume in ml), referencing the SEG written before (SEG, as
 * dicom_write_seg returned it) and the source series, and beside it, for
 * a segment with voxels, a planar group outlining its largest
 * cross-section on that slice's source image, with area and long axis;
 * for a classification (SEG NULL) one measurement and qualitative
 * evaluation group per finding (TID 1501: the finding present or absent,
 * and its certainty); for a regression one TID 1501 group per value (the
 * measurement with its concept and UCUM unit); for a detection the
 * findings of its classes and a planar group (TID 1410) per box: the box
 * as a closed POLYLINE on its image, its area in mm2 where the image has
 * a pixel spacing, and its score as a certainty. The model's digests and intended use are recorded
 * where set. OUT gets
 * what was written. */
DICOM_API int dicom_write_sr(const struct dicom_result *r, const struct dicom_written *seg,
                             const char *path, struct dicom_written *out, char *err,
                             size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
