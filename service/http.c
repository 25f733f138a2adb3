/*
 * http.c — the HTTP admin endpoint (http.h) on libmicrohttpd.
 *
 * Why libmicrohttpd: Debian's libmicrohttpd-dev is a small, long-kept C
 * library (GNU) that parses HTTP/1.1 itself, bounds connections per
 * address and in all, times idle ones out, runs its own thread and speaks
 * TLS through GnuTLS; ainode only routes requests and writes answers.
 *
 * Every request is answered on libmicrohttpd's one thread, so the
 * read-only store handle is used by that thread alone. Answers are built
 * whole in memory (a page of rows, the metrics) and handed over with
 * their length.
 */
#include "service/http.h"

#include "common/clock.h"
#include "common/log.h"
#include "config/config.h"
#include "service/cli_audit.h"
#include "service/http_page.h"
#include "service/listing_json.h"
#include "service/metrics.h"
#include "storage/storage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define CONNECTION_LIMIT 32
#define PER_ADDRESS_LIMIT 8
#define IDLE_TIMEOUT_SECONDS 15
/* Job states, for counts that are 0 (a series appears before its first job). */
static const char *const job_states[] = {"queued", "running", "done", "failed", "quarantined",
                                         STORAGE_JOB_NOT_APPLICABLE};
static const char *const study_states[] = {"receiving", "held", "complete", "discarded",
                                           "deleting"};

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_node node;
    struct storage *ro;           /* read-only, this thread's alone */
    int loopback;                 /* the bind is loopback: GETs need no token */
    int has_token;
    char token[CONFIG_TOKEN_MAX + 1];
    char *tls_cert, *tls_key;     /* PEM texts, for as long as the daemon runs */
    int64_t started_ms;
};

/* Where a request stands between libmicrohttpd's calls for it. */
struct request {
    int refused;                  /* an answer was queued before its body */
    int body;                     /* it came with a body, which no endpoint takes */
};

/* ---- answers ------------------------------------------------------------- */

/* Queues BODY (LEN bytes, malloc'ed: the response takes it) with STATUS. */
static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type,
                              char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"ainode\"");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* Queues DOC (a reference the call takes) as JSON. */
static enum MHD_Result answer_json(struct MHD_Connection *c, unsigned status, json_t *doc)
{
    /* Escaped slashes: a document is never read as "</script>". */
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_ESCAPE_SLASH) : NULL;
    json_decref(doc);
    if (!text) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json", strdup(oom),
                      sizeof oom - 1);
    }
    size_t len = strlen(text);
    char *body = realloc(text, len + 2);
    if (body) {
        body[len++] = '\n';
        text = body;
    }
    return answer(c, status, "application/json", text, len);
}

static enum MHD_Result answer_error(struct MHD_Connection *c, unsigned status, const char *fmt,
                                    ...) __attribute__((format(printf, 3, 4)));

static enum MHD_Result answer_error(struct MHD_Connection *c, unsigned status, const char *fmt,
                                    ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return answer_json(c, status, json_pack("{s:s}", "error", msg));
}

/* ---- who may ask --------------------------------------------------------- */

/* Equal in a time that depends on the token's length alone. */
static int token_equal(const struct http_server *h, const char *given)
{
    size_t want = strlen(h->token), got = strlen(given);
    unsigned char d = got != want;
    for (size_t i = 0; i < want; i++)
        d |= (unsigned char)(h->token[i] ^ (i < got ? given[i] : 0));
    return d == 0;
}

static void peer_address(struct MHD_Connection *c, char *buf, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, len, "?");
    if (!ci || !ci->client_addr)
        return;
    socklen_t sl = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in);
    getnameinfo(ci->client_addr, sl, buf, (socklen_t)len, NULL, 0, NI_NUMERICHOST);
}

/* 0 when the request carries the token, else the status to refuse it
 * with (401: none given, 403: another, or none configured). */
