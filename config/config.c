/*
 * config — load and validate the ainode YAML configuration.
 *
 * The file is read with libfyaml's event parser into a small tree that keeps
 * the position of every key and value, then checked section by section
 * against the schema tables below. Building our own tree (rather than a
 * fy_document) gives positions for collections too and lets duplicate keys
 * be reported where they occur instead of aborting the parse.
 *
 * Each model's manifest is a YAML file of its own, read with the same tree
 * and tables; its problems are reported against the manifest's path and
 * count toward the config's total.
 */
#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Error reporting                                                          */

struct ynode;

struct ctx {
    const char *file; /* as given by the caller; a manifest's absolute path */
    config_error_fn fn;
    void *ud;
    int count;
    const char *dir;            /* directory of FILE, absolute: relative paths start there */
    const struct ynode *models; /* the models: mapping, for rules naming models */
    const struct ynode *destinations; /* the destinations: mapping, likewise */
};

static void emit(struct ctx *c, int line, int col, const char *fmt, va_list ap)
{
    char msg[512];
    char out[sizeof msg + 64];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* One problem, one line: never let a message span lines. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (line > 0)
        snprintf(out, sizeof out, "%s:%d:%d: %s", c->file, line, col > 0 ? col : 1, msg);
    else
        snprintf(out, sizeof out, "%s: %s", c->file, msg);
    c->count++;
    if (c->fn)
        c->fn(c->ud, out);
}

__attribute__((format(printf, 4, 5)))
static void report_at(struct ctx *c, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(c, line, col, fmt, ap);
    va_end(ap);
}

static int oom(struct ctx *c)
{
    report_at(c, 0, 0, "out of memory");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A minimal YAML tree with positions                                       */

enum ykind { Y_SCALAR, Y_MAP, Y_SEQ, Y_ALIAS };

struct ynode {
    enum ykind kind;
    int line, col;       /* 1-based; 0 when the parser gave no position */
    char *text;          /* scalar content, NUL-terminated copy */
    size_t len;          /* may contain NULs from escapes, hence the length */
    int plain, tagged;
    struct ynode **kids; /* mapping: key, value, key, value ...; sequence: items */
    size_t n, cap;
};

static void ynode_free(struct ynode *y)
{
    if (!y)
        return;
    for (size_t i = 0; i < y->n; i++)
        ynode_free(y->kids[i]);
    free(y->kids);
    free(y->text);
    free(y);
}

static int ynode_add(struct ynode *parent, struct ynode *kid)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct ynode **k = realloc(parent->kids, cap * sizeof *k);
        if (!k)
            return -1;
        parent->kids = k;
        parent->cap = cap;
    }
    /* An empty value has no position of its own; point at its key instead. */
    if (kid->line <= 0 && parent->n > 0 && parent->kind == Y_MAP && parent->n % 2 == 1) {
        kid->line = parent->kids[parent->n - 1]->line;
        kid->col = parent->kids[parent->n - 1]->col;
    } else if (kid->line <= 0) {
        kid->line = parent->line;
        kid->col = parent->col;
    }
    parent->kids[parent->n++] = kid;
    return 0;
}

static int is_null(const struct ynode *y)
{
    if (!y)
        return 1;
    if (y->kind != Y_SCALAR || !y->plain || y->tagged)
        return 0;
    return !strcmp(y->text, "") || !strcmp(y->text, "~") || !strcmp(y->text, "null") ||
           !strcmp(y->text, "Null") || !strcmp(y->text, "NULL");
}

static struct ynode *ynode_from_event(struct fy_event *ev)
{
    struct ynode *y = calloc(1, sizeof *y);
    if (!y)
        return NULL;
    const struct fy_mark *m = fy_event_start_mark(ev);
    if (m && m->line >= 0) {
        y->line = m->line + 1;
        y->col = m->column + 1;
    }
    switch (ev->type) {
    case FYET_SCALAR: {
        size_t len = 0;
        const char *t = fy_token_get_text(ev->scalar.value, &len);
        y->kind = Y_SCALAR;
        y->text = malloc(len + 1);
        if (!y->text) {
            free(y);
            return NULL;
        }
        if (len)
            memcpy(y->text, t, len);
        y->text[len] = '\0';
        y->len = len;
        enum fy_scalar_style st = fy_token_scalar_style(ev->scalar.value);
        y->plain = st == FYSS_PLAIN;
        /* libfyaml marks the first character inside the quotes; point at the quote. */
        if ((st == FYSS_SINGLE_QUOTED || st == FYSS_DOUBLE_QUOTED) && y->col > 1)
            y->col--;
        y->tagged = ev->scalar.tag != NULL;
        break;
    }
    case FYET_MAPPING_START:
        y->kind = Y_MAP;
        break;
    case FYET_SEQUENCE_START:
        y->kind = Y_SEQ;
        break;
    default:
        y->kind = Y_ALIAS;
        if (y->col > 1)
            y->col--; /* libfyaml marks the name after '*' */
        break;
    }
    return y;
}

/* Keeps the first line libfyaml prints instead of collecting (a few
 * errors bypass collection); nothing reaches stderr. */
struct diag_text {
    char line[256];
    int have;
};

static void diag_sink(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    struct diag_text *dt = user;
    (void)diag;
    if (dt->have)
        return;
    size_t n = 0;
    while (n < len && n + 1 < sizeof dt->line && buf[n] != '\n')
        n++;
    memcpy(dt->line, buf, n);
    dt->line[n] = '\0';
    dt->have = 1;
}

static void report_syntax(struct ctx *c, struct fy_diag *diag, const struct diag_text *dt)
{
    int before = c->count;
    void *it = NULL;
    struct fy_diag_error *de;
    while ((de = fy_diag_errors_iterate(diag, &it)))
        if (de->type >= FYET_ERROR)
            report_at(c, de->line, de->column, "%s", de->msg ? de->msg : "YAML syntax error");
    if (c->count != before)
        return;
    int line, col, off = -1;
    /* printed form with show_position: "<LINE:COLUMN>: message", 0-based */
    if (dt->have && sscanf(dt->line, " <%d:%d>: %n", &line, &col, &off) == 2 && off > 0)
        report_at(c, line + 1, col + 1, "%s", dt->line + off);
    else
        report_at(c, 0, 0, "%s", dt->have && dt->line[0] ? dt->line : "YAML syntax error");
}

#define MAX_DEPTH 64 /* far beyond any sane config; bounds recursion */

/*
 * Parses BUF into *ROOT (NULL for an empty stream). Syntax errors and
 * unsupported constructs are reported; returns -1 when the tree is unusable.
 */
