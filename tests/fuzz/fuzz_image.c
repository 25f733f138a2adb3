/*
 * fuzz_image — pixel decoding and the header a job keeps: one file opened
 * as a job's source set (every codec: uncompressed in either byte order,
 * deflated, RLE, JPEG, JPEG-LS, JPEG 2000), then decoded on its own.
 */
#include "fuzz.h"

#include "dicom/image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    if (dicom_init(err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512];
    int fd = fuzz_file(data, size, path);
    if (fd < 0)
        return 0;
    const char *paths[1] = {path};
    struct dicom_sources *s = NULL;
    if (dicom_sources_open(paths, 1, &s, err, sizeof err) == 0)
        dicom_sources_close(s);
    struct dicom_image *img = NULL;
    if (dicom_image_read(path, &img, err, sizeof err) == 0)
        dicom_image_free(img);
    close(fd);
    return 0;
}