static unsigned authorize(const struct http_server *h, struct MHD_Connection *c,
                          const char *method)
{
    unsigned status = 0;
    const char *why = NULL;
    const char *auth =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h->has_token) {
        status = MHD_HTTP_FORBIDDEN;
        why = "no node.http.token_file is configured";
    } else if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        status = MHD_HTTP_UNAUTHORIZED;
        why = "no bearer token";
    } else {
        const char *t = auth + 7;
        while (*t == ' ')
            t++;
        if (!token_equal(h, t)) {
            status = MHD_HTTP_FORBIDDEN;
            why = "a wrong bearer token";
        }
    }
    if (status) {
        char addr[INET6_ADDRSTRLEN + 8];
        peer_address(c, addr, sizeof addr);
        log_event(LOG_WARN, "http.refused", LOG_IDS(.addr = addr),
                  "HTTP: refused a %s request from %s: %s", method, addr, why);
    }
    return status;
}

/* ---- what the store holds ------------------------------------------------ */

/* The counts of storage_counts, kept for one answer. */
struct counts {
    struct count {
        char table[8], state[32], key[128];
        int64_t n, oldest_ms;
    } *v;
    size_t n, cap;
};

static int collect_count(void *ud, const struct storage_count *c)
{
    struct counts *cs = ud;
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 32;
        struct count *v = realloc(cs->v, cap * sizeof *v);
        if (!v)
            return 1;
        cs->v = v;
        cs->cap = cap;
    }
    struct count *k = &cs->v[cs->n++];
    snprintf(k->table, sizeof k->table, "%s", c->table);
    snprintf(k->state, sizeof k->state, "%s", c->state ? c->state : "");
    snprintf(k->key, sizeof k->key, "%s", c->key ? c->key : "");
    k->n = c->n;
    k->oldest_ms = c->oldest_ms;
    return 0;
}

/* The count of TABLE in STATE for KEY (NULL: summed over keys), and the
 * oldest row's time into *OLDEST (may be NULL; 0 when none). */
static int64_t count_of(const struct counts *cs, const char *table, const char *state,
                        const char *key, int64_t *oldest)
{
    int64_t n = 0, o = 0;
    for (size_t i = 0; i < cs->n; i++) {
        const struct count *k = &cs->v[i];
        if (strcmp(k->table, table) || strcmp(k->state, state) || (key && strcmp(k->key, key)))
            continue;
        n += k->n;
        if (k->n && (!o || k->oldest_ms < o))
            o = k->oldest_ms;
    }
    if (oldest)
        *oldest = o;
    return n;
}

/* The data disk: bytes free to the node's user and in all. */
static int disk_of(const char *dir, uint64_t *free_bytes, uint64_t *size_bytes)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0)
        return -1;
    *free_bytes = (uint64_t)v.f_bavail * v.f_frsize;
    *size_bytes = (uint64_t)v.f_blocks * v.f_frsize;
    return 0;
}

/* A model has workers of its own or runs on its encoder's: either way a
 * worker loads it. */
static const char *model_state_text(enum metrics_model_state s)
{
    switch (s) {
    case METRICS_MODEL_LOADING: return "loading";
    case METRICS_MODEL_LOADED: return "loaded";
    case METRICS_MODEL_FAILED: return "failed";
    default: return "not loaded yet";
    }
}

/* ---- /healthz, /readyz --------------------------------------------------- */

