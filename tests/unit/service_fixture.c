/* service_fixture.c — see service_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "service_fixture.h"

#include "common/attr.h"
#include "common/plan.h"
#include "config/config.h"
#include "dicom/image.h"
#include "storage/storage.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void fx_tempdir(const char *tag, char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/ainode-%s-XXXXXX", tag);
    assert_non_null(mkdtemp(dir));
}

void fx_rmtree(const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execlp("rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
}

void fx_make_series(const char *dir, int slices, int rows, int cols, char ***paths, size_t *n)
{
    fx_make_series_half(dir, slices, rows, cols, -1, paths, n);
}

void fx_make_series_half(const char *dir, int slices, int rows, int cols, int half,
                         char ***paths, size_t *n)
{
    const char *data = getenv("AINODE_TEST_DATA");
    assert_non_null(data);
    char cmd[4096], arg[32] = "";
    if (half >= 0)
        snprintf(arg, sizeof arg, " %d", half);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -B '%s/../unit/ct_series.py' '%s' %d %d %d%s",
             data, dir, slices, rows, cols, arg);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4096];
    *paths = NULL;
    *n = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        *paths = realloc(*paths, (*n + 1) * sizeof **paths);
        assert_non_null(*paths);
        (*paths)[(*n)++] = strdup(line);
    }
    assert_int_equal(pclose(p), 0);
    assert_int_equal(*n, (size_t)slices);
}

void fx_free_paths(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    unsigned char *data = fx_slurp(from, &len);
    assert_non_null(data);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(data);
}

void fx_store_series(struct storage *st, char *const *paths, size_t n, int64_t when_ms,
                     char *study, char *series)
{
    const char *keywords[ATTR_COUNT];
    for (int i = 0; i < ATTR_COUNT; i++)
        keywords[i] = attr_table[i].keyword;
    for (size_t i = 0; i < n; i++) {
        char *values[ATTR_COUNT], *ts = NULL, err[256] = "";
        assert_int_equal(dicom_read_values(paths[i], keywords, ATTR_COUNT, values, &ts, err,
                                           sizeof err),
                         0);
        char temp[4096];
        assert_int_equal(storage_temp_path(st, temp, sizeof temp), STORAGE_OK);
        copy_file(paths[i], temp);
        struct storage_instance inst;
        memset(&inst, 0, sizeof inst);
        for (int a = 0; a < ATTR_COUNT; a++)
            inst.attr[a] = values[a];
        inst.transfer_syntax = ts;
        inst.calling_ae = "MODALITY";
        inst.called_ae = "AINODE";
        inst.source_addr = "127.0.0.1";
        inst.received_ms = when_ms;
        int rc = storage_commit(st, temp, &inst, err, sizeof err);
        if (rc != STORAGE_OK)
            fail_msg("storage_commit: %s", err);
        snprintf(study, 65, "%s", values[ATTR_STUDY_INSTANCE_UID]);
        snprintf(series, 65, "%s", values[ATTR_SERIES_INSTANCE_UID]);
        dicom_free_values(values, ATTR_COUNT);
        free(ts);
    }
}

void fx_queue_job(struct storage *st, const char *study, const char *series, int64_t last_ms,
                  const char *model, const char *const *dests, size_t n)
{
    struct plan p = {0};
    assert_int_equal(plan_add_job(&p, series, model, PLAN_PRIORITY_NORMAL, dests, n), 0);
    int queued = 0;
    assert_int_equal(storage_commit_plan(st, study, last_ms, &p, 0, last_ms + 1000, &queued),
                     STORAGE_OK);
    assert_int_equal(queued, 1);
    plan_free(&p);
}

int fx_queue_forward(struct storage *st, const char *study, const char *series, int64_t last_ms,
                     const char *dest)
{
    struct plan p = {0};
    assert_int_equal(plan_add_forward(&p, series, dest), 0);
    int queued = 0;
    assert_int_equal(storage_commit_plan(st, study, last_ms, &p, 0, last_ms + 1000, &queued),
                     STORAGE_OK);
    plan_free(&p);
    return queued;
}

struct job_find {
    int64_t id;
    struct fx_job *out;
    int found;
};

static void copy(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

static int find_job(void *ud, const struct storage_job_row *j)
{
    struct job_find *jf = ud;
    if (j->id != jf->id)
        return 0;
    copy(jf->out->state, sizeof jf->out->state, j->state);
    copy(jf->out->error, sizeof jf->out->error, j->error);
    copy(jf->out->result, sizeof jf->out->result, j->result);
    jf->out->attempts = j->attempts;
    jf->found = 1;
    return 0;
}

void fx_job_row(struct storage *st, int64_t id, struct fx_job *out)
{
    struct job_find jf = {id, out, 0};
    memset(out, 0, sizeof *out);
    assert_int_equal(storage_foreach_job(st, find_job, &jf), STORAGE_OK);
    assert_true(jf.found);
}

struct item_list {
    struct fx_item *items;
    size_t n, max;
};

static int add_item(void *ud, const struct storage_outbox_item *it)
{
    struct item_list *l = ud;
    if (l->n < l->max) {
        struct fx_item *c = &l->items[l->n];
        memset(c, 0, sizeof *c);
        c->id = it->id;
        copy(c->destination, sizeof c->destination, it->destination);
        copy(c->kind, sizeof c->kind, it->kind);
        copy(c->path, sizeof c->path, it->path);
        copy(c->sop_class_uid, sizeof c->sop_class_uid, it->sop_class_uid);
        copy(c->sop_instance_uid, sizeof c->sop_instance_uid, it->sop_instance_uid);
        copy(c->transfer_syntax, sizeof c->transfer_syntax, it->transfer_syntax);
        copy(c->state, sizeof c->state, it->state);
        copy(c->error, sizeof c->error, it->error);
        c->attempts = it->attempts;
        c->next_attempt_ms = it->next_attempt_ms;
    }
    l->n++;
    return 0;
}

size_t fx_outbox(struct storage *st, struct fx_item *items, size_t max)
{
    struct item_list l = {items, 0, max};
    assert_int_equal(storage_foreach_outbox(st, add_item, &l), STORAGE_OK);
    return l.n;
}

static void print_problem(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "config: %s\n", line);
}

struct config *fx_load_config(const char *dir, const char *yaml)
{
    config_set_builtin_dir(AINODE_BUILTIN_MODELS);
    char path[4096];
    snprintf(path, sizeof path, "%s/ainode.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    assert_int_equal(fclose(f), 0);
    struct config *cfg = NULL;
    assert_int_equal(config_load(path, &cfg, print_problem, NULL), 0);
    return cfg;
}

int fx_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

static int port_open(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

pid_t fx_spawn_listening(char *const *argv, int port, const char *log)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        if (port_open(port))
            return pid;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            fail_msg("%s exited before listening (see %s)", argv[0], log);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fx_stop(pid);
    fail_msg("%s did not listen on port %d within 20 s", argv[0], port);
    return -1;
}

void fx_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int fx_count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode))
            n += fx_count_files(path);
        else if (S_ISREG(sb.st_mode))
            n++;
    }
    closedir(d);
    return n;
}

unsigned char *fx_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)size;
    return buf;
}
