# The CI's fakes (fakes.py: a SpaceX v4 API answering recorded data, an OIDC
# issuer with the test keys) on the Debian stand-in (DEBIAN_IMAGE), so that they
# can sit on the same container network as the service. Test-only: never shipped.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY fixtures/ /srv/fixtures/
COPY fakes.py /usr/local/bin/fakes.py
USER 65534:65534
ENTRYPOINT ["python3", "/usr/local/bin/fakes.py"]
