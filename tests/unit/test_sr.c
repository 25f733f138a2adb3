/*
 * dicom_write_sr: the TID 1500 measurement report for a small synthetic CT
 * series (tests/tools/gen_series.py, pixel spacing changed to 0.8 mm
 * between rows and 0.5 mm between columns so that a swap shows) must pass
 * dciodvfy without errors and hold what tests/tools/verify_sr.py expects,
 * which computes each segment's planar region on its own from the labels;
 * so must a report on the Enhanced CT fixture (tests/data/image), whose
 * outline names its frame. Bad input is refused with a reason. A missing
 * dciodvfy fails the test.
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
static char labels_path[600];     /* LABELS as a raw file, for verify_sr.py */
static char slice_args[SLICES * 640]; /* the source files in slice order, quoted */

#define MODEL_SHA256 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define MANIFEST_SHA256 "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
#define INTENDED_USE "Research only: bone and body outlines on adult chest CT."

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

/* Sets label VALUE on slice K, rows R0..R1, columns C0..C1 (inclusive). */
static void fill(int k, int r0, int r1, int c0, int c1, uint8_t value)
{
    for (int r = r0; r <= r1; r++)
        for (int c = c0; c <= c1; c++)
            labels[(k * ROWS + r) * COLS + c] = value;
}

/* Label volume whose planar regions have something to get wrong:
 * Body (2) is largest on slice 3, where its biggest piece has a hole and
 * a second, smaller piece lies beside it; Bone (1) has equally many
 * voxels on slices 2 and 4 (the lower slice wins), and its biggest piece
 * on slice 2 is two squares touching only at a corner (one 8-connected
 * piece), with a smaller piece apart. */
static void make_labels(void)
{
    memset(labels, 0, sizeof labels);
    fill(1, 2, 21, 2, 11, 2);  /* 200 */
    fill(2, 2, 12, 2, 11, 2);  /* 110, less what Bone takes */
    fill(3, 2, 21, 2, 13, 2);  /* 240 */
    fill(3, 8, 10, 6, 8, 0);   /* a hole: 231 */
    fill(3, 2, 4, 16, 18, 2);  /* a second piece: 240 in all */
    fill(4, 2, 11, 2, 11, 2);  /* 100, less what Bone takes */
    fill(2, 3, 5, 3, 5, 1);    /* square */
    fill(2, 6, 8, 6, 8, 1);    /* square at its corner */
    fill(2, 15, 16, 15, 16, 1); /* 22 in all */
    fill(4, 20, 21, 5, 15, 1); /* 22: a tie with slice 2 */
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
    /* Pixels 0.8 mm high and 0.5 mm wide: a swap of rows and columns shows. */
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import glob, pydicom, sys\n"
             "for p in glob.glob(sys.argv[1] + \"/*.dcm\"):\n"
             "    ds = pydicom.dcmread(p); ds.PixelSpacing = [\"0.8\", \"0.5\"]; ds.save_as(p)' "
             "'%s'",
             source_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot set the pixel spacing\n");
        return -1;
    }
    char *at = slice_args;
    for (int k = 0; k < SLICES; k++)
        at += snprintf(at, sizeof slice_args - (size_t)(at - slice_args), " '%s'",
                       source_paths[k]);
    char why[512];
    if (dicom_sources_open((const char *const *)source_paths, SLICES, &sources, why,
                           sizeof why) != DICOM_OK) {
        fprintf(stderr, "dicom_sources_open: %s\n", why);
        return -1;
    }
    make_labels();
    snprintf(labels_path, sizeof labels_path, "%s/labels.raw", tmpdir);
    FILE *f = fopen(labels_path, "wb");
    if (!f || fwrite(labels, 1, sizeof labels, f) != sizeof labels || fclose(f) != 0)
        return -1;
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
 * arguments (after the SR, SEG and series UIDs); verify_sr.py also gets
 * the labels and the source files in slice order, and checks each
 * segment's planar group (or its absence) against them. */
