/*
 * dicom_write_seg: the SEG is checked by two independent readers, dicom3tools'
 * dciodvfy (IOD conformance) and tests/tools/verify_seg.py (pydicom: every
 * frame against the label volume and the geometry of its source slice).
 * Sources are a synthetic CT series made by tests/tools/gen_series.py, given
 * in shuffled order, and the Enhanced CT fixture in AINODE_TEST_DATA/image.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "dicom/dicom.h"

#define NX 20 /* columns */
#define NY 24 /* rows */
#define NZ 6

static const char *data_dir(void)
{
    const char *d = getenv("AINODE_TEST_DATA");
    return d && *d ? d : "tests/data";
}

/* Runs CMD (both streams captured); returns its exit status, *OUT the output. */
static int run(const char *cmd, char **out)
{
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct fixture {
    char dir[64];
    char series[NZ][256]; /* spatial order: ascending z */
    char seg_path[128];
    char labels_path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ainode-seg-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/../tools/gen_series.py' --out '%s' --slices %d --rows %d "
             "--cols %d",
             data_dir(), f->dir, NZ, NY, NX);
    int rc = run(cmd, &out);
    if (rc != 0)
        print_error("%s\n", out);
    free(out);
    if (rc != 0)
        return -1;
    for (int z = 0; z < NZ; z++)
        snprintf(f->series[z], sizeof f->series[z], "%s/s01_CT/IM%05d.dcm", f->dir, z + 1);
    snprintf(f->seg_path, sizeof f->seg_path, "%s/seg.dcm", f->dir);
    snprintf(f->labels_path, sizeof f->labels_path, "%s/labels.raw", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128], *out = NULL;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    run(cmd, &out);
    free(out);
    free(f);
    return 0;
}

/* Label of voxel (z, y, x) in spatial order: a box of 1 on z 1..3, a disc of
 * 2 on z 0..4 where the box is not, nothing on z 5. */
static uint8_t spatial_label(int z, int y, int x)
{
    if (z >= 1 && z <= 3 && y >= 5 && y <= 12 && x >= 4 && x <= 10)
        return 1;
    int dy = y - 16, dx = x - 12;
    if (z <= 4 && dy * dy + dx * dx <= 16)
        return 2;
    return 0;
}

/* Slice k of the labels lies on source PERM[k]. */
static const int PERM[NZ] = {3, 0, 5, 1, 4, 2};

static const struct dicom_segment SEGMENTS[] = {
    {1, "Box", {"123037004", "SCT", "Anatomical Structure"}, {"10200004", "SCT", "Liver"},
     {255, 0, 0}, 0, 0},
    {2, "Disc", {"49755003", "SCT", "Morphologically Altered Structure"},
     {"108369006", "SCT", "Neoplasm"}, {0, 128, 255}, 0, 0},
    {3, "Nothing", {"123037004", "SCT", "Anatomical Structure"}, {"64033007", "SCT", "Kidney"},
     {0, 255, 0}, 0, 0},
};

struct job {
    const char *paths[NZ];
    int frames[NZ];
    uint8_t labels[NZ * NY * NX];
    struct dicom_result r;
};

static void init_result(struct dicom_result *r, const char *const *paths, const int *frames,
                        int nx, int ny, int nz, const uint8_t *labels, size_t n_segments)
{
    memset(r, 0, sizeof *r);
    r->source_paths = paths;
    r->source_frames = frames;
    r->nx = nx;
    r->ny = ny;
    r->nz = nz;
    r->labels = labels;
    r->segments = SEGMENTS;
    r->n_segments = n_segments;
    r->algorithm_name = "TestSegmenter";
    r->algorithm_version = "1.2.3";
    r->algorithm_family = (struct dicom_code){"123110", "DCM", "Artificial Intelligence"};
    r->series_description = "AI segmentation";
    r->series_number = 901;
    r->manufacturer = "ainode";
    r->software_version = "0.1.0";
}

/* The shuffled series with N_SEGMENTS segments. */
static void shuffled_job(struct fixture *f, struct job *j, size_t n_segments)
{
    for (int k = 0; k < NZ; k++) {
        j->paths[k] = f->series[PERM[k]];
        j->frames[k] = 0;
        for (int y = 0; y < NY; y++)
            for (int x = 0; x < NX; x++)
                j->labels[(k * NY + y) * NX + x] = spatial_label(PERM[k], y, x);
    }
    init_result(&j->r, j->paths, j->frames, NX, NY, NZ, j->labels, n_segments);
}

