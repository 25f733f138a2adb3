/*
 * Hostile headers: files made for real (tests/tools/make_hostile_fixtures.py,
 * pydicom, at test time) whose geometry or sizes lie. Each is refused with
 * its reason from its header, before a pixel is decoded or a buffer of the
 * claimed size allocated; a normal series still parses, decodes and
 * assembles.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/limits.h"
#include "dicom/image.h"
#include "inference/inference.h"

static char dir[256];

static const char *data_dir(void)
{
    const char *d = getenv("AINODE_TEST_DATA");
    return d && *d ? d : "tests/data";
}

static int make_fixtures(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ainode-hostile-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -B '%s/../tools/make_hostile_fixtures.py' '%s'",
             data_dir(), dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make the hostile fixtures: %s\n", cmd);
        return -1;
    }
    return 0;
}

static int remove_fixtures(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

/* NAME is refused by dicom_image_read with a reason containing WANT, and
 * so is a source set of a normal file and NAME (naming instance 2). */
static void expect_refused(const char *name, const char *want)
{
    char path[512], err[512] = "";
    struct dicom_image *img = (struct dicom_image *)1;
    path_of(path, sizeof path, name);
    int rc = dicom_image_read(path, &img, err, sizeof err);
    if (rc != DICOM_EFORMAT || !strstr(err, want))
        fail_msg("%s: %d '%s', want DICOM_EFORMAT '%s'", name, rc, err, want);
    assert_null(img);

    char normal[512];
    path_of(normal, sizeof normal, "normal_1.dcm");
    const char *pp[] = {normal, path};
    struct dicom_sources *set = (struct dicom_sources *)1;
    rc = dicom_sources_open(pp, 2, &set, err, sizeof err);
    if (rc != DICOM_EFORMAT || !strstr(err, want) || !strstr(err, "instance 2 ("))
        fail_msg("%s in a set: %d '%s', want '%s'", name, rc, err, want);
    assert_null(set);
}

static const struct {
    const char *file, *want;
} hostile_geometry[] = {
    {"spacing_huge.dcm", "Pixel Spacing 1000000 is not in (0, 100] mm"},
    {"spacing_zero.dcm", "Pixel Spacing 0 is not in (0, 100] mm"},
    {"spacing_negative.dcm", "Pixel Spacing -0.5 is not in (0, 100] mm"},
    {"spacing_nan.dcm", "Pixel Spacing 'NaN\\0.7' is not 2 finite numbers"},
    {"position_1e308_oblique.dcm", "Image Position (Patient) 1e+308 is beyond 1000000 mm"},
    {"position_nan.dcm", "Image Position (Patient) 'nan\\0\\0' is not 3 finite numbers"},
    {"position_inf.dcm", "Image Position (Patient) '0\\-inf\\0' is not 3 finite numbers"},
    {"orientation_inf.dcm",
     "Image Orientation (Patient) 'inf\\0\\0\\0\\1\\0' is not 6 finite numbers"},
    {"orientation_skewed.dcm", "Image Orientation (Patient) is not two orthogonal unit vectors"},
    {"orientation_long.dcm", "Image Orientation (Patient) is not two orthogonal unit vectors"},
    {"gfov_inf.dcm", "Grid Frame Offset Vector '0\\inf\\2' is not 3 finite numbers"},
    {"gfov_huge.dcm", "Grid Frame Offset Vector value 1e+300 is beyond 1000000 mm"},
};

static void test_hostile_geometry_is_refused_with_its_reason(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof hostile_geometry / sizeof *hostile_geometry; i++)
        expect_refused(hostile_geometry[i].file, hostile_geometry[i].want);
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_sizes_over_the_caps_are_refused_from_the_header(void **state)
{
    (void)state;
    /* 4 million 1x1 frames: refused before a frame's geometry or pixels
     * cost anything (they cost 440 MB when read). */
    long rss = max_rss_kb();
    double t0 = now();
    expect_refused("frames_4m.dcm", "Number of Frames 4000000 is over the limit of 65536");
    assert_true(now() - t0 < 5.0);
    long grown_mb = (max_rss_kb() - rss) / 1024;
    if (grown_mb > 32)
        fail_msg("refusing 4 million frames grew the process by %ld MB", grown_mb);

    expect_refused("rows_cols_over_cap.dcm",
                   "a frame of 16384 x 16384 pixels is over the limit of 67108864 pixels");
    expect_refused("image_over_cap.dcm",
                   "an image of 4096 x 4096 x 32 pixels is over the limit of 268435456 pixels");
}

