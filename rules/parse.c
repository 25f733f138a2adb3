/*
 * parse.c — the rules language read from the positioned YAML tree: rules
 * (rules:) and bare matches (completion.required_series), with one
 * positioned problem line each, and the lint of unreachable rules.
 */
#include "rules/rules.h"
#include "config/schema.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when NAME is a key of MS (models: or destinations:), even one with
 * problems of its own: those are reported there, not again for each rule. */

static int name_defined(const struct ynode *ms, const struct ynode *name)
{
    for (size_t i = 0; ms && i + 1 < ms->n; i += 2) {
        const struct ynode *k = ms->kids[i];
        if (k->kind == Y_SCALAR && k->len == name->len && !memcmp(k->text, name->text, k->len) &&
            schema_valid_name(k->text, k->len))
            return 1;
    }
    return 0;
}

/* ---- rule conditions ---- */

#define MATCH_MAX_DEPTH 16

static const char *const operator_names = "regex, glob, range, contains or present";

static void free_condition(struct rules_condition *cd)
{
    for (size_t i = 0; i < cd->n_values; i++)
        free(cd->values[i]);
    free(cd->values);
    free(cd->attribute);
    if (cd->regex)
        pcre2_code_free(cd->regex);
}

static void free_match(struct rules_match *m)
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

int rules_match_is_empty(const struct rules_match *m)
{
    return !m || (m->n_conditions == 0 && m->n_any == 0 && !m->not);
}

void rules_release_match(const struct schema_field *f, void *base)
{
    free_match((struct rules_match *)((char *)base + f->off));
}

/* A non-empty string value of a condition, copied into CD->values. */
static int add_value(struct schema_ctx *c, const char *what, const struct ynode *v,
                     struct rules_condition *cd)
{
    if (!schema_want_string(c, what, v))
        return 0;
    if (v->len == 0) {
        schema_report(c, v->line, v->col, "%s: must not be empty", what);
        return 0;
    }
    char **nv = realloc(cd->values, (cd->n_values + 1) * sizeof *nv);
    if (!nv)
        return schema_oom(c);
    cd->values = nv;
    if (!(nv[cd->n_values] = strdup(v->text)))
        return schema_oom(c);
    cd->n_values++;
    return 1;
}

/* {regex|glob|range|contains|present: X}; 1 when CD is complete. */
static int parse_operator(struct schema_ctx *c, const char *what, const struct ynode *map,
                          struct rules_condition *cd)
{
    static const char *const ops[] = {"regex", "glob", "range", "contains", "present"};
    static const enum rules_op codes[] = {RULES_OP_REGEX, RULES_OP_GLOB, RULES_OP_RANGE,
                                           RULES_OP_CONTAINS, RULES_OP_PRESENT};
    char b[80], sub[400];
    if (map->n == 0) {
        schema_report(c, map->line, map->col, "%s: expected an operator (%s)", what, operator_names);
        return 0;
    }
    const struct ynode *k = map->kids[0], *v = map->kids[1];
    if (k->kind == Y_ALIAS)
        return 0;
    if (k->kind != Y_SCALAR) {
        schema_report(c, k->line, k->col, "%s: keys must be scalars", what);
        return 0;
    }
    size_t oi = 0;
    while (oi < NELEM(ops) && !ynode_is(k, ops[oi]))
        oi++;
    if (oi == NELEM(ops)) {
        schema_report(c, k->line, k->col, "%s: unknown operator '%s' (use %s)", what,
                  schema_esc(k->text, k->len, b), operator_names);
        return 0;
    }
    if (map->n > 2) {
        const struct ynode *k2 = map->kids[2];
        schema_report(c, k2->line, k2->col, "%s: one operator per condition", what);
        return 0;
    }
    snprintf(sub, sizeof sub, "%s.%s", what, ops[oi]);
    cd->op = codes[oi];
    if (v->kind == Y_ALIAS)
        return 0;
    switch (cd->op) {
    case RULES_OP_REGEX: {
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
            schema_report(c, v->line, v->col, "%s: invalid regular expression: %s at offset %zu", sub,
                      (const char *)msg, (size_t)off);
            return 0;
        }
        cd->regex = re;
        return 1;
    }
    case RULES_OP_GLOB:
    case RULES_OP_CONTAINS:
        return add_value(c, sub, v, cd);
    case RULES_OP_RANGE: {
        double d[2];
        if (v->kind != Y_SEQ || v->n != 2 || !ynode_number(v->kids[0], &d[0]) ||
            !ynode_number(v->kids[1], &d[1])) {
            schema_report(c, v->line, v->col, "%s: expected [low, high], two numbers", sub);
            return 0;
        }
        if (d[0] > d[1]) {
            schema_report(c, v->line, v->col, "%s: low %s is greater than high %s", sub,
                      schema_esc(v->kids[0]->text, v->kids[0]->len, b), v->kids[1]->text);
            return 0;
        }
        cd->range[0] = d[0];
        cd->range[1] = d[1];
        return 1;
    }
    case RULES_OP_PRESENT:
        if (ynode_flag(v, &cd->present))
            return 1;
        schema_report(c, v->line, v->col, "%s: expected true or false", sub);
        return 0;
    default:
        return 0;
    }
}

