/*
 * buffer — large buffers (volumes, label maps, model tensors) backed by
 * transparent huge pages where the kernel offers them.
 *
 * Filling a fresh buffer costs one page fault per page; with 4 KiB pages a
 * 400 MiB volume takes 100,000 of them, which on a virtual machine cost
 * more than the decoding that fills it. The 2 MiB blocks inside a buffer
 * are advised MADV_HUGEPAGE, so that they take one fault per 2 MiB. It is
 * malloc()'s memory, released with free().
 */
#ifndef AINODE_COMMON_BUFFER_H
#define AINODE_COMMON_BUFFER_H

#include <stddef.h>

/* The huge page size of x86-64 and arm64 (with 4 KiB base pages). */
#define BUFFER_HUGE_PAGE ((size_t)2 << 20)

/* Advises the whole 2 MiB blocks inside [P, P + BYTES) MADV_HUGEPAGE; the
 * ends stay on small pages. */
void buffer_advise_huge(void *p, size_t bytes);

/* BYTES of uninitialised memory, or NULL (errno ENOMEM). */
void *buffer_alloc(size_t bytes);

/* NMEMB * SIZE bytes of zeroes, or NULL when out of memory or when the
 * product overflows. */
void *buffer_zalloc(size_t nmemb, size_t size);

#endif
