/* common/: the attribute table, plans, error lines and log escaping. */
#include "common/attr.h"
#include "common/error.h"
#include "common/plan.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

static void test_attribute_keywords_and_columns_are_unique(void **state)
{
    (void)state;
    for (int i = 0; i < ATTR_COUNT; i++) {
        assert_int_equal(attr_find(attr_table[i].keyword), i);
        for (int j = i + 1; j < ATTR_COUNT; j++) {
            assert_string_not_equal(attr_table[i].keyword, attr_table[j].keyword);
            if (attr_table[i].level == attr_table[j].level)
                assert_string_not_equal(attr_table[i].column, attr_table[j].column);
            assert_false(attr_table[i].group == attr_table[j].group &&
                         attr_table[i].element == attr_table[j].element);
        }
    }
    assert_int_equal(attr_find("NoSuchKeyword"), -1);
    assert_int_equal(attr_table[ATTR_BODY_PART_EXAMINED].group, 0x0018);
    assert_int_equal(attr_table[ATTR_BODY_PART_EXAMINED].element, 0x0015);
    assert_int_equal(attr_table[ATTR_STUDY_INSTANCE_UID].kind, ATTR_KIND_UID);
}

static void test_series_lookup_reads_attributes_and_facts(void **state)
{
    (void)state;
    struct attr_series s = {.calling_ae = "CT1", .instances = 42};
    s.value[ATTR_MODALITY] = "CT";
    char buf[32];
    assert_string_equal(attr_series_get(&s, "Modality", buf, sizeof buf), "CT");
    assert_null(attr_series_get(&s, "PatientID", buf, sizeof buf));
    assert_string_equal(attr_series_get(&s, "instances", buf, sizeof buf), "42");
    assert_string_equal(attr_series_get(&s, "calling_ae", buf, sizeof buf), "CT1");
    assert_null(attr_series_get(&s, "bogus", buf, sizeof buf));
    assert_true(attr_rule_name_known("source_address"));
    assert_true(attr_rule_name_known("ContrastBolusAgent"));
    assert_false(attr_rule_name_known("contrastbolusagent"));
}

static void test_plan_merges_a_model_named_twice_for_one_series(void **state)
{
    (void)state;
    struct plan p = {0};
    const char *a[] = {"pacs"}, *b[] = {"pacs", "archive"};
    assert_int_equal(plan_add_job(&p, "1.2", "m", PLAN_PRIORITY_NORMAL, a, 1), 0);
    assert_int_equal(plan_add_job(&p, "1.2", "m", PLAN_PRIORITY_STAT, b, 2), 0);
    assert_int_equal(plan_add_job(&p, "1.3", "m", PLAN_PRIORITY_LOW, NULL, 0), 0);
    assert_int_equal(p.n_jobs, 2);
    assert_int_equal(p.jobs[0].priority, PLAN_PRIORITY_STAT);
    assert_int_equal(p.jobs[0].n_destinations, 2);
    assert_string_equal(p.jobs[0].destinations[1], "archive");
    assert_int_equal(p.jobs[1].n_destinations, 0);
    assert_int_equal(plan_add_forward(&p, "1.2", "x"), 0);
    assert_int_equal(plan_add_forward(&p, "1.2", "x"), 0);
    assert_int_equal(plan_add_forward(&p, "1.3", "x"), 0);
    assert_int_equal(p.n_forwards, 2);
    assert_int_equal(plan_add_unmatched(&p, "1.4"), 0);
    assert_int_equal(p.n_unmatched, 1);
    plan_free(&p);
    assert_int_equal(p.n_jobs, 0);
    assert_null(p.jobs);
}

static void test_error_text_is_one_line_and_returns_the_code(void **state)
{
    (void)state;
    char err[16];
    assert_int_equal(error_set(err, sizeof err, -7, "a\nb\r%s", "cdefghijklmnop"), -7);
    assert_string_equal(err, "a b cdefghijklm");
    assert_int_equal(error_set(NULL, 0, -3, "x"), -3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attribute_keywords_and_columns_are_unique),
        cmocka_unit_test(test_series_lookup_reads_attributes_and_facts),
        cmocka_unit_test(test_plan_merges_a_model_named_twice_for_one_series),
        cmocka_unit_test(test_error_text_is_one_line_and_returns_the_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