/* The kind a fact compares as; attributes have theirs in attr.def. */
static enum attr_kind fact_kind(const char *name)
{
    return !strcmp(name, "instances") ? ATTR_KIND_INT : ATTR_KIND_TEXT;
}

/* ATTRIBUTE: X | [X, Y] | {operator: ...} into a new condition of M. */
static void parse_condition(struct schema_ctx *c, const char *what, const struct ynode *k,
                            const struct ynode *v, struct rules_match *m)
{
    char b[80], sub[320];
    if (k->kind != Y_SCALAR || memchr(k->text, '\0', k->len) || !attr_rule_name_known(k->text)) {
        schema_report(c, k->line, k->col, "%s: unknown attribute '%s'", what,
                      schema_esc(k->text, k->len, b));
        return;
    }
    snprintf(sub, sizeof sub, "%s.%s", what, k->text);
    if (v->kind == Y_ALIAS)
        return;
    int attr = attr_find(k->text);
    struct rules_condition cd = {.line = k->line, .column = k->col, .attr = attr,
                                 .kind = attr >= 0 ? attr_table[attr].kind : fact_kind(k->text)};
    int ok;
    if (v->kind == Y_MAP) {
        ok = parse_operator(c, sub, v, &cd);
    } else if (v->kind == Y_SEQ) {
        cd.op = RULES_OP_ONE_OF;
        ok = 1;
        if (v->n == 0) {
            schema_report(c, v->line, v->col, "%s: expected at least one value", sub);
            ok = 0;
        }
        for (size_t i = 0; i < v->n; i++)
            if (v->kids[i]->kind == Y_ALIAS || !add_value(c, sub, v->kids[i], &cd))
                ok = 0;
    } else {
        cd.op = RULES_OP_EQUALS;
        ok = add_value(c, sub, v, &cd);
    }
    if (ok && !(cd.attribute = strdup(k->text)))
        ok = schema_oom(c);
    struct rules_condition *nc =
        ok ? realloc(m->conditions, (m->n_conditions + 1) * sizeof *nc) : NULL;
    if (!nc) {
        if (ok)
            schema_oom(c);
        free_condition(&cd);
        return;
    }
    m->conditions = nc;
    nc[m->n_conditions++] = cd;
}

static void parse_match_map(struct schema_ctx *c, const char *what, const struct ynode *v,
                            struct rules_match *m, int depth);

/* any: [{...}, ...] into M->any. */
static void parse_any(struct schema_ctx *c, const char *what, const struct ynode *v,
                      struct rules_match *m, int depth)
{
    if (v->kind == Y_ALIAS)
        return;
    if (m->any) {
        schema_report(c, v->line, v->col, "%s: given twice (in match and next to it)", what);
        return;
    }
    if (v->kind != Y_SEQ) {
        schema_report(c, v->line, v->col, "%s: expected a sequence", what);
        return;
    }
    if (v->n == 0) {
        schema_report(c, v->line, v->col, "%s: expected at least one sub-match", what);
        return;
    }
    if (!(m->any = calloc(v->n, sizeof *m->any))) {
        schema_oom(c);
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
            schema_report(c, it->line, it->col, "%s: expected a mapping", sub);
            continue;
        }
        parse_match_map(c, sub, it, &m->any[i], depth + 1);
    }
}

