/*
 * notify.c — sd_notify(3) for the node (notify.h).
 */
#include "service/notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

int notify_enabled(void)
{
    return getenv("NOTIFY_SOCKET") != NULL;
}

/* Sends HEAD (e.g. "READY=1\n", or "") followed by STATUS= formatted from
 * FMT and AP. A message that cannot be sent changes nothing for the node:
 * the service manager then sees an older state. */
static void send_with_status(const char *head, const char *fmt, va_list ap)
{
    if (!notify_enabled())
        return;
    char status[256];
    vsnprintf(status, sizeof status, fmt, ap);
    sd_notifyf(0, "%sSTATUS=%s", head, status);
}

void notify_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_with_status("READY=1\n", fmt, ap);
    va_end(ap);
}

void notify_status(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_with_status("", fmt, ap);
    va_end(ap);
}

void notify_stopping(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_with_status("STOPPING=1\n", fmt, ap);
    va_end(ap);
}

void notify_watchdog(void)
{
    if (notify_enabled())
        sd_notify(0, "WATCHDOG=1");
}

uint64_t notify_watchdog_interval_ms(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    uint64_t ms = usec / 2000;
    return ms ? ms : 1;
}
