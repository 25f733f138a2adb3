/*
 * yaml.c — the positioned YAML tree and the problems reported against it.
 *
 * libfyaml's event parser feeds a small tree (struct ynode, schema.h) that
 * keeps the position of every key and value, collections included, and
 * keeps duplicate keys so that they are reported where they occur. Every
 * problem is one line, "FILE:LINE:COLUMN: message", counted in the
 * context and handed to the caller's callback.
 */
#include "config/schema.h"
#include "common/error.h"

#include <errno.h>
#include <libfyaml.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void emit(struct schema_ctx *c, int line, int col, const char *fmt, va_list ap)
{
    char msg[512];
    char out[sizeof msg + 64];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* error_set keeps it one line: a message never spans lines */
    if (line > 0)
        error_set(out, sizeof out, 0, "%s:%d:%d: %s", c->file, line, col > 0 ? col : 1, msg);
    else
        error_set(out, sizeof out, 0, "%s: %s", c->file, msg);
    c->count++;
    if (c->fn)
        c->fn(c->ud, out);
}

void schema_report(struct schema_ctx *c, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(c, line, col, fmt, ap);
    va_end(ap);
}

int schema_oom(struct schema_ctx *c)
{
    schema_report(c, 0, 0, "out of memory");
    return 0;
}
/* ------------------------------------------------------------------------ */
/* A minimal YAML tree with positions                                       */


void ynode_free(struct ynode *y)
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

int ynode_is_null(const struct ynode *y)
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

/* libfyaml 0.7 unescapes a run of two or more '' escapes in a single-quoted
 * scalar wrongly ('x''''y' reads as x''' instead of x''y, losing text, and
 * leaks its chunk buffer), so such a scalar is refused, never misread. The
 * event's marks bound the text between the quotes in BUF. */