/* The reasons the node is not ready, appended to REASONS. */
static void readiness(struct http_server *h, const struct config *cfg, json_t *reasons)
{
    struct counts cs = {0};
    if (storage_counts(h->ro, collect_count, &cs) != STORAGE_OK)
        json_array_append_new(reasons, json_string("the database does not answer"));
    free(cs.v);
    uint64_t free_b = 0, size_b = 0;
    uint64_t floor_b = (uint64_t)cfg->node.min_free_disk_mb << 20;
    if (disk_of(cfg->node.data_dir, &free_b, &size_b) != 0)
        json_array_append_new(reasons, json_string("the data disk cannot be measured"));
    else if (free_b < floor_b) {
        char why[160];
        snprintf(why, sizeof why, "the data disk has %llu MiB free, below node.min_free_disk_mb "
                                  "(%d MiB)",
                 (unsigned long long)(free_b >> 20), cfg->node.min_free_disk_mb);
        json_array_append_new(reasons, json_string(why));
    }
    if (!h->node.accepting(h->node.ud))
        json_array_append_new(reasons, json_string("the DICOM listener is not accepting"));
    for (size_t i = 0; i < cfg->n_models; i++) {
        char err[256], why[512];
        const char *name = cfg->models[i].name;
        enum metrics_model_state s = metrics_model_get(name, err, sizeof err);
        if (s == METRICS_MODEL_LOADED)
            continue;
        if (s == METRICS_MODEL_FAILED)
            snprintf(why, sizeof why, "model %s cannot be loaded: %s", name, err);
        else
            snprintf(why, sizeof why, "model %s is %s", name, model_state_text(s));
        json_array_append_new(reasons, json_string(why));
    }
}

static enum MHD_Result get_readyz(struct http_server *h, struct MHD_Connection *c)
{
    struct config *cfg = h->node.config(h->node.ud);
    json_t *reasons = json_array();
    readiness(h, cfg, reasons);
    config_unref(cfg);
    int ready = json_array_size(reasons) == 0;
    return answer_json(c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                       json_pack("{s:b, s:o}", "ready", ready, "reasons", reasons));
}

/* ---- /metrics ------------------------------------------------------------ */

