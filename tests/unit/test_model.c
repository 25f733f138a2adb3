/* Unit tests for inference/model.cpp and the built-in ct-bone-body model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inference/inference.h"

static char tmpdir[256];
static char model_path[512];
static char garbage_path[512];

/* Boundary values and the label the spec gives each: 1 bone for
 * 226 <= HU <= 3071, 2 body for HU > -500 not bone, else 0. Hex floats
 * are the float neighbours of the thresholds. */
static const struct {
    float hu;
    int label;
} cases[] = {
    {-1024.0f, 0},
    {-1000.0f, 0},
    {-0x1.f40002p+8f, 0}, /* just below -500 */
    {-500.0f, 0},
    {-0x1.f3fffep+8f, 2}, /* just above -500 */
    {-499.5f, 2},
    {-499.0f, 2},
    {-100.0f, 2},
    {0.0f, 2},
    {225.0f, 2},
    {225.999f, 2},
    {0x1.c3fffep+7f, 2}, /* just below 226 */
    {226.0f, 1},
    {0x1.c40002p+7f, 1}, /* just above 226 */
    {1000.0f, 1},
    {3070.999f, 1},
    {3071.0f, 1},
    {0x1.7ff002p+11f, 2}, /* just above 3071 */
    {3071.001f, 2},
    {3072.0f, 2},
    {5000.0f, 2},
    {-INFINITY, 0},
    {INFINITY, 2},
    {NAN, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

enum { D = 4, H = 5, W = 6, NVOX = D * H * W };

/* Voxel V gets case (7 V) mod NCASES: neighbouring voxels differ, so an
 * output in the wrong order would not match. */
static int case_of(int v)
{
    return (7 * v) % NCASES;
}

static void fill_input(float *x)
{
    for (int v = 0; v < NVOX; v++)
        x[v] = cases[case_of(v)].hu;
}

static void assert_one_line(const char *err)
{
    assert_true(err[0] != '\0');
    assert_null(strchr(err, '\n'));
}

/* Runs the model on the boundary volume and checks shape and labels. */
static void check_labels_on(const char *device)
{
    char err[512] = "";
    struct infer_model *m = NULL;
    int rc = infer_model_load(model_path, device, &m, err, sizeof err);
    if (rc != 0)
        fail_msg("load on %s: %s", device, err);
    assert_non_null(m);

    float x[NVOX];
    fill_input(x);
    const int64_t shape[5] = {1, 1, D, H, W};
    struct infer_tensor out;
    rc = infer_model_run(m, x, shape, 5, &out, err, sizeof err);
    if (rc != 0)
        fail_msg("run on %s: %s", device, err);

    assert_int_equal(out.ndim, 5);
    assert_int_equal(out.shape[0], 1);
    assert_int_equal(out.shape[1], 3);
    assert_int_equal(out.shape[2], D);
    assert_int_equal(out.shape[3], H);
    assert_int_equal(out.shape[4], W);
    assert_non_null(out.data);

    for (int v = 0; v < NVOX; v++) {
        int best = 0;
        for (int c = 0; c < 3; c++) {
            float p = out.data[c * NVOX + v];
            /* One-hot: exactly 0 or 1 in each channel. */
            if (p != 0.0f && p != 1.0f)
                fail_msg("voxel %d channel %d: %g is not 0 or 1", v, c, (double)p);
            if (p > out.data[best * NVOX + v])
                best = c;
        }
        int want = cases[case_of(v)].label;
        if (best != want)
            fail_msg("voxel %d (HU %.9g): label %d, expected %d", v, (double)x[v], best, want);
        float sum = out.data[v] + out.data[NVOX + v] + out.data[2 * NVOX + v];
        assert_true(sum == 1.0f);
    }
    /* The input buffer is the caller's and stays unchanged. */
    for (int v = 0; v < NVOX; v++) {
        float want = cases[case_of(v)].hu;
        assert_true(isnan(want) ? isnan(x[v]) : x[v] == want);
    }

    infer_tensor_free(&out);
    assert_null(out.data);
    infer_model_free(m);
}

/* ---- tests ------------------------------------------------------------ */

static void test_builtin_model_labels_bone_and_body_exactly_at_the_thresholds(void **state)
{
    (void)state;
    check_labels_on("cpu");
}

static void test_patch_by_patch_runs_give_the_same_labels_as_one_run(void **state)
{
    (void)state;
    char err[512] = "";
    struct infer_model *m = NULL;
    assert_int_equal(infer_model_load(model_path, "cpu", &m, err, sizeof err), 0);

    float x[NVOX];
    fill_input(x);
    const int64_t whole_shape[5] = {1, 1, D, H, W};
    struct infer_tensor whole;
    assert_int_equal(infer_model_run(m, x, whole_shape, 5, &whole, err, sizeof err), 0);

    /* One slab per z: the model is pointwise, so each slab's output is the
     * matching part of the whole output. */
    const int64_t slab_shape[5] = {1, 1, 1, H, W};
    for (int z = 0; z < D; z++) {
        struct infer_tensor part;
        assert_int_equal(infer_model_run(m, x + z * H * W, slab_shape, 5, &part, err, sizeof err),
                         0);
        assert_int_equal(part.shape[1], 3);
        assert_int_equal(part.shape[2], 1);
        for (int c = 0; c < 3; c++)
            assert_memory_equal(part.data + c * H * W, whole.data + c * NVOX + z * H * W,
                                sizeof(float) * H * W);
        infer_tensor_free(&part);
    }
    infer_tensor_free(&whole);
    infer_model_free(m);
}

/* Needs CUDA (ctest's cuda.* tests): the same labels come back from it. */
static void test_cuda_gives_the_cpu_labels(void **state)
{
    (void)state;
    check_labels_on("cuda");
    check_labels_on("cuda:0");
}

static void test_cuda_devices_that_are_not_there_are_refused_with_a_reason(void **state)
{
    (void)state;
    char err[512] = "";
    if (infer_device_check("cuda:0", err, sizeof err) != 0) {
        /* This machine has none: every CUDA device is refused, never run
         * on the CPU instead. */
        const char *devices[] = {"cuda", "cuda:0", "cuda:1"};
        for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
            err[0] = '\0';
            assert_int_equal(infer_device_check(devices[i], err, sizeof err), INFER_EDEVICE);
            assert_one_line(err);
            assert_non_null(strstr(err, "cuda"));

            static char sentinel;
            struct infer_model *m = (struct infer_model *)&sentinel; /* must be reset */
            err[0] = '\0';
            assert_int_equal(infer_model_load(model_path, devices[i], &m, err, sizeof err),
                             INFER_EDEVICE);
            assert_null(m);
            assert_one_line(err);
            assert_non_null(strstr(err, devices[i]));
        }
    }
    /* No machine has that many GPUs. */
    const char *absent[] = {"cuda:99", "cuda:99999999999999999999"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        err[0] = '\0';
        assert_int_equal(infer_device_check(absent[i], err, sizeof err), INFER_EDEVICE);
        assert_one_line(err);
        assert_non_null(strstr(err, absent[i]));
    }
}

static void test_run_into_reuses_the_callers_buffers(void **state)
{
    (void)state;
    char err[512] = "";
    struct infer_model *m = NULL;
    assert_int_equal(infer_model_load_ex(model_path, "cpu", INFER_FP32, &m, err, sizeof err), 0);

    float x[NVOX];
    fill_input(x);
    const int64_t whole_shape[5] = {1, 1, D, H, W};
    struct infer_tensor whole;
    assert_int_equal(infer_model_run(m, x, whole_shape, 5, &whole, err, sizeof err), 0);

    /* One output buffer for every run, whole or slab by slab, filled with
     * a marker first: each run writes exactly its output and no more. */
    static float buf[3 * NVOX + 16];
    int64_t oshape[8];
    int ond = -1;
    for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
        buf[i] = -7.0f;
    assert_int_equal(infer_model_run_into(m, x, whole_shape, 5, buf, 3 * NVOX, oshape, &ond, err,
                                          sizeof err),
                     0);
    assert_int_equal(ond, 5);
    assert_int_equal(oshape[1], 3);
    assert_memory_equal(buf, whole.data, sizeof(float) * 3 * NVOX);
    for (size_t i = 3 * NVOX; i < sizeof buf / sizeof buf[0]; i++)
        assert_true(buf[i] == -7.0f);
    const int64_t slab_shape[5] = {1, 1, 1, H, W};
    for (int z = 0; z < D; z++) {
        assert_int_equal(infer_model_run_into(m, x + z * H * W, slab_shape, 5, buf, 3 * NVOX,
                                              oshape, &ond, err, sizeof err),
                         0);
        assert_int_equal(oshape[2], 1);
        for (int c = 0; c < 3; c++)
            assert_memory_equal(buf + c * H * W, whole.data + c * NVOX + z * H * W,
                                sizeof(float) * H * W);
    }
    /* The input stays the caller's, unchanged. */
    for (int v = 0; v < NVOX; v++) {
        float want = cases[case_of(v)].hu;
        assert_true(isnan(want) ? isnan(x[v]) : x[v] == want);
    }
    /* An output larger than the buffer: an error with the shape, and the
     * buffer beyond its capacity untouched. */
    for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
        buf[i] = -7.0f;
    err[0] = '\0';
    assert_int_equal(infer_model_run_into(m, x, whole_shape, 5, buf, 3 * NVOX - 1, oshape, &ond,
                                          err, sizeof err),
                     INFER_EMODEL);
    assert_one_line(err);
    assert_int_equal(ond, 5);
    assert_int_equal(oshape[4], W);
    for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
        assert_true(buf[i] == -7.0f);
    infer_tensor_free(&whole);
    infer_model_free(m);
}

static void test_half_precision_on_the_cpu_is_refused_naming_the_device(void **state)
{
    (void)state;
    const enum infer_precision half[] = {INFER_FP16, INFER_BF16};
    for (size_t i = 0; i < 2; i++) {
        char err[512] = "", want[128];
        static char sentinel;
        struct infer_model *m = (struct infer_model *)&sentinel; /* must be reset */
        assert_int_equal(infer_model_load_ex(model_path, "cpu", half[i], &m, err, sizeof err),
                         INFER_EDEVICE);
        assert_null(m);
        snprintf(want, sizeof want, "precision %s needs a CUDA device (device is cpu)",
                 infer_precision_name(half[i]));
        assert_string_equal(err, want);
    }
    assert_string_equal(infer_precision_name(INFER_FP32), "fp32");
    assert_string_equal(infer_precision_name(INFER_FP16), "fp16");
    assert_string_equal(infer_precision_name(INFER_BF16), "bf16");
    assert_string_equal(infer_precision_name((enum infer_precision)9), "?");

    char err[512] = "";
    struct infer_model *m = NULL;
    assert_int_equal(infer_model_load_ex(model_path, "cpu", (enum infer_precision)9, &m, err,
                                         sizeof err),
                     INFER_EINVAL);
    assert_null(m);
    assert_non_null(strstr(err, "precision"));
    /* fp32 through the new call is the old call. */
    assert_int_equal(infer_model_load_ex(model_path, "cpu", INFER_FP32, &m, err, sizeof err), 0);
    assert_non_null(m);
    infer_model_free(m);
}

/* On CUDA in fp16 and bf16, values well away from the thresholds (which
 * neither format holds exactly) get the fp32 labels, through both run
 * calls, with the staging buffer reused across input sizes. */
static void test_cuda_half_precision_gives_the_fp32_labels(void **state)
{
    (void)state;
    char err[512] = "";
    static const struct {
        float hu;
        int label;
    } far[] = {{-1000.0f, 0}, {-700.0f, 0}, {-300.0f, 2}, {0.0f, 2}, {100.0f, 2},
               {500.0f, 1},   {1500.0f, 1}, {2500.0f, 1}, {4000.0f, 2}, {6000.0f, 2}};
    enum { NF = sizeof far / sizeof far[0] };
    float x[NVOX];
    for (int v = 0; v < NVOX; v++)
        x[v] = far[(7 * v) % NF].hu;
    const enum infer_precision ps[] = {INFER_FP32, INFER_FP16, INFER_BF16};
    for (size_t p = 0; p < 3; p++) {
        struct infer_model *m = NULL;
        if (infer_model_load_ex(model_path, "cuda", ps[p], &m, err, sizeof err) != 0)
            fail_msg("load %s: %s", infer_precision_name(ps[p]), err);
        static float buf[3 * NVOX];
        const int64_t shapes[3][5] = {{1, 1, D, H, W}, {1, 1, 1, H, W}, {1, 1, D, H, W}};
        for (int s = 0; s < 3; s++) {
            int64_t oshape[8];
            int ond = 0;
            int n = (int)(shapes[s][2] * H * W);
            if (infer_model_run_into(m, x, shapes[s], 5, buf, 3 * NVOX, oshape, &ond, err,
                                     sizeof err) != 0)
                fail_msg("run %s: %s", infer_precision_name(ps[p]), err);
            for (int v = 0; v < n; v++) {
                int best = 0;
                for (int c = 1; c < 3; c++)
                    if (buf[c * n + v] > buf[best * n + v])
                        best = c;
                if (best != far[(7 * v) % NF].label)
                    fail_msg("%s: voxel %d (HU %g): label %d, expected %d",
                             infer_precision_name(ps[p]), v, (double)x[v], best,
                             far[(7 * v) % NF].label);
            }
        }
        struct infer_tensor out;
        if (infer_model_run(m, x, shapes[0], 5, &out, err, sizeof err) != 0)
            fail_msg("run %s: %s", infer_precision_name(ps[p]), err);
        assert_memory_equal(out.data, buf, sizeof(float) * 3 * NVOX);
        infer_tensor_free(&out);
        infer_model_free(m);
    }
}

static void test_unknown_device_names_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {"gpu", "CPU", "", "cuda:", "cuda:-1", "cuda:x", "cuda:0x", "cuda0",
                         " cpu", "cpu:0", "mps"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        assert_int_equal(infer_device_check(bad[i], err, sizeof err), INFER_EDEVICE);
        assert_one_line(err);
        if (!strstr(err, "unknown device"))
            fail_msg("'%s': %s", bad[i], err);

        struct infer_model *m = NULL;
        err[0] = '\0';
        assert_int_equal(infer_model_load(model_path, bad[i], &m, err, sizeof err),
                         INFER_EDEVICE);
        assert_null(m);
        assert_non_null(strstr(err, "unknown device"));
    }
    char err[512] = "";
    assert_int_equal(infer_device_check(NULL, err, sizeof err), INFER_EDEVICE);
    assert_one_line(err);
    assert_int_equal(infer_device_check("cpu", err, sizeof err), 0);
}