static int parse_tree(struct ctx *c, const char *buf, size_t len, struct ynode **root)
{
    struct diag_text dt = {.have = 0};
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_sink;
    dcfg.user = &dt;
    dcfg.level = FYET_ERROR;
    dcfg.colorize = false;
    dcfg.show_source = false;
    dcfg.show_type = false;
    dcfg.show_module = false;
    dcfg.show_position = true;
    dcfg.position_width = 0;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    if (!diag) {
        oom(c);
        return -1;
    }
    fy_diag_set_collect_errors(diag, true);

    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_ALLOW_DUPLICATE_KEYS, .diag = diag};
    struct fy_parser *fyp = fy_parser_create(&pcfg);
    if (!fyp || fy_parser_set_string(fyp, buf, len) != 0) {
        if (fyp)
            fy_parser_destroy(fyp);
        fy_diag_destroy(diag);
        oom(c);
        return -1;
    }

    struct ynode *stack[MAX_DEPTH];
    size_t depth = 0;
    int docs = 0, failed = 0, doc_error_pending = 0;
    struct fy_event *ev;
    *root = NULL;

    while ((ev = fy_parser_parse(fyp))) {
        enum fy_event_type t = ev->type;
        const struct fy_mark *m = fy_event_start_mark(ev);
        int has_pos = m && m->line >= 0;
        if (t == FYET_DOCUMENT_START && ++docs > 1) {
            failed = 1;
            doc_error_pending = 1; /* an implicit start has no position; use the next event's */
        }
        if (doc_error_pending && (has_pos || t == FYET_STREAM_END)) {
            report_at(c, has_pos ? m->line + 1 : 0, has_pos ? m->column + 1 : 0,
                      "only one YAML document is allowed");
            doc_error_pending = 0;
        }
        if (failed) {
            fy_parser_event_free(fyp, ev);
            continue; /* keep going so later syntax errors still surface */
        }
        if (t == FYET_SCALAR || t == FYET_ALIAS || t == FYET_MAPPING_START ||
            t == FYET_SEQUENCE_START) {
            struct ynode *y = ynode_from_event(ev);
            int is_coll = t == FYET_MAPPING_START || t == FYET_SEQUENCE_START;
            if (!y) {
                oom(c);
                failed = 1;
            } else if (depth == 0) {
                if (!y->line)
                    y->line = y->col = 1;
                *root = y;
            } else if (ynode_add(stack[depth - 1], y) != 0) {
                ynode_free(y);
                y = NULL;
                oom(c);
                failed = 1;
            }
            if (y && t == FYET_ALIAS)
                report_at(c, y->line, y->col, "aliases are not supported");
            if (y && is_coll) {
                if (depth == MAX_DEPTH) {
                    report_at(c, y->line, y->col, "nested deeper than %d levels", MAX_DEPTH);
                    failed = 1;
                } else {
                    stack[depth++] = y;
                }
            }
        } else if ((t == FYET_MAPPING_END || t == FYET_SEQUENCE_END) && depth > 0) {
            depth--;
        }
        fy_parser_event_free(fyp, ev);
    }

    if (fy_parser_get_stream_error(fyp)) {
        report_syntax(c, diag, &dt);
        failed = 1;
    }

    fy_parser_destroy(fyp);
    fy_diag_destroy(diag); /* also frees the collected errors */
    if (failed) {
        ynode_free(*root);
        *root = NULL;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Schema                                                                   */

enum ftype {
    T_INT,     /* int, range-checked */
    T_STR,     /* char *, non-empty; .valid may refuse more */
    T_PATH,    /* char *, made absolute against the file's directory */
    T_AE,      /* char[CONFIG_AE_MAX + 1] */
    T_AE_LIST, /* char ** plus a size_t count at off_n */
    T_ENUM,    /* int-sized enum, value is the index in names[] */
    T_FLOAT,   /* double, a YAML int or float passing .fcheck */
    T_INTS,    /* int[count], each in min..max */
    T_FLOATS,  /* double[count], each passing .fcheck, plus an int at off_n set to 1 when given */
    T_SECTION, /* nested mapping: fields sub[] applied at base + off, then check() */
    T_CUSTOM,  /* parse() does it all; release() frees what it kept */
};

/* Limits on a T_FLOAT or T_FLOATS value. */
enum fcheck {
    F_ANY,      /* any finite number */
    F_POSITIVE, /* > 0 */
    F_NONZERO,  /* != 0 */
    F_UNIT,     /* 0 <= x < 1 */
};

struct field;

/* What parse_section saw in one mapping, for checks across its fields. */
#define MAX_FIELDS 32
struct parsed {
    const char *sect;
    const struct field *fs;
    size_t nf;
    const struct ynode *map, *pos;
    unsigned char st[MAX_FIELDS]; /* per field: 0 absent, 1 accepted, 2 rejected */
};

typedef void (*check_fn)(struct ctx *c, const struct parsed *p, void *base);
typedef void (*parse_fn)(struct ctx *c, const struct field *f, const char *what,
                         const struct ynode *v, void *base);

struct field {
    const char *key;
    enum ftype type;
    int required;
    long long def_int;
    const char *def_str;
    double def_float;
    long long min, max;
    size_t off, off_n;
    int count;                           /* T_INTS, T_FLOATS: number of items */
    enum fcheck fcheck;                  /* T_FLOAT, T_FLOATS */
    const char *none;                    /* T_FLOATS: a word that stands for "not given" */
    const char *const *names;            /* T_ENUM, NULL-terminated */
    const char *(*valid)(const char *s); /* T_STR: NULL, or why S is refused */
    const struct field *sub;             /* T_SECTION */
    size_t n_sub;
    check_fn check;                      /* T_SECTION: after its fields are set */
    parse_fn parse;                      /* T_CUSTOM */
    void (*release)(const struct field *f, void *base); /* T_CUSTOM */
    const char *doc;
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define SUB(t) .sub = (t), .n_sub = NELEM(t)

_Static_assert(sizeof(enum log_level) == sizeof(int), "log level stored as int");
_Static_assert(sizeof(enum config_blend) == sizeof(int), "blend stored as int");
_Static_assert(sizeof(enum config_decision) == sizeof(int), "decision stored as int");

static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const blend_names[] = {"constant", "gaussian", NULL};
static const char *const decision_names[] = {"argmax", "threshold", NULL};

static const char *device_problem(const char *s);
static void check_model(struct ctx *c, const struct parsed *p, void *base);
static void check_preprocess(struct ctx *c, const struct parsed *p, void *base);
static void check_inference(struct ctx *c, const struct parsed *p, void *base);
static void check_output(struct ctx *c, const struct parsed *p, void *base);
static void parse_labels(struct ctx *c, const struct field *f, const char *what,
                         const struct ynode *v, void *base);
static void release_labels(const struct field *f, void *base);
static void parse_match(struct ctx *c, const struct field *f, const char *what,
                        const struct ynode *v, void *base);
static void parse_run(struct ctx *c, const struct field *f, const char *what,
                      const struct ynode *v, void *base);
static void parse_rule_any(struct ctx *c, const struct field *f, const char *what,
                           const struct ynode *v, void *base);
static void parse_rule_not(struct ctx *c, const struct field *f, const char *what,
                           const struct ynode *v, void *base);
static void parse_flag(struct ctx *c, const struct field *f, const char *what,
                       const struct ynode *v, void *base);
static void release_match(const struct field *f, void *base);
static void check_rule(struct ctx *c, const struct parsed *p, void *base);
static void release_str(const struct field *f, void *base);
static void release_str_list(const struct field *f, void *base);

#define NODE_OFF(m) offsetof(struct config_node, m)
#define DEST_OFF(m) offsetof(struct config_destination, m)
#define MODEL_OFF(m) offsetof(struct config_model, m)
#define RULE_OFF(m) offsetof(struct config_rule, m)
#define MAN_OFF(m) offsetof(struct config_manifest, m)
#define CODE_OFF(m) offsetof(struct config_code, m)
#define LABEL_OFF(m) offsetof(struct config_label, m)

static const struct field node_fields[] = {
    {.key = "ae_title", .type = T_AE, .def_str = "AINODE", .off = NODE_OFF(ae_title),
     .doc = "AE title of this node"},
    {.key = "port", .type = T_INT, .def_int = 11112, .min = 1, .max = 65535, .off = NODE_OFF(port),
     .doc = "TCP port to listen on"},
    {.key = "bind", .type = T_STR, .def_str = "127.0.0.1", .off = NODE_OFF(bind),
     .doc = "listen address"},
    {.key = "data_dir", .type = T_PATH, .def_str = "./var", .off = NODE_OFF(data_dir),
     .doc = "data directory, relative to the config file's directory"},
    {.key = "stable_seconds", .type = T_INT, .def_int = 10, .min = 1, .max = 86400,
     .off = NODE_OFF(stable_seconds), .doc = "idle time after which a study is complete"},
    {.key = "max_associations", .type = T_INT, .def_int = 32, .min = 1, .max = 1024,
     .off = NODE_OFF(max_associations), .doc = "concurrent associations accepted"},
    {.key = "allowed_callers", .type = T_AE_LIST, .off = NODE_OFF(allowed_callers),
     .off_n = NODE_OFF(n_allowed_callers), .doc = "calling AE titles allowed; empty allows any"},
    {.key = "log_level", .type = T_ENUM, .def_int = LOG_INFO, .names = log_level_names,
     .off = NODE_OFF(log_level), .doc = "error, warn, info or debug"},
    {.key = "shutdown_grace_seconds", .type = T_INT, .def_int = 30, .min = 0, .max = 3600,
     .off = NODE_OFF(shutdown_grace_seconds), .doc = "wait for running associations on stop"},
    {.key = "network_timeout_seconds", .type = T_INT, .def_int = 60, .min = 1, .max = 3600,
     .off = NODE_OFF(network_timeout_seconds), .doc = "ACSE/DIMSE read timeout"},
    {.key = "max_pdu", .type = T_INT, .def_int = 131072, .min = 4096, .max = 131072,
     .off = NODE_OFF(max_pdu), .doc = "maximum receive PDU length"},
    {.key = "retention_days", .type = T_INT, .def_int = 0, .min = 0, .max = 36500,
     .off = NODE_OFF(retention_days),
     .doc = "delete finished studies after this many days; 0 never"},
    {.key = "disk_high_water_percent", .type = T_INT, .def_int = 0, .min = 0, .max = 99,
     .off = NODE_OFF(disk_high_water_percent),
     .doc = "delete oldest finished studies while the data disk is fuller; 0 never"},
};

static const struct field dest_fields[] = {
    {.key = "ae_title", .type = T_AE, .required = 1, .off = DEST_OFF(ae_title),
     .doc = "AE title of the peer"},
    {.key = "host", .type = T_STR, .required = 1, .off = DEST_OFF(host),
     .doc = "host name or address of the peer"},
    {.key = "port", .type = T_INT, .required = 1, .min = 1, .max = 65535, .off = DEST_OFF(port),
     .doc = "TCP port of the peer"},
    {.key = "retry_initial_seconds", .type = T_INT, .def_int = 10, .min = 1, .max = 86400,
     .off = DEST_OFF(retry_initial_seconds), .doc = "wait before the first retry"},
    {.key = "retry_factor", .type = T_FLOAT, .def_float = 2.0, .fcheck = F_POSITIVE,
     .off = DEST_OFF(retry_factor), .doc = "each further wait is the last one times this"},
    {.key = "retry_max_seconds", .type = T_INT, .def_int = 600, .min = 1, .max = 86400,
     .off = DEST_OFF(retry_max_seconds), .doc = "longest wait between retries"},
    {.key = "max_attempts", .type = T_INT, .def_int = 10, .min = 1, .max = 1000,
     .off = DEST_OFF(max_attempts), .doc = "attempts before an item is dead-lettered"},
};

/* models.NAME; the file and the manifest are checked and loaded by check_model. */
static const struct field model_fields[] = {
    {.key = "file", .type = T_STR, .required = 1, .off = MODEL_OFF(file),
     .doc = "builtin:NAME, or a TorchScript file relative to the config file's directory"},
    {.key = "manifest", .type = T_PATH, .off = MODEL_OFF(manifest.path),
     .doc = "the model's manifest; required unless file is builtin:NAME"},
    {.key = "device", .type = T_STR, .def_str = "cpu", .valid = device_problem,
     .off = MODEL_OFF(device), .doc = "cpu, cuda or cuda:N"},
    {.key = "threads", .type = T_INT, .def_int = 1, .min = 1, .max = 256,
     .off = MODEL_OFF(threads), .doc = "intra-op threads per worker"},
    {.key = "workers", .type = T_INT, .def_int = 1, .min = 1, .max = 64,
     .off = MODEL_OFF(workers), .doc = "worker threads running this model"},
};

static const char *const priority_names[] = {"stat", "normal", "low", NULL};
_Static_assert(sizeof(enum config_priority) == sizeof(int), "priority stored as int");

/* rules[N]; run names are checked against the keys under models:, the
 * destinations against those under destinations:. */
static const struct field rule_fields[] = {
    {.key = "name", .type = T_STR, .off = RULE_OFF(name), .doc = "shown in logs; default rule-N"},
    {.key = "match", .type = T_CUSTOM, .parse = parse_match, .release = release_match,
     .off = RULE_OFF(match), .doc = "conditions that must all hold; absent matches any series"},
    {.key = "any", .type = T_CUSTOM, .parse = parse_rule_any, .off = RULE_OFF(match),
     .doc = "sub-matches of which at least one must hold"},
    {.key = "not", .type = T_CUSTOM, .parse = parse_rule_not, .off = RULE_OFF(match),
     .doc = "a sub-match that must not hold"},
    {.key = "run", .type = T_CUSTOM, .parse = parse_run,
     .release = release_str_list, .off = RULE_OFF(run), .off_n = RULE_OFF(n_run),
     .doc = "models to run, by name; required unless forward_to is given"},
    {.key = "send_results_to", .type = T_CUSTOM, .parse = parse_run,
     .release = release_str_list, .off = RULE_OFF(send_to), .off_n = RULE_OFF(n_send_to),
     .doc = "destinations the results go to, by name"},
    {.key = "forward_to", .type = T_CUSTOM, .parse = parse_run,
     .release = release_str_list, .off = RULE_OFF(forward_to), .off_n = RULE_OFF(n_forward_to),
     .doc = "destinations receiving the original instances, by name"},
    {.key = "priority", .type = T_ENUM, .def_int = CONFIG_PRIORITY_NORMAL,
     .names = priority_names, .off = RULE_OFF(priority), .doc = "stat, normal or low"},
    {.key = "continue", .type = T_CUSTOM, .parse = parse_flag, .off = RULE_OFF(continues),
     .doc = "true: later rules may match the series too; default false"},
};

/* ---- manifest ---- */

static const struct field code_fields[] = {
    {.key = "value", .type = T_STR, .required = 1, .off = CODE_OFF(value), .doc = "CodeValue"},
    {.key = "scheme", .type = T_STR, .required = 1, .off = CODE_OFF(scheme),
     .doc = "CodingSchemeDesignator"},
    {.key = "meaning", .type = T_STR, .required = 1, .off = CODE_OFF(meaning),
     .doc = "CodeMeaning"},
};

static const struct field label_fields[] = {
    {.key = "name", .type = T_STR, .required = 1, .off = LABEL_OFF(name), .doc = "Segment Label"},
    {.key = "category", .type = T_SECTION, .required = 1, SUB(code_fields),
     .off = LABEL_OFF(category), .doc = "Segmented Property Category"},
    {.key = "type", .type = T_SECTION, .required = 1, SUB(code_fields), .off = LABEL_OFF(type),
     .doc = "Segmented Property Type"},
    {.key = "color", .type = T_INTS, .required = 1, .count = 3, .min = 0, .max = 255,
     .off = LABEL_OFF(color), .doc = "display colour [r, g, b]"},
};

/* The manifest's sections fill the one flat struct config_manifest, hence
 * .off = 0 for them: only codes are structs of their own. */
static const struct field algorithm_fields[] = {
    {.key = "name", .type = T_STR, .required = 1, .off = MAN_OFF(algorithm_name),
     .doc = "Algorithm Name"},
    {.key = "version", .type = T_STR, .required = 1, .off = MAN_OFF(algorithm_version),
     .doc = "Algorithm Version"},
    {.key = "family", .type = T_SECTION, .required = 1, SUB(code_fields),
     .off = MAN_OFF(algorithm_family), .doc = "Algorithm Family (CID 7162)"},
};

static const struct field input_fields[] = {
    {.key = "modality", .type = T_STR, .required = 1, .off = MAN_OFF(modality),
     .doc = "modality of the series the model reads"},
    {.key = "min_slices", .type = T_INT, .def_int = 1, .min = 1, .max = 100000,
     .off = MAN_OFF(min_slices), .doc = "fewer slices are refused"},
};

static const struct field scale_fields[] = {
    {.key = "offset", .type = T_FLOAT, .def_float = 0, .off = MAN_OFF(scale_offset),
     .doc = "added before scaling"},
    {.key = "factor", .type = T_FLOAT, .def_float = 1, .fcheck = F_NONZERO,
     .off = MAN_OFF(scale_factor), .doc = "multiplied after the offset"},
};

static const struct field preprocess_fields[] = {
    {.key = "spacing", .type = T_FLOATS, .count = 3, .fcheck = F_POSITIVE, .none = "none",
     .off = MAN_OFF(spacing), .off_n = MAN_OFF(has_spacing),
     .doc = "resample to [column, row, slice] mm, or none"},
    {.key = "clip", .type = T_FLOATS, .count = 2, .off = MAN_OFF(clip), .off_n = MAN_OFF(has_clip),
     .doc = "[low, high] after rescale"},
    {.key = "scale", .type = T_SECTION, SUB(scale_fields), .doc = "(v + offset) * factor"},
};

static const struct field inference_fields[] = {
    {.key = "patch", .type = T_INTS, .required = 1, .count = 3, .min = 1, .max = 4096,
     .off = MAN_OFF(patch), .doc = "patch size [z, y, x] in voxels"},
    {.key = "margin", .type = T_INTS, .count = 3, .min = 0, .max = 1024, .off = MAN_OFF(margin),
     .doc = "voxels dropped at each patch border [z, y, x]"},
    {.key = "overlap", .type = T_FLOAT, .def_float = 0.25, .fcheck = F_UNIT,
     .off = MAN_OFF(overlap), .doc = "fraction of a patch shared with its neighbour"},
    {.key = "blend", .type = T_ENUM, .def_int = CONFIG_BLEND_GAUSSIAN, .names = blend_names,
     .off = MAN_OFF(blend), .doc = "weighting of overlapping patches"},
};

static const struct field output_fields[] = {
    {.key = "channels", .type = T_INT, .required = 1, .min = 1, .max = 255,
     .off = MAN_OFF(channels), .doc = "output channels of the model"},
    {.key = "decision", .type = T_ENUM, .def_int = CONFIG_DECISION_ARGMAX, .names = decision_names,
     .off = MAN_OFF(decision), .doc = "argmax or threshold"},
    {.key = "threshold", .type = T_FLOAT, .def_float = 0.5, .off = MAN_OFF(threshold),
     .doc = "cut-off for decision threshold"},
    {.key = "labels", .type = T_CUSTOM, .required = 1, .parse = parse_labels,
     .release = release_labels, .off = MAN_OFF(labels), .off_n = MAN_OFF(n_labels),
     .doc = "label number -> segment"},
    {.key = "series_description", .type = T_STR, .off = MAN_OFF(series_description),
     .doc = "of the result series; default the algorithm name"},
    {.key = "series_number", .type = T_INT, .def_int = 900, .min = 1, .max = 2147483646,
     .off = MAN_OFF(series_number), .doc = "of the SEG series; the SR's is one more"},
};

static const struct field manifest_fields[] = {
    {.key = "algorithm", .type = T_SECTION, .required = 1, SUB(algorithm_fields)},
    {.key = "input", .type = T_SECTION, .required = 1, SUB(input_fields)},
    {.key = "preprocess", .type = T_SECTION, SUB(preprocess_fields), .check = check_preprocess},
    {.key = "inference", .type = T_SECTION, .required = 1, SUB(inference_fields),
     .check = check_inference},
    {.key = "output", .type = T_SECTION, .required = 1, SUB(output_fields), .check = check_output},
};

_Static_assert(NELEM(node_fields) <= MAX_FIELDS && NELEM(dest_fields) <= MAX_FIELDS &&
                   NELEM(model_fields) <= MAX_FIELDS && NELEM(rule_fields) <= MAX_FIELDS &&
                   NELEM(code_fields) <= MAX_FIELDS && NELEM(label_fields) <= MAX_FIELDS &&
                   NELEM(algorithm_fields) <= MAX_FIELDS && NELEM(input_fields) <= MAX_FIELDS &&
                   NELEM(scale_fields) <= MAX_FIELDS && NELEM(preprocess_fields) <= MAX_FIELDS &&
                   NELEM(inference_fields) <= MAX_FIELDS && NELEM(output_fields) <= MAX_FIELDS &&
                   NELEM(manifest_fields) <= MAX_FIELDS,
               "parsed.st[] too small");

#define MAX_LIST 8 /* longest T_INTS / T_FLOATS */

/* ------------------------------------------------------------------------ */
/* Paths and files                                                          */

/* Removes "." components, repeated and trailing slashes; keeps ".." since a
 * symlinked directory makes lexical ".." removal wrong. */
static void clean_path(char *p)
{
    char *r = p, *w = p;
    while (*r) {
        if (*r == '/') {
            while (*r == '/')
                r++;
            if (r[0] == '.' && (r[1] == '/' || r[1] == '\0')) {
                r++;
                continue;
            }
            *w++ = '/';
            continue;
        }
        *w++ = *r++;
    }
    if (w > p + 1 && w[-1] == '/')
        w--;
    if (w == p)
        *w++ = '/';
    *w = '\0';
}

static char *join_path(const char *dir, const char *rel)
{
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *s = malloc(n);
    if (!s)
        return NULL;
    snprintf(s, n, "%s/%s", dir, rel);
    clean_path(s);
    return s;
}

static char *absolute_path(const char *path)
{
    if (path[0] == '/') {
        char *s = strdup(path);
        if (s)
            clean_path(s);
        return s;
    }
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return NULL;
    char *s = join_path(cwd, path);
    free(cwd);
    return s;
}

/* The directory part of the absolute PATH. */
static char *dir_of(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return NULL;
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    return dir;
}

/* PATH made absolute against the directory of the file being read. */
static char *resolve_path(const struct ctx *c, const char *path)
{
    if (path[0] == '/' || !c->dir) {
        char *s = strdup(path);
        if (s)
            clean_path(s);
        return s;
    }
    return join_path(c->dir, path);
}

/* 0 when PATH is a file we can open for reading, else an errno. */
static int readable(const char *path)
{
    /* O_NONBLOCK: a FIFO must not hang the check */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno;
    struct stat st;
    int e = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    close(fd);
    return e;
}

static char *read_file(const char *path, size_t *lenp, int *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                *err = ENOMEM;
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    *lenp = len;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Value checks                                                             */

/* Renders user text for a message: printable ASCII only, bounded length. */
static const char *esc(const char *s, size_t len, char buf[static 80])
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (o + 8 >= 80) {
            memcpy(buf + o, "...", 4);
            return buf;
        }
        if (ch >= 0x20 && ch < 0x7f)
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, 80 - o, "\\x%02x", ch);
    }
    buf[o] = '\0';
    return buf;
}

