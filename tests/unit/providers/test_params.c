/* Unit tests for providers/params.c: the parameter table per dialect
 * (every row found, refused only when its value asks for something), what
 * a request needs, default capabilities, and the refusals' words. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/params.h"
#include "providers/provider.h"
#include "tests/unit/providers/canon_fixture.h"

extern const provider_ops openai_ops, anthropic_ops, gemini_ops, ollama_ops;

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define TOOLS "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]"

/* The parameter the dialect refuses in body (JSON members after model and
 * messages), or "" when it takes it all. */
static const char *refused(const provider_ops *ops, const char *members)
{
    static char param[96];
    char json[1024];
    snprintf(json, sizeof json, "{\"model\":\"m\"," MSGS "%s%s}", *members ? "," : "", members);
    canon_request req = fixture_canon_parse(json);
    params_refusal why;
    memset(&why, 0, sizeof why);
    bool r = params_dialect_refuses(&req, ops, "m", &why);
    snprintf(param, sizeof param, "%s", r ? why.param : "");
    if (r) {
        assert_true(strlen(why.message) > 20);
        assert_string_equal(why.code, "unsupported_parameter");
    }
    assert_int_equal(r, params_dialect_refuses(&req, ops, NULL, NULL)); /* same without words */
    fixture_canon_release(&req);
    return param;
}

typedef struct row {
    const char *members;
    const char *anthropic, *gemini, *ollama; /* the refused param, or "" */
} row;

static const row rows[] = {
    {"", "", "", ""},
    {"\"temperature\":1", "", "", ""},
    {"\"temperature\":1.5", "temperature", "", ""},
    {"\"top_p\":0.5,\"top_k\":3,\"stop\":[\"x\"]", "", "", ""},
    {"\"max_tokens\":5,\"max_completion_tokens\":6", "", "", ""},
    {"\"n\":1", "", "", ""},
    {"\"n\":2", "n", "", "n"},
    {"\"n\":2,\"stream\":true", "n", "", "n"},
    {"\"seed\":1,\"presence_penalty\":1,\"frequency_penalty\":1", "", "", ""},
    {"\"logit_bias\":{}", "", "", ""},
    {"\"logit_bias\":{\"1\":5}", "logit_bias", "logit_bias", "logit_bias"},
    {"\"logprobs\":false", "", "", ""},
    {"\"logprobs\":true", "logprobs", "", ""},
    {"\"logprobs\":true,\"stream\":true", "logprobs", "", ""},
    {"\"top_logprobs\":0", "", "", ""},
    {"\"top_logprobs\":2", "top_logprobs", "", ""},
    {"\"modalities\":[\"text\"]", "", "", ""},
    {"\"modalities\":[\"text\",\"audio\"]", "modalities", "modalities", "modalities"},
    {"\"audio\":{\"voice\":\"alloy\"}", "audio", "audio", "audio"},
    {"\"audio\":null", "", "", ""},
    /* Gemini and Ollama cannot be told: their answer keeps its first call */
    {TOOLS ",\"parallel_tool_calls\":false", "", "", ""},
    {TOOLS ",\"parallel_tool_calls\":true", "", "", ""},
    {"\"parallel_tool_calls\":false", "", "", ""}, /* without tools: nothing to limit */
    {TOOLS ",\"tool_choice\":\"auto\"", "", "", ""},
    {TOOLS ",\"tool_choice\":\"none\"", "", "", ""},
    {TOOLS ",\"tool_choice\":\"required\"", "", "", "tool_choice"},
    {TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}", "", "",
     "tool_choice"},
    {TOOLS ",\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"auto\","
           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}}",
     "", "", ""}, /* the subset is what is sent */
    {TOOLS ",\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"required\","
           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}}",
     "", "", "tool_choice"}, /* Ollama cannot force a call */
    {TOOLS ",\"tool_choice\":{\"type\":\"custom\",\"custom\":{\"name\":\"f\"}}", "tool_choice",
     "tool_choice", "tool_choice"},
    {"\"tool_choice\":\"required\"", "", "", ""}, /* without tools: nothing to choose */
    {"\"user\":\"u\",\"safety_identifier\":\"s\",\"metadata\":{\"task\":\"t\"}", "", "", ""},
    {"\"response_format\":{\"type\":\"json_object\"}", "", "", ""},
    {TOOLS ",\"response_format\":{\"type\":\"json_object\"}", "response_format", "", ""},
    {TOOLS ",\"response_format\":{\"type\":\"text\"}", "", "", ""},
    {"\"tools\":[{\"type\":\"custom\",\"custom\":{\"name\":\"c\"}}]", "tools[0]", "tools[0]",
     "tools[0]"},
    {"\"reasoning_effort\":\"low\",\"reasoning\":{\"effort\":\"low\"}", "", "", ""},
    {"\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2000}", "", "", ""},
    {"\"cache_control\":{\"type\":\"ephemeral\"}", "", "", ""},
    {"\"prediction\":{\"type\":\"content\",\"content\":\"x\"},\"service_tier\":\"flex\","
     "\"store\":true,\"verbosity\":\"low\",\"prompt_cache_key\":\"k\","
     "\"prompt_cache_retention\":\"24h\",\"prompt_cache_options\":{}",
     "", "", ""},
    {"\"stream\":true,\"stream_options\":{\"include_usage\":true}", "", "", ""},
    {"\"web_search_options\":{}", "web_search_options", "web_search_options", "web_search_options"},
    {"\"moderation\":{}", "moderation", "moderation", "moderation"},
    {"\"functions\":[{\"name\":\"f\"}]", "functions", "functions", "functions"},
    {"\"function_call\":\"auto\"", "function_call", "function_call", "function_call"},
    {"\"frobnicate\":1", "frobnicate", "frobnicate", "frobnicate"},
    {"\"bridle_hint\":1,\"x-bridle-tag\":2", "", "", ""},
};