static void write_labels(const char *path, const uint8_t *labels, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(labels, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void write_seg(const struct dicom_result *r, const char *path, char *sop, char *series)
{
    char err[256] = "";
    int rc = dicom_write_seg(r, path, sop, series, err, sizeof err);
    if (rc != 0)
        print_error("dicom_write_seg: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
}

/* dciodvfy must report no error; its warnings are shown. */
static void assert_dciodvfy_clean(const char *path)
{
    char cmd[512], *out = NULL;
    snprintf(cmd, sizeof cmd, "dciodvfy '%s'", path);
    run(cmd, &out);
    int errors = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "Error", 5) == 0) {
            print_error("dciodvfy: %s\n", line);
            errors++;
        } else if (strncmp(line, "Warning", 7) == 0) {
            print_message("dciodvfy: %s\n", line);
        }
    }
    free(out);
    assert_int_equal(errors, 0);
}

/* verify_seg.py must accept the SEG; FRAMES may be NULL. */
static void assert_verified(const char *seg, const char *labels_path, const uint8_t *labels,
                            int nx, int ny, int nz, const char *const *paths, const int *frames)
{
    write_labels(labels_path, labels, (size_t)nx * ny * nz);
    char cmd[8192], *out = NULL;
    int n = snprintf(cmd, sizeof cmd,
                     "/usr/bin/python3 '%s/../tools/verify_seg.py' '%s' '%s' %d %d %d", data_dir(),
                     seg, labels_path, nx, ny, nz);
    for (int k = 0; k < nz; k++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", paths[k]);
    if (frames) {
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " --frames ");
        for (int k = 0; k < nz; k++)
            n += snprintf(cmd + n, sizeof cmd - (size_t)n, "%s%d", k ? "," : "", frames[k]);
    }
    assert_true((size_t)n < sizeof cmd);
    int rc = run(cmd, &out);
    if (rc != 0)
        print_error("verify_seg.py: %s\n", out);
    free(out);
    assert_int_equal(rc, 0);
}

static void seg_of_shuffled_series_passes_dciodvfy(void **state)
{
    struct fixture *f = *state;
    struct job j;
    char sop[65], series[65];
    shuffled_job(f, &j, 2);
    write_seg(&j.r, f->seg_path, sop, series);
    assert_dciodvfy_clean(f->seg_path);
}

static void seg_frames_match_labels_and_their_source_slices(void **state)
{
    struct fixture *f = *state;
    struct job j;
    char sop[65], series[65];
    shuffled_job(f, &j, 2);
    write_seg(&j.r, f->seg_path, sop, series);
    assert_verified(f->seg_path, f->labels_path, j.labels, NX, NY, NZ, j.paths, NULL);
}

static void each_seg_gets_new_sop_and_series_uids(void **state)
{
    struct fixture *f = *state;
    struct job j;
    char sop1[65], series1[65], sop2[65], series2[65];
    shuffled_job(f, &j, 2);
    write_seg(&j.r, f->seg_path, sop1, series1);
    write_seg(&j.r, f->seg_path, sop2, series2);
    assert_true(strncmp(sop1, "2.25.", 5) == 0);
    assert_true(strncmp(series1, "2.25.", 5) == 0);
    assert_string_not_equal(sop1, series1);
    assert_string_not_equal(sop1, sop2);
    assert_string_not_equal(series1, series2);
}

static void segment_without_voxels_keeps_one_empty_frame(void **state)
{
    struct fixture *f = *state;
    struct job j;
    char sop[65], series[65];
    shuffled_job(f, &j, 3); /* segment 3 labels no voxel */
    write_seg(&j.r, f->seg_path, sop, series);
    assert_dciodvfy_clean(f->seg_path);
    assert_verified(f->seg_path, f->labels_path, j.labels, NX, NY, NZ, j.paths, NULL);
}

static void enhanced_multiframe_source_is_referenced_by_frame(void **state)
{
    struct fixture *f = *state;
    char path[1024];
    snprintf(path, sizeof path, "%s/image/enhanced_ct_3frames.dcm", data_dir());
    const char *paths[3] = {path, path, path};
    const int frames[3] = {0, 1, 2};
    enum { ENX = 5, ENY = 4, ENZ = 3 };
    uint8_t labels[ENZ * ENY * ENX] = {0};
    labels[0 * ENY * ENX + 1 * ENX + 1] = 1; /* frame 1: one voxel of 1 */
    labels[1 * ENY * ENX + 2 * ENX + 3] = 2; /* frame 2: one of 2 and one of 1 */
    labels[1 * ENY * ENX + 0 * ENX + 0] = 1;
    /* frame 3: nothing */
    struct dicom_result r;
    char sop[65], series[65];
    init_result(&r, paths, frames, ENX, ENY, ENZ, labels, 2);
    write_seg(&r, f->seg_path, sop, series);
    assert_dciodvfy_clean(f->seg_path);
    assert_verified(f->seg_path, f->labels_path, labels, ENX, ENY, ENZ, paths, frames);
}

