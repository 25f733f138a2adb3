/*
 * schema.h — the configuration engine, internal to config/ and rules/.
 *
 * Three layers, each used by the one after it:
 *
 *   the positioned tree (yaml.c): a YAML file read with libfyaml's event
 *     parser into struct ynode, which keeps the line and column of every
 *     key and value (collections too) and lets duplicate keys be reported
 *     where they occur instead of aborting the parse;
 *   problems (yaml.c): one "FILE:LINE:COLUMN: message" line each, counted
 *     and handed to the caller's callback;
 *   the schema engine (schema.c): tables of struct schema_field that say,
 *     for every key, its type, default, range, documentation and whether a
 *     reload may change it; schema_parse_section() applies a mapping to a
 *     struct through such a table, schema_set_defaults() and
 *     schema_free_fields() set up and release it.
 *
 * The key tables themselves are config/tables.c (the config file) and
 * config/manifest.c (model manifests); the rules language parses its part
 * of the tree in rules/parse.c with the same engine.
 */
#ifndef AINODE_CONFIG_SCHEMA_H
#define AINODE_CONFIG_SCHEMA_H

#include <stddef.h>
#include <stdio.h>

#include "config/config.h"

/* ---- the positioned tree ---- */

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

/* What a parse reports to, and where relative paths start. */
struct schema_ctx {
    const char *file; /* as given by the caller; a manifest's absolute path */
    config_error_fn fn;
    void *ud;
    int count;                        /* problems reported so far */
    const char *dir;                  /* directory of FILE, absolute */
    const struct ynode *models;       /* the models: mapping, for rules naming models */
    const struct ynode *destinations; /* the destinations: mapping, likewise */
};