static void gauge_family(FILE *out, const char *name, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* The families read from the store and the disk at each scrape. */
static void write_store_metrics(FILE *out, const struct config *cfg, const struct counts *cs,
                                int64_t now_ms)
{
    gauge_family(out, "ainode_studies", "Studies in the store, by state (held: receiving, held "
                                        "back for refused instances).");
    for (size_t i = 0; i < sizeof study_states / sizeof study_states[0]; i++)
        fprintf(out, "ainode_studies{state=\"%s\"} %lld\n", study_states[i],
                (long long)count_of(cs, "studies", study_states[i], NULL, NULL));

    /* Every state of every configured model, 0 or not, then any other
     * model still in the store. */
    gauge_family(out, "ainode_jobs", "Jobs in the store, by state and model.");
    for (size_t m = 0; m < cfg->n_models; m++)
        for (size_t s = 0; s < sizeof job_states / sizeof job_states[0]; s++)
            fprintf(out, "ainode_jobs{model=\"%s\",state=\"%s\"} %lld\n", cfg->models[m].name,
                    job_states[s],
                    (long long)count_of(cs, "jobs", job_states[s], cfg->models[m].name, NULL));
    for (size_t i = 0; i < cs->n; i++)
        if (!strcmp(cs->v[i].table, "jobs") && !config_find_model(cfg, cs->v[i].key))
            fprintf(out, "ainode_jobs{model=\"%s\",state=\"%s\"} %lld\n", cs->v[i].key,
                    cs->v[i].state, (long long)cs->v[i].n);

    gauge_family(out, "ainode_outbox_items", "Outbox items by destination and state (pending: "
                                             "the queue; failed: dead-lettered).");
    for (size_t d = 0; d < cfg->n_destinations; d++)
        for (int f = 0; f < 2; f++) {
            const char *state = f ? "failed" : "pending";
            fprintf(out, "ainode_outbox_items{destination=\"%s\",state=\"%s\"} %lld\n",
                    cfg->destinations[d].name, state,
                    (long long)count_of(cs, "outbox", state, cfg->destinations[d].name, NULL));
        }
    for (size_t i = 0; i < cs->n; i++)
        if (!strcmp(cs->v[i].table, "outbox") &&
            (!config_find_destination(cfg, cs->v[i].key) ||
             (strcmp(cs->v[i].state, "pending") && strcmp(cs->v[i].state, "failed"))))
            fprintf(out, "ainode_outbox_items{destination=\"%s\",state=\"%s\"} %lld\n",
                    cs->v[i].key, cs->v[i].state, (long long)cs->v[i].n);

    gauge_family(out, "ainode_outbox_oldest_pending_age_seconds",
                 "Age of the oldest pending outbox item, per destination (0: none pending).");
    for (size_t d = 0; d < cfg->n_destinations; d++) {
        int64_t oldest = 0;
        count_of(cs, "outbox", "pending", cfg->destinations[d].name, &oldest);
        fprintf(out, "ainode_outbox_oldest_pending_age_seconds{destination=\"%s\"} %.3f\n",
                cfg->destinations[d].name,
                oldest && now_ms > oldest ? (now_ms - oldest) / 1000.0 : 0.0);
    }

    uint64_t free_b = 0, size_b = 0;
    if (disk_of(cfg->node.data_dir, &free_b, &size_b) == 0) {
        gauge_family(out, "ainode_data_disk_free_bytes",
                     "Bytes free to the node on the file system of node.data_dir.");
        fprintf(out, "ainode_data_disk_free_bytes %llu\n", (unsigned long long)free_b);
        gauge_family(out, "ainode_data_disk_size_bytes",
                     "Size of the file system of node.data_dir.");
        fprintf(out, "ainode_data_disk_size_bytes %llu\n", (unsigned long long)size_b);
    }
    gauge_family(out, "ainode_data_disk_floor_bytes",
                 "node.min_free_disk_mb: below it C-STOREs are refused (0: off).");
    fprintf(out, "ainode_data_disk_floor_bytes %llu\n",
            (unsigned long long)cfg->node.min_free_disk_mb << 20);
}

static enum MHD_Result get_metrics(struct http_server *h, struct MHD_Connection *c)
{
    struct counts cs = {0};
    if (storage_counts(h->ro, collect_count, &cs) != STORAGE_OK) {
        free(cs.v);
        return answer_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "the database does not answer");
    }
    struct config *cfg = h->node.config(h->node.ud);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out) {
        metrics_write(out, AINODE_VERSION);
        gauge_family(out, "ainode_start_time_seconds", "When the node started (Unix time).");
        fprintf(out, "ainode_start_time_seconds %.3f\n", h->started_ms / 1000.0);
        write_store_metrics(out, cfg, &cs, clock_now_ms());
    }
    config_unref(cfg);
    free(cs.v);
    if (!out || fclose(out) != 0) {
        free(text);
        return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    return answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- /api/v1 ------------------------------------------------------------- */

static const char *arg(struct MHD_Connection *c, const char *key)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    return v && *v ? v : NULL;
}

/* The filter a listing's query asks for; 0, or an answer queued (400). */
static int filter_of(struct MHD_Connection *c, struct storage_filter *f, enum MHD_Result *rc)
{
    memset(f, 0, sizeof *f);
    f->state = arg(c, "state");
    f->model = arg(c, "model");
    f->cursor = arg(c, "cursor");
    const char *since = arg(c, "since"), *limit = arg(c, "limit"), *order = arg(c, "order");
    if (since && cli_audit_parse_since(since, clock_now_ms(), &f->since_ms) != 0) {
        *rc = answer_error(c, MHD_HTTP_BAD_REQUEST, "since: not a UTC date or time "
                                                    "(2026-12-01T10:00) nor a span (24h, 7d)");
        return -1;
    }
    if (limit) {
        char *end;
        long n = strtol(limit, &end, 10);
        if (*end || n < 1 || n > STORAGE_LIST_MAX_LIMIT) {
            *rc = answer_error(c, MHD_HTTP_BAD_REQUEST, "limit: a number from 1 to %d",
                               STORAGE_LIST_MAX_LIMIT);
            return -1;
        }
        f->limit = (int)n;
    }
    if (order && strcmp(order, "newest") && strcmp(order, "oldest")) {
        *rc = answer_error(c, MHD_HTTP_BAD_REQUEST, "order: newest or oldest");
        return -1;
    }
    f->oldest_first = order && !strcmp(order, "oldest");
    return 0;
}

