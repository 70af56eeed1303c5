#!/usr/bin/env bash
# The dashboard's browser test: starts the service (its HTTP port only, on
# 127.0.0.1, free ports) against the empty database given, and runs
# tests/browser/dashboard_test.py in headless Chromium through Selenium.
#
#   tests/browser/run.sh postgres://postgres@127.0.0.1:5432/spacet_browser [path/to/spacet]
#
# Needs Debian's chromium and chromium-driver (scripts/test installs them);
# Selenium comes from PyPI into a venv under target/. Screenshots and, on
# failure, the service's log go to target/browser/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
dsn=${1:?usage: tests/browser/run.sh PG_DSN [spacet binary]}
binary=${2:-$root/target/debug/spacet}
artifacts=${BROWSER_ARTIFACTS:-$root/target/browser}
mkdir -p "$artifacts"
rm -f "$artifacts/failure.png" "$artifacts/failure-console.json"

for tool in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$tool" ] || { echo "error: $tool is missing: apt-get install chromium chromium-driver" >&2; exit 1; }
done

venv="$root/target/selenium-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "selenium==${SELENIUM_VERSION:-4.*}"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
grpc_port=$(free_port)
log="$artifacts/service.log"
# Two stream slots: the test takes both to see the page cope with a refused stream.
watchers=2
# Authentication on (development tokens): the page reads rocket state without a
# token (ROCKETS_PUBLIC_READ: EventSource cannot send one); the test posts
# messages with a telemetry token.
export AUTH_MODE=dev AUTH_DEV_KEY_FILE="$artifacts/auth-dev.key" ROCKETS_PUBLIC_READ=true
SPACET_TOKEN=$("$binary" token --role telemetry --subject browser-test)
export SPACET_TOKEN
PG_DSN="$dsn" HTTP_PORT=$http_port GRPC_PORT=$grpc_port BIND_ADDRESS=127.0.0.1 ROCKETS_PORT=0 \
  ROCKETS_MAX_WATCHERS=$watchers SPACEX_SYNC_ENABLED=false LOG_LEVEL=warn "$binary" >"$log" 2>&1 &
service_pid=$!
trap 'kill "$service_pid" 2>/dev/null || true; wait "$service_pid" 2>/dev/null || true' EXIT

ready=""
for _ in $(seq 1 150); do
  if curl -sf "http://127.0.0.1:$http_port/readiness" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$service_pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "error: the service did not become ready on port $http_port; its log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi

# Selenium is given the browser and driver paths; its manager must not look online.
export SE_OFFLINE=true SE_AVOID_STATS=true
if ! SPACET_URL="http://127.0.0.1:$http_port" BROWSER_ARTIFACTS="$artifacts" \
    ROCKETS_MAX_WATCHERS_UNDER_TEST=$watchers \
    "$venv/bin/python" tests/browser/dashboard_test.py; then
  echo "the service's log: $log (last lines below)" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
