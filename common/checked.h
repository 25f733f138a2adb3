/*
 * checked — size arithmetic that cannot wrap.
 *
 * Every allocation size made from values read from a file or the network
 * (Rows x Columns x Frames x bytes, volume and window sizes) is multiplied
 * here: a product that wraps would allocate a small buffer and then index
 * past it.
 */
#ifndef AINODE_COMMON_CHECKED_H
#define AINODE_COMMON_CHECKED_H

#include <stddef.h>

/* *OUT = A * B; returns 1, or 0 (and *OUT = 0) when the product does not
 * fit a size_t. */
static inline int size_mul_ok(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        *out = 0;
        return 0;
    }
    *out = r;
    return 1;
}

/* *OUT = A * B * C, as size_mul_ok. */
static inline int size_mul3_ok(size_t a, size_t b, size_t c, size_t *out)
{
    size_t ab;
    return size_mul_ok(a, b, &ab) && size_mul_ok(ab, c, out);
}

/* *OUT = A + B, as size_mul_ok. */
static inline int size_add_ok(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        *out = 0;
        return 0;
    }
    *out = r;
    return 1;
}

#endif
