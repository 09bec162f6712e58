# passerelle container: multi-stage build, non-root runtime, /data volume, config at
# /config/config.toml, health check on the admin listener.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin passerelle \
 && install -D target/release/passerelle /out/passerelle

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin passerelle \
 && mkdir -p /data /config \
 && chown passerelle:passerelle /data
COPY --from=build /out/passerelle /usr/local/bin/passerelle
COPY config.example.toml /config/config.toml
ENV PASSERELLE_CONFIG=/config/config.toml \
    PASSERELLE__STORE__PATH=/data/passerelle.db \
    PASSERELLE__HTTP__LISTEN=127.0.0.1:9180 \
    PASSERELLE__HTTP__PUBLIC_LISTEN=0.0.0.0:9181
USER passerelle
VOLUME ["/data"]
EXPOSE 9181
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["passerelle", "health", "--addr", "127.0.0.1:9180"]
ENTRYPOINT ["passerelle"]
CMD ["run"]
