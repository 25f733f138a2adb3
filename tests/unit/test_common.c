/* common/: the attribute table, plans, error lines, log escaping and the waiter. */
#include "common/attr.h"
#include "common/buffer.h"
#include "common/error.h"
#include "common/log.h"
#include "common/plan.h"
#include "common/wait.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <sys/stat.h>

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

/* ------------------------------------------------------------------ */
/* log                                                                 */

/* What LINE() writes to stderr, into OUT. */
#define CAPTURE(out, len, line)                                                                \
    do {                                                                                       \
        FILE *tmp_ = tmpfile();                                                                \
        assert_non_null(tmp_);                                                                 \
        int saved_ = dup(STDERR_FILENO);                                                       \
        assert_true(saved_ >= 0);                                                              \
        assert_int_equal(dup2(fileno(tmp_), STDERR_FILENO), STDERR_FILENO);                    \
        line;                                                                                  \
        assert_int_equal(dup2(saved_, STDERR_FILENO), STDERR_FILENO);                          \
        close(saved_);                                                                         \
        rewind(tmp_);                                                                          \
        size_t n_ = fread((out), 1, (len) - 1, tmp_);                                          \
        (out)[n_] = '\0';                                                                      \
        fclose(tmp_);                                                                          \
    } while (0)

/* What log_msg(LEVEL, "%s", MSG) writes, without its time stamp. */
static void logged(enum log_level level, const char *msg, char *out, size_t len)
{
    CAPTURE(out, len, log_msg(level, "%s", msg));
    assert_memory_equal(out, "ts=", 3);
    char *space = strchr(out, ' '); /* after the time stamp */
    assert_non_null(space);
    memmove(out, space + 1, strlen(space + 1) + 1);
}

static void test_log_escapes_controls_and_non_ascii_so_no_line_is_forged(void **state)
{
    (void)state;
    char out[4096];
    /* A calling AE title that tries to start a line of its own. */
    logged(LOG_WARN, "association from EVIL\nts=2026-01-01T00:00:00.000Z level=info msg=forged",
           out, sizeof out);
    assert_string_equal(out, "level=warn msg=\"association from EVIL\\nts=2026-01-01T00:00:00.000Z "
                             "level=info msg=forged\"\n");
    logged(LOG_ERROR, "cr\r tab\t esc\x1b[31m del\x7f", out, sizeof out);
    assert_string_equal(out, "level=error msg=\"cr\\x0d tab\\x09 esc\\x1b[31m del\\x7f\"\n");
    /* Bytes outside ASCII (here UTF-8 for "é" and a stray 0xff). */
    logged(LOG_INFO, "caf\xc3\xa9 \xff", out, sizeof out);
    assert_string_equal(out, "level=info msg=\"caf\\xc3\\xa9 \\xff\"\n");
    /* A quote cannot end the message early, a backslash cannot fake an escape. */
    logged(LOG_INFO, "a\" job=9 \\x41", out, sizeof out);
    assert_string_equal(out, "level=info msg=\"a\\\" job=9 \\\\x41\"\n");
    /* A message longer than a line is cut, still one line, still closed. */
    char big[3000];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    logged(LOG_INFO, big, out, sizeof out);
    assert_non_null(strchr(out, '\n'));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    assert_memory_equal(out + strlen(out) - 3, "n\"\n", 3);
    /* Below the level: nothing. */
    log_set_level(LOG_WARN);
    CAPTURE(out, sizeof out, log_msg(LOG_INFO, "hidden"));
    assert_string_equal(out, "");
    log_set_level(LOG_INFO);
}

static void test_log_writes_an_event_and_its_ids_as_key_value_fields(void **state)
{
    (void)state;
    char out[2048];
    CAPTURE(out, sizeof out,
            log_event(LOG_INFO, "job.done", LOG_IDS(.job = 12, .model = "ct-bone-body"),
                      "done in %.1f s", 1.25));
    char *fields = strchr(out, ' ');
    assert_non_null(fields);
    assert_string_equal(fields, " level=info event=job.done job=12 model=ct-bone-body "
                                "msg=\"done in 1.2 s\"\n");
    /* A value with a space, a quote or '=' is quoted; unset ids are left out. */
    CAPTURE(out, sizeof out,
            log_event(LOG_WARN, "association.rejected",
                      LOG_IDS(.study = 3, .item = 0, .peer = "A=B \"C\"", .addr = "::1"),
                      "x"));
    fields = strchr(out, ' ');
    assert_non_null(fields);
    assert_string_equal(fields, " level=warn event=association.rejected study=3 "
                                "peer=\"A=B \\\"C\\\"\" addr=::1 msg=\"x\"\n");
}

