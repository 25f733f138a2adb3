/*
 * http_page — the status page (service/http_page.html), embedded in the
 * binary at build time (embed.cmake), so that the node serves it with no
 * file beside it and the page loads nothing from elsewhere.
 */
#ifndef AINODE_SERVICE_HTTP_PAGE_H
#define AINODE_SERVICE_HTTP_PAGE_H

#include <stddef.h>

extern const unsigned char http_page[]; /* the HTML, HTTP_PAGE_LEN bytes (then a NUL) */
extern const size_t http_page_len;

#endif
