/* Unit tests for service/rules.c: every operator, case rules, absent
 * attributes, any/not, rule order and continue, the attr_series getter. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "service/service.h"
#include "storage/storage.h"

static char tmpdir[256];
static char paths[64][1024];
static int npaths;

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/ainode-test-rules-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < npaths; i++)
        unlink(paths[i]);
    return rmdir(tmpdir);
}

static void print_line(void *ud, const char *line)
{
    (void)ud;
    print_error("%s\n", line);
}

static const char *write_tmp(const char *text)
{
    assert_true(npaths < 64);
    char *p = paths[npaths];
    snprintf(p, sizeof paths[0], "%s/rules-%d.yaml", tmpdir, npaths);
    npaths++;
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    return p;
}

#define DESTS "destinations:\n  arch: {ae_title: ARCH, host: localhost, port: 104}\n"

/* A config whose rules are RULES (a YAML sequence, indented by 2), each
 * forwarding to "arch" unless it says otherwise. */
static struct config *load_rules(const char *rules)
{
    char text[8192];
    snprintf(text, sizeof text, DESTS "rules:\n%s", rules);
    struct config *cfg = NULL;
    int n = config_load(write_tmp(text), &cfg, print_line, NULL);
    assert_int_equal(n, 0);
    assert_non_null(cfg);
    return cfg;
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

static const char *kv_get(void *ud, const char *attribute)
{
    for (const struct kv *p = ud; p->k; p++)
        if (!strcmp(p->k, attribute))
            return p->v;
    return NULL;
}

static int matches(const char *match, const struct kv *series)
{
    struct config *cfg = load_match(match);
    int r = rules_match(&cfg->rules[0], kv_get, (void *)series, NULL, NULL);
    config_free(cfg);
    return r;
}

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
    int r = rules_match(&cfg->rules[0], kv_get, (void *)evil, NULL, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_false(r); /* a limit hit does not hold */
    assert_true(s < 2.0);
    config_free(cfg);

    cfg = load_match("{SeriesDescription: {regex: '(a|aa)+$'}}");
    assert_false(rules_match(&cfg->rules[0], kv_get, (void *)evil, NULL, NULL));
    config_free(cfg);
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
    assert_true(rules_match(&cfg->rules[0], kv_get, (void *)ct_chest, NULL, NULL));
    assert_false(rules_match(&cfg->rules[1], kv_get, (void *)ct_chest, NULL, NULL));
    assert_true(rules_match(&cfg->rules[2], kv_get, (void *)ct_chest, NULL, NULL));
    assert_false(rules_match(&cfg->rules[3], kv_get, (void *)ct_chest, NULL, NULL));
    config_free(cfg);
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

struct trace_rec {
    int n;
    char where[16][64];
    int held[16];
    const char *value[16];
};

static void record(void *ud, const struct config_rule *rule, const char *where, int held,
                   const char *value)
{
    struct trace_rec *t = ud;
    assert_non_null(rule);
    assert_true(t->n < 16);
    snprintf(t->where[t->n], sizeof t->where[0], "%s", where);
    t->held[t->n] = held;
    t->value[t->n] = value;
    t->n++;
}

static void test_trace_names_every_condition(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - match: {Modality: MR, SeriesDescription: {regex: lung}}\n"
                                    "    any: [{ProtocolName: X}, {not: {Rows: 1}}]\n"
                                    "    not: {Modality: PT}\n"
                                    "    forward_to: [arch]\n");
    struct trace_rec t = {0};
    assert_false(rules_match(&cfg->rules[0], kv_get, (void *)ct_chest, record, &t));
    assert_int_equal(t.n, 5);
    assert_string_equal(t.where[0], "match.Modality");
    assert_false(t.held[0]);
    assert_string_equal(t.value[0], "CT");
    assert_string_equal(t.where[1], "match.SeriesDescription");
    assert_true(t.held[1]);
    assert_string_equal(t.where[2], "any[1].ProtocolName");
    assert_null(t.value[2]);
    assert_string_equal(t.where[3], "any[2].not.Rows");
    assert_string_equal(t.where[4], "not.Modality");
    config_free(cfg);
}

struct applied {
    int n;
    const char *names[8];
};

static void apply(void *ud, const struct config_rule *rule)
{
    struct applied *a = ud;
    assert_true(a->n < 8);
    a->names[a->n++] = rule->name;
}

static void test_first_match_wins_unless_it_continues(void **state)
{
    (void)state;
    struct config *cfg = load_rules("  - name: mr\n"
                                    "    match: {Modality: MR}\n"
                                    "    forward_to: [arch]\n"
                                    "  - name: ct-copy\n"
                                    "    match: {Modality: CT}\n"
                                    "    forward_to: [arch]\n"
                                    "    continue: true\n"
                                    "  - name: chest\n"
                                    "    match: {BodyPartExamined: CHEST}\n"
                                    "    forward_to: [arch]\n"
                                    "    priority: stat\n"
                                    "  - name: rest\n"
                                    "    forward_to: [arch]\n");
    assert_int_equal(cfg->rules[1].continues, 1);
    assert_int_equal(cfg->rules[2].priority, CONFIG_PRIORITY_STAT);
    assert_int_equal(cfg->rules[3].priority, CONFIG_PRIORITY_NORMAL);
    struct applied a = {0};
    assert_int_equal(rules_select(cfg, kv_get, (void *)ct_chest, NULL, NULL, apply, &a), 2);
    assert_int_equal(a.n, 2);
    assert_string_equal(a.names[0], "ct-copy");
    assert_string_equal(a.names[1], "chest"); /* does not continue: "rest" is not reached */

    static const struct kv mr[] = {{"Modality", "MR"}, {NULL, NULL}};
    memset(&a, 0, sizeof a);
    assert_int_equal(rules_select(cfg, kv_get, (void *)mr, NULL, NULL, apply, &a), 1);
    assert_string_equal(a.names[0], "mr");

    static const struct kv us[] = {{"Modality", "US"}, {NULL, NULL}};
    memset(&a, 0, sizeof a);
    assert_int_equal(rules_select(cfg, kv_get, (void *)us, NULL, NULL, apply, &a), 1);
    assert_string_equal(a.names[0], "rest");
    config_free(cfg);
}

static void test_series_getter_reads_attr_series(void **state)
{
    (void)state;
    struct attr_series s = {
        .value[ATTR_STUDY_INSTANCE_UID] = "1.2.3",
        .value[ATTR_SERIES_INSTANCE_UID] = "1.2.3.4",
        .value[ATTR_MODALITY] = "CT",
        .value[ATTR_BODY_PART_EXAMINED] = "CHEST",
        .value[ATTR_STUDY_DESCRIPTION] = "Thorax",
        .value[ATTR_IMAGE_TYPE] = "ORIGINAL\\PRIMARY\\AXIAL",
        .value[ATTR_SLICE_THICKNESS] = "1.25",
        .value[ATTR_ROWS] = "512",
        .value[ATTR_SOP_CLASS_UID] = "1.2.840.10008.5.1.4.1.1.2",
        .calling_ae = "CT_ROOM1",
        .called_ae = "AINODE",
        .source_address = "10.0.0.7",
        .instances = 42,
    };
    struct rules_series rs = {.series = &s};
    assert_string_equal(rules_series_get(&rs, "Modality"), "CT");
    assert_string_equal(rules_series_get(&rs, "StudyDescription"), "Thorax");
    assert_string_equal(rules_series_get(&rs, "SeriesInstanceUID"), "1.2.3.4");
    assert_string_equal(rules_series_get(&rs, "SliceThickness"), "1.25");
    assert_string_equal(rules_series_get(&rs, "source_address"), "10.0.0.7");
    assert_string_equal(rules_series_get(&rs, "instances"), "42");
    assert_null(rules_series_get(&rs, "ProtocolName"));
    assert_null(rules_series_get(&rs, "NoSuchThing"));
    /* every attribute a rule may name is known to the getter */
    for (size_t i = 0; config_rule_attributes[i]; i++) {
        const char *a = config_rule_attributes[i];
        struct attr_series all;
        memset(&all, 0, sizeof all);
        for (int f = 0; f < ATTR_COUNT; f++)
            all.value[f] = "x";
        all.calling_ae = all.called_ae = all.source_address = "x";
        struct rules_series ra = {.series = &all};
        assert_non_null(rules_series_get(&ra, a));
    }

    struct config *cfg = load_match("{Modality: ct, ImageType: {contains: axial}, "
                                    "instances: {range: [10, 100]}, calling_ae: {glob: 'CT_*'}}");
    assert_true(rules_match(&cfg->rules[0], rules_series_get, &rs, NULL, NULL));
    s.instances = 5;
    assert_false(rules_match(&cfg->rules[0], rules_series_get, &rs, NULL, NULL));
    config_free(cfg);
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
        cmocka_unit_test(test_trace_names_every_condition),
        cmocka_unit_test(test_first_match_wins_unless_it_continues),
        cmocka_unit_test(test_series_getter_reads_attr_series),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
