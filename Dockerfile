# syntax=docker/dockerfile:1
#
# The `aloft` binary (server and CLI) on Debian. See docs/deploying.md, section 7.
#
#   docker build -t aloft .
#   docker run -d -p 127.0.0.1:3000:3000 -v aloft-data:/var/lib/aloft \
#     -e ALOFT_PUBLIC_URL=https://ota.example.com aloft
#
# No HEALTHCHECK: the image has no curl or wget, and aloft has no probe subcommand. Probe
# /healthz and /readyz from the orchestrator or the load balancer instead.

# Build on bookworm, like the runtime stage: the binary links against glibc and must not
# need a newer one than debian:bookworm-slim has.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts (BuildKit) keep downloaded crates and compiled dependencies between builds;
# target/ is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p aloft \
 && cp target/release/aloft /usr/local/bin/aloft

FROM debian:bookworm-slim
# The S3 and PostgreSQL clients verify TLS certificates against the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 aloft \
 && useradd --system --uid 10001 --gid aloft --home-dir /var/lib/aloft --no-create-home \
      --shell /usr/sbin/nologin aloft \
 && install -d -o aloft -g aloft -m 0750 /var/lib/aloft
COPY --from=build /usr/local/bin/aloft /usr/local/bin/aloft

# Numeric, so that orchestrators can check it is not root (e.g. runAsNonRoot).
USER 10001:10001
WORKDIR /var/lib/aloft
ENV ALOFT_LISTEN=0.0.0.0:3000 \
    ALOFT_DATA_DIR=/var/lib/aloft
# SQLite database and blobs in single-machine mode; only upload staging with PostgreSQL + S3.
VOLUME ["/var/lib/aloft"]
EXPOSE 3000
# SIGTERM (the default stop signal) makes aloft finish requests in flight and exit.
ENTRYPOINT ["aloft"]
CMD ["serve"]
