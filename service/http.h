/*
 * http — the node's HTTP admin endpoint (node.http), on libmicrohttpd:
 *
 *   GET  /healthz                   200 while the process serves HTTP
 *   GET  /readyz                    200 when the store answers, the data disk
 *                                   is above node.min_free_disk_mb, the DICOM
 *                                   listener accepts and every model loaded;
 *                                   else 503; both {"ready": .., "reasons": [..]}
 *   GET  /metrics                   Prometheus text format 0.0.4 (metrics.h and
 *                                   the store's counts by state)
 *   GET  /api/v1/status             the document of `ainode status --json`
 *                                   (?state= &since= &model= &limit= &cursor=)
 *   GET  /api/v1/studies/UID        one study with its jobs and sends
 *   GET  /api/v1/jobs               jobs (?state= &model= &since= &limit= &cursor=)
 *   GET  /api/v1/node               models, destinations, disk, counts: the page's
 *   POST /api/v1/outbox/ID/retry    a dead-lettered item queued again
 *   POST /api/v1/jobs/ID/retry      a quarantined job queued again
 *   GET  /                          the status page (no outside assets)
 *
 * A POST always needs the bearer token of node.http.token_file
 * (Authorization: Bearer TOKEN, compared in constant time): 401 without
 * one, 403 with another, 403 when no token is configured. With a bind
 * address other hosts can reach, every GET but /healthz, /readyz and the
 * page itself (which holds no data) needs it too. node.http.tls serves
 * HTTPS (TLS 1.2 or later, through GnuTLS).
 *
 * libmicrohttpd serves every request on one thread of its own. What the
 * store holds is read there through a read-only handle of its own (short
 * read transactions under WAL: ingest never waits for a scrape); the two
 * retries write through the node's handle, as `ainode retry` would.
 */
#ifndef AINODE_SERVICE_HTTP_H
#define AINODE_SERVICE_HTTP_H

#include <stddef.h>

struct config;
struct http_server;
struct storage;

/* What the endpoint asks of the running node; every function is called
 * on the endpoint's thread. */
struct http_node {
    struct storage *store;        /* the node's handle (the retries write through it) */
    /* The configuration in force, with a reference the endpoint drops. */
    struct config *(*config)(void *ud);
    /* 1 while the DICOM listener accepts associations (not stopping). */
    int (*accepting)(void *ud);
    /* Jobs, or outbox items, were queued again: wake who runs them. */
    void (*jobs_queued)(void *ud);
    void (*outbox_queued)(void *ud);
    void *ud;
};

/* Starts the endpoint of CFG->node.http (which must be enabled): reads the
 * token and the TLS files, opens the store of CFG read-only, listens and
 * serves. NODE is copied. 0 with *OUT set, or -1 with the reason in ERR
 * (e.g. the port is in use). */
int http_start(const struct config *cfg, const struct http_node *node, struct http_server **out,
               char *err, size_t errlen);

/* Stops serving (a request in progress finishes), closes what it opened
 * and frees H. NULL is accepted. */
void http_stop(struct http_server *h);

#endif
