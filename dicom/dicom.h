/*
 * dicom — the DCMTK shim. Plain C API; all C++ stays inside dicom/.
 *
 * A dicom_server accepts associations (C-ECHO and C-STORE SCP) and streams
 * each received dataset, exactly as it arrived, into a file the caller
 * names. The caller decides everything else through two callbacks:
 *   - associate: accept or reject an association request;
 *   - stored:    make a received file durable; its return value is the
 *                C-STORE response status.
 * dicom_server_run() blocks; call it from a thread of its own and stop it
 * from any thread with dicom_server_stop().
 */
#ifndef AINODE_DICOM_H
#define AINODE_DICOM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DICOM_API __attribute__((visibility("default")))
#else
#define DICOM_API
#endif

/* C-STORE response statuses (PS3.4 B.2.3, PS3.7 C). */
enum {
    DICOM_STATUS_SUCCESS = 0x0000,
    DICOM_STATUS_OUT_OF_RESOURCES = 0xA700,
    DICOM_STATUS_DATASET_MISMATCH = 0xA900,
    DICOM_STATUS_CANNOT_UNDERSTAND = 0xC000,
};

/* A-ASSOCIATE-RJ decisions (PS3.8 9.3.4). */
enum dicom_assoc_decision {
    DICOM_ASSOC_ACCEPT = 0,
    DICOM_ASSOC_REJECT_CALLING_AE,   /* permanent, service-user, calling AE not recognized */
    DICOM_ASSOC_REJECT_CALLED_AE,    /* permanent, service-user, called AE not recognized */
    DICOM_ASSOC_REJECT_BUSY,         /* transient, service-provider, local limit exceeded */
};

struct dicom_peer {
    const char *calling_ae;
    const char *called_ae;
    const char *address;
};

/* Values of the keywords passed in dicom_server_config, read from the
 * stored file; NULL where absent. */
struct dicom_received {
    const char *temp_path;
    const char *sop_class_uid;       /* from the C-STORE request */
    const char *sop_instance_uid;    /* from the C-STORE request */
    const char *transfer_syntax;     /* of the accepted presentation context */
    const char *const *values;       /* one per keyword */
    const struct dicom_peer *peer;
};

typedef enum dicom_assoc_decision (*dicom_associate_fn)(void *ud, const struct dicom_peer *p);
/* Returns the C-STORE status. ERR (may stay empty) explains a failure. */
typedef uint16_t (*dicom_stored_fn)(void *ud, const struct dicom_received *r, char *err,
                                    size_t errlen);
/* Returns a fresh temporary path for the next incoming instance. */
typedef int (*dicom_temp_path_fn)(void *ud, char *buf, size_t len);
typedef void (*dicom_log_fn)(void *ud, int level, const char *msg);

struct dicom_server_config {
    const char *ae_title;
    const char *bind;
    int port;
    int max_associations;
    int max_pdu;
    int network_timeout_seconds;
    const char *const *keywords;     /* attributes to read from each stored file */
    size_t n_keywords;
    dicom_associate_fn associate;
    dicom_stored_fn stored;
    dicom_temp_path_fn temp_path;
    dicom_log_fn log;                /* level: 0 error, 1 warn, 2 info, 3 debug */
    void *ud;
};

struct dicom_server;

/* Loads the data dictionary, opens the listening socket. ERR gets the
 * reason on failure (e.g. port in use). */
DICOM_API int dicom_server_create(const struct dicom_server_config *cfg,
                                  struct dicom_server **out, char *err, size_t errlen);
/* Accepts associations until dicom_server_stop(); returns 0 after a stop. */
DICOM_API int dicom_server_run(struct dicom_server *srv);
/* Stops accepting at once; associations in progress may finish for
 * GRACE_SECONDS, after which they are aborted. Thread-safe, returns at once. */
DICOM_API void dicom_server_stop(struct dicom_server *srv, int grace_seconds);
/* Number of associations currently running. */
DICOM_API int dicom_server_active(struct dicom_server *srv);
DICOM_API void dicom_server_destroy(struct dicom_server *srv);

/* Reads KEYWORDS (group 0002 ones from the File Meta Information) from
 * the Part-10 file at PATH, which must parse completely; large values such
 * as the pixel data are skipped, not loaded. VALUES[i] are malloc'ed strings (NULL where absent) freed with
 * dicom_free_values(). *TRANSFER_SYNTAX (malloc'ed) gets the file's. */
DICOM_API int dicom_read_values(const char *path, const char *const *keywords, size_t n,
                                char **values, char **transfer_syntax, char *err,
                                size_t errlen);
DICOM_API void dicom_free_values(char **values, size_t n);

