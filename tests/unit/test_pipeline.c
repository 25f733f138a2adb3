/* Unit tests of the pipeline: the built-in model on a real CT series. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "service/pipeline.h"
#include "service_fixture.h"

#include "config/config.h"
#include "inference/inference.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICES 5
#define ROWS 20
#define COLS 24

struct fixture {
    char dir[256];
    char **paths;
    size_t n;
    struct config *cfg;
    const struct config_model *cm;
    struct infer_model *model;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    fx_tempdir("pipeline", f->dir, sizeof f->dir);
    char series[512], yaml[2048];
    snprintf(series, sizeof series, "%s/series", f->dir);
    fx_make_series(series, SLICES, ROWS, COLS, &f->paths, &f->n);
    snprintf(yaml, sizeof yaml,
             "node:\n  ae_title: AINODE\n  port: 11112\n  data_dir: %s/data\n"
             "models:\n  ct-bone-body:\n    file: builtin:ct-bone-body\n    threads: 1\n",
             f->dir);
    f->cfg = fx_load_config(f->dir, yaml);
    f->cm = config_find_model(f->cfg, "ct-bone-body");
    assert_non_null(f->cm);
    char err[512] = "";
    if (infer_model_load(f->cm->file, f->cm->device, &f->model, err, sizeof err) != INFER_OK)
        fail_msg("cannot load the built-in model: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    infer_model_free(f->model);
    config_unref(f->cfg);
    fx_free_paths(f->paths, f->n);
    fx_rmtree(f->dir);
    free(f);
    return 0;
}

/* The files in reverse order: the pipeline orders slices by position. */
static void reversed(const struct fixture *f, const char **paths)
{
    for (size_t i = 0; i < f->n; i++)
        paths[i] = f->paths[f->n - 1 - i];
}

/* Each slice's labels equal those of its file's .labels (ct_series.py):
 * the files in PATHS are in reverse slice order. */
static void assert_labels_of_each_file(const char *const *paths, const struct pipeline_output *out)
{
    size_t plane = (size_t)COLS * ROWS;
    for (int k = 0; k < SLICES; k++) {
        assert_int_equal(out->source[k], SLICES - 1 - k);
        char expected_path[4096];
        snprintf(expected_path, sizeof expected_path, "%s.labels", paths[out->source[k]]);
        size_t len;
        unsigned char *expected = fx_slurp(expected_path, &len);
        assert_non_null(expected);
        assert_int_equal(len, plane);
        assert_memory_equal(out->labels + k * plane, expected, plane);
        free(expected);
    }
}

/* A slice whose values int16 cannot hold (rescale slope 0.5) makes the
 * whole volume float: its half-unit values beside the thresholds keep
 * their own labels (225.5 and 3071.5 are soft tissue, -500.5 is
 * background), and the other slices theirs. */
static void test_a_slice_int16_cannot_hold_keeps_its_exact_values(void **state)
{
    struct fixture *f = *state;
    char series[512];
    char **files = NULL;
    size_t n = 0;
    snprintf(series, sizeof series, "%s/half", f->dir);
    fx_make_series_half(series, SLICES, ROWS, COLS, 2, &files, &n);
    const char *paths[SLICES];
    for (size_t i = 0; i < n; i++)
        paths[i] = files[n - 1 - i];
    struct pipeline_output out;
    struct pipeline_timing t;
    char err[512] = "";
    int rc = pipeline_run(f->cm, f->model, paths, n, NULL, NULL, &out, &t, err, sizeof err);
    if (rc != 0)
        fail_msg("pipeline_run: %s (%s)", pipeline_strerror(rc), err);
    assert_labels_of_each_file(paths, &out);
    static const uint8_t half_edges[] = {2, 2, 2, 0};
    assert_memory_equal(out.labels + 2 * (size_t)COLS * ROWS + COLS, half_edges,
                        sizeof half_edges);
    pipeline_output_free(&out);
    fx_free_paths(files, n);
}

static void test_builtin_model_labels_equal_the_thresholds_of_each_files_pixels(void **state)
{
    struct fixture *f = *state;
    const char *paths[SLICES];
    reversed(f, paths);
    struct pipeline_output out;
    struct pipeline_timing t;
    char err[512] = "";
    int rc = pipeline_run(f->cm, f->model, paths, f->n, NULL, NULL, &out, &t, err, sizeof err);
    if (rc != 0)
        fail_msg("pipeline_run: %s (%s)", pipeline_strerror(rc), err);
    assert_labels_of_each_file(paths, &out);
    assert_int_equal(out.grid.nx, COLS);
    assert_int_equal(out.grid.ny, ROWS);
    assert_int_equal(out.grid.nz, SLICES);
    assert_non_null(out.sources);
    size_t plane = (size_t)COLS * ROWS;
    int64_t count[3] = {0};
    for (int k = 0; k < SLICES; k++) {
        /* Slice k along the normal is the file with position z = k. */
        assert_int_equal(out.source[k], SLICES - 1 - k);
        assert_int_equal(out.frame[k], 0);
        char expected_path[4096];
        snprintf(expected_path, sizeof expected_path, "%s.labels", paths[out.source[k]]);
        size_t len;
        unsigned char *expected = fx_slurp(expected_path, &len);
        assert_non_null(expected);
        assert_int_equal(len, plane);
        assert_memory_equal(out.labels + k * plane, expected, plane);
        /* The threshold edges of the first row: 225 226 3071 3072 -500 -499 -1024 40. */
        static const uint8_t edges[] = {2, 1, 1, 2, 0, 2, 0, 2};
        assert_memory_equal(out.labels + k * plane, edges, sizeof edges);
        for (size_t i = 0; i < plane; i++)
            count[out.labels[k * plane + i]]++;
        free(expected);
    }
    /* The phantom has air, body and a spine. */
    assert_true(count[0] > 0 && count[1] > 0 && count[2] > 0);
    char *summary = pipeline_summary_json(f->cm, &out);
    assert_non_null(summary);
    char want[64];
    snprintf(want, sizeof want, "\"voxels\":%lld", (long long)count[1]);
    assert_non_null(strstr(summary, want));
    free(summary);
    pipeline_output_free(&out);
    assert_null(out.labels);
}

