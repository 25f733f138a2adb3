/* Unit tests for rules/: parsing with positioned problems, lint, every
 * operator per value kind, any/not, traces and explain, the plan of a
 * study's rows and the required series. Links ainode_rules alone. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "config/schema.h"
#include "rules/rules.h"

/* ---- helpers ---------------------------------------------------------- */

#define MAX_LINES 32

struct capture {
    int n;
    char lines[MAX_LINES][512];
};

static void capture_line(void *ud, const char *line)
{
    struct capture *cap = ud;
    if (!cap) {
        print_error("%s\n", line);
        return;
    }
    assert_null(strchr(line, '\n'));
    if (cap->n < MAX_LINES)
        snprintf(cap->lines[cap->n], sizeof cap->lines[0], "%s", line);
    cap->n++;
}

static const struct schema_field rules_field = {
    .key = "rules", .type = T_CUSTOM, .off = offsetof(struct config, rules),
    .off_n = offsetof(struct config, n_rules)};
static const struct schema_field required_field = {
    .key = "required_series", .type = T_CUSTOM,
    .off = offsetof(struct config, completion) + offsetof(struct config_completion, required)};

#define DESTS                                                                             \
    "destinations:\n  arch: {ae_title: ARCH, host: localhost, port: 104}\n"               \
    "  pacs: {ae_title: PACS, host: localhost, port: 105}\n"                              \
    "models:\n  seg: {file: x}\n  lung: {file: y}\n"

/* Parses TEXT (a whole config file: destinations, models, rules and
 * completion.required_series are read) as the file "rules.yaml"; the
 * problem lines go to CAP (NULL: none expected). */
static struct config *parse(const char *text, struct capture *cap)
{
    struct schema_ctx c = {.file = "rules.yaml", .fn = capture_line, .ud = cap};
    struct ynode *root = NULL;
    assert_int_equal(yaml_parse(&c, text, strlen(text), &root), 0);
    assert_non_null(root);
    c.models = ynode_get(root, "models");
    c.destinations = ynode_get(root, "destinations");
    struct config *cfg = calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    const struct ynode *rv = ynode_get(root, "rules");
    if (rv)
        rules_parse_list(&c, &rules_field, "rules", rv, cfg);
    const struct ynode *comp = ynode_get(root, "completion");
    const struct ynode *req = comp ? ynode_get(comp, "required_series") : NULL;
    if (req)
        rules_parse_required(&c, &required_field, "completion.required_series", req, cfg);
    ynode_free(root);
    if (!cap)
        assert_int_equal(c.count, 0);
    else
        assert_int_equal(c.count, cap->n);
    return cfg;
}

static void free_rules(struct config *cfg)
{
    rules_release_list(&rules_field, cfg);
    rules_release_match(&required_field, cfg);
    free(cfg);
}

/* A config whose rules are RULES (a YAML sequence, indented by 2). */
static struct config *load_rules(const char *rules)
{
    char text[8192];
    snprintf(text, sizeof text, DESTS "rules:\n%s", rules);
    return parse(text, NULL);
}

/* One rule with MATCH (a flow mapping). */
static struct config *load_match(const char *match)
{
    char rules[4096];
    snprintf(rules, sizeof rules, "  - match: %s\n    forward_to: [arch]\n", match);
    return load_rules(rules);
}

/* A series as attribute/value pairs. */
struct kv {
    const char *k, *v;
};

/* The row a series of KVs makes (attributes by keyword, and the facts). */
static const struct attr_series *row_of(const struct kv *kv)
{
    static struct attr_series rows[4];
    static int next;
    struct attr_series *r = &rows[next++ % 4];
    memset(r, 0, sizeof *r);
    for (const struct kv *p = kv; p->k; p++) {
        int a = attr_find(p->k);
        if (a >= 0)
            r->value[a] = p->v;
        else if (!strcmp(p->k, "instances"))
            r->instances = atoll(p->v);
        else if (!strcmp(p->k, "calling_ae"))
            r->calling_ae = p->v;
        else if (!strcmp(p->k, "called_ae"))
            r->called_ae = p->v;
        else if (!strcmp(p->k, "source_address"))
            r->source_address = p->v;
        else
            fail_msg("unknown name %s", p->k);
    }
    return r;
}

static int matches(const char *match, const struct kv *series)
{
    struct config *cfg = load_match(match);
    int r = rules_matches(&cfg->rules[0], row_of(series), NULL, NULL);
    free_rules(cfg);
    return r;
}

/* ---- evaluation ------------------------------------------------------- */

static const struct kv ct_chest[] = {
    {"Modality", "CT"},
    {"BodyPartExamined", "CHEST"},
    {"SeriesDescription", "Thorax 1.0 B70f lung"},
    {"StudyDescription", "CT CHEST W/O CONTRAST"},
    {"SliceThickness", "1.0"},
    {"ImageType", "ORIGINAL\\PRIMARY\\AXIAL"},
    {"calling_ae", "CT_ROOM1"},
    {"SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"},
    {"instances", "312"},
    {"Rows", "512"},
    {NULL, NULL},
};

