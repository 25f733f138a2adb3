/*
 * config — the ainode YAML configuration file.
 *
 * One file, parsed with libfyaml, checked against one schema table
 * (tables.c): every key is declared once with its type, default, range,
 * documentation and whether a reload may change it; docs/configuration.md
 * is generated from the same tables. Problems are reported one per line as
 * "FILE:LINE:COLUMN: message" through a caller-supplied callback, so
 * check-config, serve and reload print exactly the same text.
 *
 * The returned struct is plain read-only data, reference-counted
 * (config_ref, config_unref) so that a reload can replace it while
 * threads still use the old one. Relative paths in the file are resolved against the
 * directory that holds the config file, so the node finds its data whatever
 * the current directory is.
 */
#ifndef AINODE_CONFIG_H
#define AINODE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "common/log.h"
#include "rules/rules.h"

#define CONFIG_AE_MAX 16 /* DICOM AE title: at most 16 characters */

/* An address block of node.allowed_addresses. IPv4 blocks are held in
 * their IPv4-mapped IPv6 form (::ffff:a.b.c.d, prefix + 96). */
struct config_cidr {
    unsigned char addr[16];
    int prefix;                   /* 0..128, on the 16-byte form */
};


/* What happens to an instance that contradicts the store (its SOP Instance
 * UID or series stored elsewhere, its patient with other demographics). */
enum config_conflicts { CONFIG_CONFLICTS_REFUSE = 0, CONFIG_CONFLICTS_QUARANTINE };

/* node.tls.verify_client: what a TLS caller must show. */
enum config_verify_client {
    CONFIG_VERIFY_CLIENT_REQUIRED = 0, /* a certificate signed by one of ca_certificates */
    CONFIG_VERIFY_CLIENT_OPTIONAL,     /* none, or one signed by one of ca_certificates */
    CONFIG_VERIFY_CLIENT_OFF,          /* any or none */
};

/* node.tls: a DICOM TLS listener besides the plain port. */
struct config_node_tls {
    int enabled;                  /* the section is in the file */
    int port;                     /* 1..65535, not node.port */
    char *certificate;            /* PEM, absolute */
    char *private_key;            /* PEM, not encrypted, absolute */
    char *ca_certificates;        /* PEM bundle, absolute; NULL only with verify_client off */
    enum config_verify_client verify_client;
    int callers_match_certificate; /* a TLS caller's AE title must be its certificate's CN */
};

/* destinations.NAME.tls: send to this destination over TLS. */
struct config_destination_tls {
    int enabled;                  /* the section is in the file */
    char *ca_certificates;        /* PEM bundle the peer's certificate must chain to */
    char *certificate;            /* ours, optional; with private_key */
    char *private_key;
    int verify_server;            /* 1: check the peer's certificate (default) */
};

/* node.http.tls: HTTPS instead of HTTP. */
struct config_http_tls {
    int enabled;                  /* the section is in the file */
    char *certificate;            /* PEM, absolute */
    char *private_key;            /* PEM, not encrypted, absolute; not readable by every user */
};

/* node.http: the HTTP admin endpoint (health, metrics, API, status page). */
struct config_node_http {
    int enabled;                  /* the section is in the file; absent: no HTTP endpoint */
    char *bind;                   /* listen address; other than loopback needs TOKEN_FILE */
    int port;                     /* 1..65535, not node.port nor node.tls.port */
    char *token_file;             /* the bearer token, absolute; NULL: none (no POST) */
    struct config_http_tls tls;
};

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
    enum log_format log_format;
    int shutdown_grace_seconds;   /* bounded wait for running associations, 0..3600 */
    int network_timeout_seconds;  /* ACSE/DIMSE read timeout, 1..3600 */
    int max_pdu;                  /* max receive PDU length, 4096..131072 */
    int retention_days;           /* delete finished studies this old, 0..36500; 0 keeps them */
    int disk_high_water_percent;  /* delete oldest finished studies above this, 0..99; 0 off */
    int artim_timeout_seconds;    /* a new connection's association request within, 1..3600 */
    struct config_cidr *allowed_addresses; /* peers' address blocks; n == 0 means any */
    size_t n_allowed_addresses;
    int allow_any_caller;         /* a bind other hosts reach may have no caller/address list */
    int max_associations_per_caller; /* concurrent associations of one calling AE, 1..1024 */
    int max_association_seconds;  /* an association is aborted after this long, 1..604800 */
    int max_dataset_mb;           /* largest data set, as received and once inflated, 1..1048576 */
    int min_free_disk_mb;         /* C-STOREs refused (0xA700) below this free space; 0 off */
    int max_job_memory_mb;        /* float volume one job may hold, MiB */
    enum config_conflicts integrity_conflicts; /* what happens to a contradicting instance */
    struct config_node_tls tls;   /* TLS listener */
    int audit_retention_days;     /* delete audit rows this old, 0..36500; 0 keeps them */
    struct config_node_http http; /* the HTTP admin endpoint */
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
    struct config_destination_tls tls; /* TLS towards this peer */
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

