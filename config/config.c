/*
 * config — load and validate the ainode YAML configuration.
 *
 * The file is read with libfyaml's event parser into a small tree that keeps
 * the position of every key and value, then checked section by section
 * against the schema tables below. Building our own tree (rather than a
 * fy_document) gives positions for collections too and lets duplicate keys
 * be reported where they occur instead of aborting the parse.
 */
#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Error reporting                                                          */

struct ctx {
    const char *file; /* as given by the caller */
    config_error_fn fn;
    void *ud;
    int count;
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
    T_STR,     /* char *, non-empty */
    T_PATH,    /* char *, made absolute against the config file's directory */
    T_AE,      /* char[CONFIG_AE_MAX + 1] */
    T_AE_LIST, /* char ** plus a size_t count at off_n */
    T_ENUM,    /* int-sized enum, value is the index in names[] */
};

struct field {
    const char *key;
    enum ftype type;
    int required;
    long long def_int;
    const char *def_str;
    long long min, max;
    size_t off, off_n;
    const char *const *names; /* T_ENUM, NULL-terminated */
    const char *doc;
};

_Static_assert(sizeof(enum config_log_level) == sizeof(int), "log level stored as int");

static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};

#define NODE_OFF(m) offsetof(struct config_node, m)
#define DEST_OFF(m) offsetof(struct config_destination, m)

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
    {.key = "log_level", .type = T_ENUM, .def_int = CONFIG_LOG_INFO, .names = log_level_names,
     .off = NODE_OFF(log_level), .doc = "error, warn, info or debug"},
    {.key = "shutdown_grace_seconds", .type = T_INT, .def_int = 30, .min = 0, .max = 3600,
     .off = NODE_OFF(shutdown_grace_seconds), .doc = "wait for running associations on stop"},
    {.key = "network_timeout_seconds", .type = T_INT, .def_int = 60, .min = 1, .max = 3600,
     .off = NODE_OFF(network_timeout_seconds), .doc = "ACSE/DIMSE read timeout"},
    {.key = "max_pdu", .type = T_INT, .def_int = 131072, .min = 4096, .max = 131072,
     .off = NODE_OFF(max_pdu), .doc = "maximum receive PDU length"},
};

static const struct field dest_fields[] = {
    {.key = "ae_title", .type = T_AE, .required = 1, .off = DEST_OFF(ae_title),
     .doc = "AE title of the peer"},
    {.key = "host", .type = T_STR, .required = 1, .off = DEST_OFF(host),
     .doc = "host name or address of the peer"},
    {.key = "port", .type = T_INT, .required = 1, .min = 1, .max = 65535, .off = DEST_OFF(port),
     .doc = "TCP port of the peer"},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

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

static void set_field(struct ctx *c, const char *sect, const struct field *f,
                      const struct ynode *v, void *base)
{
    char what[128];
    char b[80];
    char *p = (char *)base + f->off;
    snprintf(what, sizeof what, "%s.%s", sect, f->key);

    if (v->kind == Y_ALIAS)
        return;

    switch (f->type) {
    case T_INT: {
        if (v->kind != Y_SCALAR || !v->plain || v->tagged || !is_decimal(v->text)) {
            report_at(c, v->line, v->col, "%s: expected an integer", what);
            return;
        }
        errno = 0;
        long long n = strtoll(v->text, NULL, 10);
        if (errno == ERANGE || n < f->min || n > f->max) {
            report_at(c, v->line, v->col, "%s: %s is out of range %lld..%lld", what,
                      esc(v->text, v->len, b), f->min, f->max);
            return;
        }
        *(int *)p = (int)n;
        return;
    }
    case T_STR:
    case T_PATH: {
        if (!want_string(c, what, v))
            return;
        if (v->len == 0) {
            report_at(c, v->line, v->col, "%s: must not be empty", what);
            return;
        }
        char *s = strdup(v->text);
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
        case T_STR:
        case T_PATH:
            if (f->def_str && !(*(char **)p = strdup(f->def_str)))
                oom(c);
            break;
        case T_AE:
            if (f->def_str)
                snprintf(p, CONFIG_AE_MAX + 1, "%s", f->def_str);
            break;
        case T_AE_LIST:
            break;
        }
    }
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
        report_at(c, k->line, k->col, "%s: keys must be scalars", sect);
        return 0;
    }
    if (key_seen_before(map, ki)) {
        report_at(c, k->line, k->col, "duplicate %s '%s'", dup_what, esc(k->text, k->len, b));
        return 0;
    }
    return 1;
}

