/*
 * config — the ainode YAML configuration file.
 *
 * One file, parsed with libfyaml, checked against one schema table
 * (config.c): every key is declared once with its type, default, range and
 * documentation. Problems are reported one per line as
 * "FILE:LINE:COLUMN: message" through a caller-supplied callback, so
 * check-config, serve and reload print exactly the same text.
 *
 * The returned struct is plain read-only data owned by the caller
 * (config_free). Relative paths in the file are resolved against the
 * directory that holds the config file, so the node finds its data whatever
 * the current directory is.
 */
#ifndef AINODE_CONFIG_H
#define AINODE_CONFIG_H

#include <stddef.h>

#define CONFIG_AE_MAX 16 /* DICOM AE title: at most 16 characters */

enum config_log_level {
    CONFIG_LOG_ERROR = 0,
    CONFIG_LOG_WARN,
    CONFIG_LOG_INFO,
    CONFIG_LOG_DEBUG,
};

struct config_node {
    char ae_title[CONFIG_AE_MAX + 1];
    int port;                     /* 1..65535 */
    char *bind;                   /* listen address, e.g. "127.0.0.1" or "0.0.0.0" */
    char *data_dir;               /* absolute after loading */
    int stable_seconds;           /* study complete after this long idle, 1..86400 */
    int max_associations;         /* 1..1024 */
    char **allowed_callers;       /* calling AE titles; n == 0 means any */
    size_t n_allowed_callers;
    enum config_log_level log_level;
    int shutdown_grace_seconds;   /* bounded wait for running associations, 0..3600 */
    int network_timeout_seconds;  /* ACSE/DIMSE read timeout, 1..3600 */
    int max_pdu;                  /* max receive PDU length, 4096..131072 */
};

struct config_destination {
    char *name;
    char ae_title[CONFIG_AE_MAX + 1];
    char *host;
    int port;
};

struct config {
    char *path;                   /* absolute path of the file that was loaded */
    struct config_node node;
    struct config_destination *destinations;
    size_t n_destinations;
};

/* Receives one "FILE:LINE:COLUMN: message" line (no trailing newline). */
typedef void (*config_error_fn)(void *ud, const char *line);

/*
 * Loads and validates PATH. Returns 0 and sets *out on success; on any
 * problem returns the (positive) number of problems reported through ERR and
 * leaves *out NULL. A file that cannot be read is reported as "FILE: reason".
 */
int config_load(const char *path, struct config **out, config_error_fn err, void *ud);

void config_free(struct config *cfg);

/* 1 when AE is allowed to call us under CFG (empty list allows any). */
int config_caller_allowed(const struct config *cfg, const char *ae);

#endif
