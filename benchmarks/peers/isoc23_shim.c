/*
 * The three C23 entry points glibc 2.38 added and the Linux build of uWebSockets.js imports
 * (__isoc23_strtol, __isoc23_strtoul, __isoc23_sscanf), forwarded to the classic ones of an
 * older glibc. They differ only in accepting a "0b" binary prefix (and %b in sscanf), which
 * nothing on the measured path parses. Loaded with LD_PRELOAD by benchmarks/harness/peers.py.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

long __isoc23_strtol(const char *s, char **end, int base);
unsigned long __isoc23_strtoul(const char *s, char **end, int base);
int __isoc23_sscanf(const char *s, const char *format, ...);

long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }

unsigned long __isoc23_strtoul(const char *s, char **end, int base)
{
    return strtoul(s, end, base);
}

int __isoc23_sscanf(const char *s, const char *format, ...)
{
    va_list ap;
    int n;
    va_start(ap, format);
    n = vsscanf(s, format, ap);
    va_end(ap);
    return n;
}
