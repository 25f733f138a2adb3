/*
 * fuzz.h — what the fuzz targets share: the input as a file.
 *
 * The parsers under test read files (DCMTK's loadFile, the YAML loader), so
 * each input is written to an in-memory file and handed over by its
 * /proc/self/fd path: no disk, nothing left behind.
 */
#ifndef AINODE_TESTS_FUZZ_H
#define AINODE_TESTS_FUZZ_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes DATA to a fresh in-memory file; PATH (64 bytes) gets its name.
 * Returns the descriptor to close after use, or -1. */
static inline int fuzz_file(const uint8_t *data, size_t size, char path[64])
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

#ifdef AINODE_FUZZ_DICOM
#include "dicom/dicom.h"

/* The DICOM shim needs its dictionary: without it every input would fail
 * early and prove nothing. */
static inline void fuzz_dicom_init(void)
{
    char err[256];
    if (dicom_init(err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
}
#endif

#endif
