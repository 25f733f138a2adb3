/* Unit tests of volume assembly and resampling (inference/, no model). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "inference/inference.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
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
static const struct infer_volume_limits LIMITS = {1, 0.5, 0.05, 0};

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
    char err[256] = "";
    assert_int_equal(infer_grid_respace(&g, sp, 0, &coarse, err, sizeof err), INFER_OK);
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

/* Hostile geometry: every value a file can claim, refused with its reason
 * before anything is allocated. */
static void nan_position(struct series *sr) { sr->s[1].position[0] = NAN; }
static void inf_position(struct series *sr) { sr->s[0].position[2] = INFINITY; }
static void huge_position(struct series *sr)
{
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].position[0] = 1e308;
}
static void nan_orientation(struct series *sr)
{
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].orientation[4] = NAN;
}
static void skewed_orientation(struct series *sr)
{
    /* unit rows, 45 degrees apart */
    for (size_t k = 0; k < sr->n; k++) {
        sr->s[k].orientation[3] = sqrt(0.5);
        sr->s[k].orientation[4] = sqrt(0.5);
    }
}
static void long_orientation(struct series *sr)
{
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].orientation[0] = 2;
}
static void zero_spacing(struct series *sr)
{
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].pixel_spacing[0] = 0;
}
static void negative_spacing(struct series *sr)
{
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].pixel_spacing[1] = -0.5;
}
static void nan_spacing(struct series *sr) { sr->s[0].pixel_spacing[1] = NAN; }
static void huge_spacing(struct series *sr)
{
    for (size_t k = 0; k < sr->n; k++)
        sr->s[k].pixel_spacing[0] = sr->s[k].pixel_spacing[1] = 1e6;
}
static void bad_size(struct series *sr) { sr->s[2].rows = -3; }

static const struct {
    const char *what;
    void (*spoil)(struct series *);
    double gap;
    const char *reason;
} hostile[] = {
    {"NaN position", nan_position, 1.0, "slice 2: image position nan is not a finite coordinate"},
    {"infinite position", inf_position, 1.0, "slice 1: image position inf is not a finite"},
    {"position near 1e308", huge_position, 1.0, "image position 1e+308 is not a finite coordinate "
                                                "within 1e+06 mm"},
    {"NaN orientation", nan_orientation, 1.0, "image orientation nan is not a finite number"},
    {"non-orthogonal orientation", skewed_orientation, 1.0,
     "image orientation is not two orthogonal unit vectors"},
    {"orientation not unit length", long_orientation, 1.0,
     "image orientation is not two orthogonal unit vectors"},
    {"zero pixel spacing", zero_spacing, 1.0, "pixel spacing 0 is not in (0, 100] mm"},
    {"negative pixel spacing", negative_spacing, 1.0, "pixel spacing -0.5 is not in (0, 100] mm"},
    {"NaN pixel spacing", nan_spacing, 1.0, "slice 1: pixel spacing nan is not in (0, 100] mm"},
    {"huge pixel spacing", huge_spacing, 1.0, "pixel spacing 1e+06 is not in (0, 100] mm"},
    {"huge slice gap", NULL, 5000.0, "slices 5000.000 mm apart (the limit is 100 mm)"},
    {"invalid size", bad_size, 1.0, "slice 3 has an invalid size (4x-3)"},
};

