/* cli_status.c — `ainode status` (a page of the studies in the store with
 * their jobs and sends, as a table or JSON), `ainode jobs` (a page of the
 * jobs), `ainode retry` (dead-lettered sends or a quarantined job back to
 * the queue) and
 * `ainode reload` (the running node re-reads its configuration). */
#include "service/cli.h"

#include "common/clock.h"
#include "config/config.h"
#include "service/listing_json.h"
#include "storage/storage.h"

#include <errno.h>
#include <signal.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int print_job_row(void *ud, const struct storage_job_row *j)
{
    int *count = ud;
    if (*count == 0)
        printf("\n%-6s  %-24s  %-14s  %8s  %s\n", "JOB", "MODEL", "STATE", "SECONDS",
               "ERROR OR REASON");
    double secs = j->started_ms && j->finished_ms ? (j->finished_ms - j->started_ms) / 1000.0
                  : j->started_ms                  ? (clock_now_ms() - j->started_ms) / 1000.0
                                                   : 0;
    printf("%-6lld  %-24s  %-14s  %8.1f  %s\n", (long long)j->id, j->model, j->state, secs,
           j->error ? j->error : "");
    (*count)++;
    return 0;
}

static int print_outbox_row(void *ud, const struct storage_outbox_item *it)
{
    int *count = ud;
    if (*count == 0)
        printf("\n%-6s  %-16s  %-4s  %-8s  %8s  %s\n", "ITEM", "DESTINATION", "KIND", "STATE",
               "ATTEMPTS", "ERROR");
    printf("%-6lld  %-16s  %-4s  %-8s  %8d  %s\n", (long long)it->id, it->destination, it->kind,
           it->state, it->attempts, it->error && strcmp(it->state, "sent") ? it->error : "");
    (*count)++;
    return 0;
}