static void test_equals_ignores_case_except_for_uids(void **state)
{
    (void)state;
    assert_true(matches("{Modality: CT}", ct_chest));
    assert_true(matches("{Modality: ct}", ct_chest));
    assert_false(matches("{Modality: MR}", ct_chest));
    assert_true(matches("{Rows: 512}", ct_chest));
    assert_true(matches("{SOPClassUID: 1.2.840.10008.5.1.4.1.1.2}", ct_chest));
    assert_false(matches("{SOPClassUID: 1.2.840.10008.5.1.4.1.1}", ct_chest));
    static const struct kv letters[] = {{"StudyInstanceUID", "1.2.ABC"}, {NULL, NULL}};
    assert_true(matches("{StudyInstanceUID: 1.2.ABC}", letters));
    assert_false(matches("{StudyInstanceUID: 1.2.abc}", letters));
    /* all conditions must hold */
    assert_true(matches("{Modality: CT, BodyPartExamined: chest}", ct_chest));
    assert_false(matches("{Modality: CT, BodyPartExamined: HEAD}", ct_chest));
}

static void test_list_is_one_of(void **state)
{
    (void)state;
    assert_true(matches("{BodyPartExamined: [THORAX, chest]}", ct_chest));
    assert_false(matches("{BodyPartExamined: [HEAD, NECK]}", ct_chest));
}

static void test_regex_searches_caselessly(void **state)
{
    (void)state;
    assert_true(matches("{SeriesDescription: {regex: 'LUNG|chest'}}", ct_chest));
    assert_true(matches("{SeriesDescription: {regex: 'b70'}}", ct_chest)); /* not anchored */
    assert_false(matches("{SeriesDescription: {regex: '^lung'}}", ct_chest));
    assert_false(matches("{SeriesDescription: {regex: 'brain'}}", ct_chest));
}

