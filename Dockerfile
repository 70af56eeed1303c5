# syntax=docker/dockerfile:1
# SpaceT: multi-stage build. Dependencies are compiled in their own cached layer
# (cargo-chef), the runtime image is Debian slim with a non-root user.
# Queries are checked at build time against the committed .sqlx data (SQLX_OFFLINE).

FROM lukemathwalker/cargo-chef:latest-rust-1-bookworm AS chef
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
RUN cargo build --release --locked --bin spacet --example subscriber --example book_ticket

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app spacet
WORKDIR /app
COPY --from=builder /app/target/release/spacet /usr/local/bin/spacet
COPY --from=builder /app/target/release/examples/subscriber /usr/local/bin/spacet-subscriber
COPY --from=builder /app/target/release/examples/book_ticket /usr/local/bin/spacet-book-ticket
COPY config/default.yaml /app/config/default.yaml
USER 10001
ENV LOG_FORMAT=json
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8080/readiness || exit 1
# The image has no PostgreSQL server: set PG_DSN.
ENTRYPOINT ["/usr/local/bin/spacet"]
CMD ["serve"]
