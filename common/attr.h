/*
 * attr — the indexed DICOM attributes, generated from attr.def.
 *
 * One table says which attributes ainode indexes, at which level they are
 * stored and how they compare; storage, rules, explain and the config
 * reference all read it, so an attribute cannot be known to one and
 * missing from another.
 */
#ifndef AINODE_COMMON_ATTR_H
#define AINODE_COMMON_ATTR_H

#include <stddef.h>
#include <stdint.h>

enum attr_id {
#define ATTR(id, keyword, group, element, level, column, kind) ATTR_##id,
#include "common/attr.def"
#undef ATTR
    ATTR_COUNT
};

/* The table an attribute is stored in. */
enum attr_level { ATTR_LEVEL_PATIENT, ATTR_LEVEL_STUDY, ATTR_LEVEL_SERIES, ATTR_LEVEL_INSTANCE };

/* How a value is stored and compared (see attr.def). */
enum attr_kind {
    ATTR_KIND_UID,
    ATTR_KIND_TEXT,
    ATTR_KIND_INT,
    ATTR_KIND_NUMBER,
    ATTR_KIND_DATE,
    ATTR_KIND_TIME,
    ATTR_KIND_MULTI,
};

struct attr_info {
    const char *keyword;          /* DICOM keyword, e.g. "BodyPartExamined" */
    uint16_t group, element;      /* its tag */
    enum attr_level level;
    const char *column;           /* its column in the level's table */
    enum attr_kind kind;
};

/* The table, indexed by enum attr_id. */
extern const struct attr_info attr_table[ATTR_COUNT];

/* The attribute with KEYWORD (exact), or -1. */
int attr_find(const char *keyword);

/* "patient", "study", "series" or "instance". */
const char *attr_level_name(enum attr_level level);

/* "UID", "text", "integer", "number", "date", "time" or "multi-valued". */
const char *attr_kind_name(enum attr_kind kind);

/*
 * What the rules see of one series: every indexed attribute (its own, its
 * study's and patient's, and those of its first instance by
 * InstanceNumber; NULL where absent; multi-valued ones joined with '\'),
 * how it arrived (of its first instance) and how many instances it has.
 * The strings belong to whoever filled the struct.
 */
struct attr_series {
    const char *value[ATTR_COUNT];
    const char *calling_ae;
    const char *called_ae;
    const char *source_address;
    int64_t instances;
};

/* Facts about a series that are not DICOM attributes but may be matched by
 * rules like one: how many instances, and the association it came over. */
#define ATTR_FACTS(X) X(instances) X(calling_ae) X(called_ae) X(source_address)

/* 1 when NAME is an attribute or a fact a rule may name. */
int attr_rule_name_known(const char *name);

/* The value of NAME (a keyword or a fact) for S, NULL when absent. BUF
 * receives a number formatted for "instances". */
const char *attr_series_get(const struct attr_series *s, const char *name, char *buf, size_t len);

#endif
