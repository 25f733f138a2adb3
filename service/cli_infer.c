/* cli_infer.c — `ainode infer`: one model on one series, in the foreground. */
#include "service/cli.h"

#include "config/config.h"
#include "inference/inference.h"
#include "service/pipeline.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

struct paths {
    char **v;
    size_t n, cap;
};

static int add_path(struct paths *p, const char *path)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **v = realloc(p->v, cap * sizeof *v);
        if (!v)
            return -1;
        p->v = v;
        p->cap = cap;
    }
    if (!(p->v[p->n] = strdup(path)))
        return -1;
    p->n++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds PATH, or the regular files below it when it is a folder. */
static int collect(struct paths *p, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "ainode: %s: cannot read\n", path);
        return -1;
    }
    if (!S_ISDIR(sb.st_mode))
        return add_path(p, path);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *child = malloc(len);
        if (!child) {
            rc = -1;
            break;
        }
        snprintf(child, len, "%s/%s", path, e->d_name);
        rc = collect(p, child);
        free(child);
    }
    closedir(d);
    return rc;
}

int cli_infer(const struct config *cfg, const char *model_name, char *const *args, int n,
              const char *labels_out)
{
    const struct config_model *cm = config_find_model(cfg, model_name);
    if (!cm) {
        fprintf(stderr, "ainode: no model '%s' in %s\n", model_name, cfg->path);
        return 2;
    }
    struct paths files = {0};
    int rc = 1;
    for (int i = 0; i < n; i++)
        if (collect(&files, args[i]) != 0)
            goto out;
    /* The order of the files must not matter; a fixed one keeps runs alike. */
    qsort(files.v, files.n, sizeof *files.v, by_name);

    char err[512] = "";
    struct infer_model *model = NULL;
    pipeline_tune_allocator();
    infer_set_threads(cm->threads);
    if (infer_model_load_ex(cm->file, cm->device, (enum infer_precision)cm->precision, &model,
                            err, sizeof err) != INFER_OK) {
        fprintf(stderr, "ainode: model %s: %s\n", cm->name, err);
        goto out;
    }
    struct pipeline_output o;
    struct pipeline_timing t;
    if (pipeline_run(cm, model, (const char *const *)files.v, files.n, NULL, NULL, &o, &t, err,
                     sizeof err) != 0) {
        fprintf(stderr, "ainode: %s\n", err);
        infer_model_free(model);
        goto out;
    }
    infer_model_free(model);
    size_t nvox = (size_t)o.grid.nx * o.grid.ny * o.grid.nz;
    if (labels_out && !o.labels) {
        fprintf(stderr, "ainode: model %s classifies: it gives no labels to write\n", cm->name);
        pipeline_output_free(&o);
        goto out;
    }
    if (labels_out) {
        FILE *f = fopen(labels_out, "wb");
        if (!f || fwrite(o.labels, 1, nvox, f) != nvox || fclose(f) != 0) {
            fprintf(stderr, "ainode: cannot write %s\n", labels_out);
            pipeline_output_free(&o);
            goto out;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char *summary = pipeline_summary_json(cm, &o);
    json_t *doc = json_pack(
        "{s:s, s:i, s:{s:i, s:i, s:i}, s:o, s:{s:f, s:f, s:f, s:f, s:f, s:f}, s:f}", "model",
        cm->name, "files", (int)files.n, "grid", "nx", o.grid.nx, "ny", o.grid.ny, "nz",
        o.grid.nz, o.labels ? "labels" : "findings",
        summary ? json_loads(summary, 0, NULL) : json_null(), "seconds",
        "decode", t.decode, "assemble", t.assemble, "preprocess", t.preprocess, "model", t.model,
        "postprocess", t.postprocess, "total",
        t.decode + t.assemble + t.preprocess + t.model + t.postprocess, "peak_rss_mb",
        ru.ru_maxrss / 1024.0);
    free(summary);
    if (doc && !o.labels) { /* a classification: images, no grid */
        json_object_set_new(doc, "images", json_integer((json_int_t)o.n_images));
        json_object_del(doc, "grid");
    }
    if (doc) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        rc = 0;
    }
    json_decref(doc);
    pipeline_output_free(&o);
out:
    for (size_t i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    return rc;
}