static void test_catastrophic_regex_is_bounded(void **state)
{
    (void)state;
    static const struct kv evil[] = {
        {"SeriesDescription", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"}, {NULL, NULL}};
    struct config *cfg = load_match("{SeriesDescription: {regex: '(a+)+$'}}");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r = rules_matches(&cfg->rules[0], row_of(evil), NULL, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_false(r); /* a limit hit does not hold */
    assert_true(s < 2.0);
    free_rules(cfg);

    cfg = load_match("{SeriesDescription: {regex: '(a|aa)+$'}}");
    assert_false(rules_matches(&cfg->rules[0], row_of(evil), NULL, NULL));
    free_rules(cfg);
}

static void test_glob_ignores_case(void **state)
{
    (void)state;
    assert_true(matches("{StudyDescription: {glob: '*chest*'}}", ct_chest));
    assert_true(matches("{calling_ae: {glob: 'CT_*'}}", ct_chest));
    assert_false(matches("{calling_ae: {glob: 'MR_*'}}", ct_chest));
    assert_false(matches("{StudyDescription: {glob: 'chest*'}}", ct_chest)); /* whole value */
}

static void test_range_is_numeric_and_inclusive(void **state)
{
    (void)state;
    assert_true(matches("{SliceThickness: {range: [0.5, 2.5]}}", ct_chest));
    assert_true(matches("{SliceThickness: {range: [1, 1]}}", ct_chest));
    assert_false(matches("{SliceThickness: {range: [1.5, 5]}}", ct_chest));
    assert_true(matches("{instances: {range: [100, 1000]}}", ct_chest));
    assert_false(matches("{instances: {range: [1, 10]}}", ct_chest));
    static const struct kv odd[] = {{"SliceThickness", "thin"}, {NULL, NULL}};
    assert_false(matches("{SliceThickness: {range: [0, 1000]}}", odd));
    static const struct kv partly[] = {{"SliceThickness", "1.0mm"}, {NULL, NULL}};
    assert_false(matches("{SliceThickness: {range: [0, 1000]}}", partly));
}

static void test_contains_looks_at_each_value(void **state)
{
    (void)state;
    assert_true(matches("{ImageType: {contains: AXIAL}}", ct_chest));
    assert_true(matches("{ImageType: {contains: original}}", ct_chest));
    assert_false(matches("{ImageType: {contains: LOCALIZER}}", ct_chest));
    assert_false(matches("{ImageType: {contains: AX}}", ct_chest)); /* a whole value */
    /* equality is against the whole multi-valued text */
    assert_false(matches("{ImageType: AXIAL}", ct_chest));
}

static void test_absent_attributes_never_hold_except_present_false(void **state)
{
    (void)state;
    static const struct kv empty[] = {{"Modality", ""}, {NULL, NULL}};
    assert_false(matches("{ProtocolName: X}", ct_chest));
    assert_false(matches("{ProtocolName: [X, Y]}", ct_chest));
    assert_false(matches("{ProtocolName: {regex: '.*'}}", ct_chest));
    assert_false(matches("{ProtocolName: {glob: '*'}}", ct_chest));
    assert_false(matches("{NumberOfFrames: {range: [0, 100]}}", ct_chest));
    assert_false(matches("{ProtocolName: {contains: X}}", ct_chest));
    assert_false(matches("{ProtocolName: {present: true}}", ct_chest));
    assert_true(matches("{ProtocolName: {present: false}}", ct_chest));
    assert_true(matches("{Modality: {present: true}}", ct_chest));
    assert_false(matches("{Modality: {present: false}}", ct_chest));
    /* an empty value counts as absent */
    assert_true(matches("{Modality: {present: false}}", empty));
    assert_false(matches("{Modality: {glob: '*'}}", empty));
}

static void test_any_needs_one_and_not_none(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - match: {Modality: CT}\n"
                                    "    any: [{BodyPartExamined: HEAD}, {SeriesDescription: "
                                    "{regex: lung}}]\n"
                                    "    forward_to: [arch]\n"
                                    "  - name: none-of-any\n"
                                    "    any: [{BodyPartExamined: HEAD}, {Modality: MR}]\n"
                                    "    forward_to: [arch]\n"
                                    "  - name: not\n"
                                    "    not: {ImageType: {contains: LOCALIZER}}\n"
                                    "    forward_to: [arch]\n"
                                    "  - name: not-excludes\n"
                                    "    match: {Modality: CT}\n"
                                    "    not: {BodyPartExamined: CHEST}\n"
                                    "    forward_to: [arch]\n");
    assert_true(rules_matches(&cfg->rules[0], row_of(ct_chest), NULL, NULL));
    assert_false(rules_matches(&cfg->rules[1], row_of(ct_chest), NULL, NULL));
    assert_true(rules_matches(&cfg->rules[2], row_of(ct_chest), NULL, NULL));
    assert_false(rules_matches(&cfg->rules[3], row_of(ct_chest), NULL, NULL));
    free_rules(cfg);
}

static void test_nested_any_and_not(void **state)
{
    (void)state;
    /* CT, and (MR or (chest but not a localizer)) */
    const char *m = "{Modality: CT, any: [{Modality: MR}, "
                    "{BodyPartExamined: CHEST, not: {ImageType: {contains: LOCALIZER}}}]}";
    assert_true(matches(m, ct_chest));
    static const struct kv scout[] = {
        {"Modality", "CT"}, {"BodyPartExamined", "CHEST"}, {"ImageType", "ORIGINAL\\LOCALIZER"},
        {NULL, NULL}};
    assert_false(matches(m, scout));
    /* not of any */
    assert_false(matches("{not: {any: [{Modality: MR}, {Modality: CT}]}}", ct_chest));
    assert_true(matches("{not: {any: [{Modality: MR}, {Modality: PT}]}}", ct_chest));
}

static void test_each_operator_compares_by_the_attribute_kind(void **state)
{
    (void)state;
    static const struct {
        const char *match;
        struct kv series[3];
        int want;
    } cases[] = {
        /* UID: exact, in every operator */
        {"{SOPClassUID: 1.2.AB}", {{"SOPClassUID", "1.2.AB"}}, 1},
        {"{SOPClassUID: 1.2.ab}", {{"SOPClassUID", "1.2.AB"}}, 0},
        {"{SOPClassUID: [1.2.ab, 1.3]}", {{"SOPClassUID", "1.2.AB"}}, 0},
        {"{SOPClassUID: {glob: '1.2.A*'}}", {{"SOPClassUID", "1.2.AB"}}, 1},
        {"{SOPClassUID: {glob: '1.2.a*'}}", {{"SOPClassUID", "1.2.AB"}}, 0},
        {"{SeriesInstanceUID: {contains: 1.2.ab}}", {{"SeriesInstanceUID", "1.2.AB"}}, 0},
        {"{SeriesInstanceUID: {contains: 1.2.AB}}", {{"SeriesInstanceUID", "1.2.AB"}}, 1},
        /* text: caseless */
        {"{PatientID: abc-1}", {{"PatientID", "ABC-1"}}, 1},
        {"{AccessionNumber: [x, acc9]}", {{"AccessionNumber", "ACC9"}}, 1},
        {"{ContrastBolusAgent: {glob: 'omni*'}}", {{"ContrastBolusAgent", "OMNIPAQUE 350"}}, 1},
        {"{calling_ae: ct_room1}", {{"calling_ae", "CT_ROOM1"}}, 1},
        /* numbers: equal as numbers, ranges numeric */
        {"{SliceThickness: 1}", {{"SliceThickness", "1.0"}}, 1},
        {"{SliceThickness: [2, 3]}", {{"SliceThickness", "1.0"}}, 0},
        {"{SeriesNumber: 3}", {{"SeriesNumber", "03"}}, 1},
        {"{Rows: 512}", {{"Rows", "512"}}, 1},
        {"{Rows: {range: [256, 511]}}", {{"Rows", "512"}}, 0},
        {"{instances: 42}", {{"instances", "42"}}, 1},
        {"{instances: {range: [43, 50]}}", {{"instances", "42"}}, 0},
        /* dates: text, ranges over YYYYMMDD */
        {"{StudyDate: 20240131}", {{"StudyDate", "20240131"}}, 1},
        {"{StudyDate: {range: [20240101, 20241231]}}", {{"StudyDate", "20240131"}}, 1},
        {"{StudyDate: {range: [20250101, 20251231]}}", {{"StudyDate", "20240131"}}, 0},
        /* multi-valued: contains looks at each value, equals at the whole */
        {"{ImageType: {contains: derived}}", {{"ImageType", "DERIVED\\SECONDARY"}}, 1},
        {"{ImageType: DERIVED}", {{"ImageType", "DERIVED\\SECONDARY"}}, 0},
        {"{ImageType: 'derived\\secondary'}", {{"ImageType", "DERIVED\\SECONDARY"}}, 1},
        /* regex: searched, caseless, whatever the kind */
        {"{StudyInstanceUID: {regex: '^1\\.2\\.'}}", {{"StudyInstanceUID", "1.2.3"}}, 1},
        {"{PatientName: {regex: 'doe'}}", {{"PatientName", "DOE^JOHN"}}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = matches(cases[i].match, cases[i].series);
        if (got != cases[i].want)
            fail_msg("%s on %s=%s: got %d", cases[i].match, cases[i].series[0].k,
                     cases[i].series[0].v, got);
    }
}

struct trace_rec {
    int n;
    char where[16][64];
    int held[16];
    char value[16][64];
    int absent[16];
};

static void record(void *ud, const struct rules_rule *rule, const char *where, int held,
                   const char *value)
{
    struct trace_rec *t = ud;
    assert_non_null(rule);
    assert_true(t->n < 16);
    snprintf(t->where[t->n], sizeof t->where[0], "%s", where);
    t->held[t->n] = held;
    t->absent[t->n] = !value;
    snprintf(t->value[t->n], sizeof t->value[0], "%s", value ? value : "");
    t->n++;
}

static void test_trace_names_every_condition(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - match: {Modality: MR, SeriesDescription: {regex: lung}}\n"
                                    "    any: [{ProtocolName: X}, {not: {Rows: 1}}]\n"
                                    "    not: {Modality: PT}\n"
                                    "    forward_to: [arch]\n"
                                    "  - match: {instances: {range: [1, 1000]}}\n"
                                    "    forward_to: [arch]\n");
    struct trace_rec t = {0};
    assert_false(rules_matches(&cfg->rules[0], row_of(ct_chest), record, &t));
    assert_int_equal(t.n, 5);
    assert_string_equal(t.where[0], "match.Modality");
    assert_false(t.held[0]);
    assert_string_equal(t.value[0], "CT");
    assert_string_equal(t.where[1], "match.SeriesDescription");
    assert_true(t.held[1]);
    assert_string_equal(t.where[2], "any[1].ProtocolName");
    assert_true(t.absent[2]);
    assert_string_equal(t.where[3], "any[2].not.Rows");
    assert_string_equal(t.where[4], "not.Modality");
    /* a fact is traced with its value too */
    memset(&t, 0, sizeof t);
    assert_true(rules_matches(&cfg->rules[1], row_of(ct_chest), record, &t));
    assert_int_equal(t.n, 1);
    assert_string_equal(t.where[0], "match.instances");
    assert_string_equal(t.value[0], "312");
    free_rules(cfg);
}

/* rules_explain's text for SERIES under CFG. */
static char *explain_text(const struct config *cfg, const struct attr_series *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    rules_explain(cfg, s, m);
    assert_int_equal(fclose(m), 0);
    return buf;
}

static void test_explain_shows_each_condition_with_the_series_value(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - name: mr\n"
                                    "    match: {Modality: MR}\n"
                                    "    forward_to: [arch]\n"
                                    "  - name: ct\n"
                                    "    match: {Modality: CT, PatientID: {present: true}, "
                                    "StudyDate: {range: [20240101, 20241231]}}\n"
                                    "    run: [seg]\n"
                                    "    send_results_to: [pacs]\n"
                                    "  - name: late\n"
                                    "    forward_to: [arch]\n");
    static const struct kv ct[] = {{"SeriesInstanceUID", "1.2.3.4"}, {"Modality", "CT"},
                                   {"PatientID", "P-7"}, {"StudyDate", "20240131"},
                                   {"instances", "3"}, {NULL, NULL}};
    char *text = explain_text(cfg, row_of(ct));
    static const char *const want[] = {
        "series 1.2.3.4 (CT, 3 instances)\n",
        "  rule mr:\n",
        "      match.Modality                           failed (series value: CT)\n",
        "    does not match\n",
        "  rule ct:\n",
        "      match.Modality                           held   (series value: CT)\n",
        "      match.PatientID                          held   (series value: P-7)\n",
        "      match.StudyDate                          held   (series value: 20240131)\n",
        "    MATCHES\n",
        "      runs: seg\n",
        "      sends results to: pacs\n",
        "  rule late: not evaluated (an earlier rule matched and does not continue)\n",
    };
    char expected[2048] = "";
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        strcat(expected, want[i]);
    assert_string_equal(text, expected);
    free(text);

    /* nothing decides: said so; an absent value is "absent" */
    static const struct kv us[] = {{"SeriesInstanceUID", "9"}, {"instances", "1"}, {NULL, NULL}};
    struct config *one = load_match("{Modality: MR}");
    text = explain_text(one, row_of(us));
    assert_non_null(strstr(text, "series 9 (no modality, 1 instance)\n"));
    assert_non_null(strstr(text, "match.Modality                           failed (series "
                                 "value: absent)\n"));
    assert_non_null(strstr(text, "  -> no rule decided: the series is recorded as unmatched\n"));
    free(text);
    free_rules(one);
    free_rules(cfg);
}

/* ---- the plan --------------------------------------------------------- */

static const struct plan_job *job_of(const struct plan *p, const char *series, const char *model)
{
    for (size_t i = 0; i < p->n_jobs; i++)
        if (!strcmp(p->jobs[i].series_uid, series) && !strcmp(p->jobs[i].model, model))
            return &p->jobs[i];
    return NULL;
}

static void test_first_match_wins_unless_it_continues(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - name: mr\n"
                                    "    match: {Modality: MR}\n"
                                    "    run: [lung]\n"
                                    "  - name: ct-copy\n"
                                    "    match: {Modality: CT}\n"
                                    "    forward_to: [arch]\n"
                                    "    continue: true\n"
                                    "  - name: chest\n"
                                    "    match: {BodyPartExamined: CHEST}\n"
                                    "    run: [seg]\n"
                                    "    priority: stat\n"
                                    "  - name: rest\n"
                                    "    run: [lung]\n");
    assert_int_equal(cfg->rules[1].continues, 1);
    assert_int_equal(cfg->rules[2].priority, PLAN_PRIORITY_STAT);
    assert_int_equal(cfg->rules[3].priority, PLAN_PRIORITY_NORMAL);
    static const struct kv mr[] = {{"SeriesInstanceUID", "2"}, {"Modality", "MR"}, {NULL, NULL}};
    static const struct kv us[] = {{"SeriesInstanceUID", "3"}, {"Modality", "US"}, {NULL, NULL}};
    struct kv ct[16];
    memcpy(ct, ct_chest, sizeof ct_chest);
    size_t n = sizeof ct_chest / sizeof ct_chest[0];
    ct[n - 1] = (struct kv){"SeriesInstanceUID", "1"};
    ct[n] = (struct kv){NULL, NULL};
    struct attr_series rows[3] = {*row_of(ct), *row_of(mr), *row_of(us)};
    struct plan p = {0};
    assert_int_equal(rules_plan(cfg, rows, 3, &p), 0);
    /* CT: ct-copy forwards and continues, chest runs seg, "rest" is not reached */
    assert_int_equal(p.n_forwards, 1);
    assert_string_equal(p.forwards[0].series_uid, "1");
    assert_string_equal(p.forwards[0].destination, "arch");
    assert_non_null(job_of(&p, "1", "seg"));
    assert_int_equal(job_of(&p, "1", "seg")->priority, PLAN_PRIORITY_STAT);
    assert_null(job_of(&p, "1", "lung"));
    assert_non_null(job_of(&p, "2", "lung")); /* MR: the first rule */
    assert_non_null(job_of(&p, "3", "lung")); /* US: the catch-all */
    assert_int_equal(p.n_jobs, 3);
    assert_int_equal(p.n_unmatched, 0);
    plan_free(&p);
    free_rules(cfg);
}

