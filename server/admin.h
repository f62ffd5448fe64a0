/* The admin API under /v1/bridle/admin/ (admin keys only; server/http.c
 * checks the key): keys and teams in PostgreSQL, as `bridle keys` and
 * `bridle teams` do (the same SQL, db/keystore.h), and the budgets' status.
 *
 *   POST   /v1/bridle/admin/keys               create a key: 201 with the key, once
 *   GET    /v1/bridle/admin/keys               list keys (never the key itself)
 *   POST   /v1/bridle/admin/keys/{id}/revoke   revoke (DELETE .../keys/{id} too)
 *   PUT    /v1/bridle/admin/teams/{name}       create or change a team
 *   GET    /v1/bridle/admin/teams              list teams
 *   GET    /v1/bridle/admin/budgets            bridle_budget_status
 *
 * Non-blocking: one connection of its own (db/pgconn.h); requests queue
 * while a query runs. Errors are OpenAI error JSON. */
#ifndef BRIDLE_ADMIN_H
#define BRIDLE_ADMIN_H

#include "server/h1.h"

#include "server/app.h"

typedef struct admin admin;

/* For a gateway with a database. NULL on OOM. */
admin *admin_new(app *a);
void admin_free(admin *ad);

/* Serves one admin request (its key was checked). Without a database
 * (a->admin NULL): 503. */
void admin_handle(app *a, h1_req *req, const char *path, h1_method cmd);

#endif
