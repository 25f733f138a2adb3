/*
 * manifest.c — model manifests (one YAML file per model, read with the same
 * engine against the tables below) and the built-in models: models.NAME is
 * checked here once its keys are set.
 */
#include "config/schema.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

_Static_assert(sizeof(enum config_blend) == sizeof(int), "blend stored as int");
_Static_assert(sizeof(enum config_decision) == sizeof(int), "decision stored as int");
_Static_assert(sizeof(enum config_input_kind) == sizeof(int), "input kind stored as int");
_Static_assert(sizeof(enum config_scope) == sizeof(int), "scope stored as int");
_Static_assert(sizeof(enum config_output_kind) == sizeof(int), "output kind stored as int");
_Static_assert(sizeof(enum config_activation) == sizeof(int), "activation stored as int");
_Static_assert(sizeof(enum config_aggregate) == sizeof(int), "aggregate stored as int");

static const char *const blend_names[] = {"constant", "gaussian", NULL};
static const char *const decision_names[] = {"argmax", "threshold", NULL};
static const char *const input_kind_names[] = {"volume", "image", "slices", NULL};
static const char *const scope_names[] = {"series", "study", NULL};
static const char *const output_kind_names[] = {"segmentation", "classification", "embedding",
                                                "regression", "detection", NULL};
static const char *const activation_names[] = {"softmax", "sigmoid", "none", NULL};
static const char *const aggregate_names[] = {"max", "mean", NULL};

static void check_preprocess(struct schema_ctx *c, const struct schema_parsed *p, void *base);
static void check_inference(struct schema_ctx *c, const struct schema_parsed *p, void *base);
static void check_output(struct schema_ctx *c, const struct schema_parsed *p, void *base);
static void parse_labels(struct schema_ctx *c, const struct schema_field *f, const char *what,
                         const struct ynode *v, void *base);
static void release_labels(const struct schema_field *f, void *base);
static void check_input(struct schema_ctx *c, const struct schema_parsed *p, void *base);
static void check_accept_modality(struct schema_ctx *c, const struct schema_parsed *p,
                                  void *base);
static void parse_classes(struct schema_ctx *c, const struct schema_field *f, const char *what,
                          const struct ynode *v, void *base);
static void release_classes(const struct schema_field *f, void *base);
static void check_accept(struct schema_ctx *c, const struct schema_parsed *p, void *base);
static void parse_values(struct schema_ctx *c, const struct schema_field *f, const char *what,
                         const struct ynode *v, void *base);
static void release_values(const struct schema_field *f, void *base);
static void parse_strings(struct schema_ctx *c, const struct schema_field *f, const char *what,
                          const struct ynode *v, void *base);

#define MAN_OFF(m) offsetof(struct config_manifest, m)
#define CODE_OFF(m) offsetof(struct config_code, m)
#define LABEL_OFF(m) offsetof(struct config_label, m)
#define CLASS_OFF(m) offsetof(struct config_class, m)
#define VALUE_OFF(m) offsetof(struct config_value, m)


static const struct schema_field code_fields[] = {
    {.key = "value", .type = T_STR, .required = 1, .off = CODE_OFF(value), .doc = "CodeValue"},
    {.key = "scheme", .type = T_STR, .required = 1, .off = CODE_OFF(scheme),
     .doc = "CodingSchemeDesignator"},
    {.key = "meaning", .type = T_STR, .required = 1, .off = CODE_OFF(meaning),
     .doc = "CodeMeaning"},
};

static const struct schema_field label_fields[] = {
    {.key = "name", .type = T_STR, .required = 1, .off = LABEL_OFF(name), .doc = "Segment Label"},
    {.key = "category", .type = T_SECTION, .required = 1, SUB(code_fields),
     .off = LABEL_OFF(category), .doc = "Segmented Property Category"},
    {.key = "type", .type = T_SECTION, .required = 1, SUB(code_fields), .off = LABEL_OFF(type),
     .doc = "Segmented Property Type"},
    {.key = "color", .type = T_INTS, .required = 1, .count = 3, .min = 0, .max = 255,
     .off = LABEL_OFF(color), .doc = "display colour [r, g, b]"},
};

static const struct schema_field class_fields[] = {
    {.key = "name", .type = T_STR, .required = 1, .off = CLASS_OFF(name),
     .doc = "Tracking Identifier of the class's findings"},
    {.key = "finding", .type = T_SECTION, .required = 1, SUB(code_fields),
     .off = CLASS_OFF(finding), .doc = "what the class finds, a code"},
    {.key = "threshold", .type = T_FLOAT, .def_float = 0.5, .fcheck = F_UNIT,
     .off = CLASS_OFF(threshold), .doc = "probability from which the finding is present"},
};

static const struct schema_field value_fields[] = {
    {.key = "name", .type = T_STR, .required = 1, .off = VALUE_OFF(name),
     .doc = "Tracking Identifier of the value's measurement group"},
    {.key = "concept", .type = T_SECTION, .required = 1, SUB(code_fields),
     .off = VALUE_OFF(concept), .doc = "what the value measures, a code"},
    {.key = "unit", .type = T_SECTION, .required = 1, SUB(code_fields), .off = VALUE_OFF(unit),
     .doc = "its unit, a UCUM code (e.g. value \"1\", scheme UCUM, meaning no units)"},
};

/* The manifest's sections fill the one flat struct config_manifest, hence
 * .off = 0 for them: only codes are structs of their own. */
static const struct schema_field algorithm_fields[] = {
    {.key = "name", .type = T_STR, .required = 1, .off = MAN_OFF(algorithm_name),
     .doc = "Algorithm Name"},
    {.key = "version", .type = T_STR, .required = 1, .off = MAN_OFF(algorithm_version),
     .doc = "Algorithm Version"},
    {.key = "family", .type = T_SECTION, .required = 1, SUB(code_fields),
     .off = MAN_OFF(algorithm_family), .doc = "Algorithm Family (CID 7162)"},
    {.key = "intended_use", .type = T_STR, .off = MAN_OFF(intended_use),
     .doc = "what the model is for and on whom, written into the SR"},
};

