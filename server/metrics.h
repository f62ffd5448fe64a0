/* GET /metrics: Prometheus text format (version 0.0.4). The request
 * figures of router/metrics.h (OpenTelemetry GenAI names) and bridle's own
 * gauges and counters: requests in flight, upstream attempts, calls in
 * flight per provider, breaker states, retry budgets, the response cache,
 * the ledger's queue, spool and ship lag. Answered only to the address
 * blocks of metrics.allow (loopback by default), 403 otherwise. */
#ifndef BRIDLE_SERVER_METRICS_H
#define BRIDLE_SERVER_METRICS_H

#include "server/app.h"
#include "server/h1.h"

void metrics_reply(app *a, h1_req *req);

#endif
