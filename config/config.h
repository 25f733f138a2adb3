/*
 * config — the ainode YAML configuration file.
 *
 * One file, parsed with libfyaml, checked against one schema table
 * (config.c): every key is declared once with its type, default, range and
 * documentation. Problems are reported one per line as
 * "FILE:LINE:COLUMN: message" through a caller-supplied callback, so
 * check-config, serve and reload print exactly the same text.
 *
 * The returned struct is plain read-only data owned by the caller
 * (config_free). Relative paths in the file are resolved against the
 * directory that holds the config file, so the node finds its data whatever
 * the current directory is.
 */
#ifndef AINODE_CONFIG_H
#define AINODE_CONFIG_H

#include <stddef.h>

#include "common/log.h"

#define CONFIG_AE_MAX 16 /* DICOM AE title: at most 16 characters */


struct config_node {
    char ae_title[CONFIG_AE_MAX + 1];
    int port;                     /* 1..65535 */
    char *bind;                   /* listen address, e.g. "127.0.0.1" or "0.0.0.0" */
    char *data_dir;               /* absolute after loading */
    int stable_seconds;           /* study complete after this long idle, 1..86400 */
    int max_associations;         /* 1..1024 */
    char **allowed_callers;       /* calling AE titles; n == 0 means any */
    size_t n_allowed_callers;
    enum log_level log_level;
    int shutdown_grace_seconds;   /* bounded wait for running associations, 0..3600 */
    int network_timeout_seconds;  /* ACSE/DIMSE read timeout, 1..3600 */
    int max_pdu;                  /* max receive PDU length, 4096..131072 */
    int retention_days;           /* delete finished studies this old, 0..36500; 0 keeps them */
    int disk_high_water_percent;  /* delete oldest finished studies above this, 0..99; 0 off */
};

struct config_destination {
    char *name;
    char ae_title[CONFIG_AE_MAX + 1];
    char *host;
    int port;
    /* Failed sends are retried after retry_initial_seconds, then each wait
     * multiplied by retry_factor up to retry_max_seconds (with jitter);
     * after max_attempts an item is dead-lettered (state failed). */
    int retry_initial_seconds;
    double retry_factor;
    int retry_max_seconds;
    int max_attempts;
};

/* A coded concept: (CodeValue, CodingSchemeDesignator, CodeMeaning). */
struct config_code {
    char *value;
    char *scheme;
    char *meaning;
};

/* One output label of a model (a segment of its results). */
struct config_label {
    int value;                     /* label number in the output, 1..255 */
    char *name;                    /* Segment Label */
    struct config_code category;   /* Segmented Property Category (SNOMED CT) */
    struct config_code type;       /* Segmented Property Type (SNOMED CT) */
    int color[3];                  /* display colour, sRGB 0..255 */
};

enum config_blend { CONFIG_BLEND_CONSTANT = 0, CONFIG_BLEND_GAUSSIAN };
enum config_decision { CONFIG_DECISION_ARGMAX = 0, CONFIG_DECISION_THRESHOLD };

/* What a model accepts, how its input is prepared, how it is run and what
 * its output means: one manifest file per model. */
struct config_manifest {
    char *path;                    /* absolute path of the manifest */
    char *algorithm_name;
    char *algorithm_version;
    struct config_code algorithm_family;
    char *modality;                /* input.modality, e.g. "CT" */
    int min_slices;                /* input.min_slices, default 1 */
    int has_spacing;               /* preprocess.spacing other than "none" */
    double spacing[3];             /* column, row, slice (mm) */
    int has_clip;
    double clip[2];                /* preprocess.clip: [low, high] after rescale */
    double scale_offset;           /* preprocess.scale: input = (v + offset) * factor */
    double scale_factor;
    int patch[3];                  /* inference.patch: z, y, x */
    int margin[3];                 /* inference.margin: z, y, x, default 0 */
    double overlap;                /* inference.overlap, 0 <= overlap < 1 */
    enum config_blend blend;       /* inference.blend: constant | gaussian */
    int channels;                  /* output.channels */
    enum config_decision decision; /* output.decision: argmax | threshold */
    double threshold;              /* output.threshold */
    struct config_label *labels;   /* output.labels, by increasing value: 1..n */
    size_t n_labels;
    char *series_description;      /* output.series_description, or NULL */
    int series_number;             /* output.series_number (the SEG's; the SR's is +1) */
};

struct config_model {
    char *name;
    char *file;                    /* absolute path of the TorchScript file */
    int builtin;                   /* file was given as builtin:NAME */
    char *device;                  /* "cpu", "cuda" or "cuda:N" */
    int threads;                   /* intra-op threads per worker, 1..256 */
    int workers;                   /* worker threads, 1..64 */
    struct config_manifest manifest;
};

