/*
 * window.c — sliding-window inference with bounded memory.
 *
 * Patches are visited slab by slab along z. A patch's outputs within the
 * margin of an inner edge are dropped (they saw zero padding where the
 * whole volume has data); the rest are weighted (constant, or a Gaussian
 * that trusts patch centres more than edges). A voxel that one patch
 * alone keeps is decided (argmax or threshold) straight from that patch's
 * output; one that several keep is summed in a ring of planes from its
 * first patch on and decided by its last, in the same pass that adds the
 * last output (argmax fused with blending). Nothing is zeroed, and only
 * the overlaps take memory: channels x (the most planes with overlaps
 * that one patch keeps) x ny x nx floats, whatever nz is.
 *
 * The weights are separable (w(z, y, x) = wz(z) wy(y) wx(x)), and the
 * patches and their kept parts are products of per-axis intervals, so the
 * total weight a voxel receives is a product too: cover_z[z] cover_y[y]
 * cover_x[x], three arrays instead of a volume of sums. For the same
 * reason the patches keeping a voxel are a product of per-axis runs, and
 * its first and last patch are found axis by axis.
 */
#include "inference/inference.h"

#include "common/buffer.h"
#include "common/checked.h"
#include "common/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Voxels of a row decided together (the argmax vectorises over them). */
#define ROW_CHUNK 256

/* Patch starts along one axis: as few patches as cover it in steps of at
 * most STEP, spread evenly between 0 and dim - patch (as nnU-Net places
 * them), so that the overlap is shared by every pair of neighbours instead
 * of piling up at the end. The kept part of a patch is all but MARGIN on
 * each inner side, so STEP <= patch - 2 * margin keeps the whole axis
 * covered: rounded, neighbouring starts are at most ceil((dim - patch) /
 * (n - 1)) <= STEP apart. */
static int patch_starts(int dim, int patch, int margin, double overlap, int *starts)
{
    int step = (int)floor((patch - 2 * margin) * (1.0 - overlap));
    if (step < 1)
        step = 1;
    if (patch >= dim) {
        starts[0] = 0;
        return 1;
    }
    long span = dim - patch, n = (span + step - 1) / step + 1;
    for (long i = 0; i < n; i++)
        starts[i] = (int)((2 * i * span + (n - 1)) / (2 * (n - 1))); /* round(i span / (n-1)) */
    return (int)n;
}

static void axis_weights(int patch, enum infer_blend blend, float *w)
{
    double sigma = patch / 8.0, centre = (patch - 1) / 2.0;
    for (int t = 0; t < patch; t++) {
        if (blend == INFER_BLEND_CONSTANT || sigma <= 0) {
            w[t] = 1.0f;
        } else {
            double g = exp(-(t - centre) * (t - centre) / (2 * sigma * sigma));
            /* Never zero: every voxel must be decided by some weight. */
            w[t] = (float)(g < 1e-3 ? 1e-3 : g);
        }
    }
}

static uint8_t decide(const float *acc, size_t stride, int channels, float weight,
                      const struct infer_window *w)
{
    if (w->decision == INFER_ARGMAX) {
        int best = 0;
        for (int c = 1; c < channels; c++)
            if (acc[c * stride] > acc[best * stride])
                best = c;
        return (uint8_t)best;
    }
    int label = 0;
    float best = 0;
    for (int c = 0; c < channels; c++) {
        float v = acc[c * stride] / weight;
        if (v >= w->threshold && (label == 0 || v > best)) {
            label = c + 1;
            best = v;
        }
    }
    return (uint8_t)label;
}

void infer_decide(const float *scores, int channels, size_t plane,
                  const struct infer_window *w, uint8_t *labels)
{
    for (size_t p = 0; p < plane; p++)
        labels[p] = decide(scores + p, plane, channels, 1.0f, w);
}

/* Labels for N voxels in a row whose channel c holds N values at V[c]:
 * argmax over the channels (the lowest channel on ties), or the threshold
 * rule with each value divided by the voxel's WEIGHT first (NULL: 1).
 * Argmax runs channel by channel along the row, which vectorises. */
