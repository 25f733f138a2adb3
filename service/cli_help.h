/*
 * cli_help — the documentation of the command line, written once: the
 * tables below are what `ainode --help` and `ainode CMD --help` print
 * (cli_help.c) and what the man page ainode(8) is generated from
 * (manpage.c), so that the two cannot disagree.
 *
 * Every text is one paragraph without line breaks: each renderer wraps it
 * for its own output.
 */
#ifndef AINODE_SERVICE_CLI_HELP_H
#define AINODE_SERVICE_CLI_HELP_H

#include <stddef.h>

/* An entry of a list: an option, a file, a signal, a variable. */
struct cli_help_item {
    const char *name;   /* "--limit N", "-m, --model M", "ITEM", a path */
    const char *text;
};

/* An exit code and what it means. */
struct cli_help_exit {
    int code;
    const char *text;
};

struct cli_help_command {
    const char *name;
    const char *summary;      /* its line in `ainode --help` */
    const char *synopsis;     /* the arguments, after "ainode NAME " */
    const char *description;
    const struct cli_help_item *options;  /* up to one with name NULL */
    /* Beyond "0 ok, 1 error, 2 usage", up to one with text NULL: a code
     * of 0 to 2 adds a note to that one, a code above 2 is the command's. */
    const struct cli_help_exit *exits;
};

extern const struct cli_help_command cli_help_commands[];
extern const size_t cli_help_command_count;

/* The page as a whole: its one-line description (NAME), DESCRIPTION's
 * paragraphs (up to NULL), and FILES, SIGNALS, ENVIRONMENT and SEE ALSO
 * (each up to one with name NULL). */
extern const char cli_help_tagline[];
extern const char *const cli_help_description[];
extern const struct cli_help_item cli_help_files[];
extern const struct cli_help_item cli_help_signals[];
extern const struct cli_help_item cli_help_environment[];
extern const struct cli_help_item cli_help_see_also[];

/* Every exit code 0 to 7 (enum cli_exit): the short text `ainode --help`
 * prints, and DETAIL, which the man page adds (NULL: none). */
struct cli_help_exit_code {
    int code;
    const char *text;
    const char *detail;
};
extern const struct cli_help_exit_code cli_help_exit_codes[];
extern const size_t cli_help_exit_code_count;

/* Writes the exit codes of CMD, as `ainode CMD --help` ends with them
 * ("0 ok, 1 error, 2 usage (1: problems found); 6 ..."), into BUF of SIZE
 * bytes. Returns 0, or -1 when they do not fit (BUF then holds a prefix). */
int cli_help_exits(const struct cli_help_command *cmd, char *buf, size_t size);

#endif
