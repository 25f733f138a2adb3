/*
 * metrics.c — the node's counters and histograms, and their Prometheus
 * text form.
 *
 * Unlabelled counters are atomics. Per-model and per-destination figures
 * sit in fixed tables (a name is never removed: a counter must not go
 * back) under one mutex; a configuration names few models and
 * destinations, and past the tables' size the figures of a new name are
 * not kept (logged once). Histograms keep per-bucket counts and are
 * written cumulative, as the format wants.
 */
#include "service/metrics.h"

#include "common/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define MAX_MODELS 64
#define MAX_DESTINATIONS MAX_MODELS

/* Seconds: from a quick model on a small series to a large one on a CPU. */
static const double job_buckets[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
                                     3600};
#define N_BUCKETS (sizeof job_buckets / sizeof job_buckets[0])

struct histogram {
    uint64_t bucket[N_BUCKETS + 1]; /* the last one: above every bound (+Inf) */
    uint64_t count;
    double sum;
};

struct model_slot {
    char name[128];
    enum metrics_model_state state;
    char error[256];
    uint64_t done, failed;
    struct histogram wait, run;
};

/* The kinds of outbox items, as labels; any other counts as "other". */
static const char *const kinds[] = {"seg", "sr", "forward", "other"};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

struct destination_slot {
    struct metrics_destination d;
    uint64_t sent[N_KINDS], failed[N_KINDS];
};

static const char *const rejection_names[METRICS_REJECT_COUNT] = {
    [METRICS_REJECT_ADDRESS] = "address",
    [METRICS_REJECT_CALLING_AE] = "calling_ae",
    [METRICS_REJECT_CALLED_AE] = "called_ae",
    [METRICS_REJECT_MAX_ASSOCIATIONS] = "max_associations",
    [METRICS_REJECT_MAX_PER_CALLER] = "max_associations_per_caller",
    [METRICS_REJECT_BUSY] = "busy",
    [METRICS_REJECT_TLS] = "tls",
    [METRICS_REJECT_UNREADABLE] = "unreadable_request",
};

static atomic_uint_fast64_t instances_received, bytes_received, instances_refused;
static atomic_uint_fast64_t associations_accepted, associations_rejected[METRICS_REJECT_COUNT];

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct model_slot models[MAX_MODELS];
static size_t n_models;
static struct destination_slot destinations[MAX_DESTINATIONS];
static size_t n_destinations;
static int table_full_logged;

/* Past a table's size the figures of a new name are not kept: said once. */
static void table_full(void)
{
    if (!table_full_logged++)
        log_msg(LOG_WARN, "metrics: more than %d models or destinations; the figures of the "
                          "others are not kept", MAX_MODELS);
}

/* The slot of model NAME (created when absent), or NULL when the table is
 * full. Called with LOCK held; the same for destinations below. */
static struct model_slot *model_slot(const char *name)
{
    for (size_t i = 0; i < n_models; i++)
        if (!strcmp(models[i].name, name))
            return &models[i];
    if (n_models == MAX_MODELS) {
        table_full();
        return NULL;
    }
    snprintf(models[n_models].name, sizeof models[n_models].name, "%s", name);
    return &models[n_models++];
}

static struct destination_slot *destination_slot(const char *name)
{
    for (size_t i = 0; i < n_destinations; i++)
        if (!strcmp(destinations[i].d.name, name))
            return &destinations[i];
    if (n_destinations == MAX_DESTINATIONS) {
        table_full();
        return NULL;
    }
    struct destination_slot *s = &destinations[n_destinations++];
    snprintf(s->d.name, sizeof s->d.name, "%s", name);
    return s;
}