static void decide_row(const float *const *v, int channels, int n, const float *weight,
                       const struct infer_window *w, uint8_t *labels)
{
    if (w->decision != INFER_ARGMAX) {
        float vals[255]; /* channels <= 255 */
        for (int i = 0; i < n; i++) {
            for (int c = 0; c < channels; c++)
                vals[c] = v[c][i];
            labels[i] = decide(vals, 1, channels, weight ? weight[i] : 1.0f, w);
        }
        return;
    }
    float best[ROW_CHUNK];
    for (int i0 = 0; i0 < n; i0 += ROW_CHUNK) {
        int m = n - i0 < ROW_CHUNK ? n - i0 : ROW_CHUNK;
        uint8_t *lab = labels + i0;
        for (int i = 0; i < m; i++) {
            best[i] = v[0][i0 + i];
            lab[i] = 0;
        }
        for (int c = 1; c < channels; c++) {
            const float *vc = v[c] + i0;
            for (int i = 0; i < m; i++) {
                int more = vc[i] > best[i];
                best[i] = more ? vc[i] : best[i];
                lab[i] = more ? (uint8_t)c : lab[i];
            }
        }
    }
}

/* One axis of the window: where its patches start, their weights, and for
 * each position the weight it receives in all. Patches along an axis are
 * visited in order and their kept parts move forward, so the patches that
 * cover a position are consecutive: patch i is the first to cover the
 * positions from FIRST_FROM[i] on and the last to cover those before
 * LAST_TO[i] (absolute positions). */
struct axis {
    int dim, patch, margin, n;
    int *start, *first_from, *last_to;
    float *w;     /* patch: weight along the axis */
    float *cover; /* dim: the sum of the weights of the patches keeping each position */
    int *count;   /* dim: how many patches keep each position */
};

static void axis_kept(const struct axis *a, int i, int *lo, int *hi)
{
    int s = a->start[i];
    *lo = s == 0 ? 0 : a->margin;
    *hi = s + a->patch == a->dim ? a->patch : a->patch - a->margin;
}

static int axis_init(struct axis *a, int dim, int patch, int margin, double overlap,
                     enum infer_blend blend)
{
    memset(a, 0, sizeof *a);
    a->dim = dim;
    a->patch = patch;
    a->margin = margin;
    a->start = malloc(((size_t)dim + 1) * sizeof *a->start);
    a->first_from = malloc(((size_t)dim + 1) * sizeof *a->first_from);
    a->last_to = malloc(((size_t)dim + 1) * sizeof *a->last_to);
    a->w = malloc((size_t)patch * sizeof *a->w);
    a->cover = calloc((size_t)dim, sizeof *a->cover);
    a->count = calloc((size_t)dim, sizeof *a->count);
    if (!a->start || !a->first_from || !a->last_to || !a->w || !a->cover || !a->count)
        return INFER_ENOMEM;
    a->n = patch_starts(dim, patch, margin, overlap, a->start);
    axis_weights(patch, blend, a->w);
    for (int i = 0; i < a->n; i++) {
        int lo, hi, s = a->start[i];
        axis_kept(a, i, &lo, &hi);
        for (int t = lo; t < hi; t++) {
            a->cover[s + t] += a->w[t];
            a->count[s + t]++;
        }
        a->first_from[i] = s + lo;
        a->last_to[i] = s + hi;
        if (i > 0) {
            int plo, phi;
            axis_kept(a, i - 1, &plo, &phi);
            if (a->start[i - 1] + phi > a->first_from[i])
                a->first_from[i] = a->start[i - 1] + phi;
        }
        if (i + 1 < a->n) {
            int nlo, nhi;
            axis_kept(a, i + 1, &nlo, &nhi);
            if (a->start[i + 1] + nlo < a->last_to[i])
                a->last_to[i] = a->start[i + 1] + nlo;
        }
    }
    return INFER_OK;
}

static void axis_free(struct axis *a)
{
    free(a->start);
    free(a->first_from);
    free(a->last_to);
    free(a->w);
    free(a->cover);
    free(a->count);
}