/* NULL when AE is a valid AE title, else why not. */
static const char *ae_problem(const char *s, size_t len)
{
    if (len == 0)
        return "must not be empty";
    if (len > CONFIG_AE_MAX)
        return "is longer than 16 characters";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\')
            return "contains a backslash";
        if (ch < 0x20 || ch >= 0x7f)
            return "contains a character that is not printable ASCII";
    }
    if (s[0] == ' ' || s[len - 1] == ' ')
        return "has leading or trailing spaces";
    return NULL;
}

/* NULL when S names a device syntactically; whether it exists is for the
 * inference runtime to say. */
static const char *device_problem(const char *s)
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

static int want_string(struct ctx *c, const char *what, const struct ynode *v)
{
    if (v->kind == Y_ALIAS)
        return 0; /* already reported */
    if (v->kind != Y_SCALAR || is_null(v)) {
        report_at(c, v->line, v->col, "%s: expected a string", what);
        return 0;
    }
    if (memchr(v->text, '\0', v->len)) {
        report_at(c, v->line, v->col, "%s: must not contain a NUL character", what);
        return 0;
    }
    return 1;
}

static int check_ae(struct ctx *c, const char *what, const struct ynode *v)
{
    if (!want_string(c, what, v))
        return 0;
    const char *why = ae_problem(v->text, v->len);
    if (why) {
        char b[80];
        report_at(c, v->line, v->col, "%s: AE title '%s' %s", what, esc(v->text, v->len, b), why);
        return 0;
    }
    return 1;
}

