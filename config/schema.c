/*
 * schema.c — the schema engine: applies a YAML mapping to a struct through
 * a table of struct schema_field (schema.h), with defaults, ranges and one
 * positioned message per problem; compares two structs on the keys only a
 * restart may change; writes the reference of a table.
 */
#include "config/schema.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

char *schema_absolute_path(const char *path)
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
char *schema_dir_of(const char *path)
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
char *schema_resolve_path(const struct schema_ctx *c, const char *path)
{
    if (path[0] == '/' || !c->dir) {
        char *s = strdup(path);
        if (s)
            clean_path(s);
        return s;
    }
    return join_path(c->dir, path);
}

const char *schema_file_strerror(int e)
{
    if (e == SCHEMA_ENOTFILE)
        return "not a regular file";
    if (e == SCHEMA_ETOOBIG)
        return "larger than 16 MiB";
    return strerror(e);
}

/* Opens PATH for reading if it is a regular file (O_NONBLOCK: a FIFO
 * cannot hang the open either). Returns the descriptor, or -1 with the
 * error in *ERR. */
static int open_regular(const char *path, struct stat *st, int *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    *err = fstat(fd, st) != 0 ? errno : S_ISDIR(st->st_mode) ? EISDIR
                                      : !S_ISREG(st->st_mode) ? SCHEMA_ENOTFILE : 0;
    if (*err) {
        close(fd);
        return -1;
    }
    return fd;
}

int schema_readable(const char *path)
{
    struct stat st;
    int e = 0, fd = open_regular(path, &st, &e);
    if (fd >= 0)
        close(fd);
    return e;
}

