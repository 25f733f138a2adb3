/*
 * picture.c — 2-D images made into a model's input: letterboxed and
 * normalised as image encoders (ImageNet-, CLIP-style) were trained.
 */
#include "inference/inference.h"

#include <math.h>
#include <string.h>

/* The source positions and weights of one output axis: output i reads
 * source lo[i] and lo[i] + 1 (clamped) with weight w[i] on the second;
 * half-pixel centres, as torch's interpolate(align_corners=False). */
static void axis_weights(int in, int out, int *lo, int *hi, float *w)
{
    double step = (double)in / out;
    for (int i = 0; i < out; i++) {
        double src = (i + 0.5) * step - 0.5;
        if (src < 0)
            src = 0;
        int i0 = (int)src;
        if (i0 > in - 1)
            i0 = in - 1;
        lo[i] = i0;
        hi[i] = i0 + 1 < in ? i0 + 1 : in - 1;
        w[i] = (float)(src - i0);
    }
}

int infer_letterbox(const float *src, int channels, int rows, int cols, float *dst,
                    int out_rows, int out_cols, const double *mean, const double *std,
                    struct infer_letterbox *lb)
{
    if (!src || !dst || channels < 1 || rows < 1 || cols < 1 || out_rows < 1 || out_cols < 1 ||
        out_rows > 4096 || out_cols > 4096)
        return INFER_EINVAL;
    double scale = fmin((double)out_rows / rows, (double)out_cols / cols);
    int nr = (int)floor(rows * scale + 0.5), nc = (int)floor(cols * scale + 0.5);
    nr = nr < 1 ? 1 : nr > out_rows ? out_rows : nr;
    nc = nc < 1 ? 1 : nc > out_cols ? out_cols : nc;
    int top = (out_rows - nr) / 2, left = (out_cols - nc) / 2;
    if (lb)
        *lb = (struct infer_letterbox){scale, top, left, nr, nc};

    /* Index and weight tables: at most 4096 entries per axis. */
    int r0[4096], r1[4096], c0[4096], c1[4096];
    float rw[4096], cw[4096];
    axis_weights(rows, nr, r0, r1, rw);
    axis_weights(cols, nc, c0, c1, cw);
    size_t in_plane = (size_t)rows * cols, out_plane = (size_t)out_rows * out_cols;
    for (int c = 0; c < channels; c++) {
        const float *s = src + (size_t)c * in_plane;
        float *d = dst + (size_t)c * out_plane;
        float m = mean ? (float)mean[c] : 0.0f, inv = std ? (float)(1.0 / std[c]) : 1.0f;
        float pad = (0.0f - m) * inv;
        for (size_t i = 0; i < out_plane; i++)
            d[i] = pad;
        for (int y = 0; y < nr; y++) {
            const float *a = s + (size_t)r0[y] * cols, *b = s + (size_t)r1[y] * cols;
            float wy = rw[y];
            float *o = d + (size_t)(y + top) * out_cols + left;
            for (int x = 0; x < nc; x++) {
                float wx = cw[x];
                float top_v = a[c0[x]] + (a[c1[x]] - a[c0[x]]) * wx;
                float bot_v = b[c0[x]] + (b[c1[x]] - b[c0[x]]) * wx;
                o[x] = (top_v + (bot_v - top_v) * wy - m) * inv;
            }
        }
    }
    return INFER_OK;
}

int infer_letterbox_unmap(const uint8_t *model, int out_rows, int out_cols,
                          const struct infer_letterbox *lb, int rows, int cols, uint8_t *dst)
{
    if (!model || !lb || !dst || rows < 1 || cols < 1 || out_rows < 1 || out_cols < 1 ||
        lb->rows < 1 || lb->cols < 1)
        return INFER_EINVAL;
    /* Source pixel centre r + 0.5 lies at (r + 0.5) * lb->rows / rows in
     * the picture, the extent infer_letterbox resampled it to; the model
     * pixel holding that point is its floor. */
    const double ry = (double)lb->rows / rows, rx = (double)lb->cols / cols;
    for (int r = 0; r < rows; r++) {
        long y = lb->top + (long)floor((r + 0.5) * ry);
        uint8_t *d = dst + (size_t)r * cols;
        if (y < 0 || y >= out_rows) {
            memset(d, 0, (size_t)cols);
            continue;
        }
        const uint8_t *m = model + (size_t)y * out_cols;
        for (int c = 0; c < cols; c++) {
            long x = lb->left + (long)floor((c + 0.5) * rx);
            d[c] = x >= 0 && x < out_cols ? m[x] : 0;
        }
    }
    return INFER_OK;
}
