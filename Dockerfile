# Multi-stage build: compile in the Rust image, run as a non-root user in a slim Debian.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin writeguard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/writeguard --create-home writeguard
COPY --from=build /src/target/release/writeguard /usr/local/bin/writeguard
# NOT config/writeguard.toml: its example secrets would be public ones on 0.0.0.0 (writeguard
# refuses them there anyway). docker.toml has no secret; run exits 2 until the environment
# gives WRITEGUARD_UPSTREAM and a WRITEGUARD_ADMIN_TOKEN of at least 16 bytes.
COPY config/docker.toml /etc/writeguard/writeguard.toml
# Listen on all interfaces inside the container; keep state (and, beside it, the pid file
# and upgrade socket) in the volume, owned by the non-root user.
ENV WRITEGUARD_CONFIG=/etc/writeguard/writeguard.toml \
    WRITEGUARD_LISTEN=0.0.0.0:8080 \
    WRITEGUARD_ADMIN_LISTEN=0.0.0.0:9090
WORKDIR /var/lib/writeguard
USER writeguard
VOLUME ["/var/lib/writeguard"]
EXPOSE 8080 9090
# Set WRITEGUARD_UPSTREAM, WRITEGUARD_ADMIN_TOKEN and WRITEGUARD_UPSUN_SHARED_KEY (secrets of
# at least 16 bytes); mount your own config over /etc/writeguard/writeguard.toml (or pass -c)
# to change anything else.
# Healthy once /readyz answers 200 (state restored, every listener held); no token needed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["writeguard", "healthcheck"]
ENTRYPOINT ["writeguard"]
CMD ["run"]