char *schema_read_file(const char *path, size_t *lenp, int *err)
{
    struct stat st;
    int fd = open_regular(path, &st, err);
    if (fd < 0)
        return NULL;
    if ((uintmax_t)st.st_size > SCHEMA_MAX_FILE) {
        *err = SCHEMA_ETOOBIG;
        close(fd);
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
        if (len > SCHEMA_MAX_FILE) { /* it grew while read */
            *err = SCHEMA_ETOOBIG;
            goto fail;
        }
    }
    close(fd);
    *lenp = len;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

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

static int check_ae(struct schema_ctx *c, const char *what, const struct ynode *v)
{
    if (!schema_want_string(c, what, v))
        return 0;
    const char *why = ae_problem(v->text, v->len);
    if (why) {
        char b[80];
        schema_report(c, v->line, v->col, "%s: AE title '%s' %s", what, schema_esc(v->text, v->len, b), why);
        return 0;
    }
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
static void describe_list(const struct schema_field *f, char *buf, size_t n)
{
    static const char *const limit[] = {[F_ANY] = "", [F_POSITIVE] = " > 0",
                                        [F_NONZERO] = " other than 0", [F_UNIT] = " 0..1"};
    if (f->type == T_INTS)
        snprintf(buf, n, "%d integers %lld..%lld", f->count, f->min, f->max);
    else if (f->min_count)
        snprintf(buf, n, "%d to %d numbers%s", f->min_count, f->count, limit[f->fcheck]);
    else
        snprintf(buf, n, "%s%s%s%d numbers%s", f->none ? "'" : "", f->none ? f->none : "",
                 f->none ? "' or " : "", f->count, limit[f->fcheck]);
}

/* Sets a list of COUNT items (MIN_COUNT..COUNT where set); one message for the whole list, at the
 * offending item when there is one. */
static void set_list(struct schema_ctx *c, const char *what, const struct schema_field *f,
                     const struct ynode *v, void *base)
{
    char *p = (char *)base + f->off;
    int is_float = f->type == T_FLOATS;
    if (is_float && (ynode_is_null(v) || (f->none && v->kind == Y_SCALAR && v->plain && !v->tagged &&
                                    !strcmp(v->text, f->none)))) {
        int no = 0;
        memcpy((char *)base + f->off_n, &no, sizeof no);
        return;
    }
    char expect[96];
    describe_list(f, expect, sizeof expect);
    size_t fewest = (size_t)(f->min_count ? f->min_count : f->count);
    if (v->kind != Y_SEQ || v->n < fewest || v->n > (size_t)f->count) {
        schema_report(c, v->line, v->col, "%s: expected %s", what, expect);
        return;
    }
    int iv[MAX_LIST];
    double dv[MAX_LIST];
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        long long n;
        if (it->kind == Y_ALIAS)
            return; /* already reported */
        int ok = is_float ? ynode_number(it, &dv[i]) && float_ok(f->fcheck, dv[i])
                          : ynode_int(it, f->min, f->max, &n);
        if (!ok) {
            schema_report(c, it->line, it->col, "%s: expected %s", what, expect);
            return;
        }
        if (!is_float)
            iv[i] = (int)n;
    }
    if (is_float) {
        int given = f->min_count ? (int)v->n : 1;
        memcpy(p, dv, v->n * sizeof dv[0]);
        memcpy((char *)base + f->off_n, &given, sizeof given);
    } else {
        memcpy(p, iv, v->n * sizeof iv[0]);
    }
}

/* NAME: entry pairs of V into a new array at *(void **)ARRP: each entry
 * gets its name, the defaults of F->sub, then its pairs and F->check. */
static void parse_named(struct schema_ctx *c, const char *what, const struct schema_field *f,
                        const struct ynode *v, void *arrp, size_t *np)
{
    char b[80];
    if (ynode_is_null(v))
        return;
    if (v->kind != Y_MAP) {
        schema_report(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    char *arr = calloc(v->n / 2 + 1, f->entry_size);
    if (!arr) {
        schema_oom(c);
        return;
    }
    *(void **)arrp = arr;
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (!schema_usable_key(c, what, v, i, f->noun))
            continue;
        if (!schema_valid_name(k->text, k->len)) {
            schema_report(c, k->line, k->col,
                          "%s: invalid name '%s' (use letters, digits, '_', '.', '-')", what,
                          schema_esc(k->text, k->len, b));
            continue;
        }
        char sect[320];
        snprintf(sect, sizeof sect, "%s.%s", what, k->text);
        if (val->kind == Y_ALIAS)
            continue;
        if (val->kind != Y_MAP) {
            schema_report(c, val->line, val->col, "%s: expected a mapping", sect);
            continue;
        }
        char *e = arr + (*np)++ * f->entry_size;
        char **name = (char **)(e + f->name_off);
        if (!(*name = strdup(k->text))) {
            schema_oom(c);
            continue;
        }
        schema_set_defaults(c, f->sub, f->n_sub, e);
        schema_parse_section(c, sect, f->sub, f->n_sub, val, e, k, f->check);
    }
}

static void set_field(struct schema_ctx *c, const char *sect, const struct schema_field *f,
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
        if (!ynode_is_integer(v)) {
            schema_report(c, v->line, v->col, "%s: expected an integer", what);
            return;
        }
        long long n;
        if (!ynode_int(v, f->min, f->max, &n)) {
            schema_report(c, v->line, v->col, "%s: %s is out of range %lld..%lld", what,
                      schema_esc(v->text, v->len, b), f->min, f->max);
            return;
        }
        *(int *)p = (int)n;
        return;
    }
    case T_FLOAT: {
        double d;
        if (!ynode_number(v, &d)) {
            schema_report(c, v->line, v->col, "%s: expected a number", what);
            return;
        }
        if (!float_ok(f->fcheck, d)) {
            schema_esc(v->text, v->len, b);
            if (f->fcheck == F_UNIT)
                schema_report(c, v->line, v->col, "%s: %s is out of range 0..1%s", what, b,
                          d == 1 ? " (1 excluded)" : "");
            else if (f->fcheck == F_NONZERO)
                schema_report(c, v->line, v->col, "%s: must not be 0", what);
            else
                schema_report(c, v->line, v->col, "%s: %s must be greater than 0", what, b);
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
        if (!schema_want_string(c, what, v))
            return;
        if (v->len == 0) {
            schema_report(c, v->line, v->col, "%s: must not be empty", what);
            return;
        }
        const char *why = f->valid ? f->valid(v->text) : NULL;
        if (why) {
            schema_report(c, v->line, v->col, "%s: '%s' %s", what, schema_esc(v->text, v->len, b), why);
            return;
        }
        char *s = f->type == T_PATH ? schema_resolve_path(c, v->text) : strdup(v->text);
        if (!s) {
            schema_oom(c);
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
    case T_BOOL:
        if (!ynode_flag(v, (int *)p))
            schema_report(c, v->line, v->col, "%s: expected true or false", what);
        return;
    case T_ENUM: {
        if (!schema_want_string(c, what, v))
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
        schema_report(c, v->line, v->col, "%s: '%s' is not one of %s", what,
                  schema_esc(v->text, v->len, b), list);
        return;
    }
    case T_AE_LIST: {
        char ***listp = (char ***)p;
        size_t *np = (size_t *)((char *)base + f->off_n);
        if (ynode_is_null(v))
            return;
        if (v->kind != Y_SEQ) {
            schema_report(c, v->line, v->col, "%s: expected a sequence", what);
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
                schema_report(c, it->line, it->col, "%s: duplicate name '%s'", what,
                          schema_esc(it->text, it->len, b));
                continue;
            }
            char **nl = realloc(*listp, (*np + 1) * sizeof *nl);
            if (!nl) {
                schema_oom(c);
                return;
            }
            *listp = nl;
            if (!(nl[*np] = strdup(it->text))) {
                schema_oom(c);
                return;
            }
            (*np)++;
        }
        return;
    }
    case T_SECTION: {
        /* an empty value is an empty mapping: its required keys are then missing */
        struct ynode empty = {.kind = Y_MAP, .line = v->line, .col = v->col};
        if (ynode_is_null(v))
            v = &empty;
        if (v->kind != Y_MAP) {
            schema_report(c, v->line, v->col, "%s: expected a mapping", what);
            return;
        }
        schema_parse_section(c, what, f->sub, f->n_sub, v, p, v, f->check);
        return;
    }
    case T_NAMED:
        parse_named(c, what, f, v, p, (size_t *)((char *)base + f->off_n));
        return;
    case T_CUSTOM:
        f->parse(c, f, what, v, base);
        return;
    }
}

void schema_set_defaults(struct schema_ctx *c, const struct schema_field *fs, size_t nf, void *base)
{
    for (size_t i = 0; i < nf; i++) {
        const struct schema_field *f = &fs[i];
        char *p = (char *)base + f->off;
        switch (f->type) {
        case T_INT:
        case T_BOOL:
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
                !(*(char **)p = f->type == T_PATH ? schema_resolve_path(c, f->def_str) : strdup(f->def_str)))
                schema_oom(c);
            break;
        case T_AE:
            if (f->def_str)
                snprintf(p, CONFIG_AE_MAX + 1, "%s", f->def_str);
            break;
        case T_SECTION:
            schema_set_defaults(c, f->sub, f->n_sub, p);
            break;
        case T_AE_LIST:
        case T_NAMED:  /* entries get theirs as they are parsed */
        case T_INTS:   /* zeros, from the caller's calloc */
        case T_FLOATS:
        case T_CUSTOM:
            break;
        }
    }
}

void schema_release_str(const struct schema_field *f, void *base)
{
    char **p = (char **)((char *)base + f->off);
    free(*p);
    *p = NULL;
}

void schema_release_str_list(const struct schema_field *f, void *base)
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
void schema_free_fields(const struct schema_field *fs, size_t nf, void *base)
{
    for (size_t i = 0; i < nf; i++) {
        const struct schema_field *f = &fs[i];
        switch (f->type) {
        case T_STR:
        case T_PATH:
            schema_release_str(f, base);
            break;
        case T_AE_LIST:
            schema_release_str_list(f, base);
            break;
        case T_SECTION:
            schema_free_fields(f->sub, f->n_sub, (char *)base + f->off);
            break;
        case T_NAMED: {
            char **arrp = (char **)((char *)base + f->off);
            size_t *np = (size_t *)((char *)base + f->off_n);
            for (size_t e = 0; e < *np; e++) {
                char *entry = *arrp + e * f->entry_size;
                free(*(char **)(entry + f->name_off));
                if (f->release)
                    f->release(f, entry);
                schema_free_fields(f->sub, f->n_sub, entry);
            }
            free(*arrp);
            *arrp = NULL;
            *np = 0;
            break;
        }
        case T_CUSTOM:
            if (f->release)
                f->release(f, base);
            break;
        default:
            break;
        }
    }
}

void schema_parse_section(struct schema_ctx *c, const char *sect, const struct schema_field *fs, size_t nf,
                          const struct ynode *map, void *base, const struct ynode *pos,
                          schema_check_fn check)
{
    struct schema_parsed p = {.sect = sect, .fs = fs, .nf = nf, .map = map, .pos = pos};
    char b[80];

    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct ynode *k = map->kids[i], *v = map->kids[i + 1];
        if (!schema_usable_key(c, sect, map, i, "key"))
            continue;
        size_t fi = 0;
        while (fi < nf && (strlen(fs[fi].key) != k->len || memcmp(fs[fi].key, k->text, k->len)))
            fi++;
        if (fi == nf) {
            if (sect[0])
                schema_report(c, k->line, k->col, "unknown key '%s' in %s", schema_esc(k->text, k->len, b), sect);
            else
                schema_report(c, k->line, k->col, "unknown top-level key '%s'", schema_esc(k->text, k->len, b));
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
            schema_report(c, pos->line, pos->col, "%s: missing required key '%s'", sect, fs[fi].key);
        else
            schema_report(c, pos->line, pos->col, "missing required key '%s'", fs[fi].key);
    }
    if (check)
        check(c, &p, base);
}

size_t schema_field_index(const struct schema_parsed *p, const char *key)
{
    size_t i = 0;
    while (i < p->nf && strcmp(p->fs[i].key, key))
        i++;
    return i; /* KEY is always one of the table's: callers name their own fields */
}

/* 1 when KEY holds a value to check against: given and accepted, or absent
 * and defaulted. */
int schema_usable(const struct schema_parsed *p, const char *key)
{
    size_t i = schema_field_index(p, key);
    return p->st[i] == 1 || (p->st[i] == 0 && !p->fs[i].required);
}

/* Where to report about KEY: its value, or the section when it is absent. */
const struct ynode *schema_pos_of(const struct schema_parsed *p, const char *key)
{
    const struct ynode *v = ynode_get(p->map, key);
    return v ? v : p->pos;
}


/* ---- reload ---- */

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static int field_differs(const struct schema_field *f, const char *a, const char *b)
{
    switch (f->type) {
    case T_INT:
    case T_ENUM:
    case T_BOOL:
        return *(const int *)a != *(const int *)b;
    case T_FLOAT:
        return *(const double *)a != *(const double *)b;
    case T_STR:
    case T_PATH:
        return !same_str(*(char *const *)a, *(char *const *)b);
    case T_AE:
        return strcmp(a, b) != 0;
    case T_AE_LIST: {
        char *const *la = *(char **const *)a, *const *lb = *(char **const *)b;
        size_t na = *(const size_t *)(a - f->off + f->off_n);
        size_t nb = *(const size_t *)(b - f->off + f->off_n);
        if (na != nb)
            return 1;
        for (size_t i = 0; i < na; i++)
            if (strcmp(la[i], lb[i]))
                return 1;
        return 0;
    }
    default:
        return 0; /* lists, sections and custom values are not restart keys */
    }
}

int schema_restart_changes(const struct schema_field *fs, size_t nf, const char *prefix,
                           const void *a, const void *b, char *buf, size_t len)
{
    int n = 0;
    for (size_t i = 0; i < nf; i++) {
        const struct schema_field *f = &fs[i];
        const char *pa = (const char *)a + f->off, *pb = (const char *)b + f->off;
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", f->key);
        if (f->type == T_SECTION) {
            n += schema_restart_changes(f->sub, f->n_sub, name, pa, pb, buf, len);
            continue;
        }
        if (!f->restart || !field_differs(f, pa, pb))
            continue;
        size_t used = buf && len ? strlen(buf) : 0;
        if (buf && used < len)
            snprintf(buf + used, len - used, "%s%s", used ? ", " : "", name);
        n++;
    }
    return n;
}

/* ---- the reference ---- */

static void doc_type(const struct schema_field *f, char *buf, size_t n)
{
    static const char *const limit[] = {[F_ANY] = "", [F_POSITIVE] = " > 0",
                                        [F_NONZERO] = " other than 0", [F_UNIT] = " 0..1 (1 excluded)"};
    switch (f->type) {
    case T_INT:
        snprintf(buf, n, "integer %lld..%lld", f->min, f->max);
        return;
    case T_STR:
        snprintf(buf, n, "string");
        return;
    case T_PATH:
        snprintf(buf, n, "path");
        return;
    case T_AE:
        snprintf(buf, n, "AE title");
        return;
    case T_AE_LIST:
        snprintf(buf, n, "list of AE titles");
        return;
    case T_BOOL:
        snprintf(buf, n, "`true` or `false`");
        return;
    case T_ENUM: {
        size_t o = (size_t)snprintf(buf, n, "one of");
        for (int i = 0; f->names[i] && o < n; i++)
            o += (size_t)snprintf(buf + o, n - o, "%s `%s`", i ? "," : "", f->names[i]);
        return;
    }
    case T_FLOAT:
        snprintf(buf, n, "number%s", limit[f->fcheck]);
        return;
    case T_INTS:
    case T_FLOATS:
        describe_list(f, buf, n);
        return;
    case T_SECTION:
        snprintf(buf, n, "mapping");
        return;
    case T_NAMED:
        snprintf(buf, n, "mapping of %s names to %ss", f->noun, f->noun);
        return;
    case T_CUSTOM:
        snprintf(buf, n, "%s", f->type_doc ? f->type_doc : "see below");
        return;
    }
}

static void doc_default(const struct schema_field *f, char *buf, size_t n)
{
    if (f->required) {
        snprintf(buf, n, "required");
        return;
    }
    switch (f->type) {
    case T_INT:
        snprintf(buf, n, "`%lld`", f->def_int);
        return;
    case T_ENUM:
        snprintf(buf, n, "`%s`", f->names[f->def_int]);
        return;
    case T_BOOL:
        snprintf(buf, n, "`%s`", f->def_int ? "true" : "false");
        return;
    case T_FLOAT:
        snprintf(buf, n, "`%g`", f->def_float);
        return;
    case T_STR:
    case T_PATH:
    case T_AE:
        snprintf(buf, n, f->def_str ? "`%s`" : "none", f->def_str);
        return;
    case T_AE_LIST:
        snprintf(buf, n, "`[]`");
        return;
    default:
        snprintf(buf, n, "none");
        return;
    }
}

void schema_write_doc(FILE *out, const struct schema_field *fs, size_t nf, const char *prefix)
{
    for (size_t i = 0; i < nf; i++) {
        const struct schema_field *f = &fs[i];
        char name[256], type[256], def[128];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", f->key);
        doc_type(f, type, sizeof type);
        doc_default(f, def, sizeof def);
        int section = f->type == T_SECTION;
        fprintf(out, "| `%s` | %s | %s | %s | %s |\n", name, type, section ? "—" : def,
                section ? "—" : f->restart ? "restart" : "reload", f->doc ? f->doc : "");
        if (f->type == T_SECTION)
            schema_write_doc(out, f->sub, f->n_sub, name);
        else if (f->type == T_NAMED) {
            char entry[300];
            snprintf(entry, sizeof entry, "%s.NAME", name);
            schema_write_doc(out, f->sub, f->n_sub, entry);
        }
    }
}
