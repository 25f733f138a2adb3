/*
 * window.c — sliding-window inference with bounded memory.
 *
 * Patches are visited slab by slab along z. A patch's outputs within the
 * margin of an inner edge are dropped (they saw zero padding where the
 * whole volume has data); the rest are weighted
 * (constant, or a Gaussian that trusts patch centres more than edges) and
 * summed into a ring of PATCH_Z slices; a slice is decided (argmax or
 * threshold) and its ring slot reused as soon as no later patch can touch
 * it. Memory: channels x patch_z x ny x nx floats, whatever nz is.
 *
 * The weights are separable (w(z, y, x) = wz(z) wy(y) wx(x)), and the
 * patches and their kept parts are products of per-axis intervals, so the
 * total weight a voxel receives is a product too: cover_z[z] cover_y[y]
 * cover_x[x], three arrays instead of a volume of sums.
 */
#include "inference/inference.h"

#include "common/buffer.h"
#include "common/checked.h"
#include "common/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Patch starts along one axis: every STEP, and a last one flush with the
 * end. The kept part of a patch is all but MARGIN on each inner side, so
 * STEP <= patch - 2 * margin keeps the whole axis covered. */
static int patch_starts(int dim, int patch, int margin, double overlap, int *starts)
{
    int step = (int)floor((patch - 2 * margin) * (1.0 - overlap));
    if (step < 1)
        step = 1;
    int n = 0;
    for (int s = 0;; s += step) {
        if (s + patch >= dim) {
            starts[n++] = dim - patch;
            return n;
        }
        starts[n++] = s;
    }
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

    if (g->nx < 1 || g->ny < 1 || g->nz < 1 || !vol->data)
        return error_set(err, errlen, INFER_EINVAL, "empty volume");
    const int C = w->channels;
    /* Buffers: the patch in and out (1 + C patches) and the ring of
     * accumulated slabs (C slabs of patch depth), all checked against the
     * budget before any is allocated. */
    size_t plane, patch_vox, out_vox, slab, acc_vox, need;
    size_t max_voxels = w->max_voxels ? w->max_voxels : INFER_DEFAULT_MAX_VOXELS;
    if (!size_mul_ok((size_t)g->nx, (size_t)g->ny, &plane) ||
        !size_mul3_ok((size_t)p[0], (size_t)p[1], (size_t)p[2], &patch_vox) ||
        !size_mul_ok((size_t)C, patch_vox, &out_vox) ||
        !size_mul_ok((size_t)p[0], plane, &slab) || !size_mul_ok((size_t)C, slab, &acc_vox) ||
        !size_add_ok(patch_vox, out_vox, &need) || !size_add_ok(need, acc_vox, &need) ||
        need > max_voxels ||
        !size_mul_ok(need, sizeof(float), &need))
        return error_set(err, errlen, INFER_ELIMIT,
                         "the sliding window needs %d channels x %d slices of %dx%d voxels, over "
                         "the limit of %zu voxels",
                         C, p[0], g->nx, g->ny, max_voxels);
    int *starts[3] = {NULL, NULL, NULL};
    int nstarts[3];
    float *wt[3] = {NULL, NULL, NULL};
    float *cover[3] = {NULL, NULL, NULL};
    float *input = buffer_alloc(patch_vox * sizeof *input);
    float *output = buffer_alloc(out_vox * sizeof *output);
    float *acc = buffer_zalloc(acc_vox, sizeof *acc);
    int rc = INFER_ENOMEM;
    if (!input || !output || !acc)
        goto done;
    for (int a = 0; a < 3; a++) {
        starts[a] = malloc(((size_t)dim[a] + 1) * sizeof(int));
        wt[a] = malloc((size_t)p[a] * sizeof(float));
        cover[a] = calloc((size_t)dim[a], sizeof(float));
        if (!starts[a] || !wt[a] || !cover[a])
            goto done;
        nstarts[a] = patch_starts(dim[a], p[a], mg[a], w->overlap, starts[a]);
        axis_weights(p[a], w->blend, wt[a]);
        /* The weight each position receives along this axis, from the
         * kept part of every patch (as the accumulation below keeps it). */
        for (int i = 0; i < nstarts[a]; i++) {
            int s0 = starts[a][i];
            int lo = s0 == 0 ? 0 : mg[a], hi = s0 + p[a] == dim[a] ? p[a] : p[a] - mg[a];
            for (int t = lo; t < hi; t++)
                cover[a][s0 + t] += wt[a][t];
        }
    }

    const long total = (long)nstarts[0] * nstarts[1] * nstarts[2];
    long done_patches = 0;
    const size_t ring = (size_t)p[0];
    const size_t acc_stride = ring * plane; /* between channels */
    int decided = 0;                        /* slices [0, decided) are final */
    for (int zi = 0; zi < nstarts[0]; zi++) {
        int z0 = starts[0][zi];
        for (int yi = 0; yi < nstarts[1]; yi++) {
            int y0 = starts[1][yi];
            for (int xi = 0; xi < nstarts[2]; xi++) {
                int x0 = starts[2][xi];
                for (int z = 0; z < p[0]; z++)
                    for (int y = 0; y < p[1]; y++)
                        memcpy(input + ((size_t)z * p[1] + y) * p[2],
                               vol->data + (size_t)(z0 + z) * plane + (size_t)(y0 + y) * g->nx +
                                   x0,
                               (size_t)p[2] * sizeof *input);
                const int64_t shape[5] = {1, 1, p[0], p[1], p[2]};
                int64_t oshape[8];
                int ondim;
                rc = infer_model_run_into(m, input, shape, 5, output, out_vox,
                                          oshape, &ondim, err, errlen);
                /* A wrong shape is the clearer message, also when the
                 * output did not fit. */
                if ((rc == INFER_OK || ondim > 0) &&
                    (ondim != 5 || oshape[0] != 1 || oshape[1] != C || oshape[2] != p[0] ||
                     oshape[3] != p[1] || oshape[4] != p[2]))
                    rc = error_set(err, errlen, INFER_EMODEL,
                                   "the model returned a tensor of %d dims (%lldx%lld...) where "
                                   "1x%dx%dx%dx%d was expected",
                                   ondim, (long long)(ondim > 0 ? oshape[0] : 0),
                                   (long long)(ondim > 1 ? oshape[1] : 0), C, p[0], p[1], p[2]);
                if (rc != INFER_OK)
                    goto done;
                int lo[3], hi[3];
                const int s0[3] = {z0, y0, x0};
                for (int a = 0; a < 3; a++) {
                    lo[a] = s0[a] == 0 ? 0 : mg[a];
                    hi[a] = s0[a] + p[a] == dim[a] ? p[a] : p[a] - mg[a];
                }
                /* Row by row and channel by channel: contiguous inner loops. */
                for (int z = lo[0]; z < hi[0]; z++) {
                    size_t slot = (size_t)(z0 + z) % ring;
                    for (int y = lo[1]; y < hi[1]; y++) {
                        float wzy = wt[0][z] * wt[1][y];
                        size_t base = slot * plane + (size_t)(y0 + y) * g->nx + x0;
                        size_t orow = ((size_t)z * p[1] + y) * p[2];
                        for (int c = 0; c < C; c++) {
                            float *a = acc + c * acc_stride + base;
                            const float *o = output + c * patch_vox + orow;
                            for (int x = lo[2]; x < hi[2]; x++)
                                a[x] += wzy * wt[2][x] * o[x];
                        }
                    }
                }
                if (w->progress && w->progress(w->progress_ud, ++done_patches, total)) {
                    rc = error_set(err, errlen, INFER_ECANCELLED, "cancelled");
                    goto done;
                }
            }
        }
        /* Slices before the next slab's kept part get no more contributions. */
        int final_end = zi + 1 < nstarts[0] ? starts[0][zi + 1] + mg[0] : dim[0];
        for (; decided < final_end; decided++) {
            size_t slot = (size_t)decided % ring;
            const float *a = acc + slot * plane;
            uint8_t *lab = labels + (size_t)decided * plane;
            for (int y = 0; y < g->ny; y++) {
                float wzy = cover[0][decided] * cover[1][y];
                size_t row = (size_t)y * g->nx;
                for (int x = 0; x < g->nx; x++)
                    lab[row + x] = decide(a + row + x, acc_stride, C, wzy * cover[2][x], w);
            }
            for (int c = 0; c < C; c++)
                memset(acc + c * acc_stride + slot * plane, 0, plane * sizeof *acc);
        }
    }
    rc = INFER_OK;
done:
    for (int a = 0; a < 3; a++) {
        free(starts[a]);
        free(wt[a]);
        free(cover[a]);
    }
    free(input);
    free(output);
    free(acc);
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
    if (g->nx < 1 || g->ny < 1 || g->nz < 1 || !vol->data)
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
                memcpy(input + ((size_t)i * depth + (size_t)d) * plane,
                       vol->data + (size_t)z * plane, plane * sizeof *input);
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
    free(input);
    free(output);
    return rc;
}