/*
 * A stored image, decoded: every frame's pixels as float after the Modality
 * LUT (Rescale Slope/Intercept: Hounsfield units for CT), with the geometry
 * of each frame. Classic single-frame images have one frame; enhanced
 * multi-frame images take per-frame values from the Per-frame Functional
 * Groups, else from the Shared ones.
 */
struct dicom_image {
    int rows, cols, frames;
    float *pixels;               /* frames * rows * cols, row-major per frame */
    double *positions;           /* frames * 3: ImagePositionPatient */
    double *orientations;        /* frames * 6: ImageOrientationPatient */
    double pixel_spacing[2];     /* between rows, between columns (mm) */
    int has_geometry;            /* positions, orientations and spacing present */
    char sop_class_uid[65];
    char modality[17];
    char image_type[256];        /* values joined with '\' */
};

/*
 * Decodes the image at PATH: uncompressed (any byte order), deflated, RLE,
 * JPEG and JPEG-LS through DCMTK's decoders, JPEG 2000 through OpenJPEG.
 * A file that holds no image (no Pixel Data: SR, ...) or one with more than
 * one sample per pixel is refused with a reason in ERR.
 */
DICOM_API int dicom_image_read(const char *path, struct dicom_image **out, char *err,
                               size_t errlen);
DICOM_API void dicom_image_free(struct dicom_image *img);

/* ---------------------------------------------------------------------
 * Results: DICOM Segmentation and TID 1500 measurement report
 */

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

/*
 * What the results are made from. Slice k of LABELS (nz x ny x nx, one byte
 * per voxel, row-major) lies exactly on frame SOURCE_FRAMES[k] of the source
 * file SOURCE_PATHS[k]; the SEG copies the patient, study and frame of
 * reference of the sources and takes each frame's geometry from its source.
 */
struct dicom_result {
    const char *const *source_paths;
    const int *source_frames;
    int nx, ny, nz;
    const uint8_t *labels;
    const struct dicom_segment *segments;
    size_t n_segments;
    const char *algorithm_name;
    const char *algorithm_version;
    struct dicom_code algorithm_family;
    const char *series_description; /* of the new result series */
    int series_number;
    const char *manufacturer;        /* of the results, e.g. "ainode" */
    const char *software_version;
};

/* Writes the SEG (BINARY, SOP class 1.2.840.10008.5.1.4.1.1.66.4) for R to
 * PATH. SOP_UID (65 bytes) gets its SOP Instance UID; SERIES_UID (65)
 * gets its new Series Instance UID. */
DICOM_API int dicom_write_seg(const struct dicom_result *r, const char *path, char *sop_uid,
                              char *series_uid, char *err, size_t errlen);

/* Writes the Comprehensive 3D SR with a TID 1500 Imaging Measurement
 * Report for R to PATH: one measurement group per segment (its volume in
 * ml), referencing the SEG written by dicom_write_seg (SEG_SOP_UID) and the
 * source series. SOP_UID (65) gets its SOP Instance UID. */
DICOM_API int dicom_write_sr(const struct dicom_result *r, const char *seg_sop_uid,
                             const char *seg_series_uid, const char *path, char *sop_uid,
                             char *err, size_t errlen);

/* ---------------------------------------------------------------------
 * Sending (C-STORE SCU)
 */

/* One file to send and, after dicom_send(), what became of it. */
struct dicom_send_file {
    const char *path;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax;   /* the file's; proposed as it is */
    int sent;                      /* out: 1 when the peer answered (see status) */
    uint16_t status;               /* out: the C-STORE response status */
    char error[160];               /* out: why it was not sent or not accepted */
};

struct dicom_send_peer {
    const char *calling_ae;        /* ours */
    const char *called_ae;
    const char *host;
    int port;
    int timeout_seconds;           /* connect, ACSE and DIMSE */
};

/* 1 when STATUS completes a C-STORE: success or a warning (0xB000, 0xB006,
 * 0xB007, 0x0001). */
DICOM_API int dicom_store_status_ok(uint16_t status);

/*
 * Sends FILES over one association to PEER, proposing each file's own SOP
 * class and transfer syntax. Returns 0 when the association was
 * established (each file's sent/status/error then tells its fate; a network
 * failure midway leaves the rest unsent), -1 when it was not (refused,
 * unreachable: reason in ERR).
 */
DICOM_API int dicom_send(const struct dicom_send_peer *peer, struct dicom_send_file *files,
                         size_t n, char *err, size_t errlen);

/* A new UID under the 2.25 root (PS3.5 B.2: from a random UUID). */
DICOM_API void dicom_new_uid(char uid[65]);

/* One-time process set-up: data dictionary check, TCP_NODELAY for every
 * DICOM socket, DCMTK's own logging quietened. */
DICOM_API int dicom_init(char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
