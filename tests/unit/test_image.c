/*
 * dicom_image_read and the source set: every transfer syntax against a
 * reference decoding; the set gives the same images and geometry, parsed once.
 * Lossless encodings of one image must give identical values; reference
 * numbers for single pixels come from pydicom (its decoding or its own test
 * suite). Files: pydicom's test files (AINODE_PYDICOM_DATA) and fixtures
 * made by tests/tools/make_image_fixtures.py (AINODE_TEST_DATA/image).
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dicom/image.h"

static const char *pydicom_dir(void)
{
    const char *d = getenv("AINODE_PYDICOM_DATA");
    return d && *d ? d : "/usr/lib/python3/dist-packages/pydicom/data/test_files";
}

static const char *fixture_dir(void)
{
    static char dir[1024];
    const char *d = getenv("AINODE_TEST_DATA");
    snprintf(dir, sizeof dir, "%s/image", d && *d ? d : "tests/data");
    return dir;
}

static void path_of(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static struct dicom_image *load(const char *dir, const char *name)
{
    char path[1200], err[256] = "";
    struct dicom_image *img = NULL;
    path_of(path, sizeof path, dir, name);
    int rc = dicom_image_read(path, &img, err, sizeof err);
    if (rc != 0)
        print_error("%s: %s\n", path, err);
    assert_int_equal(rc, 0);
    assert_non_null(img);
    assert_non_null(img->pixels);
    return img;
}

static struct dicom_image *pyd(const char *name) { return load(pydicom_dir(), name); }
static struct dicom_image *fixture(const char *name) { return load(fixture_dir(), name); }

/* Reads NAME expecting failure CODE with a message that contains WANT. */
static void expect_refused(const char *dir, const char *name, const char *want, int code)
{
    char path[1200], err[256] = "";
    struct dicom_image *img = (struct dicom_image *)1;
    path_of(path, sizeof path, dir, name);
    assert_int_equal(dicom_image_read(path, &img, err, sizeof err), code);
    assert_null(img);
    if (!strstr(err, want))
        print_error("%s: got '%s', want '%s'\n", name, err, want);
    assert_non_null(strstr(err, want));
    assert_null(strchr(err, '\n'));
}

static size_t npixels(const struct dicom_image *img)
{
    return (size_t)img->frames * (size_t)img->rows * (size_t)img->cols;
}

static float at(const struct dicom_image *img, int frame, int row, int col)
{
    return img->pixels[((size_t)frame * img->rows + row) * img->cols + col];
}

static void assert_same_image(const struct dicom_image *a, const struct dicom_image *b)
{
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_int_equal(a->frames, b->frames);
    assert_memory_equal(a->pixels, b->pixels, npixels(a) * sizeof(float));
    assert_int_equal(a->has_geometry, b->has_geometry);
    assert_memory_equal(a->positions, b->positions, (size_t)a->frames * 3 * sizeof(double));
    assert_memory_equal(a->orientations, b->orientations, (size_t)a->frames * 6 * sizeof(double));
    assert_memory_equal(a->pixel_spacing, b->pixel_spacing, sizeof a->pixel_spacing);
    assert_string_equal(a->sop_class_uid, b->sop_class_uid);
    assert_string_equal(a->modality, b->modality);
}

static void assert_near(double got, double want)
{
    if (fabs(got - want) > 1e-4) {
        print_error("got %.6f, want %.6f\n", got, want);
        fail();
    }
}

static void assert_vec(const double *got, const double *want, int n)
{
    for (int i = 0; i < n; i++)
        assert_near(got[i], want[i]);
}

