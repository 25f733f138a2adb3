#include "common/plan.h"

#include <stdlib.h>
#include <string.h>

/* Grows *ARR (of *N elements of SIZE bytes) by one zeroed element. */
static void *grow(void *arr, size_t n, size_t size)
{
    char *a = realloc(arr, (n + 1) * size);
    if (a)
        memset(a + n * size, 0, size);
    return a;
}

static int add_destination(struct plan_job *j, const char *d)
{
    for (size_t i = 0; i < j->n_destinations; i++)
        if (!strcmp(j->destinations[i], d))
            return 0;
    char **a = grow(j->destinations, j->n_destinations, sizeof *a);
    if (!a)
        return -1;
    j->destinations = a;
    if (!(a[j->n_destinations] = strdup(d)))
        return -1;
    j->n_destinations++;
    return 0;
}

int plan_add_job(struct plan *p, const char *series_uid, const char *model,
                 enum plan_priority priority, const char *const *destinations, size_t n)
{
    struct plan_job *j = NULL;
    for (size_t i = 0; i < p->n_jobs && !j; i++)
        if (!strcmp(p->jobs[i].series_uid, series_uid) && !strcmp(p->jobs[i].model, model))
            j = &p->jobs[i];
    if (j) {
        if (priority < j->priority)
            j->priority = priority; /* the most urgent rule decides */
    } else {
        struct plan_job *a = grow(p->jobs, p->n_jobs, sizeof *a);
        if (!a)
            return -1;
        p->jobs = a;
        j = &a[p->n_jobs];
        j->series_uid = strdup(series_uid);
        j->model = strdup(model);
        j->priority = priority;
        if (!j->series_uid || !j->model) {
            free(j->series_uid);
            free(j->model);
            memset(j, 0, sizeof *j);
            return -1;
        }
        p->n_jobs++;
    }
    for (size_t i = 0; i < n; i++)
        if (add_destination(j, destinations[i]) != 0)
            return -1;
    return 0;
}

int plan_add_forward(struct plan *p, const char *series_uid, const char *destination)
{
    for (size_t i = 0; i < p->n_forwards; i++)
        if (!strcmp(p->forwards[i].series_uid, series_uid) &&
            !strcmp(p->forwards[i].destination, destination))
            return 0; /* two rules forwarding to one place: send once */
    struct plan_forward *a = grow(p->forwards, p->n_forwards, sizeof *a);
    if (!a)
        return -1;
    p->forwards = a;
    struct plan_forward *f = &a[p->n_forwards];
    f->series_uid = strdup(series_uid);
    f->destination = strdup(destination);
    if (!f->series_uid || !f->destination) {
        free(f->series_uid);
        free(f->destination);
        memset(f, 0, sizeof *f);
        return -1;
    }
    p->n_forwards++;
    return 0;
}

int plan_add_unmatched(struct plan *p, const char *series_uid)
{
    char **a = grow(p->unmatched, p->n_unmatched, sizeof *a);
    if (!a)
        return -1;
    p->unmatched = a;
    if (!(a[p->n_unmatched] = strdup(series_uid)))
        return -1;
    p->n_unmatched++;
    return 0;
}

int plan_set_not_applicable(struct plan *p, const char *series_uid, const char *model,
                            const char *reason)
{
    for (size_t i = 0; i < p->n_jobs; i++) {
        struct plan_job *j = &p->jobs[i];
        if (strcmp(j->series_uid, series_uid) || strcmp(j->model, model))
            continue;
        char *r = strdup(reason);
        if (!r)
            return -1;
        free(j->not_applicable);
        j->not_applicable = r;
        return 0;
    }
    return -1;
}

/* Frees what job J holds. */
static void job_free(struct plan_job *j)
{
    free(j->not_applicable);
    free(j->series_uid);
    for (size_t s = 0; s < j->n_more_series; s++)
        free(j->more_series[s]);
    free(j->more_series);
    free(j->model);
    for (size_t d = 0; d < j->n_destinations; d++)
        free(j->destinations[d]);
    free(j->destinations);
}

/* Moves the series and destinations of FROM into INTO (FROM keeps its
 * strings until freed). */
static int join(struct plan_job *into, struct plan_job *from)
{
    size_t n = into->n_more_series + 1 + from->n_more_series;
    char **a = realloc(into->more_series, n * sizeof *a);
    if (!a)
        return -1;
    into->more_series = a;
    a[into->n_more_series++] = from->series_uid;
    from->series_uid = NULL;
    for (size_t s = 0; s < from->n_more_series; s++)
        a[into->n_more_series++] = from->more_series[s];
    from->n_more_series = 0;
    for (size_t d = 0; d < from->n_destinations; d++)
        if (add_destination(into, from->destinations[d]) != 0)
            return -1;
    if (from->priority < into->priority)
        into->priority = from->priority;
    return 0;
}

int plan_join_study(struct plan *p, const char *model)
{
    struct plan_job *first = NULL;
    size_t kept = 0;
    int rc = 0;
    for (size_t i = 0; i < p->n_jobs; i++) {
        struct plan_job *j = &p->jobs[i];
        if (rc == 0 && !strcmp(j->model, model) && !j->not_applicable) {
            if (!first) {
                first = &p->jobs[kept];
            } else {
                rc = join(first, j);
                job_free(j);
                continue;
            }
        }
        p->jobs[kept++] = *j;
    }
    p->n_jobs = kept;
    return rc;
}

size_t plan_keep_model(struct plan *p, const char *model)
{
    size_t kept = 0;
    for (size_t i = 0; i < p->n_jobs; i++) {
        if (model && strcmp(p->jobs[i].model, model)) {
            job_free(&p->jobs[i]);
            continue;
        }
        p->jobs[kept++] = p->jobs[i];
    }
    p->n_jobs = kept;
    return kept;
}

void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n_jobs; i++)
        job_free(&p->jobs[i]);
    free(p->jobs);
    for (size_t i = 0; i < p->n_forwards; i++) {
        free(p->forwards[i].series_uid);
        free(p->forwards[i].destination);
    }
    free(p->forwards);
    for (size_t i = 0; i < p->n_unmatched; i++)
        free(p->unmatched[i]);
    free(p->unmatched);
    memset(p, 0, sizeof *p);
}
