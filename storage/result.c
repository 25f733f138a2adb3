/*
 * result.c — a job's result files under DATA_DIR/results, each written to a
 * temporary name, flushed and renamed, the rename flushed too.
 */
#include "storage/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int storage_result_name(int64_t job_id, enum storage_result_kind kind, char *buf, size_t len)
{
    static const char *const suffix[] = {
        [STORAGE_RESULT_SEG] = "seg.dcm",
        [STORAGE_RESULT_SR] = "sr.dcm",
        [STORAGE_RESULT_LABELS] = "labels.gz",
        [STORAGE_RESULT_JSON] = "json",
    };
    if ((unsigned)kind >= sizeof suffix / sizeof suffix[0]) {
        if (len)
            buf[0] = '\0';
        return STORAGE_EINVAL;
    }
    int n = snprintf(buf, len, "%lld.%s", (long long)job_id, suffix[kind]);
    return n < 0 || (size_t)n >= len ? STORAGE_EINVAL : STORAGE_OK;
}

int storage_result_temp(struct storage *st, const char *name, char *path, size_t pathlen)
{
    if (file_mkdir_durable(st->data_dir, st->results_dir) != 0)
        return STORAGE_EIO;
    int n = snprintf(path, pathlen, "%s/.%s.tmp", st->results_dir, name);
    return n < 0 || (size_t)n >= pathlen ? STORAGE_EINVAL : STORAGE_OK;
}

int storage_adopt_result(struct storage *st, const char *tmp, const char *name, char *path,
                         size_t pathlen, char *err, size_t errlen)
{
    const char *dir = st->results_dir;
    /* chmod: private whatever wrote it. */
    if (snprintf(path, pathlen, "%s/%s", dir, name) >= (int)pathlen || chmod(tmp, 0640) != 0 ||
        file_sync(tmp, 0) != 0 || rename(tmp, path) != 0 || file_sync(dir, 1) != 0) {
        error_set(err, errlen, STORAGE_EIO, "cannot store results/%s: %s", name,
                  strerror(errno));
        unlink(tmp);
        return STORAGE_EIO;
    }
    return STORAGE_OK;
}

int storage_write_result(struct storage *st, int64_t id, const char *json, const void *labels,
                         size_t nbytes, char *path, size_t pathlen, char *err, size_t errlen)
{
    const char *dir = st->results_dir;
    char name[64], labels_path[4096];
    if (file_mkdir_durable(st->data_dir, dir) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot create results/: %s",
                         strerror(errno));
    storage_result_name(id, STORAGE_RESULT_LABELS, name, sizeof name);
    if (labels &&
        file_write_durable(dir, name, labels, nbytes, labels_path, sizeof labels_path) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot write results/%s: %s", name,
                         strerror(errno));
    storage_result_name(id, STORAGE_RESULT_JSON, name, sizeof name);
    if (file_write_durable(dir, name, json, strlen(json), path, pathlen) != 0)
        return error_set(err, errlen, STORAGE_EIO, "cannot write results/%s: %s", name,
                         strerror(errno));
    return STORAGE_OK;
}