static void test_mr_small_lossless_encodings_decode_to_identical_values(void **state)
{
    (void)state;
    struct dicom_image *ref = pyd("MR_small.dcm");
    assert_int_equal(ref->frames, 1);
    assert_int_equal(ref->rows, 64);
    assert_int_equal(ref->cols, 64);
    /* pydicom: ds.pixel_array (signed 16-bit, no rescale) */
    assert_true(at(ref, 0, 0, 0) == 905.0f);
    assert_true(at(ref, 0, 32, 32) == 182.0f);
    float mn = ref->pixels[0], mx = ref->pixels[0];
    for (size_t i = 0; i < npixels(ref); i++) {
        mn = ref->pixels[i] < mn ? ref->pixels[i] : mn;
        mx = ref->pixels[i] > mx ? ref->pixels[i] : mx;
    }
    assert_true(mn == 127.0f && mx == 2145.0f);
    assert_int_equal(ref->has_geometry, 1);
    assert_vec(ref->positions, (double[]){-83.9063, -91.2, 6.6406}, 3);
    assert_vec(ref->orientations, (double[]){1, 0, 0, 0, 1, 0}, 6);
    assert_vec(ref->pixel_spacing, (double[]){0.3125, 0.3125}, 2);
    assert_string_equal(ref->sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
    assert_string_equal(ref->modality, "MR");
    assert_string_equal(ref->image_type, "DERIVED\\SECONDARY\\OTHER");

    static const char *const siblings[] = {
        "MR_small_implicit.dcm",         /* implicit VR little endian */
        "MR_small_bigendian.dcm",        /* explicit VR big endian */
        "MR_small_expb.dcm",             /* explicit VR big endian */
        "MR_small_padded.dcm",           /* padded pixel data */
        "MR_small_RLE.dcm",              /* RLE lossless */
        "MR_small_jpeg_ls_lossless.dcm", /* JPEG-LS lossless */
        "MR_small_jp2klossless.dcm",     /* JPEG 2000 lossless */
    };
    for (size_t i = 0; i < sizeof siblings / sizeof *siblings; i++) {
        struct dicom_image *img = pyd(siblings[i]);
        assert_same_image(ref, img);
        dicom_image_free(img);
    }
    static const char *const fixtures[] = {
        "MR_small_jpeg_lossless.dcm", /* JPEG lossless SV1 (process 14) */
        "MR_small_jp2_wrapped.dcm",   /* JPEG 2000 codestream inside a JP2 file */
    };
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        struct dicom_image *img = fixture(fixtures[i]);
        assert_same_image(ref, img);
        dicom_image_free(img);
    }
    dicom_image_free(ref);
}