static int stop_at_once(void *ud, long done, long total)
{
    (void)done, (void)total;
    ++*(int *)ud;
    return 1;
}

static void test_progress_that_asks_to_stop_cancels_the_run(void **state)
{
    struct fixture *f = *state;
    struct pipeline_output out;
    struct pipeline_timing t;
    char err[512] = "";
    int calls = 0;
    assert_int_equal(pipeline_run(f->cm, f->model, (const char *const *)f->paths, f->n,
                                  stop_at_once, &calls, &out, &t, err, sizeof err),
                     PIPELINE_ECANCELLED);
    assert_int_equal(calls, 1);
    assert_null(out.labels);
    assert_null(out.sources);
    assert_string_equal(pipeline_strerror(PIPELINE_ECANCELLED), "cancelled");
}

static void test_a_missing_file_fails_with_its_reason(void **state)
{
    struct fixture *f = *state;
    const char *paths[SLICES];
    memcpy(paths, f->paths, sizeof paths);
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/series/gone.dcm", f->dir);
    paths[2] = missing;
    struct pipeline_output out;
    struct pipeline_timing t;
    char err[512] = "";
    assert_int_equal(pipeline_run(f->cm, f->model, paths, f->n, NULL, NULL, &out, &t, err,
                                  sizeof err),
                     PIPELINE_EFAILED);
    assert_non_null(strstr(err, "cannot be used"));
    assert_null(out.labels);
}

/* A manifest spacing so fine that the resampled volume would be over the
 * job's budget: refused with the sizes, before its buffer exists. */
static void test_a_resample_over_the_job_budget_fails_with_its_reason(void **state)
{
    struct fixture *f = *state;
    struct config_model cm = *f->cm; /* shallow: nothing of it is freed here */
    cm.manifest.has_spacing = 1;
    cm.manifest.spacing[0] = cm.manifest.spacing[1] = cm.manifest.spacing[2] = 0.01;
    struct pipeline_output out;
    struct pipeline_timing t;
    char err[512] = "";
    assert_int_equal(pipeline_run(&cm, f->model, (const char *const *)f->paths, f->n, NULL, NULL,
                                  &out, &t, err, sizeof err),
                     PIPELINE_EFAILED);
    char limit[64];
    snprintf(limit, sizeof limit, "(the limit is %zu voxels)", cm.job_max_voxels);
    assert_int_equal(cm.job_max_voxels, 1430u * 1024 * 1024 / 4); /* node.max_job_memory_mb */
    if (!strstr(err, "resampling makes a ") || !strstr(err, limit))
        fail_msg("unexpected reason: %s", err);
    assert_null(out.labels);
    /* A budget of the model's own (manifest input.max_voxels) below the
     * series' size fails it the same way, before decoding. */
    cm.manifest.has_spacing = 0;
    cm.job_max_voxels = 1000;
    assert_int_equal(pipeline_run(&cm, f->model, (const char *const *)f->paths, f->n, NULL, NULL,
                                  &out, &t, err, sizeof err),
                     PIPELINE_EFAILED);
    if (!strstr(err, "1000"))
        fail_msg("unexpected reason: %s", err);
    assert_null(out.labels);
    cm.job_max_voxels = f->cm->job_max_voxels;
    cm.manifest.has_spacing = 1;
    /* The same series at the model's own spacing still runs. */
    cm.manifest.spacing[0] = cm.manifest.spacing[1] = 1.4;
    cm.manifest.spacing[2] = 2.0;
    assert_int_equal(pipeline_run(&cm, f->model, (const char *const *)f->paths, f->n, NULL, NULL,
                                  &out, &t, err, sizeof err),
                     0);
    assert_non_null(out.labels);
    pipeline_output_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_model_labels_equal_the_thresholds_of_each_files_pixels),
        cmocka_unit_test(test_progress_that_asks_to_stop_cancels_the_run),
        cmocka_unit_test(test_a_missing_file_fails_with_its_reason),
        cmocka_unit_test(test_a_resample_over_the_job_budget_fails_with_its_reason),
        cmocka_unit_test(test_a_slice_int16_cannot_hold_keeps_its_exact_values),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