static void test_codestreams_that_disagree_with_their_header_are_refused(void **state)
{
    (void)state;
    long rss = max_rss_kb();
    /* A 6 KB JPEG 2000 file whose SIZ claims 40000 x 40000 (6.4 GB as float). */
    expect_refused("j2k_siz_huge.dcm", "JPEG 2000 frame 1: the codestream claims 40000x40000 "
                                       "pixels where Columns x Rows is 64x64");
    expect_refused("j2k_siz_huge_rows.dcm",
                   "a frame of 40000 x 40000 pixels is over the limit of 67108864 pixels");
    expect_refused("j2k_csiz_3.dcm",
                   "colour images are not supported (JPEG 2000 data with 3 components)");
    expect_refused("j2k_fewer_fragments.dcm",
                   "the encapsulated pixel data holds fewer fragments than Number of Frames");
    expect_refused("jpeg_sof_huge.dcm", "JPEG frame 1: the codestream claims 30000x30000 pixels "
                                        "where Columns x Rows is 64x64");
    expect_refused("jpegls_sof_huge.dcm", "JPEG-LS frame 1: the codestream claims 30000x30000 "
                                          "pixels where Columns x Rows is 64x64");
    /* Headers cut short: the parsers stop at the end of their bytes. */
    expect_refused("j2k_truncated.dcm",
                   "JPEG 2000 frame 1: no SIZ marker at the start of the codestream");
    expect_refused("j2k_jp2_bad_box.dcm", "JPEG 2000 frame 1: no codestream in its JP2 wrapper");
    expect_refused("jpeg_truncated.dcm", "JPEG frame 1: no frame header (SOF) in its first fragment");
    expect_refused("jpegls_truncated.dcm",
                   "JPEG-LS frame 1: no frame header (SOF) in its first fragment");
    long grown_mb = (max_rss_kb() - rss) / 1024;
    if (grown_mb > 32)
        fail_msg("refusing the codestreams grew the process by %ld MB", grown_mb);
}

/* A deflated file is read through an inflated copy on disk: 256 MiB of
 * zeros in a file of 256 KB cost no memory to parse and decode (DCMTK
 * alone inflates the whole data set in memory). */
static void test_a_deflated_file_is_read_without_inflating_it_in_memory(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    path_of(path, sizeof path, "deflate_bomb.dcm");
    long rss = max_rss_kb();
    const char *pp[] = {path};
    struct dicom_sources *set = NULL;
    if (dicom_sources_open(pp, 1, &set, err, sizeof err) != DICOM_OK)
        fail_msg("deflate_bomb.dcm: %s", err);
    const struct dicom_image *img = dicom_sources_image(set, 0);
    assert_int_equal(img->rows, 16);
    assert_int_equal(img->cols, 16);
    assert_non_null(img->pixels);
    /* The same pixels as the uncompressed fixtures: arange % 4096 + 1000,
     * rescaled by -1024. */
    assert_true(img->pixels[5] == 5 + 1000 - 1024);
    dicom_sources_close(set);
    struct dicom_image *one = NULL;
    if (dicom_image_read(path, &one, err, sizeof err) != DICOM_OK)
        fail_msg("deflate_bomb.dcm read alone: %s", err);
    dicom_image_free(one);
    long grown_mb = (max_rss_kb() - rss) / 1024;
    if (grown_mb > 64)
        fail_msg("reading a deflated file grew the process by %ld MB", grown_mb);
}

/* Parsing reads headers only: a codestream lie shows at decoding, which
 * checks it before the codec runs; a set's headers are checked against
 * the job's pixel budget before anything is decoded. */
