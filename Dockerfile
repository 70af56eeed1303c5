# SpaceT: multi-stage build. Dependencies are compiled in their own cached layer
# (cargo-chef), the runtime image is Debian slim with a non-root user and only the
# `spacet` binary. Queries are checked at build time against the committed .sqlx
# data (SQLX_OFFLINE).
#
# Base images are pinned by digest (the multi-arch index), so a rebuild uses the
# same bytes until someone changes the line; the comment above each says which
# version the digest is. To update: `docker buildx imagetools inspect IMAGE:TAG`.
# They are build arguments so that CI, which reaches no registry, can build this
# same file on local stand-ins (scripts/containers); a plain build uses the pins.
#   docker build -t spacet:0.1.0 .                   (the production image)
#   docker build --target tools -t spacet-tools:0.1.0 .   (the example programs)

# rust:1.95.0-bookworm (rustc 1.95.0 on Debian 12 bookworm); rust:1.95-bookworm
# resolved to this digest.
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
# debian:bookworm-slim (Debian 12 bookworm): the tag's digest as of September 2026.
ARG DEBIAN_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

FROM ${RUST_IMAGE} AS chef
# The image's own toolchain, pinned by the digest above: rust-toolchain.toml
# would have rustup add rustfmt and clippy, which a release build does not use.
ENV RUSTUP_TOOLCHAIN=1.95.0
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Only the dependencies: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
# The SQL is checked against the committed .sqlx data: no database at build time.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin spacet

FROM ${DEBIAN_IMAGE} AS base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 spacet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app spacet
WORKDIR /app

# The example programs (Pub/Sub subscriber, gRPC client) in an image of their own:
# they stay out of the production image. Examples build with the dev-dependencies,
# whose features change how shared crates compile: they get their own cached
# dependency layer rather than recompiling half of the builder's on every change.
FROM chef AS tools-builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --examples --recipe-path recipe.json
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --example subscriber --example book_ticket

FROM base AS tools
COPY --from=tools-builder /app/target/release/examples/subscriber /usr/local/bin/spacet-subscriber
COPY --from=tools-builder /app/target/release/examples/book_ticket /usr/local/bin/spacet-book-ticket
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/spacet-subscriber"]

# The production image: the last stage, so a plain `docker build` makes it.
FROM base AS runtime
# The development signing key's directory (AUTH_DEV_KEY_FILE in docker-compose.yml):
# a fresh named volume mounted here takes this owner, so uid 10001 can write it.
# Everything else stays read-only to the service. With `docker run --read-only`,
# mount a volume here, not `--tmpfs`: Docker's tmpfs over this directory takes its
# mode (0700) but root as owner, and the service cannot write the key.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/spacet /var/lib/spacet/auth
COPY --from=builder /app/target/release/spacet /usr/local/bin/spacet
COPY config/default.yaml /app/config/default.yaml
USER 10001:10001
ENV LOG_FORMAT=json
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
# The binary asks its own /readiness on HTTP_PORT (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["/usr/local/bin/spacet", "healthcheck"]
# The image has no PostgreSQL server: set PG_DSN.
ENTRYPOINT ["/usr/local/bin/spacet"]
CMD ["serve"]
