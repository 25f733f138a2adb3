/*
 * listing_json — the store's listings as JSON: the one writer of what
 * `ainode status --json` and `ainode jobs --json` print and the HTTP API
 * answers, so that both show a study, a job or a send the same way.
 *
 * Every function returns a new reference (jansson), the caller's to
 * json_decref, or NULL when out of memory.
 */
#ifndef AINODE_SERVICE_LISTING_JSON_H
#define AINODE_SERVICE_LISTING_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/storage.h"

/* One row, as an object: a study, a job (its "seconds" so far counted up
 * to NOW_MS while it runs), an outbox item, a series no rule matched. */
json_t *listing_json_study(const struct storage_study *s);
json_t *listing_json_job(const struct storage_job_row *j, int64_t now_ms);
json_t *listing_json_outbox_item(const struct storage_outbox_item *it);
json_t *listing_json_unmatched(const char *study_uid, const char *series_uid,
                               const char *modality);

/*
 * The document of `status --json` for the page of studies F selects
 * (storage_list_studies): {"studies": [...], "jobs": [...], "outbox":
 * [...], "unmatched_series": [...], "next_cursor": "..." or null}, the
 * jobs, outbox items and unmatched series being those of the page's
 * studies. ST NULL (no store yet) gives empty lists. Returns STORAGE_OK
 * with *OUT set, or a storage error with the reason in ERR
 * (STORAGE_EINVAL: F cannot be used; a client's mistake).
 */
int listing_json_status(struct storage *st, const struct storage_filter *f, json_t **out,
                        char *err, size_t errlen);

/* The document of `jobs --json` for the page of jobs F selects
 * (storage_list_jobs): {"jobs": [...], "next_cursor": "..." or null}. */
int listing_json_jobs(struct storage *st, const struct storage_filter *f, json_t **out,
                      char *err, size_t errlen);

#endif