/* N voxels of VOL from OFFSET on, as float, into DST. */
static void copy_voxels(const struct infer_volume *vol, size_t offset, size_t n, float *dst)
{
    if (vol->data) {
        memcpy(dst, vol->data + offset, n * sizeof *dst);
        return;
    }
    const int16_t *src = vol->data16 + offset;
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}

/* Copying a patch out of the volume, row by row on the model's threads. */
struct patch_cut {
    const struct infer_volume *vol;
    int s0[3], p[3];
    float *input;
};

static void cut_rows(void *ud, long begin, long end)
{
    const struct patch_cut *c = ud;
    const struct infer_grid *g = &c->vol->grid;
    const size_t plane = (size_t)g->nx * g->ny;
    for (long i = begin; i < end; i++) {
        const int z = (int)(i / c->p[1]), y = (int)(i % c->p[1]);
        copy_voxels(c->vol,
                    (size_t)(c->s0[0] + z) * plane + (size_t)(c->s0[1] + y) * g->nx + c->s0[2],
                    (size_t)c->p[2], c->input + (size_t)i * c->p[2]);
    }
}

/* Copies the patch at S0 (z, y, x) of size P out of VOL into INPUT, as
 * float whatever the volume holds. */
static void cut_patch(const struct infer_volume *vol, const int s0[3], const int p[3],
                      float *input)
{
    struct patch_cut c = {vol, {s0[0], s0[1], s0[2]}, {p[0], p[1], p[2]}, input};
    infer_parallel_for((long)p[0] * p[1], cut_rows, &c);
}

/* Where the sliding window keeps its running sums: only voxels that more
 * than one patch keeps need one (the others are decided straight from
 * their patch's output). Along z a ring of R planes per channel: plane Z
 * that needs sums takes slot rank(Z) mod R, its rank counting such planes
 * before it. The planes holding live sums at any time are among those one
 * patch keeps, consecutive in rank, so R = the most any patch keeps
 * holds them all. */
struct sums {
    float *acc;          /* channels x r planes, or NULL when no voxel needs sums */
    size_t channel_step; /* r * plane */
    int *slot;           /* nz: plane Z's slot, -1 when it needs none */
    int r;
};

/* Plans S's slots from the axes (nothing is allocated for the sums yet). */
static int sums_plan(struct sums *s, const struct axis ax[3], size_t plane)
{
    memset(s, 0, sizeof *s);
    const int nz = ax[0].dim;
    if (!(s->slot = malloc((size_t)nz * sizeof *s->slot)))
        return INFER_ENOMEM;
    /* An overlap across or along the rows makes every plane need sums. */
    int across = 0;
    for (int a = 1; a < 3; a++)
        for (int t = 0; t < ax[a].dim; t++)
            across |= ax[a].count[t] > 1;
    int rank = 0;
    for (int z = 0; z < nz; z++)
        s->slot[z] = across || ax[0].count[z] > 1 ? rank++ : -1;
    for (int i = 0; i < ax[0].n; i++) {
        int lo, hi, kept = 0;
        axis_kept(&ax[0], i, &lo, &hi);
        for (int z = ax[0].start[i] + lo; z < ax[0].start[i] + hi; z++)
            kept += s->slot[z] >= 0;
        if (kept > s->r)
            s->r = kept;
    }
    for (int z = 0; z < nz; z++)
        if (s->slot[z] >= 0)
            s->slot[z] %= s->r;
    s->channel_step = (size_t)s->r * plane;
    return INFER_OK;
}

static void sums_free(struct sums *s)
{
    free(s->acc);
    free(s->slot);
}

/* What a patch does with a run of voxels of one row: decide them from its
 * output alone (the only patch keeping them), start their sums (the first
 * of several), add to them, or add and decide (the last). */
enum run_kind { RUN_DECIDE_ALONE, RUN_START, RUN_ADD, RUN_FINISH };

struct row {
    const float *out[255];  /* each channel's output at the run's first voxel */
    float *acc[255];        /* each channel's sums there (RUN_DECIDE_ALONE: unused) */
    const float *wx;        /* the x weights at the run's first voxel */
    float wzy;              /* the row's z and y weight */
    const float *cover_x;   /* the run's voxels' total x weight */
    float cover_zy;
    uint8_t *labels;
};