/* Slice 2 of the series tilted and with another pixel spacing, no slice
 * thickness anywhere: orientation and pixel measures must follow each source
 * slice, the thickness becomes the distance between slices. */
static void per_slice_geometry_goes_into_per_frame_groups(void **state)
{
    struct fixture *f = *state;
    char script[128], dir[128], cmd[1024], *out = NULL;
    snprintf(script, sizeof script, "%s/edit.py", f->dir);
    snprintf(dir, sizeof dir, "%s/edited", f->dir);
    FILE *fp = fopen(script, "w");
    assert_non_null(fp);
    fputs("import os, sys, pydicom\n"
          "src, dst = sys.argv[1], sys.argv[2]\n"
          "os.makedirs(dst, exist_ok=True)\n"
          "for i in range(1, 7):\n"
          "    ds = pydicom.dcmread(os.path.join(src, 'IM%05d.dcm' % i))\n"
          "    del ds.SliceThickness\n"
          "    if i == 3:\n"
          "        ds.PixelSpacing = ['0.75', '0.7']\n"
          "        ds.ImageOrientationPatient = ['1', '0', '0', '0', '0.99995', '0.0099998']\n"
          "    ds.save_as(os.path.join(dst, 'IM%05d.dcm' % i))\n",
          fp);
    assert_int_equal(fclose(fp), 0);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s/s01_CT' '%s'", script, f->dir, dir);
    int rc = run(cmd, &out);
    if (rc != 0)
        print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);

    static char paths[NZ][256];
    struct job j;
    char sop[65], series[65];
    shuffled_job(f, &j, 2);
    for (int k = 0; k < NZ; k++) {
        snprintf(paths[k], sizeof paths[k], "%s/IM%05d.dcm", dir, PERM[k] + 1);
        j.paths[k] = paths[k];
    }
    write_seg(&j.r, f->seg_path, sop, series);
    assert_dciodvfy_clean(f->seg_path);
    assert_verified(f->seg_path, f->labels_path, j.labels, NX, NY, NZ, j.paths, NULL);
}

/* dicom_write_seg must fail with a one-line reason containing WANT and no
 * patient data. */
static void expect_refused(const struct dicom_result *r, const char *path, const char *want)
{
    char err[256] = "", sop[65] = "x", series[65] = "x";
    assert_int_equal(dicom_write_seg(r, path, sop, series, err, sizeof err), -1);
    if (!strstr(err, want))
        print_error("got '%s', want '%s'\n", err, want);
    assert_non_null(strstr(err, want));
    assert_null(strchr(err, '\n'));
    assert_null(strstr(err, "TEST0001"));
    assert_null(strstr(err, "Phantom"));
    assert_string_equal(sop, "");
    assert_string_equal(series, "");
}

static void rejects_empty_volume(void **state)
{
    struct fixture *f = *state;
    struct job j;
    shuffled_job(f, &j, 2);
    j.r.nz = 0;
    expect_refused(&j.r, f->seg_path, "empty label volume");
}

static void rejects_duplicate_segment_numbers(void **state)
{
    struct fixture *f = *state;
    struct job j;
    struct dicom_segment twice[2] = {SEGMENTS[0], SEGMENTS[0]};
    shuffled_job(f, &j, 2);
    j.r.segments = twice;
    expect_refused(&j.r, f->seg_path, "segment number 1 used twice");
}

static void rejects_segment_numbers_outside_1_to_255_or_with_gaps(void **state)
{
    struct fixture *f = *state;
    struct job j;
    struct dicom_segment segs[2] = {SEGMENTS[0], SEGMENTS[1]};
    shuffled_job(f, &j, 2);
    j.r.segments = segs;
    segs[1].number = 0;
    expect_refused(&j.r, f->seg_path, "segment number 0 outside 1..255");
    segs[1].number = 256;
    expect_refused(&j.r, f->seg_path, "segment number 256 outside 1..255");
    segs[1].number = 3;
    expect_refused(&j.r, f->seg_path, "without gaps");
}

