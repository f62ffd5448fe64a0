/* The built-in price table: list prices from wire-formats.md §6 (compiled
 * 2026-11-22). These are defaults only; configuration overrides them, and
 * every row says when it was checked. Figures the reference marks as
 * [memory] / [unverified] / one-source say so in `note`. */
#include "providers/pricing.h"

#include <stddef.h>

/* USD per million tokens → µ$ per million tokens. Every figure has at most
 * six decimals, so adding 0.5 before truncating gives the exact integer;
 * the compiler folds it, and test_pricing.c cross-checks rows against
 * pricing_parse_usd_per_mtok. */
#define USD(x) ((int64_t)((x)*1e6 + 0.5))

#define CHECKED "2026-11-22"

/* Anthropic: cache read 0.1×, 5-minute write 1.25×, 1-hour write 2× input;
 * Message Batches half price. Every Claude 4.x takes a thinking budget.
 * min_cache: the shortest cacheable prefix in tokens (wire-formats.md §6.1:
 * 1,024 for Sonnet 4.5/4.6 and Opus 4.1/4.8, 4,096 for Opus 4.5-4.7, one
 * source; Haiku 4.5's 2,048 from the issue, not seen in a source). */
#define ANTHROPIC(id, in, out, ctx, tier_, min_cache, lc_thr, lc_in, lc_out, why)                  \
    {                                                                                              \
        .name = id, .input = USD(in), .cached_input = USD((in) / 10),                              \
        .cache_write_5m = USD((in)*1.25), .cache_write_1h = USD((in)*2), .output = USD(out),       \
        .batch_discount_pct = 50, .long_ctx_threshold = lc_thr, .long_ctx_input_pct = lc_in,       \
        .long_ctx_output_pct = lc_out, .context_window = ctx, .min_cache_tokens = min_cache,       \
        .tier = tier_, .reasoning = true, .effective_from = CHECKED, .note = why                   \
    }

/* Providers whose prompt cache has no write charge (OpenAI, Gemini,
 * DeepSeek): writes are billed as input, so cache_write_* stay 0. */
#define CACHED_FIELDS(id, in, cached, out, batch, ctx, tier_, lc_thr, lc_in, lc_out, why)          \
    .name = id, .input = USD(in), .cached_input = USD(cached), .output = USD(out),                 \
    .batch_discount_pct = batch, .long_ctx_threshold = lc_thr, .long_ctx_input_pct = lc_in,        \
    .long_ctx_output_pct = lc_out, .context_window = ctx, .tier = tier_,                           \
    .effective_from = CHECKED, .note = why
#define CACHED(...)                                                                                \
    {                                                                                              \
        CACHED_FIELDS(__VA_ARGS__)                                                                 \
    }
/* A reasoning model that takes a budget or an effort: OpenAI's gpt-5 family
 * (reasoning_effort), Gemini 2.5 and 3.x (thinkingConfig). */
#define THINKING(...)                                                                              \
    {                                                                                              \
        CACHED_FIELDS(__VA_ARGS__), .reasoning = true                                              \
    }

#define LOCAL(id, ctx)                                                                             \
    {                                                                                              \
        .name = id, .context_window = ctx, .tier = TIER_LOCAL, .effective_from = CHECKED,          \
        .note = "local (Ollama): price 0 unless configured; context is the model's, Ollama's "     \
                "default num_ctx is smaller"                                                       \
    }

/* Embedding models: input tokens only (no output), no tier: "auto" never
 * picks one. Prices from the issue (wire-formats.md §6.3 has none)
 * [unverified]; OpenAI's Batch API halves them. */
#define EMBEDDING(id, in, batch, ctx, why)                                                         \
    {                                                                                              \
        .name = id, .input = USD(in), .batch_discount_pct = batch, .context_window = ctx,          \
        .embedding = true, .effective_from = CHECKED, .note = why                                  \
    }