static void test_unloadable_model_files_are_emodel_naming_the_path(void **state)
{
    (void)state;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-model.pt", tmpdir);
    /* A file that does not exist, and one that is not TorchScript. */
    const char *paths[] = {missing, garbage_path};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char err[1024] = "";
        struct infer_model *m = NULL;
        assert_int_equal(infer_model_load(paths[i], "cpu", &m, err, sizeof err), INFER_EMODEL);
        assert_null(m);
        assert_one_line(err);
        assert_non_null(strstr(err, paths[i]));
    }
}

static void test_error_messages_are_cut_to_the_buffer(void **state)
{
    (void)state;
    char err[8];
    memset(err, 'x', sizeof err);
    assert_int_equal(infer_device_check("gpu", err, sizeof err), INFER_EDEVICE);
    assert_int_equal(strlen(err), sizeof err - 1);
    /* No buffer at all is allowed. */
    assert_int_equal(infer_device_check("gpu", NULL, 0), INFER_EDEVICE);
}

static void test_setting_threads_keeps_the_model_working(void **state)
{
    (void)state;
    infer_set_threads(1);
    infer_set_threads(2);
    infer_set_threads(0);  /* ignored */
    infer_set_threads(-3); /* ignored */
    check_labels_on("cpu");
    infer_set_threads(1);
}