static int single_quoted_unreadable(struct fy_event *ev, const char *buf, size_t len)
{
    if (fy_token_scalar_style(ev->scalar.value) != FYSS_SINGLE_QUOTED)
        return 0;
    const struct fy_mark *a = fy_event_start_mark(ev), *b = fy_event_end_mark(ev);
    if (!a || !b || a->input_pos > b->input_pos || b->input_pos > len)
        return 0;
    size_t run = 0;
    for (size_t i = a->input_pos; i < b->input_pos; i++) {
        run = buf[i] == '\'' ? run + 1 : 0;
        if (run >= 4)
            return 1;
    }
    return 0;
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

static void report_syntax(struct schema_ctx *c, struct fy_diag *diag, const struct diag_text *dt)
{
    int before = c->count;
    void *it = NULL;
    struct fy_diag_error *de;
    while ((de = fy_diag_errors_iterate(diag, &it)))
        if (de->type >= FYET_ERROR)
            schema_report(c, de->line, de->column, "%s", de->msg ? de->msg : "YAML syntax error");
    if (c->count != before)
        return;
    int line, col, off = -1;
    /* printed form with show_position: "<LINE:COLUMN>: message", 0-based */
    if (dt->have && sscanf(dt->line, " <%d:%d>: %n", &line, &col, &off) == 2 && off > 0)
        schema_report(c, line + 1, col + 1, "%s", dt->line + off);
    else
        schema_report(c, 0, 0, "%s", dt->have && dt->line[0] ? dt->line : "YAML syntax error");
}

#define MAX_DEPTH 64 /* far beyond any sane config; bounds recursion */

/* The position of the first byte of BUF that is not well-formed UTF-8
 * (overlong forms, surrogates and values past U+10FFFF included) or is
 * NUL; 0 when there is none. */
static int utf8_invalid_at(const char *buf, size_t len, int *line, int *col)
{
    const unsigned char *s = (const unsigned char *)buf;
    int l = 1, c = 1;
    for (size_t i = 0; i < len;) {
        unsigned char b = s[i];
        size_t n = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                 : (b & 0xF8) == 0xF0 ? 4 : 0;
        int ok = n != 0 && b != 0 && i + n <= len;
        uint32_t cp = n == 1 ? b : n == 2 ? b & 0x1Fu : n == 3 ? b & 0x0Fu : b & 0x07u;
        for (size_t k = 1; ok && k < n; k++) {
            ok = (s[i + k] & 0xC0) == 0x80;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if (ok && n > 1)
            ok = (n == 2 && cp >= 0x80) ||
                 (n == 3 && cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) ||
                 (n == 4 && cp >= 0x10000 && cp <= 0x10FFFF);
        if (!ok) {
            *line = l;
            *col = c;
            return 1;
        }
        if (b == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
        i += n;
    }
    return 0;
}

/*
 * Parses BUF into *ROOT (NULL for an empty stream). Syntax errors and
 * unsupported constructs are reported; returns -1 when the tree is unusable.
 */
int yaml_parse(struct schema_ctx *c, const char *buf, size_t len, struct ynode **root)
{
    /* YAML is Unicode text; libfyaml may also loop forever on some invalid
     * bytes (a directive followed by them), so they never reach it. */
    int bad_line, bad_col;
    *root = NULL;
    if (utf8_invalid_at(buf, len, &bad_line, &bad_col)) {
        schema_report(c, bad_line, bad_col, "not UTF-8 text (a NUL or an invalid byte)");
        return -1;
    }
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
        schema_oom(c);
        return -1;
    }
    fy_diag_set_collect_errors(diag, true);

    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_ALLOW_DUPLICATE_KEYS, .diag = diag};
    struct fy_parser *fyp = fy_parser_create(&pcfg);
    if (!fyp || fy_parser_set_string(fyp, buf, len) != 0) {
        if (fyp)
            fy_parser_destroy(fyp);
        fy_diag_destroy(diag);
        schema_oom(c);
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
            schema_report(c, has_pos ? m->line + 1 : 0, has_pos ? m->column + 1 : 0,
                      "only one YAML document is allowed");
            doc_error_pending = 0;
        }
        if (failed) {
            fy_parser_event_free(fyp, ev);
            continue; /* keep going so later syntax errors still surface */
        }
        if (t == FYET_SCALAR && single_quoted_unreadable(ev, buf, len)) {
            /* the start mark is inside the quote: point at the quote */
            schema_report(c, has_pos ? m->line + 1 : 0, has_pos ? m->column : 0,
                          "escaped quotes ('') in a row inside single quotes are not read "
                          "reliably: write this value in double quotes");
            failed = 1;
        } else if (t == FYET_SCALAR || t == FYET_ALIAS || t == FYET_MAPPING_START ||
            t == FYET_SEQUENCE_START) {
            struct ynode *y = ynode_from_event(ev);
            int is_coll = t == FYET_MAPPING_START || t == FYET_SEQUENCE_START;
            if (!y) {
                schema_oom(c);
                failed = 1;
            } else if (depth == 0) {
                if (!y->line)
                    y->line = y->col = 1;
                *root = y;
            } else if (ynode_add(stack[depth - 1], y) != 0) {
                ynode_free(y);
                y = NULL;
                schema_oom(c);
                failed = 1;
            }
            if (y && t == FYET_ALIAS)
                schema_report(c, y->line, y->col, "aliases are not supported");
            if (y && is_coll) {
                if (depth == MAX_DEPTH) {
                    schema_report(c, y->line, y->col, "nested deeper than %d levels", MAX_DEPTH);
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
/* Value checks                                                             */

/* Renders user text for a message: printable ASCII only, bounded length. */
const char *schema_esc(const char *s, size_t len, char buf[static 80])
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

int schema_want_string(struct schema_ctx *c, const char *what, const struct ynode *v)
{
    if (v->kind == Y_ALIAS)
        return 0; /* already reported */
    if (v->kind != Y_SCALAR || ynode_is_null(v)) {
        schema_report(c, v->line, v->col, "%s: expected a string", what);
        return 0;
    }
    if (memchr(v->text, '\0', v->len)) {
        schema_report(c, v->line, v->col, "%s: must not contain a NUL character", what);
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
int ynode_int(const struct ynode *v, long long min, long long max, long long *out)
{
    if (!ynode_is_integer(v))
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
int ynode_number(const struct ynode *v, double *out)
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

int ynode_is(const struct ynode *y, const char *s)
{
    return y->kind == Y_SCALAR && y->len == strlen(s) && !memcmp(y->text, s, y->len);
}

/* The value of the first KEY in MAP, or NULL. */
const struct ynode *ynode_get(const struct ynode *map, const char *key)
{
    for (size_t i = 0; map && map->kind == Y_MAP && i + 1 < map->n; i += 2)
        if (ynode_is(map->kids[i], key))
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
int schema_usable_key(struct schema_ctx *c, const char *sect, const struct ynode *map, size_t ki,
                      const char *dup_what)
{
    const struct ynode *k = map->kids[ki];
    char b[80];
    if (k->kind == Y_ALIAS)
        return 0;
    if (k->kind != Y_SCALAR) {
        schema_report(c, k->line, k->col, "%s: keys must be scalars", sect[0] ? sect : "top level");
        return 0;
    }
    if (key_seen_before(map, ki)) {
        schema_report(c, k->line, k->col, "duplicate %s '%s'", dup_what, schema_esc(k->text, k->len, b));
        return 0;
    }
    return 1;
}

/*
 * Applies the pairs of MAP to BASE through FS; POS locates missing-key
 * errors. CHECK, when given, then checks the fields against each other.
 * SECT "" is a file's top level.
 */
int schema_valid_name(const char *s, size_t len)
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

int ynode_flag(const struct ynode *v, int *out)
{
    if (v->kind == Y_SCALAR && v->plain && !v->tagged &&
        (!strcmp(v->text, "true") || !strcmp(v->text, "false"))) {
        *out = v->text[0] == 't';
        return 1;
    }
    return 0;
}

int ynode_is_integer(const struct ynode *v)
{
    return v->kind == Y_SCALAR && v->plain && !v->tagged && is_decimal(v->text);
}
