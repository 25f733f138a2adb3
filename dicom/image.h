/*
 * dicom/image — reading stored instances: attribute values, decoded
 * images, and the source set a job is made from.
 */
#ifndef AINODE_DICOM_IMAGE_H
#define AINODE_DICOM_IMAGE_H

#include "dicom/dicom.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reads KEYWORDS (group 0002 ones from the File Meta Information) from
 * the Part-10 file at PATH, which must parse completely; large values such
 * as the pixel data are skipped, not loaded. VALUES[i] are malloc'ed strings
 * (NULL where absent) freed with dicom_free_values(). *TRANSFER_SYNTAX
 * (malloc'ed; TRANSFER_SYNTAX may be NULL) gets the file's. */
DICOM_API int dicom_read_values(const char *path, const char *const *keywords, size_t n,
                                char **values, char **transfer_syntax, char *err,
                                size_t errlen);
DICOM_API void dicom_free_values(char **values, size_t n);

/*
 * A stored image, decoded: every frame's pixels as float after the Modality
 * LUT (Rescale Slope/Intercept: Hounsfield units for CT), with the geometry
 * of each frame. Classic single-frame images have one frame; enhanced
 * multi-frame images take per-frame values from the Per-frame Functional
 * Groups, else from the Shared ones; classic multi-frame images (RT Dose)
 * place their frames with the Grid Frame Offset Vector.
 */
struct dicom_image {
    int rows, cols, frames;
    float *pixels;               /* frames * rows * cols, row-major per frame;
                                  * NULL once dicom_sources_drop_pixels() ran */
    double *positions;           /* frames * 3: ImagePositionPatient */
    double *orientations;        /* frames * 6: ImageOrientationPatient */
    double pixel_spacing[2];     /* between rows, between columns (mm), of the first frame */
    int has_geometry;            /* positions, orientations and spacing present */
    char sop_class_uid[65];
    char modality[17];
    char image_type[256];        /* values joined with '\' */
    char photometric[17];        /* Photometric Interpretation, e.g. MONOCHROME2, RGB */
    int samples;                 /* samples per pixel: 1, or 3 (colour: rendered only) */
};

/*
 * Decodes the image at PATH: uncompressed (any byte order), deflated, RLE,
 * JPEG and JPEG-LS through DCMTK's decoders, JPEG 2000 through OpenJPEG.
 * A file that holds no image (no Pixel Data: SR, ...) or one with more than
 * one sample per pixel is refused (DICOM_EFORMAT) with a reason in ERR.
 * So is, before any pixel is decoded, a file beyond common/limits.h:
 * Rows x Columns x Frames over LIMIT_MAX_IMAGE_PIXELS, Number of Frames over
 * LIMIT_MAX_FRAMES, more fragments than LIMIT_MAX_FRAGMENTS, a JPEG, JPEG-LS
 * or JPEG 2000 frame whose own header disagrees with Rows and Columns, and
 * geometry that is present but not finite or out of range (positions,
 * orientation cosines not unit and orthogonal, Pixel Spacing not in
 * (0, LIMIT_MAX_SPACING_MM], Grid Frame Offset Vector).
 */
DICOM_API int dicom_image_read(const char *path, struct dicom_image **out, char *err,
                               size_t errlen);
DICOM_API void dicom_image_free(struct dicom_image *img);

/*
 * The source set of a job: each file of a series parsed once. Parsing reads
 * and checks every file's header (as dicom_image_read does, before its
 * decoding) and keeps it; decoding then gives each file's pixels (as
 * dicom_image_read) and drops the encoded pixel data, so that each file
 * keeps its header (the attributes the SEG and SR copy: patient, study,
 * UIDs, frame geometry) without its pixel data. The volume is assembled
 * from the images; the result writers take the set (dicom/results.h).
 */
struct dicom_sources;

/* Parses the N files of PATHS, decoding nothing: every image of the set has
 * its size, identity and geometry, and pixels NULL until
 * dicom_sources_decode(). MAX_PIXELS (0: none) bounds Rows x Columns x
 * Frames summed over the files; the frames of the set are at most
 * LIMIT_MAX_FRAMES. On failure ERR names the instance (1-based position in
 * PATHS) and the reason, and *OUT is NULL. */
DICOM_API int dicom_sources_parse(const char *const *paths, size_t n, size_t max_pixels,
                                  struct dicom_sources **out, char *err, size_t errlen);
/* Decodes the pixels of every file of a parsed set. On failure ERR names
 * the instance; the set stays the caller's to close. */
DICOM_API int dicom_sources_decode(struct dicom_sources *s, char *err, size_t errlen);
/* Decodes the pixels of file I of a parsed set into OUT (CAPACITY floats,
 * at least frames x rows x cols), not into pages of the set's own: for a
 * caller that decodes straight into its volume. The file's encoded pixels
 * are released as by dicom_sources_decode; its image keeps PIXELS NULL.
 * On failure ERR names the instance. */
DICOM_API int dicom_sources_decode_into(struct dicom_sources *s, size_t i, float *out,
                                        size_t capacity, char *err, size_t errlen);
/* The same as int16 values, for a volume kept narrow: DICOM_ERANGE (the
 * reason in ERR) when a value after the Modality LUT is not an integer
 * within -32768..32767; the file is then left undecoded, with its
 * encoded pixels, for dicom_sources_decode_into. OUT holds CAPACITY
 * int16 values. */
DICOM_API int dicom_sources_decode_into_int16(struct dicom_sources *s, size_t i, int16_t *out,
                                              size_t capacity, char *err, size_t errlen);
/* Parses and decodes the N files of PATHS (no limit of the set's own). On
 * failure ERR names the instance (1-based position in PATHS) and the
 * reason. */
DICOM_API int dicom_sources_open(const char *const *paths, size_t n,
                                 struct dicom_sources **out, char *err, size_t errlen);
DICOM_API size_t dicom_sources_count(const struct dicom_sources *s);
/* The image of file I (0-based); its pixels are NULL until decoded. */
DICOM_API const struct dicom_image *dicom_sources_image(const struct dicom_sources *s, size_t i);
/* How dicom_sources_render() shows an image to a model that reads pictures. */
struct dicom_render {
    int channels;                /* 1: grey (colour as its luminance); 3: RGB (grey in each) */
    int has_window;              /* use this window; else the image's first window, else
                                  * its first VOI LUT, else its range of values */
    double window_center, window_width;
};

/*
 * Renders every frame of file I of a parsed (not decoded) set as it is
 * displayed: the Modality LUT, the window or VOI LUT, MONOCHROME1 inverted;
 * colour (RGB, YBR_FULL, YBR_FULL_422, palette colour, ...) as RGB. Into
 * OUT (frames x channels x rows x cols floats, 0..1, caller-allocated,
 * CAPACITY floats) in C order. JPEG 2000 images are refused (DICOM_EFORMAT).
 */
DICOM_API int dicom_sources_render(struct dicom_sources *s, size_t i,
                                   const struct dicom_render *r, float *out, size_t capacity,
                                   char *err, size_t errlen);

/* Frees every file's decoded pixels (once the volume has its copy); the
 * headers stay for the result writers. */
DICOM_API void dicom_sources_drop_pixels(struct dicom_sources *s);
DICOM_API void dicom_sources_close(struct dicom_sources *s);

#ifdef __cplusplus
}
#endif
#endif
