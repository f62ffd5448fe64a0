/* Prices and cost: exact integer money (see providers/pricing.h). */
#include "providers/pricing.h"

#include <string.h>

/* Products of a token count and a price can reach 2^126, so the cost is
 * summed in 128-bit integers. Each bucket is first clamped to COST_CLAMP
 * (far above INT64_MAX) so that the sum and the percentage multipliers that
 * follow cannot overflow 128 bits either; anything above INT64_MAX at the
 * end saturates to INT64_MAX. */
typedef __int128 wide;
#define COST_CLAMP ((wide)1 << 100)
#define PCT_MAX 10000 /* a 100× multiplier is already absurd */

static int64_t pricing_clamp_tokens(int64_t n)
{
    return n > 0 ? n : 0;
}

static int64_t pricing_clamp_price(int64_t p)
{
    return p > 0 ? p : 0;
}

/* Percentages outside [0, PCT_MAX] would be table errors; clamp them so a
 * broken row cannot overflow or turn a cost negative. */
static int pricing_clamp_pct(int pct)
{
    if (pct < 0) return 0;
    return pct > PCT_MAX ? PCT_MAX : pct;
}

static wide pricing_bucket(int64_t tokens, int64_t price)
{
    wide v = (wide)pricing_clamp_tokens(tokens) * pricing_clamp_price(price);
    return v > COST_CLAMP ? COST_CLAMP : v;
}

/* A cache-write price of 0 means "billed as plain input". */
static int64_t pricing_write_price(int64_t write, int64_t input)
{
    return write > 0 ? write : input;
}

static bool pricing_is_long_context(const model_price *price, const usage_record *u)
{
    if (price->long_ctx_threshold <= 0) return false;
    wide total = (wide)pricing_clamp_tokens(u->input_uncached) +
                 pricing_clamp_tokens(u->cache_read) + pricing_clamp_tokens(u->cache_write_5m) +
                 pricing_clamp_tokens(u->cache_write_1h);
    return total > price->long_ctx_threshold;
}

/* A long-context percentage of 0 means "not set", i.e. unchanged (100%),
 * so a row that gives only a threshold can never make requests free. */
static int pricing_long_pct(int pct)
{
    return pct > 0 ? pricing_clamp_pct(pct) : 100;
}

int64_t pricing_cost_pusd(const model_price *price, const usage_record *usage, bool batch)
{
    if (!price || !usage) return 0;
    wide in = pricing_bucket(usage->input_uncached, price->input) +
              pricing_bucket(usage->cache_read, price->cached_input) +
              pricing_bucket(usage->cache_write_5m,
                             pricing_write_price(price->cache_write_5m, price->input)) +
              pricing_bucket(usage->cache_write_1h,
                             pricing_write_price(price->cache_write_1h, price->input));
    /* Reasoning is a part of output and is not billed on its own. */
    wide out = pricing_bucket(usage->output, price->output);

    /* Every scale factor is a percentage; multiply by all of them first and
     * divide once by the matching power of 100, so the only rounding is one
     * truncation (towards zero: a fraction of a pico-dollar is dropped). */
    wide in_pct = 100, out_pct = 100, batch_pct = 100, div = 100 * 100;
    if (pricing_is_long_context(price, usage)) {
        in_pct = pricing_long_pct(price->long_ctx_input_pct);
        out_pct = pricing_long_pct(price->long_ctx_output_pct);
    }
    if (batch) {
        int discount = pricing_clamp_pct(price->batch_discount_pct);
        batch_pct = 100 - (discount > 100 ? 100 : discount);
    }
    wide total = (in * in_pct + out * out_pct) * batch_pct / div;
    return total > INT64_MAX ? INT64_MAX : (int64_t)total;
}

/* ------------------------------------------------------------ tiers */

static const char *const tier_names[] = {
    [TIER_NONE] = "none",   [TIER_BUDGET] = "budget", [TIER_MID] = "mid",
    [TIER_HEAVY] = "heavy", [TIER_LOCAL] = "local",
};

const char *pricing_tier_name(model_tier tier)
{
    if ((unsigned)tier >= sizeof tier_names / sizeof tier_names[0]) return "none";
    return tier_names[tier];
}