static void test_hostile_geometry_is_refused_with_the_reason(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        struct series sr;
        struct infer_volume v;
        char err[256] = "";
        make_series(&sr, 4, AXIAL_ROW, AXIAL_COL, hostile[i].gap);
        if (hostile[i].spoil)
            hostile[i].spoil(&sr);
        v.data = (float *)err;
        int rc = infer_volume_assemble(sr.s, sr.n, &LIMITS, &v, err, sizeof err);
        if (rc != INFER_EREFUSED)
            fail_msg("%s: %d (%s), expected INFER_EREFUSED", hostile[i].what, rc, err);
        if (!strstr(err, hostile[i].reason))
            fail_msg("%s: '%s' does not say '%s'", hostile[i].what, err, hostile[i].reason);
        assert_null(v.data);
    }
    /* The same checks from the geometry alone, before any pixel exists. */
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        struct series sr;
        char err[256] = "";
        make_series(&sr, 4, AXIAL_ROW, AXIAL_COL, hostile[i].gap);
        if (hostile[i].spoil)
            hostile[i].spoil(&sr);
        for (size_t k = 0; k < sr.n; k++)
            sr.s[k].pixels = NULL;
        assert_int_equal(infer_volume_check(sr.s, sr.n, &LIMITS, NULL, err, sizeof err),
                         INFER_EREFUSED);
        if (!strstr(err, hostile[i].reason))
            fail_msg("%s (check): '%s' does not say '%s'", hostile[i].what, err,
                     hostile[i].reason);
    }
    /* The same series unspoilt is a volume. */
    struct series sr;
    struct infer_volume v;
    char err[256] = "";
    make_series(&sr, 4, AXIAL_ROW, AXIAL_COL, 1.0);
    assert_int_equal(infer_volume_assemble(sr.s, sr.n, &LIMITS, &v, err, sizeof err), INFER_OK);
    struct infer_grid built = v.grid, checked;
    infer_volume_free(&v);
    for (size_t k = 0; k < sr.n; k++)
        sr.s[k].pixels = NULL;
    assert_int_equal(infer_volume_check(sr.s, sr.n, &LIMITS, &checked, err, sizeof err),
                     INFER_OK);
    assert_memory_equal(&checked, &built, sizeof built);
}

static void test_a_volume_over_the_voxel_budget_is_refused_before_allocating(void **state)
{
    (void)state;
    struct series sr;
    struct infer_volume v;
    char err[256] = "";
    make_series(&sr, 5, AXIAL_ROW, AXIAL_COL, 1.0);
    struct infer_volume_limits lim = LIMITS;
    lim.max_voxels = ROWS * COLS * 5 - 1;
    v.data = (float *)err;
    assert_int_equal(infer_volume_assemble(sr.s, sr.n, &lim, &v, err, sizeof err), INFER_ELIMIT);
    assert_string_equal(err, "a volume of 4 x 3 x 5 voxels is over the limit of 59 voxels");
    assert_null(v.data);
    assert_string_equal(inference_strerror(INFER_ELIMIT), "over the job's memory budget");
    lim.max_voxels = ROWS * COLS * 5;
    assert_int_equal(infer_volume_assemble(sr.s, sr.n, &lim, &v, err, sizeof err), INFER_OK);
    infer_volume_free(&v);
    /* The default budget (0) takes a normal series. */
    lim.max_voxels = 0;
    assert_int_equal(infer_volume_assemble(sr.s, sr.n, &lim, &v, err, sizeof err), INFER_OK);
    infer_volume_free(&v);
}

