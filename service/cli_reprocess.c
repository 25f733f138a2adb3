/*
 * cli_reprocess.c — `ainode reprocess STUDY_UID [--model M]`: plans a
 * stored study again and queues its jobs, through the store, where a
 * running node's workers find them (they look at the queue at least every
 * second, as they do after `ainode retry --job`).
 *
 * The plan is the one the node makes when a study completes
 * (storage_study_series, then rules_plan under the configuration given),
 * so the jobs get the rules' destinations and priorities and the models'
 * input.accept decides what is not applicable. With --model M only the
 * jobs of M are kept: M must be a configured model, and it runs on the
 * series the rules send to it, never on others. A series no rule sends to
 * M would give results with no destination, for a series M may not be
 * meant for; `ainode explain` shows why the rules leave it out, and a rule
 * added for it makes reprocess run it.
 */
#include "service/cli.h"

#include "common/clock.h"
#include "common/plan.h"
#include "config/config.h"
#include "rules/rules.h"
#include "storage/storage.h"

#include <stdio.h>
#include <string.h>

static void list_models(const struct config *cfg)
{
    fprintf(stderr, "  configured models:");
    for (size_t i = 0; i < cfg->n_models; i++)
        fprintf(stderr, " %s", cfg->models[i].name);
    fprintf(stderr, "%s\n", cfg->n_models ? "" : " none");
}

int cli_reprocess(const struct config *cfg, const char *study_uid, const char *model)
{
    if (!storage_uid_valid(study_uid)) {
        fprintf(stderr, "ainode: '%s' is not a Study Instance UID\n", study_uid);
        return CLI_EXIT_USAGE;
    }
    if (model && !config_find_model(cfg, model)) {
        fprintf(stderr, "ainode: no model '%s' in %s\n", model, cfg->path);
        list_models(cfg);
        return CLI_EXIT_UNKNOWN_MODEL;
    }
    struct storage *st = NULL;
    char err[512] = "";
    if (storage_open_admin(cfg->node.data_dir, &st, err, sizeof err) != STORAGE_OK) {
        fprintf(stderr, "ainode: %s\n", err);
        return CLI_EXIT_ERROR;
    }
    struct attr_series *rows = NULL;
    size_t n = 0;
    struct plan plan = {0};
    int rc = storage_study_series(st, study_uid, &rows, &n);
    int exit_code = CLI_EXIT_OK;
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot read the store in %s: %s\n", cfg->node.data_dir,
                storage_strerror(rc));
        exit_code = CLI_EXIT_ERROR;
    } else if (n == 0) {
        fprintf(stderr, "ainode: no study %s in the store\n", study_uid);
        exit_code = CLI_EXIT_NOT_FOUND;
    } else if (rules_plan(cfg, rows, n, &plan) != 0) {
        fprintf(stderr, "ainode: out of memory planning the study\n");
        exit_code = CLI_EXIT_ERROR;
    } else if (plan_keep_model(&plan, model) == 0) {
        if (model)
            fprintf(stderr, "ainode: the rules of %s send no series of the study to model %s "
                            "(ainode explain %s shows why)\n",
                    cfg->path, model, study_uid);
        else
            fprintf(stderr, "ainode: the rules of %s run no model on any series of the study "
                            "(ainode explain %s shows why)\n",
                    cfg->path, study_uid);
        exit_code = CLI_EXIT_NOTHING_TO_DO;
    }
    storage_series_free(rows, n);
    if (exit_code != CLI_EXIT_OK) {
        plan_free(&plan);
        storage_close(st);
        return exit_code;
    }
    int queued = 0, skipped = 0;
    rc = storage_replan(st, study_uid, &plan, clock_now_ms(), &queued, &skipped);
    int not_applicable = 0;
    for (size_t i = 0; i < plan.n_jobs; i++)
        not_applicable += plan.jobs[i].not_applicable != NULL;
    plan_free(&plan);
    storage_close(st);
    if (rc == STORAGE_ENOTFOUND) { /* deleted meanwhile */
        fprintf(stderr, "ainode: no study %s in the store\n", study_uid);
        return CLI_EXIT_NOT_FOUND;
    }
    if (rc == STORAGE_ECONFLICT) {
        fprintf(stderr, "ainode: the study is still receiving (or being deleted): it is "
                        "planned when it completes\n");
        return CLI_EXIT_NOTHING_TO_DO;
    }
    if (rc != STORAGE_OK) {
        fprintf(stderr, "ainode: cannot queue the jobs in %s: %s\n", cfg->node.data_dir,
                storage_strerror(rc));
        return CLI_EXIT_ERROR;
    }
    printf("%d job%s queued", queued, queued == 1 ? "" : "s");
    if (not_applicable)
        printf(", %d recorded as not applicable", not_applicable);
    if (skipped)
        printf(", %d already queued or running (not queued twice)", skipped);
    printf("\n");
    return CLI_EXIT_OK;
}
