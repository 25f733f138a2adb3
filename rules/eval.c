/*
 * eval.c — evaluating rules over the series rows of a study: conditions by
 * the kind of their attribute, matches with any/not, the rule order, the
 * plan, the required series of completion, and explain.
 *
 * Regular expressions (compiled at load) run under match and depth limits,
 * so no pattern or value can make the planner run away: a search that hits
 * a limit counts as "does not hold".
 */
/* FNM_CASEFOLD is a GNU extension. */
#define _GNU_SOURCE
#include "rules/rules.h"
#include "config/config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fnmatch.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *rules_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case RULES_ENOMEM:
        return "out of memory";
    case RULES_EINVAL:
        return "invalid argument";
    }
    return "unknown error";
}

#define REGEX_MATCH_LIMIT 100000
#define REGEX_DEPTH_LIMIT 1000


static int regex_search(const struct rules_condition *cd, const char *value)
{
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(cd->regex, NULL);
    int rc = PCRE2_ERROR_NOMEMORY;
    if (mc && md) {
        pcre2_set_match_limit(mc, REGEX_MATCH_LIMIT);
        pcre2_set_depth_limit(mc, REGEX_DEPTH_LIMIT);
        rc = pcre2_match(cd->regex, (PCRE2_SPTR)value, strlen(value), 0, 0, md, mc);
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return rc >= 0; /* no match, a limit hit or no memory: does not hold */
}

/* VALUE as a number: the whole text, spaces around allowed. */
static int number_of(const char *value, double *out)
{
    char *end;
    while (*value == ' ')
        value++;
    if (!*value)
        return 0;
    double d = strtod(value, &end);
    while (*end == ' ')
        end++;
    if (*end || !isfinite(d))
        return 0;
    *out = d;
    return 1;
}

/* WANT equals VALUE as the condition's kind compares: UIDs exactly,
 * numbers as numbers (when both are), everything else ignoring case. */
static int same(const struct rules_condition *cd, const char *want, const char *value)
{
    double a, b;
    switch (cd->kind) {
    case ATTR_KIND_UID:
        return !strcmp(want, value);
    case ATTR_KIND_INT:
    case ATTR_KIND_NUMBER:
        if (number_of(want, &a) && number_of(value, &b))
            return a == b;
        return !strcasecmp(want, value);
    default:
        return !strcasecmp(want, value);
    }
}

/* One of VALUE's backslash-separated values equals the condition's. */
static int contains(const struct rules_condition *cd, const char *value)
{
    const char *want = cd->values[0];
    size_t wn = strlen(want);
    for (const char *p = value;;) {
        const char *e = strchr(p, '\\');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        /* DICOM pads values with spaces */
        const char *s = p;
        size_t sn = n;
        while (sn > 0 && *s == ' ')
            s++, sn--;
        while (sn > 0 && s[sn - 1] == ' ')
            sn--;
        if (sn == wn && (cd->kind == ATTR_KIND_UID ? !strncmp(s, want, wn) : !strncasecmp(s, want, wn)))
            return 1;
        if (!e)
            return 0;
        p = e + 1;
    }
}

static int condition_holds(const struct rules_condition *cd, const char *value)
{
    int absent = !value || !*value;
    if (cd->op == RULES_OP_PRESENT)
        return cd->present ? !absent : absent;
    if (absent)
        return 0;
    switch (cd->op) {
    case RULES_OP_EQUALS:
    case RULES_OP_ONE_OF:
        for (size_t i = 0; i < cd->n_values; i++)
            if (same(cd, cd->values[i], value))
                return 1;
        return 0;
    case RULES_OP_REGEX:
        return cd->regex && regex_search(cd, value);
    case RULES_OP_GLOB:
        return fnmatch(cd->values[0], value, cd->kind == ATTR_KIND_UID ? 0 : FNM_CASEFOLD) == 0;
    case RULES_OP_RANGE: {
        double d;
        return number_of(value, &d) && d >= cd->range[0] && d <= cd->range[1];
    }
    case RULES_OP_CONTAINS:
        return contains(cd, value);
    case RULES_OP_PRESENT:
        break;
    }
    return 0;
}


/* The series' value of CD's attribute; BUF holds a formatted fact. */
static const char *value_of(const struct rules_condition *cd, const struct attr_series *s,
                            char *buf, size_t len)
{
    if (cd->attr >= 0)
        return s->value[cd->attr];
    return attr_series_get(s, cd->attribute, buf, len);
}

struct eval {
    const struct rules_rule *rule;
    const struct attr_series *s;
    rules_trace_fn trace;
    void *trace_ud;
};

/* PREFIX is where M sits: "match", "any[1]", "any[2].not", ... */
static int match_holds(const struct eval *ev, const struct rules_match *m, const char *prefix)
{
    int held = 1;
    char where[256];
    for (size_t i = 0; i < m->n_conditions; i++) {
        const struct rules_condition *cd = &m->conditions[i];
        char buf[32];
        const char *value = value_of(cd, ev->s, buf, sizeof buf);
        int ok = condition_holds(cd, value);
        if (ev->trace) {
            snprintf(where, sizeof where, "%s.%s", prefix, cd->attribute);
            ev->trace(ev->trace_ud, ev->rule, where, ok, value);
        }
        held = held && ok;
    }
    /* below the rule's own match, sub-matches are named from the rule */
    const char *base = strcmp(prefix, "match") ? prefix : "";
    if (m->n_any > 0) {
        int any = 0;
        for (size_t i = 0; i < m->n_any; i++) {
            snprintf(where, sizeof where, "%s%sany[%zu]", base, *base ? "." : "", i + 1);
            if (match_holds(ev, &m->any[i], where))
                any = 1;
        }
        held = held && any;
    }
    if (m->not) {
        snprintf(where, sizeof where, "%s%snot", base, *base ? "." : "");
        if (match_holds(ev, m->not, where))
            held = 0;
    }
    return held;
}

int rules_match_holds(const struct rules_match *m, const struct attr_series *s)
{
    struct eval ev = {NULL, s, NULL, NULL};
    return match_holds(&ev, m, "match");
}

int rules_matches(const struct rules_rule *rule, const struct attr_series *s,
                  rules_trace_fn trace, void *ud)
{
    struct eval ev = {rule, s, trace, ud};
    return match_holds(&ev, &rule->match, "match");
}

/* The model NAME of CFG, or NULL (config_find_model without linking the
 * config module, which itself links this one). */
static const struct config_model *find_model(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_models; i++)
        if (!strcmp(cfg->models[i].name, name))
            return &cfg->models[i];
    return NULL;
}