static void test_ct_gives_hounsfield_units(void **state)
{
    (void)state;
    struct dicom_image *img = pyd("CT_small.dcm");
    assert_int_equal(img->rows, 128);
    assert_int_equal(img->cols, 128);
    /* pydicom: ds.pixel_array * 1 + (-1024) */
    assert_true(at(img, 0, 0, 0) == -849.0f);
    assert_true(at(img, 0, 64, 64) == 904.0f);
    assert_true(at(img, 0, 127, 127) == -115.0f);
    assert_true(at(img, 0, 10, 100) == 203.0f);
    float mn = img->pixels[0], mx = img->pixels[0];
    for (size_t i = 0; i < npixels(img); i++) {
        mn = img->pixels[i] < mn ? img->pixels[i] : mn;
        mx = img->pixels[i] > mx ? img->pixels[i] : mx;
    }
    assert_true(mn == -896.0f && mx == 1167.0f);
    assert_int_equal(img->has_geometry, 1);
    assert_vec(img->positions, (double[]){-158.135803, -179.035797, -75.699997}, 3);
    assert_vec(img->orientations, (double[]){1, 0, 0, 0, 1, 0}, 6);
    assert_vec(img->pixel_spacing, (double[]){0.661468, 0.661468}, 2);
    assert_string_equal(img->sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
    assert_string_equal(img->modality, "CT");
    assert_string_equal(img->image_type, "ORIGINAL\\PRIMARY\\AXIAL");
    dicom_image_free(img);
}

static void test_deflated_image_decodes(void **state)
{
    (void)state;
    struct dicom_image *img = pyd("image_dfl.dcm");
    assert_int_equal(img->frames, 1);
    assert_int_equal(img->rows, 512);
    assert_int_equal(img->cols, 512);
    /* pydicom: pixel_array[0, 0], [256, 256] and sum() */
    assert_true(at(img, 0, 0, 0) == 213.0f);
    assert_true(at(img, 0, 256, 256) == 65.0f);
    double sum = 0;
    for (size_t i = 0; i < npixels(img); i++)
        sum += img->pixels[i];
    assert_true(sum == 33322688.0);
    assert_int_equal(img->has_geometry, 0); /* secondary capture: no plane */
    dicom_image_free(img);
}

static void test_jpeg_baseline_grey_is_close_to_its_source(void **state)
{
    (void)state;
    struct dicom_image *src = pyd("image_dfl.dcm");
    struct dicom_image *img = fixture("image_dfl_jpeg_baseline.dcm");
    assert_int_equal(img->rows, src->rows);
    assert_int_equal(img->cols, src->cols);
    double diff = 0;
    for (size_t i = 0; i < npixels(img); i++)
        diff += fabs(img->pixels[i] - src->pixels[i]);
    assert_true(diff / (double)npixels(img) < 2.0); /* quality 90 */
    dicom_image_free(img);
    dicom_image_free(src);
}

static void test_jpeg_extended_12bit_decodes(void **state)
{
    (void)state;
    struct dicom_image *img = pyd("JPGExtended.dcm");
    assert_int_equal(img->frames, 1);
    assert_int_equal(img->rows, 1024);
    assert_int_equal(img->cols, 256);
    /* the points checked by pydicom's own JPEG-lossy tests */
    assert_true(at(img, 0, 420, 140) == 244.0f);
    assert_true(at(img, 0, 230, 120) == 95.0f);
    assert_vec(img->pixel_spacing, (double[]){2.26, 2.26}, 2);
    assert_int_equal(img->has_geometry, 0); /* NM whole body: no plane position */
    assert_string_equal(img->modality, "NM");
    dicom_image_free(img);
}

static void test_jpeg2000_lossy_matches_the_jpeg_lossy_copy(void **state)
{
    (void)state;
    /* Both are lossy encodings of the same NM image (signed J2K, unsigned 12-bit JPEG). */
    struct dicom_image *j2k = pyd("JPEG2000.dcm");
    struct dicom_image *jpg = pyd("JPGExtended.dcm");
    assert_int_equal(j2k->rows, 1024);
    assert_int_equal(j2k->cols, 256);
    double diff = 0;
    for (size_t i = 0; i < npixels(j2k); i++)
        diff += fabs(j2k->pixels[i] - jpg->pixels[i]);
    assert_true(diff / (double)npixels(j2k) < 8.0);
    dicom_image_free(j2k);
    dicom_image_free(jpg);

    struct dicom_image *ct = pyd("693_J2KI.dcm"); /* J2K precision 16, Bits Stored 14 */
    assert_int_equal(ct->rows, 512);
    assert_int_equal(ct->cols, 512);
    assert_int_equal(ct->has_geometry, 1);
    dicom_image_free(ct);
}

static void test_jpeg2000_multiframe_fragments_are_split_into_frames(void **state)
{
    (void)state;
    struct dicom_image *ref = pyd("693_J2KI.dcm");
    static const struct {
        const char *name;
        int frames;
    } files[] = {
        {"j2k_2frames_bot.dcm", 2},        /* Basic Offset Table, 2 fragments a frame */
        {"j2k_2frames.dcm", 2},            /* one fragment a frame */
        {"j2k_3frames_fragmented.dcm", 3}, /* no table: codestream starts */
    };
    const size_t n = npixels(ref);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        struct dicom_image *img = fixture(files[i].name);
        assert_int_equal(img->frames, files[i].frames);
        assert_int_equal(img->rows, ref->rows);
        assert_int_equal(img->cols, ref->cols);
        for (int f = 0; f < img->frames; f++)
            assert_memory_equal(img->pixels + (size_t)f * n, ref->pixels, n * sizeof(float));
        /* a classic multi-frame CT with one plane position: no per-frame geometry */
        assert_int_equal(img->has_geometry, 0);
        dicom_image_free(img);
    }
    dicom_image_free(ref);
}

