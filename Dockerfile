# bridle: build on debian:12 with the -dev packages, run on debian:12-slim
# with only the runtime libraries. Used by docker-compose.yml.
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config ca-certificates \
      libevent-dev libcurl4-openssl-dev libjson-c-dev libmsgpack-dev libpq-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" all && mkdir -p migrations

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-openssl-2.1-7 libcurl4 libjson-c5 libmsgpackc2 libpq5 libssl3 \
      ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/bridle --create-home --shell /usr/sbin/nologin bridle \
 && mkdir -p /var/lib/bridle/var/spool && chown -R bridle:bridle /var/lib/bridle/var
COPY --from=build /src/build/bridle /src/build/bridle-mock /usr/local/bin/
COPY config/ /etc/bridle/
COPY --from=build /src/migrations/ /usr/share/bridle/migrations/
USER bridle
WORKDIR /var/lib/bridle
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["bridle", "serve", "--config", "/etc/bridle/bridle.json", "--listen", "0.0.0.0:8080"]
