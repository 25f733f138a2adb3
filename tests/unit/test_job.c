/* Unit tests of one job: a real store in a temporary folder holding a real
 * CT series, the built-in model, and results checked by dciodvfy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "service/job.h"
#include "service_fixture.h"

#include "common/clock.h"
#include "config/config.h"
#include "dicom/image.h"
#include "inference/inference.h"
#include "storage/storage.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODEL "ct-bone-body"
#define SEG_STORAGE "1.2.840.10008.5.1.4.1.1.66.4"

struct fixture {
    char dir[256], data[512];
    char **paths;
    size_t n;
    struct config *cfg;
    const struct config_model *cm;
    struct infer_model *model;
    struct storage *st;
    char study[65], series[65];
    int64_t received_ms;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    fx_tempdir("job", f->dir, sizeof f->dir);
    char series[512], yaml[2048], err[512] = "";
    snprintf(series, sizeof series, "%s/series", f->dir);
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    assert_int_equal(mkdir(f->data, 0750), 0);
    fx_make_series(series, 4, 20, 24, &f->paths, &f->n);
    snprintf(yaml, sizeof yaml,
             "node:\n  ae_title: AINODE\n  port: 11112\n  data_dir: %s\n"
             "models:\n  " MODEL ":\n    file: builtin:" MODEL "\n    threads: 1\n",
             f->data);
    f->cfg = fx_load_config(f->dir, yaml);
    f->cm = config_find_model(f->cfg, MODEL);
    assert_non_null(f->cm);
    if (infer_model_load(f->cm->file, f->cm->device, &f->model, err, sizeof err) != INFER_OK)
        fail_msg("cannot load the built-in model: %s", err);
    assert_int_equal(storage_open(f->data, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    f->received_ms = clock_now_ms() - 60000;
    fx_store_series(f->st, f->paths, f->n, f->received_ms, f->study, f->series);
    static const char *const dests[] = {"pacs", "archive"};
    fx_queue_job(f->st, f->study, f->series, f->received_ms, MODEL, dests, 2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    storage_close(f->st);
    infer_model_free(f->model);
    config_unref(f->cfg);
    fx_free_paths(f->paths, f->n);
    fx_rmtree(f->dir);
    free(f);
    return 0;
}

static struct job_context context(struct fixture *f, const char *owner)
{
    return (struct job_context){
        .store = f->st, .model_cfg = f->cm, .model = f->model, .owner = owner};
}

/* dciodvfy's Error (and Abort) lines about PATH; a missing dciodvfy fails. */
static void assert_valid_dicom(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "dciodvfy '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[2048];
    int errors = 0;
    while (fgets(line, sizeof line, p))
        if (!strncmp(line, "Error", 5) || !strncmp(line, "Abort", 5)) {
            fprintf(stderr, "dciodvfy %s: %s", path, line);
            errors++;
        }
    int status = pclose(p);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        fail_msg("dciodvfy is not installed: the results cannot be validated");
    assert_int_equal(errors, 0);
}

static void result_path(struct fixture *f, int64_t id, enum storage_result_kind kind, char *buf,
                        size_t len)
{
    char name[64];
    assert_int_equal(storage_result_name(id, kind, name, sizeof name), STORAGE_OK);
    snprintf(buf, len, "%s/results/%s", f->data, name);
}

