/*
 * accept.c — whether a series is one a model is meant for: its manifest's
 * input.accept against the series' indexed attributes (its own and its
 * first instance's). Planning asks before it queues a job, so a series
 * outside it is recorded as not applicable with the reason, and never runs.
 */
#include "rules/rules.h"
#include "config/config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Writes "KEYWORD is VALUE; the model accepts WANT" into WHY. */
static void refuse(char *why, size_t len, const char *keyword, const char *value,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void refuse(char *why, size_t len, const char *keyword, const char *value,
                   const char *fmt, ...)
{
    char want[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    snprintf(why, len, "%s is %s; the model accepts %s", keyword, value ? value : "absent", want);
}

/* 1 when VALUE is one of LIST (ignoring case), else the reason in WHY. */
static int in_list(const char *keyword, const char *value, char *const *list, size_t n,
                   char *why, size_t len)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; value && i < n; i++)
        if (!strcasecmp(value, list[i]))
            return 1;
    char want[256] = "";
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(want);
        snprintf(want + used, sizeof want - used, "%s%s", i ? ", " : "", list[i]);
    }
    refuse(why, len, keyword, value, "%s", want);
    return 0;
}

/* 1 when every backslash-separated number of VALUE lies in LO..HI, else
 * the reason in WHY (UNIT follows the numbers). An absent or unreadable
 * value is refused: the model's limits cannot be shown to hold. */
static int in_range(const char *keyword, const char *value, double lo, double hi,
                    const char *unit, char *why, size_t len)
{
    int ok = value && *value;
    for (const char *p = value; ok && p;) {
        char *end;
        double d = strtod(p, &end);
        while (*end == ' ')
            end++;
        ok = end != p && (*end == '\0' || *end == '\\') && isfinite(d) && d >= lo && d <= hi;
        p = *end == '\\' ? end + 1 : NULL;
    }
    if (!ok) {
        char shown[96];
        if (value)
            snprintf(shown, sizeof shown, "%s%s", value, unit);
        refuse(why, len, keyword, value ? shown : NULL, "%g..%g%s", lo, hi, unit);
    }
    return ok;
}

int rules_accepts(const struct config_manifest *m, const struct attr_series *s, char *why,
                  size_t len)
{
    const struct config_accept *a = &m->accept;
    const char *const *v = s->value;
    if (len)
        why[0] = '\0';
    return in_list("Modality", v[ATTR_MODALITY], a->modality, a->n_modality, why, len) &&
           in_list("BodyPartExamined", v[ATTR_BODY_PART_EXAMINED], a->body_part, a->n_body_part,
                   why, len) &&
           in_list("ViewPosition", v[ATTR_VIEW_POSITION], a->view_position, a->n_view_position,
                   why, len) &&
           in_list("PhotometricInterpretation", v[ATTR_PHOTOMETRIC_INTERPRETATION],
                   a->photometric, a->n_photometric, why, len) &&
           (!a->has_pixel_spacing ||
            in_range("PixelSpacing", v[ATTR_PIXEL_SPACING], a->pixel_spacing[0],
                     a->pixel_spacing[1], " mm", why, len)) &&
           (!a->has_slice_thickness ||
            in_range("SliceThickness", v[ATTR_SLICE_THICKNESS], a->slice_thickness[0],
                     a->slice_thickness[1], " mm", why, len)) &&
           (a->rows[0] == 0 ||
            in_range("Rows", v[ATTR_ROWS], a->rows[0], a->rows[1], "", why, len)) &&
           (a->columns[0] == 0 ||
            in_range("Columns", v[ATTR_COLUMNS], a->columns[0], a->columns[1], "", why, len));
}