static void test_jpeg2000_unsigned_codestream_follows_pixel_representation(void **state)
{
    (void)state;
    /* Unsigned 13-bit J2K data, Pixel Representation 1: the values of
     * pydicom's test_pixel_rep_mismatch (slope 1, intercept 0). */
    struct dicom_image *img = pyd("J2K_pixelrep_mismatch.dcm");
    assert_int_equal(img->rows, 512);
    assert_int_equal(img->cols, 512);
    assert_true(at(img, 0, 0, 0) == -2000.0f);
    static const float col279[] = {621, 412, 138, -193, -520, -767, -907, -966, -988, -995};
    for (int i = 0; i < 10; i++)
        assert_true(at(img, 0, 47 + i, 279) == col279[i]);
    static const float col106[] = {-377, -121, 141, 383, 633, 910, 1198, 1455, 1638, 1732};
    for (int i = 0; i < 10; i++)
        assert_true(at(img, 0, 328 + i, 106) == col106[i]);
    dicom_image_free(img);
}

static void test_rle_multiframe_rt_dose(void **state)
{
    (void)state;
    struct dicom_image *ref = pyd("rtdose.dcm"); /* implicit VR, 32-bit unsigned */
    assert_int_equal(ref->frames, 15);
    assert_int_equal(ref->rows, 10);
    assert_int_equal(ref->cols, 10);
    /* pydicom: pixel_array[0, 0, 0], [7, 5, 5] */
    assert_true(at(ref, 0, 0, 0) == 1249000.0f);
    assert_true(at(ref, 7, 5, 5) == 975000.0f);
    /* Grid Frame Offset Vector 0, 5, ... 70 along the normal of an axial plane */
    assert_int_equal(ref->has_geometry, 1);
    for (int k = 0; k < 15; k++)
        assert_vec(ref->positions + 3 * k, (double[]){189.43125, 199.43125, -761.87 + 5.0 * k}, 3);
    assert_vec(ref->pixel_spacing, (double[]){10, 10}, 2);
    assert_string_equal(ref->modality, "RTDOSE");

    struct dicom_image *be = pyd("rtdose_expb.dcm"); /* explicit VR big endian */
    assert_same_image(ref, be);
    dicom_image_free(be);
    /* RLE; every data element of this file is encoded as UN */
    struct dicom_image *rle = pyd("rtdose_rle.dcm");
    assert_same_image(ref, rle);
    dicom_image_free(rle);
    dicom_image_free(ref);
}

static void test_enhanced_ct_per_frame_geometry_and_rescale(void **state)
{
    (void)state;
    struct dicom_image *img = fixture("enhanced_ct_3frames.dcm");
    assert_int_equal(img->frames, 3);
    assert_int_equal(img->rows, 4);
    assert_int_equal(img->cols, 5);
    assert_string_equal(img->sop_class_uid, "1.2.840.10008.5.1.4.1.1.2.1");
    assert_string_equal(img->modality, "CT");
    assert_string_equal(img->image_type, "ORIGINAL\\PRIMARY\\AXIAL\\NONE");
    /* stored 1000 + 100 f + 5 r + c, 12 of 16 bits; frames 1-2: -1024, frame 3: 2 x - 1000 */
    for (int f = 0; f < 3; f++)
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 5; c++) {
                double stored = 1000 + 100 * f + 5 * r + c;
                double want = f == 2 ? 2 * stored - 1000 : stored - 1024;
                assert_true(at(img, f, r, c) == (float)want);
            }
    assert_int_equal(img->has_geometry, 1);
    for (int f = 0; f < 3; f++) {
        assert_vec(img->positions + 3 * f, (double[]){-10, 20.5 + 2.5 * f, 30}, 3);
        assert_vec(img->orientations + 6 * f, (double[]){1, 0, 0, 0, 0, -1}, 6);
    }
    assert_vec(img->pixel_spacing, (double[]){0.5, 0.75}, 2);
    dicom_image_free(img);
}