static void test_a_job_writes_valid_results_and_queues_them_for_each_destination(void **state)
{
    struct fixture *f = *state;
    struct storage_job job;
    assert_int_equal(storage_job_claim(f->st, MODEL, "w1", clock_now_ms(), JOB_LEASE_MS, &job),
                     STORAGE_OK);
    struct job_context ctx = context(f, "w1");
    char why[512] = "";
    int rc = job_run(&ctx, &job, why, sizeof why);
    if (rc != JOB_DONE)
        fail_msg("job_run: %s: %s", job_strerror(rc), why);

    struct fx_job row;
    fx_job_row(f->st, job.id, &row);
    assert_string_equal(row.state, "done");
    char seg[4096], sr[4096], labels[4096], json[4096];
    result_path(f, job.id, STORAGE_RESULT_SEG, seg, sizeof seg);
    result_path(f, job.id, STORAGE_RESULT_SR, sr, sizeof sr);
    result_path(f, job.id, STORAGE_RESULT_LABELS, labels, sizeof labels);
    result_path(f, job.id, STORAGE_RESULT_JSON, json, sizeof json);
    assert_string_equal(row.result, json);
    assert_int_equal(access(labels, R_OK), 0);
    assert_valid_dicom(seg);
    assert_valid_dicom(sr);

    /* The result document names the label file beside it. */
    size_t len;
    char *doc = (char *)fx_slurp(json, &len);
    assert_non_null(doc);
    char name[64], want[128];
    storage_result_name(job.id, STORAGE_RESULT_LABELS, name, sizeof name);
    snprintf(want, sizeof want, "\"labels_file\": \"%s\"", name);
    assert_non_null(strstr(doc, want));
    free(doc);

    /* Each destination gets the SEG and the SR, as the files say they are. */
    struct fx_item items[8];
    assert_int_equal(fx_outbox(f->st, items, 8), 4);
    static const char *const keywords[] = {"SOPClassUID", "SOPInstanceUID"};
    for (int i = 0; i < 4; i++) {
        const struct fx_item *it = &items[i];
        int is_seg = !strcmp(it->kind, "seg");
        assert_true(is_seg || !strcmp(it->kind, "sr"));
        assert_string_equal(it->destination, i < 2 ? "pacs" : "archive");
        assert_string_equal(it->path, is_seg ? seg : sr);
        assert_string_equal(it->state, "pending");
        char *values[2], *ts = NULL, err[256];
        assert_int_equal(dicom_read_values(it->path, keywords, 2, values, &ts, err, sizeof err),
                         0);
        assert_string_equal(it->sop_class_uid, values[0]);
        assert_string_equal(it->sop_instance_uid, values[1]);
        assert_string_equal(it->transfer_syntax, ts);
        if (is_seg)
            assert_string_equal(it->sop_class_uid, SEG_STORAGE);
        dicom_free_values(values, 2);
        free(ts);
    }
    storage_job_clear(&job);
}

static int unlink_file(void *ud, const char *sop, const char *path)
{
    (void)sop;
    ++*(int *)ud;
    return unlink(path) != 0;
}

static void test_a_job_whose_files_vanished_fails_with_its_reason(void **state)
{
    struct fixture *f = *state;
    int removed = 0;
    assert_int_equal(storage_foreach_instance(f->st, f->series, unlink_file, &removed),
                     STORAGE_OK);
    assert_int_equal(removed, (int)f->n);
    struct storage_job job;
    assert_int_equal(storage_job_claim(f->st, MODEL, "w1", clock_now_ms(), JOB_LEASE_MS, &job),
                     STORAGE_OK);
    struct job_context ctx = context(f, "w1");
    char why[512] = "";
    assert_int_equal(job_run(&ctx, &job, why, sizeof why), JOB_FAILED);
    assert_non_null(strstr(why, "cannot be used"));
    struct fx_job row;
    fx_job_row(f->st, job.id, &row);
    assert_string_equal(row.state, "failed");
    assert_string_equal(row.error, why);
    struct fx_item items[4];
    assert_int_equal(fx_outbox(f->st, items, 4), 0);
    storage_job_clear(&job);
}

static void test_a_job_whose_lease_went_to_another_worker_reports_it(void **state)
{
    struct fixture *f = *state;
    int64_t now = clock_now_ms();
    struct storage_job job, taken;
    /* w1's lease runs out; w2 claims the job again. */
    assert_int_equal(storage_job_claim(f->st, MODEL, "w1", now - 10000, 1, &job), STORAGE_OK);
    assert_int_equal(storage_job_claim(f->st, MODEL, "w2", now, JOB_LEASE_MS, &taken),
                     STORAGE_OK);
    assert_int_equal(taken.id, job.id);
    struct job_context ctx = context(f, "w1");
    char why[512] = "";
    assert_int_equal(job_run(&ctx, &job, why, sizeof why), JOB_LEASE_LOST);
    assert_string_equal(job_strerror(JOB_LEASE_LOST), "its lease went to another worker");
    /* w2's run is untouched: still running, nothing queued to send. */
    struct fx_job row;
    fx_job_row(f->st, job.id, &row);
    assert_string_equal(row.state, "running");
    assert_int_equal(row.attempts, 2);
    struct fx_item items[4];
    assert_int_equal(fx_outbox(f->st, items, 4), 0);
    storage_job_clear(&job);
    storage_job_clear(&taken);
}