bool pricing_tier_parse(const char *s, model_tier *out)
{
    if (!s) return false;
    for (int t = TIER_BUDGET; t <= TIER_LOCAL; t++) {
        if (strcmp(s, tier_names[t]) == 0) {
            *out = (model_tier)t;
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------ lookup */

static const model_price *pricing_find_exact(const char *name, size_t len)
{
    for (const model_price *p = pricing_default_table(); p->name; p++)
        if (strlen(p->name) == len && memcmp(p->name, name, len) == 0) return p;
    return NULL;
}

static bool pricing_all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

/* Length of `name` without a trailing date snapshot: "-YYYYMMDD"
 * (Anthropic) or "-YYYY-MM-DD" (OpenAI). Returns len when there is none. */
static size_t pricing_strip_date(const char *name, size_t len)
{
    if (len > 9 && name[len - 9] == '-' && pricing_all_digits(name + len - 8, 8)) return len - 9;
    if (len > 11 && name[len - 11] == '-' && pricing_all_digits(name + len - 10, 4) &&
        name[len - 6] == '-' && pricing_all_digits(name + len - 5, 2) && name[len - 3] == '-' &&
        pricing_all_digits(name + len - 2, 2))
        return len - 11;
    return len;
}

const model_price *pricing_default_lookup(const char *name)
{
    if (!name) return NULL;
    size_t len = strlen(name);
    const model_price *p = pricing_find_exact(name, len);
    if (p) return p;
    size_t base = pricing_strip_date(name, len);
    return base < len ? pricing_find_exact(name, base) : NULL;
}

/* ------------------------------------------------------------ parsing */

#define PARSE_MAX_DIGITS 40 /* significant digits; more is not a price */
#define PARSE_MAX_EXP 400

/* A decimal split into its significant digits (no leading zeros) and the
 * position of the decimal point relative to the first of them. */
typedef struct decimal {
    char digits[PARSE_MAX_DIGITS];
    int n;
    long point;
} decimal;

static bool pricing_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads [digits][.digits]; false when there is no digit or too many. */
static bool pricing_read_mantissa(const char **sp, decimal *d)
{
    const char *s = *sp;
    bool any = false, frac = false;
    for (;; s++) {
        if (*s == '.' && !frac) {
            frac = true;
            continue;
        }
        if (!pricing_is_digit(*s)) break;
        any = true;
        if (d->n == 0 && *s == '0') {
            if (frac) d->point--; /* 0.00x: the point moves left of x */
            continue;
        }
        if (d->n == PARSE_MAX_DIGITS) return false;
        d->digits[d->n++] = (char)(*s - '0');
        if (!frac) d->point++;
    }
    *sp = s;
    return any;
}

/* Reads an optional exponent "e[+-]digits"; false when malformed or huge. */
static bool pricing_read_exponent(const char **sp, long *exp)
{
    const char *s = *sp;
    *exp = 0;
    if (*s != 'e' && *s != 'E') return true;
    s++;
    bool neg = *s == '-';
    if (*s == '-' || *s == '+') s++;
    if (!pricing_is_digit(*s)) return false;
    for (; pricing_is_digit(*s); s++) {
        *exp = *exp * 10 + (*s - '0');
        if (*exp > PARSE_MAX_EXP) return false;
    }
    if (neg) *exp = -*exp;
    *sp = s;
    return true;
}

/* The value of d in millionths, exactly; false if it has a non-zero digit
 * below 1e-6 or does not fit in int64. */
static bool pricing_decimal_to_micros(const decimal *d, int64_t *out)
{
    long keep = d->point + 6; /* digits at or above the 1e-6 place */
    int64_t acc = 0;
    for (long i = 0; i < d->n; i++) {
        if (i >= keep) {
            if (d->digits[i] != 0) return false;
            continue;
        }
        if (__builtin_mul_overflow(acc, 10, &acc) ||
            __builtin_add_overflow(acc, d->digits[i], &acc))
            return false;
    }
    for (long i = d->n; i < keep; i++)
        if (__builtin_mul_overflow(acc, 10, &acc)) return false;
    *out = acc;
    return true;
}

bool pricing_parse_usd_per_mtok(const char *s, int64_t *out)
{
    if (!s || !out) return false;
    decimal d = {.n = 0, .point = 0};
    long exp;
    if (!pricing_read_mantissa(&s, &d) || !pricing_read_exponent(&s, &exp) || *s != '\0')
        return false;
    d.point += exp;
    return pricing_decimal_to_micros(&d, out);
}