static void test_reports_pass_dciodvfy_and_hold_the_measurements(void **state)
{
    (void)state;
    static char long_name[101];
    memset(long_name, 'a', 100);
    struct dicom_segment third = segments[0], utf8 = segments[0];
    third.volume_ml = 1.0 / 3.0; /* more than DS's 16 characters: kept exactly */
    utf8.label = "Kn\xc3\xb6" "chel"; /* source ISO_IR 100: the report becomes UTF-8 */
    /* A segment no voxel has: no planar group, its volume group says 0. */
    const struct dicom_segment with_empty[] = {
        segments[0], segments[1],
        {3, "Metal", {"260787004", "SCT", "Physical object"}, {"86049000", "SCT", "Metal"},
         {200, 200, 200}, 0, 0.0},
    };
    char args_all[2048], args_utf8[2048], args_trust[2048];
    snprintf(args_all, sizeof args_all,
             "1:Bone:272673000=12.5 2:Body:38266002=345.25 --source-dir '%s' --seg-series %s "
             "--algorithm ct-bone-body --algorithm-version 1.0.0 --series-number 2",
             source_dir, seg.series_uid);
    /* a name longer than an LO attribute holds is cut there, not refused */
    snprintf(args_utf8, sizeof args_utf8,
             "'1:Kn\xc3\xb6" "chel:272673000=12.5' --source-dir '%s' --algorithm %s",
             source_dir, long_name);
    snprintf(args_trust, sizeof args_trust,
             "1:Bone:272673000=12.5 2:Body:38266002=345.25 --algorithm ct-bone-body "
             "--model-sha256 %s --manifest-sha256 %s --intended-use '%s'",
             MODEL_SHA256, MANIFEST_SHA256, INTENDED_USE);
    const struct {
        const char *name;
        const struct dicom_segment *segments; /* NULL: both segments */
        size_t n_segments;
        const char *algorithm;               /* NULL: the default */
        int trust;                           /* with the model's digests and intended use */
        const char *args;
    } reports[] = {
        {"sr.dcm", NULL, 0, NULL, 0, args_all},
        {"third.dcm", &third, 1, NULL, 0, "1:Bone:272673000=0.333333333333333"},
        {"utf8.dcm", &utf8, 1, long_name, 0, args_utf8},
        {"empty.dcm", with_empty, 3, NULL, 0,
         "1:Bone:272673000=12.5 2:Body:38266002=345.25 3:Metal:86049000=0"},
        {"trust.dcm", NULL, 0, NULL, 1, args_trust},
    };
    for (size_t i = 0; i < sizeof reports / sizeof *reports; i++) {
        struct dicom_result r = make_result();
        if (reports[i].segments) {
            r.segments = reports[i].segments;
            r.n_segments = reports[i].n_segments;
        }
        if (reports[i].algorithm)
            r.algorithm_name = reports[i].algorithm;
        if (reports[i].trust) {
            r.model_sha256 = MODEL_SHA256;
            r.manifest_sha256 = MANIFEST_SHA256;
            r.intended_use = INTENDED_USE;
        }
        char path[1024], cmd[8192];
        struct dicom_written w;
        write_sr(&r, reports[i].name, path, sizeof path, &w);
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 '%s/tests/tools/verify_sr.py' '%s' %s %s %s "
                 "--labels '%s' %d %d %d --slices%s 2>&1",
                 repo_dir(), path, seg.sop_instance_uid, source_series, reports[i].args,
                 labels_path, COLS, ROWS, SLICES, slice_args);
        assert_int_equal(run(cmd, NULL), 0);
    }
}

/* Without the model's digests and intended use, a report names none. */
static void test_a_report_without_digests_records_none(void **state)
{
    (void)state;
    struct dicom_result r = make_result();
    char path[1024], cmd[8192];
    struct dicom_written w;
    write_sr(&r, "plain.dcm", path, sizeof path, &w);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/tools/verify_sr.py' '%s' %s %s "
             "1:Bone:272673000=12.5 2:Body:38266002=345.25 --no-trust 2>&1",
             repo_dir(), path, seg.sop_instance_uid, source_series);
    assert_int_equal(run(cmd, NULL), 0);
}

/* An Enhanced CT source (tests/data/image, 3 frames of 4 x 5 pixels, 0.5 mm
 * between rows, 0.75 mm between columns), its frames given out of order:
 * the outline is drawn on the frame of the largest cross-section, named
 * by its frame number. */
