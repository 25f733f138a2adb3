/* cli_help.c — the documentation of the command line (cli_help.h) and
 * `ainode --help`, `ainode CMD --help` rendered from it. */
#include "service/cli_help.h"
#include "service/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* --- the tables --- */

#define CONFIG_OPTION {"-c CONFIG", "the configuration file (default " AINODE_DEFAULT_CONFIG ")"}

/* The options status and jobs share. */
#define PAGING                                                                                 \
    {"--limit N", "rows per page, 1 to 10000 (default 100)"},                                  \
        {"--cursor C", "the next page: C is the cursor the previous page printed"},            \
        {"--all", "every row, no pages"},                                                      \
        {"--oldest-first", "oldest first (a cursor continues in the order it came from)"},     \
        {"--json", "JSON instead of a table"}

#define SINCE_SPAN "(a UTC date or time, 2026-12-01T10:00, or a span back: 30m, 24h, 7d)"

static const struct cli_help_item config_only[] = {CONFIG_OPTION, {NULL, NULL}};
static const struct cli_help_exit common_only[] = {{0, NULL}};

static const struct cli_help_item status_options[] = {
    CONFIG_OPTION,
    {"--state S", "studies in state S: receiving, complete, discarded, deleting"},
    {"--since WHEN", "studies first received at or after WHEN " SINCE_SPAN},
    {"--study UID", "that study only"},
    {"--model M", "studies with a job of model M"},
    PAGING,
    {NULL, NULL},
};

static const struct cli_help_item jobs_options[] = {
    CONFIG_OPTION,
    {"--state S", "jobs in state S: queued, running, done, failed, quarantined, not_applicable"},
    {"--since WHEN", "jobs queued at or after WHEN " SINCE_SPAN},
    {"--study UID", "the jobs of that study"},
    {"--model M", "the jobs of model M"},
    PAGING,
    {NULL, NULL},
};

static const struct cli_help_item reprocess_options[] = {
    CONFIG_OPTION,
    {"-m, --model M", "only the jobs of model M, which must be in CONFIG; it runs on the series "
                      "the rules send to it, and on no other"},
    {NULL, NULL},
};

static const struct cli_help_item retry_options[] = {
    CONFIG_OPTION,
    {"ITEM", "the outbox item (its id in status)"},
    {"--all-failed", "every dead-lettered item"},
    {"--job JOB", "the quarantined job JOB"},
    {NULL, NULL},
};

static const struct cli_help_item infer_options[] = {
    CONFIG_OPTION,
    {"-m MODEL", "the model (HEAD,HEAD,...: heads of one encoder, which runs once)"},
    {"--labels OUT", "also write the label volume to OUT"},
    {NULL, NULL},
};

static const struct cli_help_item audit_options[] = {
    CONFIG_OPTION,
    {"--since WHEN", "from WHEN on " SINCE_SPAN},
    {"--json", "JSON instead of tables"},
    {NULL, NULL},
};

static const struct cli_help_item no_options[] = {{NULL, NULL}};

