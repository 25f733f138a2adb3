/* cli_help.c — `ainode CMD --help`: each command's synopsis, options and
 * exit codes, in one table. */
#include "service/cli.h"

#include <string.h>

struct command_help {
    const char *name;
    const char *text;             /* after "usage: " */
};

/* The options status and jobs share. */
#define PAGING                                                                                 \
    "  --limit N      rows per page, 1 to 10000 (default 100)\n"                               \
    "  --cursor C     the next page: C is the cursor the previous page printed\n"              \
    "  --all          every row, no pages\n"                                                   \
    "  --oldest-first oldest first (a cursor continues in the order it came from)\n"           \
    "  --json         JSON instead of a table\n"

#define CONFIG_OPTION "  -c CONFIG      the configuration file (default " AINODE_DEFAULT_CONFIG ")\n"

/* Exit codes 0, 1 and 2 hold for every command; the others are named
 * where a command has them. */
#define EXIT_COMMON "exit codes: 0 ok, 1 error, 2 usage"

static const struct command_help commands[] = {
    {"serve", "ainode serve -c CONFIG\n"
              "\nRuns the node in the foreground until SIGTERM or SIGINT.\n\n" CONFIG_OPTION
              "\n" EXIT_COMMON "; 6 another node serves the data directory\n"},
    {"check-config", "ainode check-config -c CONFIG\n"
                     "\nValidates CONFIG (and the models' manifests and devices); prints one\n"
                     "FILE:LINE:COLUMN: message per problem, or FILE: OK.\n\n" CONFIG_OPTION
                     "\n" EXIT_COMMON " (1: problems found)\n"},
    {"status",
     "ainode status -c CONFIG [--state S] [--since WHEN] [--study UID] [--model M]\n"
     "                     [--limit N] [--cursor C] [--all] [--oldest-first] [--json]\n"
     "\nA page of the studies in the store, newest first (by first received), with\n"
     "their jobs, outbox items and series no rule matched. When there are more,\n"
     "the last line (JSON: next_cursor) gives the cursor of the next page.\n\n" CONFIG_OPTION
     "  --state S      studies in state S: receiving, complete, discarded, deleting\n"
     "  --since WHEN   studies first received at or after WHEN (a UTC date or time,\n"
     "                 2026-12-01T10:00, or a span back: 30m, 24h, 7d)\n"
     "  --study UID    that study only\n"
     "  --model M      studies with a job of model M\n" PAGING "\n" EXIT_COMMON "\n"},
    {"jobs",
     "ainode jobs -c CONFIG [--state S] [--since WHEN] [--study UID] [--model M]\n"
     "                   [--limit N] [--cursor C] [--all] [--oldest-first] [--json]\n"
     "\nA page of the jobs in the store, newest first (by when they were queued).\n"
     "When there are more, the last line (JSON: next_cursor) gives the cursor of\n"
     "the next page.\n\n" CONFIG_OPTION
     "  --state S      jobs in state S: queued, running, done, failed, quarantined,\n"
     "                 not_applicable\n"
     "  --since WHEN   jobs queued at or after WHEN (a UTC date or time, or 30m, 24h, 7d)\n"
     "  --study UID    the jobs of that study\n"
     "  --model M      the jobs of model M\n" PAGING "\n" EXIT_COMMON "\n"},
    {"reprocess",
     "ainode reprocess -c CONFIG STUDY_UID [--model M]\n"
     "\nPlans a stored study again under CONFIG's rules and queues its jobs as new\n"
     "ones; a running node picks them up within a second. Results go where the\n"
     "rules send them. Forwards are not repeated, and a model already queued or\n"
     "running on a series is not queued twice.\n\n" CONFIG_OPTION
     "  -m, --model M  only the jobs of model M, which must be in CONFIG; it runs\n"
     "                 on the series the rules send to it, and on no other\n"
     "\n" EXIT_COMMON ",\n"
     "  3 no such study in the store, 4 no such model in CONFIG, 5 nothing to run\n"
     "  (the rules send no series of the study to any model, or to M; or the study\n"
     "  is still receiving)\n"},
    {"reload", "ainode reload -c CONFIG\n"
               "\nValidates CONFIG, then has the node serving its data directory re-read\n"
               "it (SIGHUP); the node's log tells the outcome.\n\n" CONFIG_OPTION
               "\n" EXIT_COMMON " (1: CONFIG invalid, or the lock is held by another\n"
               "process than the one its file names); 7 no node serves the data directory\n"
               "(nothing signalled)\n"},
    {"retry", "ainode retry -c CONFIG (ITEM | --all-failed | --job JOB)\n"
              "\nSends dead-lettered outbox items again, or queues a quarantined job\n"
              "again.\n\n" CONFIG_OPTION
              "  ITEM           the outbox item (its id in status)\n"
              "  --all-failed   every dead-lettered item\n"
              "  --job JOB      the quarantined job JOB\n"
              "\n" EXIT_COMMON " (1 also when ITEM is not a failed one, JOB not quarantined)\n"},
    {"explain", "ainode explain -c CONFIG (STUDY_UID | FILE.dcm...)\n"
                "\nFor each series of a stored study, or of the files given: every rule\n"
                "with each condition held or failed, and what the node does.\n\n" CONFIG_OPTION
                "\n" EXIT_COMMON ", 3 no such study in the store\n"},
    {"infer", "ainode infer -c CONFIG -m MODEL [--labels OUT] PATH...\n"
              "\nRuns MODEL on the files or folders given, in the foreground, and prints\n"
              "the labels and each stage's seconds as JSON.\n\n" CONFIG_OPTION
              "  -m MODEL       the model (HEAD,HEAD,...: heads of one encoder, which runs once)\n"
              "  --labels OUT   also write the label volume to OUT\n"
              "\n" EXIT_COMMON "\n"},
    {"audit", "ainode audit -c CONFIG [--since WHEN] [--json]\n"
              "\nThe associations and sends recorded.\n\n" CONFIG_OPTION
              "  --since WHEN   from WHEN on: a UTC date or time (2026-12-01T10:00) or a\n"
              "                 span back (30m, 24h, 7d)\n"
              "  --json         JSON instead of tables\n"
              "\n" EXIT_COMMON "\n"},
    {"version", "ainode version [--json]\n"
                "\nThe version; with --json also the build (type, compiler, git describe),\n"
                "DCMTK, libtorch and libuv, the CUDA runtime and the GPUs libtorch sees.\n"
                "\n" EXIT_COMMON "\n"},
};

int cli_help(FILE *out, const char *cmd)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, cmd)) {
            fprintf(out, "usage: %s", commands[i].text);
            return 0;
        }
    return -1;
}
