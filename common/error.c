#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>

int error_set(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (!err || !errlen)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return code;
}
