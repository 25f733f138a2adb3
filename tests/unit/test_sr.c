/*
 * dicom_write_sr: the TID 1500 measurement report for a small synthetic CT
 * series (tests/tools/gen_series.py) must pass dciodvfy without errors and
 * hold what tests/tools/verify_sr.py expects; bad input is refused with a
 * reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dicom/dicom.h"

#define SLICES 6
#define ROWS 24
#define COLS 20

static char tmpdir[512];
static char source_dir[600];
static char source_series[65];
static char *source_paths[SLICES];
static int source_frames[SLICES];
static uint8_t labels[SLICES * ROWS * COLS];
static char seg_uid[65], seg_series_uid[65];

static const struct dicom_segment segments[] = {
    {1, "Bone", {"85756007", "SCT", "Tissue"}, {"272673000", "SCT", "Bone"},
     {241, 214, 145}, 1000, 12.5},
    {2, "Body", {"91723000", "SCT", "Anatomical Structure"}, {"38266002", "SCT", "Entire body"},
     {177, 122, 101}, 27620, 345.25},
};

static const char *repo_dir(void)
{
    static char dir[1024];
    const char *d = getenv("AINODE_TEST_DATA"); /* <repo>/tests/data */
    snprintf(dir, sizeof dir, "%s/../..", d && *d ? d : "tests/data");
    return dir;
}

static struct dicom_result make_result(void)
{
    struct dicom_result r;
    memset(&r, 0, sizeof r);
    r.source_paths = (const char *const *)source_paths;
    r.source_frames = source_frames;
    r.nx = COLS;
    r.ny = ROWS;
    r.nz = SLICES;
    r.labels = labels;
    r.segments = segments;
    r.n_segments = sizeof segments / sizeof segments[0];
    r.algorithm_name = "ct-bone-body";
    r.algorithm_version = "1.0.0";
    r.algorithm_family = (struct dicom_code){"123105", "DCM", "Histogram Analysis"};
    r.series_description = "Synthetic axial series 1";
    r.series_number = 1;
    r.manufacturer = "ainode";
    r.software_version = "0.1.0";
    return r;
}

/* Runs CMD, prints its output, returns its exit status; *ERRORS counts the
 * output lines that begin with "Error". */
static int run(const char *cmd, int *errors)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4096];
    if (errors)
        *errors = 0;
    while (fgets(line, sizeof line, p)) {
        print_message("  | %s", line);
        if (errors && strncmp(line, "Error", 5) == 0)
            (*errors)++;
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **state)
{
    (void)state;
    char err[256];
    if (dicom_init(err, sizeof err) != 0) {
        fprintf(stderr, "dicom_init: %s\n", err);
        return -1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_sr.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/tools/gen_series.py' --out '%s/src' --slices %d "
             "--rows %d --cols %d",
             repo_dir(), tmpdir, SLICES, ROWS, COLS);
    /* The JSON summary on stdout names the series UID. */
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        const char *k = strstr(line, "\"series_uid\": \"");
        if (k)
            sscanf(k + 15, "%64[0-9.]", source_series);
    }
    if (pclose(p) != 0 || !source_series[0]) {
        fprintf(stderr, "gen_series.py failed\n");
        return -1;
    }
    snprintf(source_dir, sizeof source_dir, "%s/src/s01_CT", tmpdir);
    for (int k = 0; k < SLICES; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/IM%05d.dcm", source_dir, k + 1);
        source_paths[k] = strdup(path);
        source_frames[k] = 0;
    }
    memset(labels, 0, sizeof labels); /* the SR does not look at them */
    dicom_new_uid(seg_uid);
    dicom_new_uid(seg_series_uid);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int k = 0; k < SLICES; k++)
        free(source_paths[k]);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void out_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void test_report_passes_dciodvfy_and_holds_the_measurements(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    char path[1024], sop[65] = "", err[256] = "";
    out_path(path, sizeof path, "sr.dcm");
    int rc = dicom_write_sr(&r, seg_uid, seg_series_uid, path, sop, err, sizeof err);
    if (rc != 0)
        print_error("dicom_write_sr: %s\n", err);
    assert_int_equal(rc, 0);
    assert_true(strlen(sop) > 4);
    assert_string_equal(err, "");

    char cmd[4096];
    int errors;
    snprintf(cmd, sizeof cmd, "dciodvfy '%s' 2>&1", path);
    run(cmd, &errors);
    assert_int_equal(errors, 0);

    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/tools/verify_sr.py' '%s' %s %s "
             "1:Bone:272673000=12.5 2:Body:38266002=345.25 --source-dir '%s' "
             "--seg-series %s --algorithm ct-bone-body --algorithm-version 1.0.0 "
             "--series-number 2 2>&1",
             repo_dir(), path, seg_uid, source_series, source_dir, seg_series_uid);
    assert_int_equal(run(cmd, NULL), 0);
}