/* Marks the job of MODEL on S not applicable in OUT when S is outside the
 * model's input.accept. */
static int not_applicable(const struct config *cfg, const struct attr_series *s,
                          const char *uid, const char *model, struct plan *out)
{
    const struct config_model *cm = find_model(cfg, model);
    char why[512];
    if (!cm || rules_accepts(&cm->manifest, s, why, sizeof why))
        return 0;
    return plan_set_not_applicable(out, uid, model, why);
}

/* The rules of one series into OUT. */
static int plan_series(const struct config *cfg, const struct attr_series *s, struct plan *out)
{
    const char *uid = s->value[ATTR_SERIES_INSTANCE_UID];
    if (!uid)
        return 0; /* nothing can be queued for a series without its UID */
    int matched = 0;
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct rules_rule *r = &cfg->rules[i];
        if (!rules_matches(r, s, NULL, NULL))
            continue;
        matched = 1;
        for (size_t m = 0; m < r->n_run; m++) {
            if (plan_add_job(out, uid, r->run[m], r->priority, (const char *const *)r->send_to,
                             r->n_send_to) != 0)
                return RULES_ENOMEM;
            if (not_applicable(cfg, s, uid, r->run[m], out) != 0)
                return RULES_ENOMEM;
        }
        for (size_t d = 0; d < r->n_forward_to; d++)
            if (plan_add_forward(out, uid, r->forward_to[d]) != 0)
                return RULES_ENOMEM;
        /* The first rule that matches decides, unless it lets later ones match too. */
        if (!r->continues)
            break;
    }
    if (!matched && plan_add_unmatched(out, uid) != 0)
        return RULES_ENOMEM;
    return 0;
}

