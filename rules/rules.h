/*
 * rules — the match language: which series a rule applies to, and what
 * then happens to it.
 *
 * A rule's match is a tree of conditions: all conditions of a match must
 * hold, at least one of its any: sub-matches and not its not: sub-match.
 * A condition names an attribute of common/attr.def (or a fact of
 * ATTR_FACTS: instances, calling_ae, ...) and compares the series' value
 * the way the attribute's kind says: UIDs exactly, text ignoring case,
 * numbers as numbers, multi-valued attributes value by value (contains).
 * A condition on an attribute the series does not have never holds,
 * except {present: false}.
 *
 * This module owns the whole language: parsing it from the positioned YAML
 * tree (config_load calls it for rules: and completion.required_series,
 * so its problems read "FILE:LINE:COLUMN: message" like the rest), lint
 * (rules no series can reach), evaluation over the series rows of a study
 * (struct attr_series), the plan those rows get (common/plan.h), and
 * explain (every condition, held or failed, with the series' value).
 */
#ifndef AINODE_RULES_H
#define AINODE_RULES_H

#include <stddef.h>
#include <stdio.h>

#include "common/attr.h"
#include "common/plan.h"

struct config;
struct schema_ctx;
struct schema_field;
struct ynode;

/* How a condition compares the series' value of its attribute. */
enum rules_op {
    RULES_OP_EQUALS = 0, /* Attr: X */
    RULES_OP_ONE_OF,     /* Attr: [X, Y] */
    RULES_OP_REGEX,      /* Attr: {regex: R}: searched, caseless (PCRE2) */
    RULES_OP_GLOB,       /* Attr: {glob: G}: fnmatch */
    RULES_OP_RANGE,      /* Attr: {range: [low, high]}: numeric, inclusive */
    RULES_OP_CONTAINS,   /* Attr: {contains: X}: one of the backslash-separated values */
    RULES_OP_PRESENT,    /* Attr: {present: true|false} */
};

/* One condition on one attribute of a series. */
struct rules_condition {
    char *attribute;               /* a keyword of attr.def or a fact of ATTR_FACTS */
    int attr;                      /* its enum attr_id; -1 for a fact */
    enum attr_kind kind;           /* how it compares (facts: instances INT, the rest TEXT) */
    enum rules_op op;
    char **values;                 /* equals: 1, one of: n, regex/glob/contains: the pattern */
    size_t n_values;
    void *regex;                   /* RULES_OP_REGEX: the compiled pcre2_code */
    double range[2];               /* RULES_OP_RANGE: low, high (low <= high) */
    int present;                   /* RULES_OP_PRESENT: 1 true, 0 false */
    int line, column;              /* of the attribute's key in the file */
};

/* All conditions hold, at least one of ANY holds (when n_any > 0) and NOT
 * (when given) does not hold. An empty match holds for every series. */
struct rules_match {
    struct rules_condition *conditions;
    size_t n_conditions;
    struct rules_match *any;
    size_t n_any;
    struct rules_match *not;       /* NULL when absent */
};

/* What happens to a series of a completed study. */
struct rules_rule {
    char *name;
    struct rules_match match;      /* match:, any: and not: of the rule */
    char **run;                    /* model names, each defined under models: */
    size_t n_run;
    char **send_to;                /* send_results_to: destination names */
    size_t n_send_to;
    char **forward_to;             /* destinations receiving the original instances */
    size_t n_forward_to;
    enum plan_priority priority;   /* default PLAN_PRIORITY_NORMAL */
    int continues;                 /* continue: true: later rules may match too */
    int number;                    /* its place under rules:, from 1 */
    int line, column;              /* of the rule in the file */
    int invalid;                   /* had problems of its own while parsing (lint skips it) */
};

/* Error codes: 0 or one of these. */
enum {
    RULES_ENOMEM = -1,
    RULES_EINVAL = -2,             /* a NULL argument where one is needed */
};

const char *rules_strerror(int code);

/* ---- parsing (for config_load's key tables) ---- */

/* schema_parse_fn for rules: a sequence of rules into the struct
 * rules_rule array at F->off and its count at F->off_n; each rule is
 * linted as it is parsed. */
void rules_parse_list(struct schema_ctx *c, const struct schema_field *f, const char *what,
                      const struct ynode *v, void *base);
void rules_release_list(const struct schema_field *f, void *base);
/* schema_parse_fn for completion.required_series: a sequence of match
 * mappings into the struct rules_match at F->off (as its any[]). */
void rules_parse_required(struct schema_ctx *c, const struct schema_field *f, const char *what,
                          const struct ynode *v, void *base);
void rules_release_match(const struct schema_field *f, void *base);

/* Writes the Markdown table of the keys of a rule to OUT (the
 * configuration reference). */
void rules_write_reference(FILE *out);

/* 1 when MATCH holds for every series (no condition, any or not). */
int rules_match_is_empty(const struct rules_match *m);

/* ---- lint ---- */

/* The index of the earlier rule that leaves nothing for RULES[I] (it
 * matches every series and does not continue), or -1. */
long rules_unreachable(const struct rules_rule *rules, size_t i);

/* ---- evaluation ---- */

/* Called for each condition evaluated: the rule (NULL for a bare match),
 * a path like "match.SeriesDescription" or "any[1].Modality", whether it
 * held, and the series' value (NULL if absent; valid during the call). */
typedef void (*rules_trace_fn)(void *ud, const struct rules_rule *rule, const char *where,
                               int held, const char *value);

/* 1 when RULE matches the series S. Every condition of a match is
 * evaluated (and traced when TRACE is given), not only up to the first
 * that fails. */
int rules_matches(const struct rules_rule *rule, const struct attr_series *s,
                  rules_trace_fn trace, void *ud);

/* 1 when the match M holds for S. */
int rules_match_holds(const struct rules_match *m, const struct attr_series *s);

/*
 * The plan for the series ROWS (N of them) of one study under CFG's rules:
 * for each row the rules in order, the first that matches deciding unless
 * it continues; a job per (series, model) with the destinations of every
 * rule that asked for it merged and the most urgent priority; a forward per
 * (series, destination); the series no rule matched. OUT is filled (the
 * caller frees it with plan_free, also after a failure). Returns 0 or a
 * RULES_E* code.
 */
int rules_plan(const struct config *cfg, const struct attr_series *rows, size_t n,
               struct plan *out);

/* 1 when every completion.required_series match of CFG is met by some row
 * (0 when none is configured: there is nothing to complete early for). */
int rules_required_met(const struct config *cfg, const struct attr_series *rows, size_t n);

/* ---- input.accept (accept.c) ---- */

struct config_manifest;

/* 1 when the series S meets every filter of M's input.accept (an absent
 * attribute meets none); else 0 and WHY (LEN bytes) gets the first reason,
 * e.g. "BodyPartExamined is KNEE; the model accepts CHEST". */
int rules_accepts(const struct config_manifest *m, const struct attr_series *s, char *why,
                  size_t len);

/* ---- explain ---- */

/* Writes to OUT, for the series S, every rule of CFG in order: each
 * condition held or failed with the series' value, whether the rule
 * matches and what it does, and what the node would do. */
void rules_explain(const struct config *cfg, const struct attr_series *s, FILE *out);

#endif