static void test_a_set_is_checked_from_its_headers_before_decoding(void **state)
{
    (void)state;
    char a[512], b[512], err[512] = "";
    path_of(a, sizeof a, "normal_1.dcm");
    path_of(b, sizeof b, "j2k_siz_huge.dcm");
    const char *pp[] = {a, b};
    struct dicom_sources *set = NULL;
    assert_int_equal(dicom_sources_parse(pp, 2, 0, &set, err, sizeof err), DICOM_OK);
    assert_null(dicom_sources_image(set, 0)->pixels);
    assert_null(dicom_sources_image(set, 1)->pixels);
    assert_int_equal(dicom_sources_image(set, 1)->rows, 64);
    assert_int_equal(dicom_sources_decode(set, err, sizeof err), DICOM_EFORMAT);
    assert_non_null(strstr(err, "instance 2 ("));
    assert_non_null(strstr(err, "the codestream claims 40000x40000 pixels"));
    dicom_sources_close(set);

    /* Two 4x4 files are 32 pixels: a budget of 31 refuses the second. */
    path_of(b, sizeof b, "normal_2.dcm");
    set = (struct dicom_sources *)1;
    assert_int_equal(dicom_sources_parse(pp, 2, 31, &set, err, sizeof err), DICOM_EFORMAT);
    assert_null(set);
    assert_non_null(strstr(err, "instance 2 ("));
    assert_non_null(strstr(err, "the series holds more than 31 pixels (Rows x Columns x Frames), "
                                "the limit of one job"));
    assert_int_equal(dicom_sources_parse(pp, 2, 32, &set, err, sizeof err), DICOM_OK);
    dicom_sources_close(set);
}

static void test_a_normal_series_still_parses_decodes_and_assembles(void **state)
{
    (void)state;
    char a[512], b[512], err[512] = "";
    path_of(a, sizeof a, "normal_2.dcm");
    path_of(b, sizeof b, "normal_1.dcm");
    const char *pp[] = {a, b};
    struct dicom_sources *set = NULL;
    assert_int_equal(dicom_sources_parse(pp, 2, INFER_DEFAULT_MAX_VOXELS, &set, err, sizeof err),
                     DICOM_OK);
    assert_int_equal(dicom_sources_decode(set, err, sizeof err), DICOM_OK);
    /* Decoding twice is a no-op. */
    assert_int_equal(dicom_sources_decode(set, err, sizeof err), DICOM_OK);
    struct infer_slice s[2];
    for (size_t i = 0; i < 2; i++) {
        const struct dicom_image *img = dicom_sources_image(set, i);
        assert_non_null(img->pixels);
        assert_int_equal(img->has_geometry, 1);
        s[i] = (struct infer_slice){.pixels = img->pixels, .rows = img->rows, .cols = img->cols,
                                    .source = (int)i};
        memcpy(s[i].position, img->positions, sizeof s[i].position);
        memcpy(s[i].orientation, img->orientations, sizeof s[i].orientation);
        memcpy(s[i].pixel_spacing, img->pixel_spacing, sizeof s[i].pixel_spacing);
    }
    assert_true(s[0].pixels[0] == 1000.0f - 1024.0f);
    struct infer_volume_limits lim = {1, 0.5, 0.05, 0};
    struct infer_volume v;
    assert_int_equal(infer_volume_assemble(s, 2, &lim, &v, err, sizeof err), INFER_OK);
    assert_int_equal(v.grid.nx, 4);
    assert_int_equal(v.grid.nz, 2);
    assert_float_equal(v.grid.spacing[2], 1.5, 1e-9);
    assert_int_equal(v.source[0], 1); /* ordered by position, not by path */
    infer_volume_free(&v);
    dicom_sources_close(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_geometry_is_refused_with_its_reason),
        cmocka_unit_test(test_sizes_over_the_caps_are_refused_from_the_header),
        cmocka_unit_test(test_codestreams_that_disagree_with_their_header_are_refused),
        cmocka_unit_test(test_a_deflated_file_is_read_without_inflating_it_in_memory),
        cmocka_unit_test(test_a_set_is_checked_from_its_headers_before_decoding),
        cmocka_unit_test(test_a_normal_series_still_parses_decodes_and_assembles),
    };
    return cmocka_run_group_tests(tests, make_fixtures, remove_fixtures);
}