/* 1 when a job of MODEL covers the whole study: its manifest says so, or
 * its encoder's (a head sees what its encoder reads). */
static int takes_study(const struct config *cfg, const char *model)
{
    const struct config_model *cm = find_model(cfg, model);
    if (cm && cm->manifest.from)
        cm = find_model(cfg, cm->manifest.from);
    return cm && cm->manifest.scope == CONFIG_SCOPE_STUDY;
}

int rules_plan(const struct config *cfg, const struct attr_series *rows, size_t n,
               struct plan *out)
{
    if (!cfg || !out || (n && !rows))
        return RULES_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = plan_series(cfg, &rows[i], out);
        if (rc != 0)
            return rc;
    }
    /* A model that takes the study runs once on all its series. */
    for (size_t i = 0; i < cfg->n_models; i++)
        if (takes_study(cfg, cfg->models[i].name) &&
            plan_join_study(out, cfg->models[i].name) != 0)
            return RULES_ENOMEM;
    return 0;
}

int rules_required_met(const struct config *cfg, const struct attr_series *rows, size_t n)
{
    const struct rules_match *req = &cfg->completion.required;
    if (req->n_any == 0)
        return 0;
    for (size_t k = 0; k < req->n_any; k++) {
        size_t i = 0;
        while (i < n && !rules_match_holds(&req->any[k], &rows[i]))
            i++;
        if (i == n)
            return 0;
    }
    return 1;
}

/* ---- explain ---- */

static void explain_trace(void *ud, const struct rules_rule *rule, const char *where, int held,
                          const char *value)
{
    (void)rule;
    fprintf(ud, "      %-40s %-6s (series value: %s)\n", where, held ? "held" : "failed",
            value ? value : "absent");
}

static void print_list(FILE *out, const char *what, char *const *names, size_t n)
{
    if (!n)
        return;
    fprintf(out, "      %s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(out, " %s", names[i]);
    fprintf(out, "\n");
}

/* The models of R the series S is not meant for (input.accept), and why. */
static void explain_accept(const struct config *cfg, const struct attr_series *s,
                           const struct rules_rule *r, FILE *out)
{
    for (size_t i = 0; i < r->n_run; i++) {
        const struct config_model *cm = find_model(cfg, r->run[i]);
        char why[512];
        if (cm && !rules_accepts(&cm->manifest, s, why, sizeof why))
            fprintf(out, "      %s: not applicable (%s): recorded, never run\n", r->run[i], why);
    }
}

void rules_explain(const struct config *cfg, const struct attr_series *s, FILE *out)
{
    const char *uid = s->value[ATTR_SERIES_INSTANCE_UID];
    const char *modality = s->value[ATTR_MODALITY];
    fprintf(out, "series %s (%s, %lld instance%s)\n", uid ? uid : "(no series UID)",
            modality ? modality : "no modality", (long long)s->instances,
            s->instances == 1 ? "" : "s");
    int decided = 0;
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct rules_rule *r = &cfg->rules[i];
        if (decided) {
            fprintf(out, "  rule %s: not evaluated (an earlier rule matched and does not "
                         "continue)\n", r->name);
            continue;
        }
        fprintf(out, "  rule %s:\n", r->name);
        int m = rules_matches(r, s, explain_trace, out);
        fprintf(out, "    %s\n", m ? "MATCHES" : "does not match");
        if (!m)
            continue;
        print_list(out, "runs", r->run, r->n_run);
        explain_accept(cfg, s, r, out);
        print_list(out, "sends results to", r->send_to, r->n_send_to);
        print_list(out, "forwards to", r->forward_to, r->n_forward_to);
        if (!r->continues)
            decided = 1;
    }
    if (!decided && cfg->n_rules)
        fprintf(out, "  -> %s\n", "no rule decided: the series is recorded as unmatched");
}
