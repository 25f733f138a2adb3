/*
 * dicom_write_sr: the TID 1500 measurement report for a small synthetic CT
 * series (tests/tools/gen_series.py) must pass dciodvfy without errors and
 * hold what tests/tools/verify_sr.py expects; bad input is refused with a
 * reason. A missing dciodvfy fails the test.
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

#include "dicom/image.h"
#include "dicom/results.h"

#define SLICES 6
#define ROWS 24
#define COLS 20

static char tmpdir[512];
static char source_dir[600];
static char source_series[65];
static char *source_paths[SLICES];
static struct dicom_sources *sources;
static int source_files[SLICES];
static int source_frames[SLICES];
static uint8_t labels[SLICES * ROWS * COLS];
static struct dicom_written seg; /* the SEG the reports refer to */

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
    r.sources = sources;
    r.source_files = source_files;
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
        source_files[k] = k;
        source_frames[k] = 0;
    }
    char why[512];
    if (dicom_sources_open((const char *const *)source_paths, SLICES, &sources, why,
                           sizeof why) != DICOM_OK) {
        fprintf(stderr, "dicom_sources_open: %s\n", why);
        return -1;
    }
    memset(labels, 0, sizeof labels); /* the SR does not look at them */
    dicom_new_uid(seg.sop_instance_uid);
    dicom_new_uid(seg.series_uid);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int k = 0; k < SLICES; k++)
        free(source_paths[k]);
    dicom_sources_close(sources);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void out_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* dciodvfy must run and find no error in PATH. */
static void assert_dciodvfy_clean(const char *path)
{
    char cmd[4096];
    int errors;
    snprintf(cmd, sizeof cmd, "dciodvfy '%s' 2>&1", path);
    int rc = run(cmd, &errors);
    if (rc != 0 && rc != 1)
        print_error("dciodvfy did not run (exit %d)\n", rc);
    assert_true(rc == 0 || rc == 1);
    assert_int_equal(errors, 0);
    assert_int_equal(rc, 0);
}

