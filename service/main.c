/* main.c — the ainode command line: parses the arguments, loads the
 * configuration and hands it to the node (node.h) or a command (cli.h). */
#include "config/config.h"
#include "service/cli.h"
#include "service/cli_audit.h"
#include "common/clock.h"
#include "service/node.h"
#include "service/runner.h"
#include "storage/storage.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Built-in models sit next to the binary (models/, as in the build tree)
 * or in ../share/ainode/models once installed. */
static void find_builtin_models(void)
{
    static char dir[PATH_MAX + 32];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = '\0';
    static const char *const candidates[] = {"models", "../share/ainode/models"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        struct stat sb;
        snprintf(dir, sizeof dir, "%s/%s", exe, candidates[i]);
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            config_set_builtin_dir(dir);
            return;
        }
    }
}

static void print_error(void *ud, const char *line)
{
    ++*(int *)ud; /* the problems, counted */
    fprintf(stderr, "%s\n", line);
}

int main(int argc, char **argv)
{
    /* What the node writes holds patient data: nothing it creates is for
     * other users, whichever library creates it (storage also sets the
     * modes it creates with). */
    umask(027);
    if (argc < 2) {
        cli_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        cli_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            cli_help(stdout, "version");
            return 0;
        }
        if (argc > 3 || (argc == 3 && strcmp(argv[2], "--json"))) {
            cli_help(stderr, "version");
            return 2;
        }
        return cli_version(argc == 3);
    }
    int is_list = !strcmp(cmd, "status") || !strcmp(cmd, "jobs");
    int is_reprocess = !strcmp(cmd, "reprocess");
    if (strcmp(cmd, "serve") && strcmp(cmd, "check-config") && !is_list && !is_reprocess &&
        strcmp(cmd, "infer") && strcmp(cmd, "retry") && strcmp(cmd, "explain") &&
        strcmp(cmd, "reload") && strcmp(cmd, "audit")) {
        fprintf(stderr, "ainode: unknown command '%s'\n", cmd);
        cli_usage(stderr);
        return 2;
    }

    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"model", required_argument, NULL, 'm'},
        {"labels", required_argument, NULL, 'l'},
        {"all-failed", no_argument, NULL, 'a'},
        {"job", required_argument, NULL, 'J'},
        {"since", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        /* status and jobs (cli_list_filter) */
        {"state", required_argument, NULL, 1},
        {"study", required_argument, NULL, 2},
        {"limit", required_argument, NULL, 3},
        {"cursor", required_argument, NULL, 4},
        {"all", no_argument, NULL, 5},
        {"oldest-first", no_argument, NULL, 6},
        {NULL, 0, NULL, 0},
    };
    struct cli_list_args list = {0};
    int list_options = 0;
    const char *config_path = NULL, *model = NULL, *labels = NULL, *job = NULL;
    const char *since = NULL;
    int json = 0, all_failed = 0, c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "c:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'j': json = 1; break;
        case 'm': model = optarg; break;
        case 'l': labels = optarg; break;
        case 'a': all_failed = 1; break;
        case 'J': job = optarg; break;
        case 'S': since = optarg; break;
        case 1: list.state = optarg; list_options = 1; break;
        case 2: list.study = optarg; list_options = 1; break;
        case 3: list.limit = optarg; list_options = 1; break;
        case 4: list.cursor = optarg; list_options = 1; break;
        case 5: list.all = list_options = 1; break;
        case 6: list.oldest_first = list_options = 1; break;
        case 'h': cli_help(stdout, cmd); return 0;
        default: cli_help(stderr, cmd); return 2;
        }
    }
    int is_infer = !strcmp(cmd, "infer"), is_retry = !strcmp(cmd, "retry");
    int is_explain = !strcmp(cmd, "explain");
    long long retry_id = -1, job_id = -1;
    if (is_retry && job) {
        char *end = NULL;
        job_id = strtoll(job, &end, 10);
        if (*end || job_id < 0 || !*job) {
            fprintf(stderr, "ainode: '%s' is not a job number\n", job);
            return 2;
        }
        if (all_failed || optind < argc) {
            fprintf(stderr, "ainode: retry takes one outbox ITEM, --all-failed or --job JOB\n");
            return 2;
        }
    } else if (job) {
        fprintf(stderr, "ainode: --job only applies to retry\n");
        return 2;
    } else if (is_retry) {
        char *end = NULL;
        if (all_failed == (optind < argc) || (optind < argc && optind + 1 != argc)) {
            fprintf(stderr, "ainode: retry needs one outbox ITEM, --all-failed or --job JOB\n");
            return 2;
        }
        if (optind < argc) {
            retry_id = strtoll(argv[optind], &end, 10);
            if (*end || retry_id < 0) {
                fprintf(stderr, "ainode: '%s' is not an outbox item number\n", argv[optind]);
                return 2;
            }
            optind++;
        }
    } else if (all_failed) {
        fprintf(stderr, "ainode: --all-failed only applies to retry\n");
        return 2;
    }
    if (is_explain && optind == argc) {
        fprintf(stderr, "ainode: explain needs a study UID or DICOM files\n");
        return 2;
    }
    if (is_reprocess && optind + 1 != argc) {
        fprintf(stderr, "ainode: reprocess needs one study UID\n");
        return 2;
    }
    if (optind < argc && !is_infer && !is_explain && !is_reprocess) {
        fprintf(stderr, "ainode: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (is_infer && (!model || optind == argc)) {
        fprintf(stderr, "ainode: infer needs -m MODEL and at least one file or folder\n");
        return 2;
    }
    if ((!is_infer && labels) || (model && !is_infer && !is_list && !is_reprocess)) {
        fprintf(stderr, "ainode: -m applies to infer, status, jobs and reprocess; --labels "
                        "to infer\n");
        return 2;
    }
    if (list_options && !is_list) {
        fprintf(stderr, "ainode: --state, --study, --limit, --cursor, --all and "
                        "--oldest-first only apply to status and jobs\n");
        return 2;
    }
    if (!config_path)
        config_path = AINODE_DEFAULT_CONFIG; /* the installed one */
    int is_audit = !strcmp(cmd, "audit");
    if (json && !is_list && !is_audit) {
        fprintf(stderr, "ainode: --json only applies to status, jobs and audit\n");
        return 2;
    }
    int64_t since_ms = 0;
    if (since && !is_audit && !is_list) {
        fprintf(stderr, "ainode: --since only applies to status, jobs and audit\n");
        return 2;
    }
    if (since && cli_audit_parse_since(since, clock_now_ms(), &since_ms) != 0) {
        fprintf(stderr, "ainode: --since '%s' is neither a UTC date or time "
                        "(2026-12-01, 2026-12-01T10:00) nor a span back (30m, 24h, 7d)\n",
                since);
        return 2;
    }
    struct storage_filter filter = {0};
    list.model = model;
    list.since_ms = since_ms;
    if (is_list && cli_list_filter(&list, &filter) != 0)
        return 2;

    struct config *cfg = NULL;
    find_builtin_models();
    int problems = 0;
    if (config_load(config_path, &cfg, print_error, &problems) != 0) {
        fprintf(stderr, "%s: %d problem%s found\n", config_path, problems,
                problems == 1 ? "" : "s");
        return 1;
    }
    int rc = 0;
    char why[512];
    if (!strcmp(cmd, "check-config") && runner_check_devices(cfg, why, sizeof why) != 0) {
        /* What serve would refuse at start: a device this process cannot use. */
        fprintf(stderr, "%s: %s\n%s: 1 problem found\n", config_path, why, config_path);
        rc = 1;
    } else if (!strcmp(cmd, "check-config"))
        printf("%s: OK\n", config_path);
    else if (!strcmp(cmd, "serve"))
        rc = node_run(cfg);
    else if (is_infer)
        rc = cli_infer(cfg, model, argv + optind, argc - optind, labels);
    else if (is_retry && job)
        rc = cli_retry_job(cfg, job_id);
    else if (is_retry)
        rc = cli_retry(cfg, retry_id);
    else if (is_explain)
        rc = cli_explain(cfg, argv + optind, argc - optind);
    else if (!strcmp(cmd, "reload"))
        rc = cli_reload(cfg);
    else if (is_audit)
        rc = cli_audit(cfg, since_ms, json);
    else if (is_reprocess)
        rc = cli_reprocess(cfg, argv[optind], model);
    else if (!strcmp(cmd, "jobs"))
        rc = cli_jobs(cfg, &filter, json);
    else
        rc = cli_status(cfg, &filter, json);
    config_unref(cfg);
    return rc;
}