/* Reports one problem at LINE:COL (0: the file as a whole). */
void schema_report(struct schema_ctx *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Reports "out of memory"; returns 0 so that callers can return it. */
int schema_oom(struct schema_ctx *c);

/* Parses BUF into *ROOT (NULL for an empty stream). Syntax errors and
 * unsupported constructs (aliases, a second document) are reported;
 * returns -1 when the tree is unusable. */
int yaml_parse(struct schema_ctx *c, const char *buf, size_t len, struct ynode **root);
void ynode_free(struct ynode *y);

/* A plain null scalar (or no node at all). */
int ynode_is_null(const struct ynode *y);
/* A scalar whose text is exactly S. */
int ynode_is(const struct ynode *y, const char *s);
/* The value of the first KEY in MAP, or NULL. */
const struct ynode *ynode_get(const struct ynode *map, const char *key);
/* A plain decimal integer (whatever its size). */
int ynode_is_integer(const struct ynode *v);
/* A plain decimal integer in MIN..MAX into *OUT; 0 when it is not one. */
int ynode_int(const struct ynode *v, long long min, long long max, long long *out);
/* A plain YAML 1.2 int or float, finite, into *OUT; 0 when it is not one. */
int ynode_number(const struct ynode *v, double *out);
/* A plain true or false into *OUT; 0 when it is neither. */
int ynode_flag(const struct ynode *v, int *out);

/* Renders user text for a message: printable ASCII only, bounded length. */
const char *schema_esc(const char *s, size_t len, char buf[static 80]);
/* 1 when V is a string without NULs, else reports why not under WHAT. */
int schema_want_string(struct schema_ctx *c, const char *what, const struct ynode *v);
/* 1 when key KI of MAP is a scalar not seen before in MAP, else reports it
 * (as a duplicate DUP_WHAT). */
int schema_usable_key(struct schema_ctx *c, const char *sect, const struct ynode *map, size_t ki,
                      const char *dup_what);
/* Letters, digits, '_', '.' and '-': the names of destinations and models. */
int schema_valid_name(const char *s, size_t len);

/* ---- files and paths ---- */

/* Beside errno values: PATH is no regular file (a FIFO or a device could
 * block a reload forever), or it is over SCHEMA_MAX_FILE bytes. */
#define SCHEMA_ENOTFILE (-2)
#define SCHEMA_ETOOBIG (-3)
#define SCHEMA_MAX_FILE (16u << 20)
/* The text of an error of the two functions below: strerror or ours. */
const char *schema_file_strerror(int e);
/* The whole regular file, malloc'ed; NULL with an error in *ERR. */
char *schema_read_file(const char *path, size_t *lenp, int *err);
/* PATH made absolute against the current directory, cleaned. */
char *schema_absolute_path(const char *path);
/* The directory part of the absolute PATH. */
char *schema_dir_of(const char *path);
/* PATH made absolute against the directory of the file being read. */
char *schema_resolve_path(const struct schema_ctx *c, const char *path);
/* 0 when PATH is a regular file that can be opened for reading, else an
 * error for schema_file_strerror. */
int schema_readable(const char *path);

/* ---- the schema engine ---- */

enum ftype {
    T_INT,     /* int, range-checked */
    T_STR,     /* char *, non-empty; .valid may refuse more */
    T_PATH,    /* char *, made absolute against the file's directory */
    T_AE,      /* char[CONFIG_AE_MAX + 1] */
    T_AE_LIST, /* char ** plus a size_t count at off_n */
    T_ENUM,    /* int-sized enum, value is the index in names[] */
    T_BOOL,    /* int, 0 or 1, from a plain true or false */
    T_FLOAT,   /* double, a YAML int or float passing .fcheck */
    T_INTS,    /* int[count], each in min..max */
    T_FLOATS,  /* double[count], each passing .fcheck, plus an int at off_n set to 1 when given */
    T_SECTION, /* nested mapping: fields sub[] applied at base + off, then check() */
    T_NAMED,   /* mapping of NAME: entry; an array of entry_size-byte entries at off (a
                * pointer) and its count at off_n; each entry's char *name at name_off,
                * its fields sub[], then check() on each */
    T_CUSTOM,  /* parse() does it all; release() frees what it kept */
};

/* Limits on a T_FLOAT or T_FLOATS value. */
enum fcheck {
    F_ANY,      /* any finite number */
    F_POSITIVE, /* > 0 */
    F_NONZERO,  /* != 0 */
    F_UNIT,     /* 0 <= x < 1 */
};

struct schema_field;

/* What schema_parse_section saw in one mapping, for checks across its fields. */
#define MAX_FIELDS 32
struct schema_parsed {
    const char *sect;
    const struct schema_field *fs;
    size_t nf;
    const struct ynode *map, *pos;
    unsigned char st[MAX_FIELDS]; /* per field: 0 absent, 1 accepted, 2 rejected */
};

typedef void (*schema_check_fn)(struct schema_ctx *c, const struct schema_parsed *p, void *base);
typedef void (*schema_parse_fn)(struct schema_ctx *c, const struct schema_field *f,
                                const char *what, const struct ynode *v, void *base);

/* One key. Its documentation, default and range are what the generated
 * configuration reference shows; RESTART marks a key a reload may not
 * change (config_restart_changes). */
struct schema_field {
    const char *key;
    enum ftype type;
    int required;
    int restart;                         /* only a restart applies a change */
    long long def_int;
    const char *def_str;
    double def_float;
    long long min, max;
    size_t off, off_n;
    int count;                           /* T_INTS, T_FLOATS: number of items */
    int min_count;                       /* T_FLOATS: fewer items (down to this) allowed; the
                                          * int at off_n gets how many were given */
    enum fcheck fcheck;                  /* T_FLOAT, T_FLOATS */
    const char *none;                    /* T_FLOATS: a word that stands for "not given" */
    const char *const *names;            /* T_ENUM, NULL-terminated */
    const char *(*valid)(const char *s); /* T_STR: NULL, or why S is refused */
    const struct schema_field *sub;      /* T_SECTION, T_NAMED */
    size_t n_sub;
    size_t entry_size, name_off;         /* T_NAMED */
    const char *noun;                    /* T_NAMED: what an entry is, e.g. "destination" */
    schema_check_fn check;               /* T_SECTION, T_NAMED: after its fields are set */
    schema_parse_fn parse;               /* T_CUSTOM */
    void (*release)(const struct schema_field *f, void *base); /* T_CUSTOM; T_NAMED: per entry */
    const char *type_doc;                /* T_CUSTOM: what the value is, for the reference */
    const char *doc;
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define SUB(t) .sub = (t), .n_sub = NELEM(t)

/*
 * Applies the pairs of MAP to BASE through FS; POS locates missing-key
 * errors. CHECK, when given, then checks the fields against each other.
 * SECT "" is a file's top level.
 */
void schema_parse_section(struct schema_ctx *c, const char *sect, const struct schema_field *fs,
                          size_t nf, const struct ynode *map, void *base,
                          const struct ynode *pos, schema_check_fn check);
/* Sets the defaults of FS in BASE (zeroed by the caller). */
void schema_set_defaults(struct schema_ctx *c, const struct schema_field *fs, size_t nf,
                         void *base);
/* Frees what schema_set_defaults and schema_parse_section allocated. */
void schema_free_fields(const struct schema_field *fs, size_t nf, void *base);
void schema_release_str(const struct schema_field *f, void *base);
void schema_release_str_list(const struct schema_field *f, void *base);

/* The index of KEY (one of P's own fields) in P's table. */
size_t schema_field_index(const struct schema_parsed *p, const char *key);
/* 1 when KEY holds a value to check against: accepted, or defaulted. */
int schema_usable(const struct schema_parsed *p, const char *key);
/* Where to report about KEY: its value, or the section when it is absent. */
const struct ynode *schema_pos_of(const struct schema_parsed *p, const char *key);

/* Appends to BUF (LEN bytes, kept NUL-terminated) the dotted names of the
 * RESTART keys of FS whose values differ between A and B, under PREFIX;
 * returns how many differ. */
int schema_restart_changes(const struct schema_field *fs, size_t nf, const char *prefix,
                           const void *a, const void *b, char *buf, size_t len);

/* Writes one Markdown table row per key of FS (sections and named maps
 * recursively), each named PREFIX.KEY, to OUT. */
void schema_write_doc(FILE *out, const struct schema_field *fs, size_t nf, const char *prefix);

/* ---- config's own tables (config/tables.c, config/manifest.c) ---- */

extern const struct schema_field config_top_fields[];
extern const size_t config_n_top_fields;
extern const struct schema_field config_manifest_fields[];
extern const size_t config_n_manifest_fields;

/* models.NAME: resolves file: and loads its manifest (manifest.c). */
void config_check_model(struct schema_ctx *c, const struct schema_parsed *p, void *base);
/* Frees a model's manifest (manifest.c). */
void config_release_model(const struct schema_field *f, void *base);
/* node.allowed_addresses: a list of address blocks (access.c). */
void config_parse_addresses(struct schema_ctx *c, const struct schema_field *f, const char *what,
                            const struct ynode *v, void *base);
void config_release_addresses(const struct schema_field *f, void *base);
/* node: checks across its keys (config.c): the two below. */
void config_check_node(struct schema_ctx *c, const struct schema_parsed *p, void *base);
/* node: a bind address other hosts can reach needs a caller or address
 * list, or allow_any_caller (access.c). */
void config_check_node_access(struct schema_ctx *c, const struct schema_parsed *p, void *base);
/* NULL when S names an inference device syntactically, else why not. */
const char *config_device_problem(const char *s);

/* node: the TLS listener's port is not node.port, and port 0 (no plain
 * listener) comes with a TLS one (tls.c). */
void config_check_node_tls_port(struct schema_ctx *c, const struct schema_parsed *p, void *base);
/* node.tls, destinations.NAME.tls: present, files readable, keys that go
 * together (tls.c). */
void config_check_node_tls(struct schema_ctx *c, const struct schema_parsed *p, void *base);
void config_check_destination_tls(struct schema_ctx *c, const struct schema_parsed *p,
                                  void *base);
/* node.http: a bind other hosts reach has a token, the token file and the
 * TLS key are private; node.http.tls (http.c). */
void config_check_node_http(struct schema_ctx *c, const struct schema_parsed *p, void *base);
void config_check_http_tls(struct schema_ctx *c, const struct schema_parsed *p, void *base);
/* node: the HTTP port is neither node.port nor node.tls.port (http.c). */
void config_check_node_http_port(struct schema_ctx *c, const struct schema_parsed *p, void *base);

#endif