static void run_voxels(enum run_kind kind, const struct row *r, int n, int channels,
                       const struct infer_window *w, float *tmp)
{
    switch (kind) {
    case RUN_DECIDE_ALONE:
        /* One patch's weight divides out of its own output. */
        decide_row(r->out, channels, n, NULL, w, r->labels);
        return;
    case RUN_START:
        for (int c = 0; c < channels; c++)
            for (int x = 0; x < n; x++)
                r->acc[c][x] = r->wzy * r->wx[x] * r->out[c][x];
        return;
    case RUN_ADD:
        for (int c = 0; c < channels; c++)
            for (int x = 0; x < n; x++)
                r->acc[c][x] += r->wzy * r->wx[x] * r->out[c][x];
        return;
    case RUN_FINISH:
        for (int x0 = 0; x0 < n; x0 += ROW_CHUNK) {
            int m = n - x0 < ROW_CHUNK ? n - x0 : ROW_CHUNK;
            const float *v[255];
            float *weight = tmp + (size_t)channels * ROW_CHUNK;
            for (int c = 0; c < channels; c++) {
                float *t = tmp + (size_t)c * ROW_CHUNK;
                for (int x = 0; x < m; x++)
                    t[x] = r->acc[c][x0 + x] + r->wzy * r->wx[x0 + x] * r->out[c][x0 + x];
                v[c] = t;
            }
            for (int x = 0; x < m; x++)
                weight[x] = r->cover_zy * r->cover_x[x0 + x];
            decide_row(v, channels, m, weight, w, r->labels + x0);
        }
        return;
    }
}

/* One patch's output, folded into the labels and sums row by row: rows
 * are independent, so they are split among the model's threads. */
struct patch_rows {
    const struct axis *ax;
    const struct sums *sums;
    const struct infer_window *w;
    const float *output;
    uint8_t *labels;
    size_t patch_vox, plane;
    int nx, channels;
    int p[3], s0[3], idx[3], lo[3], hi[3];
    int cut[4]; /* along x: where the kept row's runs start and end */
    int failed; /* out of memory for a row's scratch */
};

static void fold_rows(void *ud, long begin, long end)
{
    struct patch_rows *pr = ud;
    const struct axis *ax = pr->ax;
    const int C = pr->channels, ny_kept = pr->hi[1] - pr->lo[1];
    float *tmp = malloc(((size_t)C + 1) * ROW_CHUNK * sizeof *tmp);
    if (!tmp) {
        pr->failed = 1;
        return;
    }
    struct row r;
    for (long i = begin; i < end; i++) {
        const int z = pr->lo[0] + (int)(i / ny_kept), y = pr->lo[1] + (int)(i % ny_kept);
        const int Z = pr->s0[0] + z, Y = pr->s0[1] + y;
        const int fz = Z >= ax[0].first_from[pr->idx[0]], lz = Z < ax[0].last_to[pr->idx[0]];
        const int fy = Y >= ax[1].first_from[pr->idx[1]], ly = Y < ax[1].last_to[pr->idx[1]];
        const size_t orow = ((size_t)z * pr->p[1] + y) * pr->p[2];
        const size_t vrow = (size_t)Y * pr->nx + (size_t)pr->s0[2];
        r.wzy = ax[0].w[z] * ax[1].w[y];
        r.cover_zy = ax[0].cover[Z] * ax[1].cover[Y];
        for (int k = 0; k < 3; k++) {
            const int x = pr->cut[k], n = pr->cut[k + 1] - pr->cut[k];
            if (n <= 0)
                continue;
            const int X = pr->s0[2] + x;
            const int first = fz && fy && X >= ax[2].first_from[pr->idx[2]];
            const int last = lz && ly && X < ax[2].last_to[pr->idx[2]];
            const enum run_kind kind = first && last ? RUN_DECIDE_ALONE
                                       : first       ? RUN_START
                                       : last        ? RUN_FINISH
                                                     : RUN_ADD;
            for (int c = 0; c < C; c++) {
                r.out[c] = pr->output + (size_t)c * pr->patch_vox + orow + x;
                /* A voxel kept more than once lies in a plane with a slot. */
                if (kind != RUN_DECIDE_ALONE)
                    r.acc[c] = pr->sums->acc + c * pr->sums->channel_step +
                               (size_t)pr->sums->slot[Z] * pr->plane + vrow + x;
            }
            r.wx = ax[2].w + x;
            r.cover_x = ax[2].cover + X;
            r.labels = pr->labels + (size_t)Z * pr->plane + vrow + x;
            run_voxels(kind, &r, n, C, pr->w, tmp);
        }
    }
    free(tmp);
}

