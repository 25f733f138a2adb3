/*
 * dicom_write_seg: the SEG is checked by two independent readers, dicom3tools'
 * dciodvfy (IOD conformance) and tests/tools/verify_seg.py (pydicom: every
 * frame against the label volume and the geometry of its source slice).
 * Sources are a synthetic CT series made by tests/tools/gen_series.py, given
 * in shuffled order, the Enhanced CT fixture in AINODE_TEST_DATA/image, and
 * pydicom's RT Dose (a classic multi-frame placed by its Grid Frame Offset
 * Vector). Every SEG written is checked by dciodvfy; a missing dciodvfy fails.
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
#include <unistd.h>

#include <cmocka.h>

#include "dicom/image.h"
#include "dicom/results.h"

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
    struct dicom_sources *set; /* the series, file i = series[i] */
    char seg_path[128];
    char labels_path[128];
};

/* The source set of N PATHS; fails the test when it cannot be opened. */
static struct dicom_sources *open_set(const char *const *paths, size_t n)
{
    struct dicom_sources *set = NULL;
    char err[512] = "";
    int rc = dicom_sources_open(paths, n, &set, err, sizeof err);
    if (rc != DICOM_OK)
        print_error("dicom_sources_open: %s\n", err);
    assert_int_equal(rc, DICOM_OK);
    return set;
}

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
    const char *pp[NZ];
    for (int z = 0; z < NZ; z++)
        pp[z] = f->series[z];
    char err[512];
    if (dicom_sources_open(pp, NZ, &f->set, err, sizeof err) != DICOM_OK) {
        print_error("%s\n", err);
        return -1;
    }
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
    dicom_sources_close(f->set);
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
    const char *paths[NZ]; /* of each slice's source, for verify_seg.py */
    int files[NZ];
    int frames[NZ];
    uint8_t labels[NZ * NY * NX];
    struct dicom_result r;
};

static void init_result(struct dicom_result *r, const struct dicom_sources *set,
                        const int *files, const int *frames, int nx, int ny, int nz,
                        const uint8_t *labels, size_t n_segments)
{
    memset(r, 0, sizeof *r);
    r->sources = set;
    r->source_files = files;
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
        j->files[k] = PERM[k];
        j->frames[k] = 0;
        for (int y = 0; y < NY; y++)
            for (int x = 0; x < NX; x++)
                j->labels[(k * NY + y) * NX + x] = spatial_label(PERM[k], y, x);
    }
    init_result(&j->r, f->set, j->files, j->frames, NX, NY, NZ, j->labels, n_segments);
}