static void test_plan_merges_jobs_and_records_unmatched_series(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - name: a\n"
                                    "    match: {Modality: CT}\n"
                                    "    run: [seg]\n"
                                    "    send_results_to: [pacs]\n"
                                    "    forward_to: [arch]\n"
                                    "    priority: low\n"
                                    "    continue: true\n"
                                    "  - name: b\n"
                                    "    match: {BodyPartExamined: CHEST}\n"
                                    "    run: [seg, lung]\n"
                                    "    send_results_to: [arch, pacs]\n"
                                    "    forward_to: [arch]\n"
                                    "    priority: stat\n");
    static const struct kv chest[] = {{"SeriesInstanceUID", "1.1"}, {"Modality", "CT"},
                                      {"BodyPartExamined", "CHEST"}, {NULL, NULL}};
    static const struct kv head[] = {{"SeriesInstanceUID", "1.2"}, {"Modality", "CT"},
                                     {"BodyPartExamined", "HEAD"}, {NULL, NULL}};
    static const struct kv mr[] = {{"SeriesInstanceUID", "1.3"}, {"Modality", "MR"}, {NULL, NULL}};
    static const struct kv nouid[] = {{"Modality", "SR"}, {NULL, NULL}};
    struct attr_series rows[4] = {*row_of(chest), *row_of(head), *row_of(mr), *row_of(nouid)};
    struct plan p = {0};
    assert_int_equal(rules_plan(cfg, rows, 4, &p), 0);
    /* one seg job for 1.1 though two rules ask: destinations merged, most urgent priority */
    const struct plan_job *j = job_of(&p, "1.1", "seg");
    assert_non_null(j);
    assert_int_equal(j->priority, PLAN_PRIORITY_STAT);
    assert_int_equal(j->n_destinations, 2);
    assert_string_equal(j->destinations[0], "pacs");
    assert_string_equal(j->destinations[1], "arch");
    j = job_of(&p, "1.1", "lung");
    assert_non_null(j);
    assert_int_equal(j->n_destinations, 2);
    j = job_of(&p, "1.2", "seg");
    assert_non_null(j);
    assert_int_equal(j->priority, PLAN_PRIORITY_LOW);
    assert_int_equal(j->n_destinations, 1);
    assert_int_equal(p.n_jobs, 3);
    /* forwarded once per series and destination */
    assert_int_equal(p.n_forwards, 2);
    assert_string_equal(p.forwards[0].series_uid, "1.1");
    assert_string_equal(p.forwards[1].series_uid, "1.2");
    /* MR matched nothing; a row without a series UID cannot be planned at all */
    assert_int_equal(p.n_unmatched, 1);
    assert_string_equal(p.unmatched[0], "1.3");
    plan_free(&p);

    assert_int_equal(rules_plan(cfg, NULL, 1, &p), RULES_EINVAL);
    assert_string_equal(rules_strerror(RULES_EINVAL), "invalid argument");
    assert_string_equal(rules_strerror(RULES_ENOMEM), "out of memory");
    free_rules(cfg);
}