static void test_wrong_input_geometry_is_an_error_not_an_abort(void **state)
{
    (void)state;
    char err[512] = "";
    struct infer_model *m = NULL;
    assert_int_equal(infer_model_load(model_path, "cpu", &m, err, sizeof err), 0);

    float x[NVOX];
    fill_input(x);
    static const struct {
        const char *what;
        int64_t shape[9];
        int ndim;
        int rc;
    } bad[] = {
        /* The model refuses with its own reason. */
        {"rank 2", {D * H, W}, 2, INFER_EMODEL},
        {"rank 4", {1, D, H, W}, 4, INFER_EMODEL},
        {"two channels where the model expects one", {1, 2, 2, H, W}, 5, INFER_EMODEL},
        /* The shim itself rejects these before libtorch sees them. */
        {"rank 0", {1, 1, 1, 1, 1, 1, 1, 1, 1}, 0, INFER_EINVAL},
        {"rank 9", {1, 1, 1, 1, 1, 1, 1, 1, 1}, 9, INFER_EINVAL},
        {"a negative dimension", {1, 1, -4, H, W}, 5, INFER_EINVAL},
        {"an empty dimension", {1, 1, 0, H, W}, 5, INFER_EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct infer_tensor out = {.data = (float *)x, .ndim = 3};
        err[0] = '\0';
        int rc = infer_model_run(m, x, bad[i].shape, bad[i].ndim, &out, err, sizeof err);
        if (rc != bad[i].rc)
            fail_msg("%s: %d (%s), expected %d", bad[i].what, rc, err, bad[i].rc);
        assert_one_line(err);
        assert_null(out.data);
        assert_int_equal(out.ndim, 0);
    }
    struct infer_tensor out;
    const int64_t shape[5] = {1, 1, 1, 1, 1};
    assert_int_equal(infer_model_run(NULL, x, shape, 5, &out, err, sizeof err), INFER_EINVAL);
    assert_int_equal(infer_model_run(m, NULL, shape, 5, &out, err, sizeof err), INFER_EINVAL);

    /* The model still works after the refusals. */
    infer_model_free(m);
    check_labels_on("cpu");
}

static void test_every_error_code_has_its_own_text(void **state)
{
    (void)state;
    static const int codes[] = {INFER_OK,     INFER_EINVAL,   INFER_EDEVICE,   INFER_EMODEL,
                                INFER_ENOMEM, INFER_EREFUSED, INFER_ECANCELLED};
    const size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *text = inference_strerror(codes[i]);
        assert_non_null(text);
        assert_true(text[0] != '\0');
        assert_string_not_equal(text, inference_strerror(-1000));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(text, inference_strerror(codes[j]));
    }
    assert_string_equal(inference_strerror(INFER_EMODEL), "model file unreadable or failed to run");
    assert_non_null(inference_strerror(1));
}

