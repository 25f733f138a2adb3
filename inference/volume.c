/*
 * volume.c — slices to one volume, or a reason why they are not one.
 *
 * Slices are ordered by their distance along the slice normal (the cross
 * product of the row and column cosines): position . normal. Instance
 * numbers and file names are never trusted for order. The slice spacing is
 * taken from the sorted positions; uneven gaps mean a missing slice.
 */
#include "inference/inference.h"

#include "common/buffer.h"
#include "common/checked.h"
#include "common/error.h"
#include "common/limits.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORIENTATION_TOLERANCE 1e-3 /* direction cosines */
#define SPACING_TOLERANCE_MM 1e-3
#define DUPLICATE_MM 1e-3
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static double dot3(const double *a, const double *b)
{
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

static void cross3(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

struct order {
    double d;  /* position along the normal */
    size_t i;  /* index into the caller's slices */
};

static int by_distance(const void *a, const void *b)
{
    double da = ((const struct order *)a)->d, db = ((const struct order *)b)->d;
    return (da > db) - (da < db);
}

static int compare_doubles(const void *a, const void *b)
{
    double da = *(const double *)a, db = *(const double *)b;
    return (da > db) - (da < db);
}

/* Every value of slice S usable, or a reason: the comparisons below are
 * all false for NaN, so nothing non-finite may reach them, and values far
 * out of range would overflow the grid arithmetic after them. */
static int check_slice(const struct infer_slice *s, size_t i, char *err, size_t errlen)
{
    if (s->rows <= 0 || s->cols <= 0)
        return error_set(err, errlen, INFER_EREFUSED, "slice %zu has an invalid size (%dx%d)",
                         i + 1, s->cols, s->rows);
    for (int c = 0; c < 3; c++)
        if (!isfinite(s->position[c]) || fabs(s->position[c]) > LIMIT_MAX_POSITION_MM)
            return error_set(err, errlen, INFER_EREFUSED,
                             "slice %zu: image position %g is not a finite coordinate within "
                             "%g mm",
                             i + 1, s->position[c], LIMIT_MAX_POSITION_MM);
    for (int c = 0; c < 2; c++)
        if (!isfinite(s->pixel_spacing[c]) || s->pixel_spacing[c] <= 0 ||
            s->pixel_spacing[c] > LIMIT_MAX_SPACING_MM)
            return error_set(err, errlen, INFER_EREFUSED,
                             "slice %zu: pixel spacing %g is not in (0, %g] mm", i + 1,
                             s->pixel_spacing[c], LIMIT_MAX_SPACING_MM);
    const double *row = s->orientation, *col = s->orientation + 3;
    for (int c = 0; c < 6; c++)
        if (!isfinite(s->orientation[c]))
            return error_set(err, errlen, INFER_EREFUSED,
                             "slice %zu: image orientation %g is not a finite number", i + 1,
                             s->orientation[c]);
    if (fabs(dot3(row, row) - 1) > LIMIT_ORIENTATION_TOLERANCE ||
        fabs(dot3(col, col) - 1) > LIMIT_ORIENTATION_TOLERANCE ||
        fabs(dot3(row, col)) > LIMIT_ORIENTATION_TOLERANCE)
        return error_set(err, errlen, INFER_EREFUSED,
                         "image orientation is not two orthogonal unit vectors");
    return INFER_OK;
}

void infer_volume_free(struct infer_volume *v)
{
    if (!v)
        return;
    free(v->data);
    free(v->data16);
    free(v->source);
    free(v->frame);
    memset(v, 0, sizeof *v);
}

/* Builds the volume into OUT, or with OUT NULL only checks that it can be
 * built (every check, no volume) and gives its grid in GRID. */
static int assemble(const struct infer_slice *slices, size_t n,
                    const struct infer_volume_limits *limits, enum infer_voxel voxel,
                    struct infer_volume *out, struct infer_grid *grid, int copy, char *err,
                    size_t errlen)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (grid)
        memset(grid, 0, sizeof *grid);
    if (n == 0)
        return error_set(err, errlen, INFER_EREFUSED, "the series has no image slices");
    if (limits && (size_t)limits->min_slices > n)
        return error_set(err, errlen, INFER_EREFUSED,
                         "the series has %zu slice%s; the model needs at least %d", n,
                         n == 1 ? "" : "s", limits->min_slices);

    for (size_t i = 0; i < n; i++) {
        int rc = check_slice(&slices[i], i, err, errlen);
        if (rc != INFER_OK)
            return rc;
    }
    const struct infer_slice *s0 = &slices[0];
    /* The size before any allocation (the slices' order and gaps need
     * arrays of N): over the budget is refused at once. */
    size_t max_voxels = limits && limits->max_voxels ? limits->max_voxels : INFER_DEFAULT_MAX_VOXELS;
    size_t voxels, bytes;
    if (!size_mul3_ok((size_t)s0->rows, (size_t)s0->cols, n, &voxels) || voxels > max_voxels ||
        !size_mul_ok(voxels, sizeof(float), &bytes) || n > INT_MAX)
        return error_set(err, errlen, INFER_ELIMIT,
                         "a volume of %d x %d x %zu voxels is over the limit of %zu voxels",
                         s0->cols, s0->rows, n, max_voxels);
    for (size_t i = 1; i < n; i++) {
        const struct infer_slice *s = &slices[i];
        if (s->rows != s0->rows || s->cols != s0->cols)
            return error_set(err, errlen, INFER_EREFUSED,
                             "mixed image sizes in the series (%dx%d and %dx%d)", s0->cols,
                             s0->rows, s->cols, s->rows);
        for (int c = 0; c < 6; c++)
            if (fabs(s->orientation[c] - s0->orientation[c]) > ORIENTATION_TOLERANCE)
                return error_set(err, errlen, INFER_EREFUSED,
                                 "mixed image orientations in the series (a localizer or another "
                                 "plane?)");
        for (int c = 0; c < 2; c++)
            if (fabs(s->pixel_spacing[c] - s0->pixel_spacing[c]) > SPACING_TOLERANCE_MM)
                return error_set(err, errlen, INFER_EREFUSED, "mixed pixel spacings in the series");
    }
    const double *row = s0->orientation, *col = s0->orientation + 3;
    double normal[3];
    cross3(row, col, normal);
    double nlen = sqrt(dot3(normal, normal));
    for (int c = 0; c < 3; c++)
        normal[c] /= nlen;

    struct order *ord = malloc(n * sizeof *ord);
    double *gaps = n > 1 ? malloc((n - 1) * sizeof *gaps) : NULL;
    if (!ord || (n > 1 && !gaps)) {
        free(ord);
        free(gaps);
        return INFER_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        ord[i].d = dot3(slices[i].position, normal);
        ord[i].i = i;
    }
    qsort(ord, n, sizeof *ord, by_distance);

    int rc = INFER_OK;
    double spacing = 1.0;
    if (n > 1) {
        for (size_t k = 0; k + 1 < n; k++) {
            gaps[k] = ord[k + 1].d - ord[k].d;
            if (gaps[k] < DUPLICATE_MM) {
                rc = error_set(err, errlen, INFER_EREFUSED,
                               "two slices at the same position (%.3f mm along the normal)",
                               ord[k].d);
                goto done;
            }
        }
        /* The median gap is the spacing; a missing slice shows as a gap
         * that is a multiple of it. */
        double *sorted = malloc((n - 1) * sizeof *sorted);
        if (!sorted) {
            rc = INFER_ENOMEM;
            goto done;
        }
        memcpy(sorted, gaps, (n - 1) * sizeof *sorted);
        qsort(sorted, n - 1, sizeof *sorted, compare_doubles);
        spacing = sorted[(n - 1) / 2];
        free(sorted);
        if (spacing > LIMIT_MAX_SPACING_MM) {
            rc = error_set(err, errlen, INFER_EREFUSED,
                           "slices %.3f mm apart (the limit is %g mm)", spacing,
                           LIMIT_MAX_SPACING_MM);
            goto done;
        }
        double tol = limits && limits->spacing_tolerance > 0 ? limits->spacing_tolerance : 0.05;
        for (size_t k = 0; k + 1 < n; k++) {
            if (fabs(gaps[k] - spacing) > tol * spacing) {
                rc = error_set(err, errlen, INFER_EREFUSED,
                               "uneven slice spacing: a gap of %.3f mm where %.3f mm is expected "
                               "(missing slice?)",
                               gaps[k], spacing);
                goto done;
            }
        }
        /* Slices stacked along another direction than their normal: a
         * gantry tilt (sheared volume). */
        const double *first = slices[ord[0].i].position, *last = slices[ord[n - 1].i].position;
        double v[3] = {last[0] - first[0], last[1] - first[1], last[2] - first[2]};
        double along = dot3(v, normal);
        double perp[3] = {v[0] - along * normal[0], v[1] - along * normal[1],
                          v[2] - along * normal[2]};
        double tilt = atan2(sqrt(dot3(perp, perp)), along) * 180.0 / M_PI;
        double max_tilt = limits ? limits->max_tilt_degrees : 0.5;
        if (tilt > max_tilt) {
            rc = error_set(err, errlen, INFER_EREFUSED,
                           "gantry tilt of %.2f degrees (the limit is %.2f)", tilt, max_tilt);
            goto done;
        }
    }

    struct infer_grid *g = out ? &out->grid : grid;
    g->nx = s0->cols;
    g->ny = s0->rows;
    g->nz = (int)n;
    memcpy(g->origin, slices[ord[0].i].position, sizeof g->origin);
    /* PixelSpacing is (between rows, between columns). */
    g->spacing[0] = s0->pixel_spacing[1];
    g->spacing[1] = s0->pixel_spacing[0];
    g->spacing[2] = spacing;
    memcpy(g->dir, row, 3 * sizeof(double));
    memcpy(g->dir + 3, col, 3 * sizeof(double));
    memcpy(g->dir + 6, normal, 3 * sizeof(double));
    if (!out)
        goto done;

    size_t plane = (size_t)g->nx * g->ny; /* voxels <= max_voxels: no wrap */
    if (voxel == INFER_VOXEL_INT16)
        out->data16 = buffer_alloc(bytes / 2);
    else
        out->data = buffer_alloc(bytes);
    out->source = malloc(n * sizeof *out->source);
    out->frame = malloc(n * sizeof *out->frame);
    if ((!out->data && !out->data16) || !out->source || !out->frame) {
        infer_volume_free(out);
        rc = INFER_ENOMEM;
        goto done;
    }
    for (size_t k = 0; k < n; k++) {
        const struct infer_slice *s = &slices[ord[k].i];
        if (copy)
            memcpy(out->data + k * plane, s->pixels, plane * sizeof *out->data);
        out->source[k] = s->source;
        out->frame[k] = s->frame;
    }
done:
    free(ord);
    free(gaps);
    return rc;
}

int infer_volume_assemble(const struct infer_slice *slices, size_t n,
                          const struct infer_volume_limits *limits, struct infer_volume *out,
                          char *err, size_t errlen)
{
    return assemble(slices, n, limits, INFER_VOXEL_FLOAT, out, NULL, 1, err, errlen);
}

int infer_volume_layout(const struct infer_slice *slices, size_t n,
                        const struct infer_volume_limits *limits, enum infer_voxel voxel,
                        struct infer_volume *out, char *err, size_t errlen)
{
    return assemble(slices, n, limits, voxel, out, NULL, 0, err, errlen);
}

int infer_volume_widen(struct infer_volume *v)
{
    if (!v->data16)
        return INFER_OK;
    /* The voxel count fitted a float volume's budget when it was laid out. */
    size_t n = (size_t)v->grid.nx * v->grid.ny * v->grid.nz;
    float *f = buffer_alloc(n * sizeof *f);
    if (!f)
        return INFER_ENOMEM;
    for (size_t i = 0; i < n; i++)
        f[i] = v->data16[i];
    free(v->data16);
    v->data16 = NULL;
    v->data = f;
    return INFER_OK;
}

int infer_volume_check(const struct infer_slice *slices, size_t n,
                       const struct infer_volume_limits *limits, struct infer_grid *grid,
                       char *err, size_t errlen)
{
    struct infer_grid unused;
    return assemble(slices, n, limits, INFER_VOXEL_FLOAT, NULL, grid ? grid : &unused, 0, err,
                    errlen);
}
