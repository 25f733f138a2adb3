/*
 * access.c — who may connect: node.allowed_addresses (address blocks), the
 * check that a node reachable from other hosts says who may call it, and
 * the matching of a peer's address at accept time.
 *
 * IPv4 blocks are kept in their IPv4-mapped IPv6 form (::ffff:a.b.c.d,
 * prefix + 96), so that one comparison serves both families and an IPv4
 * peer seen on an IPv6 socket matches the IPv4 block it belongs to.
 */
#include "config/schema.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* TEXT (an IPv4 or IPv6 address, no prefix) into its 16-byte form; 4 or
 * 6 for the family it was written in, 0 when it is neither. */
static int parse_address(const char *text, unsigned char out[16])
{
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memcpy(out, v4_mapped, 12);
        memcpy(out + 12, &a4, 4);
        return 4;
    }
    if (inet_pton(AF_INET6, text, out) == 1)
        return 6;
    return 0;
}

const char *config_cidr_parse(const char *s, struct config_cidr *out)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof addr)
        return "is not an IPv4 or IPv6 address";
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    int family = parse_address(addr, out->addr);
    if (!family)
        return "is not an IPv4 or IPv6 address";
    int max = family == 4 ? 32 : 128;
    int prefix = max;
    if (slash) {
        const char *d = slash + 1;
        /* plain decimal digits only: no sign, no spaces, no "0x" */
        if (!*d || strlen(d) > 3 || strspn(d, "0123456789") != strlen(d))
            return family == 4 ? "has an invalid prefix length (0..32 after '/')"
                               : "has an invalid prefix length (0..128 after '/')";
        prefix = atoi(d);
        if (prefix > max)
            return family == 4 ? "has a prefix length over 32" : "has a prefix length over 128";
    }
    out->prefix = family == 4 ? prefix + 96 : prefix;
    /* 10.0.0.1/8 is most likely a typo for 10.0.0.0/8 or 10.0.0.1/32:
     * refused rather than guessed. */
    for (int bit = out->prefix; bit < 128; bit++)
        if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
            return "has address bits set beyond its prefix length";
    return NULL;
}

static int cidr_contains(const struct config_cidr *c, const unsigned char a[16])
{
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a[full] & mask);
}

int config_address_allowed(const struct config *cfg, const char *address)
{
    if (!cfg)
        return 0;
    if (cfg->node.n_allowed_addresses == 0)
        return 1;
    unsigned char a[16];
    if (!address || !parse_address(address, a))
        return 0;
    for (size_t i = 0; i < cfg->node.n_allowed_addresses; i++)
        if (cidr_contains(&cfg->node.allowed_addresses[i], a))
            return 1;
    return 0;
}

int config_bind_is_loopback(const char *bind)
{
    unsigned char a[16];
    if (!bind)
        return 0;
    if (!strcmp(bind, "localhost"))
        return 1;
    if (!parse_address(bind, a))
        return 0; /* a host name: whatever it resolves to may be reachable */
    static const struct config_cidr loopback[] = {
        {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 0}, 104}, /* 127.0.0.0/8 */
        {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128},          /* ::1 */
    };
    return cidr_contains(&loopback[0], a) || cidr_contains(&loopback[1], a);
}

void config_parse_addresses(struct schema_ctx *c, const struct schema_field *f, const char *what,
                            const struct ynode *v, void *base)
{
    struct config_cidr **listp = (struct config_cidr **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    char b[80];
    if (ynode_is_null(v))
        return;
    if (v->kind != Y_SEQ) {
        schema_report(c, v->line, v->col, "%s: expected a sequence", what);
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *it = v->kids[i];
        if (it->kind == Y_ALIAS || !schema_want_string(c, what, it))
            continue;
        struct config_cidr cidr;
        const char *why = config_cidr_parse(it->text, &cidr);
        if (why) {
            schema_report(c, it->line, it->col, "%s: '%s' %s", what,
                          schema_esc(it->text, it->len, b), why);
            continue;
        }
        struct config_cidr *nl = realloc(*listp, (*np + 1) * sizeof *nl);
        if (!nl) {
            schema_oom(c);
            return;
        }
        *listp = nl;
        nl[(*np)++] = cidr;
    }
}

void config_release_addresses(const struct schema_field *f, void *base)
{
    struct config_cidr **listp = (struct config_cidr **)((char *)base + f->off);
    size_t *np = (size_t *)((char *)base + f->off_n);
    free(*listp);
    *listp = NULL;
    *np = 0;
}

/* A node that listens where other hosts can reach it must say who may
 * call it, or say explicitly that anyone may. */
void config_check_node_access(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    const struct config_node *n = base;
    if (!schema_usable(p, "bind") || config_bind_is_loopback(n->bind))
        return;
    if (n->n_allowed_callers || n->n_allowed_addresses || n->allow_any_caller)
        return;
    /* a rejected list or flag was reported already: no second line for it */
    if (p->st[schema_field_index(p, "allowed_callers")] == 2 ||
        p->st[schema_field_index(p, "allowed_addresses")] == 2 ||
        p->st[schema_field_index(p, "allow_any_caller")] == 2)
        return;
    const struct ynode *pos = schema_pos_of(p, "bind");
    char b[80];
    schema_report(c, pos->line, pos->col,
                  "%s.bind: '%s' is reachable from other hosts, but neither %s.allowed_callers "
                  "nor %s.allowed_addresses says who may connect; set one of them, or "
                  "%s.allow_any_caller: true to accept any peer",
                  p->sect, schema_esc(n->bind, strlen(n->bind), b), p->sect, p->sect, p->sect);
}
