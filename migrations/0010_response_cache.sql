-- 0010_response_cache: the response cache's shared level (router/cache.h,
-- db/cache_store.h, docs/design.md "The response cache"): an answer one
-- gateway stored is found by the others.
--
-- UNLOGGED: it is a cache, so nothing of it goes to the WAL and a crash of
-- PostgreSQL may empty it (replicas do not have it either). A gateway with
-- cache.shared_logged makes it LOGGED when it connects (and one without,
-- UNLOGGED again).
--
-- key is the request's whole canonical key (scope, routed model, output cap,
-- the answer-changing fields in compact JSON), compared on every read, so
-- two requests never share an answer by a hash collision; key_hash (its
-- SHA-256, computed here) is what the primary key indexes: a B-tree entry
-- cannot hold a key of several kilobytes. Expired rows are deleted, and the
-- table trimmed to cache.shared_max_mb oldest first, by each gateway every
-- 30 seconds (a DELETE that finds nothing is cheap).
CREATE UNLOGGED TABLE bridle_response_cache (
    key_hash        bytea       PRIMARY KEY,
    key             text        NOT NULL,
    body            text        NOT NULL,  -- the chat.completion JSON
    model           text        NOT NULL,  -- the client-facing model that answered
    input_uncached  bigint      NOT NULL,
    cache_read      bigint      NOT NULL,
    cache_write_5m  bigint      NOT NULL,
    cache_write_1h  bigint      NOT NULL,
    output          bigint      NOT NULL,  -- reasoning included
    reasoning       bigint      NOT NULL,
    usage_exact     boolean     NOT NULL,
    usage_estimated boolean     NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX bridle_response_cache_expires ON bridle_response_cache (expires_at);