static void test_each_report_gets_new_uids(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    char a[1024], b[1024], sop_a[65], sop_b[65], err[256];
    out_path(a, sizeof a, "a.dcm");
    out_path(b, sizeof b, "b.dcm");
    assert_int_equal(dicom_write_sr(&r, seg_uid, seg_series_uid, a, sop_a, err, sizeof err), 0);
    assert_int_equal(dicom_write_sr(&r, seg_uid, seg_series_uid, b, sop_b, err, sizeof err), 0);
    assert_string_not_equal(sop_a, sop_b);
    assert_string_not_equal(sop_a, seg_uid);
}

/* A volume that needs more than DS's 16 characters keeps its exact value. */
static void test_long_volume_is_written(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    struct dicom_segment seg = segments[0];
    seg.volume_ml = 1.0 / 3.0;
    r.segments = &seg;
    r.n_segments = 1;
    char path[1024], sop[65], err[256] = "", cmd[4096];
    out_path(path, sizeof path, "third.dcm");
    int rc = dicom_write_sr(&r, seg_uid, seg_series_uid, path, sop, err, sizeof err);
    if (rc != 0)
        print_error("dicom_write_sr: %s\n", err);
    assert_int_equal(rc, 0);
    int errors;
    snprintf(cmd, sizeof cmd, "dciodvfy '%s' 2>&1", path);
    run(cmd, &errors);
    assert_int_equal(errors, 0);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/tools/verify_sr.py' '%s' %s %s "
             "1:Bone:272673000=0.333333333333333 2>&1",
             repo_dir(), path, seg_uid, source_series);
    assert_int_equal(run(cmd, NULL), 0);
}

/* A non-ASCII label turns the report into UTF-8 (the source is ISO_IR 100);
 * a name longer than an LO attribute holds is cut there, not refused. */
static void test_non_ascii_label_and_long_name(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    struct dicom_segment seg = segments[0];
    seg.label = "Kn\xc3\xb6" "chel";
    r.segments = &seg;
    r.n_segments = 1;
    char name[101];
    memset(name, 'a', 100);
    name[100] = '\0';
    r.algorithm_name = name;
    char path[1024], sop[65], err[256] = "", cmd[4096];
    out_path(path, sizeof path, "utf8.dcm");
    int rc = dicom_write_sr(&r, seg_uid, seg_series_uid, path, sop, err, sizeof err);
    if (rc != 0)
        print_error("dicom_write_sr: %s\n", err);
    assert_int_equal(rc, 0);
    int errors;
    snprintf(cmd, sizeof cmd, "dciodvfy '%s' 2>&1", path);
    run(cmd, &errors);
    assert_int_equal(errors, 0);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/tools/verify_sr.py' '%s' %s %s "
             "'1:Kn\xc3\xb6" "chel:272673000=12.5' --source-dir '%s' --algorithm %s 2>&1",
             repo_dir(), path, seg_uid, source_series, source_dir, name);
    assert_int_equal(run(cmd, NULL), 0);
}

/* Calls dicom_write_sr expecting -1, a message containing WANT and no file. */
static void expect_refused(const struct dicom_result *r, const char *seg, const char *want)
{
    char path[1024], sop[65] = "x", err[256] = "";
    out_path(path, sizeof path, "refused.dcm");
    unlink(path);
    assert_int_equal(dicom_write_sr(r, seg, seg_series_uid, path, sop, err, sizeof err), -1);
    print_message("  refused: %s\n", err);
    assert_non_null(strstr(err, want));
    assert_string_equal(sop, "");
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
}

static void test_bad_input_is_refused(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    r.n_segments = 0;
    expect_refused(&r, seg_uid, "no segments");

    r = make_result();
    r.segments = NULL;
    expect_refused(&r, seg_uid, "no segments");

    r = make_result();
    expect_refused(&r, "not a uid", "valid UID");
    expect_refused(NULL, seg_uid, "no result");

    struct dicom_segment seg = segments[0];
    seg.type.value = NULL;
    r.segments = &seg;
    r.n_segments = 1;
    expect_refused(&r, seg_uid, "type code");

    seg = segments[0];
    seg.volume_ml = -1;
    expect_refused(&r, seg_uid, "volume");

    r = make_result();
    char missing[1024];
    out_path(missing, sizeof missing, "missing.dcm");
    const char *paths[SLICES];
    for (int k = 0; k < SLICES; k++)
        paths[k] = source_paths[k];
    paths[3] = missing;
    r.source_paths = paths;
    expect_refused(&r, seg_uid, "missing.dcm");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_passes_dciodvfy_and_holds_the_measurements),
        cmocka_unit_test(test_each_report_gets_new_uids),
        cmocka_unit_test(test_long_volume_is_written),
        cmocka_unit_test(test_non_ascii_label_and_long_name),
        cmocka_unit_test(test_bad_input_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
