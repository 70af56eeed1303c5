# STAND-IN for postgres:15, built by scripts/containers because no image registry
# is reachable from CI. It is NOT the official image: Debian's postgresql-15 on
# the Debian stand-in (DEBIAN_IMAGE), with an entrypoint that keeps the part of
# the official image's contract docker-compose.yml and scripts/containers use:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start, the cluster in
# PGDATA=/var/lib/postgresql/data, listening on every address with password
# (scram-sha-256) authentication, `pg_isready` on PATH, running as postgres, and
# `postgres -c name=value ...` (or bare `-c ...`) as the command. Not kept: init
# scripts in /docker-entrypoint-initdb.d, POSTGRES_INITDB_ARGS, starting as root
# (it starts as postgres, so PGDATA must be a fresh named volume or owned by it).
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
# No cluster made by the package: the entrypoint makes one in PGDATA.
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