int infer_sliding_window(struct infer_model *m, const struct infer_volume *vol,
                         const struct infer_window *w, uint8_t *labels, char *err,
                         size_t errlen)
{
    const struct infer_grid *g = &vol->grid;
    const int dim[3] = {g->nz, g->ny, g->nx};
    int p[3];
    int mg[3];
    for (int a = 0; a < 3; a++) {
        if (w->patch[a] <= 0 || w->margin[a] < 0)
            return error_set(err, errlen, INFER_EINVAL, "patch size must be positive");
        p[a] = w->patch[a] < dim[a] ? w->patch[a] : dim[a];
        mg[a] = p[a] == dim[a] ? 0 : w->margin[a]; /* one patch spans the axis */
        if (p[a] - 2 * mg[a] < 1)
            return error_set(err, errlen, INFER_EINVAL,
                             "patch %d is too small for a margin of %d on each side", w->patch[a],
                             w->margin[a]);
    }
    if (w->channels < 1 || w->channels > 255 || w->overlap < 0 || w->overlap >= 1)
        return error_set(err, errlen, INFER_EINVAL, "invalid channels or overlap");
    if (w->decision == INFER_ARGMAX && w->channels < 2)
        return error_set(err, errlen, INFER_EINVAL, "argmax needs at least two channels");

    if (g->nx < 1 || g->ny < 1 || g->nz < 1 || (!vol->data && !vol->data16))
        return error_set(err, errlen, INFER_EINVAL, "empty volume");
    const int C = w->channels;
    struct axis ax[3] = {0};
    struct sums sums = {0};
    float *input = NULL;
    int rc = INFER_OK;
    for (int a = 0; a < 3 && rc == INFER_OK; a++)
        rc = axis_init(&ax[a], dim[a], p[a], mg[a], w->overlap, w->blend);
    const size_t plane = (size_t)g->nx * g->ny; /* the volume's: no wrap */
    if (rc != INFER_OK || (rc = sums_plan(&sums, ax, plane)) != INFER_OK)
        goto done;
    /* Buffers: the patch in and out (1 + C patches) and the sums of the
     * voxels several patches keep (C planes per ring slot), checked
     * against the budget before any is allocated. */
    size_t patch_vox, out_vox, sum_vox, need;
    size_t max_voxels = w->max_voxels ? w->max_voxels : INFER_DEFAULT_MAX_VOXELS;
    if (!size_mul3_ok((size_t)p[0], (size_t)p[1], (size_t)p[2], &patch_vox) ||
        !size_mul_ok((size_t)C, patch_vox, &out_vox) ||
        !size_mul_ok((size_t)C, sums.channel_step, &sum_vox) ||
        !size_add_ok(patch_vox, out_vox, &need) || !size_add_ok(need, sum_vox, &need) ||
        need > max_voxels) {
        double total = (double)p[0] * p[1] * p[2] * (1.0 + C) + (double)C * sums.r * plane;
        rc = error_set(err, errlen, INFER_ELIMIT,
                       "the sliding window needs %.0f voxels (patches of %dx%dx%d in and %d "
                       "channels out, sums over %d planes of %dx%d), over the limit of %zu",
                       total, p[2], p[1], p[0], C, sums.r, g->nx, g->ny, max_voxels);
        goto done;
    }
    /* Not zeroed: a voxel's first patch stores its sum, the next ones add. */
    if (sum_vox && !(sums.acc = buffer_alloc(sum_vox * sizeof *sums.acc))) {
        rc = INFER_ENOMEM;
        goto done;
    }
    /* Patches as wide as a float volume are its own planes: read in place. */
    const int in_place = vol->data && p[1] == g->ny && p[2] == g->nx;
    if (!in_place && !(input = buffer_alloc(patch_vox * sizeof *input))) {
        rc = INFER_ENOMEM;
        goto done;
    }

    const long total = (long)ax[0].n * ax[1].n * ax[2].n;
    long done_patches = 0;
    for (int zi = 0; zi < ax[0].n; zi++) {
        for (int yi = 0; yi < ax[1].n; yi++) {
            for (int xi = 0; xi < ax[2].n; xi++) {
                const int s0[3] = {ax[0].start[zi], ax[1].start[yi], ax[2].start[xi]};
                const int idx[3] = {zi, yi, xi};
                const float *in = input;
                if (in_place)
                    in = vol->data + (size_t)s0[0] * plane;
                else
                    cut_patch(vol, s0, p, input);
                const int64_t shape[5] = {1, 1, p[0], p[1], p[2]};
                int64_t oshape[8];
                int ondim = 0;
                const float *output = NULL;
                rc = infer_model_run_view(m, in, shape, 5, &output, oshape, &ondim, err, errlen);
                if (rc == INFER_OK &&
                    (ondim != 5 || oshape[0] != 1 || oshape[1] != C || oshape[2] != p[0] ||
                     oshape[3] != p[1] || oshape[4] != p[2]))
                    rc = error_set(err, errlen, INFER_EMODEL,
                                   "the model returned a tensor of %d dims (%lldx%lld...) where "
                                   "1x%dx%dx%dx%d was expected",
                                   ondim, (long long)(ondim > 0 ? oshape[0] : 0),
                                   (long long)(ondim > 1 ? oshape[1] : 0), C, p[0], p[1], p[2]);
                if (rc != INFER_OK)
                    goto done;
                struct patch_rows pr = {.ax = ax, .sums = &sums, .w = w, .output = output,
                                        .labels = labels, .patch_vox = patch_vox,
                                        .plane = plane, .nx = g->nx, .channels = C};
                for (int a = 0; a < 3; a++) {
                    pr.p[a] = p[a];
                    pr.s0[a] = s0[a];
                    pr.idx[a] = idx[a];
                    axis_kept(&ax[a], idx[a], &pr.lo[a], &pr.hi[a]);
                }
                /* Along x a kept row splits into at most three runs, at the
                 * positions where this patch stops being the first and
                 * starts being the last to keep a voxel. */
                const int xf = ax[2].first_from[xi] - s0[2], xl = ax[2].last_to[xi] - s0[2];
                pr.cut[0] = pr.lo[2];
                pr.cut[1] = xf < xl ? xf : xl;
                pr.cut[2] = xf < xl ? xl : xf;
                pr.cut[3] = pr.hi[2];
                for (int k = 1; k < 3; k++)
                    pr.cut[k] = pr.cut[k] < pr.lo[2]   ? pr.lo[2]
                                : pr.cut[k] > pr.hi[2] ? pr.hi[2]
                                                       : pr.cut[k];
                infer_parallel_for((long)(pr.hi[0] - pr.lo[0]) * (pr.hi[1] - pr.lo[1]), fold_rows,
                                   &pr);
                if (pr.failed) {
                    rc = INFER_ENOMEM;
                    goto done;
                }
                if (w->progress && w->progress(w->progress_ud, ++done_patches, total)) {
                    rc = error_set(err, errlen, INFER_ECANCELLED, "cancelled");
                    goto done;
                }
            }
        }
    }
    rc = INFER_OK;
done:
    infer_model_trim(m);
    for (int a = 0; a < 3; a++)
        axis_free(&ax[a]);
    sums_free(&sums);
    free(input);
    return rc;
}

