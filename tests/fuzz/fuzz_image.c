/*
 * fuzz_image — pixel decoding and the header a job keeps: one file parsed
 * and decoded as a job's source set is (every codec: uncompressed in either
 * byte order, deflated, RLE, JPEG, JPEG-LS, JPEG 2000).
 */
#define AINODE_FUZZ_DICOM
#include "fuzz.h"

#include "dicom/image.h"

/* A job's budget, smaller: an input may claim up to this many pixels and
 * is decoded; every size cap of the shim still applies on its own. */
#define FUZZ_MAX_PIXELS ((size_t)1 << 24)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_dicom_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512];
    int fd = fuzz_file(data, size, path);
    if (fd < 0)
        return 0;
    /* As a job does: headers against a budget, then the pixels. */
    const char *paths[1] = {path};
    struct dicom_sources *s = NULL;
    if (dicom_sources_parse(paths, 1, FUZZ_MAX_PIXELS, &s, err, sizeof err) == 0) {
        dicom_sources_decode(s, err, sizeof err);
        dicom_sources_close(s);
    }
    close(fd);
    return 0;
}