/* not: {...} into M->not. */
static void parse_not(struct schema_ctx *c, const char *what, const struct ynode *v,
                      struct rules_match *m, int depth)
{
    if (v->kind == Y_ALIAS)
        return;
    if (m->not) {
        schema_report(c, v->line, v->col, "%s: given twice (in match and next to it)", what);
        return;
    }
    if (v->kind != Y_MAP) {
        schema_report(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    if (v->n == 0) {
        schema_report(c, v->line, v->col, "%s: must not be empty", what);
        return;
    }
    if (!(m->not = calloc(1, sizeof *m->not))) {
        schema_oom(c);
        return;
    }
    parse_match_map(c, what, v, m->not, depth + 1);
}

/* A match mapping: attributes, plus any: and not:. */
static void parse_match_map(struct schema_ctx *c, const char *what, const struct ynode *v,
                            struct rules_match *m, int depth)
{
    if (depth > MATCH_MAX_DEPTH) {
        schema_report(c, v->line, v->col, "%s: nested more than %d deep", what, MATCH_MAX_DEPTH);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (!schema_usable_key(c, what, v, i, "key"))
            continue;
        char sub[320];
        if (ynode_is(k, "any") || ynode_is(k, "not")) {
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

static void parse_match(struct schema_ctx *c, const struct schema_field *f, const char *what,
                        const struct ynode *v, void *base)
{
    if (ynode_is_null(v) || v->kind == Y_ALIAS)
        return; /* matches any series */
    if (v->kind != Y_MAP) {
        schema_report(c, v->line, v->col, "%s: expected a mapping", what);
        return;
    }
    parse_match_map(c, what, v, (struct rules_match *)((char *)base + f->off), 0);
}

static void parse_rule_any(struct schema_ctx *c, const struct schema_field *f, const char *what,
                           const struct ynode *v, void *base)
{
    parse_any(c, what, v, (struct rules_match *)((char *)base + f->off), 0);
}

static void parse_rule_not(struct schema_ctx *c, const struct schema_field *f, const char *what,
                           const struct ynode *v, void *base)
{
    parse_not(c, what, v, (struct rules_match *)((char *)base + f->off), 0);
}

/* true | false into an int. */
static void parse_flag(struct schema_ctx *c, const struct schema_field *f, const char *what,
                       const struct ynode *v, void *base)
{
    if (!ynode_flag(v, (int *)((char *)base + f->off)))
        schema_report(c, v->line, v->col, "%s: expected true or false", what);
}

/* A rule runs models, forwards the instances, or both. */
static void check_rule(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct rules_rule *r = base;
    unsigned char run = p->st[schema_field_index(p, "run")], fwd = p->st[schema_field_index(p, "forward_to")];
    if (run == 2 || fwd == 2 || r->n_run > 0 || r->n_forward_to > 0)
        return;
    if (!run && !fwd) {
        schema_report(c, p->pos->line, p->pos->col, "%s: missing required key 'run'", p->sect);
    } else if (!fwd) {
        const struct ynode *v = schema_pos_of(p, "run");
        schema_report(c, v->line, v->col, "%s.run: expected at least one model", p->sect);
    } else {
        const struct ynode *v = schema_pos_of(p, "forward_to");
        schema_report(c, v->line, v->col,
                  "%s: run and forward_to are both empty: the rule would do nothing", p->sect);
    }
}

/* run: (models), send_results_to: and forward_to: (destinations). */
static void parse_run(struct schema_ctx *c, const struct schema_field *f, const char *what,
                      const struct ynode *v, void *base)
{
    char ***listp = (char ***)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    char b[80];
    int models = !strcmp(f->key, "run");
    const char *noun = models ? "model" : "destination";
    const struct ynode *defined = models ? c->models : c->destinations;
    if (ynode_is_null(v) || (v->kind == Y_SEQ && v->n == 0))
        return; /* check_rule: a rule needs models to run or destinations to forward to */
    if (v->kind != Y_SEQ) {
        schema_report(c, v->line, v->col, "%s: expected a sequence", what);
        return;
    }
    if (!(*listp = calloc(v->n, sizeof **listp))) {
        schema_oom(c);
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        if (!schema_want_string(c, what, it))
            continue;
        if (!name_defined(defined, it)) {
            schema_report(c, it->line, it->col, "%s: unknown %s '%s'", what, noun,
                      schema_esc(it->text, it->len, b));
            continue;
        }
        int dup = 0;
        for (size_t j = 0; j < *np && !dup; j++)
            dup = !strcmp((*listp)[j], it->text);
        if (dup) {
            schema_report(c, it->line, it->col, "%s: duplicate %s '%s'", what, noun,
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

#define RULE_OFF(m) offsetof(struct rules_rule, m)

static const char *const priority_names[] = {"stat", "normal", "low", NULL};

static const struct schema_field rule_fields[] = {
    {.key = "name", .type = T_STR, .off = RULE_OFF(name), .doc = "shown in logs; default rule-N"},
    {.key = "match", .type = T_CUSTOM, .type_doc = "match mapping", .parse = parse_match, .release = rules_release_match,
     .off = RULE_OFF(match), .doc = "conditions that must all hold; absent matches any series"},
    {.key = "any", .type = T_CUSTOM, .type_doc = "list of match mappings", .parse = parse_rule_any, .off = RULE_OFF(match),
     .doc = "sub-matches of which at least one must hold"},
    {.key = "not", .type = T_CUSTOM, .type_doc = "match mapping", .parse = parse_rule_not, .off = RULE_OFF(match),
     .doc = "a sub-match that must not hold"},
    {.key = "run", .type = T_CUSTOM, .type_doc = "list of model names", .parse = parse_run,
     .release = schema_release_str_list, .off = RULE_OFF(run), .off_n = RULE_OFF(n_run),
     .doc = "models to run, by name; required unless forward_to is given"},
    {.key = "send_results_to", .type = T_CUSTOM,
     .type_doc = "list of destination names", .parse = parse_run,
     .release = schema_release_str_list, .off = RULE_OFF(send_to), .off_n = RULE_OFF(n_send_to),
     .doc = "destinations the results go to, by name"},
    {.key = "forward_to", .type = T_CUSTOM, .type_doc = "list of destination names", .parse = parse_run,
     .release = schema_release_str_list, .off = RULE_OFF(forward_to), .off_n = RULE_OFF(n_forward_to),
     .doc = "destinations receiving the original instances, by name"},
    {.key = "priority", .type = T_ENUM, .def_int = PLAN_PRIORITY_NORMAL,
     .names = priority_names, .off = RULE_OFF(priority), .doc = "stat, normal or low"},
    {.key = "continue", .type = T_CUSTOM, .type_doc = "`true` or `false`", .parse = parse_flag, .off = RULE_OFF(continues),
     .doc = "true: later rules may match the series too; default false"},
};

long rules_unreachable(const struct rules_rule *rules, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        const struct rules_rule *e = &rules[j];
        if (!e->invalid && rules_match_is_empty(&e->match) && !e->continues)
            return (long)j;
    }
    return -1;
}

void rules_parse_list(struct schema_ctx *c, const struct schema_field *f, const char *what,
                      const struct ynode *v, void *base)
{
    struct rules_rule **rp = (struct rules_rule **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    if (ynode_is_null(v) || v->kind == Y_ALIAS)
        return;
    if (v->kind != Y_SEQ) {
        schema_report(c, v->line, v->col, "%s: expected a sequence", what);
        return;
    }
    if (!(*rp = calloc(v->n + 1, sizeof **rp))) {
        schema_oom(c);
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        char sect[48];
        snprintf(sect, sizeof sect, "%s[%zu]", what, i + 1); /* 1-based, like the default names */
        if (it->kind == Y_ALIAS)
            continue;
        if (it->kind != Y_MAP) {
            schema_report(c, it->line, it->col, "%s: expected a mapping", sect);
            continue;
        }
        struct rules_rule *rules = *rp, *r = &rules[(*np)++];
        int before = c->count;
        r->number = (int)i + 1;
        r->line = it->line;
        r->column = it->col;
        schema_set_defaults(c, rule_fields, NELEM(rule_fields), r);
        schema_parse_section(c, sect, rule_fields, NELEM(rule_fields), it, r, it, check_rule);
        /* a rule with problems of its own is not taken for a catch-all */
        r->invalid = c->count != before;
        if (!r->name) {
            char name[32];
            snprintf(name, sizeof name, "rule-%zu", i + 1);
            if (!(r->name = strdup(name))) {
                schema_oom(c);
                continue;
            }
        }
        char b[80];
        /* logs name rules: two alike would be confusing */
        for (size_t j = 0; j + 1 < *np; j++) {
            if (rules[j].name && !strcmp(rules[j].name, r->name)) {
                const struct ynode *nv = ynode_get(it, "name");
                if (!nv)
                    nv = it;
                schema_report(c, nv->line, nv->col, "%s.name: duplicate rule name '%s'", sect,
                              schema_esc(r->name, strlen(r->name), b));
                break;
            }
        }
        /* lint: an earlier catch-all that stops leaves nothing for this rule */
        long j = rules_unreachable(rules, *np - 1);
        if (j >= 0)
            schema_report(c, it->line, it->col,
                          "%s: never matches: %s[%d] ('%s') matches every series and does "
                          "not continue",
                          sect, what, rules[j].number,
                          rules[j].name ? schema_esc(rules[j].name, strlen(rules[j].name), b) : "");
    }
}

static void free_rule(struct rules_rule *r)
{
    schema_free_fields(rule_fields, NELEM(rule_fields), r);
}

void rules_release_list(const struct schema_field *f, void *base)
{
    struct rules_rule **rp = (struct rules_rule **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    for (size_t i = 0; i < *np; i++)
        free_rule(&(*rp)[i]);
    free(*rp);
    *rp = NULL;
    *np = 0;
}

void rules_parse_required(struct schema_ctx *c, const struct schema_field *f, const char *what,
                          const struct ynode *v, void *base)
{
    if (ynode_is_null(v))
        return;
    /* A list of match mappings: the same language as a rule's any:. */
    parse_any(c, what, v, (struct rules_match *)((char *)base + f->off), 0);
}

void rules_write_reference(FILE *out)
{
    fprintf(out, "| Key | Type | Default | Reload | Meaning |\n|---|---|---|---|---|\n");
    schema_write_doc(out, rule_fields, NELEM(rule_fields), "rules[N]");
}