/* One class of a classification model: output channel VALUE - 1. */
struct config_class {
    int value;                     /* class number, 1..255: output channel value - 1 */
    char *name;                    /* Tracking Identifier of its SR group */
    struct config_code finding;    /* what it finds (SNOMED CT, RadLex, ...) */
    double threshold;              /* probability at or above which it is present */
};

/* One named value of a regression model: output channel VALUE - 1. */
struct config_value {
    int value;                     /* value number, 1..255: output channel value - 1 */
    char *name;                    /* Tracking Identifier of its SR group */
    struct config_code concept;    /* what is measured */
    struct config_code unit;       /* its unit (UCUM) */
};

/* input.kind: what one model input is made of. */
enum config_input_kind {
    CONFIG_INPUT_VOLUME = 0,       /* the series as one 3-D volume, patch by patch */
    CONFIG_INPUT_IMAGE,            /* each 2-D image (each frame) on its own, letterboxed */
    CONFIG_INPUT_SLICES,           /* the series' slices in order, with neighbours (2.5-D) */
};

/* input.scope: what one job of the model covers. */
enum config_scope {
    CONFIG_SCOPE_SERIES = 0,       /* one series */
    CONFIG_SCOPE_STUDY,            /* every series of the study routed to it (images) */
};

/* output.kind: what the model's output means. */
enum config_output_kind {
    CONFIG_OUTPUT_SEGMENTATION = 0, /* a label per voxel -> SEG and volume SR */
    CONFIG_OUTPUT_CLASSIFICATION,   /* a score per class -> SR findings */
    CONFIG_OUTPUT_EMBEDDING,        /* features per image, for the heads reading them */
    CONFIG_OUTPUT_REGRESSION,       /* named values per image -> SR measurements */
    CONFIG_OUTPUT_DETECTION,        /* boxes with class and score -> SR planar regions */
};

enum config_activation { CONFIG_ACTIVATION_SOFTMAX = 0, CONFIG_ACTIVATION_SIGMOID,
                         CONFIG_ACTIVATION_NONE };
enum config_aggregate { CONFIG_AGGREGATE_MAX = 0, CONFIG_AGGREGATE_MEAN };

enum config_blend { CONFIG_BLEND_CONSTANT = 0, CONFIG_BLEND_GAUSSIAN };
enum config_decision { CONFIG_DECISION_ARGMAX = 0, CONFIG_DECISION_THRESHOLD };

/* input.accept: the series a model is meant for. A series that fails any
 * given filter is recorded as not applicable and never runs (rules/accept.c).
 * Lists compare ignoring case; ranges are inclusive; n == 0 or has_* == 0
 * (rows/columns [0, 0]) means the filter is not given. */
struct config_accept {
    char **modality;               /* Modality; includes input.modality */
    size_t n_modality;
    char **body_part;              /* BodyPartExamined */
    size_t n_body_part;
    char **view_position;          /* ViewPosition */
    size_t n_view_position;
    char **photometric;            /* PhotometricInterpretation */
    size_t n_photometric;
    int has_pixel_spacing;
    double pixel_spacing[2];       /* [min, max] mm, both PixelSpacing values */
    int has_slice_thickness;
    double slice_thickness[2];     /* [min, max] mm */
    int rows[2];                   /* [min, max] Rows */
    int columns[2];                /* [min, max] Columns */
};