const struct cli_help_command cli_help_commands[] = {
    {"serve", "run the node in the foreground", "-c CONFIG",
     "Runs the node in the foreground until SIGTERM or SIGINT.", config_only,
     (const struct cli_help_exit[]){{CLI_EXIT_IN_USE, "another node serves the data directory"},
                                    {0, NULL}}},
    {"check-config", "validate CONFIG; print FILE:LINE:COLUMN: message per problem", "-c CONFIG",
     "Validates CONFIG (and the models' manifests and devices); prints one FILE:LINE:COLUMN: "
     "message per problem, or FILE: OK.",
     config_only,
     (const struct cli_help_exit[]){{CLI_EXIT_ERROR, "problems found"}, {0, NULL}}},
    {"status", "a page of the studies in the store, newest first, with their jobs and sends",
     "-c CONFIG [--state S] [--since WHEN] [--study UID] [--model M] [--limit N] [--cursor C] "
     "[--all] [--oldest-first] [--json]",
     "A page of the studies in the store, newest first (by first received), with their jobs, "
     "outbox items and series no rule matched. When there are more, the last line (JSON: "
     "next_cursor) gives the cursor of the next page.",
     status_options, common_only},
    {"jobs", "a page of the jobs, newest first (the options of status)",
     "-c CONFIG [--state S] [--since WHEN] [--study UID] [--model M] [--limit N] [--cursor C] "
     "[--all] [--oldest-first] [--json]",
     "A page of the jobs in the store, newest first (by when they were queued). When there are "
     "more, the last line (JSON: next_cursor) gives the cursor of the next page.",
     jobs_options, common_only},
    {"reprocess", "plan a stored study again and queue its jobs", "-c CONFIG STUDY_UID [--model M]",
     "Plans a stored study again under CONFIG's rules and queues its jobs as new ones; a running "
     "node picks them up within a second. Results go where the rules send them. Forwards are not "
     "repeated, and a model already queued or running on a series is not queued twice.",
     reprocess_options,
     (const struct cli_help_exit[]){
         {CLI_EXIT_NOT_FOUND, "no such study in the store"},
         {CLI_EXIT_UNKNOWN_MODEL, "no such model in CONFIG"},
         {CLI_EXIT_NOTHING_TO_DO, "nothing to run (the rules send no series of the study to any "
                                  "model, or to M; or the study is still receiving)"},
         {0, NULL}}},
    {"reload", "validate CONFIG and have the running node re-read it", "-c CONFIG",
     "Validates CONFIG, then has the node serving its data directory re-read it (SIGHUP); the "
     "node's log tells the outcome.",
     config_only,
     (const struct cli_help_exit[]){
         {CLI_EXIT_ERROR,
          "CONFIG invalid, or the lock is held by another process than the one its file names"},
         {CLI_EXIT_NOT_SERVING, "no node serves the data directory (nothing signalled)"},
         {0, NULL}}},
    {"retry", "send dead-lettered outbox items again, or queue a quarantined job again",
     "-c CONFIG (ITEM | --all-failed | --job JOB)",
     "Sends dead-lettered outbox items again, or queues a quarantined job again.", retry_options,
     (const struct cli_help_exit[]){
         {CLI_EXIT_ERROR, "also when ITEM is not a failed one, JOB not quarantined"}, {0, NULL}}},
    {"explain", "how the rules treat each series of a study or of files",
     "-c CONFIG (STUDY_UID | FILE.dcm...)",
     "For each series of a stored study, or of the files given: every rule with each condition "
     "held or failed, and what the node does.",
     config_only,
     (const struct cli_help_exit[]){{CLI_EXIT_NOT_FOUND, "no such study in the store"},
                                    {0, NULL}}},
    {"infer", "run a model on files or folders in the foreground",
     "-c CONFIG -m MODEL [--labels OUT] PATH...",
     "Runs MODEL on the files or folders given, in the foreground, and prints the labels and each "
     "stage's seconds as JSON.",
     infer_options, common_only},
    {"audit", "the associations and sends recorded", "-c CONFIG [--since WHEN] [--json]",
     "The associations and sends recorded.", audit_options, common_only},
    {"version", "print the version (--json: build, libraries, GPUs)", "[--json]",
     "The version; with --json also the build (type, compiler, git describe), DCMTK, libtorch and "
     "libuv, the CUDA runtime and the GPUs libtorch sees.",
     no_options, common_only},
};
const size_t cli_help_command_count = sizeof cli_help_commands / sizeof cli_help_commands[0];

const char cli_help_tagline[] = "DICOM node that runs AI models on studies from a PACS";

const char *const cli_help_description[] = {
    "ainode receives studies over DICOM C-STORE, stores every instance durably (a file and a row "
    "in its SQLite store) before it answers, runs the TorchScript models its rules name when a "
    "study is complete and sends the results (DICOM SEG and SR) back to the PACS.",
    "The node itself is the command serve, which runs in the foreground (the package runs it as "
    "the systemd service ainode.service). The other commands read the store or the files given, "
    "print to standard output and exit; none of them needs a running node, and reload signals "
    "the one serving the data directory. Every command but version reads the configuration file "
    "given with -c, by default " AINODE_DEFAULT_CONFIG ".",
    "ainode COMMAND --help prints the usage of COMMAND: its synopsis, options and exit codes, as "
    "below.",
    NULL,
};