/* Answers a listing: DOC, or the reason it could not be made. */
static enum MHD_Result answer_listing(struct MHD_Connection *c, int rc, json_t *doc,
                                      const char *err)
{
    if (rc == STORAGE_OK)
        return answer_json(c, MHD_HTTP_OK, doc);
    if (rc == STORAGE_EINVAL)
        return answer_error(c, MHD_HTTP_BAD_REQUEST, "%s", err);
    return answer_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot read the database: %s",
                        storage_strerror(rc));
}

static enum MHD_Result get_status(struct http_server *h, struct MHD_Connection *c)
{
    struct storage_filter f;
    enum MHD_Result rc;
    if (filter_of(c, &f, &rc) != 0)
        return rc;
    json_t *doc = NULL;
    char err[256] = "";
    int src = listing_json_status(h->ro, &f, &doc, err, sizeof err);
    return answer_listing(c, src, doc, err);
}

static enum MHD_Result get_jobs(struct http_server *h, struct MHD_Connection *c)
{
    struct storage_filter f;
    enum MHD_Result rc;
    if (filter_of(c, &f, &rc) != 0)
        return rc;
    json_t *doc = NULL;
    char err[256] = "";
    int src = listing_json_jobs(h->ro, &f, &doc, err, sizeof err);
    return answer_listing(c, src, doc, err);
}

/* One study: {"study": {...}, "jobs": [...], "outbox": [...],
 * "unmatched_series": [...]}, as status shows them. */
static enum MHD_Result get_study(struct http_server *h, struct MHD_Connection *c,
                                 const char *uid)
{
    if (!storage_uid_valid(uid))
        return answer_error(c, MHD_HTTP_BAD_REQUEST, "not a valid Study Instance UID");
    struct storage_filter f = {.study_uid = uid, .limit = 1};
    json_t *doc = NULL;
    char err[256] = "";
    int rc = listing_json_status(h->ro, &f, &doc, err, sizeof err);
    if (rc != STORAGE_OK)
        return answer_listing(c, rc, NULL, err);
    json_t *study = json_array_get(json_object_get(doc, "studies"), 0);
    if (!study) {
        json_decref(doc);
        return answer_error(c, MHD_HTTP_NOT_FOUND, "no such study");
    }
    json_object_set(doc, "study", study);
    json_object_del(doc, "studies");
    json_object_del(doc, "next_cursor");
    return answer_json(c, MHD_HTTP_OK, doc);
}

static json_t *time_or_null(int64_t ms)
{
    char when[40];
    if (!ms)
        return json_null();
    clock_format_time(ms, when, sizeof when);
    return json_string(when);
}

/* What the status page shows besides the listings: the node, its models
 * and devices, its destinations, its disk and its queue. */
