/*
 * fuzz_intake — the received-data-set intake: what the receiver reads from
 * every instance a peer sends (the indexed attributes, the calling AE kept
 * in the meta header and the transfer syntax) before anything is stored.
 */
#define AINODE_FUZZ_DICOM
#include "fuzz.h"

#include "common/attr.h"
#include "dicom/image.h"

static const char *keywords[ATTR_COUNT + 1];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_dicom_init();
    for (int i = 0; i < ATTR_COUNT; i++)
        keywords[i] = attr_table[i].keyword;
    keywords[ATTR_COUNT] = "SourceApplicationEntityTitle";
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[256];
    int fd = fuzz_file(data, size, path);
    if (fd < 0)
        return 0;
    char *values[ATTR_COUNT + 1];
    char *ts = NULL;
    if (dicom_read_values(path, keywords, ATTR_COUNT + 1, values, &ts, err, sizeof err) == 0) {
        dicom_free_values(values, ATTR_COUNT + 1);
        free(ts);
    }
    close(fd);
    return 0;
}
