/*
 * resample.c — moving values between grids through patient coordinates.
 *
 * A voxel index of grid TO maps to patient space and back into a
 * (fractional) index of grid FROM. Both maps are affine, so the index in
 * FROM is an affine function of the index in TO: computed once, then
 * stepped voxel by voxel.
 */
#include "inference/inference.h"

#include <math.h>
#include <string.h>

void infer_grid_respace(const struct infer_grid *from, const double spacing[3],
                        struct infer_grid *to)
{
    *to = *from;
    const int n[3] = {from->nx, from->ny, from->nz};
    int m[3];
    for (int a = 0; a < 3; a++) {
        double extent = (n[a] - 1) * from->spacing[a];
        m[a] = (int)floor(extent / spacing[a] + 0.5) + 1;
        if (m[a] < 1)
            m[a] = 1;
        to->spacing[a] = spacing[a];
    }
    to->nx = m[0];
    to->ny = m[1];
    to->nz = m[2];
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

static double clampd(double v, double hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

void infer_resample(const float *src, const struct infer_grid *from,
                    const struct infer_grid *to, float *dst)
{
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