/* Writes the report of R to NAME, checks it with dciodvfy; W gets what was written. */
static void write_sr(const struct dicom_result *r, const char *name, char *path, size_t len,
                     struct dicom_written *w)
{
    char err[256] = "";
    out_path(path, len, name);
    int rc = dicom_write_sr(r, &seg, path, w, err, sizeof err);
    if (rc != 0)
        print_error("dicom_write_sr: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
    assert_true(strlen(w->sop_instance_uid) > 4);
    assert_string_equal(w->sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.34");
    assert_string_equal(w->transfer_syntax, "1.2.840.10008.1.2.1");
    assert_dciodvfy_clean(path);
}

/* Reports that must be written and read back by verify_sr.py with these
 * arguments (after the SR, SEG and series UIDs). */
static void test_reports_pass_dciodvfy_and_hold_the_measurements(void **state)
{
    (void)state;
    static char long_name[101];
    memset(long_name, 'a', 100);
    struct dicom_segment third = segments[0], utf8 = segments[0];
    third.volume_ml = 1.0 / 3.0; /* more than DS's 16 characters: kept exactly */
    utf8.label = "Kn\xc3\xb6" "chel"; /* source ISO_IR 100: the report becomes UTF-8 */
    char args_all[2048], args_utf8[2048];
    snprintf(args_all, sizeof args_all,
             "1:Bone:272673000=12.5 2:Body:38266002=345.25 --source-dir '%s' --seg-series %s "
             "--algorithm ct-bone-body --algorithm-version 1.0.0 --series-number 2",
             source_dir, seg.series_uid);
    /* a name longer than an LO attribute holds is cut there, not refused */
    snprintf(args_utf8, sizeof args_utf8,
             "'1:Kn\xc3\xb6" "chel:272673000=12.5' --source-dir '%s' --algorithm %s",
             source_dir, long_name);
    const struct {
        const char *name;
        const struct dicom_segment *segment; /* NULL: both segments */
        const char *algorithm;               /* NULL: the default */
        const char *args;
    } reports[] = {
        {"sr.dcm", NULL, NULL, args_all},
        {"third.dcm", &third, NULL, "1:Bone:272673000=0.333333333333333"},
        {"utf8.dcm", &utf8, long_name, args_utf8},
    };
    for (size_t i = 0; i < sizeof reports / sizeof *reports; i++) {
        struct dicom_result r = make_result();
        if (reports[i].segment) {
            r.segments = reports[i].segment;
            r.n_segments = 1;
        }
        if (reports[i].algorithm)
            r.algorithm_name = reports[i].algorithm;
        char path[1024], cmd[8192];
        struct dicom_written w;
        write_sr(&r, reports[i].name, path, sizeof path, &w);
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 '%s/tests/tools/verify_sr.py' '%s' %s %s %s 2>&1", repo_dir(),
                 path, seg.sop_instance_uid, source_series, reports[i].args);
        assert_int_equal(run(cmd, NULL), 0);
    }
}

static void test_each_report_gets_new_uids(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    char a[1024], b[1024];
    struct dicom_written wa, wb;
    write_sr(&r, "a.dcm", a, sizeof a, &wa);
    write_sr(&r, "b.dcm", b, sizeof b, &wb);
    assert_string_not_equal(wa.sop_instance_uid, wb.sop_instance_uid);
    assert_string_not_equal(wa.series_uid, wb.series_uid);
    assert_string_not_equal(wa.sop_instance_uid, seg.sop_instance_uid);
}

/* Calls dicom_write_sr expecting DICOM_EINVAL, a message containing WANT,
 * nothing in OUT and no file. */
static void expect_refused(const struct dicom_result *r, const struct dicom_written *s,
                           const char *want)
{
    char path[1024], err[256] = "";
    struct dicom_written w;
    memset(&w, 'x', sizeof w);
    out_path(path, sizeof path, "refused.dcm");
    unlink(path);
    assert_int_equal(dicom_write_sr(r, s, path, &w, err, sizeof err), DICOM_EINVAL);
    print_message("  refused: %s\n", err);
    assert_non_null(strstr(err, want));
    assert_string_equal(w.sop_instance_uid, "");
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
}

static void test_bad_input_is_refused(void **state)
{
    (void)state;
    struct dicom_written bad_seg = seg;
    snprintf(bad_seg.sop_instance_uid, sizeof bad_seg.sop_instance_uid, "not a uid");
    struct dicom_segment no_type = segments[0], negative = segments[0];
    no_type.type.value = NULL;
    negative.volume_ml = -1;
    int out_of_set[SLICES];
    memcpy(out_of_set, source_files, sizeof out_of_set);
    out_of_set[3] = SLICES;
    enum { NO_SEGMENTS, NULL_SEGMENTS, BAD_SEG_UID, NO_RESULT, NO_TYPE, NEGATIVE, NO_SOURCES,
           OUT_OF_SET };
    static const struct {
        int change;
        const char *want;
    } cases[] = {
        {NO_SEGMENTS, "no segments"}, {NULL_SEGMENTS, "no segments"},
        {BAD_SEG_UID, "valid UID"},   {NO_RESULT, "no result"},
        {NO_TYPE, "type code"},       {NEGATIVE, "volume"},
        {NO_SOURCES, "no source images"}, {OUT_OF_SET, "no source image for slice 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct dicom_result r = make_result();
        const struct dicom_written *s = &seg;
        const struct dicom_result *rp = &r;
        switch (cases[i].change) {
        case NO_SEGMENTS: r.n_segments = 0; break;
        case NULL_SEGMENTS: r.segments = NULL; break;
        case BAD_SEG_UID: s = &bad_seg; break;
        case NO_RESULT: rp = NULL; break;
        case NO_TYPE: r.segments = &no_type; r.n_segments = 1; break;
        case NEGATIVE: r.segments = &negative; r.n_segments = 1; break;
        case NO_SOURCES: r.sources = NULL; break;
        case OUT_OF_SET: r.source_files = out_of_set; break;
        }
        expect_refused(rp, s, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reports_pass_dciodvfy_and_hold_the_measurements),
        cmocka_unit_test(test_each_report_gets_new_uids),
        cmocka_unit_test(test_bad_input_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
