/*
 * What the service unit tests share: a temporary folder, a small real CT
 * series (ct_series.py), a real store holding it, a configuration loaded
 * from a YAML file, and the peers the sender talks to, started and stopped
 * by PID. Each helper fails the running cmocka test when it cannot do its
 * part.
 */
#ifndef AINODE_TESTS_SERVICE_FIXTURE_H
#define AINODE_TESTS_SERVICE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct config;
struct storage;

/* A fresh folder /tmp/ainode-TAG-XXXXXX into DIR (LEN bytes). */
void fx_tempdir(const char *tag, char *dir, size_t len);
/* Removes DIR and everything below it. */
void fx_rmtree(const char *dir);

/* A CT series of SLICES files ROWS x COLS in DIR, with FILE.labels beside
 * each file (ct_series.py). *PATHS (malloc'ed, fx_free_paths) gets the
 * files in slice order. */
void fx_make_series(const char *dir, int slices, int rows, int cols, char ***paths, size_t *n);
/* The same with slice HALF (from 0; -1: none) stored with Rescale Slope
 * 0.5 and half-unit HU values (tests/unit/ct_series.py). */
void fx_make_series_half(const char *dir, int slices, int rows, int cols, int half,
                         char ***paths, size_t *n);
void fx_free_paths(char **paths, size_t n);

/* Commits copies of the files PATHS into ST as received at WHEN_MS; the
 * study's and the series' UIDs go to STUDY and SERIES (65 bytes each). */
void fx_store_series(struct storage *st, char *const *paths, size_t n, int64_t when_ms,
                     char *study, char *series);

/* Completes the study STUDY (last received at LAST_MS) with a plan of one
 * job of MODEL on SERIES whose results go to DESTS[0..n) (storage_commit_plan). */
void fx_queue_job(struct storage *st, const char *study, const char *series, int64_t last_ms,
                  const char *model, const char *const *dests, size_t n);

/* Completes STUDY (last received at LAST_MS) with a plan that forwards
 * the instances of SERIES to DEST; returns how many items were queued. */
int fx_queue_forward(struct storage *st, const char *study, const char *series, int64_t last_ms,
                     const char *dest);

/* A job's row, copied. */
struct fx_job {
    char state[16], error[512], result[4096];
    int attempts;
};
/* The row of job ID (a test failure when there is none). */
void fx_job_row(struct storage *st, int64_t id, struct fx_job *out);

/* An outbox item, copied. */
struct fx_item {
    int64_t id;
    char destination[64], kind[16], path[4096];
    char sop_class_uid[65], sop_instance_uid[65], transfer_syntax[65];
    char state[16], error[512];
    int attempts;
    int64_t next_attempt_ms;
};
/* Up to MAX items of the outbox into ITEMS (in the store's order); returns
 * how many there are. */
size_t fx_outbox(struct storage *st, struct fx_item *items, size_t max);

/* Writes YAML into DIR/ainode.yaml and loads it (the built-in models dir
 * set to the build tree's). */
struct config *fx_load_config(const char *dir, const char *yaml);

/* A free TCP port on 127.0.0.1. */
int fx_free_port(void);

/* Starts ARGV[0] (searched in PATH) with ARGV, stdout and stderr to LOG;
 * returns once 127.0.0.1:PORT accepts connections (at most 20 s). */
pid_t fx_spawn_listening(char *const *argv, int port, const char *log);
/* Stops PID (SIGTERM, then SIGKILL after 5 s) and reaps it. */
void fx_stop(pid_t pid);

/* The number of regular files in DIR and below. */
int fx_count_files(const char *dir);

/* The whole file PATH, malloc'ed, its size in *LEN; NULL when unreadable. */
unsigned char *fx_slurp(const char *path, size_t *len);

#endif
