/*
 * config.c — load, reference and compare configurations.
 *
 * The file is read into the positioned tree (yaml.c) and applied to a
 * struct config through the top-level key table (tables.c) by the schema
 * engine (schema.c); models load their manifests (manifest.c) and rules:
 * is parsed by the rules module. Every problem is one line through the
 * caller's callback.
 */
#include "config/schema.h"
#include "common/attr.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *config_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case CONFIG_EINVALID:
        return "the configuration has problems";
    case CONFIG_EREAD:
        return "the configuration file cannot be read";
    case CONFIG_ENOMEM:
        return "out of memory";
    }
    return "unknown error";
}

static void config_destroy(struct config *cfg)
{
    schema_free_fields(config_top_fields, config_n_top_fields, cfg);
    free(cfg->path);
    free(cfg);
}

struct config *config_ref(struct config *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct config *cfg)
{
    /* acq_rel: whatever a thread did with CFG happens before its free */
    if (cfg && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        config_destroy(cfg);
}

void config_free(struct config *cfg)
{
    config_unref(cfg);
}

int config_restart_changes(const struct config *old, const struct config *new, char *buf,
                           size_t len)
{
    if (buf && len)
        buf[0] = '\0';
    return schema_restart_changes(config_top_fields, config_n_top_fields, "", old, new, buf, len);
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

/* Each head (a manifest's input.from) reads the features of an encoder
 * (output.kind embedding) of the same file; reported at models.HEAD. */
static void check_heads(struct schema_ctx *c, const struct ynode *models, struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        const char *from = m->manifest.from;
        if (!from)
            continue;
        const struct ynode *at = ynode_get(models, m->name);
        int line = at ? at->line : 0, col = at ? at->col : 0;
        const struct config_model *enc = config_find_model(cfg, from);
        if (!enc)
            schema_report(c, line, col,
                          "models.%s: its manifest's input.from names '%s', which is not a "
                          "model of this file", m->name, from);
        else if (enc->manifest.output_kind != CONFIG_OUTPUT_EMBEDDING)
            schema_report(c, line, col,
                          "models.%s: its manifest's input.from names '%s', whose output.kind is "
                          "not embedding", m->name, from);
    }
}

int config_load(const char *path, struct config **out, config_error_fn err, void *ud)
{
    struct schema_ctx c = {.file = path ? path : "(null)", .fn = err, .ud = ud};
    if (out)
        *out = NULL;
    if (!path) {
        schema_report(&c, 0, 0, "cannot read: %s", strerror(EINVAL));
        return CONFIG_EREAD;
    }

    size_t len = 0;
    int e = 0;
    char *buf = schema_read_file(path, &len, &e);
    if (!buf) {
        schema_report(&c, 0, 0, "cannot read: %s", schema_file_strerror(e));
        return e == ENOMEM ? CONFIG_ENOMEM : CONFIG_EREAD;
    }

    struct ynode *root = NULL;
    int perr = yaml_parse(&c, buf, len, &root);
    free(buf);

    struct config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        ynode_free(root);
        schema_oom(&c);
        return CONFIG_ENOMEM;
    }
    atomic_init(&cfg->refs, 1);
    /* relative paths in the file are taken from its directory */
    char *dir = NULL;
    if (!(cfg->path = schema_absolute_path(path)) || !(dir = schema_dir_of(cfg->path))) {
        schema_report(&c, 0, 0, "cannot resolve path: %s", strerror(errno));
        ynode_free(root);
        config_free(cfg);
        return CONFIG_EREAD;
    }
    c.dir = dir;
    schema_set_defaults(&c, config_top_fields, config_n_top_fields, cfg);

    if (perr == 0 && root && !ynode_is_null(root)) {
        if (root->kind != Y_MAP) {
            if (root->kind != Y_ALIAS)
                schema_report(&c, root->line, root->col, "top level must be a mapping");
        } else {
            /* rules may name models and destinations defined further down */
            const struct ynode *ms = ynode_get(root, "models");
            c.models = ms && ms->kind == Y_MAP ? ms : NULL;
            const struct ynode *ds = ynode_get(root, "destinations");
            c.destinations = ds && ds->kind == Y_MAP ? ds : NULL;
            schema_parse_section(&c, "", config_top_fields, config_n_top_fields, root, cfg, root,
                                 NULL);
            if (c.count == 0)
                check_heads(&c, c.models, cfg);
        }
    }
    ynode_free(root);
    free(dir);

