/* Prices and cost. Money is integer: prices are micro-dollars per million
 * tokens (µ$/Mtok), so tokens × price is exactly pico-dollars (1e-12 USD),
 * and every cost in bridle is an int64 of pico-dollars ("pusd"). A single
 * request can cost up to ~9.2 million dollars before it overflows. */
#ifndef BRIDLE_PRICING_H
#define BRIDLE_PRICING_H

#include <stdbool.h>
#include <stdint.h>

/* The usage of one call, normalised (wire-formats.md §9). All buckets are
 * disjoint except reasoning, which is a part of output. */
typedef struct usage_record {
    int64_t input_uncached; /* input tokens billed at the plain input rate */
    int64_t cache_read;     /* input tokens served from a prompt cache */
    int64_t cache_write_5m; /* input tokens written to a 5-minute cache */
    int64_t cache_write_1h; /* input tokens written to a 1-hour cache */
    int64_t output;         /* all output tokens, reasoning included */
    int64_t reasoning;      /* the reasoning/thinking part of output */
    bool exact;             /* from the provider's usage block, not an estimate */
} usage_record;

typedef enum { TIER_NONE = 0, TIER_BUDGET, TIER_MID, TIER_HEAVY, TIER_LOCAL } model_tier;

/* One model's price card. Prices in µ$ per million tokens. */
typedef struct model_price {
    const char *name;           /* model id as clients name it */
    int64_t input;              /* plain input */
    int64_t cached_input;       /* cache read */
    int64_t cache_write_5m;     /* 0 = same as input */
    int64_t cache_write_1h;     /* 0 = same as input */
    int64_t output;             /* output, reasoning included */
    int batch_discount_pct;     /* e.g. 50: batch calls cost 50% less */
    int64_t long_ctx_threshold; /* total input tokens above which the whole request is re-priced; 0
                                   = none */
    int long_ctx_input_pct;     /* e.g. 200 = 2× input-side prices above the threshold; 0 = 100 */
    int long_ctx_output_pct;    /* e.g. 150 = 1.5× output above the threshold; 0 = 100 */
    int64_t context_window;     /* tokens */
    int64_t min_cache_tokens; /* the shortest prefix the provider's prompt cache takes (Anthropic);
                                 0 = unknown: bridle places no breakpoints for it */
    model_tier tier;
    bool reasoning; /* takes a thinking budget or effort (routing.thinking_caps reach it) */
    bool embedding; /* an embedding model: POST /v1/embeddings only, priced on input alone;
                       never chosen by "auto" or a tier (tier TIER_NONE in the table) */
    const char *effective_from; /* YYYY-MM-DD the figures were last checked */
    const char *note;           /* where a seed figure was stale, etc.; may be NULL */
} model_price;

/* The cost of one call in pico-dollars. `batch` applies the batch discount.
 * Long-context re-pricing applies to the whole request when total input
 * (uncached + cache read + cache writes) exceeds the threshold. Reasoning is
 * inside output and not billed again. Negative token counts and prices count
 * as 0. Percentages are applied in 128-bit arithmetic with one final
 * truncation (a fraction of a pico-dollar is dropped); a result above
 * INT64_MAX saturates to INT64_MAX. NULL price or usage costs 0. */
int64_t pricing_cost_pusd(const model_price *price, const usage_record *usage, bool batch);

/* The built-in price table (router/price_table.c), NULL-name terminated. */
const model_price *pricing_default_table(void);
/* A model from the built-in table by exact name, else by the name without a
 * trailing date snapshot ("-YYYYMMDD" or "-YYYY-MM-DD"), or NULL. */
const model_price *pricing_default_lookup(const char *name);

const char *pricing_tier_name(model_tier tier);
/* Parses "budget" | "mid" | "heavy" | "local"; false when unknown. */
bool pricing_tier_parse(const char *s, model_tier *out);

/* Parses a price in USD per million tokens given as a JSON number or string
 * ("3", "0.075", "0.0028") into µ$/Mtok exactly (at most 6 decimals;
 * trailing zeros and an exponent such as "1e-3" are fine when the value is
 * still exact). Returns false for negative, non-numeric, too-precise or
 * out-of-range values, and for surrounding spaces. Pass the number's source
 * text (json-c keeps it for parsed doubles), not a re-printed double. */
bool pricing_parse_usd_per_mtok(const char *s, int64_t *out);

#endif