/* What a model accepts, how its input is prepared, how it is run and what
 * its output means: one manifest file per model. */
struct config_manifest {
    char *path;                    /* absolute path of the manifest */
    char *algorithm_name;
    char *algorithm_version;
    struct config_code algorithm_family;
    char *modality;                /* input.modality, e.g. "CT"; NULL for a head */
    char *from;                    /* input.from: a head reads this encoder's features */
    enum config_input_kind input_kind; /* input.kind */
    int size[2];                   /* input.size: rows, columns of an image input */
    int in_channels;               /* input.channels: 1 (grey) or 3 (RGB) */
    int has_window;
    double window[2];              /* input.window: centre, width; else the image's own */
    int n_mean, n_std;             /* input.mean / input.std: one per channel, or none */
    double mean[3], std[3];
    enum config_scope scope;       /* input.scope; default study for images, else series */
    int batch;                     /* input.batch: images (slices) per forward */
    int context;                   /* input.context: neighbouring slices on each side */
    int min_slices;                /* input.min_slices, default 1 */
    int max_voxels;                /* input.max_voxels; 0: node.max_job_memory_mb decides */
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
    enum config_output_kind output_kind; /* output.kind */
    int channels;                  /* output.channels */
    enum config_activation activation; /* output.activation (classification) */
    enum config_aggregate aggregate;   /* output.aggregate: over the images of a series */
    struct config_class *classes;  /* output.classes, by increasing value: 1..n */
    size_t n_classes;
    struct config_value *values;   /* output.values, by increasing value: 1..n (regression) */
    size_t n_values;
    double score_threshold;        /* output.score_threshold: boxes below are dropped */
    int max_boxes;                 /* output.max_boxes: rows per image of a detection */
    enum config_decision decision; /* output.decision: argmax | threshold */
    double threshold;              /* output.threshold */
    struct config_label *labels;   /* output.labels, by increasing value: 1..n */
    size_t n_labels;
    char *series_description;      /* output.series_description, or NULL */
    int series_number;             /* output.series_number (the SEG's; the SR's is +1) */
    char *intended_use;            /* algorithm.intended_use, or NULL */
    struct config_accept accept;   /* input.accept */
    char sha256[65];               /* of the manifest file as read, lower-case hex */
};

/* The number format a model runs in (inference.h's enum infer_precision,
 * same values). fp16 and bf16 need a CUDA device. */
enum config_precision { CONFIG_PRECISION_FP32 = 0, CONFIG_PRECISION_FP16, CONFIG_PRECISION_BF16 };

struct config_model {
    char *name;
    char *file;                    /* absolute path of the TorchScript file */
    int builtin;                   /* file was given as builtin:NAME */
    char *device;                  /* "cpu", "cuda" or "cuda:N" */
    int threads;                   /* intra-op threads per worker, 1..256 */
    int workers;                   /* worker threads, 1..64 */
    enum config_precision precision; /* fp32 (default), fp16 or bf16 (CUDA only) */
    struct config_manifest manifest;
    char sha256[65];               /* of the model file when loaded, lower-case hex; "" unread */
    /* The voxels one job of this model may hold: node.max_job_memory_mb,
     * lowered by the manifest's input.max_voxels. Set by config_load. */
    size_t job_max_voxels;
};

enum config_on_max_wait { CONFIG_ON_MAX_WAIT_PROCESS = 0, CONFIG_ON_MAX_WAIT_DISCARD };

/* When a study counts as complete, besides stable_seconds of silence. */
struct config_completion {
    /* required_series: the study completes as soon as every one of these
     * matches (required.any[i]) is met by one of its series. */
    struct rules_match required;
    int max_wait_seconds;          /* since the first instance; 0: no limit */
    enum config_on_max_wait on_max_wait; /* process what arrived, or discard it */
};