static int always(void *ud)
{
    (void)ud;
    return 1;
}

static void test_a_job_the_stop_interrupts_goes_back_to_the_queue(void **state)
{
    struct fixture *f = *state;
    struct storage_job job;
    assert_int_equal(storage_job_claim(f->st, MODEL, "w1", clock_now_ms(), JOB_LEASE_MS, &job),
                     STORAGE_OK);
    struct job_context ctx = context(f, "w1");
    ctx.stopping = always;
    char why[512] = "";
    assert_int_equal(job_run(&ctx, &job, why, sizeof why), JOB_INTERRUPTED);
    struct fx_job row;
    fx_job_row(f->st, job.id, &row);
    assert_string_equal(row.state, "queued");
    storage_job_clear(&job);
}

static void test_a_model_that_cannot_be_loaded_fails_the_job(void **state)
{
    struct fixture *f = *state;
    struct storage_job job;
    assert_int_equal(storage_job_claim(f->st, MODEL, "w1", clock_now_ms(), JOB_LEASE_MS, &job),
                     STORAGE_OK);
    struct job_context ctx = context(f, "w1");
    ctx.model = NULL;
    ctx.load_error = "no such file";
    char why[512] = "";
    assert_int_equal(job_run(&ctx, &job, why, sizeof why), JOB_FAILED);
    assert_string_equal(why, "the model cannot be loaded: no such file");
    struct fx_job row;
    fx_job_row(f->st, job.id, &row);
    assert_string_equal(row.state, "failed");
    storage_job_clear(&job);
}

/* Crashes the process as a fault in the model would, from inside it. */
static int crash(void *ud)
{
    (void)ud;
    raise(SIGSEGV);
    return 0;
}

static void test_a_job_that_crashes_the_node_is_quarantined_at_the_next_start(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    storage_close(f->st);
    f->st = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The node: its store, its crash guard, its worker running the job. */
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        struct storage *st;
        struct storage_job job;
        if (storage_open(f->data, NULL, NULL, &st, err, sizeof err) != STORAGE_OK ||
            job_guard_install(st) != 0 ||
            storage_job_claim(st, MODEL, "w1", clock_now_ms(), JOB_LEASE_MS, &job) != STORAGE_OK)
            _exit(2);
        struct job_context ctx = {.store = st, .model_cfg = f->cm, .model = f->model,
                                  .owner = "w1", .stopping = crash};
        char why[512];
        job_run(&ctx, &job, why, sizeof why);
        _exit(3); /* not reached: the model's progress crashed the process */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);

    assert_int_equal(storage_open(f->data, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    struct storage_job job;
    assert_int_equal(storage_job_claim(f->st, MODEL, "w2", clock_now_ms(), JOB_LEASE_MS, &job),
                     STORAGE_ENOTFOUND);
    struct fx_job row;
    fx_job_row(f->st, 1, &row);
    assert_string_equal(row.state, "quarantined");
    assert_string_equal(row.error, "the node crashed (SIGSEGV) during inference");
    assert_int_equal(storage_job_retry(f->st, 1), STORAGE_OK);
    assert_int_equal(storage_job_claim(f->st, MODEL, "w2", clock_now_ms(), JOB_LEASE_MS, &job),
                     STORAGE_OK);
    storage_job_clear(&job);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_job_writes_valid_results_and_queues_them_for_each_destination, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_job_whose_files_vanished_fails_with_its_reason,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_job_whose_lease_went_to_another_worker_reports_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_job_the_stop_interrupts_goes_back_to_the_queue,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_model_that_cannot_be_loaded_fails_the_job, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_job_that_crashes_the_node_is_quarantined_at_the_next_start, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
