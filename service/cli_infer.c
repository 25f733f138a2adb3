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

/* Loads CM as a worker would; NULL with the reason printed. */
static struct infer_model *load(const struct config_model *cm, const struct config_model *on)
{
    char err[512] = "";
    struct infer_model *model = NULL;
    if (infer_model_load_ex(cm->file, on->device, (enum infer_precision)on->precision, &model,
                            err, sizeof err) != INFER_OK)
        fprintf(stderr, "ainode: model %s: %s\n", cm->name, err);
    return model;
}

/* The heads HEADS (N) of the encoder ENC on FILES, as one group: the
 * encoder once, then each head on its features. */
static int infer_heads(const struct config_model *enc, const struct config_model **heads,
                       size_t n, const struct paths *files)
{
    char err[512] = "";
    int rc = 1;
    struct pipeline_output eo = {0};
    struct pipeline_timing et;
    pipeline_tune_allocator();
    infer_set_threads(enc->threads);
    struct infer_model *em = load(enc, enc);
    if (!em)
        return 1;
    if (pipeline_run(enc, em, (const char *const *)files->v, files->n, NULL, NULL, &eo, &et,
                     err, sizeof err) != 0) {
        fprintf(stderr, "ainode: %s\n", err);
        infer_model_free(em);
        return 1;
    }
    infer_model_free(em);
    json_t *models = json_object();
    double heads_total = 0;
    for (size_t i = 0; i < n; i++) {
        struct infer_model *hm = load(heads[i], enc);
        struct pipeline_output ho;
        struct pipeline_timing ht;
        if (!hm)
            goto out;
        int prc = pipeline_run_head(heads[i], hm, &eo, &ho, &ht, err, sizeof err);
        infer_model_free(hm);
        if (prc != 0) {
            fprintf(stderr, "ainode: model %s: %s\n", heads[i]->name, err);
            goto out;
        }
        char *summary = pipeline_summary_json(heads[i], &ho);
        double total = ht.preprocess + ht.model + ht.postprocess;
        heads_total += total;
        json_object_set_new(models, heads[i]->name,
                            json_pack("{s:o, s:{s:f, s:f}}", "findings",
                                      summary ? json_loads(summary, 0, NULL) : json_null(),
                                      "seconds", "model", ht.model, "total", total));
        free(summary);
        pipeline_output_free(&ho);
    }
    double enc_total = et.decode + et.assemble + et.preprocess + et.model + et.postprocess;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    json_t *doc = json_pack(
        "{s:s, s:I, s:{s:s, s:i, s:{s:f, s:f, s:f, s:f}}, s:O, s:f, s:f}", "model", enc->name,
        "images", (json_int_t)eo.n_images, "encoder", "model", enc->name, "forwards",
        eo.forwards, "seconds", "decode", et.decode, "preprocess", et.preprocess, "model",
        et.model, "total", enc_total, "heads", models, "total_seconds", enc_total + heads_total,
        "peak_rss_mb", ru.ru_maxrss / 1024.0);
    if (doc) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        rc = 0;
    }
    json_decref(doc);
out:
    json_decref(models);
    pipeline_output_free(&eo);
    return rc;
}

/* MODELS (comma-separated) as heads of one encoder into HEADS (N_MAX),
 * their count in *N and the encoder in *ENC; 0, or 2 with the reason
 * printed. A single model that is no head is no group (*N 0). */
static int group_of(const struct config *cfg, const char *models,
                    const struct config_model **heads, size_t n_max, size_t *n,
                    const struct config_model **enc)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", models);
    *n = 0;
    *enc = NULL;
    for (char *save = NULL, *name = strtok_r(buf, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
        const struct config_model *cm = config_find_model(cfg, name);
        if (!cm) {
            fprintf(stderr, "ainode: no model '%s' in %s\n", name, cfg->path);
            return 2;
        }
        const struct config_model *e = cm->manifest.from ? config_find_model(cfg,
                                                                             cm->manifest.from)
                                                         : NULL;
        if (!e && strchr(models, ',')) {
            fprintf(stderr, "ainode: model %s is no head: several models run together only "
                            "as heads of one encoder\n", name);
            return 2;
        }
        if (!e)
            return 0;
        if (*enc && *enc != e) {
            fprintf(stderr, "ainode: models %s and %s read different encoders\n",
                    heads[0]->name, name);
            return 2;
        }
        if (*n == n_max) {
            fprintf(stderr, "ainode: at most %zu heads at once\n", n_max);
            return 2;
        }
        *enc = e;
        heads[(*n)++] = cm;
    }
    return 0;
}

int cli_infer(const struct config *cfg, const char *model_name, char *const *args, int n,
              const char *labels_out)
{
    const struct config_model *heads[64], *enc = NULL;
    size_t n_heads = 0;
    int grc = group_of(cfg, model_name, heads, 64, &n_heads, &enc);
    if (grc != 0)
        return grc;
    const struct config_model *cm = n_heads ? enc : config_find_model(cfg, model_name);
    if (!cm) {
        fprintf(stderr, "ainode: no model '%s' in %s\n", model_name, cfg->path);
        return 2;
    }
    if (n_heads && labels_out) {
        fprintf(stderr, "ainode: heads classify: they give no labels to write\n");
        return 2;
    }
    struct paths files = {0};
    int rc = 1;
    for (int i = 0; i < n; i++)
        if (collect(&files, args[i]) != 0)
            goto out;
    /* The order of the files must not matter; a fixed one keeps runs alike. */
    qsort(files.v, files.n, sizeof *files.v, by_name);
    if (n_heads) {
        rc = infer_heads(enc, heads, n_heads, &files);
        goto out;
    }

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
    /* A segmentation of images: slice k of the labels is image k. */
    if (doc && o.labels && cm->manifest.input_kind == CONFIG_INPUT_IMAGE)
        json_object_set_new(doc, "images", json_integer((json_int_t)o.n_images));
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