static void rejects_missing_labels_and_segment_text(void **state)
{
    struct fixture *f = *state;
    struct job j;
    struct dicom_segment segs[2] = {SEGMENTS[0], SEGMENTS[1]};
    shuffled_job(f, &j, 2);
    j.r.labels = NULL;
    expect_refused(&j.r, f->seg_path, "no label volume");
    shuffled_job(f, &j, 2);
    j.r.segments = segs;
    segs[1].label = NULL;
    expect_refused(&j.r, f->seg_path, "segment 2 label is missing");
    segs[1].label = "a\\b";
    expect_refused(&j.r, f->seg_path, "segment 2 label contains");
}

static void rejects_labels_whose_size_differs_from_the_sources(void **state)
{
    struct fixture *f = *state;
    struct job j;
    shuffled_job(f, &j, 2);
    j.r.nx = NX - 1; /* same buffer, read as a smaller volume */
    expect_refused(&j.r, f->seg_path, "pixels");
}

static void rejects_unreadable_source(void **state)
{
    struct fixture *f = *state;
    struct job j;
    shuffled_job(f, &j, 2);
    j.paths[2] = "/nonexistent/ainode/IM1.dcm";
    expect_refused(&j.r, f->seg_path, "cannot read source of slice 2");
}

static void rejects_two_slices_on_the_same_source_frame(void **state)
{
    struct fixture *f = *state;
    struct job j;
    shuffled_job(f, &j, 2);
    j.paths[4] = j.paths[1];
    expect_refused(&j.r, f->seg_path, "already used");
}

/* 400 slices of 512x512, two segments; prints the time. */
static void writes_400_slices_of_512x512_quickly(void **state)
{
    (void)state;
    enum { BX = 512, BY = 512, BZ = 400 };
    char dir[64], cmd[1024], *out = NULL;
    snprintf(dir, sizeof dir, "/tmp/ainode-segbench-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/../tools/gen_series.py' --out '%s' --slices %d --rows %d "
             "--cols %d",
             data_dir(), dir, BZ, BY, BX);
    int rc = run(cmd, &out);
    free(out);
    assert_int_equal(rc, 0);

    static char paths[BZ][128];
    const char *pp[BZ];
    uint8_t *labels = calloc((size_t)BZ * BY * BX, 1);
    assert_non_null(labels);
    for (int k = 0; k < BZ; k++) {
        snprintf(paths[k], sizeof paths[k], "%s/s01_CT/IM%05d.dcm", dir, k + 1);
        pp[k] = paths[k];
        uint8_t *s = labels + (size_t)k * BY * BX;
        for (int y = 0; y < BY; y++)
            for (int x = 0; x < BX; x++) {
                int dy = y - 256, dx = x - 200;
                if (dy * dy + dx * dx < 80 * 80)
                    s[y * BX + x] = 1;
                else if (k >= 100 && k < 300 && x >= 320 && x < 420 && y >= 200 && y < 300)
                    s[y * BX + x] = 2;
            }
    }
    struct dicom_result r;
    init_result(&r, pp, NULL, BX, BY, BZ, labels, 2);
    char seg_path[128], sop[65], series[65];
    snprintf(seg_path, sizeof seg_path, "%s/seg.dcm", dir);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    write_seg(&r, seg_path, sop, series);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("400 x 512x512, 2 segments (600 frames): %.3f s\n", s);
    free(labels);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run(cmd, &out);
    free(out);
    /* Generous for sanitizer builds; an optimised build takes far less. */
    assert_true(s < 10.0);
}

int main(void)
{
    char err[256];
    if (dicom_init(err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seg_of_shuffled_series_passes_dciodvfy),
        cmocka_unit_test(seg_frames_match_labels_and_their_source_slices),
        cmocka_unit_test(each_seg_gets_new_sop_and_series_uids),
        cmocka_unit_test(segment_without_voxels_keeps_one_empty_frame),
        cmocka_unit_test(enhanced_multiframe_source_is_referenced_by_frame),
        cmocka_unit_test(per_slice_geometry_goes_into_per_frame_groups),
        cmocka_unit_test(rejects_empty_volume),
        cmocka_unit_test(rejects_duplicate_segment_numbers),
        cmocka_unit_test(rejects_segment_numbers_outside_1_to_255_or_with_gaps),
        cmocka_unit_test(rejects_missing_labels_and_segment_text),
        cmocka_unit_test(rejects_labels_whose_size_differs_from_the_sources),
        cmocka_unit_test(rejects_unreadable_source),
        cmocka_unit_test(rejects_two_slices_on_the_same_source_frame),
        cmocka_unit_test(writes_400_slices_of_512x512_quickly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