static void test_signed_values_below_bits_allocated_are_sign_extended(void **state)
{
    (void)state;
    struct dicom_image *img = fixture("signed_12bit.dcm");
    static const float want[] = {-2048, -5, -1, 0, 1, 2047};
    assert_int_equal(img->rows, 2);
    assert_int_equal(img->cols, 3);
    for (int i = 0; i < 6; i++)
        assert_true(img->pixels[i] == want[i]);
    dicom_image_free(img);
}

static void test_one_bit_segmentation_decodes(void **state)
{
    (void)state;
    static const char *const files[] = {"liver_1frame.dcm", "liver_expb_1frame.dcm"};
    for (size_t i = 0; i < 2; i++) {
        struct dicom_image *img = pyd(files[i]);
        assert_int_equal(img->frames, 1);
        assert_int_equal(img->rows, 512);
        assert_int_equal(img->cols, 512);
        double sum = 0;
        for (size_t k = 0; k < npixels(img); k++) {
            assert_true(img->pixels[k] == 0.0f || img->pixels[k] == 1.0f);
            sum += img->pixels[k];
        }
        assert_true(sum == 36233.0); /* pydicom: pixel_array.sum() */
        assert_string_equal(img->modality, "SEG");
        assert_int_equal(img->has_geometry, 1);
        assert_vec(img->positions, (double[]){-235.2, -226.8, -128.69}, 3);
        assert_vec(img->orientations, (double[]){1, 0, 0, 0, 1, 0}, 6);
        assert_vec(img->pixel_spacing, (double[]){0.810547, 0.810547}, 2);
        dicom_image_free(img);
    }
}

/* Files that are refused, and why. */
static const struct {
    int pydicom;          /* 1: pydicom's test files, 0: our fixtures */
    const char *name;
    const char *want;
    int code;
} refused[] = {
    {1, "SC_rgb_jpeg_dcmtk.dcm", "colour images are not supported", DICOM_EFORMAT}, /* JPEG baseline */
    {1, "SC_rgb_jpeg_gdcm.dcm", "colour images are not supported", DICOM_EFORMAT},  /* JPEG lossless */
    {1, "SC_rgb_rle.dcm", "colour images are not supported", DICOM_EFORMAT},        /* RLE */
    {1, "SC_rgb_gdcm_KY.dcm", "colour images are not supported", DICOM_EFORMAT},    /* JPEG 2000 */
    {1, "ExplVR_BigEnd.dcm", "colour images are not supported", DICOM_EFORMAT},     /* native BE */
    {0, "palette_color.dcm", "colour images are not supported", DICOM_EFORMAT},
    {0, "modality_lut.dcm", "Modality LUT Sequence", DICOM_EFORMAT},
    {1, "test-SR.dcm", "no pixel data", DICOM_EFORMAT},
    {1, "test-SR.dcm", "SOP class 1.2.840.10008.5.1.4.1.1.88.33", DICOM_EFORMAT},
    {1, "rtplan.dcm", "no pixel data", DICOM_EFORMAT},
    {1, "waveform_ecg.dcm", "no pixel data", DICOM_EFORMAT},
    {1, "MR_truncated.dcm", "cannot read the DICOM file", DICOM_EIO},
    {1, "rtplan_truncated.dcm", "cannot read the DICOM file", DICOM_EIO},
    {1, "JPEG2000-embedded-sequence-delimiter.dcm", "JPEG 2000", DICOM_EFORMAT},
    {1, "badVR.dcm", "Number of Frames", DICOM_EFORMAT},
    {1, "README.txt", "cannot read the DICOM file", DICOM_EIO},
    {1, "no-such-file.dcm", "cannot read the DICOM file", DICOM_EIO},
};