const struct cli_help_item cli_help_files[] = {
    {AINODE_DEFAULT_CONFIG, "The configuration file read when -c is not given (the package's is a "
                            "conffile: an upgrade keeps your changes)."},
    {AINODE_DATA_DIR, "The data directory (data_dir) of the packaged configuration, owned by the "
                      "system user ainode. It holds ainode.db (the SQLite store), instances/ (the "
                      "stored files), results/, quarantine/ and tmp/."},
    {"DATA_DIR/ainode.lock", "Locked by serve for its whole life, with its PID: one node per data "
                             "directory; reload finds the node to signal through it."},
    {AINODE_MODEL_DIR "/", "The built-in models (builtin: in the configuration), found "
                                  "beside the binary as ../share/ainode/models."},
    {"/lib/systemd/system/ainode.service", "The systemd unit (Type=notify) that runs ainode serve "
                                           "-c " AINODE_DEFAULT_CONFIG "."},
    {NULL, NULL},
};

const struct cli_help_item cli_help_signals[] = {
    {"SIGHUP", "serve re-reads its configuration file: a valid one takes effect for what happens "
               "from then on (associations, studies completing, jobs starting, sends); an invalid "
               "one is refused, with its problems in the log, and the configuration in force "
               "stays. ainode reload sends it."},
    {"SIGTERM, SIGINT", "serve stops accepting associations at once, lets the running ones finish "
                        "for up to node.shutdown_grace_seconds, aborts any still running after "
                        "that, and exits 0."},
    {NULL, NULL},
};

const struct cli_help_item cli_help_environment[] = {
    {"NOTIFY_SOCKET", "Set by systemd for a Type=notify service: serve tells it READY=1 once its "
                      "DICOM port accepts connections, a STATUS= line every 5 seconds, "
                      "STOPPING=1 when it stops and WATCHDOG=1 (when WatchdogSec is set). Unset, "
                      "it sends nothing."},
    {NULL, NULL},
};

const struct cli_help_item cli_help_see_also[] = {
    {AINODE_DOC_DIR "/admin-guide.md", "The administrator's guide: installing, a first study, "
                                       "rules, DICOM TLS, monitoring, upgrading, backup and "
                                       "restore, troubleshooting."},
    {AINODE_DOC_DIR "/configuration.md", "Every configuration key: its type, default and range."},
    {AINODE_DOC_DIR "/README.md", "What the node does and how."},
    {NULL, NULL},
};

const struct cli_help_exit_code cli_help_exit_codes[] = {
    {CLI_EXIT_OK, "ok", NULL},
    {CLI_EXIT_ERROR, "error", "invalid configuration, unreadable store, a failure"},
    {CLI_EXIT_USAGE, "usage", "unknown command or option, a value that cannot be used"},
    {CLI_EXIT_NOT_FOUND, "the study named is not in the store", "reprocess, explain"},
    {CLI_EXIT_UNKNOWN_MODEL, "the model named is not in the configuration", "reprocess --model"},
    {CLI_EXIT_NOTHING_TO_DO, "nothing to run (reprocess)",
     "the rules send no series of the study to any model, or to the one named, or the study is "
     "still receiving"},
    {CLI_EXIT_IN_USE, "another node serves the data directory (serve)", NULL},
    {CLI_EXIT_NOT_SERVING, "no node serves it (reload)", "nothing was signalled"},
};
const size_t cli_help_exit_code_count = sizeof cli_help_exit_codes / sizeof cli_help_exit_codes[0];
_Static_assert(sizeof cli_help_exit_codes / sizeof cli_help_exit_codes[0] ==
                       CLI_EXIT_NOT_SERVING + 1,
               "every exit code of enum cli_exit is documented");

/* --- rendering --- */

/* Appends to BUF of SIZE bytes, N of them used, as snprintf writes.
 * Returns 0, or -1 when it does not fit (BUF is then full). */
static int append(char *buf, size_t size, size_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *n, size - *n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= size - *n) {
        *n = size - 1;
        return -1;
    }
    *n += (size_t)k;
    return 0;
}