static void test_a_multiframe_source_is_outlined_on_its_frame(void **state)
{
    (void)state;
    enum { ENX = 5, ENY = 4, ENZ = 3 };
    char source[1100];
    snprintf(source, sizeof source, "%s/tests/data/image/enhanced_ct_3frames.dcm", repo_dir());
    const char *paths[1] = {source};
    struct dicom_sources *set = NULL;
    char why[512];
    assert_int_equal(dicom_sources_open(paths, 1, &set, why, sizeof why), DICOM_OK);
    const int files[ENZ] = {0, 0, 0};
    const int frames[ENZ] = {2, 0, 1};
    uint8_t volume[ENZ * ENY * ENX] = {0};
    volume[0 * ENY * ENX + 0 * ENX + 0] = 1; /* slice 0 (frame 3): one voxel */
    volume[1 * ENY * ENX + 3 * ENX + 0] = 1; /* slice 1 (frame 1): two */
    volume[1 * ENY * ENX + 3 * ENX + 1] = 1;
    for (int r = 1; r <= 2; r++) /* slice 2 (frame 2): rows 1-2, columns 1-3 */
        for (int c = 1; c <= 3; c++)
            volume[2 * ENY * ENX + r * ENX + c] = 1;
    struct dicom_result r = make_result();
    r.sources = set;
    r.source_files = files;
    r.source_frames = frames;
    r.nx = ENX;
    r.ny = ENY;
    r.nz = ENZ;
    r.labels = volume;
    r.n_segments = 1;
    char path[1024], cmd[8192];
    struct dicom_written w;
    write_sr(&r, "multiframe.dcm", path, sizeof path, &w);
    dicom_sources_close(set);
    /* Frame 2; a 3 x 2 pixel block: 6 x 0.375 mm2, diagonal of 2.25 by 1 mm. */
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import math, sys, pydicom\n"
             "sr, src = pydicom.dcmread(sys.argv[1]), pydicom.dcmread(sys.argv[2])\n"
             "groups = sr.ContentSequence[-1].ContentSequence\n"
             "planar = [g for g in groups if any(i.ValueType == \"SCOORD\" "
             "for i in g.ContentSequence)]\n"
             "assert len(planar) == 1, len(planar)\n"
             "items = planar[0].ContentSequence\n"
             "region = [i for i in items if i.ValueType == \"SCOORD\"][0]\n"
             "assert [float(v) for v in region.GraphicData] == "
             "[1, 1, 4, 1, 4, 3, 1, 3, 1, 1], region.GraphicData\n"
             "ref = region.ContentSequence[0].ReferencedSOPSequence[0]\n"
             "assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID\n"
             "assert int(ref.ReferencedFrameNumber) == 2, ref.ReferencedFrameNumber\n"
             "nums = {i.ConceptNameCodeSequence[0].CodeValue: i.MeasuredValueSequence[0] "
             "for i in items if i.ValueType == \"NUM\"}\n"
             "v = lambda m: float(m.get(\"FloatingPointValue\", m.NumericValue))\n"
             "assert math.isclose(v(nums[\"42798000\"]), 2.25), nums\n"
             "assert math.isclose(v(nums[\"103339001\"]), math.hypot(2.25, 1)), nums\n"
             "print(\"multiframe outline OK\")' '%s' '%s' 2>&1",
             path, source);
    assert_int_equal(run(cmd, NULL), 0);
}

static void expect_refused(const struct dicom_result *r, const struct dicom_written *s,
                           const char *want);

/* The result of an image model on the series: no labels, no segments. */
static struct dicom_result image_result(void)
{
    struct dicom_result r = make_result();
    r.labels = NULL;
    r.segments = NULL;
    r.n_segments = 0;
    return r;
}

static const struct dicom_value values[] = {
    {"Cardiothoracic ratio", {"CTR", "99TEST", "Cardiothoracic ratio"},
     {"1", "UCUM", "no units"}, 1.0 / 3.0},
    {"Bone age", {"443849008", "SCT", "Bone age"}, {"a", "UCUM", "year"}, 12.25},
};

/* A regression: one TID 1501 group per value, the value a NUM of its
 * concept in its UCUM unit (1/3 kept exactly beside its DS text), with
 * the model's name, version and digests. */