static void test_unusable_files_are_refused_with_a_reason(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        expect_refused(refused[i].pydicom ? pydicom_dir() : fixture_dir(), refused[i].name,
                       refused[i].want, refused[i].code);
}

static void test_error_buffer_is_respected(void **state)
{
    (void)state;
    char path[1200], err[8];
    struct dicom_image *img = NULL;
    path_of(path, sizeof path, pydicom_dir(), "test-SR.dcm");
    memset(err, 'x', sizeof err);
    assert_int_equal(dicom_image_read(path, &img, err, sizeof err), DICOM_EFORMAT);
    assert_int_equal(strlen(err), sizeof err - 1);
    assert_int_equal(dicom_image_read(path, &img, NULL, 0), DICOM_EFORMAT);
    assert_null(img);
    dicom_image_free(NULL);
}

/* The source set decodes each file as dicom_image_read does (geometry from
 * the one reader: per-frame groups, Grid Frame Offset Vector, classic);
 * dropping the pixels keeps the rest. */
static void test_source_set_gives_the_images_of_its_files(void **state)
{
    (void)state;
    static const struct {
        int pydicom;
        const char *name;
    } files[] = {{1, "CT_small.dcm"}, {1, "rtdose.dcm"}, {0, "enhanced_ct_3frames.dcm"},
                 {1, "MR_small_jp2klossless.dcm"}};
    enum { N = sizeof files / sizeof *files };
    char paths[N][1200];
    const char *pp[N];
    for (size_t i = 0; i < N; i++) {
        path_of(paths[i], sizeof paths[i], files[i].pydicom ? pydicom_dir() : fixture_dir(),
                files[i].name);
        pp[i] = paths[i];
    }
    struct dicom_sources *set = NULL;
    char err[256] = "";
    int rc = dicom_sources_open(pp, N, &set, err, sizeof err);
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, DICOM_OK);
    assert_int_equal(dicom_sources_count(set), N);
    for (size_t i = 0; i < N; i++) {
        struct dicom_image *ref = load(files[i].pydicom ? pydicom_dir() : fixture_dir(),
                                       files[i].name);
        assert_same_image(dicom_sources_image(set, i), ref);
        dicom_image_free(ref);
    }
    dicom_sources_drop_pixels(set);
    const struct dicom_image *dose = dicom_sources_image(set, 1);
    assert_null(dose->pixels);
    assert_int_equal(dose->has_geometry, 1);
    assert_vec(dose->positions + 3 * 14, (double[]){189.43125, 199.43125, -761.87 + 70.0}, 3);
    assert_null(dicom_sources_image(set, N));
    dicom_sources_close(set);
}