int cli_help_exits(const struct cli_help_command *cmd, char *buf, size_t size)
{
    if (size == 0)
        return -1;
    size_t n = 0;
    int rc = append(buf, size, &n, "0 ok, 1 error, 2 usage");
    /* Notes on the common codes first, then the command's own codes. */
    for (const struct cli_help_exit *e = cmd->exits; e->text; e++)
        if (e->code <= CLI_EXIT_USAGE)
            rc |= append(buf, size, &n, " (%d: %s)", e->code, e->text);
    const char *sep = "; ";
    for (const struct cli_help_exit *e = cmd->exits; e->text; e++)
        if (e->code > CLI_EXIT_USAGE) {
            rc |= append(buf, size, &n, "%s%d %s", sep, e->code, e->text);
            sep = ", ";
        }
    return rc;
}

enum { WIDTH = 79, OPTION_COLUMN = 17 };

/* The end of the word at P: its first space, or in a synopsis (GROUPS
 * non-zero) the first one outside [...] and (...). */
static const char *word_end(const char *p, int groups)
{
    int depth = 0;
    for (; *p && (*p != ' ' || depth > 0); p++) {
        if (groups && (*p == '[' || *p == '('))
            depth++;
        else if (groups && (*p == ']' || *p == ')') && depth > 0)
            depth--;
    }
    return p;
}

/* Writes TEXT to OUT wrapped at WIDTH columns and ends the line: OUT is at
 * column COL, the lines after the first start at column INDENT. A number
 * stays on the line of the word after it (an exit code and its meaning). */
static void wrap(FILE *out, const char *text, int col, int indent, int groups)
{
    int first = 1;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *end = word_end(p, groups);
        if (strspn(p, "0123456789") == (size_t)(end - p) && end[0] == ' ' && end[1] &&
            end[1] != ' ')
            end = word_end(end + 1, groups);
        int len = (int)(end - p);
        if (!first && col + 1 + len > WIDTH) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, (size_t)len, out);
        col += len;
        first = 0;
        p = end;
    }
    fputc('\n', out);
}

int cli_help(FILE *out, const char *cmd)
{
    const struct cli_help_command *c = NULL;
    for (size_t i = 0; i < cli_help_command_count; i++)
        if (!strcmp(cli_help_commands[i].name, cmd))
            c = &cli_help_commands[i];
    if (!c)
        return -1;
    int col = fprintf(out, "usage: ainode %s ", c->name);
    wrap(out, c->synopsis, col, col, 1);
    fputc('\n', out);
    wrap(out, c->description, 0, 0, 0);
    if (c->options[0].name) {
        fputc('\n', out);
        for (const struct cli_help_item *o = c->options; o->name; o++) {
            col = fprintf(out, "  %-*s", OPTION_COLUMN - 3, o->name);
            col += fprintf(out, " ");
            wrap(out, o->text, col, OPTION_COLUMN, 0);
        }
    }
    char exits[1024];
    cli_help_exits(c, exits, sizeof exits);
    fputc('\n', out);
    col = fprintf(out, "exit codes: ");
    wrap(out, exits, col, 2, 0);
    return 0;
}

void cli_usage(FILE *out)
{
    fprintf(out, "usage: ainode COMMAND [-c CONFIG] [options]\n"
                 "\n"
                 "CONFIG defaults to " AINODE_DEFAULT_CONFIG ".\n"
                 "\n"
                 "commands:\n");
    for (size_t i = 0; i < cli_help_command_count; i++) {
        int col = fprintf(out, "  %-*s", OPTION_COLUMN - 3, cli_help_commands[i].name);
        col += fprintf(out, " ");
        wrap(out, cli_help_commands[i].summary, col, OPTION_COLUMN, 0);
    }
    fputc('\n', out);
    wrap(out, "ainode COMMAND --help prints the usage of COMMAND: its synopsis, options and exit "
              "codes.", 0, 0, 0);
    fputc('\n', out);
    char codes[1024];
    size_t n = 0;
    for (size_t i = 0; i < cli_help_exit_code_count; i++)
        append(codes, sizeof codes, &n, "%s%d %s",
               i == 0 ? "" : i == CLI_EXIT_USAGE + 1 ? "; " : ", ", cli_help_exit_codes[i].code,
               cli_help_exit_codes[i].text);
    int col = fprintf(out, "exit codes: ");
    wrap(out, codes, col, 0, 0);
}
