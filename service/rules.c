/*
 * rules.c — does a rule apply to a series?
 *
 * A rule's match is a tree of conditions (config.h: struct config_match):
 * all conditions of a match must hold, at least one of its any: sub-matches
 * and not its not: sub-match. A condition on an attribute the series does
 * not have never holds, except {present: false}.
 *
 * Text comparisons ignore case except for UID attributes. Regular
 * expressions (compiled at config load) run under match and depth limits,
 * so no pattern or value can make the planner run away: a search that hits
 * a limit counts as "does not hold".
 */
/* FNM_CASEFOLD is a GNU extension. */
#define _GNU_SOURCE
#include "config/config.h"
#include "common/attr.h"
#include "service/service.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fnmatch.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REGEX_MATCH_LIMIT 100000
#define REGEX_DEPTH_LIMIT 1000

static int same(const struct config_condition *cd, const char *a, const char *b)
{
    return cd->exact ? !strcmp(a, b) : !strcasecmp(a, b);
}

static int regex_search(const struct config_condition *cd, const char *value)
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

/* One of VALUE's backslash-separated values equals the condition's. */
static int contains(const struct config_condition *cd, const char *value)
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
        if (sn == wn && (cd->exact ? !strncmp(s, want, wn) : !strncasecmp(s, want, wn)))
            return 1;
        if (!e)
            return 0;
        p = e + 1;
    }
}

static int condition_holds(const struct config_condition *cd, const char *value)
{
    int absent = !value || !*value;
    if (cd->op == CONFIG_OP_PRESENT)
        return cd->present ? !absent : absent;
    if (absent)
        return 0;
    switch (cd->op) {
    case CONFIG_OP_EQUALS:
    case CONFIG_OP_ONE_OF:
        for (size_t i = 0; i < cd->n_values; i++)
            if (same(cd, cd->values[i], value))
                return 1;
        return 0;
    case CONFIG_OP_REGEX:
        return cd->regex && regex_search(cd, value);
    case CONFIG_OP_GLOB:
        return fnmatch(cd->values[0], value, cd->exact ? 0 : FNM_CASEFOLD) == 0;
    case CONFIG_OP_RANGE: {
        double d;
        return number_of(value, &d) && d >= cd->range[0] && d <= cd->range[1];
    }
    case CONFIG_OP_CONTAINS:
        return contains(cd, value);
    case CONFIG_OP_PRESENT:
        break;
    }
    return 0;
}

struct eval {
    const struct config_rule *rule;
    rules_get_fn get;
    void *get_ud;
    rules_trace_fn trace;
    void *trace_ud;
};

/* PREFIX is where M sits: "match", "any[1]", "any[2].not", ... */
static int match_holds(const struct eval *ev, const struct config_match *m, const char *prefix)
{
    int held = 1;
    char where[256];
    for (size_t i = 0; i < m->n_conditions; i++) {
        const struct config_condition *cd = &m->conditions[i];
        const char *value = ev->get(ev->get_ud, cd->attribute);
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

int rules_match_spec(const struct config_match *m, rules_get_fn get, void *get_ud)
{
    struct eval ev = {NULL, get, get_ud, NULL, NULL};
    return match_holds(&ev, m, "match");
}

int rules_match(const struct config_rule *rule, rules_get_fn get, void *get_ud,
                rules_trace_fn trace, void *trace_ud)
{
    struct eval ev = {rule, get, get_ud, trace, trace_ud};
    return match_holds(&ev, &rule->match, "match");
}

size_t rules_select(const struct config *cfg, rules_get_fn get, void *get_ud,
                    rules_trace_fn trace, void *trace_ud, rules_apply_fn apply, void *apply_ud)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct config_rule *rule = &cfg->rules[i];
        if (!rules_match(rule, get, get_ud, trace, trace_ud))
            continue;
        n++;
        if (apply)
            apply(apply_ud, rule);
        if (!rule->continues)
            break;
    }
    return n;
}

const char *rules_series_get(void *ud, const char *a)
{
    struct rules_series *rs = ud;
    return attr_series_get(rs->series, a, rs->number, sizeof rs->number);
}
