/*
 * resample.c — moving values between grids through patient coordinates.
 *
 * A voxel index of grid TO maps to patient space and back into a
 * (fractional) index of grid FROM. Both maps are affine, so the index in
 * FROM is an affine function of the index in TO: computed once, then
 * stepped voxel by voxel.
 */
#include "inference/inference.h"

#include "common/checked.h"
#include "common/error.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static int positive_finite(double v)
{
    return isfinite(v) && v > 0;
}

int infer_grid_respace(const struct infer_grid *from, const double spacing[3],
                       size_t max_voxels, struct infer_grid *to, char *err, size_t errlen)
{
    memset(to, 0, sizeof *to);
    if (!max_voxels)
        max_voxels = INFER_DEFAULT_MAX_VOXELS;
    const int n[3] = {from->nx, from->ny, from->nz};
    size_t m[3];
    for (int a = 0; a < 3; a++) {
        if (!positive_finite(spacing[a]) || !positive_finite(from->spacing[a]) || n[a] < 1)
            return error_set(err, errlen, INFER_EINVAL,
                             "cannot resample: spacing %g mm onto %g mm over %d voxels on axis %c",
                             from->spacing[a], spacing[a], n[a], "xyz"[a]);
        /* In double: a hostile spacing ratio gives a count far beyond
         * INT_MAX (or inf), which an int would wrap. */
        double extent = (n[a] - 1) * from->spacing[a];
        double count = floor(extent / spacing[a] + 0.5) + 1;
        if (!isfinite(count) || count > (double)max_voxels)
            return error_set(err, errlen, INFER_ELIMIT,
                             "resampling to %g mm makes %g voxels along axis %c (the limit is "
                             "%zu voxels in all)",
                             spacing[a], count, "xyz"[a], max_voxels);
        m[a] = count < 1 ? 1 : (size_t)count;
    }
    /* Each count is at most MAX_VOXELS; their product is checked too. */
    size_t total;
    if (!size_mul3_ok(m[0], m[1], m[2], &total) || total > max_voxels || m[0] > INT_MAX ||
        m[1] > INT_MAX || m[2] > INT_MAX)
        return error_set(err, errlen, INFER_ELIMIT,
                         "resampling makes a %zux%zux%zu volume (the limit is %zu voxels)", m[0],
                         m[1], m[2], max_voxels);
    *to = *from;
    for (int a = 0; a < 3; a++)
        to->spacing[a] = spacing[a];
    to->nx = (int)m[0];
    to->ny = (int)m[1];
    to->nz = (int)m[2];
    return INFER_OK;
}

/* index_from = A * index_to + b (A 3x3 row-major). FROM's directions are
 * taken as orthonormal, as DICOM's are. */
static void index_map(const struct infer_grid *from, const struct infer_grid *to, double A[9],
                      double b[3])
{
    double d[3] = {to->origin[0] - from->origin[0], to->origin[1] - from->origin[1],
                   to->origin[2] - from->origin[2]};
    for (int r = 0; r < 3; r++) {
        const double *fr = from->dir + 3 * r;
        for (int c = 0; c < 3; c++) {
            const double *tc = to->dir + 3 * c;
            A[3 * r + c] = (fr[0] * tc[0] + fr[1] * tc[1] + fr[2] * tc[2]) * to->spacing[c] /
                           from->spacing[r];
        }
        b[r] = (fr[0] * d[0] + fr[1] * d[1] + fr[2] * d[2]) / from->spacing[r];
    }
}

/* V within [0, HI]. Written so that NaN fails the first test and lands on
 * 0: a non-finite index from a degenerate grid still reads inside. */
static double clampd(double v, double hi)
{
    if (!(v >= 0))
        return 0;
    return v > hi ? hi : v;
}

void infer_resample(const float *src, const struct infer_grid *from,
                    const struct infer_grid *to, float *dst)
{
    if (from->nx < 1 || from->ny < 1 || from->nz < 1)
        return;
    double A[9], b[3];
    index_map(from, to, A, b);
    const size_t sx = 1, sy = (size_t)from->nx, sz = (size_t)from->nx * from->ny;
    size_t out = 0;
    for (int k = 0; k < to->nz; k++)
        for (int j = 0; j < to->ny; j++)
            for (int i = 0; i < to->nx; i++, out++) {
                double u[3];
                for (int r = 0; r < 3; r++)
                    u[r] = A[3 * r] * i + A[3 * r + 1] * j + A[3 * r + 2] * k + b[r];
                double x = clampd(u[0], from->nx - 1), y = clampd(u[1], from->ny - 1),
                       z = clampd(u[2], from->nz - 1);
                int x0 = (int)x, y0 = (int)y, z0 = (int)z;
                int x1 = x0 + (x0 + 1 < from->nx), y1 = y0 + (y0 + 1 < from->ny),
                    z1 = z0 + (z0 + 1 < from->nz);
                double fx = x - x0, fy = y - y0, fz = z - z0;
                const float *p = src;
#define V(X, Y, Z) ((double)p[(size_t)(X) * sx + (size_t)(Y) * sy + (size_t)(Z) * sz])
                double c00 = V(x0, y0, z0) * (1 - fx) + V(x1, y0, z0) * fx;
                double c10 = V(x0, y1, z0) * (1 - fx) + V(x1, y1, z0) * fx;
                double c01 = V(x0, y0, z1) * (1 - fx) + V(x1, y0, z1) * fx;
                double c11 = V(x0, y1, z1) * (1 - fx) + V(x1, y1, z1) * fx;
#undef V
                double c0 = c00 * (1 - fy) + c10 * fy, c1 = c01 * (1 - fy) + c11 * fy;
                dst[out] = (float)(c0 * (1 - fz) + c1 * fz);
            }
}

void infer_resample_labels(const uint8_t *src, const struct infer_grid *from,
                           const struct infer_grid *to, uint8_t *dst)
{
    if (from->nx < 1 || from->ny < 1 || from->nz < 1)
        return;
    double A[9], b[3];
    index_map(from, to, A, b);
    size_t out = 0;
    for (int k = 0; k < to->nz; k++)
        for (int j = 0; j < to->ny; j++)
            for (int i = 0; i < to->nx; i++, out++) {
                int idx[3];
                const int n[3] = {from->nx, from->ny, from->nz};
                for (int r = 0; r < 3; r++) {
                    double u = A[3 * r] * i + A[3 * r + 1] * j + A[3 * r + 2] * k + b[r];
                    idx[r] = (int)floor(clampd(u, n[r] - 1) + 0.5);
                }
                dst[out] = src[((size_t)idx[2] * from->ny + idx[1]) * from->nx + idx[0]];
            }
}
