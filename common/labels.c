/*
 * labels.c — label maps counted per plane (see labels.h).
 */
#include "common/labels.h"

#include <string.h>

void labels_count(const uint8_t *labels, size_t plane, size_t nz, int64_t *counts)
{
    memset(counts, 0, nz * LABELS_PER_PLANE * sizeof *counts);
    for (size_t k = 0; k < nz; k++) {
        const uint8_t *p = labels + k * plane;
        int64_t *c = counts + k * LABELS_PER_PLANE;
        /* Four tables, summed at the end: consecutive equal labels (the
         * common case) would otherwise wait on one counter's last add. */
        int64_t part[4][LABELS_PER_PLANE];
        memset(part, 0, sizeof part);
        size_t i = 0;
        for (; i + 4 <= plane; i += 4) {
            part[0][p[i]]++;
            part[1][p[i + 1]]++;
            part[2][p[i + 2]]++;
            part[3][p[i + 3]]++;
        }
        for (; i < plane; i++)
            part[0][p[i]]++;
        for (int v = 0; v < LABELS_PER_PLANE; v++)
            c[v] = part[0][v] + part[1][v] + part[2][v] + part[3][v];
    }
}

int64_t labels_total(const int64_t *counts, size_t nz, int v)
{
    int64_t n = 0;
    for (size_t k = 0; k < nz; k++)
        n += counts[k * LABELS_PER_PLANE + (size_t)v];
    return n;
}
