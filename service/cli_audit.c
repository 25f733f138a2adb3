/* cli_audit.c — `ainode audit`: the audit trail of the store, as tables
 * or JSON, from a time on. */
#include "service/cli_audit.h"

#include "common/clock.h"
#include "config/config.h"
#include "storage/storage.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): no timegm, no time zone. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Reads exactly N digits at *P into *V and moves *P past them. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

int cli_audit_parse_since(const char *when, int64_t now_ms, int64_t *out)
{
    if (!when || !*when)
        return -1;
    /* A span back from now: 30m, 24h, 7d. */
    size_t len = strlen(when);
    char unit = when[len - 1];
    if (len >= 2 && len <= 7 && (unit == 'm' || unit == 'h' || unit == 'd')) {
        int64_t n = 0;
        for (size_t i = 0; i + 1 < len; i++) {
            if (!isdigit((unsigned char)when[i]))
                return -1;
            n = n * 10 + (when[i] - '0');
        }
        int64_t unit_ms = unit == 'm' ? 60000 : unit == 'h' ? 3600000 : 86400000;
        *out = now_ms - n * unit_ms;
        return 0;
    }
    /* YYYY-MM-DD[THH:MM[:SS]][Z], in UTC as the store and status have it. */
    const char *p = when;
    int y, mo, d, h = 0, mi = 0, s = 0;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -1;
    if (*p == 'T' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
            return -1;
        if (*p == ':' && (p++, digits(&p, 2, &s)))
            return -1;
    }
    if (*p == 'Z')
        p++;
    if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
        mi > 59 || s > 59)
        return -1;
    *out = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)s * 1000;
    return 0;
}

/* ---- JSON ---- */

static json_t *time_json(int64_t ms)
{
    char when[40];
    clock_format_time(ms, when, sizeof when);
    return json_string(when);
}

static json_t *text_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static int add_assoc_json(void *ud, const struct storage_audit_association *a)
{
    json_t *o = json_pack("{s:o, s:o, s:s, s:s, s:s, s:o, s:i, s:i, s:s}", "started",
                          time_json(a->started_ms), "ended", time_json(a->ended_ms),
                          "calling_ae", a->calling_ae, "called_ae", a->called_ae, "address",
                          a->address, "tls_peer", text_or_null(a->tls_peer), "stored", a->stored,
                          "refused", a->refused, "outcome", a->outcome);
    return !o || json_array_append_new(ud, o) != 0;
}

static int add_result_json(void *ud, const struct storage_audit_result *r)
{
    json_t *o = json_pack("{s:o, s:s, s:s, s:o, s:o, s:s, s:o, s:i}", "time",
                          time_json(r->time_ms), "kind", r->kind, "destination", r->destination,
                          "peer", text_or_null(r->peer), "sop_instance_uid",
                          text_or_null(r->sop_instance_uid), "outcome", r->outcome, "error",
                          text_or_null(r->error), "attempts", r->attempts);
    return !o || json_array_append_new(ud, o) != 0;
}

/* ---- tables: AE titles, addresses and outcomes; no UID ---- */

static int print_assoc_row(void *ud, const struct storage_audit_association *a)
{
    int *count = ud;
    if (*count == 0)
        printf("%-24s  %8s  %-16s  %-16s  %-15s  %6s  %7s  %s\n", "STARTED (UTC)", "SECONDS",
               "CALLING AE", "CALLED AE", "ADDRESS", "STORED", "REFUSED", "OUTCOME");
    char when[40];
    clock_format_time(a->started_ms, when, sizeof when);
    printf("%-24s  %8.1f  %-16s  %-16s  %-15s  %6d  %7d  %s\n", when,
           (a->ended_ms - a->started_ms) / 1000.0, a->calling_ae, a->called_ae, a->address,
           a->stored, a->refused, a->outcome);
    (*count)++;
    return 0;
}

static int print_result_row(void *ud, const struct storage_audit_result *r)
{
    int *count = ud;
    if (*count == 0)
        printf("%-24s  %-7s  %-16s  %-32s  %8s  %-13s  %s\n", "TIME (UTC)", "KIND",
               "DESTINATION", "PEER", "ATTEMPTS", "OUTCOME", "ERROR");
    char when[40];
    clock_format_time(r->time_ms, when, sizeof when);
    printf("%-24s  %-7s  %-16s  %-32s  %8d  %-13s  %s\n", when, r->kind, r->destination,
           r->peer ? r->peer : "-", r->attempts, r->outcome, r->error ? r->error : "");
    (*count)++;
    return 0;
}

int cli_audit(const struct config *cfg, int64_t since_ms, int json)
{
    struct storage *st = NULL;
    char err[512] = "";
    /* A node that never ran has recorded nothing, which is not an error. */
    int exists = storage_exists(cfg->node.data_dir, err, sizeof err);
    if (exists < 0 ||
        (exists && storage_open_readonly(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK)) {
        fprintf(stderr, "ainode: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (json) {
        json_t *root = json_object(), *assocs = json_array(), *results = json_array();
        json_object_set_new(root, "associations", assocs);
        json_object_set_new(root, "results", results);
        if (st && (storage_audit_foreach_association(st, since_ms, add_assoc_json, assocs) !=
                       STORAGE_OK ||
                   storage_audit_foreach_result(st, since_ms, add_result_json, results) !=
                       STORAGE_OK))
            rc = 1;
        if (rc == 0) {
            json_dumpf(root, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
        }
        json_decref(root);
    } else {
        int n_assocs = 0, n_results = 0;
        if (st && storage_audit_foreach_association(st, since_ms, print_assoc_row, &n_assocs) !=
                      STORAGE_OK)
            rc = 1;
        printf("%d association%s\n\n", n_assocs, n_assocs == 1 ? "" : "s");
        if (st && storage_audit_foreach_result(st, since_ms, print_result_row, &n_results) !=
                      STORAGE_OK)
            rc = 1;
        printf("%d send%s of results or forwarded instances\n", n_results,
               n_results == 1 ? "" : "s");
    }
    if (rc)
        fprintf(stderr, "ainode: cannot read the audit trail in %s\n", cfg->node.data_dir);
    storage_close(st);
    return rc;
}
