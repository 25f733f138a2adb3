/*
 * counts.c — how many studies, jobs and outbox items are in each state:
 * what the node's metrics and status page read at each scrape.
 */
#include "storage/internal.h"

struct each_count {
    storage_count_fn fn;
    void *ud;
    const char *table;
};

static int count_fn(void *ud, sqlite3_stmt *row)
{
    struct each_count *e = ud;
    struct storage_count c = {
        .table = e->table,
        .state = db_text(row, 0),
        .key = db_text(row, 1),
        .n = sqlite3_column_int64(row, 2),
        .oldest_ms = sqlite3_column_int64(row, 3),
    };
    return e->fn(e->ud, &c) ? 1 : 0;
}

int storage_counts(struct storage *st, storage_count_fn fn, void *ud)
{
    /* One read transaction: the three tables as of one moment. Under WAL
     * it takes no lock a writer waits for. */
    static const struct {
        const char *table, *sql;
    } q[] = {
        {"studies", "SELECT CASE WHEN held IS NOT NULL AND state='receiving' THEN 'held'"
                    "  ELSE state END, NULL, count(*), min(first_received)"
                    " FROM studies GROUP BY 1 ORDER BY 1"},
        {"jobs", "SELECT state, model, count(*), min(created_at) FROM jobs"
                 " GROUP BY state, model ORDER BY state, model"},
        {"outbox", "SELECT state, destination, count(*), min(created_at) FROM outbox"
                   " GROUP BY state, destination ORDER BY state, destination"},
    };
    pthread_mutex_lock(&st->lock);
    int rc = db_exec(st, "BEGIN", NULL, 0);
    for (size_t i = 0; rc == STORAGE_OK && i < sizeof q / sizeof q[0]; i++) {
        struct each_count e = {fn, ud, q[i].table};
        rc = db_run(st, q[i].sql, count_fn, &e, NULL);
    }
    if (rc == STORAGE_OK)
        rc = db_commit(st);
    else
        db_rollback(st);
    pthread_mutex_unlock(&st->lock);
    return rc;
}
