# STAND-IN for debian:bookworm-slim, built by scripts/containers because no image
# registry is reachable from CI. It is NOT the official image: it is a
# `debootstrap --variant=minbase bookworm` tree imported with `docker import`
# (ROOTFS), given the official image's apt sources, PATH and CMD. Close enough for
# what our Dockerfile does with it (apt-get install, groupadd/useradd, COPY); the
# shipped image is still built on the pinned official digest.
ARG ROOTFS
FROM ${ROOTFS}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The CI machine's own local CA certificates (its /usr/local/share/ca-certificates,
# possibly none): where its network intercepts TLS, crates.io is reached through
# them. Images that install ca-certificates on this stand-in trust them too.
COPY local-ca/ /usr/local/share/ca-certificates/
# The official image's sources (deb822), and no package lists or caches.
RUN rm -f /etc/apt/sources.list \
    && printf '%s\n' \
        'Types: deb' \
        'URIs: http://deb.debian.org/debian' \
        'Suites: bookworm bookworm-updates' \
        'Components: main' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
        '' \
        'Types: deb' \
        'URIs: http://deb.debian.org/debian-security' \
        'Suites: bookworm-security' \
        'Components: main' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
        > /etc/apt/sources.list.d/debian.sources \
    && printf 'APT::Install-Recommends "false";\n' > /etc/apt/apt.conf.d/99-spacet-ci-no-recommends \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
CMD ["bash"]
