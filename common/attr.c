#include "common/attr.h"

#include <stdio.h>
#include <string.h>

const struct attr_info attr_table[ATTR_COUNT] = {
#define ATTR(id, keyword, group, element, level, column, kind) \
    [ATTR_##id] = {#keyword, group, element, ATTR_LEVEL_##level, #column, ATTR_KIND_##kind},
#include "common/attr.def"
#undef ATTR
};

int attr_find(const char *keyword)
{
    for (int i = 0; i < ATTR_COUNT; i++)
        if (!strcmp(attr_table[i].keyword, keyword))
            return i;
    return -1;
}

const char *attr_level_name(enum attr_level level)
{
    static const char *const names[] = {"patient", "study", "series", "instance"};
    return names[level];
}

const char *attr_kind_name(enum attr_kind kind)
{
    static const char *const names[] = {"UID",  "text", "integer",     "number",
                                        "date", "time", "multi-valued"};
    return names[kind];
}

int attr_rule_name_known(const char *name)
{
#define X(f) if (!strcmp(name, #f)) return 1;
    ATTR_FACTS(X)
#undef X
    return attr_find(name) >= 0;
}

const char *attr_series_get(const struct attr_series *s, const char *name, char *buf, size_t len)
{
    if (!strcmp(name, "instances")) {
        snprintf(buf, len, "%lld", (long long)s->instances);
        return buf;
    }
    if (!strcmp(name, "calling_ae"))
        return s->calling_ae;
    if (!strcmp(name, "called_ae"))
        return s->called_ae;
    if (!strcmp(name, "source_address"))
        return s->source_address;
    int i = attr_find(name);
    return i < 0 ? NULL : s->value[i];
}