/* How a condition compares the series' value of its attribute. */
enum config_op {
    CONFIG_OP_EQUALS = 0,  /* Attr: X */
    CONFIG_OP_ONE_OF,      /* Attr: [X, Y] */
    CONFIG_OP_REGEX,       /* Attr: {regex: R}: searched, caseless (PCRE2) */
    CONFIG_OP_GLOB,        /* Attr: {glob: G}: fnmatch */
    CONFIG_OP_RANGE,       /* Attr: {range: [low, high]}: numeric, inclusive */
    CONFIG_OP_CONTAINS,    /* Attr: {contains: X}: one of the backslash-separated values */
    CONFIG_OP_PRESENT,     /* Attr: {present: true|false} */
};

/* One condition on one attribute of a series. Text comparisons (equals,
 * one of, glob, contains) ignore case except for UID attributes (exact). */
struct config_condition {
    char *attribute;               /* one of config_rule_attributes[] */
    enum config_op op;
    char **values;                 /* equals: 1, one of: n, regex/glob/contains: the pattern */
    size_t n_values;
    void *regex;                   /* CONFIG_OP_REGEX: the compiled pcre2_code */
    double range[2];               /* CONFIG_OP_RANGE: low, high (low <= high) */
    int present;                   /* CONFIG_OP_PRESENT: 1 true, 0 false */
    int exact;                     /* a UID attribute: compared case-sensitively */
    int line, column;              /* of the attribute's key in the file */
};

/* All conditions hold, at least one of ANY holds (when n_any > 0) and NOT
 * (when given) does not hold. An empty match holds for every series. */
struct config_match {
    struct config_condition *conditions;
    size_t n_conditions;
    struct config_match *any;
    size_t n_any;
    struct config_match *not;      /* NULL when absent */
};

enum config_priority {
    CONFIG_PRIORITY_STAT = 0,
    CONFIG_PRIORITY_NORMAL,
    CONFIG_PRIORITY_LOW,
};

/* What happens to a series of a completed study. */
struct config_rule {
    char *name;
    struct config_match match;     /* match:, any: and not: of the rule */
    char **run;                    /* model names, each defined under models: */
    size_t n_run;
    char **send_to;                /* send_results_to: destination names */
    size_t n_send_to;
    char **forward_to;             /* destinations receiving the original instances */
    size_t n_forward_to;
    enum config_priority priority; /* default CONFIG_PRIORITY_NORMAL */
    int continues;                 /* continue: true: later rules may match too */
};

/* The attributes a rule condition may name, NULL-terminated. */
extern const char *const config_rule_attributes[];

/* 1 when MATCH holds for every series (no condition, any or not). */
int config_match_is_empty(const struct config_match *match);

enum config_on_max_wait { CONFIG_ON_MAX_WAIT_PROCESS = 0, CONFIG_ON_MAX_WAIT_DISCARD };

/* When a study counts as complete, besides stable_seconds of silence. */
struct config_completion {
    /* required_series: the study completes as soon as every one of these
     * matches (required.any[i]) is met by one of its series. */
    struct config_match required;
    int max_wait_seconds;          /* since the first instance; 0: no limit */
    enum config_on_max_wait on_max_wait; /* process what arrived, or discard it */
};

struct config {
    char *path;                   /* absolute path of the file that was loaded */
    struct config_completion completion;
    struct config_node node;
    struct config_destination *destinations;
    size_t n_destinations;
    struct config_model *models;
    size_t n_models;
    struct config_rule *rules;
    size_t n_rules;
};

/* Where "builtin:NAME" models live: NAME.pt (TorchScript) and NAME.yaml
 * (its manifest). Set once before config_load(); NULL means none. */
void config_set_builtin_dir(const char *dir);

/* The model called NAME, or NULL. */
const struct config_model *config_find_model(const struct config *cfg, const char *name);

/* The destination called NAME, or NULL. */
const struct config_destination *config_find_destination(const struct config *cfg,
                                                         const char *name);

/* Receives one "FILE:LINE:COLUMN: message" line (no trailing newline). */
typedef void (*config_error_fn)(void *ud, const char *line);

/*
 * Loads and validates PATH. Returns 0 and sets *out on success; on any
 * problem returns the (positive) number of problems reported through ERR and
 * leaves *out NULL. A file that cannot be read is reported as "FILE: reason".
 */
int config_load(const char *path, struct config **out, config_error_fn err, void *ud);

void config_free(struct config *cfg);

/* 1 when AE is allowed to call us under CFG (empty list allows any). */
int config_caller_allowed(const struct config *cfg, const char *ae);

#endif
