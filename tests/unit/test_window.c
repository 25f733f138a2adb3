/* Sliding-window inference against whole-volume inference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "inference/inference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int test_write_conv_model(const char *path);

static char dir[64];

static int make_models(void **state)
{
    (void)state;
    char err[256], path[128];
    snprintf(dir, sizeof dir, "/tmp/ainode-test-window-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/conv.pt", dir);
    if (test_write_conv_model(path) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/builtin.pt", dir);
    return infer_write_builtin_ct_bone_body(path, err, sizeof err);
}

static int remove_models(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/conv.pt", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/builtin.pt", dir);
    unlink(path);
    return rmdir(dir);
}

static struct infer_model *load(const char *name)
{
    char path[128], err[256];
    struct infer_model *m = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(infer_model_load(path, "cpu", &m, err, sizeof err), INFER_OK);
    return m;
}

/* A volume of smooth structure plus noise, deterministic. */
static struct infer_volume make_volume(int nx, int ny, int nz, float scale)
{
    struct infer_volume v;
    memset(&v, 0, sizeof v);
    v.grid.nx = nx;
    v.grid.ny = ny;
    v.grid.nz = nz;
    v.grid.spacing[0] = v.grid.spacing[1] = v.grid.spacing[2] = 1;
    v.grid.dir[0] = v.grid.dir[4] = v.grid.dir[8] = 1;
    v.data = malloc((size_t)nx * ny * nz * sizeof *v.data);
    unsigned s = 12345;
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++) {
                s = s * 1103515245u + 12345u;
                float noise = (float)((s >> 16) & 0x7fff) / 32768.0f - 0.5f;
                v.data[((size_t)k * ny + j) * nx + i] =
                    scale * (float)(sin(i * 0.5) + cos(j * 0.3) * sin(k * 0.7) + noise);
            }
    return v;
}

static uint8_t *run(struct infer_model *m, const struct infer_volume *v, int pz, int py, int px,
                    int margin, double overlap, enum infer_blend blend, int channels)
{
    struct infer_window w = {
        .patch = {pz, py, px},
        .margin = {margin, margin, margin},
        .overlap = overlap,
        .blend = blend,
        .channels = channels,
        .decision = INFER_ARGMAX,
    };
    char err[256] = "";
    uint8_t *labels = malloc((size_t)v->grid.nx * v->grid.ny * v->grid.nz);
    int rc = infer_sliding_window(m, v, &w, labels, err, sizeof err);
    if (rc != INFER_OK)
        fail_msg("sliding window: %s", err);
    return labels;
}

static size_t differences(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}

static void test_windows_with_a_margin_match_the_whole_volume(void **state)
{
    (void)state;
    struct infer_model *m = load("conv.pt");
    struct infer_volume v = make_volume(23, 19, 21, 1.0f);
    size_t n = (size_t)23 * 19 * 21;
    uint8_t *whole = run(m, &v, 21, 19, 23, 0, 0, INFER_BLEND_CONSTANT, 3);
    static const struct {
        int patch[3];
        double overlap;
        enum infer_blend blend;
    } windows[] = {
        {{9, 8, 10}, 0.5, INFER_BLEND_CONSTANT},
        {{7, 11, 6}, 0.0, INFER_BLEND_CONSTANT},
        {{9, 8, 10}, 0.5, INFER_BLEND_GAUSSIAN},
        {{7, 11, 6}, 0.0, INFER_BLEND_GAUSSIAN},
    };
    for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++) {
        uint8_t *win = run(m, &v, windows[i].patch[0], windows[i].patch[1], windows[i].patch[2],
                           2, windows[i].overlap, windows[i].blend, 3);
        size_t d = differences(whole, win, n);
        if (d)
            fail_msg("window %zu: %zu labels differ from the whole-volume run", i, d);
        free(win);
    }
    free(whole);
    infer_volume_free(&v);
    infer_model_free(m);
}

/* Threshold decisions compare the weighted mean of the overlapping
 * patches' outputs, so every voxel must be divided by exactly the weight it
 * received: with overlap and Gaussian blending a voxel's weight depends on
 * where it lies among the patches. */