    if (c.count > 0 || !out) {
        config_free(cfg);
        return c.count > 0 ? CONFIG_EINVALID : 0;
    }
    size_t node_voxels = (size_t)cfg->node.max_job_memory_mb * 1024 * 1024 / sizeof(float);
    for (size_t i = 0; i < cfg->n_models; i++) {
        size_t own = (size_t)cfg->models[i].manifest.max_voxels;
        cfg->models[i].job_max_voxels = own && own < node_voxels ? own : node_voxels;
    }
    *out = cfg;
    return 0;
}

void config_check_node(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    config_check_node_access(c, p, base);
    config_check_node_tls_port(c, p, base);
    config_check_node_http_port(c, p, base);
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


void config_write_reference(FILE *out)
{
    fputs("<!-- Generated from config/tables.c, config/manifest.c, rules/parse.c and\n"
          "     common/attr.def by `cmake --build build --target config-doc`; do not edit. -->\n"
          "# Configuration reference\n\n"
          "ainode reads one YAML file (`ainode serve -c FILE`). Every key is optional unless\n"
          "marked required; a missing key takes its default, and an empty file is a valid\n"
          "configuration. `ainode check-config -c FILE` prints each problem as\n"
          "`FILE:LINE:COLUMN: message`. Relative paths are taken from the directory that holds\n"
          "the file. `ainode reload` (or SIGHUP) applies a changed file to the running node,\n"
          "except keys marked *restart* in the Reload column: a reload that changes one of those\n"
          "is refused and names them.\n\n"
          "## The configuration file\n\n"
          "| Key | Type | Default | Reload | Meaning |\n|---|---|---|---|---|\n",
          out);
    schema_write_doc(out, config_top_fields, config_n_top_fields, "");
    fputs("\n## Rules\n\n"
          "`rules:` is a list; for each series of a completed study the rules are tried in\n"
          "order and the first that matches decides, unless it says `continue: true`. A rule\n"
          "that an earlier catch-all (no conditions, no `continue`) leaves nothing for is an\n"
          "error. A match mapping names attributes; all its conditions must hold, at least one\n"
          "of its `any:` sub-matches and not its `not:` sub-match. A condition is\n"
          "`Attribute: value` (equals), `Attribute: [a, b]` (one of) or\n"
          "`Attribute: {OPERATOR: ...}` with one of `regex` (searched, caseless), `glob`,\n"
          "`range: [low, high]` (numeric, inclusive), `contains` (one of the values of a\n"
          "multi-valued attribute) and `present: true|false`. A condition on an attribute the\n"
          "series does not have never holds, except `present: false`.\n\n",
          out);
    rules_write_reference(out);
    fputs("\n### Attributes a condition may name\n\n"
          "| Name | Tag | Level | Compared as |\n|---|---|---|---|\n",
          out);
    for (int i = 0; i < ATTR_COUNT; i++) {
        const struct attr_info *a = &attr_table[i];
        const char *how = a->kind == ATTR_KIND_UID     ? "exact text"
                          : a->kind == ATTR_KIND_MULTI ? "values joined with `\\`, caseless"
                          : a->kind == ATTR_KIND_INT || a->kind == ATTR_KIND_NUMBER
                              ? "number (text when not one)"
                              : "text, caseless";
        fprintf(out, "| `%s` | (%04X,%04X) | %s | %s: %s |\n", a->keyword, a->group, a->element,
                attr_level_name(a->level), attr_kind_name(a->kind), how);
    }
    static const char *const facts[][2] = {
#define X(f) {#f, ""},
        ATTR_FACTS(X)
#undef X
    };
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
        const char *f = facts[i][0];
        int n = !strcmp(f, "instances");
        fprintf(out, "| `%s` | — | series | %s |\n", f,
                n ? "integer: how many instances the series has"
                  : "text, caseless: of the association that brought the first instance");
    }
    fputs("\n## Model manifests\n\n"
          "Each model (`models.NAME.manifest`, or the one next to a built-in model) is described\n"
          "by a YAML file of its own with these keys:\n\n"
          "| Key | Type | Default | Reload | Meaning |\n|---|---|---|---|---|\n",
          out);
    schema_write_doc(out, config_manifest_fields, config_n_manifest_fields, "");
}
