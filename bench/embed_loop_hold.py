#!/usr/bin/env python3
"""How long one large embeddings answer holds bridle's loop.

Sends POST /v1/embeddings with 2,048 inputs (OpenAI's maximum) in float and
in base64 while a second connection sends GET /healthz back to back; the
longest /healthz is the longest the loop was held. Against a running
gateway, e.g. `make run`:

    BRIDLE_KEY=$(sed -n 's/^key: *//p' var/dev-key) bench/embed_loop_hold.py
    (env: BRIDLE_HOST=127.0.0.1, BRIDLE_PORT=8080, MODEL=text-embedding-3-small, ROUNDS=2)
"""
import http.client
import json
import os
import threading
import time

HOST = os.environ.get("BRIDLE_HOST", "127.0.0.1")
PORT = int(os.environ.get("BRIDLE_PORT", "8080"))
KEY = os.environ["BRIDLE_KEY"]
MODEL = os.environ.get("MODEL", "text-embedding-3-small")
ROUNDS = int(os.environ.get("ROUNDS", "2"))
INPUTS = ["text number %d for the embedding benchmark" % i for i in range(2048)]


def big(encoding, out):
    c = http.client.HTTPConnection(HOST, PORT, timeout=120)
    body = json.dumps({"model": MODEL, "input": INPUTS, "encoding_format": encoding})
    t = time.time()
    c.request("POST", "/v1/embeddings", body, {"Authorization": "Bearer " + KEY,
                                               "content-type": "application/json",
                                               "x-bridle-cache": "off"})
    r = c.getresponse()
    out.append((r.status, len(r.read()), time.time() - t))


for _ in range(ROUNDS):
    for encoding in ("float", "base64"):
        res, lat = [], []
        th = threading.Thread(target=big, args=(encoding, res))
        c = http.client.HTTPConnection(HOST, PORT, timeout=60)
        th.start()
        while th.is_alive():
            t = time.time()
            c.request("GET", "/healthz")
            c.getresponse().read()
            lat.append(time.time() - t)
        th.join()
        lat.sort()
        status, size, secs = res[0]
        print("%-6s HTTP %d %5.1f MB in %.3f s; /healthz during it: n=%d p50 %.1f ms max %.1f ms"
              % (encoding, status, size / 1e6, secs, len(lat), lat[len(lat) // 2] * 1e3,
                 lat[-1] * 1e3))