static int is_decimal(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* A plain decimal integer in MIN..MAX into *OUT. */
static int get_int(const struct ynode *v, long long min, long long max, long long *out)
{
    if (v->kind != Y_SCALAR || !v->plain || v->tagged || !is_decimal(v->text))
        return 0;
    errno = 0;
    long long n = strtoll(v->text, NULL, 10);
    if (errno == ERANGE || n < min || n > max)
        return 0;
    *out = n;
    return 1;
}

/* A plain YAML 1.2 int or float, finite: .inf, .nan, hex and quoted text
 * are refused so that a typo never becomes a number. */
static int get_number(const struct ynode *v, double *out)
{
    if (v->kind != Y_SCALAR || !v->plain || v->tagged)
        return 0;
    const char *s = v->text;
    if (*s == '+' || *s == '-')
        s++;
    size_t whole = strspn(s, "0123456789"), frac = 0;
    s += whole;
    if (*s == '.') {
        frac = strspn(s + 1, "0123456789");
        s += 1 + frac;
    }
    if (whole == 0 && frac == 0)
        return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        size_t exp = strspn(s, "0123456789");
        if (exp == 0)
            return 0;
        s += exp;
    }
    if (*s)
        return 0;
    double d = strtod(v->text, NULL);
    if (!isfinite(d))
        return 0;
    *out = d;
    return 1;
}

static int float_ok(enum fcheck fc, double d)
{
    switch (fc) {
    case F_ANY:
        return 1;
    case F_POSITIVE:
        return d > 0;
    case F_NONZERO:
        return d != 0;
    case F_UNIT:
        return d >= 0 && d < 1;
    }
    return 0;
}

/* "3 integers 0..255", "3 numbers > 0": what a list field holds. */
static void describe_list(const struct field *f, char *buf, size_t n)
{
    static const char *const limit[] = {[F_ANY] = "", [F_POSITIVE] = " > 0",
                                        [F_NONZERO] = " other than 0", [F_UNIT] = " 0..1"};
    if (f->type == T_INTS)
        snprintf(buf, n, "%d integers %lld..%lld", f->count, f->min, f->max);
    else
        snprintf(buf, n, "%s%s%s%d numbers%s", f->none ? "'" : "", f->none ? f->none : "",
                 f->none ? "' or " : "", f->count, limit[f->fcheck]);
}

/* Sets a fixed-length list; one message for the whole list, at the
 * offending item when there is one. */
static void set_list(struct ctx *c, const char *what, const struct field *f,
                     const struct ynode *v, void *base)
{
    char *p = (char *)base + f->off;
    int is_float = f->type == T_FLOATS;
    if (is_float && (is_null(v) || (f->none && v->kind == Y_SCALAR && v->plain && !v->tagged &&
                                    !strcmp(v->text, f->none)))) {
        int no = 0;
        memcpy((char *)base + f->off_n, &no, sizeof no);
        return;
    }
    char expect[96];
    describe_list(f, expect, sizeof expect);
    if (v->kind != Y_SEQ || v->n != (size_t)f->count) {
        report_at(c, v->line, v->col, "%s: expected %s", what, expect);
        return;
    }
    int iv[MAX_LIST];
    double dv[MAX_LIST];
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        long long n;
        if (it->kind == Y_ALIAS)
            return; /* already reported */
        int ok = is_float ? get_number(it, &dv[i]) && float_ok(f->fcheck, dv[i])
                          : get_int(it, f->min, f->max, &n);
        if (!ok) {
            report_at(c, it->line, it->col, "%s: expected %s", what, expect);
            return;
        }
        if (!is_float)
            iv[i] = (int)n;
    }
    if (is_float) {
        int yes = 1;
        memcpy(p, dv, v->n * sizeof dv[0]);
        memcpy((char *)base + f->off_n, &yes, sizeof yes);
    } else {
        memcpy(p, iv, v->n * sizeof iv[0]);
    }
}

static void parse_section(struct ctx *c, const char *sect, const struct field *fs, size_t nf,
                          const struct ynode *map, void *base, const struct ynode *pos,
                          check_fn check);

static void set_field(struct ctx *c, const char *sect, const struct field *f,
                      const struct ynode *v, void *base)
{
    char what[256];
    char b[80];
    char *p = (char *)base + f->off;
    /* the manifest's top level has no section name */
    snprintf(what, sizeof what, "%s%s%s", sect, sect[0] ? "." : "", f->key);

    if (v->kind == Y_ALIAS)
        return;

    switch (f->type) {
    case T_INT: {
        if (v->kind != Y_SCALAR || !v->plain || v->tagged || !is_decimal(v->text)) {
            report_at(c, v->line, v->col, "%s: expected an integer", what);
            return;
        }
        long long n;
        if (!get_int(v, f->min, f->max, &n)) {
            report_at(c, v->line, v->col, "%s: %s is out of range %lld..%lld", what,
                      esc(v->text, v->len, b), f->min, f->max);
            return;
        }
        *(int *)p = (int)n;
        return;
    }
    case T_FLOAT: {
        double d;
        if (!get_number(v, &d)) {
            report_at(c, v->line, v->col, "%s: expected a number", what);
            return;
        }
        if (!float_ok(f->fcheck, d)) {
            esc(v->text, v->len, b);
            if (f->fcheck == F_UNIT)
                report_at(c, v->line, v->col, "%s: %s is out of range 0..1%s", what, b,
                          d == 1 ? " (1 excluded)" : "");
            else if (f->fcheck == F_NONZERO)
                report_at(c, v->line, v->col, "%s: must not be 0", what);
            else
                report_at(c, v->line, v->col, "%s: %s must be greater than 0", what, b);
            return;
        }
        *(double *)p = d;
        return;
    }
    case T_INTS:
    case T_FLOATS:
        set_list(c, what, f, v, base);
        return;
    case T_STR:
    case T_PATH: {
        if (!want_string(c, what, v))
            return;
        if (v->len == 0) {
            report_at(c, v->line, v->col, "%s: must not be empty", what);
            return;
        }
        const char *why = f->valid ? f->valid(v->text) : NULL;
        if (why) {
            report_at(c, v->line, v->col, "%s: '%s' %s", what, esc(v->text, v->len, b), why);
            return;
        }
        char *s = f->type == T_PATH ? resolve_path(c, v->text) : strdup(v->text);
        if (!s) {
            oom(c);
            return;
        }
        free(*(char **)p);
        *(char **)p = s;
        return;
    }
    case T_AE:
        if (check_ae(c, what, v))
            memcpy(p, v->text, v->len + 1);
        return;
    case T_ENUM: {
        if (!want_string(c, what, v))
            return;
        for (int i = 0; f->names[i]; i++) {
            if (!strcmp(f->names[i], v->text)) {
                memcpy(p, &i, sizeof i);
                return;
            }
        }
        char list[128] = "";
        for (int i = 0; f->names[i]; i++) {
            if (i)
                strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, f->names[i], sizeof list - strlen(list) - 1);
        }
        report_at(c, v->line, v->col, "%s: '%s' is not one of %s", what,
                  esc(v->text, v->len, b), list);
        return;
    }
    case T_AE_LIST: {
        char ***listp = (char ***)p;
        size_t *np = (size_t *)((char *)base + f->off_n);
        if (is_null(v))
            return;
        if (v->kind != Y_SEQ) {
            report_at(c, v->line, v->col, "%s: expected a sequence", what);
            return;
        }
        for (size_t i = 0; i < v->n; i++) {
            const struct ynode *it = v->kids[i];
            if (!check_ae(c, what, it))
                continue;
            int dup = 0;
            for (size_t j = 0; j < i && !dup; j++) {
                const struct ynode *o = v->kids[j];
                dup = o->kind == Y_SCALAR && o->len == it->len && !memcmp(o->text, it->text, it->len);
            }
            if (dup) {
                report_at(c, it->line, it->col, "%s: duplicate name '%s'", what,
                          esc(it->text, it->len, b));
                continue;
            }
            char **nl = realloc(*listp, (*np + 1) * sizeof *nl);
            if (!nl) {
                oom(c);
                return;
            }
            *listp = nl;
            if (!(nl[*np] = strdup(it->text))) {
                oom(c);
                return;
            }
            (*np)++;
        }
        return;
    }
    case T_SECTION: {
        /* an empty value is an empty mapping: its required keys are then missing */
        struct ynode empty = {.kind = Y_MAP, .line = v->line, .col = v->col};
        if (is_null(v))
            v = &empty;
        if (v->kind != Y_MAP) {
            report_at(c, v->line, v->col, "%s: expected a mapping", what);
            return;
        }
        parse_section(c, what, f->sub, f->n_sub, v, p, v, f->check);
        return;
    }
    case T_CUSTOM:
        f->parse(c, f, what, v, base);
        return;
    }
}

static void set_defaults(struct ctx *c, const struct field *fs, size_t nf, void *base)
{
    for (size_t i = 0; i < nf; i++) {
        const struct field *f = &fs[i];
        char *p = (char *)base + f->off;
        switch (f->type) {
        case T_INT:
            *(int *)p = (int)f->def_int;
            break;
        case T_ENUM: {
            int v = (int)f->def_int;
            memcpy(p, &v, sizeof v);
            break;
        }
        case T_FLOAT:
            *(double *)p = f->def_float;
            break;
        case T_STR:
        case T_PATH:
            if (f->def_str &&
                !(*(char **)p = f->type == T_PATH ? resolve_path(c, f->def_str) : strdup(f->def_str)))
                oom(c);
            break;
        case T_AE:
            if (f->def_str)
                snprintf(p, CONFIG_AE_MAX + 1, "%s", f->def_str);
            break;
        case T_SECTION:
            set_defaults(c, f->sub, f->n_sub, p);
            break;
        case T_AE_LIST:
        case T_INTS:   /* zeros, from the caller's calloc */
        case T_FLOATS:
        case T_CUSTOM:
            break;
        }
    }
}

