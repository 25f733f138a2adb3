/*
 * http.c — checks of node.http beyond what its key table says: a bind
 * address other hosts can reach needs a token, the token file and the TLS
 * key are private to the node's user and group, and the port is one of its
 * own.
 */
#include "config/schema.h"

#include "common/error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define TOKEN_MIN 16

int config_read_token(const char *path, char *buf, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return error_set(err, errlen, -1, "cannot read it: %s", strerror(errno));
    char line[CONFIG_TOKEN_MAX + 2];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    size_t n = strcspn(line, "\r\n");
    int too_long = n > CONFIG_TOKEN_MAX;
    line[n] = '\0';
    char *s = line;
    while (*s == ' ' || *s == '\t')
        s++;
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    int rc = 0;
    if (too_long || n >= len)
        rc = error_set(err, errlen, -1, "its token is longer than %d characters",
                       CONFIG_TOKEN_MAX);
    else if (n < TOKEN_MIN)
        rc = error_set(err, errlen, -1, "its first line holds no token of at least %d "
                                        "characters", TOKEN_MIN);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            rc = error_set(err, errlen, -1, "its token holds a character other than printable "
                                            "ASCII");
    if (rc == 0)
        memcpy(buf, s, n + 1);
    memset(line, 0, sizeof line); /* a secret: no copy left on the stack */
    return rc;
}

/* A path key of P that was given and accepted: a regular file that can
 * be read and, when PRIVATE, that not every user can read. */
static void check_file(struct schema_ctx *c, const struct schema_parsed *p, const char *key,
                       const char *path, int private)
{
    if (!path || p->st[schema_field_index(p, key)] != 1)
        return;
    const struct ynode *v = schema_pos_of(p, key);
    int e = schema_readable(path);
    struct stat sb;
    if (e)
        schema_report(c, v->line, v->col, "%s.%s: cannot read %s: %s", p->sect, key, path,
                      schema_file_strerror(e));
    else if (private && stat(path, &sb) == 0 && (sb.st_mode & S_IROTH))
        schema_report(c, v->line, v->col,
                      "%s.%s: %s is readable by every user (mode %04o): it holds a secret; "
                      "chmod o-r it",
                      p->sect, key, path, (unsigned)(sb.st_mode & 07777));
}

void config_check_http_tls(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    struct config_http_tls *t = base;
    t->enabled = 1; /* checks run only for a section that is in the file */
    check_file(c, p, "certificate", t->certificate, 0);
    check_file(c, p, "private_key", t->private_key, 1);
}

void config_check_node_http(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    struct config_node_http *h = base;
    h->enabled = 1;
    int has_token = p->st[schema_field_index(p, "token_file")] != 0;
    if (schema_usable(p, "bind") && h->bind && !config_bind_is_loopback(h->bind) && !has_token) {
        const struct ynode *v = schema_pos_of(p, "bind");
        schema_report(c, v->line, v->col,
                      "%s.bind: %s is reachable from other hosts: set %s.token_file (the bearer "
                      "token every request but /healthz and /readyz must then carry)",
                      p->sect, h->bind, p->sect);
    }
    check_file(c, p, "token_file", h->token_file, 1);
    if (h->token_file && p->st[schema_field_index(p, "token_file")] == 1 &&
        schema_readable(h->token_file) == 0) {
        char token[CONFIG_TOKEN_MAX + 1], why[128];
        int bad = config_read_token(h->token_file, token, sizeof token, why, sizeof why);
        memset(token, 0, sizeof token);
        if (bad) {
            const struct ynode *v = schema_pos_of(p, "token_file");
            schema_report(c, v->line, v->col, "%s.token_file: %s: %s", p->sect, h->token_file,
                          why);
        }
    }
}

void config_check_node_http_port(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_node *n = base;
    if (!n->http.enabled)
        return;
    const char *other = NULL;
    if (n->http.port == n->port)
        other = "node.port";
    else if (n->tls.enabled && n->http.port == n->tls.port)
        other = "node.tls.port";
    if (!other)
        return;
    const struct ynode *http = ynode_get(p->map, "http");
    const struct ynode *v = http && http->kind == Y_MAP ? ynode_get(http, "port") : NULL;
    if (!v)
        v = http ? http : p->pos;
    schema_report(c, v->line, v->col, "%s.http.port: %d is %s; the HTTP endpoint needs a port "
                  "of its own", p->sect, n->http.port, other);
}