/* Content parts in the messages (the members replace the messages). */
static const row part_rows[] = {
    {"{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AA\"}}", "", "", ""},
    {"{\"type\":\"image_url\",\"image_url\":\"https://x.test/a.png\"}", "",
     "messages[0].content[1]", "messages[0].content[1]"},
    {"{\"type\":\"file\",\"file\":{\"file_id\":\"f\"}}", "messages[0].content[1]",
     "messages[0].content[1]", "messages[0].content[1]"},
};

/* The dialects' answers to a user message of a text part and `part`. */
static void check_part(const row *r)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
             "\"text\",\"text\":\"a\"},%s]}]}",
             r->members);
    const provider_ops *ops[] = {&anthropic_ops, &gemini_ops, &ollama_ops, &openai_ops};
    const char *want[] = {r->anthropic, r->gemini, r->ollama, ""};
    for (int i = 0; i < 4; i++) {
        canon_request req = fixture_canon_parse(json);
        params_refusal why;
        bool no = params_dialect_refuses(&req, ops[i], "m", &why);
        if (strcmp(no ? why.param : "", want[i]) != 0)
            fail_msg("%s, %s: refused \"%s\", want \"%s\"", ops[i]->kind, r->members,
                     no ? why.param : "", want[i]);
        fixture_canon_release(&req);
    }
}

static void test_table_per_dialect(void **state)
{
    for (size_t i = 0; i < sizeof part_rows / sizeof part_rows[0]; i++)
        check_part(&part_rows[i]);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const row *r = &rows[i];
        const char *got;
        if (strcmp((got = refused(&anthropic_ops, r->members)), r->anthropic) != 0)
            fail_msg("anthropic, %s: refused \"%s\", want \"%s\"", r->members, got, r->anthropic);
        if (strcmp((got = refused(&gemini_ops, r->members)), r->gemini) != 0)
            fail_msg("gemini, %s: refused \"%s\", want \"%s\"", r->members, got, r->gemini);
        if (strcmp((got = refused(&ollama_ops, r->members)), r->ollama) != 0)
            fail_msg("ollama, %s: refused \"%s\", want \"%s\"", r->members, got, r->ollama);
        /* OpenAI-compatible hosts get the body as sent: they answer for it */
        assert_string_equal(refused(&openai_ops, r->members), "");
    }
}

static unsigned needs_of(const char *members)
{
    char json[1024];
    snprintf(json, sizeof json, "{\"model\":\"m\",%s}", members);
    canon_request req = fixture_canon_parse(json);
    unsigned n = req.needs;
    assert_int_equal(n, params_request_needs(req.doc));
    fixture_canon_release(&req);
    return n;
}