/* ---- input.accept ------------------------------------------------------ */

/* 1 when M accepts the series KV; its reason, if not, in WHY. */
static int accepts(const struct config_manifest *m, const struct kv *kv, char *why)
{
    return rules_accepts(m, row_of(kv), why, 512);
}

static void test_accept_refuses_each_filter_with_the_series_value(void **state)
{
    (void)state;
    char *modality[] = {"CT"}, *body[] = {"CHEST", "THORAX"}, *view[] = {"PA"},
         *photometric[] = {"MONOCHROME2"};
    struct config_manifest m = {.modality = "CT"};
    struct config_accept *a = &m.accept;
    struct kv s[] = {{"Modality", "ct"},           {"BodyPartExamined", "thorax"},
                     {"ViewPosition", "PA"},       {"PhotometricInterpretation", "MONOCHROME2"},
                     {"PixelSpacing", "0.7\\0.7"}, {"SliceThickness", "1.25"},
                     {"Rows", "512"},              {"Columns", "512"},
                     {NULL, NULL}};
    char why[512];
    /* no filter: anything goes, even a series without attributes */
    static const struct kv bare[] = {{NULL, NULL}};
    assert_int_equal(accepts(&m, bare, why), 1);
    assert_string_equal(why, "");

    *a = (struct config_accept){
        .modality = modality, .n_modality = 1, .body_part = body, .n_body_part = 2,
        .view_position = view, .n_view_position = 1, .photometric = photometric,
        .n_photometric = 1, .has_pixel_spacing = 1, .pixel_spacing = {0.5, 1},
        .has_slice_thickness = 1, .slice_thickness = {1, 3}, .rows = {256, 512},
        .columns = {512, 1024}};
    /* lists compare ignoring case, ranges are inclusive */
    assert_int_equal(accepts(&m, s, why), 1);

    struct {
        int i;                    /* the item of S changed */
        const char *value;        /* to this (NULL: absent) */
        const char *why;
    } cases[] = {
        {0, "MR", "Modality is MR; the model accepts CT"},
        {1, "KNEE", "BodyPartExamined is KNEE; the model accepts CHEST, THORAX"},
        {1, NULL, "BodyPartExamined is absent; the model accepts CHEST, THORAX"},
        {2, "LL", "ViewPosition is LL; the model accepts PA"},
        {3, "RGB", "PhotometricInterpretation is RGB; the model accepts MONOCHROME2"},
        {4, "0.7\\1.5", "PixelSpacing is 0.7\\1.5 mm; the model accepts 0.5..1 mm"},
        {4, "0.4\\0.7", "PixelSpacing is 0.4\\0.7 mm; the model accepts 0.5..1 mm"},
        {4, "fine", "PixelSpacing is fine mm; the model accepts 0.5..1 mm"},
        {4, NULL, "PixelSpacing is absent; the model accepts 0.5..1 mm"},
        {5, "5", "SliceThickness is 5 mm; the model accepts 1..3 mm"},
        {6, "1024", "Rows is 1024; the model accepts 256..512"},
        {7, "256", "Columns is 256; the model accepts 512..1024"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct kv t[sizeof s / sizeof s[0]];
        memcpy(t, s, sizeof s);
        if (cases[c].value)
            t[cases[c].i].v = cases[c].value;
        else
            t[cases[c].i].k = "StudyID"; /* the attribute becomes absent */
        assert_int_equal(accepts(&m, t, why), 0);
        assert_string_equal(why, cases[c].why);
    }
    /* the edges of each range are in it */
    s[4].v = "0.5\\1";
    s[5].v = "3";
    s[6].v = "256";
    s[7].v = "1024";
    assert_int_equal(accepts(&m, s, why), 1);
}

static void test_plan_marks_jobs_outside_the_model_s_accept_not_applicable(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - name: ct\n"
                                    "    match: {Modality: CT}\n"
                                    "    run: [seg, lung]\n"
                                    "    send_results_to: [pacs]\n");
    char *body[] = {"CHEST"};
    struct config_model models[2] = {
        {.name = "seg", .manifest = {.modality = "CT"}},
        {.name = "lung",
         .manifest = {.modality = "CT", .accept = {.body_part = body, .n_body_part = 1}}},
    };
    cfg->models = models;
    cfg->n_models = 2;
    static const struct kv chest[] = {{"SeriesInstanceUID", "1.1"}, {"Modality", "CT"},
                                      {"BodyPartExamined", "CHEST"}, {NULL, NULL}};
    static const struct kv knee[] = {{"SeriesInstanceUID", "1.2"}, {"Modality", "CT"},
                                     {"BodyPartExamined", "KNEE"}, {NULL, NULL}};
    struct attr_series rows[2] = {*row_of(chest), *row_of(knee)};
    struct plan p = {0};
    assert_int_equal(rules_plan(cfg, rows, 2, &p), 0);
    assert_int_equal(p.n_jobs, 4);
    assert_null(job_of(&p, "1.1", "seg")->not_applicable);
    assert_null(job_of(&p, "1.1", "lung")->not_applicable);
    assert_null(job_of(&p, "1.2", "seg")->not_applicable);
    const struct plan_job *j = job_of(&p, "1.2", "lung");
    assert_string_equal(j->not_applicable, "BodyPartExamined is KNEE; the model accepts CHEST");
    assert_int_equal(j->n_destinations, 1); /* still recorded where it would have gone */
    plan_free(&p);

    /* explain says so under the rule that runs it */
    char *text = explain_text(cfg, &rows[1]);
    assert_non_null(strstr(text, "      lung: not applicable (BodyPartExamined is KNEE; the "
                                 "model accepts CHEST): recorded, never run\n"));
    assert_null(strstr(text, "seg: not applicable"));
    free(text);
    text = explain_text(cfg, &rows[0]);
    assert_null(strstr(text, "not applicable"));
    free(text);
    cfg->models = NULL;
    cfg->n_models = 0;
    free_rules(cfg);
}

