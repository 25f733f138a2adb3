/* Paged listings of studies and jobs (storage/listing.c), and planning a
 * stored study again (storage_replan). Rows are made with SQL on the
 * store's own connection: what is tested is how they are listed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "storage/storage.h"
#include "storage/internal.h" /* the store's connection, to make rows and read plans */

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_STUDIES 250

struct fixture {
    char dir[256];
    struct storage *st;
};

static void exec(struct storage *st, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* Study i (1..N_STUDIES) has row id i, UID 1.2.3.i, was first received at
 * 1000 + i / 2 (pairs share a time: the row id breaks the tie) and is
 * receiving when i % 3 == 0, else complete. Job i of study (i + 1) / 2 is
 * of model "a" when i is odd, else "b", created at 5000 + i / 3, done when
 * i % 4 == 0, else queued. */
static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ainode-test-listing-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char err[256];
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
             " INSERT INTO studies(rowid, study_uid, state, first_received, last_received)"
             " SELECT i, '1.2.3.' || i, CASE WHEN i %% 3 = 0 THEN 'receiving' ELSE 'complete'"
             " END, 1000 + i / 2, 1000 + i / 2 FROM n;"
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
             " INSERT INTO jobs(id, study_uid, series_uid, series, model, state, created_at)"
             " SELECT i, '1.2.3.' || ((i + 1) / 2), '1.2.3.' || ((i + 1) / 2) || '.1',"
             " json_array('1.2.3.' || ((i + 1) / 2) || '.1'),"
             " CASE WHEN i %% 2 = 1 THEN 'a' ELSE 'b' END,"
             " CASE WHEN i %% 4 = 0 THEN 'done' ELSE 'queued' END, 5000 + i / 3 FROM n;",
             N_STUDIES, 2 * N_STUDIES);
    exec(f->st, sql);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    storage_close(f->st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Row ids listed, in order. */
struct ids {
    int64_t v[4 * N_STUDIES];
    size_t n;
};

static int add_study(void *ud, const struct storage_study *s)
{
    struct ids *l = ud;
    assert_true(l->n < sizeof l->v / sizeof l->v[0]);
    l->v[l->n++] = s->id;
    return 0;
}

static int add_job(void *ud, const struct storage_job_row *j)
{
    struct ids *l = ud;
    assert_true(l->n < sizeof l->v / sizeof l->v[0]);
    l->v[l->n++] = j->id;
    return 0;
}

/* Every page of F (LIMIT rows each) into *ALL; returns how many pages. */
static int all_pages(struct storage *st, int jobs, struct storage_filter f, struct ids *all)
{
    char cursor[STORAGE_CURSOR_LEN] = "", err[256];
    int pages = 0;
    all->n = 0;
    do {
        f.cursor = cursor;
        size_t before = all->n;
        char next[STORAGE_CURSOR_LEN];
        int rc = jobs ? storage_list_jobs(st, &f, add_job, all, next, err, sizeof err)
                      : storage_list_studies(st, &f, add_study, all, next, err, sizeof err);
        assert_int_equal(rc, STORAGE_OK);
        pages++;
        /* A page is full unless it is the last. */
        if (*next)
            assert_int_equal(all->n - before, f.limit);
        snprintf(cursor, sizeof cursor, "%s", next);
    } while (*cursor);
    return pages;
}

static void test_paging_lists_every_study_once_newest_first(void **state)
{
    struct fixture *f = *state;
    struct ids all;
    struct storage_filter filter = {.limit = 7};
    assert_int_equal(all_pages(f->st, 0, filter, &all), (N_STUDIES + 6) / 7);
    assert_int_equal(all.n, N_STUDIES);
    for (size_t k = 0; k < all.n; k++) /* newest first; ties by row id, highest first */
        assert_int_equal(all.v[k], N_STUDIES - (int64_t)k);

    filter.oldest_first = 1;
    all_pages(f->st, 0, filter, &all);
    assert_int_equal(all.n, N_STUDIES);
    for (size_t k = 0; k < all.n; k++)
        assert_int_equal(all.v[k], (int64_t)k + 1);

    /* A page exactly as long as what is left: no cursor to an empty page. */
    filter = (struct storage_filter){.limit = N_STUDIES};
    assert_int_equal(all_pages(f->st, 0, filter, &all), 1);
    assert_int_equal(all.n, N_STUDIES);
}

static void test_paging_lists_every_job_once_newest_first(void **state)
{
    struct fixture *f = *state;
    struct ids all;
    struct storage_filter filter = {.limit = 11};
    all_pages(f->st, 1, filter, &all);
    assert_int_equal(all.n, 2 * N_STUDIES);
    for (size_t k = 0; k < all.n; k++)
        assert_int_equal(all.v[k], 2 * N_STUDIES - (int64_t)k);
    filter.limit = STORAGE_LIST_ALL;
    assert_int_equal(all_pages(f->st, 1, filter, &all), 1);
    assert_int_equal(all.n, 2 * N_STUDIES);
}

/* Studies stored while a client pages come before its first page: the
 * pages it has yet to read are those it would have read without them. */
static void test_studies_stored_between_pages_shift_no_later_page(void **state)
{
    struct fixture *f = *state;
    struct ids all = {0};
    char next[STORAGE_CURSOR_LEN], err[256];
    struct storage_filter filter = {.limit = 10};
    assert_int_equal(storage_list_studies(f->st, &filter, add_study, &all, next, err,
                                          sizeof err),
                     STORAGE_OK);
    /* Newer ones, and one received at the very time of the page's last
     * study (a later row id: it sorts before that study). */
    exec(f->st, "INSERT INTO studies(study_uid, first_received, last_received)"
                " VALUES('9.1', 99999, 99999), ('9.2', 99999, 99999);"
                "INSERT INTO studies(study_uid, first_received, last_received)"
                " SELECT '9.3', first_received, first_received FROM studies WHERE rowid=241;");
    char cursor[STORAGE_CURSOR_LEN];
    do {
        snprintf(cursor, sizeof cursor, "%s", next);
        filter.cursor = cursor;
        assert_int_equal(storage_list_studies(f->st, &filter, add_study, &all, next, err,
                                              sizeof err),
                         STORAGE_OK);
    } while (*next);
    assert_int_equal(all.n, N_STUDIES);
    for (size_t k = 0; k < all.n; k++)
        assert_int_equal(all.v[k], N_STUDIES - (int64_t)k);
}

/* The rows each filter keeps, in order, against what the fixture made. */
static void test_filters_keep_what_they_name(void **state)
{
    struct fixture *f = *state;
    struct ids all;
    struct storage_filter filter = {.limit = 9, .state = "receiving"};
    all_pages(f->st, 0, filter, &all);
    assert_int_equal(all.n, N_STUDIES / 3);
    for (size_t k = 0; k < all.n; k++)
        assert_int_equal(all.v[k] % 3, 0);

    filter = (struct storage_filter){.limit = 9, .since_ms = 1100}; /* i / 2 >= 100 */
    all_pages(f->st, 0, filter, &all);
    assert_int_equal(all.n, N_STUDIES - 199);
    assert_int_equal(all.v[all.n - 1], 200);

    filter = (struct storage_filter){.study_uid = "1.2.3.77"};
    all_pages(f->st, 0, filter, &all);
    assert_int_equal(all.n, 1);
    assert_int_equal(all.v[0], 77);

    /* Studies with a job of model "b": each has one (jobs 2i). */
    exec(f->st, "DELETE FROM jobs WHERE model='b' AND study_uid IN ('1.2.3.5', '1.2.3.6')");
    filter = (struct storage_filter){.limit = 13, .model = "b"};
    all_pages(f->st, 0, filter, &all);
    assert_int_equal(all.n, N_STUDIES - 2);

    filter = (struct storage_filter){.limit = 13, .model = "a", .state = "done"};
    all_pages(f->st, 1, filter, &all);
    assert_int_equal(all.n, 0); /* a's jobs are odd, done ones multiples of 4 */

    filter = (struct storage_filter){.limit = 13, .model = "b", .state = "done"};
    all_pages(f->st, 1, filter, &all);
    assert_int_equal(all.n, N_STUDIES / 2 - 1); /* job 12 went with study 6's */
    for (size_t k = 0; k < all.n; k++)
        assert_int_equal(all.v[k] % 4, 0);

    filter = (struct storage_filter){.study_uid = "1.2.3.10"};
    all_pages(f->st, 1, filter, &all);
    assert_int_equal(all.n, 2);
    assert_int_equal(all.v[0], 20);
    assert_int_equal(all.v[1], 19);

    filter = (struct storage_filter){.limit = 50, .since_ms = 5100}; /* i / 3 >= 100 */
    all_pages(f->st, 1, filter, &all);
    assert_int_equal(all.n, 2 * N_STUDIES - 299);
}

static void test_a_filter_that_cannot_be_used_is_refused(void **state)
{
    struct fixture *f = *state;
    struct ids all = {0};
    char next[STORAGE_CURSOR_LEN], err[256];
    char cursor[STORAGE_CURSOR_LEN];
    struct storage_filter filter = {.limit = 5};
    assert_int_equal(storage_list_studies(f->st, &filter, add_study, &all, cursor, err,
                                          sizeof err),
                     STORAGE_OK);
    assert_true(*cursor);
    const struct {
        struct storage_filter filter;
        int jobs;
        const char *says;
    } bad[] = {
        {{.state = "done"}, 0, "unknown state 'done'"},
        {{.state = "complete"}, 1, "unknown state 'complete'"},
        {{.limit = STORAGE_LIST_MAX_LIMIT + 1}, 0, "1 to"},
        {{.limit = -5}, 1, "1 to"},
        {{.cursor = "garbage"}, 0, "not a cursor"},
        {{.cursor = cursor}, 1, "not a cursor"},                    /* of studies, for jobs */
        {{.cursor = cursor, .oldest_first = 1}, 0, "not a cursor"}, /* of the other order */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = bad[i].jobs ? storage_list_jobs(f->st, &bad[i].filter, add_job, &all, next,
                                                 err, sizeof err)
                             : storage_list_studies(f->st, &bad[i].filter, add_study, &all,
                                                    next, err, sizeof err);
        assert_int_equal(rc, STORAGE_EINVAL);
        if (!strstr(err, bad[i].says))
            fail_msg("case %zu: '%s' does not say '%s'", i, err, bad[i].says);
    }
}

/* The statements a listing ran, captured from the store's connection. */
struct captured {
    char sql[8][2048];
    int n;
};

static int capture(unsigned type, void *ud, void *stmt, void *x)
{
    struct captured *c = ud;
    (void)type;
    (void)x;
    if (c->n < 8)
        snprintf(c->sql[c->n++], sizeof c->sql[0], "%s", sqlite3_sql(stmt));
    return 0;
}

/* What EXPLAIN QUERY PLAN says of SQL, one detail per line. */
static void query_plan(struct storage *st, const char *sql, char *out, size_t len)
{
    char explain[2100];
    snprintf(explain, sizeof explain, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(st->db, explain, -1, &s, NULL), SQLITE_OK);
    out[0] = '\0';
    while (sqlite3_step(s) == SQLITE_ROW)
        snprintf(out + strlen(out), len - strlen(out), "%s\n",
                 (const char *)sqlite3_column_text(s, 3));
    sqlite3_finalize(s);
}

/* A page of 100 out of 100,000 is fast only if it is read in order from
 * an index: no table is scanned whole, no sort of every row is made. */
static void test_every_page_is_read_through_an_index(void **state)
{
    struct fixture *f = *state;
    char cursor_s[STORAGE_CURSOR_LEN], cursor_j[STORAGE_CURSOR_LEN], err[256];
    struct ids all = {0};
    struct storage_filter first = {.limit = 3};
    assert_int_equal(storage_list_studies(f->st, &first, add_study, &all, cursor_s, err,
                                          sizeof err),
                     STORAGE_OK);
    assert_int_equal(storage_list_jobs(f->st, &first, add_job, &all, cursor_j, err, sizeof err),
                     STORAGE_OK);
    const struct {
        int jobs;
        struct storage_filter filter;
        const char *index;        /* the index the rows are read through */
    } cases[] = {
        {0, {0}, "USING INDEX studies_recent"},
        {0, {.cursor = cursor_s}, "USING INDEX studies_recent (first_received<?)"},
        {0, {.since_ms = 1}, "USING INDEX studies_recent (first_received>?)"},
        {0, {.state = "complete"}, "USING INDEX studies_state_recent (state=?)"},
        {0, {.state = "complete", .cursor = cursor_s},
         "USING INDEX studies_state_recent (state=? AND first_received<?)"},
        {0, {.model = "a"}, "USING INDEX jobs_study (study_uid=?)"},
        {0, {.study_uid = "1.2.3.4"}, "USING INDEX sqlite_autoindex_studies_1 (study_uid=?)"},
        {1, {0}, "USING INDEX jobs_recent"},
        {1, {.cursor = cursor_j}, "USING INDEX jobs_recent (created_at<?)"},
        {1, {.state = "queued"}, "USING INDEX jobs_state_recent (state=?)"},
        {1, {.model = "a"}, "USING INDEX jobs_model_recent (model=?)"},
        {1, {.model = "a", .cursor = cursor_j},
         "USING INDEX jobs_model_recent (model=? AND created_at<?)"},
        {1, {.study_uid = "1.2.3.4"}, "USING INDEX jobs_study (study_uid=?)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct captured c = {0};
        sqlite3_trace_v2(f->st->db, SQLITE_TRACE_STMT, capture, &c);
        all.n = 0;
        struct storage_filter filter = cases[i].filter;
        if (!filter.limit)
            filter.limit = 100;
        int rc = cases[i].jobs
                     ? storage_list_jobs(f->st, &filter, add_job, &all, NULL, err, sizeof err)
                     : storage_list_studies(f->st, &filter, add_study, &all, NULL, err,
                                            sizeof err);
        sqlite3_trace_v2(f->st->db, 0, NULL, NULL);
        assert_int_equal(rc, STORAGE_OK);
        assert_int_equal(c.n, 1);
        char plan[4096];
        query_plan(f->st, c.sql[0], plan, sizeof plan);
        if (!strstr(plan, cases[i].index))
            fail_msg("case %zu reads no rows %s:\n%s", i, cases[i].index, plan);
        /* Only a study's own jobs may be sorted: they are few. */
        if (strstr(plan, "TEMP B-TREE") && !filter.study_uid)
            fail_msg("case %zu sorts every row:\n%s", i, plan);
        for (const char *line = plan; *line; line = strchr(line, '\n') + 1)
            if (!strncmp(line, "SCAN ", 5) && !strstr(line, "INDEX") &&
                strncmp(line, "SCAN n", 6) != 0)
                fail_msg("case %zu scans a whole table:\n%s", i, plan);
    }
}

static int count_rows(struct storage *st, const char *sql)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(st->db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* A store written before the listings' indexes gets them when the node
 * opens it. */
static void test_an_older_store_gets_the_indexes(void **state)
{
    struct fixture *f = *state;
    const char *count = "SELECT count(*) FROM sqlite_master WHERE type='index' AND name IN"
                        " ('studies_recent', 'studies_state_recent', 'jobs_recent',"
                        "  'jobs_state_recent', 'jobs_model_recent', 'outbox_study')";
    assert_int_equal(count_rows(f->st, count), 6);
    exec(f->st, "DROP INDEX studies_recent; DROP INDEX studies_state_recent;"
                "DROP INDEX jobs_recent; DROP INDEX jobs_state_recent;"
                "DROP INDEX jobs_model_recent; DROP INDEX outbox_study;"
                "CREATE INDEX studies_state ON studies(state); PRAGMA user_version=8;");
    storage_close(f->st);
    char err[256];
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_int_equal(count_rows(f->st, count), 6);
    assert_int_equal(count_rows(f->st, "SELECT count(*) FROM sqlite_master WHERE"
                                       " name='studies_state'"),
                     0);
    assert_int_equal(count_rows(f->st, "PRAGMA user_version"), storage_schema_version());
}

static void test_replan_queues_new_jobs_and_not_one_already_waiting(void **state)
{
    struct fixture *f = *state;
    char *dest[] = {"pacs"};
    struct plan_job jobs[] = {
        {.series_uid = "1.2.3.7.1", .model = "a", .destinations = dest, .n_destinations = 1},
        {.series_uid = "1.2.3.7.1", .model = "c", .priority = PLAN_PRIORITY_STAT},
        {.series_uid = "1.2.3.7.2", .model = "c", .not_applicable = "not for this series"},
    };
    struct plan plan = {.jobs = jobs, .n_jobs = 3};
    int queued = -1, skipped = -1;
    int before = count_rows(f->st, "SELECT count(*) FROM jobs");
    /* Study 7 (complete) has queued job 13 of model a on series 1.2.3.7.1. */
    assert_int_equal(storage_replan(f->st, "1.2.3.7", &plan, 9000, &queued, &skipped),
                     STORAGE_OK);
    assert_int_equal(queued, 1);
    assert_int_equal(skipped, 1);
    assert_int_equal(count_rows(f->st, "SELECT count(*) FROM jobs"), before + 2);
    assert_int_equal(count_rows(f->st, "SELECT count(*) FROM jobs WHERE model='c' AND"
                                       " state='queued' AND priority=0 AND created_at=9000"),
                     1);
    assert_int_equal(count_rows(f->st, "SELECT count(*) FROM jobs WHERE model='c' AND"
                                       " state='not_applicable' AND"
                                       " error='not for this series'"),
                     1);
    /* Once it is done, the model runs again on it. */
    exec(f->st, "UPDATE jobs SET state='done' WHERE study_uid='1.2.3.7'");
    assert_int_equal(storage_replan(f->st, "1.2.3.7", &plan, 9001, &queued, &skipped),
                     STORAGE_OK);
    assert_int_equal(queued, 2);
    assert_int_equal(skipped, 0);
    assert_int_equal(count_rows(f->st, "SELECT count(*) FROM job_destinations d JOIN jobs j"
                                       " ON j.id=d.job_id WHERE j.created_at=9001 AND"
                                       " d.destination='pacs'"),
                     1);

    before = count_rows(f->st, "SELECT count(*) FROM jobs");
    /* Study 9 is still receiving: it is planned when it completes. */
    assert_int_equal(storage_replan(f->st, "1.2.3.9", &plan, 9002, &queued, &skipped),
                     STORAGE_ECONFLICT);
    assert_int_equal(storage_replan(f->st, "1.2.3.999", &plan, 9002, &queued, &skipped),
                     STORAGE_ENOTFOUND);
    assert_int_equal(queued, 0);
    assert_int_equal(count_rows(f->st, "SELECT count(*) FROM jobs"), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_paging_lists_every_study_once_newest_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_paging_lists_every_job_once_newest_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_studies_stored_between_pages_shift_no_later_page,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters_keep_what_they_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_filter_that_cannot_be_used_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_every_page_is_read_through_an_index, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_older_store_gets_the_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replan_queues_new_jobs_and_not_one_already_waiting,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
