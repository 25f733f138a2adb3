/*
 * plan — what is to happen to the series of a completed study.
 *
 * The rules compute a plan from the study's series rows, outside any
 * store lock; storage commits it atomically (storage_commit_plan), or
 * refuses it when an instance arrived meanwhile and the study must be
 * planned again. A plan is plain data: the caller owns it and frees it
 * with plan_free().
 */
#ifndef AINODE_COMMON_PLAN_H
#define AINODE_COMMON_PLAN_H

#include <stddef.h>

/* Lower is claimed first. */
enum plan_priority { PLAN_PRIORITY_STAT = 0, PLAN_PRIORITY_NORMAL = 1, PLAN_PRIORITY_LOW = 2 };

/* One model to run on one series (or, for a model that takes the study,
 * on SERIES_UID and MORE_SERIES together); its results go to
 * DESTINATIONS. */
struct plan_job {
    char *series_uid;
    char **more_series;
    size_t n_more_series;
    char *model;
    enum plan_priority priority;
    char **destinations;
    size_t n_destinations;
    char *not_applicable;         /* why the series is outside the model's input.accept
                                   * (recorded, never run), or NULL */
};

/* One series whose stored instances go to DESTINATION unchanged. */
struct plan_forward {
    char *series_uid;
    char *destination;
};

struct plan {
    struct plan_job *jobs;
    size_t n_jobs;
    struct plan_forward *forwards;
    size_t n_forwards;
    char **unmatched;             /* series no rule matched */
    size_t n_unmatched;
};

/* Each returns 0, or -1 when out of memory (the plan stays valid). A job
 * already in the plan for the same series and model is not added twice;
 * its destinations are merged. Strings are copied. */
int plan_add_job(struct plan *p, const char *series_uid, const char *model,
                 enum plan_priority priority, const char *const *destinations, size_t n);
int plan_add_forward(struct plan *p, const char *series_uid, const char *destination);
int plan_add_unmatched(struct plan *p, const char *series_uid);
/* Marks the job of SERIES_UID and MODEL (already added) not applicable
 * for REASON: it is recorded so and never runs. */
int plan_set_not_applicable(struct plan *p, const char *series_uid, const char *model,
                            const char *reason);

/* Joins the jobs of MODEL that will run (not those not applicable) into
 * the first of them: one job for all their series, in the plan's order,
 * with every destination and the most urgent priority. */
int plan_join_study(struct plan *p, const char *model);

/* Drops every job not of MODEL (none when MODEL is NULL); forwards and
 * unmatched series stay. Returns the jobs kept. */
size_t plan_keep_model(struct plan *p, const char *model);

/* Frees what the plan holds and empties it (P itself is the caller's). */
void plan_free(struct plan *p);

#endif
