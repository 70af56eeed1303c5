#!/usr/bin/env bash
# Every HTTP route of SpaceT, with curl. BASE defaults to http://localhost:8080.
#   ./examples/api.sh            # against a running service
#   TOKEN=$(spacet token --role admin,telemetry --subject me) ./examples/api.sh
# Exits non-zero at the first unexpected status. With authentication on (the
# default), TOKEN must carry the roles admin and telemetry.
set -euo pipefail
BASE=${BASE:-http://localhost:8080}
auth=()
if [ -n "${TOKEN:-}" ]; then auth=(-H "authorization: Bearer $TOKEN"); fi
PAD=5e9e4502f509094188566f88
DAY=${DAY:-2049-12-0$((RANDOM % 7 + 1))}
call() { # METHOD PATH [BODY] -> prints the body, fails on HTTP >= 400
  local method=$1 path=$2 body=${3:-}
  echo ">>> $method $path" >&2
  if [ -n "$body" ]; then
    curl -sS --fail-with-body "${auth[@]}" -X "$method" "$BASE$path" -H 'content-type: application/json' -d "$body"
  else
    curl -sS --fail-with-body "${auth[@]}" -X "$method" "$BASE$path"
  fi
  echo
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

call GET /healthz
call GET /readiness
call GET /liveness
call GET /metrics | grep -c '^# HELP' >/dev/null
call GET /openapi.json | json_field openapi
call GET /v1/launchpads
call GET "/v1/launchpads/$PAD/schedule?from=2049-12-01&to=2049-12-07"
TICKET=$(call POST /v1/bookings "{\"firstName\":\"Ada\",\"lastName\":\"Lovelace\",\"gender\":\"FEMALE\",\"birthday\":\"1990-12-01T00:00:00Z\",\"launchpadId\":\"$PAD\",\"launchDate\":\"${DAY}T00:00:00Z\",\"destinationId\":\"MARS\"}" | json_field id)
echo "ticket $TICKET" >&2
call GET "/v1/bookings/$TICKET"
call GET "/v1/bookings?status=scheduled&launchpad_id=$PAD&limit=20"
call PATCH "/v1/bookings/$TICKET/cancel"
# The admin sync reaches out to SpaceX; it answers 200 or a JSON error (503 when SpaceX is unreachable).
curl -sS "${auth[@]}" -X POST "$BASE/v1/admin/sync" -H 'content-type: application/json' -d '{}'; echo
CHANNEL=193270a9-c9cf-404a-8f83-838e71d9ae67
call POST /messages "{\"metadata\":{\"channel\":\"$CHANNEL\",\"messageNumber\":1,\"messageTime\":\"2022-02-02T19:39:05.86337+01:00\",\"messageType\":\"RocketLaunched\"},\"message\":{\"type\":\"Falcon-9\",\"launchSpeed\":500,\"mission\":\"ARTEMIS\"}}"
call GET "/rockets/$CHANNEL"
call GET "/rockets?sort=speed&order=desc"
call GET "/v1/rockets/$CHANNEL"
# The gateway takes the proto enums by name (or number), as grpc-gateway does.
call GET "/v1/rockets?sort=ROCKET_SORT_SPEED&order=SORT_ORDER_DESC"
call GET "/rockets/$CHANNEL/messages?after=0&pageSize=10"
call GET "/v1/rockets/$CHANNEL/messages?pageSize=10"
# The change feed as server-sent events (`curl -N` follows it; here 1 s of it).
curl -sS -N -m 1 "${auth[@]}" -X GET -H 'accept: text/event-stream' "$BASE/rockets/events" || true; echo
curl -sS -N -m 1 "${auth[@]}" -X GET -H 'accept: text/event-stream' "$BASE/v1/rockets:watch" || true; echo
echo "all routes answered" >&2
