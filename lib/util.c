#include "lib/util.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void util_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    to_hex(md, sizeof md, out);
}

bool util_random_hex(char *out, size_t n)
{
    unsigned char tmp[64];
    if (n > sizeof tmp) return false;
    if (getrandom(tmp, n, 0) != (ssize_t)n) return false;
    to_hex(tmp, n, out);
    return true;
}

struct timeval util_ms_timeval(int64_t ms)
{
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}

char *util_u64_digits(uint64_t v, char *end)
{
    do
        *--end = (char)('0' + v % 10);
    while (v /= 10);
    return end;
}

void util_format_pusd(int64_t pusd, int decimals, char *out, size_t outlen)
{
    bool neg = pusd < 0;
    uint64_t v = neg ? (uint64_t)(-(pusd + 1)) + 1 : (uint64_t)pusd;
    if (decimals < 0) decimals = 0;
    if (decimals > 12) decimals = 12;
    uint64_t scale = 1;
    for (int i = 0; i < 12 - decimals; i++)
        scale *= 10;
    uint64_t rounded = (v + scale / 2) / scale; /* in units of 10^-decimals USD */
    uint64_t unit = 1;
    for (int i = 0; i < decimals; i++)
        unit *= 10;
    /* By hand, right to left: two per reply, and snprintf cost more than
     * the rest of the arithmetic. */
    char tmp[48], *p = tmp + sizeof tmp;
    *--p = '\0';
    uint64_t frac = rounded % unit, whole = rounded / unit;
    for (int i = 0; i < decimals; i++, frac /= 10)
        *--p = (char)('0' + frac % 10);
    if (decimals > 0) *--p = '.';
    p = util_u64_digits(whole, p);
    if (neg) *--p = '-';
    if (!outlen) return;
    size_t n = (size_t)(tmp + sizeof tmp - 1 - p);
    if (n >= outlen) n = outlen - 1; /* truncated like snprintf */
    memcpy(out, p, n);
    out[n] = '\0';
}

bool util_starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool util_consttime_eq(const char *a, const char *b, size_t len)
{
    unsigned char d = 0;
    for (size_t i = 0; i < len; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

bool util_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return false;
    size_t hl = (size_t)(colon - s);
    if (hl >= hostlen) return false;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || end == colon + 1) return false;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    *port = (int)p;
    return true;
}

int64_t util_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t util_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = util_floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void util_civil_from_days(int64_t days, int64_t *y, int64_t *m, int64_t *d)
{
    int64_t z = days + 719468;
    int64_t era = util_floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

/* n (< 10^width) as exactly `width` decimal digits at p. */
static char *put_digits(char *p, int64_t n, int width)
{
    for (int i = width - 1; i >= 0; i--, n /= 10)
        p[i] = (char)('0' + n % 10);
    return p + width;
}

size_t util_format_utc_us(int64_t us, char out[UTIL_UTC_US_LEN])
{
    static const int64_t lo = -62167219200LL * 1000000, /* 0000-01-01 */
        hi = 253402300799LL * 1000000 + 999999;         /* 9999-12-31 23:59:59.999999 */
    us = us < lo ? lo : us > hi ? hi : us;
    int64_t s = util_floor_div(us, 1000000), days = util_floor_div(s, 86400);
    int64_t sod = s - days * 86400, y, m, d;
    util_civil_from_days(days, &y, &m, &d);
    char *p = out;
    p = put_digits(p, y, 4), *p++ = '-';
    p = put_digits(p, m, 2), *p++ = '-';
    p = put_digits(p, d, 2), *p++ = ' ';
    p = put_digits(p, sod / 3600, 2), *p++ = ':';
    p = put_digits(p, sod / 60 % 60, 2), *p++ = ':';
    p = put_digits(p, sod % 60, 2), *p++ = '.';
    p = put_digits(p, us - s * 1000000, 6);
    memcpy(p, "+00", 4);
    return (size_t)(p + 3 - out);
}

int util_cidr_parse(const char *s, util_cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof host) return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, host, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, host, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    int max = out->family == AF_INET ? 32 : 128;
    out->bits = max;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || b < 0 || b > max) return -1;
        out->bits = (int)b;
    }
    return 0;
}

bool util_cidr_match(const util_cidr *c, const struct sockaddr *sa)
{
    const unsigned char *a = NULL;
    int family = sa ? sa->sa_family : AF_UNSPEC;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (c->family == AF_INET && memcmp(a, mapped, 12) == 0) { /* ::ffff:a.b.c.d */
            a += 12;
            family = AF_INET;
        }
    }
    if (!a || family != c->family) return false;
    int whole = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->addr, (size_t)whole) != 0) return false;
    if (!rest) return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (c->addr[whole] & mask);
}