static void test_respacing_refuses_wild_grids(void **state)
{
    (void)state;
    /* 2x2 pixels of 100 mm (the largest accepted) onto 0.001 mm: each
     * axis alone is 100000 voxels, the grid 1e15. */
    struct infer_grid g = {.nx = 2, .ny = 2, .nz = 2, .origin = {0, 0, 0},
                           .spacing = {100, 100, 100}, .dir = {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    struct infer_grid to;
    char err[256] = "";
    const double fine[3] = {0.001, 0.001, 0.001};
    memset(&to, 0x55, sizeof to);
    assert_int_equal(infer_grid_respace(&g, fine, 0, &to, err, sizeof err), INFER_ELIMIT);
    char want[128]; /* 0: the default budget, node.max_job_memory_mb's default */
    snprintf(want, sizeof want,
             "resampling makes a 100001x100001x100001 volume (the limit is %zu voxels)",
             (size_t)INFER_DEFAULT_MAX_VOXELS);
    assert_non_null(strstr(err, want));
    assert_int_equal(to.nx, 0);
    assert_int_equal(to.ny, 0);
    assert_int_equal(to.nz, 0);

    /* A ratio whose count is not even finite. */
    g.spacing[0] = 1e300;
    const double tiny[3] = {1e-300, 1, 1};
    assert_int_equal(infer_grid_respace(&g, tiny, 0, &to, err, sizeof err), INFER_ELIMIT);
    assert_non_null(strstr(err, "makes inf voxels along axis x"));
    g.spacing[0] = 100;

    /* Non-finite or non-positive spacings, either side. */
    const double bad[][3] = {{NAN, 1, 1}, {1, INFINITY, 1}, {1, 1, 0}, {1, -1, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(infer_grid_respace(&g, bad[i], 0, &to, err, sizeof err), INFER_EINVAL);
        assert_non_null(strstr(err, "cannot resample"));
        assert_int_equal(to.nx, 0);
    }
    g.spacing[2] = NAN;
    const double one[3] = {1, 1, 1};
    assert_int_equal(infer_grid_respace(&g, one, 0, &to, err, sizeof err), INFER_EINVAL);
    g.spacing[2] = 100;

    /* The caller's budget: 101 x 101 x 101 fits 1030301 voxels, not one less. */
    assert_int_equal(infer_grid_respace(&g, one, 1030301, &to, err, sizeof err), INFER_OK);
    assert_int_equal(to.nx, 101);
    assert_int_equal(to.nz, 101);
    assert_int_equal(infer_grid_respace(&g, one, 1030300, &to, err, sizeof err), INFER_ELIMIT);
    assert_string_equal(err, "resampling makes a 101x101x101 volume (the limit is 1030300 voxels)");
}

/* Grids no check would pass (NaN and infinite origins, spacings and
 * directions) must still never read outside the source. Under
 * AddressSanitizer an out-of-bounds read fails the test; without it every
 * value read must be one of the source's. */
static void test_resampling_never_reads_outside_the_source_even_for_nan(void **state)
{
    (void)state;
    struct infer_grid from = {.nx = 2, .ny = 2, .nz = 2, .origin = {0, 0, 0},
                              .spacing = {1, 1, 1}, .dir = {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    float *src = malloc(8 * sizeof *src);
    uint8_t *lsrc = malloc(8);
    for (int v = 0; v < 8; v++) {
        src[v] = 10.0f + v;
        lsrc[v] = (uint8_t)(1 + v);
    }
    const double wild[] = {NAN, INFINITY, -INFINITY, 1e308, -1e308, 0};
    for (size_t a = 0; a < sizeof wild / sizeof wild[0]; a++) {
        for (int what = 0; what < 4; what++) {
            struct infer_grid to = {.nx = 3, .ny = 3, .nz = 3, .origin = {0.5, 0.5, 0.5},
                                    .spacing = {0.5, 0.5, 0.5},
                                    .dir = {1, 0, 0, 0, 1, 0, 0, 0, 1}};
            struct infer_grid f = from;
            if (what == 0)
                to.origin[1] = wild[a];
            else if (what == 1)
                to.spacing[0] = wild[a];
            else if (what == 2)
                f.spacing[2] = wild[a];
            else
                to.dir[4] = wild[a];
            float dst[27];
            uint8_t ldst[27];
            infer_resample(src, &f, &to, dst);
            infer_resample_labels(lsrc, &f, &to, ldst);
            for (int v = 0; v < 27; v++) {
                /* a blend of source values, or NaN where the weights are */
                assert_true(isnan(dst[v]) || (dst[v] >= 10.0f && dst[v] <= 17.0f));
                assert_true(ldst[v] >= 1 && ldst[v] <= 8);
            }
        }
    }
    /* A source grid with no voxels is never read. */
    struct infer_grid empty = from;
    empty.nx = 0;
    float dst[27] = {0};
    infer_resample(src, &empty, &from, dst);
    free(src);
    free(lsrc);
}

static void test_sliding_window_buffers_over_the_budget_are_refused(void **state)
{
    (void)state;
    struct infer_volume v = {.grid = {.nx = 64, .ny = 64, .nz = 8, .spacing = {1, 1, 1},
                                      .dir = {1, 0, 0, 0, 1, 0, 0, 0, 1}}};
    float data[1] = {0};
    v.data = data; /* never read: refused first */
    struct infer_window w = {.patch = {8, 64, 64}, .channels = 3, .decision = INFER_ARGMAX,
                             .max_voxels = 100000};
    char err[256] = "";
    uint8_t labels[1];
    /* input 32768 + output 3 x 32768; one patch keeps every voxel once:
     * no sums. */
    assert_int_equal(infer_sliding_window(NULL, &v, &w, labels, err, sizeof err), INFER_ELIMIT);
    assert_string_equal(err, "the sliding window needs 131072 voxels (patches of 64x64x8 in and "
                             "3 channels out, sums over 0 planes of 64x64), over the limit of "
                             "100000");
    /* Two patches along z overlapping by 4 planes: sums over 4 planes
     * (3 x 4 x 4096 = 49152) on top of 2 x 4 x 64 x 64 x (1 + 3). */
    w.patch[0] = 6;
    w.overlap = 0.5;
    w.max_voxels = 147455;
    assert_int_equal(infer_sliding_window(NULL, &v, &w, labels, err, sizeof err), INFER_ELIMIT);
    assert_string_equal(err, "the sliding window needs 147456 voxels (patches of 64x64x6 in and "
                             "3 channels out, sums over 4 planes of 64x64), over the limit of "
                             "147455");
}

/* ---- The inverse letterbox of labels ---- */

/* Each source pixel takes the model's label at its centre: a picture the
 * size of the model maps one to one. */
static void test_unmap_identity_when_the_image_is_the_model_size(void **state)
{
    (void)state;
    float src[5 * 7], dst[5 * 7];
    for (int i = 0; i < 5 * 7; i++)
        src[i] = (float)i;
    struct infer_letterbox lb;
    assert_int_equal(infer_letterbox(src, 1, 5, 7, dst, 5, 7, NULL, NULL, &lb), INFER_OK);
    uint8_t model[5 * 7], back[5 * 7];
    for (int i = 0; i < 5 * 7; i++)
        model[i] = (uint8_t)(i % 3);
    assert_int_equal(infer_letterbox_unmap(model, 5, 7, &lb, 5, 7, back), INFER_OK);
    assert_memory_equal(model, back, sizeof model);
}

/* A wide picture sits in a band of the model's rows: source row r reads
 * model row r + top, and the padding never reaches the source. */
static void test_unmap_skips_the_letterbox_band(void **state)
{
    (void)state;
    float src[4 * 8], dst[8 * 8];
    for (int i = 0; i < 4 * 8; i++)
        src[i] = 1;
    struct infer_letterbox lb;
    assert_int_equal(infer_letterbox(src, 1, 4, 8, dst, 8, 8, NULL, NULL, &lb), INFER_OK);
    assert_int_equal(lb.top, 2);
    assert_int_equal(lb.left, 0);
    uint8_t model[8 * 8], back[4 * 8];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++)
            model[y * 8 + x] = (uint8_t)(10 * y + x);
    assert_int_equal(infer_letterbox_unmap(model, 8, 8, &lb, 4, 8, back), INFER_OK);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 8; c++)
            assert_int_equal(back[r * 8 + c], 10 * (r + 2) + c);
}

/* Downscaled by 2: source pixel (r, c) has its centre in model pixel
 * (r / 2, c / 2). */
static void test_unmap_of_a_halved_image_reads_the_covering_pixel(void **state)
{
    (void)state;
    static float src[8 * 6], dst[4 * 4];
    struct infer_letterbox lb;
    assert_int_equal(infer_letterbox(src, 1, 8, 6, dst, 4, 4, NULL, NULL, &lb), INFER_OK);
    /* scale min(4/8, 4/6) = 0.5: a 4 x 3 picture and one column of
     * padding, on the right (left = (4 - 3) / 2 = 0) */
    assert_int_equal(lb.rows, 4);
    assert_int_equal(lb.cols, 3);
    uint8_t model[4 * 4], back[8 * 6];
    for (int i = 0; i < 16; i++)
        model[i] = (uint8_t)(i + 1);
    assert_int_equal(infer_letterbox_unmap(model, 4, 4, &lb, 8, 6, back), INFER_OK);
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 6; c++)
            assert_int_equal(back[r * 6 + c], model[(r / 2) * 4 + lb.left + c / 2]);
}

/* Scaled by 4/3: source centres 0.5, 1.5, 2.5 lie at 2/3, 2 and 10/3 in
 * the picture, in model pixels 0, 2 and 3. */
static void test_unmap_takes_the_pixel_holding_each_centre(void **state)
{
    (void)state;
    float src[3 * 3] = {0}, dst[4 * 4];
    struct infer_letterbox lb;
    assert_int_equal(infer_letterbox(src, 1, 3, 3, dst, 4, 4, NULL, NULL, &lb), INFER_OK);
    assert_int_equal(lb.rows, 4);
    uint8_t model[4 * 4], back[3 * 3];
    for (int i = 0; i < 16; i++)
        model[i] = (uint8_t)i;
    assert_int_equal(infer_letterbox_unmap(model, 4, 4, &lb, 3, 3, back), INFER_OK);
    const int at[3] = {0, 2, 3};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            assert_int_equal(back[r * 3 + c], at[r] * 4 + at[c]);
}

/* Upscaled by 3 into a letterbox: the model pixel at a source centre was
 * sampled exactly there, so a threshold decided in the model and mapped
 * back equals the same threshold on the source. */
static void test_unmap_after_letterbox_round_trips_a_threshold(void **state)
{
    (void)state;
    enum { R = 3, C = 5, OR = 12, OC = 15 };
    float src[R * C], in[OR * OC];
    /* A checkerboard: any model pixel sampled off a source centre blends
     * 0 and 1 to at most 2/3, below the threshold. */
    for (int i = 0; i < R * C; i++)
        src[i] = (float)((i / C + i % C) % 2);
    struct infer_letterbox lb;
    assert_int_equal(infer_letterbox(src, 1, R, C, in, OR, OC, NULL, NULL, &lb), INFER_OK);
    assert_int_equal(lb.top, 1);
    uint8_t model[OR * OC], back[R * C];
    for (int i = 0; i < OR * OC; i++)
        model[i] = in[i] > 0.8f ? 1 : 0;
    assert_int_equal(infer_letterbox_unmap(model, OR, OC, &lb, R, C, back), INFER_OK);
    for (int i = 0; i < R * C; i++)
        assert_int_equal(back[i], src[i] > 0.8f ? 1 : 0);
}

/* A mapping that puts centres outside the model grid gives background
 * there; sizes that are not positive are refused. */
static void test_unmap_outside_the_model_is_background(void **state)
{
    (void)state;
    uint8_t model[4 * 4], back[4 * 4];
    memset(model, 7, sizeof model);
    struct infer_letterbox lb = {1.0, 2, -2, 4, 4};
    assert_int_equal(infer_letterbox_unmap(model, 4, 4, &lb, 4, 4, back), INFER_OK);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            assert_int_equal(back[r * 4 + c], r < 2 && c >= 2 ? 7 : 0);
    assert_int_equal(infer_letterbox_unmap(model, 4, 4, &lb, 0, 4, back), INFER_EINVAL);
    assert_int_equal(infer_letterbox_unmap(NULL, 4, 4, &lb, 4, 4, back), INFER_EINVAL);
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
        cmocka_unit_test(test_hostile_geometry_is_refused_with_the_reason),
        cmocka_unit_test(test_a_volume_over_the_voxel_budget_is_refused_before_allocating),
        cmocka_unit_test(test_respacing_refuses_wild_grids),
        cmocka_unit_test(test_resampling_never_reads_outside_the_source_even_for_nan),
        cmocka_unit_test(test_sliding_window_buffers_over_the_budget_are_refused),
        cmocka_unit_test(test_unmap_identity_when_the_image_is_the_model_size),
        cmocka_unit_test(test_unmap_skips_the_letterbox_band),
        cmocka_unit_test(test_unmap_of_a_halved_image_reads_the_covering_pixel),
        cmocka_unit_test(test_unmap_takes_the_pixel_holding_each_centre),
        cmocka_unit_test(test_unmap_after_letterbox_round_trips_a_threshold),
        cmocka_unit_test(test_unmap_outside_the_model_is_background),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