static void test_log_json_lines_are_json_objects_with_the_same_fields(void **state)
{
    (void)state;
    char out[2048];
    log_set_format(LOG_FORMAT_JSON);
    CAPTURE(out, sizeof out,
            log_event(LOG_ERROR, "send.dead_letter", LOG_IDS(.item = 7, .dest = "pacs"),
                      "refused \"for good\"\n\x01\xff"));
    log_set_format(LOG_FORMAT_TEXT);
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    json_error_t e;
    json_t *o = json_loads(out, 0, &e);
    assert_non_null(o);
    assert_true(json_is_string(json_object_get(o, "ts")));
    assert_string_equal(json_string_value(json_object_get(o, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(o, "event")), "send.dead_letter");
    assert_int_equal(json_integer_value(json_object_get(o, "item")), 7);
    assert_string_equal(json_string_value(json_object_get(o, "dest")), "pacs");
    assert_null(json_object_get(o, "job"));
    /* Bytes outside ASCII come back as the code points of their values. */
    assert_string_equal(json_string_value(json_object_get(o, "msg")),
                        "refused \"for good\"\n\x01\xc3\xbf");
    json_decref(o);
}

static void test_log_lines_to_the_journal_carry_their_priority_and_no_time_stamp(void **state)
{
    (void)state;
    char out[2048];
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    assert_int_equal(dup2(fileno(tmp), STDERR_FILENO), STDERR_FILENO);
    struct stat st;
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    log_msg(LOG_ERROR, "e");
    log_msg(LOG_WARN, "w");
    log_msg(LOG_INFO, "i");
    log_set_level(LOG_DEBUG);
    log_msg(LOG_DEBUG, "d");
    log_set_level(LOG_INFO);
    /* Another file than the journal's stream: no prefix. */
    setenv("JOURNAL_STREAM", "1:1", 1);
    log_msg(LOG_INFO, "f");
    unsetenv("JOURNAL_STREAM");
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    char *f = strstr(out, "ts=");
    assert_non_null(f);
    *f = '\0';
    assert_string_equal(out, "<3>level=error msg=\"e\"\n<4>level=warn msg=\"w\"\n"
                             "<6>level=info msg=\"i\"\n<7>level=debug msg=\"d\"\n");
}

/* ------------------------------------------------------------------ */
/* waiter                                                              */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A thread that waits once on a shared waiter (10 s at most) and records
 * what it saw. */
struct sleeper {
    pthread_t thread;
    struct waiter *w;
    atomic_int *ready;
    int rc;
    int64_t waited_ms;
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    uint64_t seen = 0;
    atomic_fetch_add(s->ready, 1);
    int64_t t0 = now_ms();
    s->rc = waiter_wait(s->w, &seen, 10000);
    s->waited_ms = now_ms() - t0;
    return NULL;
}

enum { SLEEPERS = 4 };

/* Starts SLEEPERS threads on W and returns once all are about to wait
 * (and have had the time to fall asleep). */
static void start_sleepers(struct waiter *w, struct sleeper *s, atomic_int *ready)
{
    atomic_init(ready, 0);
    for (int i = 0; i < SLEEPERS; i++) {
        s[i] = (struct sleeper){.w = w, .ready = ready, .rc = -1};
        assert_int_equal(pthread_create(&s[i].thread, NULL, sleeper_main, &s[i]), 0);
    }
    while (atomic_load(ready) < SLEEPERS)
        sleep_ms(1);
    sleep_ms(100);
}

static void test_waiter_a_wake_before_the_wait_is_not_lost(void **state)
{
    (void)state;
    struct waiter w;
    assert_int_equal(waiter_init(&w), 0);
    uint64_t seen = 0;
    waiter_wake(&w);
    int64_t t0 = now_ms();
    assert_int_equal(waiter_wait(&w, &seen, 10000), 0);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(waiter_stopping(&w), 0);
    waiter_destroy(&w);
}

static void test_waiter_many_wakes_coalesce_into_one(void **state)
{
    (void)state;
    struct waiter w;
    assert_int_equal(waiter_init(&w), 0);
    uint64_t seen = 0;
    for (int i = 0; i < 100; i++)
        waiter_wake(&w);
    int64_t t0 = now_ms();
    assert_int_equal(waiter_wait(&w, &seen, 10000), 0);
    assert_true(now_ms() - t0 < 1000);
    /* The hundred wakes were one: the next wait sleeps its whole timeout. */
    t0 = now_ms();
    assert_int_equal(waiter_wait(&w, &seen, 200), 0);
    assert_true(now_ms() - t0 >= 200);
    waiter_destroy(&w);
}

static void test_waiter_timeout_is_honoured(void **state)
{
    (void)state;
    struct waiter w;
    assert_int_equal(waiter_init(&w), 0);
    uint64_t seen = 0;
    static const int64_t timeouts[] = {0, 1, 150, 1001};
    for (size_t i = 0; i < sizeof timeouts / sizeof *timeouts; i++) {
        int64_t t0 = now_ms();
        assert_int_equal(waiter_wait(&w, &seen, timeouts[i]), 0);
        int64_t took = now_ms() - t0;
        assert_true(took >= timeouts[i]);
        assert_true(took < timeouts[i] + 1000);
    }
    waiter_destroy(&w);
}

static void test_waiter_a_wake_reaches_every_waiting_thread(void **state)
{
    (void)state;
    struct waiter w;
    assert_int_equal(waiter_init(&w), 0);
    struct sleeper s[SLEEPERS];
    atomic_int ready;
    start_sleepers(&w, s, &ready);
    waiter_wake(&w);
    for (int i = 0; i < SLEEPERS; i++) {
        assert_int_equal(pthread_join(s[i].thread, NULL), 0);
        assert_int_equal(s[i].rc, 0);
        assert_true(s[i].waited_ms < 5000);
    }
    waiter_destroy(&w);
}

static void test_waiter_stop_wakes_every_thread_and_stays_set(void **state)
{
    (void)state;
    struct waiter w;
    assert_int_equal(waiter_init(&w), 0);
    struct sleeper s[SLEEPERS];
    atomic_int ready;
    start_sleepers(&w, s, &ready);
    waiter_stop(&w);
    for (int i = 0; i < SLEEPERS; i++) {
        assert_int_equal(pthread_join(s[i].thread, NULL), 0);
        assert_int_equal(s[i].rc, 1);
        assert_true(s[i].waited_ms < 5000);
    }
    /* Sticky: a later wake does not clear it, a later wait does not sleep. */
    waiter_wake(&w);
    assert_int_equal(waiter_stopping(&w), 1);
    uint64_t seen = 0;
    for (int i = 0; i < 3; i++) {
        int64_t t0 = now_ms();
        assert_int_equal(waiter_wait(&w, &seen, 10000), 1);
        assert_true(now_ms() - t0 < 1000);
    }
    assert_int_equal(waiter_stopping(&w), 1);
    waiter_destroy(&w);
}

/* The VmFlags line of the mapping of /proc/self/smaps that holds ADDR. */
static int mapping_flags(uintptr_t addr, char *flags, size_t len)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int inside = 0, found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
            inside = addr >= lo && addr < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, len, "%s", line + 8);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_large_buffers_are_advised_huge_pages_and_zeroed(void **state)
{
    (void)state;
    const size_t bytes = 64u << 20;
    unsigned char *b = buffer_zalloc(bytes, 1);
    assert_non_null(b);
    for (size_t i = 0; i < bytes; i += 4096)
        assert_int_equal(b[i], 0);
    assert_int_equal(b[bytes - 1], 0);
    /* Where the kernel has transparent huge pages, the middle of the
     * buffer is advised them ("hg" in its mapping's flags); without them
     * the buffer is plain memory, as written above. */
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0) {
        char flags[512] = "";
        assert_int_equal(mapping_flags((uintptr_t)(b + bytes / 2), flags, sizeof flags), 0);
        assert_non_null(strstr(flags, " hg"));
    }
    free(b);

    /* Small ones are plain; an overflowing size is refused. */
    unsigned char *s = buffer_zalloc(100, 3);
    assert_non_null(s);
    assert_int_equal(s[299], 0);
    free(s);
    assert_null(buffer_zalloc(SIZE_MAX / 2, 3));
    void *a = buffer_alloc(0);
    assert_non_null(a);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attribute_keywords_and_columns_are_unique),
        cmocka_unit_test(test_series_lookup_reads_attributes_and_facts),
        cmocka_unit_test(test_plan_merges_a_model_named_twice_for_one_series),
        cmocka_unit_test(test_error_text_is_one_line_and_returns_the_code),
        cmocka_unit_test(test_log_escapes_controls_and_non_ascii_so_no_line_is_forged),
        cmocka_unit_test(test_log_writes_an_event_and_its_ids_as_key_value_fields),
        cmocka_unit_test(test_log_json_lines_are_json_objects_with_the_same_fields),
        cmocka_unit_test(test_log_lines_to_the_journal_carry_their_priority_and_no_time_stamp),
        cmocka_unit_test(test_waiter_a_wake_before_the_wait_is_not_lost),
        cmocka_unit_test(test_waiter_many_wakes_coalesce_into_one),
        cmocka_unit_test(test_waiter_timeout_is_honoured),
        cmocka_unit_test(test_waiter_a_wake_reaches_every_waiting_thread),
        cmocka_unit_test(test_waiter_stop_wakes_every_thread_and_stays_set),
        cmocka_unit_test(test_large_buffers_are_advised_huge_pages_and_zeroed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
