/* Unit tests of volume assembly and resampling (inference/, no model). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "inference/inference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 3
#define COLS 4
#define MAXN 16

/* A series of N slices along NORMAL (from row x col), spaced GAP apart,
 * each filled with its index so that the order can be read back. */
struct series {
    struct infer_slice s[MAXN];
    float pixels[MAXN][ROWS * COLS];
    size_t n;
};

static void make_series(struct series *sr, size_t n, const double row[3], const double col[3],
                        double gap)
{
    double nrm[3] = {row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2],
                     row[0] * col[1] - row[1] * col[0]};
    memset(sr, 0, sizeof *sr);
    sr->n = n;
    for (size_t k = 0; k < n; k++) {
        struct infer_slice *s = &sr->s[k];
        for (int v = 0; v < ROWS * COLS; v++)
            sr->pixels[k][v] = (float)k;
        s->pixels = sr->pixels[k];
        s->rows = ROWS;
        s->cols = COLS;
        for (int c = 0; c < 3; c++) {
            s->position[c] = 10.0 * (c + 1) + k * gap * nrm[c];
            s->orientation[c] = row[c];
            s->orientation[3 + c] = col[c];
        }
        s->pixel_spacing[0] = 0.5;
        s->pixel_spacing[1] = 0.7;
        s->source = (int)k;
        s->frame = 0;
    }
}

static void shuffle(struct series *sr, unsigned seed)
{
    srand(seed);
    for (size_t i = sr->n - 1; i > 0; i--) {
        size_t j = (size_t)rand() % (i + 1);
        struct infer_slice t = sr->s[i];
        sr->s[i] = sr->s[j];
        sr->s[j] = t;
    }
}

static const double AXIAL_ROW[3] = {1, 0, 0}, AXIAL_COL[3] = {0, 1, 0};
static const struct infer_volume_limits LIMITS = {1, 0.5, 0.05};

static int assemble(struct series *sr, struct infer_volume *v, char *err)
{
    return infer_volume_assemble(sr->s, sr->n, &LIMITS, v, err, 256);
}

static void test_shuffled_slices_are_ordered_along_the_normal(void **state)
{
    (void)state;
    /* An oblique plane: the order must come from position . normal. */
    const double r = sqrt(0.5);
    const double row[3] = {r, r, 0}, col[3] = {0, 0, -1};
    struct series sr;
    struct infer_volume v;
    char err[256] = "";
    make_series(&sr, 9, row, col, 1.25);
    shuffle(&sr, 7);
    assert_int_equal(assemble(&sr, &v, err), INFER_OK);
    assert_int_equal(v.grid.nz, 9);
    assert_int_equal(v.grid.nx, COLS);
    assert_int_equal(v.grid.ny, ROWS);
    assert_float_equal(v.grid.spacing[0], 0.7, 1e-9);
    assert_float_equal(v.grid.spacing[1], 0.5, 1e-9);
    assert_float_equal(v.grid.spacing[2], 1.25, 1e-9);
    for (int k = 0; k < 9; k++) {
        assert_float_equal(v.data[(size_t)k * ROWS * COLS], (float)k, 0);
        assert_int_equal(v.source[k], k);
    }
    /* The first slice's position is the origin. */
    assert_float_equal(v.grid.origin[0], 10.0, 1e-9);
    infer_volume_free(&v);
}

static void test_descending_positions_start_at_the_lowest_one(void **state)
{
    (void)state;
    struct series sr;
    struct infer_volume v;
    char err[256];
    make_series(&sr, 5, AXIAL_ROW, AXIAL_COL, -2.0); /* slices walk towards -z */
    assert_int_equal(assemble(&sr, &v, err), INFER_OK);
    assert_float_equal(v.grid.spacing[2], 2.0, 1e-9);
    assert_float_equal(v.data[0], 4.0f, 0);
    assert_float_equal(v.grid.origin[2], 30.0 - 8.0, 1e-9);
    infer_volume_free(&v);
}

/* Ways a series is not one volume, each applied to a clean axial series
 * of N slices 1 mm apart. */
static void drop_slice_4(struct series *sr)
{
    sr->s[4] = sr->s[7];
    sr->n = 7;
}

static void narrow_slice_2(struct series *sr)
{
    sr->s[2].cols = COLS - 1;
}

static void coronal_slice_1(struct series *sr)
{
    /* A coronal image (a localizer) among axial ones. */
    const double coronal[6] = {1, 0, 0, 0, 0, -1};
    memcpy(sr->s[1].orientation, coronal, sizeof coronal);
}

static void slice_3_on_slice_1(struct series *sr)
{
    memcpy(sr->s[3].position, sr->s[1].position, sizeof sr->s[1].position);
}

static void tilt(struct series *sr, double shift_per_slice)
{
    /* Each slice shifted along y per mm of z. */
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].position[1] += shift_per_slice * k;
}

static void tilt_11_degrees(struct series *sr)
{
    tilt(sr, 0.2);
}