static void release_str(const struct field *f, void *base)
{
    char **p = (char **)((char *)base + f->off);
    free(*p);
    *p = NULL;
}

static void release_str_list(const struct field *f, void *base)
{
    char ***listp = (char ***)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    for (size_t i = 0; i < *np; i++)
        free((*listp)[i]);
    free(*listp);
    *listp = NULL;
    *np = 0;
}

/* Frees what set_defaults and set_field allocated under FS. */
static void free_fields(const struct field *fs, size_t nf, void *base)
{
    for (size_t i = 0; i < nf; i++) {
        const struct field *f = &fs[i];
        switch (f->type) {
        case T_STR:
        case T_PATH:
            release_str(f, base);
            break;
        case T_AE_LIST:
            release_str_list(f, base);
            break;
        case T_SECTION:
            free_fields(f->sub, f->n_sub, (char *)base + f->off);
            break;
        case T_CUSTOM:
            if (f->release)
                f->release(f, base);
            break;
        default:
            break;
        }
    }
}

static int same_text(const struct ynode *y, const char *s)
{
    return y->kind == Y_SCALAR && y->len == strlen(s) && !memcmp(y->text, s, y->len);
}

/* The value of the first KEY in MAP, or NULL. */
static const struct ynode *map_get(const struct ynode *map, const char *key)
{
    for (size_t i = 0; map && map->kind == Y_MAP && i + 1 < map->n; i += 2)
        if (same_text(map->kids[i], key))
            return map->kids[i + 1];
    return NULL;
}

/* Finds an earlier key in MAP equal to key index KI (pairs before it). */
static int key_seen_before(const struct ynode *map, size_t ki)
{
    const struct ynode *k = map->kids[ki];
    for (size_t j = 0; j < ki; j += 2) {
        const struct ynode *o = map->kids[j];
        if (o->kind == Y_SCALAR && o->len == k->len && !memcmp(o->text, k->text, k->len))
            return 1;
    }
    return 0;
}

/* Checks that key KI of MAP is a scalar that has not appeared before. */
static int usable_key(struct ctx *c, const char *sect, const struct ynode *map, size_t ki,
                      const char *dup_what)
{
    const struct ynode *k = map->kids[ki];
    char b[80];
    if (k->kind == Y_ALIAS)
        return 0;
    if (k->kind != Y_SCALAR) {
        report_at(c, k->line, k->col, "%s: keys must be scalars", sect[0] ? sect : "top level");
        return 0;
    }
    if (key_seen_before(map, ki)) {
        report_at(c, k->line, k->col, "duplicate %s '%s'", dup_what, esc(k->text, k->len, b));
        return 0;
    }
    return 1;
}

/*
 * Applies the pairs of MAP to BASE through FS; POS locates missing-key
 * errors. CHECK, when given, then checks the fields against each other.
 * SECT "" is a file's top level.
 */
static void parse_section(struct ctx *c, const char *sect, const struct field *fs, size_t nf,
                          const struct ynode *map, void *base, const struct ynode *pos,
                          check_fn check)
{
    struct parsed p = {.sect = sect, .fs = fs, .nf = nf, .map = map, .pos = pos};
    char b[80];

    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct ynode *k = map->kids[i], *v = map->kids[i + 1];
        if (!usable_key(c, sect, map, i, "key"))
            continue;
        size_t fi = 0;
        while (fi < nf && (strlen(fs[fi].key) != k->len || memcmp(fs[fi].key, k->text, k->len)))
            fi++;
        if (fi == nf) {
            if (sect[0])
                report_at(c, k->line, k->col, "unknown key '%s' in %s", esc(k->text, k->len, b), sect);
            else
                report_at(c, k->line, k->col, "unknown top-level key '%s'", esc(k->text, k->len, b));
            continue;
        }
        int before = c->count;
        set_field(c, sect, &fs[fi], v, base);
        p.st[fi] = v->kind == Y_ALIAS || c->count != before ? 2 : 1;
    }
    for (size_t fi = 0; fi < nf; fi++) {
        if (!fs[fi].required || p.st[fi])
            continue;
        if (sect[0])
            report_at(c, pos->line, pos->col, "%s: missing required key '%s'", sect, fs[fi].key);
        else
            report_at(c, pos->line, pos->col, "missing required key '%s'", fs[fi].key);
    }
    if (check)
        check(c, &p, base);
}

static size_t field_index(const struct parsed *p, const char *key)
{
    size_t i = 0;
    while (i < p->nf && strcmp(p->fs[i].key, key))
        i++;
    return i; /* KEY is always one of the table's: callers name their own fields */
}

/* 1 when KEY holds a value to check against: given and accepted, or absent
 * and defaulted. */
static int usable(const struct parsed *p, const char *key)
{
    size_t i = field_index(p, key);
    return p->st[i] == 1 || (p->st[i] == 0 && !p->fs[i].required);
}

/* Where to report about KEY: its value, or the section when it is absent. */
static const struct ynode *pos_of(const struct parsed *p, const char *key)
{
    const struct ynode *v = map_get(p->map, key);
    return v ? v : p->pos;
}