static void test_regression_values_are_measurements_in_their_units(void **state)
{
    (void)state;
    struct dicom_result r = image_result();
    r.values = values;
    r.n_values = 2;
    r.model_sha256 = MODEL_SHA256;
    r.manifest_sha256 = MANIFEST_SHA256;
    char path[1024], cmd[8192];
    struct dicom_written w;
    write_sr(&r, "values.dcm", path, sizeof path, &w);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys, pydicom\n"
             "sr = pydicom.dcmread(sys.argv[1])\n"
             "groups = sr.ContentSequence[-1].ContentSequence\n"
             "assert len(groups) == 2, len(groups)\n"
             "want = [(\"Cardiothoracic ratio\", \"CTR\", \"1\", \"no units\", 1 / 3),\n"
             "        (\"Bone age\", \"443849008\", \"a\", \"year\", 12.25)]\n"
             "for g, (name, code, unit, meaning, value) in zip(groups, want):\n"
             "    items = {i.ConceptNameCodeSequence[0].CodeValue: i for i in g.ContentSequence}\n"
             "    assert items[\"112039\"].TextValue == name\n"
             "    m = items[code].MeasuredValueSequence[0]\n"
             "    u = m.MeasurementUnitsCodeSequence[0]\n"
             "    assert (u.CodeValue, u.CodingSchemeDesignator, u.CodeMeaning) == "
             "(unit, \"UCUM\", meaning), u\n"
             "    assert float(m.get(\"FloatingPointValue\", m.NumericValue)) == value, m\n"
             "    mods = [(i.ConceptNameCodeSequence[0].CodeValue, i.TextValue) "
             "for i in items[code].ContentSequence]\n"
             "    assert mods == [(\"111001\", \"ct-bone-body\"), (\"111003\", \"1.0.0\"), "
             "(\"111002\", \"model SHA-256 %s\"), (\"111002\", \"manifest SHA-256 %s\")], mods\n"
             "print(\"values OK\")' '%s' 2>&1",
             MODEL_SHA256, MANIFEST_SHA256, path);
    assert_int_equal(run(cmd, NULL), 0);
}

/* A detection on the Enhanced CT fixture (3 frames of 4 x 5 pixels, 0.5 mm
 * between rows, 0.75 mm between columns): the findings of its classes,
 * then a planar group for the box: its closed POLYLINE on frame 2, its
 * area in mm2 and its score as a certainty. */
static void test_a_detection_box_is_a_region_on_its_frame(void **state)
{
    (void)state;
    char source[1100];
    snprintf(source, sizeof source, "%s/tests/data/image/enhanced_ct_3frames.dcm", repo_dir());
    const char *paths[1] = {source};
    struct dicom_sources *set = NULL;
    char why[512];
    assert_int_equal(dicom_sources_open(paths, 1, &set, why, sizeof why), DICOM_OK);
    const int files[3] = {0, 0, 0};
    const int frames[3] = {0, 1, 2};
    const struct dicom_finding classes[] = {
        {"Nodule", {"27925004", "SCT", "Nodule"}, 0.75, 1},
        {"Mass", {"4147007", "SCT", "Mass"}, 0, 0},
    };
    const struct dicom_box box = {"Nodule 1", {"27925004", "SCT", "Nodule"}, 1,
                                  1, 0.5, 4.5, 3, 0.75};
    struct dicom_result r = image_result();
    r.sources = set;
    r.source_files = files;
    r.source_frames = frames;
    r.nz = 3;
    r.findings = classes;
    r.n_findings = 2;
    r.boxes = &box;
    r.n_boxes = 1;
    char path[1024], cmd[8192];
    struct dicom_written w;
    write_sr(&r, "boxes.dcm", path, sizeof path, &w);
    dicom_sources_close(set);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import math, sys, pydicom\n"
             "sr, src = pydicom.dcmread(sys.argv[1]), pydicom.dcmread(sys.argv[2])\n"
             "groups = sr.ContentSequence[-1].ContentSequence\n"
             "assert len(groups) == 3, len(groups)\n"
             "items = lambda g: {i.ConceptNameCodeSequence[0].CodeValue: i "
             "for i in g.ContentSequence}\n"
             "assert items(groups[0])[\"27925004\"].ConceptCodeSequence[0].CodeValue == "
             "\"52101004\"\n"
             "assert items(groups[1])[\"4147007\"].ConceptCodeSequence[0].CodeValue == "
             "\"2667000\"\n"
             "box = items(groups[2])\n"
             "assert box[\"112039\"].TextValue == \"Nodule 1\"\n"
             "assert box[\"121071\"].ConceptCodeSequence[0].CodeValue == \"27925004\"\n"
             "region = box[\"111030\"]\n"
             "assert region.GraphicType == \"POLYLINE\"\n"
             "assert [float(v) for v in region.GraphicData] == "
             "[1, 0.5, 4.5, 0.5, 4.5, 3, 1, 3, 1, 0.5], region.GraphicData\n"
             "ref = region.ContentSequence[0].ReferencedSOPSequence[0]\n"
             "assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID\n"
             "assert int(ref.ReferencedFrameNumber) == 2, ref.ReferencedFrameNumber\n"
             "v = lambda m: float(m.get(\"FloatingPointValue\", m.NumericValue))\n"
             "area = box[\"42798000\"].MeasuredValueSequence[0]\n"
             "assert area.MeasurementUnitsCodeSequence[0].CodeValue == \"mm2\"\n"
             "assert math.isclose(v(area), 3.5 * 0.75 * 2.5 * 0.5), v(area)\n"
             "assert v(box[\"111012\"].MeasuredValueSequence[0]) == 75\n"
             "print(\"box OK\")' '%s' '%s' 2>&1",
             path, source);
    assert_int_equal(run(cmd, NULL), 0);
}

