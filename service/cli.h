/*
 * cli — the commands of `ainode` besides serve (node.h): each reads the
 * store or the files it is given, prints to stdout and stderr and returns
 * the process exit code. None of them needs a running node; reload signals
 * the one serving the data directory.
 */
#ifndef AINODE_SERVICE_CLI_H
#define AINODE_SERVICE_CLI_H

#include <stdint.h>
#include <stdio.h>

struct config;
struct storage_filter;

/* The exit codes of every command (README.md, `ainode --help`). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,           /* invalid configuration, unreadable store, a failure */
    CLI_EXIT_USAGE = 2,           /* unknown command or option, a value that cannot be used */
    CLI_EXIT_NOT_FOUND = 3,       /* the study named is not in the store */
    CLI_EXIT_UNKNOWN_MODEL = 4,   /* the model named is not in the configuration */
    CLI_EXIT_NOTHING_TO_DO = 5,   /* reprocess: the rules run nothing on the study (or not
                                   * the model named), or it is still receiving */
    CLI_EXIT_IN_USE = 6,          /* serve: another node serves the data directory */
    CLI_EXIT_NOT_SERVING = 7,     /* reload: no node serves the data directory; nothing
                                   * was signalled */
};

/* `ainode status`: the page of studies F selects (storage_list_studies)
 * in the store named by CFG, with their jobs, outbox items and unmatched
 * series, as tables or (JSON non-zero) as JSON (listing_json_status). */
int cli_status(const struct config *cfg, const struct storage_filter *f, int json);

/* The options of status and jobs as given (NULL or 0: absent), SINCE_MS
 * already parsed (0: none). */
struct cli_list_args {
    const char *state, *study, *model, *limit, *cursor;
    int64_t since_ms;
    int all, oldest_first;
};

/* Fills *F from ARGS (F's strings point into ARGS'). Returns CLI_EXIT_OK,
 * or CLI_EXIT_USAGE after a message on stderr (a limit that is not a
 * number from 1 to STORAGE_LIST_MAX_LIMIT, --all with --limit or
 * --cursor, a study UID that is not one). */
int cli_list_filter(const struct cli_list_args *args, struct storage_filter *f);

/* `ainode jobs`: the page of jobs F selects, as a table or JSON. */
int cli_jobs(const struct config *cfg, const struct storage_filter *f, int json);

/* `ainode reprocess`: plans the stored study STUDY_UID again under CFG's
 * rules and queues the jobs, or only those of MODEL when not NULL (MODEL
 * must be configured; it runs on the series the rules send to it). */
int cli_reprocess(const struct config *cfg, const char *study_uid, const char *model);

/* `ainode version`: the version, or (JSON non-zero) the version, the
 * build and the libraries and devices this binary runs with, as JSON. */
int cli_version(int json);

/* Writes the usage of command CMD (`ainode CMD --help`) to OUT: its
 * synopsis, its options and its exit codes. Returns 0, or -1 when CMD is
 * no command. */
int cli_help(FILE *out, const char *cmd);

/* Writes the usage of ainode (`ainode --help`) to OUT: the commands and
 * the exit codes. Both come from cli_help.h's tables, as ainode(8) does. */
void cli_usage(FILE *out);

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
