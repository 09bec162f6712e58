# passerelle container: multi-stage build; a distroless-style runtime (the stripped binary, the
# shared libraries it links, CA certificates and a passwd entry: no shell, no package manager);
# non-root; the store on the /data volume; config at /config/config.toml; a health check that
# asks the admin listener the configuration names.
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before that) for the
# cache mounts, which keep the cargo registry and target directory between builds.
#
# The two bases are build arguments whose defaults are the official images, so `docker build .`
# uses those. The project's tests build the same file on local stand-ins (scripts/container.sh).
ARG BUILD_BASE=rust:1.95-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim

FROM ${BUILD_BASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=passerelle-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=passerelle-release-target,target=/src/target \
    cargo build --release --locked --bin passerelle \
 && install -D -m 0755 target/release/passerelle /out/passerelle \
 && strip /out/passerelle \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# The runtime's root is gathered on the runtime base (which has a shell and ldd), then copied
# alone into an empty image.
FROM ${RUNTIME_BASE} AS root
COPY --from=build /out/ /out/
RUN set -eu \
 && mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/config /rootfs/data /rootfs/tmp \
 && install -m 0755 /out/passerelle /rootfs/usr/local/bin/passerelle \
 && install -m 0644 /out/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && for lib in $(ldd /out/passerelle | grep -o '/[^ ]*'); do cp -L --parents "$lib" /rootfs; done \
 && printf 'root:x:0:0:root:/root:/usr/sbin/nologin\npasserelle:x:10001:10001:passerelle:/data:/usr/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\npasserelle:x:10001:\n' > /rootfs/etc/group \
 && chmod 1777 /rootfs/tmp \
 && chown 10001:10001 /rootfs/data \
 && /rootfs/lib64/ld-linux-x86-64.so.2 --library-path /rootfs/lib/x86_64-linux-gnu:/rootfs/usr/lib/x86_64-linux-gnu /rootfs/usr/local/bin/passerelle version

FROM scratch
# Ownership comes along: /data is the passerelle user's.
COPY --from=root /rootfs/ /
COPY config.example.toml /config/config.toml
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PASSERELLE_CONFIG=/config/config.toml \
    PASSERELLE__STORE__PATH=/data/passerelle.db \
    PASSERELLE__HTTP__PUBLIC_LISTEN=0.0.0.0:9181
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9181
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["passerelle", "health"]
ENTRYPOINT ["passerelle"]
CMD ["run"]