static enum MHD_Result get_node(struct http_server *h, struct MHD_Connection *c)
{
    struct counts cs = {0};
    if (storage_counts(h->ro, collect_count, &cs) != STORAGE_OK) {
        free(cs.v);
        return answer_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "the database does not answer");
    }
    struct config *cfg = h->node.config(h->node.ud);
    json_t *doc = json_object();
    json_object_set_new(doc, "version", json_string(AINODE_VERSION));
    json_object_set_new(doc, "ae_title", json_string(cfg->node.ae_title));
    json_object_set_new(doc, "started", time_or_null(h->started_ms));
    json_object_set_new(doc, "now", time_or_null(clock_now_ms()));

    json_t *reasons = json_array();
    readiness(h, cfg, reasons);
    json_object_set_new(doc, "ready", json_boolean(json_array_size(reasons) == 0));
    json_object_set_new(doc, "reasons", reasons);

    json_t *models = json_array();
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        char err[256];
        enum metrics_model_state s = metrics_model_get(m->name, err, sizeof err);
        json_t *jobs = json_object();
        for (size_t k = 0; k < sizeof job_states / sizeof job_states[0]; k++)
            json_object_set_new(jobs, job_states[k],
                                json_integer(count_of(&cs, "jobs", job_states[k], m->name, NULL)));
        json_array_append_new(
            models, json_pack("{s:s, s:s, s:s, s:o, s:o}", "name", m->name, "device",
                              m->manifest.from ? "(its encoder's)" : m->device, "state",
                              model_state_text(s), "error",
                              err[0] ? json_string(err) : json_null(), "jobs", jobs));
    }
    json_object_set_new(doc, "models", models);

    struct metrics_destination seen[64];
    size_t n_seen = metrics_destinations(seen, sizeof seen / sizeof seen[0]);
    json_t *dests = json_array();
    for (size_t i = 0; i < cfg->n_destinations; i++) {
        const struct config_destination *d = &cfg->destinations[i];
        const struct metrics_destination *m = NULL;
        for (size_t k = 0; k < n_seen && !m; k++)
            if (!strcmp(seen[k].name, d->name))
                m = &seen[k];
        int64_t oldest = 0;
        int64_t pending = count_of(&cs, "outbox", "pending", d->name, &oldest);
        json_array_append_new(
            dests,
            json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "name",
                      d->name, "ae_title", d->ae_title, "host", d->host, "port", d->port,
                      "pending", (json_int_t)pending, "failed_items",
                      (json_int_t)count_of(&cs, "outbox", "failed", d->name, NULL), "sent",
                      (json_int_t)(m ? m->sent : 0), "failed_attempts",
                      (json_int_t)(m ? m->failed : 0), "oldest_pending",
                      time_or_null(oldest), "last_sent", time_or_null(m ? m->last_sent_ms : 0),
                      "last_failure", time_or_null(m ? m->last_failed_ms : 0), "last_error",
                      m && m->last_error[0] ? json_string(m->last_error) : json_null()));
    }
    json_object_set_new(doc, "destinations", dests);

    json_t *studies = json_object();
    for (size_t i = 0; i < sizeof study_states / sizeof study_states[0]; i++)
        json_object_set_new(studies, study_states[i],
                            json_integer(count_of(&cs, "studies", study_states[i], NULL, NULL)));
    json_object_set_new(doc, "studies", studies);

    uint64_t free_b = 0, size_b = 0;
    if (disk_of(cfg->node.data_dir, &free_b, &size_b) == 0)
        json_object_set_new(doc, "disk",
                            json_pack("{s:I, s:I, s:I}", "free_bytes", (json_int_t)free_b,
                                      "size_bytes", (json_int_t)size_b, "floor_bytes",
                                      (json_int_t)((uint64_t)cfg->node.min_free_disk_mb << 20)));
    config_unref(cfg);
    free(cs.v);
    return answer_json(c, MHD_HTTP_OK, doc);
}

/* POST /api/v1/outbox/ID/retry, /api/v1/jobs/ID/retry. */
static enum MHD_Result post_retry(struct http_server *h, struct MHD_Connection *c, int job,
                                  int64_t id)
{
    if (job) {
        int rc = storage_job_retry(h->node.store, id);
        if (rc == STORAGE_ENOTFOUND)
            return answer_error(c, MHD_HTTP_CONFLICT, "job %lld is not a quarantined one",
                                (long long)id);
        if (rc != STORAGE_OK)
            return answer_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot update the jobs: %s",
                                storage_strerror(rc));
        log_event(LOG_INFO, "job.retry", LOG_IDS(.job = id), "queued again (HTTP)");
        h->node.jobs_queued(h->node.ud);
        return answer_json(c, MHD_HTTP_OK, json_pack("{s:I, s:i}", "job", (json_int_t)id,
                                                     "queued", 1));
    }
    int n = 0;
    int rc = storage_outbox_retry(h->node.store, id, clock_now_ms(), &n);
    if (rc != STORAGE_OK)
        return answer_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot update the outbox: %s",
                            storage_strerror(rc));
    if (n == 0)
        return answer_error(c, MHD_HTTP_CONFLICT, "outbox item %lld is not a failed one",
                            (long long)id);
    log_event(LOG_INFO, "send.retry_requested", LOG_IDS(.item = id), "queued again (HTTP)");
    h->node.outbox_queued(h->node.ud);
    return answer_json(c, MHD_HTTP_OK,
                       json_pack("{s:I, s:i}", "outbox_item", (json_int_t)id, "queued", n));
}

