/*
 * cli — the commands of `ainode` besides serve (node.h): each reads the
 * store or the files it is given, prints to stdout and stderr and returns
 * the process exit code. None of them needs a running node; reload signals
 * the one serving the data directory.
 */
#ifndef AINODE_SERVICE_CLI_H
#define AINODE_SERVICE_CLI_H

#include <stdint.h>

struct config;

/* `ainode status`: the studies, jobs, outbox items and unmatched series of
 * the store named by CFG, as tables or (JSON non-zero) as JSON. */
int cli_status(const struct config *cfg, int json);

/* `ainode retry`: the dead-lettered outbox item ID (or all of them when
 * ID < 0) go back to the queue. */
int cli_retry(const struct config *cfg, int64_t id);

/* `ainode retry --job ID`: the quarantined job ID queued again. */
int cli_retry_job(const struct config *cfg, int64_t id);

/* `ainode reload`: asks the node serving CFG's data directory to re-read
 * its configuration (SIGHUP); CFG was validated by loading it. */
int cli_reload(const struct config *cfg);

/* `ainode explain`: how the rules of CFG treat each series of a stored
 * study (one argument: its Study Instance UID) or of DICOM files. */
int cli_explain(const struct config *cfg, char *const *args, int n);

/* `ainode infer`: runs MODEL on the files (or folders) in PATHS in this
 * process and prints the labels and the time of each stage as JSON; the
 * labels go to LABELS_OUT too when it is not NULL. MODEL may name heads of
 * one encoder, comma-separated: the encoder runs once, then each head. */
int cli_infer(const struct config *cfg, const char *model, char *const *paths, int n,
              const char *labels_out);

#endif