int cli_retry(const struct config *cfg, int64_t id)
{
    struct storage *st = NULL;
    char err[512] = "";
    if (storage_open_admin(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    int n = 0;
    int rc = storage_outbox_retry(st, id, clock_now_ms(), &n);
    storage_close(st);
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot update the outbox in %s\n", cfg->node.data_dir);
        return 1;
    }
    if (id >= 0 && n == 0) {
        fprintf(stderr, "ainode: outbox item %lld is not a failed one\n", (long long)id);
        return 1;
    }
    printf("%d item%s queued again\n", n, n == 1 ? "" : "s");
    return 0;
}

int cli_retry_job(const struct config *cfg, int64_t id)
{
    struct storage *st = NULL;
    char err[512] = "";
    if (storage_open_admin(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    int rc = storage_job_retry(st, id);
    storage_close(st);
    if (rc == STORAGE_ENOTFOUND) {
        fprintf(stderr, "ainode: job %lld is not a quarantined one\n", (long long)id);
        return 1;
    }
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot update the jobs in %s\n", cfg->node.data_dir);
        return 1;
    }
    printf("job %lld queued again\n", (long long)id);
    return 0;
}

static int print_unmatched_row(void *ud, const char *study_uid, const char *series_uid,
                               const char *modality)
{
    int *count = ud;
    (void)study_uid;
    if (*count == 0)
        printf("\nseries no rule matched:\n");
    printf("  %-64s  %s\n", series_uid, modality);
    (*count)++;
    return 0;
}

static int print_study_row(void *ud, const struct storage_study *s)
{
    int *count = ud;
    char when[40];
    clock_format_time(s->last_received_ms, when, sizeof when);
    /* A held study shows as such: "held" while it waits for its refused
     * instances, "incomplete" once processed without them. */
    const char *state = !s->held                          ? s->state
                        : !strcmp(s->state, "receiving") ? "held"
                                                          : "incomplete";
    printf("%-6lld  %-64s  %-10s  %6lld  %9lld  %s%s%s\n", (long long)s->id, s->study_uid, state,
           (long long)s->series, (long long)s->instances, when, s->held ? "  " : "",
           s->held ? s->held : "");
    (*count)++;
    return 0;
}

int cli_list_filter(const struct cli_list_args *a, struct storage_filter *f)
{
    memset(f, 0, sizeof *f);
    f->state = a->state;
    f->study_uid = a->study;
    f->model = a->model;
    f->since_ms = a->since_ms;
    f->cursor = a->cursor;
    f->oldest_first = a->oldest_first;
    if (a->all && (a->limit || a->cursor)) {
        fprintf(stderr, "ainode: --all lists every row: it takes no --limit or --cursor\n");
        return CLI_EXIT_USAGE;
    }
    if (a->study && !storage_uid_valid(a->study)) {
        fprintf(stderr, "ainode: --study '%s' is not a Study Instance UID\n", a->study);
        return CLI_EXIT_USAGE;
    }
    f->limit = a->all ? STORAGE_LIST_ALL : 0;
    if (a->limit) {
        char *end = NULL;
        errno = 0;
        long n = strtol(a->limit, &end, 10);
        if (!*a->limit || *end || errno || n < 1 || n > STORAGE_LIST_MAX_LIMIT) {
            fprintf(stderr, "ainode: --limit '%s' is not a number of rows from 1 to %d\n",
                    a->limit, STORAGE_LIST_MAX_LIMIT);
            return CLI_EXIT_USAGE;
        }
        f->limit = (int)n;
    }
    return CLI_EXIT_OK;
}

/* Opens the store of CFG read-only into *ST; *ST stays NULL when the node
 * never ran (an empty store is not an error). Returns 0 or an exit code. */
static int open_listing(const struct config *cfg, struct storage **st)
{
    char err[512] = "";
    *st = NULL;
    int exists = storage_exists(cfg->node.data_dir, err, sizeof err);
    if (exists == 0)
        return CLI_EXIT_OK;
    if (exists < 0 || storage_open_readonly(cfg->node.data_dir, st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* The exit code of a listing that failed with RC and reason ERR: a filter
 * that cannot be used is the caller's mistake (usage). */
static int listing_failed(const struct config *cfg, int rc, const char *err)
{
    if (rc == STORAGE_EINVAL) {
        fprintf(stderr, "ainode: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    fprintf(stderr, "ainode: cannot read the database in %s: %s\n", cfg->node.data_dir, err);
    return CLI_EXIT_ERROR;
}

static int print_json(json_t *doc)
{
    int rc = json_dumpf(doc, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(doc);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* The studies of a page, for the table: their UIDs, to list what belongs
 * to them. */
struct page_studies {
    char **uids;
    size_t n, cap;
    int failed;
};

static int print_study_page_row(void *ud, const struct storage_study *s)
{
    struct page_studies *p = ud;
    int count = (int)p->n;
    print_study_row(&count, s);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **u = realloc(p->uids, cap * sizeof *u);
        if (!u) {
            p->failed = 1;
            return 1;
        }
        p->uids = u;
        p->cap = cap;
    }
    if (!(p->uids[p->n] = strdup(s->study_uid))) {
        p->failed = 1;
        return 1;
    }
    p->n++;
    return 0;
}

int cli_status(const struct config *cfg, const struct storage_filter *f, int json)
{
    struct storage *st = NULL;
    char err[512] = "";
    int rc = open_listing(cfg, &st);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (json) {
        json_t *doc = NULL;
        int src = listing_json_status(st, f, &doc, err, sizeof err);
        storage_close(st);
        return src == STORAGE_OK ? print_json(doc) : listing_failed(cfg, src, err);
    }
    printf("%-6s  %-64s  %-10s  %6s  %9s  %s\n", "STUDY", "STUDY INSTANCE UID", "STATE",
           "SERIES", "INSTANCES", "LAST RECEIVED (UTC)");
    struct page_studies page = {0};
    char next[STORAGE_CURSOR_LEN] = "";
    int src = st ? storage_list_studies(st, f, print_study_page_row, &page, next, err,
                                        sizeof err)
                 : STORAGE_OK;
    if (page.failed) {
        src = STORAGE_ENOMEM;
        snprintf(err, sizeof err, "out of memory");
    }
    if (src == STORAGE_OK) {
        printf("%zu stud%s\n", page.n, page.n == 1 ? "y" : "ies");
        if (*next)
            printf("more: the next page with --cursor %s\n", next);
        int oldest = f && f->oldest_first, jobs = 0, items = 0, unmatched = 0;
        const char *const *uids = (const char *const *)page.uids;
        if (st && (storage_foreach_job_of(st, uids, page.n, oldest, print_job_row, &jobs) !=
                       STORAGE_OK ||
                   storage_foreach_outbox_of(st, uids, page.n, oldest, print_outbox_row,
                                             &items) != STORAGE_OK ||
                   storage_foreach_unmatched_of(st, uids, page.n, print_unmatched_row,
                                                &unmatched) != STORAGE_OK)) {
            src = STORAGE_EIO;
            snprintf(err, sizeof err, "%s", storage_strerror(src));
        }
    }
    for (size_t i = 0; i < page.n; i++)
        free(page.uids[i]);
    free(page.uids);
    storage_close(st);
    return src == STORAGE_OK ? CLI_EXIT_OK : listing_failed(cfg, src, err);
}

static int print_jobs_row(void *ud, const struct storage_job_row *j)
{
    int *count = ud;
    if (*count == 0)
        printf("%-6s  %-24s  %-24s  %-14s  %8s  %-64s  %s\n", "JOB", "CREATED (UTC)", "MODEL",
               "STATE", "SECONDS", "STUDY INSTANCE UID", "ERROR OR REASON");
    double secs = j->started_ms && j->finished_ms ? (j->finished_ms - j->started_ms) / 1000.0
                  : j->started_ms                  ? (clock_now_ms() - j->started_ms) / 1000.0
                                                   : 0;
    char when[40];
    clock_format_time(j->created_ms, when, sizeof when);
    printf("%-6lld  %-24s  %-24s  %-14s  %8.1f  %-64s  %s\n", (long long)j->id, when, j->model,
           j->state, secs, j->study_uid, j->error ? j->error : "");
    (*count)++;
    return 0;
}

int cli_jobs(const struct config *cfg, const struct storage_filter *f, int json)
{
    struct storage *st = NULL;
    char err[512] = "";
    int rc = open_listing(cfg, &st);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (json) {
        json_t *doc = NULL;
        int src = listing_json_jobs(st, f, &doc, err, sizeof err);
        storage_close(st);
        return src == STORAGE_OK ? print_json(doc) : listing_failed(cfg, src, err);
    }
    int count = 0;
    char next[STORAGE_CURSOR_LEN] = "";
    int src = st ? storage_list_jobs(st, f, print_jobs_row, &count, next, err, sizeof err)
                 : STORAGE_OK;
    storage_close(st);
    if (src != STORAGE_OK)
        return listing_failed(cfg, src, err);
    printf("%d job%s\n", count, count == 1 ? "" : "s");
    if (*next)
        printf("more: the next page with --cursor %s\n", next);
    return CLI_EXIT_OK;
}