static const model_price price_table[] = {
    /* ---------------------------------------------------------- Anthropic */
    ANTHROPIC("claude-haiku-4-5", 1.00, 5.00, 200000, TIER_BUDGET, 2048, 0, 0, 0, NULL),
    ANTHROPIC("claude-sonnet-4-5", 3.00, 15.00, 1000000, TIER_MID, 1024, 200000, 200, 150,
              "200k standard, 1M with the context-1m beta; whole request 2x input / 1.5x "
              "output above 200k input"),
    ANTHROPIC("claude-sonnet-4-6", 3.00, 15.00, 1000000, TIER_MID, 1024, 0, 0, 0,
              "flat price at 1M since the 2026-03-13 GA [third-party sources]"),
    ANTHROPIC("claude-opus-4-5", 5.00, 25.00, 200000, TIER_HEAVY, 4096, 0, 0, 0, NULL),
    ANTHROPIC("claude-opus-4-6", 5.00, 25.00, 1000000, TIER_HEAVY, 4096, 0, 0, 0,
              "flat price at 1M since the 2026-03-13 GA [third-party sources]"),
    ANTHROPIC("claude-opus-4-7", 5.00, 25.00, 1000000, TIER_HEAVY, 4096, 0, 0, 0,
              "new tokenizer (~+35% tokens); 1M flat [third-party sources]"),
    ANTHROPIC("claude-opus-4-8", 5.00, 25.00, 1000000, TIER_HEAVY, 1024, 0, 0, 0,
              "context window assumed 1M like 4.6/4.7 [unverified]"),
    ANTHROPIC("claude-opus-4-1", 15.00, 75.00, 200000, TIER_HEAVY, 1024, 0, 0, 0, "legacy"),

    /* ---------------------------------------------------------- OpenAI */
    CACHED("gpt-4o", 2.50, 1.25, 10.00, 50, 128000, TIER_MID, 0, 0, 0, NULL),
    CACHED("gpt-4o-mini", 0.15, 0.075, 0.60, 50, 128000, TIER_BUDGET, 0, 0, 0, NULL),
    CACHED("gpt-4.1", 2.00, 0.50, 8.00, 50, 1047576, TIER_MID, 0, 0, 0, NULL),
    CACHED("gpt-4.1-mini", 0.40, 0.10, 1.60, 50, 1047576, TIER_BUDGET, 0, 0, 0, NULL),
    THINKING("gpt-5", 1.25, 0.125, 10.00, 50, 400000, TIER_MID, 0, 0, 0, NULL),
    THINKING("gpt-5.1", 1.25, 0.125, 10.00, 50, 400000, TIER_MID, 0, 0, 0, NULL),
    THINKING("gpt-5-mini", 0.25, 0.025, 2.00, 50, 400000, TIER_BUDGET, 0, 0, 0,
             "cached rate from memory [unverified]"),
    THINKING("gpt-5.4", 2.50, 0.25, 15.00, 50, 1050000, TIER_MID, 272000, 200, 150,
             "long-context rule from one source; context window [unverified]"),
    THINKING("gpt-5.4-mini", 0.75, 0.075, 4.50, 50, 400000, TIER_BUDGET, 0, 0, 0,
             "context window [unverified]"),
    THINKING("gpt-5.4-nano", 0.20, 0.02, 1.25, 50, 400000, TIER_BUDGET, 0, 0, 0,
             "context window [unverified]"),
    THINKING("gpt-5.5", 5.00, 0.50, 30.00, 50, 1050000, TIER_HEAVY, 272000, 200, 150,
             "long-context rule from one source; context window [unverified]"),

    /* ---------------------------------------------------------- Google */
    THINKING("gemini-2.5-pro", 1.25, 0.125, 10.00, 50, 1048576, TIER_MID, 200000, 200, 150,
             "above 200k prompt: 2.50 in / 0.25 cached / 15 out"),
    THINKING("gemini-2.5-flash", 0.30, 0.03, 2.50, 50, 1048576, TIER_BUDGET, 0, 0, 0,
             "seed figure 0.15/0.60 was the 2025 preview (non-thinking) price; now 0.30/2.50"),
    THINKING("gemini-2.5-flash-lite", 0.10, 0.01, 0.40, 50, 1048576, TIER_BUDGET, 0, 0, 0,
             "cached rate from memory [unverified]"),
    THINKING("gemini-3-flash", 0.50, 0.05, 3.00, 50, 1048576, TIER_BUDGET, 0, 0, 0,
             "one secondary source [unverified]; cached assumed 10% of input"),
    THINKING("gemini-3.1-pro", 2.00, 0.20, 12.00, 50, 1048576, TIER_MID, 200000, 200, 150,
             "one secondary source [unverified]; cached assumed 10%; >200k output 1.5x "
             "assumed (only input 2->4 documented)"),
    THINKING("gemini-3.1-flash-lite", 0.25, 0.025, 1.50, 50, 1048576, TIER_BUDGET, 0, 0, 0,
             "one secondary source [unverified]; cached assumed 10% of input"),

    /* ---------------------------------------------------------- DeepSeek */
    CACHED("deepseek-chat", 0.28, 0.028, 0.42, 0, 131072, TIER_BUDGET, 0, 0, 0,
           "V3.2; cached = cache-hit price"),
    CACHED("deepseek-reasoner", 0.28, 0.028, 0.42, 0, 131072, TIER_BUDGET, 0, 0, 0,
           "V3.2 thinking mode; cached = cache-hit price"),
    CACHED("deepseek-v4-flash", 0.14, 0.0028, 0.28, 0, 131072, TIER_BUDGET, 0, 0, 0,
           "context window [unverified], may be larger"),
    CACHED("deepseek-v4-pro", 1.74, 0.0145, 3.48, 0, 131072, TIER_BUDGET, 0, 0, 0,
           "list price (a -75% promotion ran until 2026-05-31); context window [unverified]"),

    /* ---------------------------------------------------------- embeddings */
    EMBEDDING("text-embedding-3-small", 0.02, 50, 8191, "price from the issue [unverified]"),
    EMBEDDING("text-embedding-3-large", 0.13, 50, 8191, "price from the issue [unverified]"),
    EMBEDDING("text-embedding-ada-002", 0.10, 50, 8191, "legacy [memory, unverified]"),
    EMBEDDING("gemini-embedding-001", 0.15, 50, 2048,
              "price from the issue [unverified]; the Gemini API may report no usage (estimated)"),
    EMBEDDING("nomic-embed-text", 0, 0, 8192, "local (Ollama): price 0 unless configured"),
    EMBEDDING("mxbai-embed-large", 0, 0, 512, "local (Ollama): price 0 unless configured"),

    /* ---------------------------------------------------------- local */
    LOCAL("llama3.2", 131072),
    LOCAL("qwen2.5", 32768),
    LOCAL("mistral", 32768),

    {.name = NULL},
};

const model_price *pricing_default_table(void)
{
    return price_table;
}