static const struct {
    const char *what;
    size_t n;
    void (*spoil)(struct series *sr);
    int min_slices;        /* 0: LIMITS's */
    const char *reason;    /* in ERR */
    int exact;             /* ERR is REASON, not just contains it */
} refusals[] = {
    {"a missing slice", 8, drop_slice_4, 0, "uneven slice spacing", 0},
    {"mixed sizes", 4, narrow_slice_2, 0, "mixed image sizes", 0},
    {"a localizer mixed in", 4, coronal_slice_1, 0, "mixed image orientations", 0},
    {"duplicate positions", 4, slice_3_on_slice_1, 0, "same position", 0},
    {"gantry tilt beyond the limit", 6, tilt_11_degrees, 0, "gantry tilt of 11.31 degrees", 0},
    {"too few slices", 3, NULL, 5, "the series has 3 slices; the model needs at least 5", 1},
};

static void test_series_that_are_not_one_volume_are_refused_with_the_reason(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        struct series sr;
        struct infer_volume v;
        char err[256] = "";
        struct infer_volume_limits lim = LIMITS;
        if (refusals[i].min_slices)
            lim.min_slices = refusals[i].min_slices;
        make_series(&sr, refusals[i].n, AXIAL_ROW, AXIAL_COL, 1.0);
        if (refusals[i].spoil)
            refusals[i].spoil(&sr);
        v.data = (float *)err; /* must be reset */
        int rc = infer_volume_assemble(sr.s, sr.n, &lim, &v, err, sizeof err);
        if (rc != INFER_EREFUSED)
            fail_msg("%s: %d (%s), expected INFER_EREFUSED", refusals[i].what, rc, err);
        if (refusals[i].exact ? strcmp(err, refusals[i].reason) != 0
                              : strstr(err, refusals[i].reason) == NULL)
            fail_msg("%s: '%s' does not say '%s'", refusals[i].what, err, refusals[i].reason);
        assert_null(v.data);
    }
}

static void test_gantry_tilt_below_the_limit_is_accepted(void **state)
{
    (void)state;
    struct series sr;
    struct infer_volume v;
    char err[256] = "";
    make_series(&sr, 6, AXIAL_ROW, AXIAL_COL, 1.0);
    tilt(&sr, 0.001);
    assert_int_equal(assemble(&sr, &v, err), INFER_OK);
    infer_volume_free(&v);
}

/* A linear function of patient position: trilinear interpolation must
 * reproduce it exactly, so a round trip through another spacing is exact. */
static float ramp(const struct infer_grid *g, int i, int j, int k)
{
    double p[3];
    for (int c = 0; c < 3; c++)
        p[c] = g->origin[c] + i * g->spacing[0] * g->dir[c] + j * g->spacing[1] * g->dir[3 + c] +
               k * g->spacing[2] * g->dir[6 + c];
    return (float)(2.0 * p[0] - 3.0 * p[1] + 0.5 * p[2] + 7.0);
}

static void test_resampling_round_trip_keeps_a_linear_volume(void **state)
{
    (void)state;
    struct infer_grid g = {.nx = 9, .ny = 7, .nz = 5, .origin = {-3, 4, 12},
                           .spacing = {0.5, 0.75, 2.0}, .dir = {0, 1, 0, 0, 0, -1, -1, 0, 0}};
    size_t nvox = (size_t)g.nx * g.ny * g.nz;
    float *src = malloc(nvox * sizeof *src), *back = malloc(nvox * sizeof *back);
    for (int k = 0; k < g.nz; k++)
        for (int j = 0; j < g.ny; j++)
            for (int i = 0; i < g.nx; i++)
                src[((size_t)k * g.ny + j) * g.nx + i] = ramp(&g, i, j, k);
    struct infer_grid coarse;
    const double sp[3] = {1.0, 1.5, 1.0};
    infer_grid_respace(&g, sp, &coarse);
    assert_int_equal(coarse.nx, 5);
    assert_int_equal(coarse.ny, 4);
    assert_int_equal(coarse.nz, 9);
    float *mid = malloc((size_t)coarse.nx * coarse.ny * coarse.nz * sizeof *mid);
    infer_resample(src, &g, &coarse, mid);
    for (int k = 0; k < coarse.nz; k++)
        for (int j = 0; j < coarse.ny; j++)
            for (int i = 0; i < coarse.nx; i++)
                assert_float_equal(mid[((size_t)k * coarse.ny + j) * coarse.nx + i],
                                   ramp(&coarse, i, j, k), 1e-3);
    infer_resample(mid, &coarse, &g, back);
    for (size_t v = 0; v < nvox; v++)
        assert_float_equal(back[v], src[v], 1e-3);
    free(src);
    free(mid);
    free(back);
}

static void test_label_resampling_on_the_same_grid_is_the_identity(void **state)
{
    (void)state;
    struct infer_grid g = {.nx = 4, .ny = 3, .nz = 2, .origin = {1, 2, 3},
                           .spacing = {1, 1, 2}, .dir = {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    uint8_t src[24], dst[24];
    for (int v = 0; v < 24; v++)
        src[v] = (uint8_t)(v % 3);
    infer_resample_labels(src, &g, &g, dst);
    assert_memory_equal(src, dst, sizeof src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shuffled_slices_are_ordered_along_the_normal),
        cmocka_unit_test(test_descending_positions_start_at_the_lowest_one),
        cmocka_unit_test(test_series_that_are_not_one_volume_are_refused_with_the_reason),
        cmocka_unit_test(test_gantry_tilt_below_the_limit_is_accepted),
        cmocka_unit_test(test_resampling_round_trip_keeps_a_linear_volume),
        cmocka_unit_test(test_label_resampling_on_the_same_grid_is_the_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