static void test_freeing_null_is_harmless(void **state)
{
    (void)state;
    infer_model_free(NULL);
    infer_tensor_free(NULL);
    struct infer_tensor t = {0};
    infer_tensor_free(&t);
}

/* ---- setup ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/ainode-test-model-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(model_path, sizeof model_path, "%s/ct-bone-body.pt", tmpdir);
    snprintf(garbage_path, sizeof garbage_path, "%s/not-a-model.pt", tmpdir);

    char err[512] = "";
    if (infer_write_builtin_ct_bone_body(model_path, err, sizeof err) != 0) {
        fprintf(stderr, "writing the built-in model: %s\n", err);
        return -1;
    }
    FILE *f = fopen(garbage_path, "w");
    if (!f)
        return -1;
    fputs("this is not a TorchScript archive\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(model_path);
    unlink(garbage_path);
    rmdir(tmpdir);
    return 0;
}

int main(int argc, char **argv)
{
    /* `test_model --cuda NAME` runs the one test NAME that needs a GPU
     * (ctest's cuda.NAME). Without a usable CUDA device it says so and
     * exits 77, which ctest counts and lists as skipped. */
    const struct CMUnitTest cuda[] = {
        cmocka_unit_test(test_cuda_gives_the_cpu_labels),
        cmocka_unit_test(test_cuda_half_precision_gives_the_fp32_labels),
    };
    if (argc == 3 && !strcmp(argv[1], "--cuda")) {
        char err[512] = "";
        if (infer_device_check("cuda", err, sizeof err) != 0) {
            printf("SKIPPED cuda.%s: no usable CUDA device here: %s\n", argv[2], err);
            return 77;
        }
        cmocka_set_test_filter(argv[2]);
        return cmocka_run_group_tests(cuda, group_setup, group_teardown);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_model_labels_bone_and_body_exactly_at_the_thresholds),
        cmocka_unit_test(test_patch_by_patch_runs_give_the_same_labels_as_one_run),
        cmocka_unit_test(test_cuda_devices_that_are_not_there_are_refused_with_a_reason),
        cmocka_unit_test(test_run_into_reuses_the_callers_buffers),
        cmocka_unit_test(test_half_precision_on_the_cpu_is_refused_naming_the_device),
        cmocka_unit_test(test_unknown_device_names_are_refused),
        cmocka_unit_test(test_unloadable_model_files_are_emodel_naming_the_path),
        cmocka_unit_test(test_error_messages_are_cut_to_the_buffer),
        cmocka_unit_test(test_setting_threads_keeps_the_model_working),
        cmocka_unit_test(test_wrong_input_geometry_is_an_error_not_an_abort),
        cmocka_unit_test(test_every_error_code_has_its_own_text),
        cmocka_unit_test(test_freeing_null_is_harmless),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
