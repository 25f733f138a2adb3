/*
 * buffer.c — large buffers on transparent huge pages (see buffer.h).
 */
#include "common/buffer.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void buffer_advise_huge(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    /* Advice only: where huge pages are off the buffer has small pages. */
    uintptr_t start = ((uintptr_t)p + BUFFER_HUGE_PAGE - 1) & ~(uintptr_t)(BUFFER_HUGE_PAGE - 1);
    uintptr_t end = ((uintptr_t)p + bytes) & ~(uintptr_t)(BUFFER_HUGE_PAGE - 1);
    if (p && end > start)
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

void *buffer_alloc(size_t bytes)
{
    /* Not aligned to 2 MiB with posix_memalign: glibc then carves the
     * aligned block out of a larger chunk and keeps the pieces around it,
     * which grows the heap by as much again. */
    void *p = malloc(bytes ? bytes : 1);
    if (p && bytes >= 2 * BUFFER_HUGE_PAGE)
        buffer_advise_huge(p, bytes);
    return p;
}

void *buffer_zalloc(size_t nmemb, size_t size)
{
    if (size && nmemb > (size_t)-1 / size) {
        errno = ENOMEM;
        return NULL;
    }
    size_t bytes = nmemb * size;
    if (bytes < 2 * BUFFER_HUGE_PAGE)
        return calloc(nmemb ? nmemb : 1, size ? size : 1);
    /* Written, not left to calloc: a fresh mapping read before it is
     * written faults twice per page (the zero page, then a copy). */
    void *p = buffer_alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}
