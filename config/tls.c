/*
 * tls.c — checks of the TLS sections (node.tls, destinations.NAME.tls)
 * beyond what their key tables say: presence, files that can be read, keys
 * that only go together, and a TLS port of its own. Whether a certificate
 * really is one is left to the node's start (dicom/tls.cpp), which reports
 * OpenSSL's reason.
 */
#include "config/schema.h"

#include <string.h>

/* A path key of P that was given and accepted: can its file be read? */
static void check_readable(struct schema_ctx *c, const struct schema_parsed *p, const char *key,
                           const char *path)
{
    if (!path || p->st[schema_field_index(p, key)] != 1)
        return;
    int e = schema_readable(path);
    if (e) {
        const struct ynode *v = schema_pos_of(p, key);
        schema_report(c, v->line, v->col, "%s.%s: cannot read %s: %s", p->sect, key, path,
                      schema_file_strerror(e));
    }
}

static int given(const struct schema_parsed *p, const char *key)
{
    return p->st[schema_field_index(p, key)] != 0;
}

void config_check_node_tls(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    struct config_node_tls *t = base;
    t->enabled = 1; /* checks run only for a section that is in the file */
    if (t->verify_client != CONFIG_VERIFY_CLIENT_OFF && !given(p, "ca_certificates"))
        schema_report(c, p->pos->line, p->pos->col,
                      "%s: missing key 'ca_certificates' (required unless verify_client is off)",
                      p->sect);
    check_readable(c, p, "certificate", t->certificate);
    check_readable(c, p, "private_key", t->private_key);
    check_readable(c, p, "ca_certificates", t->ca_certificates);
}

void config_check_destination_tls(struct schema_ctx *c, const struct schema_parsed *p,
                                  void *base)
{
    struct config_destination_tls *t = base;
    t->enabled = 1;
    if (t->verify_server && !given(p, "ca_certificates"))
        schema_report(c, p->pos->line, p->pos->col,
                      "%s: missing key 'ca_certificates' (required unless verify_server is false)",
                      p->sect);
    if (given(p, "certificate") != given(p, "private_key")) {
        const char *has = given(p, "certificate") ? "certificate" : "private_key";
        const struct ynode *v = schema_pos_of(p, has);
        schema_report(c, v->line, v->col, "%s: certificate and private_key go together", p->sect);
    }
    check_readable(c, p, "ca_certificates", t->ca_certificates);
    check_readable(c, p, "certificate", t->certificate);
    check_readable(c, p, "private_key", t->private_key);
}

void config_check_node_tls_port(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_node *n = base;
    if (n->port == 0 && !n->tls.enabled && schema_usable(p, "port")) {
        const struct ynode *v = schema_pos_of(p, "port");
        schema_report(c, v->line, v->col,
                      "%s.port: 0 (no plain listener) needs %s.tls: the node would not listen",
                      p->sect, p->sect);
    }
    if (n->tls.enabled && n->tls.port == n->port) {
        const struct ynode *tls = ynode_get(p->map, "tls");
        const struct ynode *v = tls && tls->kind == Y_MAP ? ynode_get(tls, "port") : NULL;
        if (!v)
            v = p->pos;
        schema_report(c, v->line, v->col, "%s.tls.port: %d is node.port; the TLS listener needs "
                      "a port of its own", p->sect, n->port);
    }
}
