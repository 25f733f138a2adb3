/*
 * dicom — the DCMTK shim. Plain C API; all C++ stays inside dicom/.
 *
 * What every part of the shim shares: process set-up, new UIDs and the
 * error codes. The parts have headers of their own:
 *   dicom/network.h  C-ECHO / C-STORE SCP (the server) and C-STORE SCU (sending)
 *   dicom/image.h    reading values, decoding images, the source set of a job
 *   dicom/results.h  the DICOM SEG and TID 1500 SR writers
 *
 * Every function returns 0 or a negative enum dicom_error; where the caller
 * needs particulars (which file, which attribute) it also fills a
 * caller-owned ERR buffer with one line.
 */
#ifndef AINODE_DICOM_H
#define AINODE_DICOM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DICOM_API __attribute__((visibility("default")))
#else
#define DICOM_API
#endif

enum dicom_error {
    DICOM_OK = 0,
    DICOM_EINVAL = -1,      /* bad arguments (a result the writers cannot represent, ...) */
    DICOM_ENOMEM = -2,
    DICOM_EIO = -3,         /* a file cannot be read or written */
    DICOM_EFORMAT = -4,     /* a file is not what is needed (no image, unsupported encoding, ...) */
    DICOM_ENETWORK = -5,    /* socket, listen, association set-up */
    DICOM_EREFUSED = -6,    /* the peer refused (association rejected, no accepted context) */
    DICOM_EDICT = -7,       /* the data dictionary is not loaded */
    DICOM_ERANGE = -8,      /* pixel values that do not fit the narrow type asked for */
};

/* A short text for CODE (a dicom_error). */
DICOM_API const char *dicom_strerror(int code);

/* One-time process set-up: data dictionary check, TCP_NODELAY for every
 * DICOM socket, DCMTK's own logging quietened. */
DICOM_API int dicom_init(char *err, size_t errlen);

/* A new UID under the 2.25 root (PS3.5 B.2: from a random UUID). */
DICOM_API void dicom_new_uid(char uid[65]);

/* The version of DCMTK this shim was built with ("3.6.7"). */
DICOM_API const char *dicom_toolkit_version(void);

#ifdef __cplusplus
}
#endif
#endif