int infer_slices(struct infer_model *m, const struct infer_volume *vol, int batch, int context,
                 const struct infer_window *w, uint8_t *labels, float *scores, char *err,
                 size_t errlen)
{
    const struct infer_grid *g = &vol->grid;
    if (batch < 1 || context < 0 || (!labels) == (!scores))
        return error_set(err, errlen, INFER_EINVAL, "invalid slice batch, context or outputs");
    if (w->channels < 1 || w->channels > 255)
        return error_set(err, errlen, INFER_EINVAL, "invalid channels");
    if (labels && w->decision == INFER_ARGMAX && w->channels < 2)
        return error_set(err, errlen, INFER_EINVAL, "argmax needs at least two channels");
    if (g->nx < 1 || g->ny < 1 || g->nz < 1 || (!vol->data && !vol->data16))
        return error_set(err, errlen, INFER_EINVAL, "empty volume");
    const int C = w->channels, depth = 2 * context + 1;
    if (batch > g->nz)
        batch = g->nz;
    /* The batch in (depth planes per slice) and out (C planes per slice
     * for labels, C numbers for scores), checked against the budget first. */
    size_t plane, in_vox, out_vox, need;
    size_t max_voxels = w->max_voxels ? w->max_voxels : INFER_DEFAULT_MAX_VOXELS;
    if (!size_mul_ok((size_t)g->nx, (size_t)g->ny, &plane) ||
        !size_mul3_ok((size_t)batch, (size_t)depth, plane, &in_vox) ||
        !size_mul3_ok((size_t)batch, (size_t)C, labels ? plane : 1, &out_vox) ||
        !size_add_ok(in_vox, out_vox, &need) || need > max_voxels)
        return error_set(err, errlen, INFER_ELIMIT,
                         "a batch of %d slices of %dx%d with %d channels in and %d out is over "
                         "the limit of %zu voxels",
                         batch, g->nx, g->ny, depth, C, max_voxels);
    float *input = buffer_alloc(in_vox * sizeof *input);
    float *output = buffer_alloc(out_vox * sizeof *output);
    int rc = INFER_ENOMEM;
    if (!input || !output)
        goto done;
    for (int k0 = 0; k0 < g->nz; k0 += batch) {
        int b = g->nz - k0 < batch ? g->nz - k0 : batch;
        /* Slice k with its neighbours k-context..k+context as channels;
         * beyond the volume's ends its end slices stand in. */
        for (int i = 0; i < b; i++)
            for (int d = 0; d < depth; d++) {
                int z = k0 + i - context + d;
                z = z < 0 ? 0 : z >= g->nz ? g->nz - 1 : z;
                copy_voxels(vol, (size_t)z * plane, plane,
                            input + ((size_t)i * depth + (size_t)d) * plane);
            }
        int64_t shape[4] = {b, depth, g->ny, g->nx}, oshape[8];
        int ond = 0;
        rc = infer_model_run_into(m, input, shape, 4, output, out_vox, oshape, &ond, err, errlen);
        if (rc != INFER_OK)
            goto done;
        int ok = labels ? ond == 4 && oshape[0] == b && oshape[1] == C && oshape[2] == g->ny &&
                              oshape[3] == g->nx
                        : ond == 2 && oshape[0] == b && oshape[1] == C;
        if (!ok && labels) {
            rc = error_set(err, errlen, INFER_EMODEL,
                           "the model's output is not %d x %d x %d x %d (slices x channels x "
                           "rows x columns)", b, C, g->ny, g->nx);
            goto done;
        }
        if (!ok) {
            rc = error_set(err, errlen, INFER_EMODEL,
                           "the model's output is not %d x %d (slices x channels)", b, C);
            goto done;
        }
        for (int i = 0; i < b; i++) {
            if (scores) {
                memcpy(scores + (size_t)(k0 + i) * C, output + (size_t)i * C,
                       (size_t)C * sizeof *scores);
                continue;
            }
            const float *o = output + (size_t)i * C * plane;
            uint8_t *l = labels + (size_t)(k0 + i) * plane;
            for (size_t p = 0; p < plane; p++)
                l[p] = decide(o + p, plane, C, 1.0f, w);
        }
        if (w->progress && w->progress(w->progress_ud, k0 + b, g->nz)) {
            rc = INFER_ECANCELLED;
            goto done;
        }
    }
    rc = INFER_OK;
done:
    infer_model_trim(m);
    free(input);
    free(output);
    return rc;
}