/* "/api/v1/PREFIX/ID/retry" into *ID; 0 when URL is not one. */
static int retry_path(const char *url, const char *prefix, int64_t *id)
{
    size_t n = strlen(prefix);
    if (strncmp(url, prefix, n) != 0)
        return 0;
    const char *s = url + n;
    if (*s < '0' || *s > '9')
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || strcmp(end, "/retry") != 0)
        return 0;
    *id = v;
    return 1;
}

/* ---- routing ------------------------------------------------------------- */

static enum MHD_Result route(struct http_server *h, struct MHD_Connection *c, const char *url,
                             const char *method)
{
    int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    int post = !strcmp(method, MHD_HTTP_METHOD_POST);
    int64_t id;
    if (post) {
        int job = retry_path(url, "/api/v1/jobs/", &id);
        if (job || retry_path(url, "/api/v1/outbox/", &id))
            return post_retry(h, c, job, id);
        return answer_error(c, MHD_HTTP_NOT_FOUND, "no such resource");
    }
    if (!get)
        return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or POST only");
    if (!strcmp(url, "/healthz"))
        return answer_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "alive"));
    if (!strcmp(url, "/readyz"))
        return get_readyz(h, c);
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        char *page = malloc(http_page_len);
        if (!page)
            return MHD_NO;
        memcpy(page, http_page, http_page_len);
        return answer(c, MHD_HTTP_OK, "text/html; charset=utf-8", page, http_page_len);
    }
    /* Everything else holds data: beyond loopback, only for the token. */
    unsigned refuse = h->loopback ? 0 : authorize(h, c, method);
    if (refuse)
        return answer_error(c, refuse, refuse == MHD_HTTP_UNAUTHORIZED
                                           ? "this endpoint needs the bearer token"
                                           : "the bearer token is not this node's");
    if (!strcmp(url, "/metrics"))
        return get_metrics(h, c);
    if (!strcmp(url, "/api/v1/status"))
        return get_status(h, c);
    if (!strcmp(url, "/api/v1/jobs"))
        return get_jobs(h, c);
    if (!strcmp(url, "/api/v1/node"))
        return get_node(h, c);
    if (!strncmp(url, "/api/v1/studies/", 16))
        return get_study(h, c, url + 16);
    return answer_error(c, MHD_HTTP_NOT_FOUND, "no such resource");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http_server *h = cls;
    (void)version;
    (void)upload_data;
    struct request *rq = *con_cls;
    int post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!rq) {
        /* First call: headers only. A POST is refused before its body is
         * read when it lacks the token. */
        if (!(rq = calloc(1, sizeof *rq)))
            return MHD_NO;
        *con_cls = rq;
        log_msg(LOG_DEBUG, "HTTP %s %s", method, url);
        if (post) {
            unsigned refuse = authorize(h, c, method);
            if (refuse) {
                rq->refused = 1;
                return answer_error(c, refuse, refuse == MHD_HTTP_UNAUTHORIZED
                                                   ? "a POST needs the bearer token"
                                               : h->has_token
                                                   ? "the bearer token is not this node's"
                                                   : "POST needs node.http.token_file");
            }
        }
        /* No endpoint takes a body: one announced is refused before it is read. */
        const char *length =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if ((length && strcmp(length, "0") != 0) ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
            rq->refused = 1;
            return answer_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "no request body is taken");
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; /* dropped */
        rq->body = 1;
        return MHD_YES;
    }
    if (rq->refused)
        return MHD_YES;
    if (rq->body)
        return answer_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "no request body is taken");
    return route(h, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    log_msg(LOG_WARN, "HTTP: %s", msg);
}

