/* Small helpers shared by every module. */
#ifndef BRIDLE_UTIL_H
#define BRIDLE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

/* Milliseconds / microseconds on CLOCK_MONOTONIC. */
int64_t util_now_ms(void);
int64_t util_now_us(void);
/* Milliseconds since the epoch (wall clock). */
int64_t util_wall_ms(void);

/* Lower-case hex SHA-256 of data into out (65 bytes with NUL). */
void util_sha256_hex(const void *data, size_t len, char out[65]);
/* n random bytes from the OS as lower-case hex into out (2n+1 bytes). */
bool util_random_hex(char *out, size_t n);

/* Writes the decimal digits of v right to left, ending just before `end`;
 * returns where they start (at most 20 characters, no terminator). For hot
 * paths where snprintf costs more than the rest of the work. */
char *util_u64_digits(uint64_t v, char *end);

/* Formats an amount in pico-dollars (1e-12 USD) as a decimal string of
 * US dollars with `decimals` places (6 for headers), rounding half up. */
void util_format_pusd(int64_t pusd, int decimals, char *out, size_t outlen);

/* A duration in milliseconds (>= 0) as libevent's struct timeval. */
struct timeval util_ms_timeval(int64_t ms);

/* a / b rounded toward minus infinity (b > 0): time buckets for any clock. */
int64_t util_floor_div(int64_t a, int64_t b);

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (Howard
 * Hinnant's civil-date algorithms): integer arithmetic, no gmtime/timegm,
 * which cost more than the rest of a budget reservation or a ledger line. */
int64_t util_days_from_civil(int64_t y, int64_t m, int64_t d);
void util_civil_from_days(int64_t days, int64_t *y, int64_t *m, int64_t *d);

/* Microseconds since the epoch as "YYYY-MM-DD HH:MM:SS.uuuuuu+00" (UTC,
 * what PostgreSQL's timestamptz input takes) into out, NUL-terminated;
 * returns the length. Years outside 0..9999 are clamped to those bounds. */
#define UTIL_UTC_US_LEN 32
size_t util_format_utc_us(int64_t us, char out[UTIL_UTC_US_LEN]);

/* Case-insensitive prefix test. */
bool util_starts_with_ci(const char *s, const char *prefix);

/* Constant-time comparison of two equal-length strings. */
bool util_consttime_eq(const char *a, const char *b, size_t len);

/* Parses "HOST:PORT" into host (≤ 255) and port; false on error. */
bool util_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

/* An address block, "10.0.0.0/8", "::1/128" or a bare address (all of
 * its bits). */
typedef struct util_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
} util_cidr;
/* Returns 0, or -1 when s is not an address block. */
int util_cidr_parse(const char *s, util_cidr *out);
/* Whether sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as
 * IPv4) is inside c. */
struct sockaddr;
bool util_cidr_match(const util_cidr *c, const struct sockaddr *sa);

#endif
