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

/* One-time process set-up: data dictionary check, TCP_NODELAY for every
 * DICOM socket, DCMTK's own logging quietened. */
DICOM_API int dicom_init(char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