/* ---- start and stop ------------------------------------------------------ */

/* The whole of PATH, NUL-terminated, malloc'ed; NULL with the reason. */
static char *read_text(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *t = realloc(text, cap = cap ? 2 * cap : 8192);
            if (!t) {
                free(text);
                fclose(f);
                snprintf(err, errlen, "out of memory");
                return NULL;
            }
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

/* A listening socket on BIND:PORT; -1 with the reason in ERR. */
static int listen_on(const char *bind_addr, int port, int *family, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(bind_addr, service, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "node.http.bind %s: %s", bind_addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            e = errno;
            close(fd);
            fd = -1;
            continue;
        }
        *family = a->ai_family;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen for HTTP on %s:%d: %s", bind_addr, port,
                 strerror(e));
    return fd;
}

int http_start(const struct config *cfg, const struct http_node *node, struct http_server **out,
               char *err, size_t errlen)
{
    const struct config_node_http *hc = &cfg->node.http;
    *out = NULL;
    struct http_server *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->node = *node;
    h->loopback = config_bind_is_loopback(hc->bind);
    h->started_ms = clock_now_ms();
    if (hc->token_file) {
        char why[160];
        if (config_read_token(hc->token_file, h->token, sizeof h->token, why, sizeof why) != 0) {
            snprintf(err, errlen, "node.http.token_file %s: %s", hc->token_file, why);
            goto fail;
        }
        h->has_token = 1;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (hc->tls.enabled) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "node.http.tls: this libmicrohttpd was built without TLS");
            goto fail;
        }
        if (!(h->tls_cert = read_text(hc->tls.certificate, err, errlen)) ||
            !(h->tls_key = read_text(hc->tls.private_key, err, errlen)))
            goto fail;
        flags |= MHD_USE_TLS;
    }
    char why[512];
    if (storage_open_readonly(cfg->node.data_dir, &h->ro, why, sizeof why) != STORAGE_OK) {
        snprintf(err, errlen, "HTTP: %s", why);
        goto fail;
    }
    int family = AF_INET;
    int fd = listen_on(hc->bind, hc->port, &family, err, errlen);
    if (fd < 0)
        goto fail;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* BCP 195: TLS 1.2 or later. */
    static const char priorities[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)priorities},
        {MHD_OPTION_END, 0, NULL},
    };
    /* The logger first: it then gets every message, those of the other options too. */
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PER_ADDRESS_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_SECONDS,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_ARRAY,
        hc->tls.enabled ? tls : tls + 3, MHD_OPTION_END);
    if (!h->daemon) {
        close(fd);
        snprintf(err, errlen, "cannot start the HTTP endpoint on %s:%d%s", hc->bind, hc->port,
                 hc->tls.enabled ? " (is node.http.tls a usable certificate and key?)" : "");
        goto fail;
    }
    log_event(LOG_INFO, "http.listening", NULL, "HTTP endpoint on %s://%s:%d%s",
              hc->tls.enabled ? "https" : "http", hc->bind, hc->port,
              h->has_token ? " (token required for POST)" : "");
    *out = h;
    return 0;
fail:
    http_stop(h);
    return -1;
}

void http_stop(struct http_server *h)
{
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon); /* closes the listening socket too */
    storage_close(h->ro);
    memset(h->token, 0, sizeof h->token);
    if (h->tls_key)
        memset(h->tls_key, 0, strlen(h->tls_key));
    free(h->tls_key);
    free(h->tls_cert);
    free(h);
}