static void test_a_model_that_takes_the_study_runs_once_on_all_its_series(void **state)
{
    (void)state;
    struct config *cfg = parse("destinations:\n"
                               "  arch: {ae_title: ARCH, host: localhost, port: 104}\n"
                               "  pacs: {ae_title: PACS, host: localhost, port: 105}\n"
                               "models:\n  cxr: {file: x}\n  per_series: {file: y}\n"
                               "  head: {file: z}\n"
                               "rules:\n"
                                    "  - name: pa\n"
                                    "    match: {ViewPosition: PA}\n"
                                    "    run: [cxr, per_series, head]\n"
                                    "    send_results_to: [pacs]\n"
                                    "  - name: lateral\n"
                                    "    match: {ViewPosition: [LL, RL]}\n"
                                    "    run: [cxr, per_series, head]\n"
                                    "    priority: stat\n"
                                    "    send_results_to: [arch]\n", NULL);
    char *views[] = {"PA", "LL"};
    struct config_model models[4] = {
        {.name = "cxr",
         .manifest = {.modality = "DX", .input_kind = CONFIG_INPUT_IMAGE,
                      .scope = CONFIG_SCOPE_STUDY,
                      .accept = {.view_position = views, .n_view_position = 2}}},
        {.name = "per_series",
         .manifest = {.modality = "DX", .input_kind = CONFIG_INPUT_IMAGE,
                      .scope = CONFIG_SCOPE_SERIES}},
        {.name = "enc",
         .manifest = {.modality = "DX", .input_kind = CONFIG_INPUT_IMAGE,
                      .scope = CONFIG_SCOPE_STUDY, .output_kind = CONFIG_OUTPUT_EMBEDDING}},
        {.name = "head", .manifest = {.from = "enc"}},
    };
    cfg->models = models;
    cfg->n_models = 4;
    static const struct kv pa[] = {{"SeriesInstanceUID", "1.1"}, {"ViewPosition", "PA"},
                                   {NULL, NULL}};
    static const struct kv ll[] = {{"SeriesInstanceUID", "1.2"}, {"ViewPosition", "LL"},
                                   {NULL, NULL}};
    static const struct kv rl[] = {{"SeriesInstanceUID", "1.3"}, {"ViewPosition", "RL"},
                                   {NULL, NULL}};
    struct attr_series rows[3] = {*row_of(pa), *row_of(ll), *row_of(rl)};
    struct plan p = {0};
    assert_int_equal(rules_plan(cfg, rows, 3, &p), 0);
    /* cxr: one job on 1.1 and 1.2 (1.3 is outside its accept, recorded
     * apart); per_series: three; the head takes its encoder's study */
    assert_int_equal(p.n_jobs, 1 + 1 + 3 + 1);
    const struct plan_job *j = job_of(&p, "1.1", "cxr");
    assert_null(j->not_applicable);
    assert_int_equal(j->n_more_series, 1);
    assert_string_equal(j->more_series[0], "1.2");
    assert_int_equal(j->priority, PLAN_PRIORITY_STAT); /* the most urgent rule decides */
    assert_int_equal(j->n_destinations, 2);
    assert_string_equal(j->destinations[0], "pacs");
    assert_string_equal(j->destinations[1], "arch");
    assert_string_equal(job_of(&p, "1.3", "cxr")->not_applicable,
                        "ViewPosition is RL; the model accepts PA, LL");
    assert_int_equal(job_of(&p, "1.3", "cxr")->n_more_series, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(job_of(&p, rows[i].value[ATTR_SERIES_INSTANCE_UID],
                                "per_series")->n_more_series, 0);
    j = job_of(&p, "1.1", "head");
    assert_int_equal(j->n_more_series, 2);
    assert_string_equal(j->more_series[0], "1.2");
    assert_string_equal(j->more_series[1], "1.3");
    plan_free(&p);
    cfg->models = NULL;
    cfg->n_models = 0;
    free_rules(cfg);
}

static void test_required_series_are_met_by_some_row(void **state)
{
    (void)state;
    struct config *cfg = parse(DESTS "completion:\n"
                                     "  required_series:\n"
                                     "    - {Modality: CT, SeriesDescription: {regex: lung}}\n"
                                     "    - {Modality: SR}\n",
                               NULL);
    assert_int_equal(cfg->completion.required.n_any, 2);
    static const struct kv sr[] = {{"Modality", "SR"}, {NULL, NULL}};
    static const struct kv mr[] = {{"Modality", "MR"}, {NULL, NULL}};
    struct attr_series both[2] = {*row_of(ct_chest), *row_of(sr)};
    struct attr_series one[2] = {*row_of(ct_chest), *row_of(mr)};
    assert_int_equal(rules_required_met(cfg, both, 2), 1);
    assert_int_equal(rules_required_met(cfg, one, 2), 0);
    assert_int_equal(rules_required_met(cfg, both, 0), 0);
    free_rules(cfg);
    /* nothing required: nothing completes early */
    cfg = parse(DESTS, NULL);
    assert_int_equal(rules_required_met(cfg, both, 2), 0);
    free_rules(cfg);
}

/* ---- parsing and lint ------------------------------------------------- */

static void test_parse_problems_are_positioned(void **state)
{
    (void)state;
    struct capture cap = {0};
    struct config *cfg = parse(DESTS "rules:\n"                                  /* 7 */
                                     "  - match: {PatientWeight: 70}\n"          /* 8 */
                                     "    run: [seg, brain]\n"                   /* 9 */
                                     "  - match: {Modality: {range: [2, 1]}}\n"  /* 10 */
                                     "    forward_to: [tape]\n"                  /* 11 */
                                     "  - match: {StudyDate: {between: x}}\n"    /* 12 */
                                     "    run: [seg]\n"                          /* 13 */
                                     "    priority: urgent\n",                   /* 14 */
                               &cap);
    static const char *const want[] = {
        "rules.yaml:8:13: rules[1].match: unknown attribute 'PatientWeight'",
        "rules.yaml:9:16: rules[1].run: unknown model 'brain'",
        "rules.yaml:10:31: rules[2].match.Modality.range: low 2 is greater than high 1",
        "rules.yaml:11:18: rules[2].forward_to: unknown destination 'tape'",
        "rules.yaml:12:25: rules[3].match.StudyDate: unknown operator 'between' "
        "(use regex, glob, range, contains or present)",
        "rules.yaml:14:15: rules[3].priority: 'urgent' is not one of stat, normal, low",
    };
    assert_int_equal(cap.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_string_equal(cap.lines[i], want[i]);
    free_rules(cfg);
}

static void test_lint_reports_rules_behind_a_catch_all(void **state)
{
    (void)state;
    struct capture cap = {0};
    struct config *cfg = parse(DESTS "rules:\n"
                                     "  - {name: copy, forward_to: [arch], continue: true}\n"
                                     "  - {name: all, run: [seg]}\n"
                                     "  - {name: never, match: {Modality: MR}, run: [lung]}\n",
                               &cap);
    assert_int_equal(cap.n, 1);
    assert_string_equal(cap.lines[0], "rules.yaml:10:5: rules[3]: never matches: rules[2] "
                                      "('all') matches every series and does not continue");
    assert_int_equal(rules_unreachable(cfg->rules, 0), -1);
    assert_int_equal(rules_unreachable(cfg->rules, 1), -1); /* "copy" continues */
    assert_int_equal(rules_unreachable(cfg->rules, 2), 1);
    free_rules(cfg);

    /* a catch-all with problems of its own is not taken for one */
    memset(&cap, 0, sizeof cap);
    cfg = parse(DESTS "rules:\n"
                      "  - {name: bad, run: [nothing]}\n"
                      "  - {match: {Modality: MR}, run: [lung]}\n",
                &cap);
    assert_int_equal(cap.n, 1);
    assert_string_equal(cap.lines[0], "rules.yaml:8:23: rules[1].run: unknown model 'nothing'");
    assert_int_equal(rules_unreachable(cfg->rules, 1), -1);
    free_rules(cfg);
}

static void test_rule_names_and_positions_are_kept(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - {match: {Modality: CT}, run: [seg]}\n"
                                    "  - name: second\n"
                                    "    run: [lung]\n");
    assert_int_equal(cfg->n_rules, 2);
    assert_string_equal(cfg->rules[0].name, "rule-1");
    assert_int_equal(cfg->rules[0].number, 1);
    assert_int_equal(cfg->rules[0].line, 8);
    assert_int_equal(cfg->rules[0].match.conditions[0].line, 8);
    assert_int_equal(cfg->rules[0].match.conditions[0].column, 14);
    assert_int_equal(cfg->rules[0].match.conditions[0].attr, ATTR_MODALITY);
    assert_string_equal(cfg->rules[1].name, "second");
    assert_int_equal(cfg->rules[1].line, 9);
    assert_true(rules_match_is_empty(&cfg->rules[1].match));
    free_rules(cfg);
}

/* Every attribute of attr.def and every fact can be named in a rule. */
static void test_every_indexed_attribute_can_be_matched(void **state)
{
    (void)state;
    for (int i = 0; i < ATTR_COUNT; i++) {
        char match[128];
        snprintf(match, sizeof match, "{%s: {present: true}}", attr_table[i].keyword);
        struct config *cfg = load_match(match);
        struct attr_series s;
        memset(&s, 0, sizeof s);
        assert_false(rules_matches(&cfg->rules[0], &s, NULL, NULL));
        s.value[i] = "x";
        assert_true(rules_matches(&cfg->rules[0], &s, NULL, NULL));
        assert_int_equal(cfg->rules[0].match.conditions[0].kind, attr_table[i].kind);
        free_rules(cfg);
    }
    static const struct kv facts[] = {{"instances", "5"}, {"calling_ae", "A"},
                                      {"called_ae", "B"}, {"source_address", "10.0.0.1"},
                                      {NULL, NULL}};
    assert_true(matches("{instances: 5, calling_ae: a, called_ae: b, "
                        "source_address: {glob: '10.*'}}", facts));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_ignores_case_except_for_uids),
        cmocka_unit_test(test_list_is_one_of),
        cmocka_unit_test(test_regex_searches_caselessly),
        cmocka_unit_test(test_catastrophic_regex_is_bounded),
        cmocka_unit_test(test_glob_ignores_case),
        cmocka_unit_test(test_range_is_numeric_and_inclusive),
        cmocka_unit_test(test_contains_looks_at_each_value),
        cmocka_unit_test(test_absent_attributes_never_hold_except_present_false),
        cmocka_unit_test(test_any_needs_one_and_not_none),
        cmocka_unit_test(test_nested_any_and_not),
        cmocka_unit_test(test_each_operator_compares_by_the_attribute_kind),
        cmocka_unit_test(test_trace_names_every_condition),
        cmocka_unit_test(test_explain_shows_each_condition_with_the_series_value),
        cmocka_unit_test(test_first_match_wins_unless_it_continues),
        cmocka_unit_test(test_plan_merges_jobs_and_records_unmatched_series),
        cmocka_unit_test(test_accept_refuses_each_filter_with_the_series_value),
        cmocka_unit_test(test_plan_marks_jobs_outside_the_model_s_accept_not_applicable),
        cmocka_unit_test(test_a_model_that_takes_the_study_runs_once_on_all_its_series),
        cmocka_unit_test(test_required_series_are_met_by_some_row),
        cmocka_unit_test(test_parse_problems_are_positioned),
        cmocka_unit_test(test_lint_reports_rules_behind_a_catch_all),
        cmocka_unit_test(test_rule_names_and_positions_are_kept),
        cmocka_unit_test(test_every_indexed_attribute_can_be_matched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
