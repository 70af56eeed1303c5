# STAND-IN for rust:1.95-bookworm, built by scripts/containers because no image
# registry is reachable from CI. It is NOT the official image: the Debian
# stand-in (DEBIAN_IMAGE) plus the C toolchain and libraries the official image's
# buildpack-deps base has that a Rust build uses, plus the Rust 1.95.0 toolchain
# and rustup already installed on the CI machine (copied in by the script, in
# the layout and with the environment of the official image: RUSTUP_HOME,
# CARGO_HOME, PATH). The official image also has many -dev packages we do not use.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl git gcc g++ libc6-dev make pkg-config libssl-dev \
        file patch xz-utils bzip2 unzip procps netbase openssh-client \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=1.95.0
COPY toolchain/ /usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/
COPY rustup /usr/local/cargo/bin/rustup
# rustup's proxies are links to rustup, as rustup-init makes them; the default
# toolchain is the one copied in (no download: it is installed). Unlike the
# official image, RUSTUP_HOME is not made world-writable: that would copy the
# 700 MB toolchain into one more layer.
RUN cd /usr/local/cargo/bin \
    && for proxy in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-gdbgui rust-lldb; do \
        ln -s rustup "$proxy"; \
    done \
    && rustup set auto-self-update disable \
    && rustup default 1.95.0 \
    && chmod -R a+w "$CARGO_HOME" \
    && rustup --version && cargo --version && rustc --version
CMD ["bash"]