static void test_request_needs(void **state)
{
    assert_int_equal(needs_of(MSGS), 0);
    assert_int_equal(needs_of(MSGS "," TOOLS), CAP_TOOLS);
    assert_int_equal(needs_of(MSGS ",\"tools\":[]"), 0);
    assert_int_equal(needs_of(MSGS ",\"response_format\":{\"type\":\"json_object\"}"), 0);
    assert_int_equal(
        needs_of(MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{}}"),
        CAP_JSON_SCHEMA);
    assert_int_equal(needs_of(MSGS ",\"logprobs\":true"), CAP_LOGPROBS);
    assert_int_equal(needs_of(MSGS ",\"logprobs\":false,\"top_logprobs\":0"), 0);
    assert_int_equal(needs_of(MSGS ",\"top_logprobs\":1"), CAP_LOGPROBS);
    assert_int_equal(needs_of(MSGS ",\"modalities\":[\"audio\"]"), CAP_AUDIO);
    assert_int_equal(needs_of(MSGS ",\"modalities\":[\"text\"]"), 0);
    assert_int_equal(needs_of(MSGS ",\"audio\":{}"), CAP_AUDIO);
    assert_int_equal(
        needs_of(
            "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AA\"}},"
            "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"AA\",\"format\":\"wav\"}}]}]"),
        CAP_VISION | CAP_AUDIO);
}

static void test_default_caps(void **state)
{
    unsigned base = CAP_TOOLS | CAP_VISION | CAP_JSON_SCHEMA;
    assert_int_equal(params_default_caps(&openai_ops, "gpt-4o-mini"), base | CAP_LOGPROBS);
    assert_int_equal(params_default_caps(&openai_ops, "gpt-4o-audio-preview"),
                     base | CAP_LOGPROBS | CAP_AUDIO);
    assert_int_equal(params_default_caps(&anthropic_ops, "claude-haiku-4-5"), base);
    assert_int_equal(params_default_caps(&gemini_ops, "gemini-2.5-flash"), base | CAP_LOGPROBS);
    assert_int_equal(params_default_caps(&ollama_ops, "llama3.2"),
                     CAP_TOOLS | CAP_JSON_SCHEMA | CAP_LOGPROBS);
    assert_int_equal(params_default_caps(&ollama_ops, "llama3.2-vision"), base | CAP_LOGPROBS);
    assert_int_equal(params_default_caps(&ollama_ops, "llava:13b"), base | CAP_LOGPROBS);
    unsigned cap;
    assert_true(params_cap_parse("json_schema", &cap));
    assert_int_equal(cap, CAP_JSON_SCHEMA);
    assert_false(params_cap_parse("telepathy", &cap));
    assert_false(params_cap_parse(NULL, &cap));
    assert_string_equal(params_cap_name(CAP_LOGPROBS), "logprobs");
}

static void test_target_refusal_words(void **state)
{
    provider_conf pc = {.name = "anthropic", .ops = &anthropic_ops};
    target t = {.provider = &pc, .model = "claude-x", .upstream_model = "claude-x"};
    t.caps = params_default_caps(&anthropic_ops, t.upstream_model);
    canon_request req = fixture_canon_parse(
        "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"a\"},{\"type\":\"image_url\",\"image_url\":\"data:image/png;base64,AA\"}]}],"
        "\"logprobs\":true,\"n\":2}");
    params_refusal why;
    /* a missing capability comes first, named by the parameter that needs it */
    assert_true(params_target_refuses(&req, &t, &why));
    assert_string_equal(why.param, "logprobs");
    assert_string_equal(why.code, "model_lacks_capability");
    assert_string_equal(why.brief, "lacks logprobs");
    assert_non_null(strstr(why.message, "claude-x"));
    assert_non_null(strstr(why.message, "remove it"));
    /* with the capability (the config may say so), the dialect still refuses */
    t.caps |= CAP_LOGPROBS;
    assert_true(params_target_refuses(&req, &t, &why));
    assert_string_equal(why.param, "logprobs");
    assert_string_equal(why.code, "unsupported_parameter");
    assert_non_null(strstr(why.message, "anthropic dialect returns no token log probabilities"));
    /* without vision, the image part is named */
    t.caps = CAP_TOOLS;
    assert_true(params_target_refuses(&req, &t, &why));
    assert_string_equal(why.param, "messages[0].content[1]");
    assert_string_equal(why.brief, "lacks vision");
    /* the refused dialects as a mask over provider_all() */
    unsigned mask = params_refused_dialects(&req);
    assert_false(mask & 1u << params_dialect_index(&openai_ops));
    assert_true(mask & 1u << params_dialect_index(&anthropic_ops));
    assert_false(mask & 1u << params_dialect_index(&gemini_ops)); /* n and logprobs, not streamed */
    assert_true(mask & 1u << params_dialect_index(&ollama_ops));  /* n */
    fixture_canon_release(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_per_dialect),
        cmocka_unit_test(test_request_needs),
        cmocka_unit_test(test_default_caps),
        cmocka_unit_test(test_target_refusal_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