static int valid_name(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Manifest                                                                 */

/* The number of a label key (1..255), or -1. */
static int label_number(const struct ynode *k)
{
    long long n;
    return get_int(k, 1, 255, &n) ? (int)n : -1;
}

/* 1 when key KI of MAP has the same label number as an earlier key. */
static int label_seen_before(const struct ynode *map, size_t ki, int n)
{
    for (size_t j = 0; j < ki; j += 2)
        if (label_number(map->kids[j]) == n)
            return 1;
    return 0;
}

static int cmp_label(const void *a, const void *b)
{
    const struct config_label *x = a, *y = b;
    return (x->value > y->value) - (x->value < y->value);
}

static void parse_labels(struct ctx *c, const struct field *f, const char *what,
                         const struct ynode *v, void *base)
{
    struct config_label **lp = (struct config_label **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    char b[80];
    if (is_null(v) || (v->kind == Y_MAP && v->n == 0)) {
        report_at(c, v->line, v->col, "%s: expected at least one label", what);
        return;
    }
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    if (!(*lp = calloc(v->n / 2, sizeof **lp))) {
        oom(c);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (k->kind == Y_ALIAS)
            continue;
        if (k->kind != Y_SCALAR) {
            report_at(c, k->line, k->col, "%s: keys must be scalars", what);
            continue;
        }
        int n = label_number(k);
        if (n < 0) {
            report_at(c, k->line, k->col, "%s: '%s' is not a label number 1..255", what,
                      esc(k->text, k->len, b));
            continue;
        }
        if (label_seen_before(v, i, n)) {
            report_at(c, k->line, k->col, "duplicate label %d", n);
            continue;
        }
        char sect[300];
        snprintf(sect, sizeof sect, "%s.%d", what, n);
        if (val->kind == Y_ALIAS)
            continue;
        if (val->kind != Y_MAP) {
            report_at(c, val->line, val->col, "%s: expected a mapping", sect);
            continue;
        }
        struct config_label *l = &(*lp)[(*np)++];
        l->value = n;
        parse_section(c, sect, label_fields, NELEM(label_fields), val, l, k, NULL);
    }
    qsort(*lp, *np, sizeof **lp, cmp_label);
}

static void release_labels(const struct field *f, void *base)
{
    struct config_label **lp = (struct config_label **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    for (size_t i = 0; i < *np; i++)
        free_fields(label_fields, NELEM(label_fields), &(*lp)[i]);
    free(*lp);
    *lp = NULL;
    *np = 0;
}

static void check_preprocess(struct ctx *c, const struct parsed *p, void *base)
{
    const struct config_manifest *m = base;
    if (m->has_clip && !(m->clip[0] < m->clip[1])) {
        const struct ynode *v = pos_of(p, "clip");
        report_at(c, v->line, v->col, "%s.clip: low (%g) must be less than high (%g)", p->sect,
                  m->clip[0], m->clip[1]);
    }
}

static void check_inference(struct ctx *c, const struct parsed *p, void *base)
{
    const struct config_manifest *m = base;
    if (!usable(p, "patch") || !usable(p, "margin"))
        return;
    /* each patch must keep a core after dropping the margin on both sides */
    for (int i = 0; i < 3; i++) {
        if (2 * m->margin[i] >= m->patch[i]) {
            const struct ynode *v = pos_of(p, "margin");
            report_at(c, v->line, v->col,
                      "%s.margin: twice the margin must be less than the patch on each axis "
                      "(%c: margin %d, patch %d)",
                      p->sect, "zyx"[i], m->margin[i], m->patch[i]);
            return;
        }
    }
}

static void check_output(struct ctx *c, const struct parsed *p, void *base)
{
    const struct config_manifest *m = base;
    if (!usable(p, "channels") || !usable(p, "decision"))
        return;
    int argmax = m->decision == CONFIG_DECISION_ARGMAX;
    /* argmax: channel 0 is the background and label N is channel N;
     * threshold: label N is channel N - 1 */
    if (argmax && m->channels < 2) {
        const struct ynode *v = pos_of(p, "channels");
        report_at(c, v->line, v->col, "%s.channels: argmax needs at least 2 channels", p->sect);
        return;
    }
    const struct ynode *lv = map_get(p->map, "labels");
    int reported = 0; /* a label with a problem of its own: no gap check */
    for (size_t i = 0; lv && lv->kind == Y_MAP && i + 1 < lv->n; i += 2) {
        const struct ynode *k = lv->kids[i];
        int n = label_number(k);
        if (n < 0 || label_seen_before(lv, i, n)) {
            reported = 1;
            continue; /* already reported */
        }
        if (argmax && n >= m->channels) {
            report_at(c, k->line, k->col,
                      "%s.labels.%d: argmax needs each label below %s.channels (%d)", p->sect, n,
                      p->sect, m->channels);
            reported = 1;
        } else if (!argmax && n > m->channels) {
            report_at(c, k->line, k->col,
                      "%s.labels.%d: threshold needs each label at most %s.channels (%d)",
                      p->sect, n, p->sect, m->channels);
            reported = 1;
        }
    }
    /* Labels become SEG segment numbers, which run 1, 2, ... without gaps. */
    for (size_t i = 0; !reported && i < m->n_labels; i++) {
        if (m->labels[i].value != (int)i + 1) {
            const struct ynode *v = pos_of(p, "labels");
            report_at(c, v->line, v->col,
                      "%s.labels: label numbers must run 1, 2, 3, ... without gaps (they are "
                      "the segment numbers of the results); %d is missing",
                      p->sect, (int)i + 1);
            break;
        }
    }
}

/*
 * Loads the manifest at PATH into M. Its problems are reported against PATH
 * through C's callback and added to C's count. Returns 0, or an errno when
 * PATH cannot be read (for the caller to report where PATH was named).
 */
static int load_manifest(struct ctx *c, const char *path, struct config_manifest *m)
{
    size_t len = 0;
    int e = 0;
    char *buf = read_file(path, &len, &e);
    if (!buf)
        return e;
    char *dir = dir_of(path);
    struct ctx mc = {.file = path, .fn = c->fn, .ud = c->ud, .dir = dir};
    if (!dir)
        oom(&mc);
    set_defaults(&mc, manifest_fields, NELEM(manifest_fields), m);
    struct ynode *root = NULL;
    int perr = parse_tree(&mc, buf, len, &root);
    free(buf);
    if (perr == 0) {
        struct ynode empty = {.kind = Y_MAP, .line = 1, .col = 1};
        const struct ynode *r = root && !is_null(root) ? root : &empty;
        if (r->kind == Y_MAP)
            parse_section(&mc, "", manifest_fields, NELEM(manifest_fields), r, m, r, NULL);
        else if (r->kind != Y_ALIAS)
            report_at(&mc, r->line, r->col, "top level must be a mapping");
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
    if (!builtin_dir || !valid_name(name, strlen(name)))
        return NULL;
    size_t n = strlen(builtin_dir) + strlen(name) + strlen(ext) + 2;
    char *rel = malloc(n);
    if (!rel)
        return NULL;
    snprintf(rel, n, "%s/%s%s", builtin_dir, name, ext);
    char *abs = absolute_path(rel);
    free(rel);
    return abs;
}

#define BUILTIN_PREFIX "builtin:"

/* Resolves file: to a TorchScript file that exists, then loads the manifest. */
static void check_model(struct ctx *c, const struct parsed *p, void *base)
{
    struct config_model *m = base;
    const struct ynode *fv = pos_of(p, "file"), *mv = pos_of(p, "manifest");
    int manifest_named = p->st[field_index(p, "manifest")] != 0;
    if (!m->file)
        return; /* missing or refused: already reported */

    if (!strncmp(m->file, BUILTIN_PREFIX, strlen(BUILTIN_PREFIX))) {
        const char *name = m->file + strlen(BUILTIN_PREFIX);
        char *pt = builtin_path(name, ".pt");
        struct stat st;
        if (!pt || stat(pt, &st) != 0) {
            char b[80];
            report_at(c, fv->line, fv->col, "%s.file: unknown built-in model '%s'", p->sect,
                      esc(name, strlen(name), b));
            free(pt);
        } else {
            m->builtin = 1;
            if (!manifest_named && !(m->manifest.path = builtin_path(name, ".yaml")))
                oom(c);
            free(m->file);
            m->file = pt;
        }
    } else {
        char *abs = resolve_path(c, m->file);
        if (!abs) {
            oom(c);
            return;
        }
        free(m->file);
        m->file = abs;
        int e = readable(abs);
        if (e)
            report_at(c, fv->line, fv->col, "%s.file: cannot read %s: %s", p->sect, abs, strerror(e));
        if (!manifest_named)
            report_at(c, p->pos->line, p->pos->col, "%s: missing required key 'manifest'", p->sect);
    }

    if (!m->manifest.path)
        return;
    int e = load_manifest(c, m->manifest.path, &m->manifest);
    if (e && manifest_named)
        report_at(c, mv->line, mv->col, "%s.manifest: cannot read %s: %s", p->sect,
                  m->manifest.path, strerror(e));
    else if (e)
        report_at(c, fv->line, fv->col, "%s.file: cannot read manifest %s: %s", p->sect,
                  m->manifest.path, strerror(e));
}

/* 1 when NAME is a key of MS (models: or destinations:), even one with
 * problems of its own: those are reported there, not again for each rule. */
static int name_defined(const struct ynode *ms, const struct ynode *name)
{
    for (size_t i = 0; ms && i + 1 < ms->n; i += 2) {
        const struct ynode *k = ms->kids[i];
        if (k->kind == Y_SCALAR && k->len == name->len && !memcmp(k->text, name->text, k->len) &&
            valid_name(k->text, k->len))
            return 1;
    }
    return 0;
}

/* ---- rule conditions ---- */

/* What a condition may name; UIDs are compared exactly, the rest ignoring
 * case. Keep deploy/ainode.yaml's list in step. */
const char *const config_rule_attributes[] = {
    "Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName",
    "Manufacturer", "SeriesNumber", "ImageType", "SliceThickness", "Rows", "Columns",
    "NumberOfFrames", "ContrastBolusAgent", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber",
    "StudyID", "StudyDate", "PatientID", "PatientSex", "instances", "calling_ae", "called_ae",
    "source_address", NULL,
};

#define MATCH_MAX_DEPTH 16

static const char *const operator_names = "regex, glob, range, contains or present";

static int attribute_is_uid(const char *a)
{
    size_t n = strlen(a);
    return n >= 3 && !strcmp(a + n - 3, "UID");
}

static void free_condition(struct config_condition *cd)
{
    for (size_t i = 0; i < cd->n_values; i++)
        free(cd->values[i]);
    free(cd->values);
    free(cd->attribute);
    if (cd->regex)
        pcre2_code_free(cd->regex);
}

static void free_match(struct config_match *m)
{
    for (size_t i = 0; i < m->n_conditions; i++)
        free_condition(&m->conditions[i]);
    free(m->conditions);
    for (size_t i = 0; i < m->n_any; i++)
        free_match(&m->any[i]);
    free(m->any);
    if (m->not) {
        free_match(m->not);
        free(m->not);
    }
    memset(m, 0, sizeof *m);
}

int config_match_is_empty(const struct config_match *m)
{
    return !m || (m->n_conditions == 0 && m->n_any == 0 && !m->not);
}

static void release_match(const struct field *f, void *base)
{
    free_match((struct config_match *)((char *)base + f->off));
}

/* A non-empty string value of a condition, copied into CD->values. */
static int add_value(struct ctx *c, const char *what, const struct ynode *v,
                     struct config_condition *cd)
{
    if (!want_string(c, what, v))
        return 0;
    if (v->len == 0) {
        report_at(c, v->line, v->col, "%s: must not be empty", what);
        return 0;
    }
    char **nv = realloc(cd->values, (cd->n_values + 1) * sizeof *nv);
    if (!nv)
        return oom(c);
    cd->values = nv;
    if (!(nv[cd->n_values] = strdup(v->text)))
        return oom(c);
    cd->n_values++;
    return 1;
}

/* {regex|glob|range|contains|present: X}; 1 when CD is complete. */
static int parse_operator(struct ctx *c, const char *what, const struct ynode *map,
                          struct config_condition *cd)
{
    static const char *const ops[] = {"regex", "glob", "range", "contains", "present"};
    static const enum config_op codes[] = {CONFIG_OP_REGEX, CONFIG_OP_GLOB, CONFIG_OP_RANGE,
                                           CONFIG_OP_CONTAINS, CONFIG_OP_PRESENT};
    char b[80], sub[400];
    if (map->n == 0) {
        report_at(c, map->line, map->col, "%s: expected an operator (%s)", what, operator_names);
        return 0;
    }
    const struct ynode *k = map->kids[0], *v = map->kids[1];
    if (k->kind == Y_ALIAS)
        return 0;
    if (k->kind != Y_SCALAR) {
        report_at(c, k->line, k->col, "%s: keys must be scalars", what);
        return 0;
    }
    size_t oi = 0;
    while (oi < NELEM(ops) && !same_text(k, ops[oi]))
        oi++;
    if (oi == NELEM(ops)) {
        report_at(c, k->line, k->col, "%s: unknown operator '%s' (use %s)", what,
                  esc(k->text, k->len, b), operator_names);
        return 0;
    }
    if (map->n > 2) {
        const struct ynode *k2 = map->kids[2];
        report_at(c, k2->line, k2->col, "%s: one operator per condition", what);
        return 0;
    }
    snprintf(sub, sizeof sub, "%s.%s", what, ops[oi]);
    cd->op = codes[oi];
    if (v->kind == Y_ALIAS)
        return 0;
    switch (cd->op) {
    case CONFIG_OP_REGEX: {
        if (!add_value(c, sub, v, cd))
            return 0;
        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)v->text, v->len, PCRE2_CASELESS, &code, &off,
                                       NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
                snprintf((char *)msg, sizeof msg, "error %d", code);
            report_at(c, v->line, v->col, "%s: invalid regular expression: %s at offset %zu", sub,
                      (const char *)msg, (size_t)off);
            return 0;
        }
        cd->regex = re;
        return 1;
    }
    case CONFIG_OP_GLOB:
    case CONFIG_OP_CONTAINS:
        return add_value(c, sub, v, cd);
    case CONFIG_OP_RANGE: {
        double d[2];
        if (v->kind != Y_SEQ || v->n != 2 || !get_number(v->kids[0], &d[0]) ||
            !get_number(v->kids[1], &d[1])) {
            report_at(c, v->line, v->col, "%s: expected [low, high], two numbers", sub);
            return 0;
        }
        if (d[0] > d[1]) {
            report_at(c, v->line, v->col, "%s: low %s is greater than high %s", sub,
                      esc(v->kids[0]->text, v->kids[0]->len, b), v->kids[1]->text);
            return 0;
        }
        cd->range[0] = d[0];
        cd->range[1] = d[1];
        return 1;
    }
    case CONFIG_OP_PRESENT:
        if (v->kind == Y_SCALAR && v->plain && !v->tagged &&
            (!strcmp(v->text, "true") || !strcmp(v->text, "false"))) {
            cd->present = v->text[0] == 't';
            return 1;
        }
        report_at(c, v->line, v->col, "%s: expected true or false", sub);
        return 0;
    default:
        return 0;
    }
}

/* ATTRIBUTE: X | [X, Y] | {operator: ...} into a new condition of M. */
static void parse_condition(struct ctx *c, const char *what, const struct ynode *k,
                            const struct ynode *v, struct config_match *m)
{
    char b[80], sub[320];
    size_t ai = 0;
    while (config_rule_attributes[ai] && !same_text(k, config_rule_attributes[ai]))
        ai++;
    if (!config_rule_attributes[ai]) {
        report_at(c, k->line, k->col, "%s: unknown attribute '%s'", what, esc(k->text, k->len, b));
        return;
    }
    snprintf(sub, sizeof sub, "%s.%s", what, config_rule_attributes[ai]);
    if (v->kind == Y_ALIAS)
        return;
    struct config_condition cd = {.line = k->line, .column = k->col,
                                  .exact = attribute_is_uid(config_rule_attributes[ai])};
    int ok;
    if (v->kind == Y_MAP) {
        ok = parse_operator(c, sub, v, &cd);
    } else if (v->kind == Y_SEQ) {
        cd.op = CONFIG_OP_ONE_OF;
        ok = 1;
        if (v->n == 0) {
            report_at(c, v->line, v->col, "%s: expected at least one value", sub);
            ok = 0;
        }
        for (size_t i = 0; i < v->n; i++)
            if (v->kids[i]->kind == Y_ALIAS || !add_value(c, sub, v->kids[i], &cd))
                ok = 0;
    } else {
        cd.op = CONFIG_OP_EQUALS;
        ok = add_value(c, sub, v, &cd);
    }
    if (ok && !(cd.attribute = strdup(config_rule_attributes[ai])))
        ok = oom(c);
    struct config_condition *nc =
        ok ? realloc(m->conditions, (m->n_conditions + 1) * sizeof *nc) : NULL;
    if (!nc) {
        if (ok)
            oom(c);
        free_condition(&cd);
        return;
    }
    m->conditions = nc;
    nc[m->n_conditions++] = cd;
}

static void parse_match_map(struct ctx *c, const char *what, const struct ynode *v,
                            struct config_match *m, int depth);

/* any: [{...}, ...] into M->any. */
static void parse_any(struct ctx *c, const char *what, const struct ynode *v,
                      struct config_match *m, int depth)
{
    if (v->kind == Y_ALIAS)
        return;
    if (m->any) {
        report_at(c, v->line, v->col, "%s: given twice (in match and next to it)", what);
        return;
    }
    if (v->kind != Y_SEQ) {
        report_at(c, v->line, v->col, "%s: expected a sequence", what);
        return;
    }
    if (v->n == 0) {
        report_at(c, v->line, v->col, "%s: expected at least one sub-match", what);
        return;
    }
    if (!(m->any = calloc(v->n, sizeof *m->any))) {
        oom(c);
        return;
    }
    m->n_any = v->n;
    for (size_t i = 0; i < v->n; i++) {
        char sub[320];
        snprintf(sub, sizeof sub, "%s[%zu]", what, i + 1);
        const struct ynode *it = v->kids[i];
        if (it->kind == Y_ALIAS)
            continue;
        if (it->kind != Y_MAP) {
            report_at(c, it->line, it->col, "%s: expected a mapping", sub);
            continue;
        }
        parse_match_map(c, sub, it, &m->any[i], depth + 1);
    }
}

/* not: {...} into M->not. */
static void parse_not(struct ctx *c, const char *what, const struct ynode *v,
                      struct config_match *m, int depth)
{
    if (v->kind == Y_ALIAS)
        return;
    if (m->not) {
        report_at(c, v->line, v->col, "%s: given twice (in match and next to it)", what);
        return;
    }
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    if (v->n == 0) {
        report_at(c, v->line, v->col, "%s: must not be empty", what);
        return;
    }
    if (!(m->not = calloc(1, sizeof *m->not))) {
        oom(c);
        return;
    }
    parse_match_map(c, what, v, m->not, depth + 1);
}

/* A match mapping: attributes, plus any: and not:. */
static void parse_match_map(struct ctx *c, const char *what, const struct ynode *v,
                            struct config_match *m, int depth)
{
    if (depth > MATCH_MAX_DEPTH) {
        report_at(c, v->line, v->col, "%s: nested more than %d deep", what, MATCH_MAX_DEPTH);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (!usable_key(c, what, v, i, "key"))
            continue;
        char sub[320];
        if (same_text(k, "any") || same_text(k, "not")) {
            snprintf(sub, sizeof sub, "%s.%s", what, k->text);
            if (k->text[0] == 'a')
                parse_any(c, sub, val, m, depth);
            else
                parse_not(c, sub, val, m, depth);
            continue;
        }
        parse_condition(c, what, k, val, m);
    }
}

static void parse_match(struct ctx *c, const struct field *f, const char *what,
                        const struct ynode *v, void *base)
{
    if (is_null(v) || v->kind == Y_ALIAS)
        return; /* matches any series */
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    parse_match_map(c, what, v, (struct config_match *)((char *)base + f->off), 0);
}

static void parse_rule_any(struct ctx *c, const struct field *f, const char *what,
                           const struct ynode *v, void *base)
{
    parse_any(c, what, v, (struct config_match *)((char *)base + f->off), 0);
}

static void parse_rule_not(struct ctx *c, const struct field *f, const char *what,
                           const struct ynode *v, void *base)
{
    parse_not(c, what, v, (struct config_match *)((char *)base + f->off), 0);
}

/* true | false into an int. */
static void parse_flag(struct ctx *c, const struct field *f, const char *what,
                       const struct ynode *v, void *base)
{
    int *p = (int *)((char *)base + f->off);
    if (v->kind == Y_SCALAR && v->plain && !v->tagged &&
        (!strcmp(v->text, "true") || !strcmp(v->text, "false"))) {
        *p = v->text[0] == 't';
        return;
    }
    report_at(c, v->line, v->col, "%s: expected true or false", what);
}

/* A rule runs models, forwards the instances, or both. */
static void check_rule(struct ctx *c, const struct parsed *p, void *base)
{
    const struct config_rule *r = base;
    unsigned char run = p->st[field_index(p, "run")], fwd = p->st[field_index(p, "forward_to")];
    if (run == 2 || fwd == 2 || r->n_run > 0 || r->n_forward_to > 0)
        return;
    if (!run && !fwd) {
        report_at(c, p->pos->line, p->pos->col, "%s: missing required key 'run'", p->sect);
    } else if (!fwd) {
        const struct ynode *v = pos_of(p, "run");
        report_at(c, v->line, v->col, "%s.run: expected at least one model", p->sect);
    } else {
        const struct ynode *v = pos_of(p, "forward_to");
        report_at(c, v->line, v->col,
                  "%s: run and forward_to are both empty: the rule would do nothing", p->sect);
    }
}

/* run: (models), send_results_to: and forward_to: (destinations). */
static void parse_run(struct ctx *c, const struct field *f, const char *what,
                      const struct ynode *v, void *base)
{
    char ***listp = (char ***)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    char b[80];
    int models = !strcmp(f->key, "run");
    const char *noun = models ? "model" : "destination";
    const struct ynode *defined = models ? c->models : c->destinations;
    if (is_null(v) || (v->kind == Y_SEQ && v->n == 0))
        return; /* check_rule: a rule needs models to run or destinations to forward to */
    if (v->kind != Y_SEQ) {
        report_at(c, v->line, v->col, "%s: expected a sequence", what);
        return;
    }
    if (!(*listp = calloc(v->n, sizeof **listp))) {
        oom(c);
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        if (!want_string(c, what, it))
            continue;
        if (!name_defined(defined, it)) {
            report_at(c, it->line, it->col, "%s: unknown %s '%s'", what, noun,
                      esc(it->text, it->len, b));
            continue;
        }
        int dup = 0;
        for (size_t j = 0; j < *np && !dup; j++)
            dup = !strcmp((*listp)[j], it->text);
        if (dup) {
            report_at(c, it->line, it->col, "%s: duplicate %s '%s'", what, noun,
                      esc(it->text, it->len, b));
            continue;
        }
        if (!((*listp)[*np] = strdup(it->text))) {
            oom(c);
            return;
        }
        (*np)++;
    }
}

/* ------------------------------------------------------------------------ */
/* Sections                                                                 */

static void parse_node(struct ctx *c, struct config *cfg, const struct ynode *key,
                       const struct ynode *v)
{
    (void)key;
    if (is_null(v) || v->kind == Y_ALIAS)
        return;
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "node: expected a mapping");
        return;
    }
    parse_section(c, "node", node_fields, NELEM(node_fields), v, &cfg->node, v, NULL);
}

