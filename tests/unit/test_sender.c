/* Unit tests of the sender: outbox items of a real store delivered to real
 * peers on 127.0.0.1 (DCMTK storescp, rawscu.py's SCP), or kept for later,
 * or dead-lettered, as the peer answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "service/sender.h"
#include "service_fixture.h"

#include "common/clock.h"
#include "config/config.h"
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SLICES 3
#define RETRY_INITIAL_S 30

struct fixture {
    char dir[256], data[512], received[512];
    char **paths;
    size_t n;
    struct storage *st;
    struct config *cfg;
    int port;
    pid_t peer;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    fx_tempdir("sender", f->dir, sizeof f->dir);
    char series[512], err[512] = "", study_uid[65], series_uid[65];
    snprintf(series, sizeof series, "%s/series", f->dir);
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    snprintf(f->received, sizeof f->received, "%s/received", f->dir);
    assert_int_equal(mkdir(f->data, 0755), 0);
    assert_int_equal(mkdir(f->received, 0755), 0);
    fx_make_series(series, SLICES, 16, 16, &f->paths, &f->n);
    assert_int_equal(storage_open(f->data, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    int64_t when = clock_now_ms() - 60000;
    fx_store_series(f->st, f->paths, f->n, when, study_uid, series_uid);
    assert_int_equal(fx_queue_forward(f->st, study_uid, series_uid, when, "pacs"), SLICES);
    f->port = fx_free_port();
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "node:\n  ae_title: AINODE\n  port: 11112\n  data_dir: %s\n"
             "  network_timeout_seconds: 5\n"
             "destinations:\n  pacs:\n    ae_title: STORESCP\n    host: 127.0.0.1\n"
             "    port: %d\n    max_attempts: 3\n    retry_initial_seconds: %d\n",
             f->data, f->port, RETRY_INITIAL_S);
    f->cfg = fx_load_config(f->dir, yaml);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    fx_stop(f->peer);
    storage_close(f->st);
    config_unref(f->cfg);
    fx_free_paths(f->paths, f->n);
    fx_rmtree(f->dir);
    free(f);
    return 0;
}

/* Runs a sender until every item is in STATE with ATTEMPTS attempts (at
 * most 30 s); ITEMS gets them. */
static void send_until(struct fixture *f, const char *state, int attempts,
                       struct fx_item items[SLICES])
{
    struct sender *s = NULL;
    char err[256] = "";
    assert_int_equal(sender_start(f->cfg, f->st, &s, err, sizeof err), 0);
    sender_wake(s);
    int done = 0;
    for (int i = 0; i < 600 && !done; i++) {
        assert_int_equal(fx_outbox(f->st, items, SLICES), SLICES);
        done = 1;
        for (int k = 0; k < SLICES; k++)
            done &= !strcmp(items[k].state, state) && items[k].attempts == attempts;
        if (!done) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    sender_stop(s);
    if (!done)
        fail_msg("the items are not %s after %d attempt(s): item 1 is %s after %d (%s)", state,
                 attempts, items[0].state, items[0].attempts, items[0].error);
}

static void test_items_reach_a_storescp(void **state)
{
    struct fixture *f = *state;
    char port[16], log[600];
    snprintf(port, sizeof port, "%d", f->port);
    snprintf(log, sizeof log, "%s/storescp.log", f->dir);
    char *argv[] = {"storescp", "-od", f->received, "-aet", "STORESCP", port, NULL};
    f->peer = fx_spawn_listening(argv, f->port, log);
    struct fx_item items[SLICES];
    send_until(f, "sent", 1, items);
    fx_stop(f->peer);
    f->peer = 0;
    assert_int_equal(fx_count_files(f->received), SLICES);
}

static void test_a_destination_not_listening_is_tried_again_later(void **state)
{
    struct fixture *f = *state;
    int64_t before = clock_now_ms();
    struct fx_item items[SLICES];
    send_until(f, "pending", 1, items);
    for (int k = 0; k < SLICES; k++) {
        /* The first wait is retry_initial_seconds, +-20 %. */
        assert_true(items[k].next_attempt_ms >= before + RETRY_INITIAL_S * 800);
        assert_true(items[k].error[0] != '\0');
    }
}

/* 1 when TEXT holds WORDS (lower case), in any case. */
static int says(const char *text, const char *words)
{
    char lower[512];
    size_t i = 0;
    for (; text[i] && i + 1 < sizeof lower; i++)
        lower[i] = (char)tolower((unsigned char)text[i]);
    lower[i] = '\0';
    return strstr(lower, words) != NULL;
}

/* The destination: rawscu.py's SCP with the option ARG VALUE. */
static void start_rawscu(struct fixture *f, const char *arg, const char *value)
{
    const char *data = getenv("AINODE_TEST_DATA");
    assert_non_null(data);
    char script[4096], port[16], log[600];
    snprintf(script, sizeof script, "%s/../integration/rawscu.py", data);
    snprintf(port, sizeof port, "%d", f->port);
    snprintf(log, sizeof log, "%s/rawscu.log", f->dir);
    char *argv[] = {"/usr/bin/python3", "-B", script, "scp", port, (char *)arg, (char *)value,
                    NULL};
    f->peer = fx_spawn_listening(argv, f->port, log);
}

/* A peer that refuses for good: rawscu.py's SCP with ARG VALUE. */
static void refused_for_good(struct fixture *f, const char *arg, const char *value,
                             const char *reason)
{
    start_rawscu(f, arg, value);
    struct fx_item items[SLICES];
    send_until(f, "failed", 1, items);
    for (int k = 0; k < SLICES; k++)
        if (!says(items[k].error, reason))
            fail_msg("item %d: '%s' does not say '%s'", k, items[k].error, reason);
}

static void test_a_failure_status_dead_letters_at_once(void **state)
{
    refused_for_good(*state, "--status", "0xA900", "0xa900");
}

static void test_a_permanent_association_rejection_dead_letters_at_once(void **state)
{
    refused_for_good(*state, "--reject", "1,1,3", "rejected permanently");
}

/* The audit rows of the sends, as "kind/destination/peer/outcome/attempts". */
struct audit_list {
    char rows[SLICES * 2][160];
    char sop[SLICES * 2][65];
    char error[SLICES * 2][256];
    int n;
};

static int collect_audit(void *ud, const struct storage_audit_result *r)
{
    struct audit_list *l = ud;
    if (l->n == SLICES * 2)
        return 1;
    snprintf(l->rows[l->n], sizeof l->rows[l->n], "%s/%s/%s/%s/%d", r->kind, r->destination,
             r->peer ? r->peer : "-", r->outcome, r->attempts);
    snprintf(l->sop[l->n], sizeof l->sop[l->n], "%s",
             r->sop_instance_uid ? r->sop_instance_uid : "");
    snprintf(l->error[l->n], sizeof l->error[l->n], "%s", r->error ? r->error : "");
    l->n++;
    return 0;
}

/* Every warning status (0001, Bxxx) means the peer kept the instance: the
 * items are sent, once, and their audit rows name the status. */
static void test_a_warning_status_completes_the_item_and_is_audited(void **state)
{
    struct fixture *f = *state;
    start_rawscu(f, "--status", "0xB00A");
    struct fx_item items[SLICES];
    send_until(f, "sent", 1, items);
    struct audit_list l;
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_audit_foreach_result(f->st, 0, collect_audit, &l), STORAGE_OK);
    assert_int_equal(l.n, SLICES);
    char want[160];
    snprintf(want, sizeof want, "forward/pacs/STORESCP@127.0.0.1:%d/sent/1", f->port);
    for (int k = 0; k < SLICES; k++) {
        assert_string_equal(l.rows[k], want);
        assert_string_equal(l.error[k], "kept with warning status 0xb00a");
    }
}

