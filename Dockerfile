# syntax=docker/dockerfile:1
# callgate in a container: one binary (SFU, TURN relay, metering), run as a
# non-root user with its data in a volume. docs/deploying.md, "Docker".
#
#   docker build -t callgate .
#   docker run -d --name callgate --network host \
#     -e CALLGATE_KEYS=mykey:a-long-api-secret \
#     -e CALLGATE_RTC_EXTERNAL_IP=203.0.113.7 -e CALLGATE_TURN_EXTERNAL_IP=203.0.113.7 \
#     -e CALLGATE_TURN_AUTH_SECRET=a-long-random-turn-secret \
#     -v callgate-data:/var/lib/callgate callgate
#
# Host networking, because media and the TURN relay use many UDP ports
# (one per media worker, one per relay allocation). The configuration built
# in is deploy/callgate.toml; CALLGATE_* variables override it, or mount
# your own file over /etc/callgate/callgate.toml.
#
# The cache mounts need BuildKit (the default builder since Docker 23).

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin callgate \
    && install -D -m 0755 target/release/callgate /out/callgate

FROM debian:bookworm-slim
# The binary needs only glibc and libgcc (TLS is rustls, with its own root
# certificates), all in the base image.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/callgate \
        --no-create-home --shell /usr/sbin/nologin callgate \
    && install -d -o callgate -g callgate -m 0700 /var/lib/callgate
COPY --from=builder /out/callgate /usr/local/bin/callgate
COPY deploy/callgate.toml /etc/callgate/callgate.toml
COPY --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/callgate-healthcheck
# Read by --config of serve, turn, token and export alike, so that
# `docker exec callgate callgate export sessions` reads the same ledger.
ENV CALLGATE_CONFIG=/etc/callgate/callgate.toml
USER callgate
WORKDIR /var/lib/callgate
VOLUME ["/var/lib/callgate"]
# HTTP (signaling /rtc, /v1/ API, /healthz, /metrics); ICE-TCP; media UDP,
# one port per worker from 7882 (7882 .. 7882 + workers - 1); TURN over UDP
# and TCP. TURN relay allocations take UDP ports from turn.relay_port_min ..
# turn.relay_port_max (49152-65535), not listed here.
EXPOSE 7880/tcp 7881/tcp 7882/udp 3478/udp 3478/tcp
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/callgate-healthcheck"]
# SIGTERM: every participant is told server_shutdown, then the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/callgate"]
CMD ["serve"]