/* A mapping of named entries (destinations, models): checks the names and
 * returns 1 when entry I of V is worth parsing, with its section name. */
static int named_entry(struct ctx *c, const char *what, const char *dup_what,
                       const struct ynode *v, size_t i, char *sect, size_t n)
{
    const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
    char b[80];
    if (!usable_key(c, what, v, i, dup_what))
        return 0;
    if (!valid_name(k->text, k->len)) {
        report_at(c, k->line, k->col, "%s: invalid name '%s' (use letters, digits, '_', '.', '-')",
                  what, esc(k->text, k->len, b));
        return 0;
    }
    snprintf(sect, n, "%s.%s", what, k->text);
    if (val->kind == Y_ALIAS)
        return 0;
    if (val->kind != Y_MAP) {
        report_at(c, val->line, val->col, "%s: expected a mapping", sect);
        return 0;
    }
    return 1;
}

static void parse_destinations(struct ctx *c, struct config *cfg, const struct ynode *key,
                               const struct ynode *v)
{
    (void)key;
    if (is_null(v) || v->kind == Y_ALIAS)
        return;
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "destinations: expected a mapping");
        return;
    }
    cfg->destinations = calloc(v->n / 2 + 1, sizeof *cfg->destinations);
    if (!cfg->destinations) {
        oom(c);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        char sect[192];
        if (!named_entry(c, "destinations", "destination", v, i, sect, sizeof sect))
            continue;
        struct config_destination *d = &cfg->destinations[cfg->n_destinations++];
        if (!(d->name = strdup(v->kids[i]->text))) {
            oom(c);
            continue;
        }
        set_defaults(c, dest_fields, NELEM(dest_fields), d);
        parse_section(c, sect, dest_fields, NELEM(dest_fields), v->kids[i + 1], d, v->kids[i], NULL);
    }
}