static void test_source_set_names_the_instance_it_cannot_use(void **state)
{
    (void)state;
    static const struct {
        const char *second;
        const char *want;
        int code;
    } cases[] = {
        {"test-SR.dcm", "instance 2 (", DICOM_EFORMAT},
        {"test-SR.dcm", "no pixel data", DICOM_EFORMAT},
        {"no-such-file.dcm", "instance 2 (of 2): cannot read", DICOM_EIO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char a[1200], b[1200], err[256] = "";
        path_of(a, sizeof a, pydicom_dir(), "CT_small.dcm");
        path_of(b, sizeof b, pydicom_dir(), cases[i].second);
        const char *pp[] = {a, b};
        struct dicom_sources *set = (struct dicom_sources *)1;
        assert_int_equal(dicom_sources_open(pp, 2, &set, err, sizeof err), cases[i].code);
        assert_null(set);
        if (!strstr(err, cases[i].want))
            print_error("got '%s', want '%s'\n", err, cases[i].want);
        assert_non_null(strstr(err, cases[i].want));
        /* By its place, not its path: the reason is logged, and a stored
         * instance's path names its UIDs. */
        assert_null(strstr(err, cases[i].second));
    }
    struct dicom_sources *set = NULL;
    char err[64];
    assert_int_equal(dicom_sources_open(NULL, 0, &set, err, sizeof err), DICOM_EINVAL);
    assert_string_equal(dicom_strerror(DICOM_EINVAL), "invalid argument");
}

/* Several threads decode the same files at once and must agree with a serial run. */
static const char *const concurrent_files[] = {
    "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
    "JPGExtended.dcm",  "rtdose_rle.dcm",                 "image_dfl.dcm",
    "CT_small.dcm",     "MR_small_bigendian.dcm",
};
#define N_CONCURRENT (sizeof concurrent_files / sizeof *concurrent_files)

struct worker {
    struct dicom_image *ref[N_CONCURRENT];
    int offset;
    int failures;
};

static void *decode_worker(void *arg)
{
    struct worker *w = arg;
    for (int round = 0; round < 5; round++)
        for (size_t i = 0; i < N_CONCURRENT; i++) {
            size_t k = (i + (size_t)w->offset) % N_CONCURRENT;
            char path[1200], err[256];
            struct dicom_image *img = NULL;
            path_of(path, sizeof path, pydicom_dir(), concurrent_files[k]);
            if (dicom_image_read(path, &img, err, sizeof err) != 0) {
                w->failures++;
                continue;
            }
            if (npixels(img) != npixels(w->ref[k]) ||
                memcmp(img->pixels, w->ref[k]->pixels, npixels(img) * sizeof(float)))
                w->failures++;
            dicom_image_free(img);
        }
    return NULL;
}

static void test_concurrent_decoding_agrees_with_serial(void **state)
{
    (void)state;
    struct dicom_image *ref[N_CONCURRENT];
    for (size_t i = 0; i < N_CONCURRENT; i++)
        ref[i] = pyd(concurrent_files[i]);
    enum { THREADS = 6 };
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        memcpy(w[t].ref, ref, sizeof ref);
        w[t].offset = t;
        w[t].failures = 0;
        assert_int_equal(pthread_create(&th[t], NULL, decode_worker, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(w[t].failures, 0);
    }
    for (size_t i = 0; i < N_CONCURRENT; i++)
        dicom_image_free(ref[i]);
}

/* ---- Decoding as int16 ---- */

/* Opens the one file DIR/NAME as a set, headers only. */
static struct dicom_sources *parse_one(const char *dir, const char *name)
{
    char path[1200], err[256] = "";
    path_of(path, sizeof path, dir, name);
    const char *paths[] = {path};
    struct dicom_sources *set = NULL;
    if (dicom_sources_parse(paths, 1, 0, &set, err, sizeof err) != 0)
        fail_msg("%s: %s", path, err);
    return set;
}

static size_t values_of(const struct dicom_sources *set)
{
    const struct dicom_image *img = dicom_sources_image(set, 0);
    return (size_t)img->rows * img->cols * img->frames;
}

/* Integer values (CT in HU, MR) decode to int16 exactly as to float, from
 * every codec and with per-frame rescales. */
static void test_int16_decoding_gives_the_float_values(void **state)
{
    (void)state;
    static const struct {
        int fixture;
        const char *name;
    } files[] = {
        {0, "CT_small.dcm"},        {0, "MR_small_RLE.dcm"},
        {0, "MR_small_jpeg_ls_lossless.dcm"}, {0, "MR_small_jp2klossless.dcm"},
        {0, "MR_small_bigendian.dcm"}, {0, "693_J2KI.dcm"},
        {1, "enhanced_ct_3frames.dcm"}, {1, "signed_12bit.dcm"},
        {1, "MR_small_jpeg_lossless.dcm"},
    };
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        const char *dir = files[f].fixture ? fixture_dir() : pydicom_dir();
        struct dicom_sources *a = parse_one(dir, files[f].name), *b = parse_one(dir, files[f].name);
        size_t n = values_of(a);
        float *wide = malloc(n * sizeof *wide);
        int16_t *narrow = malloc(n * sizeof *narrow);
        char err[256] = "";
        assert_non_null(wide);
        assert_non_null(narrow);
        assert_int_equal(dicom_sources_decode_into(a, 0, wide, n, err, sizeof err), 0);
        if (dicom_sources_decode_into_int16(b, 0, narrow, n, err, sizeof err) != 0)
            fail_msg("%s: %s", files[f].name, err);
        for (size_t i = 0; i < n; i++)
            if ((float)narrow[i] != wide[i])
                fail_msg("%s: value %zu is %d as int16 and %g as float", files[f].name, i,
                         narrow[i], (double)wide[i]);
        free(wide);
        free(narrow);
        dicom_sources_close(a);
        dicom_sources_close(b);
    }
}

/* Values that are not integers, or beyond int16, are refused as int16
 * with the reason, and the file can still be decoded as float. */
static void test_values_that_int16_cannot_hold_are_refused_and_left_for_floats(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        float want[6];
    } files[] = {
        {"ct_slope_half.dcm", {-1024.0f, -1023.5f, -1023.0f, -1022.5f, 0.0f, 1023.5f}},
        {"ct_beyond_int16.dcm", {-1024.0f, 0.0f, 976.0f, 32767.0f, 32768.0f, 64511.0f}},
    };
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        struct dicom_sources *set = parse_one(fixture_dir(), files[f].name);
        int16_t narrow[6];
        float wide[6];
        char err[256] = "";
        assert_int_equal(values_of(set), 6);
        assert_int_equal(dicom_sources_decode_into_int16(set, 0, narrow, 6, err, sizeof err),
                         DICOM_ERANGE);
        assert_non_null(strstr(err, "instance 1 (of 1): its values after the Modality LUT are "
                                    "not all integers within -32768..32767"));
        assert_int_equal(dicom_sources_decode_into(set, 0, wide, 6, err, sizeof err), 0);
        for (int i = 0; i < 6; i++)
            assert_float_equal(wide[i], files[f].want[i], 0);
        dicom_sources_close(set);
    }
    assert_string_equal(dicom_strerror(DICOM_ERANGE), "pixel values out of the narrow type's range");
}