static void test_threshold_decisions_divide_by_each_voxels_own_weight(void **state)
{
    (void)state;
    struct infer_model *m = load("conv.pt");
    struct infer_volume v = make_volume(23, 19, 21, 1.0f);
    const size_t n = (size_t)23 * 19 * 21;
    struct infer_window w = {
        .patch = {21, 19, 23},
        .channels = 3,
        .decision = INFER_THRESHOLD,
        .threshold = 0.25f,
    };
    char err[256] = "";
    uint8_t *whole = malloc(n), *win = malloc(n);
    assert_int_equal(infer_sliding_window(m, &v, &w, whole, err, sizeof err), INFER_OK);
    const int patch[3] = {9, 8, 10};
    for (int a = 0; a < 3; a++) {
        w.patch[a] = patch[a];
        w.margin[a] = 2;
    }
    w.overlap = 0.5;
    w.blend = INFER_BLEND_GAUSSIAN;
    assert_int_equal(infer_sliding_window(m, &v, &w, win, err, sizeof err), INFER_OK);
    /* The means equal the whole-volume outputs up to float rounding, which
     * may tip a voxel lying on the threshold itself; a wrong weight tips
     * thousands. */
    size_t d = differences(whole, win, n), labelled = 0;
    for (size_t i = 0; i < n; i++)
        labelled += whole[i] != 0;
    assert_true(labelled > n / 10 && labelled < n);
    if (d > n / 1000)
        fail_msg("%zu of %zu threshold labels differ from the whole-volume run", d, n);
    free(whole);
    free(win);
    infer_volume_free(&v);
    infer_model_free(m);
}

static void test_windows_without_the_margin_differ_at_patch_borders(void **state)
{
    (void)state;
    /* The margin is what makes the windows above exact. */
    struct infer_model *m = load("conv.pt");
    struct infer_volume v = make_volume(23, 19, 21, 1.0f);
    size_t n = (size_t)23 * 19 * 21;
    uint8_t *whole = run(m, &v, 21, 19, 23, 0, 0, INFER_BLEND_CONSTANT, 3);
    uint8_t *win = run(m, &v, 7, 11, 6, 0, 0.0, INFER_BLEND_CONSTANT, 3);
    assert_true(differences(whole, win, n) > 0);
    free(whole);
    free(win);
    infer_volume_free(&v);
    infer_model_free(m);
}

static void test_builtin_model_gives_the_same_labels_in_any_patches(void **state)
{
    (void)state;
    struct infer_model *m = load("builtin.pt");
    struct infer_volume v = make_volume(31, 17, 13, 1500.0f);
    size_t n = (size_t)31 * 17 * 13;
    uint8_t *whole = run(m, &v, 13, 17, 31, 0, 0, INFER_BLEND_CONSTANT, 3);
    uint8_t *win = run(m, &v, 4, 5, 6, 0, 0.25, INFER_BLEND_GAUSSIAN, 3);
    assert_int_equal(differences(whole, win, n), 0);
    for (size_t i = 0; i < n; i++) {
        float hu = v.data[i];
        uint8_t want = (hu >= 226 && hu <= 3071) ? 1 : hu > -500 ? 2 : 0;
        assert_int_equal(win[i], want);
    }
    free(whole);
    free(win);
    infer_volume_free(&v);
    infer_model_free(m);
}

static void test_a_model_with_the_wrong_channel_count_is_an_error(void **state)
{
    (void)state;
    struct infer_model *m = load("builtin.pt");
    struct infer_volume v = make_volume(8, 8, 8, 1.0f);
    struct infer_window w = {.patch = {4, 4, 4}, .channels = 2, .decision = INFER_ARGMAX};
    uint8_t labels[512];
    char err[256] = "";
    assert_int_equal(infer_sliding_window(m, &v, &w, labels, err, sizeof err), INFER_EMODEL);
    assert_non_null(strstr(err, "1x2x4x4x4 was expected"));
    infer_volume_free(&v);
    infer_model_free(m);
}

static int cancel_after(void *ud, long done, long total)
{
    (void)total;
    return done >= *(long *)ud;
}

static void test_progress_callback_can_cancel(void **state)
{
    (void)state;
    struct infer_model *m = load("builtin.pt");
    struct infer_volume v = make_volume(8, 8, 8, 1.0f);
    long after = 3;
    struct infer_window w = {.patch = {2, 8, 8}, .channels = 3, .decision = INFER_ARGMAX,
                             .progress = cancel_after, .progress_ud = &after};
    uint8_t labels[512];
    char err[256] = "";
    assert_int_equal(infer_sliding_window(m, &v, &w, labels, err, sizeof err),
                     INFER_ECANCELLED);
    infer_volume_free(&v);
    infer_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_with_a_margin_match_the_whole_volume),
        cmocka_unit_test(test_threshold_decisions_divide_by_each_voxels_own_weight),
        cmocka_unit_test(test_windows_without_the_margin_differ_at_patch_borders),
        cmocka_unit_test(test_builtin_model_gives_the_same_labels_in_any_patches),
        cmocka_unit_test(test_a_model_with_the_wrong_channel_count_is_an_error),
        cmocka_unit_test(test_progress_callback_can_cancel),
    };
    return cmocka_run_group_tests(tests, make_models, remove_models);
}