static void observe(struct histogram *h, double v)
{
    size_t i = 0;
    while (i < N_BUCKETS && v > job_buckets[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

void metrics_instance_received(uint64_t bytes)
{
    atomic_fetch_add_explicit(&instances_received, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bytes_received, bytes, memory_order_relaxed);
}

void metrics_instance_refused(void)
{
    atomic_fetch_add_explicit(&instances_refused, 1, memory_order_relaxed);
}

void metrics_association_accepted(void)
{
    atomic_fetch_add_explicit(&associations_accepted, 1, memory_order_relaxed);
}

void metrics_association_rejected(enum metrics_rejection why)
{
    if ((unsigned)why < METRICS_REJECT_COUNT)
        atomic_fetch_add_explicit(&associations_rejected[why], 1, memory_order_relaxed);
}

void metrics_job_claimed(const char *model, double wait_seconds)
{
    pthread_mutex_lock(&lock);
    struct model_slot *m = model_slot(model);
    if (m)
        observe(&m->wait, wait_seconds < 0 ? 0 : wait_seconds);
    pthread_mutex_unlock(&lock);
}

void metrics_job_finished(const char *model, int done, double run_seconds)
{
    pthread_mutex_lock(&lock);
    struct model_slot *m = model_slot(model);
    if (m) {
        observe(&m->run, run_seconds < 0 ? 0 : run_seconds);
        if (done)
            m->done++;
        else
            m->failed++;
    }
    pthread_mutex_unlock(&lock);
}

static size_t kind_index(const char *kind)
{
    for (size_t i = 0; i + 1 < N_KINDS; i++)
        if (kind && !strcmp(kind, kinds[i]))
            return i;
    return N_KINDS - 1;
}

void metrics_send_succeeded(const char *destination, const char *kind, int64_t now_ms)
{
    pthread_mutex_lock(&lock);
    struct destination_slot *s = destination_slot(destination);
    if (s) {
        s->sent[kind_index(kind)]++;
        s->d.sent++;
        s->d.last_sent_ms = now_ms;
    }
    pthread_mutex_unlock(&lock);
}

void metrics_send_failed(const char *destination, const char *kind, int64_t now_ms,
                         const char *error)
{
    pthread_mutex_lock(&lock);
    struct destination_slot *s = destination_slot(destination);
    if (s) {
        s->failed[kind_index(kind)]++;
        s->d.failed++;
        s->d.last_failed_ms = now_ms;
        snprintf(s->d.last_error, sizeof s->d.last_error, "%s", error ? error : "");
    }
    pthread_mutex_unlock(&lock);
}

void metrics_model_state(const char *name, enum metrics_model_state state, const char *error)
{
    pthread_mutex_lock(&lock);
    struct model_slot *m = model_slot(name);
    if (m) {
        m->state = state;
        snprintf(m->error, sizeof m->error, "%s",
                 state == METRICS_MODEL_FAILED && error ? error : "");
    }
    pthread_mutex_unlock(&lock);
}

enum metrics_model_state metrics_model_get(const char *name, char *err, size_t errlen)
{
    enum metrics_model_state st = METRICS_MODEL_UNKNOWN;
    if (errlen)
        err[0] = '\0';
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_models; i++)
        if (!strcmp(models[i].name, name)) {
            st = models[i].state;
            if (errlen)
                snprintf(err, errlen, "%s", models[i].error);
            break;
        }
    pthread_mutex_unlock(&lock);
    return st;
}

size_t metrics_destinations(struct metrics_destination *out, size_t max)
{
    pthread_mutex_lock(&lock);
    size_t n = n_destinations < max ? n_destinations : max;
    for (size_t i = 0; i < n; i++)
        out[i] = destinations[i].d;
    pthread_mutex_unlock(&lock);
    return n;
}

/* ---- the text format ---------------------------------------------------- */

/* Names here are the configuration's (letters, digits, '_', '.', '-'),
 * but a label value is escaped as the format says whatever it holds. */
static void label_value(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(out, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram_rows(FILE *out, const char *name, const char *model,
                           const struct histogram *h)
{
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= N_BUCKETS; i++) {
        cumulative += h->bucket[i];
        fprintf(out, "%s_bucket{model=\"", name);
        label_value(out, model);
        if (i < N_BUCKETS)
            fprintf(out, "\",le=\"%g\"} %llu\n", job_buckets[i], (unsigned long long)cumulative);
        else
            fprintf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cumulative);
    }
    fprintf(out, "%s_sum{model=\"", name);
    label_value(out, model);
    fprintf(out, "\"} %.6f\n%s_count{model=\"", h->sum, name);
    label_value(out, model);
    fprintf(out, "\"} %llu\n", (unsigned long long)h->count);
}

void metrics_write(FILE *out, const char *version)
{
    family(out, "ainode_build_info", "gauge", "The running ainode's version (always 1).");
    fputs("ainode_build_info{version=\"", out);
    label_value(out, version);
    fputs("\"} 1\n", out);

    family(out, "ainode_instances_received_total", "counter",
           "Instances stored (committed before their C-STORE was answered).");
    fprintf(out, "ainode_instances_received_total %llu\n",
            (unsigned long long)atomic_load(&instances_received));
    family(out, "ainode_received_bytes_total", "counter", "Bytes of the instances stored.");
    fprintf(out, "ainode_received_bytes_total %llu\n",
            (unsigned long long)atomic_load(&bytes_received));
    family(out, "ainode_instances_refused_total", "counter",
           "C-STOREs answered with a failure status (disk floor, integrity, I/O).");
    fprintf(out, "ainode_instances_refused_total %llu\n",
            (unsigned long long)atomic_load(&instances_refused));

    family(out, "ainode_associations_accepted_total", "counter", "DICOM associations accepted.");
    fprintf(out, "ainode_associations_accepted_total %llu\n",
            (unsigned long long)atomic_load(&associations_accepted));
    family(out, "ainode_associations_rejected_total", "counter",
           "DICOM connections and association requests refused, by reason.");
    for (int i = 0; i < METRICS_REJECT_COUNT; i++)
        fprintf(out, "ainode_associations_rejected_total{reason=\"%s\"} %llu\n",
                rejection_names[i], (unsigned long long)atomic_load(&associations_rejected[i]));

    pthread_mutex_lock(&lock);
    family(out, "ainode_model_loaded", "gauge",
           "1 when the model's workers loaded it, 0 while loading or after a failure.");
    for (size_t i = 0; i < n_models; i++) {
        if (models[i].state == METRICS_MODEL_UNKNOWN)
            continue; /* a name known only from jobs of a model no longer configured */
        fputs("ainode_model_loaded{model=\"", out);
        label_value(out, models[i].name);
        fprintf(out, "\"} %d\n", models[i].state == METRICS_MODEL_LOADED);
    }
    family(out, "ainode_jobs_finished_total", "counter", "Jobs that ended, by model and outcome.");
    for (size_t i = 0; i < n_models; i++) {
        if (!models[i].run.count)
            continue;
        fputs("ainode_jobs_finished_total{model=\"", out);
        label_value(out, models[i].name);
        fprintf(out, "\",outcome=\"done\"} %llu\n", (unsigned long long)models[i].done);
        fputs("ainode_jobs_finished_total{model=\"", out);
        label_value(out, models[i].name);
        fprintf(out, "\",outcome=\"failed\"} %llu\n", (unsigned long long)models[i].failed);
    }
    family(out, "ainode_job_queue_wait_seconds", "histogram",
           "Time from a job's queueing to its first claim by a worker.");
    for (size_t i = 0; i < n_models; i++)
        if (models[i].wait.count)
            histogram_rows(out, "ainode_job_queue_wait_seconds", models[i].name, &models[i].wait);
    family(out, "ainode_job_run_seconds", "histogram",
           "Run time of a job's attempt, from its claim to its end (done or failed).");
    for (size_t i = 0; i < n_models; i++)
        if (models[i].run.count)
            histogram_rows(out, "ainode_job_run_seconds", models[i].name, &models[i].run);

    family(out, "ainode_results_sent_total", "counter",
           "Outbox items (results, forwarded instances) a destination accepted.");
    for (size_t i = 0; i < n_destinations; i++)
        for (size_t k = 0; k < N_KINDS; k++)
            if (destinations[i].sent[k]) {
                fputs("ainode_results_sent_total{destination=\"", out);
                label_value(out, destinations[i].d.name);
                fprintf(out, "\",kind=\"%s\"} %llu\n", kinds[k],
                        (unsigned long long)destinations[i].sent[k]);
            }
    family(out, "ainode_results_failed_total", "counter",
           "Attempts to send an outbox item that failed (transient or permanent).");
    for (size_t i = 0; i < n_destinations; i++)
        for (size_t k = 0; k < N_KINDS; k++)
            if (destinations[i].failed[k]) {
                fputs("ainode_results_failed_total{destination=\"", out);
                label_value(out, destinations[i].d.name);
                fprintf(out, "\",kind=\"%s\"} %llu\n", kinds[k],
                        (unsigned long long)destinations[i].failed[k]);
            }
    family(out, "ainode_results_last_sent_timestamp_seconds", "gauge",
           "When a destination last accepted an item (Unix time).");
    for (size_t i = 0; i < n_destinations; i++)
        if (destinations[i].d.last_sent_ms) {
            fputs("ainode_results_last_sent_timestamp_seconds{destination=\"", out);
            label_value(out, destinations[i].d.name);
            fprintf(out, "\"} %.3f\n", destinations[i].d.last_sent_ms / 1000.0);
        }
    family(out, "ainode_results_last_failure_timestamp_seconds", "gauge",
           "When an attempt to send to a destination last failed (Unix time).");
    for (size_t i = 0; i < n_destinations; i++)
        if (destinations[i].d.last_failed_ms) {
            fputs("ainode_results_last_failure_timestamp_seconds{destination=\"", out);
            label_value(out, destinations[i].d.name);
            fprintf(out, "\"} %.3f\n", destinations[i].d.last_failed_ms / 1000.0);
        }
    pthread_mutex_unlock(&lock);
}