#define ACCEPT_OFF(m) MAN_OFF(accept.m)
#define ACCEPT_LIST(k, m, d)                                                                   \
    {.key = k, .type = T_CUSTOM, .parse = parse_strings, .release = schema_release_str_list,    \
     .type_doc = "list of strings", .off = ACCEPT_OFF(m), .off_n = ACCEPT_OFF(n_##m), .doc = d}

/* input.accept: each filter optional; a series outside any given one is
 * recorded as not applicable, with the reason, and never runs. */
static const struct schema_field accept_fields[] = {
    ACCEPT_LIST("modality", modality, "Modality one of these; must include input.modality"),
    ACCEPT_LIST("body_part", body_part, "BodyPartExamined one of these"),
    ACCEPT_LIST("view_position", view_position, "ViewPosition one of these"),
    ACCEPT_LIST("photometric_interpretation", photometric,
                "PhotometricInterpretation one of these"),
    {.key = "pixel_spacing", .type = T_FLOATS, .count = 2, .fcheck = F_POSITIVE,
     .off = ACCEPT_OFF(pixel_spacing), .off_n = ACCEPT_OFF(has_pixel_spacing),
     .doc = "[min, max] mm, both PixelSpacing values within"},
    {.key = "slice_thickness", .type = T_FLOATS, .count = 2, .fcheck = F_POSITIVE,
     .off = ACCEPT_OFF(slice_thickness), .off_n = ACCEPT_OFF(has_slice_thickness),
     .doc = "[min, max] mm of SliceThickness"},
    {.key = "rows", .type = T_INTS, .count = 2, .min = 1, .max = 65535, .off = ACCEPT_OFF(rows),
     .doc = "[min, max] of Rows"},
    {.key = "columns", .type = T_INTS, .count = 2, .min = 1, .max = 65535,
     .off = ACCEPT_OFF(columns), .doc = "[min, max] of Columns"},
};

static const struct schema_field input_fields[] = {
    {.key = "modality", .type = T_STR, .off = MAN_OFF(modality),
     .doc = "modality of the series the model reads (required, except for a head)"},
    {.key = "from", .type = T_STR, .off = MAN_OFF(from),
     .doc = "a head: the model (output.kind embedding) whose features it reads"},
    {.key = "kind", .type = T_ENUM, .def_int = CONFIG_INPUT_VOLUME, .names = input_kind_names,
     .off = MAN_OFF(input_kind),
     .doc = "volume (the series in 3-D), image (each 2-D image) or slices (each slice with "
            "its neighbours)"},
    {.key = "size", .type = T_INTS, .count = 2, .min = 1, .max = 4096, .off = MAN_OFF(size),
     .doc = "[rows, columns] of the model's image input (kind image)"},
    {.key = "channels", .type = T_INT, .def_int = 1, .min = 1, .max = 3,
     .off = MAN_OFF(in_channels), .doc = "1 (grey) or 3 (RGB) input channels (kind image)"},
    {.key = "window", .type = T_FLOATS, .count = 2, .off = MAN_OFF(window),
     .off_n = MAN_OFF(has_window),
     .doc = "[centre, width] of the grey window; default the image's own (kind image)"},
    {.key = "mean", .type = T_FLOATS, .count = 3, .min_count = 1, .off = MAN_OFF(mean),
     .off_n = MAN_OFF(n_mean), .doc = "subtracted per channel from the 0..1 image (kind image)"},
    {.key = "std", .type = T_FLOATS, .count = 3, .min_count = 1, .fcheck = F_POSITIVE,
     .off = MAN_OFF(std), .off_n = MAN_OFF(n_std),
     .doc = "then divided by, per channel (kind image)"},
    {.key = "scope", .type = T_ENUM, .def_int = CONFIG_SCOPE_SERIES, .names = scope_names,
     .off = MAN_OFF(scope),
     .doc = "study: one job and one result for all the study's images routed to the model "
            "(e.g. PA and lateral; the default for kind image, except segmentations, whose "
            "images must then all have one size); series: one per series (the default for "
            "image segmentations, the only choice for kind volume and slices)"},
    {.key = "batch", .type = T_INT, .def_int = 1, .min = 1, .max = 1024, .off = MAN_OFF(batch),
     .doc = "images or slices per model run (kind image or slices)"},
    {.key = "context", .type = T_INT, .def_int = 0, .min = 0, .max = 16,
     .off = MAN_OFF(context),
     .doc = "neighbouring slices on each side given as extra channels (kind slices)"},
    {.key = "min_slices", .type = T_INT, .def_int = 1, .min = 1, .max = 100000,
     .off = MAN_OFF(min_slices), .doc = "fewer slices are refused"},
    {.key = "max_voxels", .type = T_INT, .def_int = 0, .min = 0, .max = 2147483647,
     .off = MAN_OFF(max_voxels),
     .doc = "largest volume (voxels) a job of this model holds, below node.max_job_memory_mb; "
            "0: that key decides"},
    {.key = "accept", .type = T_SECTION, SUB(accept_fields), .check = check_accept,
     .doc = "the series the model is meant for; others are not applicable and never run"},
};

static const struct schema_field scale_fields[] = {
    {.key = "offset", .type = T_FLOAT, .def_float = 0, .off = MAN_OFF(scale_offset),
     .doc = "added before scaling"},
    {.key = "factor", .type = T_FLOAT, .def_float = 1, .fcheck = F_NONZERO,
     .off = MAN_OFF(scale_factor), .doc = "multiplied after the offset"},
};

static const struct schema_field preprocess_fields[] = {
    {.key = "spacing", .type = T_FLOATS, .count = 3, .fcheck = F_POSITIVE, .none = "none",
     .off = MAN_OFF(spacing), .off_n = MAN_OFF(has_spacing),
     .doc = "resample to [column, row, slice] mm, or none"},
    {.key = "clip", .type = T_FLOATS, .count = 2, .off = MAN_OFF(clip), .off_n = MAN_OFF(has_clip),
     .doc = "[low, high] after rescale"},
    {.key = "scale", .type = T_SECTION, SUB(scale_fields), .doc = "(v + offset) * factor"},
};

static const struct schema_field inference_fields[] = {
    {.key = "patch", .type = T_INTS, .required = 1, .count = 3, .min = 1, .max = 4096,
     .off = MAN_OFF(patch), .doc = "patch size [z, y, x] in voxels"},
    {.key = "margin", .type = T_INTS, .count = 3, .min = 0, .max = 1024, .off = MAN_OFF(margin),
     .doc = "voxels dropped at each patch border [z, y, x]"},
    {.key = "overlap", .type = T_FLOAT, .def_float = 0.25, .fcheck = F_UNIT,
     .off = MAN_OFF(overlap), .doc = "fraction of a patch shared with its neighbour"},
    {.key = "blend", .type = T_ENUM, .def_int = CONFIG_BLEND_GAUSSIAN, .names = blend_names,
     .off = MAN_OFF(blend), .doc = "weighting of overlapping patches"},
};

static const struct schema_field output_fields[] = {
    {.key = "kind", .type = T_ENUM, .def_int = CONFIG_OUTPUT_SEGMENTATION,
     .names = output_kind_names, .off = MAN_OFF(output_kind),
     .doc = "segmentation (labels), classification (a score per class), regression (named "
            "values), detection (boxes) or embedding (features for heads). A segmentation "
            "of input.kind image gives [images, channels, size0, size1] per batch, decided "
            "per pixel as output.decision says and mapped back onto each source image "
            "through its letterbox (nearest neighbour at pixel centres); all images of a "
            "job must then have the same rows and columns (a job of several sizes fails, "
            "naming them). Its SEG needs no Frame of Reference, and its SR gives each "
            "segment an outline and an area in mm2 (where the image has a Pixel Spacing), "
            "never a volume"},
    {.key = "channels", .type = T_INT, .required = 1, .min = 1, .max = 255,
     .off = MAN_OFF(channels),
     .doc = "output channels of the model; a regression's values, a detection's classes"},
    {.key = "decision", .type = T_ENUM, .def_int = CONFIG_DECISION_ARGMAX, .names = decision_names,
     .off = MAN_OFF(decision),
     .doc = "segmentation: argmax (channel 0 the background, label N channel N) or threshold "
            "(label N for the channel N - 1 of highest value among those at least "
            "output.threshold; none: 0)"},
    {.key = "threshold", .type = T_FLOAT, .def_float = 0.5, .off = MAN_OFF(threshold),
     .doc = "cut-off for decision threshold"},
    {.key = "labels", .type = T_CUSTOM, .parse = parse_labels, .release = release_labels,
     .off = MAN_OFF(labels), .off_n = MAN_OFF(n_labels),
     .doc = "label number -> segment (segmentation; required there)"},
    {.key = "activation", .type = T_ENUM, .def_int = CONFIG_ACTIVATION_SOFTMAX,
     .names = activation_names, .off = MAN_OFF(activation),
     .doc = "softmax, sigmoid or none: how scores become probabilities (classification)"},
    {.key = "aggregate", .type = T_ENUM, .def_int = CONFIG_AGGREGATE_MAX,
     .names = aggregate_names, .off = MAN_OFF(aggregate),
     .doc = "max or mean of a class's probability, or of a value, over the series' images "
            "(classification, regression)"},
    {.key = "classes", .type = T_CUSTOM, .parse = parse_classes, .release = release_classes,
     .off = MAN_OFF(classes), .off_n = MAN_OFF(n_classes),
     .doc = "class number -> finding (classification and detection; required there)"},
    {.key = "values", .type = T_CUSTOM, .parse = parse_values, .release = release_values,
     .off = MAN_OFF(values), .off_n = MAN_OFF(n_values),
     .doc = "value number -> measurement (regression; required there): value N is output "
            "channel N - 1; each {name, concept: CODE, unit: CODE}, CODE being {value, scheme, "
            "meaning} and the unit a UCUM one; one TID 1501 measurement each"},
    {.key = "score_threshold", .type = T_FLOAT, .def_float = 0.5, .fcheck = F_UNIT,
     .off = MAN_OFF(score_threshold),
     .doc = "detection: boxes scoring below are dropped. The model gives, per image, "
            "[max_boxes, 6] rows (x1, y1, x2, y2, score, class) in input pixels, 0,0 the "
            "top-left corner of the input, class 1..channels (below 1: no box); boxes are "
            "mapped back through the letterbox, clipped to the image, empty ones dropped"},
    {.key = "max_boxes", .type = T_INT, .def_int = 100, .min = 1, .max = 10000,
     .off = MAN_OFF(max_boxes), .doc = "detection: most box rows the model gives per image"},
    {.key = "series_description", .type = T_STR, .off = MAN_OFF(series_description),
     .doc = "of the result series; default the algorithm name"},
    {.key = "series_number", .type = T_INT, .def_int = 900, .min = 1, .max = 2147483646,
     .off = MAN_OFF(series_number), .doc = "of the SEG series; the SR's is one more"},
};

const struct schema_field config_manifest_fields[] = {
    {.key = "algorithm", .type = T_SECTION, .required = 1, SUB(algorithm_fields),
     .doc = "what the results say produced them"},
    {.key = "input", .type = T_SECTION, .required = 1, SUB(input_fields),
     .doc = "the series the model accepts", .check = check_input},
    {.key = "preprocess", .type = T_SECTION, SUB(preprocess_fields),
     .doc = "how the volume is prepared for the model", .check = check_preprocess},
    {.key = "inference", .type = T_SECTION, SUB(inference_fields),
     .doc = "how the model is run over the volume (kind volume; required there)",
     .check = check_inference},
    {.key = "output", .type = T_SECTION, .required = 1, SUB(output_fields),
     .doc = "what the model's output means", .check = check_output},
};

const size_t config_n_manifest_fields = NELEM(config_manifest_fields);

_Static_assert(NELEM(code_fields) <= MAX_FIELDS && NELEM(label_fields) <= MAX_FIELDS &&
                   NELEM(class_fields) <= MAX_FIELDS && NELEM(value_fields) <= MAX_FIELDS &&
                   NELEM(algorithm_fields) <= MAX_FIELDS && NELEM(input_fields) <= MAX_FIELDS &&
                   NELEM(accept_fields) <= MAX_FIELDS &&
                   NELEM(scale_fields) <= MAX_FIELDS && NELEM(preprocess_fields) <= MAX_FIELDS &&
                   NELEM(inference_fields) <= MAX_FIELDS && NELEM(output_fields) <= MAX_FIELDS &&
                   NELEM(config_manifest_fields) <= MAX_FIELDS,
               "schema_parsed.st[] too small");

/* ------------------------------------------------------------------------ */
/* Manifest                                                                 */

/* The number of a label key (1..255), or -1. */
static int label_number(const struct ynode *k)
{
    long long n;
    return ynode_int(k, 1, 255, &n) ? (int)n : -1;
}

/* 1 when key KI of MAP has the same label number as an earlier key. */
static int label_seen_before(const struct ynode *map, size_t ki, int n)
{
    for (size_t j = 0; j < ki; j += 2)
        if (label_number(map->kids[j]) == n)
            return 1;
    return 0;
}

/* Labels and classes both start with their number. */
static int cmp_numbered(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* A mapping of numbers 1..255 to entries of SIZE bytes (each starting
 * with its int number) parsed with FIELDS: into a new array at F->off,
 * its count at F->off_n, sorted by number. */
static void parse_numbered(struct schema_ctx *c, const struct schema_field *f, const char *what,
                           const struct ynode *v, void *base, size_t size,
                           const struct schema_field *fields, size_t n_fields, const char *noun)
{
    char **ap = (char **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    char b[80];
    if (ynode_is_null(v) || (v->kind == Y_MAP && v->n == 0)) {
        schema_report(c, v->line, v->col, "%s: expected at least one %s", what, noun);
        return;
    }
    if (v->kind != Y_MAP) {
        schema_report(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    if (!(*ap = calloc(v->n / 2, size))) {
        schema_oom(c);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (k->kind == Y_ALIAS)
            continue;
        if (k->kind != Y_SCALAR) {
            schema_report(c, k->line, k->col, "%s: keys must be scalars", what);
            continue;
        }
        int n = label_number(k);
        if (n < 0) {
            schema_report(c, k->line, k->col, "%s: '%s' is not a %s number 1..255", what,
                          schema_esc(k->text, k->len, b), noun);
            continue;
        }
        if (label_seen_before(v, i, n)) {
            schema_report(c, k->line, k->col, "duplicate %s %d", noun, n);
            continue;
        }
        char sect[300];
        snprintf(sect, sizeof sect, "%s.%d", what, n);
        if (val->kind == Y_ALIAS)
            continue;
        if (val->kind != Y_MAP) {
            schema_report(c, val->line, val->col, "%s: expected a mapping", sect);
            continue;
        }
        void *e = *ap + (*np)++ * size;
        schema_set_defaults(c, fields, n_fields, e);
        *(int *)e = n;
        schema_parse_section(c, sect, fields, n_fields, val, e, k, NULL);
    }
    qsort(*ap, *np, size, cmp_numbered);
}

static void release_numbered(const struct schema_field *f, void *base, size_t size,
                             const struct schema_field *fields, size_t n_fields)
{
    char **ap = (char **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    for (size_t i = 0; i < *np; i++)
        schema_free_fields(fields, n_fields, *ap + i * size);
    free(*ap);
    *ap = NULL;
    *np = 0;
}

_Static_assert(offsetof(struct config_label, value) == 0, "a label starts with its number");
_Static_assert(offsetof(struct config_class, value) == 0, "a class starts with its number");
_Static_assert(offsetof(struct config_value, value) == 0, "a value starts with its number");

static void parse_labels(struct schema_ctx *c, const struct schema_field *f, const char *what,
                         const struct ynode *v, void *base)
{
    parse_numbered(c, f, what, v, base, sizeof(struct config_label), label_fields,
                   NELEM(label_fields), "label");
}

static void release_labels(const struct schema_field *f, void *base)
{
    release_numbered(f, base, sizeof(struct config_label), label_fields, NELEM(label_fields));
}

static void parse_classes(struct schema_ctx *c, const struct schema_field *f, const char *what,
                          const struct ynode *v, void *base)
{
    parse_numbered(c, f, what, v, base, sizeof(struct config_class), class_fields,
                   NELEM(class_fields), "class");
}

static void release_classes(const struct schema_field *f, void *base)
{
    release_numbered(f, base, sizeof(struct config_class), class_fields, NELEM(class_fields));
}

static void parse_values(struct schema_ctx *c, const struct schema_field *f, const char *what,
                         const struct ynode *v, void *base)
{
    parse_numbered(c, f, what, v, base, sizeof(struct config_value), value_fields,
                   NELEM(value_fields), "value");
}

static void release_values(const struct schema_field *f, void *base)
{
    release_numbered(f, base, sizeof(struct config_value), value_fields, NELEM(value_fields));
}

static void check_preprocess(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_manifest *m = base;
    if (m->has_clip && !(m->clip[0] < m->clip[1])) {
        const struct ynode *v = schema_pos_of(p, "clip");
        schema_report(c, v->line, v->col, "%s.clip: low (%g) must be less than high (%g)", p->sect,
                  m->clip[0], m->clip[1]);
    }
}

static void check_inference(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_manifest *m = base;
    if (!schema_usable(p, "patch") || !schema_usable(p, "margin"))
        return;
    /* each patch must keep a core after dropping the margin on both sides */
    for (int i = 0; i < 3; i++) {
        if (2 * m->margin[i] >= m->patch[i]) {
            const struct ynode *v = schema_pos_of(p, "margin");
            schema_report(c, v->line, v->col,
                      "%s.margin: twice the margin must be less than the patch on each axis "
                      "(%c: margin %d, patch %d)",
                      p->sect, "zyx"[i], m->margin[i], m->patch[i]);
            return;
        }
    }
}

/* 1 when KEY was written in P's mapping (rather than defaulted). */
static int given(const struct schema_parsed *p, const char *key)
{
    return p->st[schema_field_index(p, key)] != 0;
}

/* Reports each of KEYS written in P: they mean nothing for WHAT. */
static void refuse_keys(struct schema_ctx *c, const struct schema_parsed *p,
                        const char *const *keys, const char *what)
{
    for (; *keys; keys++)
        if (given(p, *keys)) {
            const struct ynode *v = schema_pos_of(p, *keys);
            schema_report(c, v->line, v->col, "%s.%s: only for %s", p->sect, *keys, what);
        }
}

static void check_input(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_manifest *m = base;
    check_accept_modality(c, p, base);
    if (!schema_usable(p, "kind"))
        return;
    if (given(p, "from")) {
        /* A head reads its encoder's features: the encoder reads the images. */
        static const char *const encoder_keys[] = {"modality", "kind", "size", "channels",
                                                   "window", "mean", "std", "scope", NULL};
        refuse_keys(c, p, encoder_keys, "a model that reads images, not for a head");
        return;
    }
    if (!given(p, "modality"))
        schema_report(c, p->pos->line, p->pos->col, "%s: missing required key 'modality'",
                      p->sect);
    if (m->input_kind != CONFIG_INPUT_IMAGE && m->scope == CONFIG_SCOPE_STUDY) {
        const struct ynode *at = ynode_get(p->map, "scope");
        schema_report(c, at ? at->line : p->pos->line, at ? at->col : p->pos->col,
                      "%s.scope: study needs input.kind image (a %s is one series)", p->sect,
                      input_kind_names[m->input_kind]);
    }
    if (m->input_kind == CONFIG_INPUT_SLICES) {
        /* Slices are the series' own pixels, prepared by preprocess. */
        static const char *const image_only[] = {"size", "channels", "window", "mean", "std",
                                                 NULL};
        refuse_keys(c, p, image_only, "kind image");
        return;
    }
    if (m->input_kind != CONFIG_INPUT_IMAGE) {
        static const char *const image_only[] = {"size", "channels", "window", "mean", "std",
                                                 "batch", NULL};
        refuse_keys(c, p, image_only, "kind image");
        static const char *const slices_only[] = {"context", NULL};
        refuse_keys(c, p, slices_only, "kind slices");
        return;
    }
    {
        static const char *const slices_only[] = {"context", NULL};
        refuse_keys(c, p, slices_only, "kind slices");
    }
    if (!given(p, "size"))
        schema_report(c, p->pos->line, p->pos->col, "%s: missing required key 'size' (kind image)",
                      p->sect);
    if (schema_usable(p, "channels") && m->in_channels == 2) {
        const struct ynode *v = schema_pos_of(p, "channels");
        schema_report(c, v->line, v->col, "%s.channels: must be 1 (grey) or 3 (RGB)", p->sect);
        return;
    }
    if (m->has_window && !(m->window[1] >= 1)) {
        const struct ynode *v = schema_pos_of(p, "window");
        schema_report(c, v->line, v->col, "%s.window: the width (%g) must be at least 1", p->sect,
                      m->window[1]);
    }
    /* One value per channel: a grey model's mean is one number. */
    static const char *const per_channel[] = {"mean", "std"};
    const int counts[] = {m->n_mean, m->n_std};
    for (int i = 0; i < 2; i++)
        if (counts[i] && counts[i] != m->in_channels) {
            const struct ynode *v = schema_pos_of(p, per_channel[i]);
            schema_report(c, v->line, v->col, "%s.%s: expected one number per channel (%d)",
                          p->sect, per_channel[i], m->in_channels);
        }
}

/* The classes of a classification: class N is output channel N - 1. */
static void check_classes(struct schema_ctx *c, const struct schema_parsed *p,
                          const struct config_manifest *m)
{
    static const char *const segmentation_only[] = {"labels", "decision", "threshold", NULL};
    refuse_keys(c, p, segmentation_only, "kind segmentation");
    if (!given(p, "classes")) {
        schema_report(c, p->pos->line, p->pos->col, "%s: missing required key 'classes' (kind %s)",
                      p->sect, output_kind_names[m->output_kind]);
        return;
    }
    if (!schema_usable(p, "channels") || !schema_usable(p, "classes"))
        return;
    const struct ynode *v = schema_pos_of(p, "classes");
    for (size_t i = 0; i < m->n_classes; i++)
        if (m->classes[i].value != (int)i + 1) {
            schema_report(c, v->line, v->col,
                          "%s.classes: class numbers must run 1, 2, 3, ... without gaps; %d is "
                          "missing", p->sect, (int)i + 1);
            return;
        }
    if (m->n_classes != (size_t)m->channels)
        schema_report(c, v->line, v->col,
                      "%s.classes: one class per output channel: %zu classes, %d channels",
                      p->sect, m->n_classes, m->channels);
}

/* The values of a regression: value N is output channel N - 1. */
static void check_values(struct schema_ctx *c, const struct schema_parsed *p,
                         const struct config_manifest *m)
{
    static const char *const not_regression[] = {"labels", "decision", "threshold", "activation",
                                                 "classes", NULL};
    refuse_keys(c, p, not_regression, "other kinds than regression");
    if (!given(p, "values")) {
        schema_report(c, p->pos->line, p->pos->col,
                      "%s: missing required key 'values' (kind regression)", p->sect);
        return;
    }
    if (!schema_usable(p, "channels") || !schema_usable(p, "values"))
        return;
    const struct ynode *v = schema_pos_of(p, "values");
    for (size_t i = 0; i < m->n_values; i++)
        if (m->values[i].value != (int)i + 1) {
            schema_report(c, v->line, v->col,
                          "%s.values: value numbers must run 1, 2, 3, ... without gaps; %d is "
                          "missing", p->sect, (int)i + 1);
            return;
        }
    if (m->n_values != (size_t)m->channels)
        schema_report(c, v->line, v->col,
                      "%s.values: one value per output channel: %zu values, %d channels",
                      p->sect, m->n_values, m->channels);
}

static void check_output(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_manifest *m = base;
    if (!schema_usable(p, "kind"))
        return;
    /* Keys of one kind mean nothing for the others: each is refused where
     * it is written, so a manifest says only what applies. */
    static const char *const detection_only[] = {"score_threshold", "max_boxes", NULL};
    if (m->output_kind != CONFIG_OUTPUT_DETECTION)
        refuse_keys(c, p, detection_only, "kind detection");
    if (m->output_kind != CONFIG_OUTPUT_REGRESSION) {
        static const char *const regression_only[] = {"values", NULL};
        refuse_keys(c, p, regression_only, "kind regression");
    }
    if (m->output_kind == CONFIG_OUTPUT_CLASSIFICATION) {
        check_classes(c, p, m);
        return;
    }
    if (m->output_kind == CONFIG_OUTPUT_REGRESSION) {
        check_values(c, p, m);
        return;
    }
    if (m->output_kind == CONFIG_OUTPUT_DETECTION) {
        /* Boxes have scores of their own: no activation, no aggregate. */
        static const char *const not_detection[] = {"activation", "aggregate", NULL};
        refuse_keys(c, p, not_detection, "kind classification or regression");
        /* A class is present with any box: output.score_threshold decides. */
        const struct ynode *cv = ynode_get(p->map, "classes");
        for (size_t i = 0; cv && cv->kind == Y_MAP && i + 1 < cv->n; i += 2) {
            const struct ynode *t = ynode_get(cv->kids[i + 1], "threshold");
            if (t && cv->kids[i]->kind == Y_SCALAR)
                schema_report(c, t->line, t->col,
                              "%s.classes.%s.threshold: only for kind classification (a "
                              "detection has output.score_threshold)",
                              p->sect, cv->kids[i]->text);
        }
        check_classes(c, p, m);
        return;
    }
    static const char *const classification_only[] = {"activation", "aggregate", "classes", NULL};
    refuse_keys(c, p, classification_only, "kind classification");
    if (m->output_kind == CONFIG_OUTPUT_EMBEDDING) {
        /* Features: output.channels numbers per image, and nothing else. */
        static const char *const segmentation_only[] = {"labels", "decision", "threshold",
                                                        NULL};
        refuse_keys(c, p, segmentation_only, "kind segmentation");
        return;
    }
    if (!given(p, "labels")) {
        schema_report(c, p->pos->line, p->pos->col, "%s: missing required key 'labels'", p->sect);
        return;
    }
    if (!schema_usable(p, "channels") || !schema_usable(p, "decision"))
        return;
    int argmax = m->decision == CONFIG_DECISION_ARGMAX;
    /* argmax: channel 0 is the background and label N is channel N;
     * threshold: label N is channel N - 1 */
    if (argmax && m->channels < 2) {
        const struct ynode *v = schema_pos_of(p, "channels");
        schema_report(c, v->line, v->col, "%s.channels: argmax needs at least 2 channels", p->sect);
        return;
    }
    const struct ynode *lv = ynode_get(p->map, "labels");
    int reported = 0; /* a label with a problem of its own: no gap check */
    for (size_t i = 0; lv && lv->kind == Y_MAP && i + 1 < lv->n; i += 2) {
        const struct ynode *k = lv->kids[i];
        int n = label_number(k);
        if (n < 0 || label_seen_before(lv, i, n)) {
            reported = 1;
            continue; /* already reported */
        }
        if (argmax && n >= m->channels) {
            schema_report(c, k->line, k->col,
                      "%s.labels.%d: argmax needs each label below %s.channels (%d)", p->sect, n,
                      p->sect, m->channels);
            reported = 1;
        } else if (!argmax && n > m->channels) {
            schema_report(c, k->line, k->col,
                      "%s.labels.%d: threshold needs each label at most %s.channels (%d)",
                      p->sect, n, p->sect, m->channels);
            reported = 1;
        }
    }
    /* Labels become SEG segment numbers, which run 1, 2, ... without gaps. */
    for (size_t i = 0; !reported && i < m->n_labels; i++) {
        if (m->labels[i].value != (int)i + 1) {
            const struct ynode *v = schema_pos_of(p, "labels");
            schema_report(c, v->line, v->col,
                      "%s.labels: label numbers must run 1, 2, 3, ... without gaps (they are "
                      "the segment numbers of the results); %d is missing",
                      p->sect, (int)i + 1);
            break;
        }
    }
}

/* 1 when V is absent or one of NAMES. */
static int named(const struct ynode *v, const char *const *names)
{
    if (!v)
        return 1;
    for (; *names; names++)
        if (ynode_is(v, *names))
            return 1;
    return 0;
}

/* What the input and output kinds ask of the rest of a manifest whose
 * sections are each valid (ROOT its mapping). */
static void check_kinds(struct schema_ctx *c, const struct ynode *root,
                        const struct config_manifest *m)
{
    const struct ynode *inference = ynode_get(root, "inference");
    const struct ynode *output = ynode_get(root, "output");
    const struct ynode *kind = ynode_get(output, "kind");
    const struct ynode *at = kind ? kind : output ? output : root;
    /* A kind that was refused is already reported; the defaults would
     * only add noise. */
    if (!named(ynode_get(ynode_get(root, "input"), "kind"), input_kind_names) ||
        !named(kind, output_kind_names))
        return;
    if (m->from) {
        if (inference)
            schema_report(c, inference->line, inference->col,
                          "inference: only for input.kind volume (a head reads features)");
        const struct ynode *pre = ynode_get(root, "preprocess");
        if (pre)
            schema_report(c, pre->line, pre->col,
                          "preprocess: only for input.kind volume (a head reads features)");
        /* Features hold no positions: a head cannot give boxes. */
        if (m->output_kind != CONFIG_OUTPUT_CLASSIFICATION &&
            m->output_kind != CONFIG_OUTPUT_REGRESSION)
            schema_report(c, at->line, at->col,
                          "output.kind: a head (input.from) gives classifications or "
                          "regressions, not %s",
                          output_kind_names[m->output_kind]);
        return;
    }
    if (m->input_kind == CONFIG_INPUT_SLICES) {
        if (inference)
            schema_report(c, inference->line, inference->col,
                          "inference: only for input.kind volume (slices are run whole)");
        const struct ynode *spacing = ynode_get(ynode_get(root, "preprocess"), "spacing");
        if (m->has_spacing)
            schema_report(c, spacing->line, spacing->col,
                          "preprocess.spacing: input.kind slices runs on the series' own grid "
                          "(none)");
        if (m->output_kind != CONFIG_OUTPUT_SEGMENTATION &&
            m->output_kind != CONFIG_OUTPUT_CLASSIFICATION)
            schema_report(c, at->line, at->col, "output.kind: %s needs input.kind image",
                          output_kind_names[m->output_kind]);
        return;
    }
    if (m->input_kind == CONFIG_INPUT_VOLUME) {
        if (!inference)
            schema_report(c, root->line, root->col,
                          "missing required key 'inference' (input.kind volume)");
        if (m->output_kind != CONFIG_OUTPUT_SEGMENTATION)
            schema_report(c, at->line, at->col,
                          "output.kind: %s needs input.kind image%s; a volume gives "
                          "segmentations",
                          output_kind_names[m->output_kind],
                          m->output_kind == CONFIG_OUTPUT_CLASSIFICATION ? " or slices" : "");
        return;
    }
    if (inference)
        schema_report(c, inference->line, inference->col,
                      "inference: only for input.kind volume (images are run whole)");
    const struct ynode *pre = ynode_get(root, "preprocess");
    if (pre)
        schema_report(c, pre->line, pre->col,
                      "preprocess: only for input.kind volume (images are prepared by "
                      "input.window, input.mean and input.std)");
    /* A segmentation of images: output [images, channels, size0, size1]
     * decided per pixel as a volume's (argmax or threshold), then mapped
     * back through each image's letterbox. Its labels are checked with the
     * output section, like every segmentation's. */
}

/* ---- input.accept ---- */

/* A non-empty sequence of distinct non-empty strings into the char ** at
 * F->off and its count at F->off_n. */
static void parse_strings(struct schema_ctx *c, const struct schema_field *f, const char *what,
                          const struct ynode *v, void *base)
{
    char ***listp = (char ***)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    char b[80];
    if (v->kind != Y_SEQ) {
        schema_report(c, v->line, v->col, "%s: expected a list of strings", what);
        return;
    }
    if (v->n == 0) {
        /* an empty list would accept nothing: surely a mistake */
        schema_report(c, v->line, v->col, "%s: must not be empty (leave the key out to accept any)",
                      what);
        return;
    }
    if (!(*listp = calloc(v->n, sizeof **listp))) {
        schema_oom(c);
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        if (it->kind == Y_ALIAS || !schema_want_string(c, what, it))
            continue;
        if (it->len == 0) {
            schema_report(c, it->line, it->col, "%s: an item must not be empty", what);
            continue;
        }
        int dup = 0;
        for (size_t j = 0; j < *np && !dup; j++)
            dup = !strcasecmp((*listp)[j], it->text);
        if (dup) {
            schema_report(c, it->line, it->col, "%s: duplicate '%s'", what,
                          schema_esc(it->text, it->len, b));
            continue;
        }
        if (!((*listp)[*np] = strdup(it->text))) {
            schema_oom(c);
            return;
        }
        (*np)++;
    }
}

/* A [min, max] pair of KEY whose min is above its max. */
static void check_order(struct schema_ctx *c, const struct schema_parsed *p, const char *key,
                        int given, double lo, double hi)
{
    if (!given || !schema_usable(p, key) || lo <= hi)
        return;
    const struct ynode *v = schema_pos_of(p, key);
    schema_report(c, v->line, v->col, "%s.%s: min (%g) must not be greater than max (%g)",
                  p->sect, key, lo, hi);
}

static void check_accept(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_accept *a = &((const struct config_manifest *)base)->accept;
    check_order(c, p, "pixel_spacing", a->has_pixel_spacing, a->pixel_spacing[0],
                a->pixel_spacing[1]);
    check_order(c, p, "slice_thickness", a->has_slice_thickness, a->slice_thickness[0],
                a->slice_thickness[1]);
    check_order(c, p, "rows", a->rows[0] > 0, a->rows[0], a->rows[1]);
    check_order(c, p, "columns", a->columns[0] > 0, a->columns[0], a->columns[1]);
}

/* accept.modality narrows which series are meant for the model; it must
 * keep the modality the model reads, or nothing could ever run. */
static void check_accept_modality(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_manifest *m = base;
    const struct config_accept *a = &m->accept;
    if (!m->modality || a->n_modality == 0)
        return;
    for (size_t i = 0; i < a->n_modality; i++)
        if (!strcasecmp(a->modality[i], m->modality))
            return;
    const struct ynode *acc = ynode_get(p->map, "accept");
    const struct ynode *v = acc ? ynode_get(acc, "modality") : NULL;
    if (!v)
        v = schema_pos_of(p, "accept");
    char b[80];
    schema_report(c, v->line, v->col, "%s.accept.modality: must include %s.modality (%s)",
                  p->sect, p->sect, schema_esc(m->modality, strlen(m->modality), b));
}

/* ---- identity: SHA-256 of the model and manifest files ---- */

static void hex_digest(const unsigned char *md, unsigned n, char out[65])
{
    for (unsigned i = 0; i < n && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The SHA-256 of LEN bytes at BUF as hex into OUT; "" when it fails. */
static void sha256_buffer(const void *buf, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    out[0] = '\0';
    if (EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) == 1 && n == 32)
        hex_digest(md, n, out);
}

/* The SHA-256 of the file at PATH into OUT; returns 0 or an errno. Read
 * in pieces: model files may be gigabytes. */
static int sha256_file(const char *path, char out[65])
{
    out[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    enum { CHUNK = 1 << 16 };
    unsigned char *chunk = malloc(CHUNK);
    int e = ctx && chunk && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : ENOMEM;
    size_t n;
    while (!e && (n = fread(chunk, 1, CHUNK, f)) > 0)
        if (EVP_DigestUpdate(ctx, chunk, n) != 1)
            e = ENOMEM;
    if (!e && ferror(f))
        e = EIO;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!e && (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32))
        e = ENOMEM;
    if (!e)
        hex_digest(md, mdlen, out);
    EVP_MD_CTX_free(ctx);
    free(chunk);
    fclose(f);
    return e;
}

/*
 * Loads the manifest at PATH into M. Its problems are reported against PATH
 * through C's callback and added to C's count. Returns 0, or an errno when
 * PATH cannot be read (for the caller to report where PATH was named).
 */
static int load_manifest(struct schema_ctx *c, const char *path, struct config_manifest *m)
{
    size_t len = 0;
    int e = 0;
    char *buf = schema_read_file(path, &len, &e);
    if (!buf)
        return e;
    sha256_buffer(buf, len, m->sha256); /* the very bytes parsed below */
    char *dir = schema_dir_of(path);
    struct schema_ctx mc = {.file = path, .fn = c->fn, .ud = c->ud, .dir = dir};
    if (!dir)
        schema_oom(&mc);
    schema_set_defaults(&mc, config_manifest_fields, config_n_manifest_fields, m);
    struct ynode *root = NULL;
    int perr = yaml_parse(&mc, buf, len, &root);
    free(buf);
    if (perr == 0) {
        struct ynode empty = {.kind = Y_MAP, .line = 1, .col = 1};
        const struct ynode *r = root && !ynode_is_null(root) ? root : &empty;
        if (r->kind == Y_MAP) {
            schema_parse_section(&mc, "", config_manifest_fields, config_n_manifest_fields, r, m,
                                 r, NULL);
            check_kinds(&mc, r, m);
            /* Images default to the study: PA and lateral are one
             * examination. A segmentation's SEG holds frames of one size,
             * and views differ in size: it defaults to the series. */
            const struct ynode *in = ynode_get(r, "input");
            if (m->input_kind == CONFIG_INPUT_IMAGE && !m->from &&
                m->output_kind != CONFIG_OUTPUT_SEGMENTATION &&
                !(in && in->kind == Y_MAP && ynode_get(in, "scope")))
                m->scope = CONFIG_SCOPE_STUDY;
        }
        else if (r->kind != Y_ALIAS)
            schema_report(&mc, r->line, r->col, "top level must be a mapping");
    }
    ynode_free(root);
    free(dir);
    c->count += mc.count;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Models and rules                                                         */

static char *builtin_dir; /* config_set_builtin_dir(); NULL: no built-in models */

void config_set_builtin_dir(const char *dir)
{
    free(builtin_dir);
    builtin_dir = dir ? strdup(dir) : NULL;
}

/* BUILTIN_DIR/NAME.EXT as an absolute path; NULL without a directory. */
static char *builtin_path(const char *name, const char *ext)
{
    if (!builtin_dir || !schema_valid_name(name, strlen(name)))
        return NULL;
    size_t n = strlen(builtin_dir) + strlen(name) + strlen(ext) + 2;
    char *rel = malloc(n);
    if (!rel)
        return NULL;
    snprintf(rel, n, "%s/%s%s", builtin_dir, name, ext);
    char *abs = schema_absolute_path(rel);
    free(rel);
    return abs;
}

#define BUILTIN_PREFIX "builtin:"

/* Resolves file: to a TorchScript file that exists, then loads the manifest. */
void config_check_model(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    struct config_model *m = base;
    const struct ynode *fv = schema_pos_of(p, "file"), *mv = schema_pos_of(p, "manifest");
    int manifest_named = p->st[schema_field_index(p, "manifest")] != 0;
    if (!m->file)
        return; /* missing or refused: already reported */

    if (!strncmp(m->file, BUILTIN_PREFIX, strlen(BUILTIN_PREFIX))) {
        const char *name = m->file + strlen(BUILTIN_PREFIX);
        char *pt = builtin_path(name, ".pt");
        struct stat st;
        if (!pt || stat(pt, &st) != 0) {
            char b[80];
            schema_report(c, fv->line, fv->col, "%s.file: unknown built-in model '%s'", p->sect,
                      schema_esc(name, strlen(name), b));
            free(pt);
        } else {
            m->builtin = 1;
            if (!manifest_named && !(m->manifest.path = builtin_path(name, ".yaml")))
                schema_oom(c);
            free(m->file);
            m->file = pt;
        }
    } else {
        char *abs = schema_resolve_path(c, m->file);
        if (!abs) {
            schema_oom(c);
            return;
        }
        free(m->file);
        m->file = abs;
        int e = schema_readable(abs);
        if (e)
            schema_report(c, fv->line, fv->col, "%s.file: cannot read %s: %s", p->sect, abs,
                          schema_file_strerror(e));
        if (!manifest_named)
            schema_report(c, p->pos->line, p->pos->col, "%s: missing required key 'manifest'", p->sect);
    }

    /* Hashed as loaded, so that every result names the exact weights. */
    if (m->file && schema_readable(m->file) == 0) {
        int he = sha256_file(m->file, m->sha256);
        if (he)
            schema_report(c, fv->line, fv->col, "%s.file: cannot hash %s: %s", p->sect, m->file,
                          schema_file_strerror(he));
    }

    if (!m->manifest.path)
        return;
    int e = load_manifest(c, m->manifest.path, &m->manifest);
    if (e && manifest_named)
        schema_report(c, mv->line, mv->col, "%s.manifest: cannot read %s: %s", p->sect,
                  m->manifest.path, schema_file_strerror(e));
    else if (e)
        schema_report(c, fv->line, fv->col, "%s.file: cannot read manifest %s: %s", p->sect,
                  m->manifest.path, schema_file_strerror(e));
}

void config_release_model(const struct schema_field *f, void *base)
{
    (void)f;
    struct config_model *m = base;
    schema_free_fields(config_manifest_fields, config_n_manifest_fields, &m->manifest);
}

/* NULL when S names a device syntactically; whether it exists is for the
 * inference runtime to say. */
const char *config_device_problem(const char *s)
{
    if (!strcmp(s, "cpu") || !strcmp(s, "cuda"))
        return NULL;
    if (strncmp(s, "cuda:", 5) != 0)
        return "is not cpu, cuda or cuda:N";
    size_t n = strspn(s + 5, "0123456789");
    if (n == 0 || n > 9 || s[5 + n])
        return "is not cpu, cuda or cuda:N";
    return NULL;
}