static void parse_models(struct ctx *c, struct config *cfg, const struct ynode *key,
                         const struct ynode *v)
{
    (void)key;
    if (is_null(v) || v->kind == Y_ALIAS)
        return;
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "models: expected a mapping");
        return;
    }
    cfg->models = calloc(v->n / 2 + 1, sizeof *cfg->models);
    if (!cfg->models) {
        oom(c);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        char sect[192];
        if (!named_entry(c, "models", "model", v, i, sect, sizeof sect))
            continue;
        struct config_model *m = &cfg->models[cfg->n_models++];
        if (!(m->name = strdup(v->kids[i]->text))) {
            oom(c);
            continue;
        }
        set_defaults(c, model_fields, NELEM(model_fields), m);
        parse_section(c, sect, model_fields, NELEM(model_fields), v->kids[i + 1], m, v->kids[i],
                      check_model);
    }
}

static void parse_rules(struct ctx *c, struct config *cfg, const struct ynode *key,
                        const struct ynode *v)
{
    (void)key;
    if (is_null(v) || v->kind == Y_ALIAS)
        return;
    if (v->kind != Y_SEQ) {
        report_at(c, v->line, v->col, "rules: expected a sequence");
        return;
    }
    cfg->rules = calloc(v->n + 1, sizeof *cfg->rules);
    /* per parsed rule: its number, and whether it stops every series */
    size_t *rule_index = calloc(v->n + 1, sizeof *rule_index);
    unsigned char *stops_all = calloc(v->n + 1, 1);
    if (!cfg->rules || !rule_index || !stops_all) {
        free(rule_index);
        free(stops_all);
        oom(c);
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        char sect[32];
        snprintf(sect, sizeof sect, "rules[%zu]", i + 1); /* 1-based, like the default names */
        if (it->kind == Y_ALIAS)
            continue;
        if (it->kind != Y_MAP) {
            report_at(c, it->line, it->col, "%s: expected a mapping", sect);
            continue;
        }
        struct config_rule *r = &cfg->rules[cfg->n_rules++];
        int before = c->count;
        set_defaults(c, rule_fields, NELEM(rule_fields), r);
        parse_section(c, sect, rule_fields, NELEM(rule_fields), it, r, it, check_rule);
        rule_index[cfg->n_rules - 1] = i + 1;
        /* a rule with problems of its own is not taken for a catch-all */
        stops_all[cfg->n_rules - 1] =
            c->count == before && config_match_is_empty(&r->match) && !r->continues;
        if (!r->name) {
            char name[32];
            snprintf(name, sizeof name, "rule-%zu", i + 1);
            if (!(r->name = strdup(name))) {
                oom(c);
                continue;
            }
        }
        /* logs name rules: two alike would be confusing */
        for (size_t j = 0; j + 1 < cfg->n_rules; j++) {
            if (cfg->rules[j].name && !strcmp(cfg->rules[j].name, r->name)) {
                const struct ynode *nv = map_get(it, "name");
                char b[80];
                if (!nv)
                    nv = it;
                report_at(c, nv->line, nv->col, "%s.name: duplicate rule name '%s'", sect,
                          esc(r->name, strlen(r->name), b));
                break;
            }
        }
        /* an earlier catch-all that stops leaves nothing for this rule */
        for (size_t j = 0; j + 1 < cfg->n_rules; j++) {
            const struct config_rule *e = &cfg->rules[j];
            if (stops_all[j]) {
                char b[80];
                report_at(c, it->line, it->col,
                          "%s: never matches: rules[%zu] ('%s') matches every series and does "
                          "not continue",
                          sect, rule_index[j], e->name ? esc(e->name, strlen(e->name), b) : "");
                break;
            }
        }
    }
    free(rule_index);
    free(stops_all);
}

static const char *const on_max_wait_names[] = {"process", "discard", NULL};

static void parse_required(struct ctx *c, const struct field *f, const char *what,
                           const struct ynode *v, void *base)
{
    if (is_null(v))
        return;
    /* A list of match mappings: the same language as a rule's any:. */
    parse_any(c, what, v, (struct config_match *)((char *)base + f->off), 0);
}

static void release_required(const struct field *f, void *base)
{
    free_match((struct config_match *)((char *)base + f->off));
}

#define COMPLETION_OFF(m) offsetof(struct config_completion, m)

static const struct field completion_fields[] = {
    {.key = "required_series", .type = T_CUSTOM, .parse = parse_required,
     .release = release_required, .off = COMPLETION_OFF(required),
     .doc = "matches: complete as soon as each is met by a series"},
    {.key = "max_wait_seconds", .type = T_INT, .def_int = 0, .min = 0, .max = 2592000,
     .off = COMPLETION_OFF(max_wait_seconds), .doc = "hard limit since the first instance"},
    {.key = "on_max_wait", .type = T_ENUM, .def_int = CONFIG_ON_MAX_WAIT_PROCESS,
     .names = on_max_wait_names, .off = COMPLETION_OFF(on_max_wait),
     .doc = "process or discard a study at max_wait_seconds"},
};

static void parse_completion(struct ctx *c, struct config *cfg, const struct ynode *key,
                             const struct ynode *v)
{
    (void)key;
    if (is_null(v) || v->kind == Y_ALIAS)
        return;
    if (v->kind != Y_MAP) {
        report_at(c, v->line, v->col, "completion: expected a mapping");
        return;
    }
    parse_section(c, "completion", completion_fields, NELEM(completion_fields), v,
                  &cfg->completion, v, NULL);
}

static const struct section {
    const char *key;
    void (*parse)(struct ctx *, struct config *, const struct ynode *key, const struct ynode *v);
} sections[] = {
    {"node", parse_node},
    {"destinations", parse_destinations},
    {"models", parse_models},
    {"rules", parse_rules},
    {"completion", parse_completion},
};

/* ------------------------------------------------------------------------ */
/* API                                                                      */

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free_fields(node_fields, NELEM(node_fields), &cfg->node);
    for (size_t i = 0; i < cfg->n_destinations; i++) {
        free(cfg->destinations[i].name);
        free_fields(dest_fields, NELEM(dest_fields), &cfg->destinations[i]);
    }
    free(cfg->destinations);
    for (size_t i = 0; i < cfg->n_models; i++) {
        struct config_model *m = &cfg->models[i];
        free(m->name);
        free_fields(manifest_fields, NELEM(manifest_fields), &m->manifest);
        free_fields(model_fields, NELEM(model_fields), m); /* manifest.path among them */
    }
    free(cfg->models);
    for (size_t i = 0; i < cfg->n_rules; i++)
        free_fields(rule_fields, NELEM(rule_fields), &cfg->rules[i]);
    free(cfg->rules);
    free_fields(completion_fields, NELEM(completion_fields), &cfg->completion);
    free(cfg);
}

const struct config_model *config_find_model(const struct config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_models; i++)
        if (!strcmp(cfg->models[i].name, name))
            return &cfg->models[i];
    return NULL;
}

const struct config_destination *config_find_destination(const struct config *cfg,
                                                         const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_destinations; i++)
        if (!strcmp(cfg->destinations[i].name, name))
            return &cfg->destinations[i];
    return NULL;
}

int config_load(const char *path, struct config **out, config_error_fn err, void *ud)
{
    struct ctx c = {.file = path ? path : "(null)", .fn = err, .ud = ud};
    if (out)
        *out = NULL;
    if (!path) {
        report_at(&c, 0, 0, "cannot read: %s", strerror(EINVAL));
        return c.count;
    }

    size_t len = 0;
    int e = 0;
    char *buf = read_file(path, &len, &e);
    if (!buf) {
        report_at(&c, 0, 0, "cannot read: %s", strerror(e));
        return c.count;
    }

    struct ynode *root = NULL;
    int perr = parse_tree(&c, buf, len, &root);
    free(buf);

    struct config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        ynode_free(root);
        oom(&c);
        return c.count;
    }
    /* relative paths in the file are taken from its directory */
    char *dir = NULL;
    if (!(cfg->path = absolute_path(path)) || !(dir = dir_of(cfg->path))) {
        report_at(&c, 0, 0, "cannot resolve path: %s", strerror(errno));
        ynode_free(root);
        config_free(cfg);
        return c.count;
    }
    c.dir = dir;
    set_defaults(&c, node_fields, NELEM(node_fields), &cfg->node);
    set_defaults(&c, completion_fields, NELEM(completion_fields), &cfg->completion);

    if (perr == 0 && root && !is_null(root)) {
        if (root->kind != Y_MAP) {
            if (root->kind != Y_ALIAS)
                report_at(&c, root->line, root->col, "top level must be a mapping");
        } else {
            /* rules may name models defined further down */
            const struct ynode *ms = map_get(root, "models");
            c.models = ms && ms->kind == Y_MAP ? ms : NULL;
            const struct ynode *ds = map_get(root, "destinations");
            c.destinations = ds && ds->kind == Y_MAP ? ds : NULL;
            char b[80];
            for (size_t i = 0; i + 1 < root->n; i += 2) {
                const struct ynode *k = root->kids[i];
                if (!usable_key(&c, "top level", root, i, "key"))
                    continue;
                size_t si = 0;
                while (si < NELEM(sections) &&
                       (strlen(sections[si].key) != k->len || memcmp(sections[si].key, k->text, k->len)))
                    si++;
                if (si == NELEM(sections)) {
                    report_at(&c, k->line, k->col, "unknown top-level key '%s'",
                              esc(k->text, k->len, b));
                    continue;
                }
                sections[si].parse(&c, cfg, k, root->kids[i + 1]);
            }
        }
    }
    ynode_free(root);
    free(dir);

    if (c.count > 0 || !out) {
        config_free(cfg);
        return c.count;
    }
    *out = cfg;
    return 0;
}

int config_caller_allowed(const struct config *cfg, const char *ae)
{
    if (!cfg)
        return 0;
    if (cfg->node.n_allowed_callers == 0)
        return 1;
    if (!ae)
        return 0;
    size_t len = strlen(ae);
    while (len > 0 && ae[len - 1] == ' ')
        len--; /* DICOM pads AE titles with trailing spaces */
    for (size_t i = 0; i < cfg->node.n_allowed_callers; i++) {
        const char *a = cfg->node.allowed_callers[i];
        if (strlen(a) == len && !memcmp(a, ae, len))
            return 1;
    }
    return 0;
}