/* A loaded configuration: read-only once loaded, shared between threads,
 * freed when its last reference goes (config_unref). */
struct config {
    char *path;                   /* absolute path of the file that was loaded */
    struct config_completion completion;
    struct config_node node;
    struct config_destination *destinations;
    size_t n_destinations;
    struct config_model *models;
    size_t n_models;
    struct rules_rule *rules;     /* in order: the first that matches decides (rules.h) */
    size_t n_rules;
    _Atomic int refs;             /* config_ref / config_unref */
};

/* Where "builtin:NAME" models live: NAME.pt (TorchScript) and NAME.yaml
 * (its manifest). Set once before config_load(); NULL means none. */
void config_set_builtin_dir(const char *dir);

/* The model called NAME, or NULL. */
const struct config_model *config_find_model(const struct config *cfg, const char *name);

/* The destination called NAME, or NULL. */
const struct config_destination *config_find_destination(const struct config *cfg,
                                                         const char *name);

/* Error codes of config functions: 0 or one of these. */
enum {
    CONFIG_EINVALID = -1,         /* the file has problems, each reported as a line */
    CONFIG_EREAD = -2,            /* the file cannot be read (reported as "FILE: reason") */
    CONFIG_ENOMEM = -3,
};

/* A short text for a CONFIG_E* code. */
const char *config_strerror(int code);

/* Receives one "FILE:LINE:COLUMN: message" line (no trailing newline). */
typedef void (*config_error_fn)(void *ud, const char *line);

/*
 * Loads and validates PATH. Returns 0 and sets *out (holding one
 * reference) on success; otherwise reports every problem through ERR, one
 * line each, returns a CONFIG_E* code and leaves *out NULL. A file that
 * cannot be read is reported as "FILE: reason".
 */
int config_load(const char *path, struct config **out, config_error_fn err, void *ud);

/* Takes one more reference to CFG; returns CFG. */
struct config *config_ref(struct config *cfg);
/* Drops one reference; the last frees CFG. NULL is accepted. */
void config_unref(struct config *cfg);
/* The same as config_unref: for a configuration its loader alone holds. */
void config_free(struct config *cfg);

/*
 * The keys marked restart-only (a running node applies them only when it
 * starts: listen address and port, data directory, ...) whose values differ
 * between OLD and NEW. Returns how many differ (0: NEW may replace OLD) and
 * writes their names, comma-separated, into BUF (LEN bytes).
 */
int config_restart_changes(const struct config *old, const struct config *new, char *buf,
                           size_t len);

/* Writes the configuration reference (docs/configuration.md), generated
 * from the key tables and the attribute table, to OUT. */
void config_write_reference(FILE *out);

/* 1 when AE is allowed to call us under CFG (empty list allows any). */
int config_caller_allowed(const struct config *cfg, const char *ae);

/* 1 when a peer at ADDRESS (numeric IPv4 or IPv6 text) may connect under
 * CFG: node.allowed_addresses holds a block with it, or is empty. */
int config_address_allowed(const struct config *cfg, const char *address);

/* Parses S, "ADDRESS" or "ADDRESS/PREFIX" (IPv4 or IPv6), into OUT.
 * Returns NULL, or why S is refused (a phrase to follow the value). */
const char *config_cidr_parse(const char *s, struct config_cidr *out);

/* The longest bearer token node.http.token_file may hold. */
#define CONFIG_TOKEN_MAX 1024

/* Reads the bearer token of node.http.token_file PATH into BUF (LEN
 * bytes): its first line, blanks around it removed, 16 to
 * CONFIG_TOKEN_MAX printable ASCII characters. Returns 0, or -1 with why
 * it cannot be used in ERR (which never holds the token). */
int config_read_token(const char *path, char *buf, size_t len, char *err, size_t errlen);

/* 1 when BIND (node.bind) is a loopback address: 127.0.0.0/8, ::1 or
 * "localhost"; other names and addresses may be reachable from other hosts. */
int config_bind_is_loopback(const char *bind);

#endif