/* What is not a value or a box is refused with the reason. */
static void test_bad_values_and_boxes_are_refused(void **state)
{
    (void)state;
    const struct dicom_finding finding = {"Nodule", {"27925004", "SCT", "Nodule"}, 0.5, 1};
    struct dicom_value no_unit = values[0], not_finite = values[0];
    no_unit.unit.value = NULL;
    not_finite.value = 1.0 / 0.0;
    const struct dicom_box outside = {"Nodule 1", {"27925004", "SCT", "Nodule"}, 0,
                                      3, 2, 3, 4, 0.5};
    const struct dicom_box no_image = {"Nodule 1", {"27925004", "SCT", "Nodule"}, SLICES,
                                       1, 1, 2, 2, 0.5};
    struct dicom_result r = image_result();
    r.values = &no_unit;
    r.n_values = 1;
    expect_refused(&r, NULL, "unit code");
    r.values = &not_finite;
    expect_refused(&r, NULL, "not a finite number");
    r.findings = &finding;
    r.n_findings = 1;
    expect_refused(&r, NULL, "findings and values");
    r.values = NULL;
    r.n_values = 0;
    r.boxes = &outside;
    r.n_boxes = 1;
    expect_refused(&r, NULL, "not a box within the image");
    r.boxes = &no_image;
    expect_refused(&r, NULL, "no such image");
    r.findings = NULL;
    r.n_findings = 0;
    expect_refused(&r, NULL, "boxes without the findings");
    r = image_result();
    r.findings = &finding;
    r.n_findings = 1;
    r.segments = segments;
    r.n_segments = 1;
    expect_refused(&r, NULL, "segments in a report without a SEG");
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
    const char *upper_digest =
        "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    no_type.type.value = NULL;
    negative.volume_ml = -1;
    int out_of_set[SLICES];
    memcpy(out_of_set, source_files, sizeof out_of_set);
    out_of_set[3] = SLICES;
    enum { NO_SEGMENTS, NULL_SEGMENTS, BAD_SEG_UID, NO_RESULT, NO_TYPE, NEGATIVE, NO_SOURCES,
           OUT_OF_SET, SHORT_DIGEST, UPPER_DIGEST, NO_LABELS, WRONG_SIZE };
    static const struct {
        int change;
        const char *want;
    } cases[] = {
        {NO_SEGMENTS, "no segments"}, {NULL_SEGMENTS, "no segments"},
        {BAD_SEG_UID, "valid UID"},   {NO_RESULT, "no result"},
        {NO_TYPE, "type code"},       {NEGATIVE, "volume"},
        {NO_SOURCES, "no source images"}, {OUT_OF_SET, "no source image for slice 3"},
        {SHORT_DIGEST, "model SHA-256"}, {UPPER_DIGEST, "manifest SHA-256"},
        {NO_LABELS, "no label volume"}, {WRONG_SIZE, "is not 19 x 24 pixels"},
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
        case SHORT_DIGEST: r.model_sha256 = "9f86d081"; break;
        case UPPER_DIGEST: r.manifest_sha256 = upper_digest; break;
        case NO_LABELS: r.labels = NULL; break;
        case WRONG_SIZE: r.nx = COLS - 1; break; /* the labels do not fit the images */
        }
        expect_refused(rp, s, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reports_pass_dciodvfy_and_hold_the_measurements),
        cmocka_unit_test(test_a_report_without_digests_records_none),
        cmocka_unit_test(test_a_multiframe_source_is_outlined_on_its_frame),
        cmocka_unit_test(test_regression_values_are_measurements_in_their_units),
        cmocka_unit_test(test_a_detection_box_is_a_region_on_its_frame),
        cmocka_unit_test(test_bad_values_and_boxes_are_refused),
        cmocka_unit_test(test_each_report_gets_new_uids),
        cmocka_unit_test(test_bad_input_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