int main(void)
{
    char err[256];
    if (dicom_init(err, sizeof err) != 0) { /* quiets DCMTK's own log lines */
        fprintf(stderr, "dicom_init: %s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mr_small_lossless_encodings_decode_to_identical_values),
        cmocka_unit_test(test_ct_gives_hounsfield_units),
        cmocka_unit_test(test_deflated_image_decodes),
        cmocka_unit_test(test_jpeg_baseline_grey_is_close_to_its_source),
        cmocka_unit_test(test_jpeg_extended_12bit_decodes),
        cmocka_unit_test(test_jpeg2000_lossy_matches_the_jpeg_lossy_copy),
        cmocka_unit_test(test_jpeg2000_multiframe_fragments_are_split_into_frames),
        cmocka_unit_test(test_jpeg2000_unsigned_codestream_follows_pixel_representation),
        cmocka_unit_test(test_rle_multiframe_rt_dose),
        cmocka_unit_test(test_enhanced_ct_per_frame_geometry_and_rescale),
        cmocka_unit_test(test_signed_values_below_bits_allocated_are_sign_extended),
        cmocka_unit_test(test_one_bit_segmentation_decodes),
        cmocka_unit_test(test_unusable_files_are_refused_with_a_reason),
        cmocka_unit_test(test_source_set_gives_the_images_of_its_files),
        cmocka_unit_test(test_source_set_names_the_instance_it_cannot_use),
        cmocka_unit_test(test_error_buffer_is_respected),
        cmocka_unit_test(test_concurrent_decoding_agrees_with_serial),
        cmocka_unit_test(test_int16_decoding_gives_the_float_values),
        cmocka_unit_test(test_values_that_int16_cannot_hold_are_refused_and_left_for_floats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