/* Applies the pairs of MAP to BASE through FS; POS locates missing-key errors. */
static void parse_section(struct ctx *c, const char *sect, const struct field *fs, size_t nf,
                          const struct ynode *map, void *base, const struct ynode *pos)
{
    unsigned char seen[32] = {0};
    _Static_assert(NELEM(node_fields) <= sizeof seen && NELEM(dest_fields) <= sizeof seen,
                   "seen[] too small");
    char b[80];

    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct ynode *k = map->kids[i];
        if (!usable_key(c, sect, map, i, "key"))
            continue;
        size_t fi = 0;
        while (fi < nf && (strlen(fs[fi].key) != k->len || memcmp(fs[fi].key, k->text, k->len)))
            fi++;
        if (fi == nf) {
            report_at(c, k->line, k->col, "unknown key '%s' in %s", esc(k->text, k->len, b), sect);
            continue;
        }
        seen[fi] = 1;
        set_field(c, sect, &fs[fi], map->kids[i + 1], base);
    }
    for (size_t fi = 0; fi < nf; fi++)
        if (fs[fi].required && !seen[fi])
            report_at(c, pos->line, pos->col, "%s: missing required key '%s'", sect, fs[fi].key);
}

static int valid_dest_name(const char *s, size_t len)
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
    parse_section(c, "node", node_fields, NELEM(node_fields), v, &cfg->node, v);
}

static void parse_destinations(struct ctx *c, struct config *cfg, const struct ynode *key,
                               const struct ynode *v)
{
    (void)key;
    char b[80];
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
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (!usable_key(c, "destinations", v, i, "destination"))
            continue;
        if (!valid_dest_name(k->text, k->len)) {
            report_at(c, k->line, k->col,
                      "destinations: invalid name '%s' (use letters, digits, '_', '.', '-')",
                      esc(k->text, k->len, b));
            continue;
        }
        char sect[128];
        snprintf(sect, sizeof sect, "destinations.%s", k->text);
        if (val->kind == Y_ALIAS)
            continue;
        if (val->kind != Y_MAP) {
            report_at(c, val->line, val->col, "%s: expected a mapping", sect);
            continue;
        }
        struct config_destination *d = &cfg->destinations[cfg->n_destinations++];
        if (!(d->name = strdup(k->text))) {
            oom(c);
            continue;
        }
        parse_section(c, sect, dest_fields, NELEM(dest_fields), val, d, k);
    }
}

/* Sections a later version will define: accepted only while empty. */
static void parse_reserved(struct ctx *c, struct config *cfg, const struct ynode *key,
                           const struct ynode *v)
{
    (void)cfg;
    if (is_null(v) || v->kind == Y_ALIAS || ((v->kind == Y_MAP || v->kind == Y_SEQ) && v->n == 0))
        return;
    report_at(c, key->line, key->col, "%s: not supported by this version of ainode", key->text);
}

static const struct section {
    const char *key;
    void (*parse)(struct ctx *, struct config *, const struct ynode *key, const struct ynode *v);
} sections[] = {
    {"node", parse_node},
    {"destinations", parse_destinations},
    {"models", parse_reserved},
    {"rules", parse_reserved},
};

/* ------------------------------------------------------------------------ */
/* Paths                                                                    */

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

static int resolve_paths(struct ctx *c, const struct field *fs, size_t nf, void *base,
                         const char *cfg_path)
{
    char *dir = strdup(cfg_path);
    if (!dir)
        return oom(c);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    for (size_t i = 0; i < nf; i++) {
        if (fs[i].type != T_PATH)
            continue;
        char **p = (char **)((char *)base + fs[i].off);
        if (!*p)
            continue;
        char *abs = (*p)[0] == '/' ? strdup(*p) : join_path(dir, *p);
        if (!abs) {
            free(dir);
            return oom(c);
        }
        clean_path(abs);
        free(*p);
        *p = abs;
    }
    free(dir);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* File                                                                     */

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

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->node.bind);
    free(cfg->node.data_dir);
    for (size_t i = 0; i < cfg->node.n_allowed_callers; i++)
        free(cfg->node.allowed_callers[i]);
    free(cfg->node.allowed_callers);
    for (size_t i = 0; i < cfg->n_destinations; i++) {
        free(cfg->destinations[i].name);
        free(cfg->destinations[i].host);
    }
    free(cfg->destinations);
    free(cfg);
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
    set_defaults(&c, node_fields, NELEM(node_fields), &cfg->node);

    if (perr == 0 && root && !is_null(root)) {
        if (root->kind != Y_MAP) {
            if (root->kind != Y_ALIAS)
                report_at(&c, root->line, root->col, "top level must be a mapping");
        } else {
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

    if (c.count == 0) {
        cfg->path = absolute_path(path);
        if (!cfg->path)
            report_at(&c, 0, 0, "cannot resolve path: %s", strerror(errno));
        else
            resolve_paths(&c, node_fields, NELEM(node_fields), &cfg->node, cfg->path);
    }
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