static void test_every_send_attempt_is_in_the_audit_trail(void **state)
{
    struct fixture *f = *state;
    char want[160];
    struct fx_item items[SLICES];
    struct audit_list l;
    /* Nobody listening: each item failed once, to be tried again. */
    send_until(f, "pending", 1, items);
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_audit_foreach_result(f->st, 0, collect_audit, &l), STORAGE_OK);
    assert_int_equal(l.n, SLICES);
    snprintf(want, sizeof want, "forward/pacs/STORESCP@127.0.0.1:%d/transient/1", f->port);
    for (int k = 0; k < SLICES; k++) {
        assert_string_equal(l.rows[k], want);
        assert_true(l.error[k][0] != '\0');
        assert_true(l.sop[k][0] != '\0');
    }

    /* Made due at once (by recording a second failed attempt, which is no
     * send and leaves no audit row), then sent to a storescp: the third. */
    for (int k = 0; k < SLICES; k++)
        assert_int_equal(storage_outbox_record(f->st, items[k].id, clock_now_ms(), 0, "again",
                                               clock_now_ms()),
                         STORAGE_OK);
    char port[16], log[600];
    snprintf(port, sizeof port, "%d", f->port);
    snprintf(log, sizeof log, "%s/storescp.log", f->dir);
    char *argv[] = {"storescp", "-od", f->received, "-aet", "STORESCP", port, NULL};
    f->peer = fx_spawn_listening(argv, f->port, log);
    send_until(f, "sent", 3, items);
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_audit_foreach_result(f->st, 0, collect_audit, &l), STORAGE_OK);
    assert_int_equal(l.n, 2 * SLICES);
    snprintf(want, sizeof want, "forward/pacs/STORESCP@127.0.0.1:%d/sent/3", f->port);
    for (int k = SLICES; k < 2 * SLICES; k++) {
        assert_string_equal(l.rows[k], want);
        assert_string_equal(l.error[k], "");
        assert_string_equal(l.sop[k], l.sop[k - SLICES]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_items_reach_a_storescp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_destination_not_listening_is_tried_again_later,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failure_status_dead_letters_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_warning_status_completes_the_item_and_is_audited,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_permanent_association_rejection_dead_letters_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_send_attempt_is_in_the_audit_trail, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