static void write_labels(const char *path, const uint8_t *labels, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(labels, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* dciodvfy must run and report no error; its warnings are shown. A missing
 * dciodvfy fails: the SEG would go unchecked. */
static void assert_dciodvfy_clean(const char *path)
{
    char cmd[512], *out = NULL;
    snprintf(cmd, sizeof cmd, "dciodvfy '%s'", path);
    int rc = run(cmd, &out);
    if (rc != 0 && rc != 1)
        print_error("dciodvfy did not run (exit %d): %s\n", rc, out);
    assert_true(rc == 0 || rc == 1);
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
    assert_int_equal(rc, 0);
}

/* Writes the SEG of R to PATH and checks it with dciodvfy. */
static void write_seg(const struct dicom_result *r, const char *path, struct dicom_written *w)
{
    char err[256] = "";
    int rc = dicom_write_seg(r, path, w, err, sizeof err);
    if (rc != 0)
        print_error("dicom_write_seg: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
    assert_string_equal(w->sop_class_uid, "1.2.840.10008.5.1.4.1.1.66.4");
    assert_string_equal(w->transfer_syntax, "1.2.840.10008.1.2.1");
    assert_dciodvfy_clean(path);
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

/* The shuffled series with 2 and with 3 segments (segment 3 labels no voxel
 * and keeps one empty frame): valid, and every frame on its source slice. */
static void seg_of_shuffled_series_is_valid_and_matches_the_labels(void **state)
{
    struct fixture *f = *state;
    static const size_t n_segments[] = {2, 3};
    for (size_t i = 0; i < sizeof n_segments / sizeof *n_segments; i++) {
        struct job j;
        struct dicom_written w;
        shuffled_job(f, &j, n_segments[i]);
        write_seg(&j.r, f->seg_path, &w);
        assert_verified(f->seg_path, f->labels_path, j.labels, NX, NY, NZ, j.paths, NULL);
    }
}

static void each_seg_gets_new_sop_and_series_uids(void **state)
{
    struct fixture *f = *state;
    struct job j;
    struct dicom_written a, b;
    shuffled_job(f, &j, 2);
    write_seg(&j.r, f->seg_path, &a);
    write_seg(&j.r, f->seg_path, &b);
    assert_true(strncmp(a.sop_instance_uid, "2.25.", 5) == 0);
    assert_true(strncmp(a.series_uid, "2.25.", 5) == 0);
    assert_string_not_equal(a.sop_instance_uid, a.series_uid);
    assert_string_not_equal(a.sop_instance_uid, b.sop_instance_uid);
    assert_string_not_equal(a.series_uid, b.series_uid);
}

static void enhanced_multiframe_source_is_referenced_by_frame(void **state)
{
    struct fixture *f = *state;
    char path[1024];
    snprintf(path, sizeof path, "%s/image/enhanced_ct_3frames.dcm", data_dir());
    const char *paths[3] = {path, path, path};
    const int files[3] = {0, 0, 0};
    const int frames[3] = {0, 1, 2};
    enum { ENX = 5, ENY = 4, ENZ = 3 };
    uint8_t labels[ENZ * ENY * ENX] = {0};
    labels[0 * ENY * ENX + 1 * ENX + 1] = 1; /* frame 1: one voxel of 1 */
    labels[1 * ENY * ENX + 2 * ENX + 3] = 2; /* frame 2: one of 2 and one of 1 */
    labels[1 * ENY * ENX + 0 * ENX + 0] = 1;
    /* frame 3: nothing */
    struct dicom_sources *set = open_set(paths, 1);
    struct dicom_result r;
    struct dicom_written w;
    init_result(&r, set, files, frames, ENX, ENY, ENZ, labels, 2);
    write_seg(&r, f->seg_path, &w);
    assert_verified(f->seg_path, f->labels_path, labels, ENX, ENY, ENZ, paths, frames);
    dicom_sources_close(set);
}

/* RT Dose: 15 frames with no per-frame groups, placed by the Grid Frame
 * Offset Vector. The SEG's frames must lie where the decoder put them (the
 * same geometry reader), 5 mm apart along z. */
static void classic_multiframe_source_is_placed_by_grid_frame_offsets(void **state)
{
    struct fixture *f = *state;
    const char *pyd = getenv("AINODE_PYDICOM_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/rtdose.dcm",
             pyd && *pyd ? pyd : "/usr/lib/python3/dist-packages/pydicom/data/test_files");
    const char *pp[1] = {path};
    struct dicom_sources *set = open_set(pp, 1);
    enum { DX = 10, DY = 10, DZ = 15 };
    int files[DZ], frames[DZ];
    uint8_t labels[DZ * DY * DX] = {0};
    for (int k = 0; k < DZ; k++) {
        files[k] = 0;
        frames[k] = DZ - 1 - k; /* any order */
        labels[k * DY * DX + (k % DY) * DX + 2] = 1;
    }
    struct dicom_result r;
    struct dicom_written w;
    init_result(&r, set, files, frames, DX, DY, DZ, labels, 1);
    write_seg(&r, f->seg_path, &w);
    dicom_sources_close(set);

    /* Frame by frame: its source frame number and its position. */
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys, pydicom\n"
             "seg = pydicom.dcmread(sys.argv[1])\n"
             "for it in seg.PerFrameFunctionalGroupsSequence:\n"
             "    n = int(it.DerivationImageSequence[0].SourceImageSequence[0]"
             ".ReferencedFrameNumber)\n"
             "    z = float(it.PlanePositionSequence[0].ImagePositionPatient[2])\n"
             "    assert abs(z - (-761.87 + 5 * (n - 1))) < 1e-3, (n, z)\n"
             "print(len(seg.PerFrameFunctionalGroupsSequence))' '%s'",
             f->seg_path);
    int rc = run(cmd, &out);
    if (rc != 0)
        print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_int_equal(atoi(out), DZ);
    free(out);
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
    const char *pp[NZ];
    for (int z = 0; z < NZ; z++) {
        snprintf(paths[z], sizeof paths[z], "%s/IM%05d.dcm", dir, z + 1);
        pp[z] = paths[z];
    }
    struct dicom_sources *set = open_set(pp, NZ);
    struct job j;
    struct dicom_written w;
    shuffled_job(f, &j, 2);
    j.r.sources = set;
    for (int k = 0; k < NZ; k++)
        j.paths[k] = paths[PERM[k]];
    write_seg(&j.r, f->seg_path, &w);
    assert_verified(f->seg_path, f->labels_path, j.labels, NX, NY, NZ, j.paths, NULL);
    dicom_sources_close(set);
}

/* What is changed in a valid job, and the reason the writer must give. */
enum change {
    EMPTY_VOLUME,
    DUPLICATE_SEGMENT,
    SEGMENT_ZERO,
    SEGMENT_256,
    SEGMENT_GAP,
    NO_LABELS,
    NO_SEGMENT_LABEL,
    BACKSLASH_IN_LABEL,
    SMALLER_LABELS,
    FILE_OUT_OF_SET,
    SAME_SOURCE_FRAME,
    FRAME_OUT_OF_SOURCE,
    NO_SOURCES,
};

static const struct {
    enum change change;
    const char *want;
} refusals[] = {
    {EMPTY_VOLUME, "empty label volume"},
    {DUPLICATE_SEGMENT, "segment number 1 used twice"},
    {SEGMENT_ZERO, "segment number 0 outside 1..255"},
    {SEGMENT_256, "segment number 256 outside 1..255"},
    {SEGMENT_GAP, "without gaps"},
    {NO_LABELS, "no label volume"},
    {NO_SEGMENT_LABEL, "segment 2 label is missing"},
    {BACKSLASH_IN_LABEL, "segment 2 label contains"},
    {SMALLER_LABELS, "pixels"},
    {FILE_OUT_OF_SET, "no source image for slice 2"},
    {SAME_SOURCE_FRAME, "already used"},
    {FRAME_OUT_OF_SOURCE, "refers to frame 2 of a source with 1 frames"},
    {NO_SOURCES, "no source images"},
};

/* dicom_write_seg must fail with a one-line reason containing WANT, no
 * patient data, nothing in OUT and no file. */
static void refusals_give_a_reason_and_no_file(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i < sizeof refusals / sizeof *refusals; i++) {
        struct job j;
        struct dicom_segment segs[2] = {SEGMENTS[0], SEGMENTS[1]};
        shuffled_job(f, &j, 2);
        j.r.segments = segs;
        switch (refusals[i].change) {
        case EMPTY_VOLUME: j.r.nz = 0; break;
        case DUPLICATE_SEGMENT: segs[1] = segs[0]; break;
        case SEGMENT_ZERO: segs[1].number = 0; break;
        case SEGMENT_256: segs[1].number = 256; break;
        case SEGMENT_GAP: segs[1].number = 3; break;
        case NO_LABELS: j.r.labels = NULL; break;
        case NO_SEGMENT_LABEL: segs[1].label = NULL; break;
        case BACKSLASH_IN_LABEL: segs[1].label = "a\\b"; break;
        case SMALLER_LABELS: j.r.nx = NX - 1; break; /* same buffer, read as smaller */
        case FILE_OUT_OF_SET: j.files[2] = NZ; break;
        case SAME_SOURCE_FRAME: j.files[4] = j.files[1]; break;
        case FRAME_OUT_OF_SOURCE: j.frames[3] = 1; break;
        case NO_SOURCES: j.r.sources = NULL; break;
        }
        char err[256] = "";
        struct dicom_written w;
        memset(&w, 'x', sizeof w);
        unlink(f->seg_path);
        assert_int_equal(dicom_write_seg(&j.r, f->seg_path, &w, err, sizeof err), DICOM_EINVAL);
        if (!strstr(err, refusals[i].want))
            print_error("got '%s', want '%s'\n", err, refusals[i].want);
        assert_non_null(strstr(err, refusals[i].want));
        assert_null(strchr(err, '\n'));
        assert_null(strstr(err, "TEST0001"));
        assert_null(strstr(err, "Phantom"));
        assert_string_equal(w.sop_instance_uid, "");
        assert_string_equal(w.series_uid, "");
        assert_int_not_equal(access(f->seg_path, F_OK), 0);
    }
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
    static int files[BZ];
    for (int k = 0; k < BZ; k++)
        files[k] = k;
    struct dicom_sources *set = open_set(pp, BZ);
    dicom_sources_drop_pixels(set); /* as a job does before writing */
    init_result(&r, set, files, NULL, BX, BY, BZ, labels, 2);
    char seg_path[128], err[256] = "";
    struct dicom_written w;
    snprintf(seg_path, sizeof seg_path, "%s/seg.dcm", dir);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = dicom_write_seg(&r, seg_path, &w, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != 0)
        print_error("dicom_write_seg: %s\n", err);
    assert_int_equal(rc, 0);
    assert_dciodvfy_clean(seg_path);
    dicom_sources_close(set);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("400 x 512x512, 2 segments (600 frames): %.3f s\n", s);
    free(labels);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run(cmd, &out);
    free(out);
    /* Generous for sanitizer builds; an optimised build takes far less. */
    assert_true(s < 10.0);
}

/* Segmented 2-D images (r.images) from two series, without Frame of
 * Reference, position, orientation or pixel spacing: a valid SEG with no
 * FoR and no plane groups, each frame derived from its own image, and the
 * Common Instance Reference listing each series with its own instances. */
static void images_of_two_series_without_geometry_are_referenced_by_series(void **state)
{
    struct fixture *f = *state;
    enum { N = 4 };
    char cmd[4096], *out = NULL, script[256], paths[N][256];
    snprintf(script, sizeof script, "%s/flat.py", f->dir);
    FILE *fp = fopen(script, "w");
    assert_non_null(fp);
    /* argv: output folder, then the sources; files 3 and 4 go to a second series */
    fputs("import sys\n"
          "import pydicom\n"
          "from pydicom.uid import generate_uid\n"
          "series = [generate_uid(), generate_uid()]\n"
          "for i, p in enumerate(sys.argv[2:]):\n"
          "    ds = pydicom.dcmread(p)\n"
          "    for k in ('FrameOfReferenceUID', 'PositionReferenceIndicator',\n"
          "              'ImagePositionPatient', 'ImageOrientationPatient', 'PixelSpacing',\n"
          "              'SliceThickness', 'SliceLocation'):\n"
          "        if k in ds:\n"
          "            delattr(ds, k)\n"
          "    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "
          "'1.2.840.10008.5.1.4.1.1.7'\n"
          "    ds.SeriesInstanceUID = series[i // 2]\n"
          "    ds.save_as('%s/flat%d.dcm' % (sys.argv[1], i))\n",
          fp);
    assert_int_equal(fclose(fp), 0);
    int n = snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", script, f->dir);
    for (int i = 0; i < N; i++) {
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", f->series[i]);
        snprintf(paths[i], sizeof paths[i], "%s/flat%d.dcm", f->dir, i);
    }
    int rc = run(cmd, &out);
    if (rc != 0)
        print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);

    const char *pp[N] = {paths[0], paths[1], paths[2], paths[3]};
    struct dicom_sources *set = open_set(pp, N);
    /* image k is file N - 1 - k: frames follow the labels, not the files */
    const int files[N] = {3, 2, 1, 0}, frames[N] = {0};
    static uint8_t labels[N * NY * NX];
    memset(labels, 0, sizeof labels);
    for (int k = 0; k < N; k++)
        labels[(k * NY + k + 1) * NX + 2 * k + 1] = (uint8_t)(1 + k % 2);
    struct dicom_result r;
    struct dicom_written w;
    init_result(&r, set, files, frames, NX, NY, N, labels, 2);
    /* Without r.images the missing geometry is refused. */
    char err[256] = "";
    assert_int_not_equal(dicom_write_seg(&r, f->seg_path, &w, err, sizeof err), 0);
    assert_non_null(strstr(err, "lacks position, orientation or pixel spacing"));
    r.images = 1;
    write_seg(&r, f->seg_path, &w);

    snprintf(script, sizeof script, "%s/check.py", f->dir);
    fp = fopen(script, "w");
    assert_non_null(fp);
    /* argv: the SEG, then the sources in label order */
    fputs("import sys\n"
          "import numpy as np\n"
          "import pydicom\n"
          "seg = pydicom.dcmread(sys.argv[1])\n"
          "src = [pydicom.dcmread(p) for p in sys.argv[2:]]\n"
          "assert 'FrameOfReferenceUID' not in seg\n"
          "assert 'PatientOrientation' in seg\n"
          "assert len(seg.DimensionIndexSequence) == 1\n"
          "shared = seg.SharedFunctionalGroupsSequence[0]\n"
          "assert 'PlaneOrientationSequence' not in shared\n"
          "assert 'PixelMeasuresSequence' not in shared\n"
          "want = {}\n"
          "for ds in src:\n"
          "    want.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))\n"
          "assert len(want) == 2, want\n"
          "got = {str(s.SeriesInstanceUID): {str(i.ReferencedSOPInstanceUID)\n"
          "       for i in s.ReferencedInstanceSequence} for s in seg.ReferencedSeriesSequence}\n"
          "assert got == want, (got, want)\n"
          "px = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)\n"
          "hits = 0\n"
          "for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):\n"
          "    assert 'PlanePositionSequence' not in fg\n"
          "    ref = fg.DerivationImageSequence[0].SourceImageSequence[0]\n"
          "    assert 'ReferencedFrameNumber' not in ref\n"
          "    k = [str(d.SOPInstanceUID) for d in src].index(str(ref.ReferencedSOPInstanceUID))\n"
          "    seg_no = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber\n"
          "    ys, xs = np.nonzero(px[i])\n"
          "    if seg_no == 1 + k % 2:\n"
          "        assert list(zip(ys, xs)) == [(k + 1, 2 * k + 1)], (i, k, ys, xs)\n"
          "        hits += 1\n"
          "    else:\n"
          "        assert len(ys) == 0\n"
          "assert hits == 4, hits\n",
          fp);
    assert_int_equal(fclose(fp), 0);
    n = snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", script, f->seg_path);
    for (int k = 0; k < N; k++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", pp[files[k]]);
    rc = run(cmd, &out);
    if (rc != 0)
        print_error("check.py: %s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    dicom_sources_close(set);
}

int main(void)
{
    char err[256];
    if (dicom_init(err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seg_of_shuffled_series_is_valid_and_matches_the_labels),
        cmocka_unit_test(each_seg_gets_new_sop_and_series_uids),
        cmocka_unit_test(enhanced_multiframe_source_is_referenced_by_frame),
        cmocka_unit_test(images_of_two_series_without_geometry_are_referenced_by_series),
        cmocka_unit_test(classic_multiframe_source_is_placed_by_grid_frame_offsets),
        cmocka_unit_test(per_slice_geometry_goes_into_per_frame_groups),
        cmocka_unit_test(refusals_give_a_reason_and_no_file),
        cmocka_unit_test(writes_400_slices_of_512x512_quickly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
