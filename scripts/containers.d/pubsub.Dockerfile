# STAND-IN for gcr.io/google.com/cloudsdktool/google-cloud-cli:528.0.0-emulators,
# built by scripts/containers because no image registry is reachable from CI. It
# is NOT the official image: a Java runtime and curl on the Debian stand-in
# (DEBIAN_IMAGE), the Pub/Sub emulator of the Google Cloud CLI installed on the CI
# machine (copied in by the script: the same emulator the tests run against) and
# a `gcloud` shim that understands only
#   gcloud beta emulators pubsub start --host-port=HOST:PORT [--project=P]
# which is the command docker-compose.yml and the development overlay give it.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY pubsub-emulator/ /usr/lib/google-cloud-sdk/platform/pubsub-emulator/
COPY gcloud /usr/local/bin/gcloud
EXPOSE 8085
CMD ["gcloud", "beta", "emulators", "pubsub", "start", "--host-port=0.0.0.0:8085"]
