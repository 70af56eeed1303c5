#!/usr/bin/env python3
"""The fakes scripts/containers runs beside the service, so that CI never
reaches the real SpaceX API or a real identity provider.

- SpaceX v4 under /v4: `GET /v4/launchpads` answers the recorded launchpads
  (tests/fixtures/spacex/launchpads.json); `POST /v4/launches/query` for
  upcoming launches answers the 12 recorded upcoming launches of SpaceX's final
  data (upcoming_final_state_summary.json) in the recorded full document shape
  (launches_query_page41_limit5.json), moved YEAR_SHIFT years ahead (2022 ->
  2049, as tests/api/spacex.rs does) so they lie in the future, 5 to a page in
  the mongoose-paginate envelope SpaceX uses.
- An OIDC issuer at ISSUER (its path must be /issuer): the discovery document
  and the public keys `rsa-1` and `ec-1` of tests/fixtures/auth/jwks.json.

Every request is logged on stderr, so the caller can tell the fake was asked.
Usage: fakes.py PORT FIXTURES_DIR [ISSUER]   (listens on 0.0.0.0:PORT)
"""
import json
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PER_PAGE = 5
YEAR_SHIFT = 27

port, fixtures = int(sys.argv[1]), sys.argv[2]
issuer = sys.argv[3] if len(sys.argv) > 3 else None


def load(name):
    with open(f"{fixtures}/{name}", encoding="utf-8") as f:
        return json.load(f)


def shifted(stamp):
    """An ISO date string `YEAR_SHIFT` years later (same month, day and time)."""
    return f"{int(stamp[:4]) + YEAR_SHIFT:04d}{stamp[4:]}"


launchpads = load("spacex/launchpads.json")
template = load("spacex/launches_query_page41_limit5.json")["docs"][0]
launches = []
for summary in load("spacex/upcoming_final_state_summary.json"):
    doc = dict(template)
    date_utc = shifted(summary["date_utc"])
    at = datetime.strptime(date_utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    doc.update(
        id=summary["id"],
        name=summary["name"],
        launchpad=summary["launchpad"],
        flight_number=summary["flight_number"],
        date_utc=date_utc,
        date_unix=int(at.timestamp()),
        # The recorded offset, not the pad's zone rules in the new year: the
        # service reads date_utc and the pad's time zone only.
        date_local=shifted(summary["date_local"]),
        date_precision=summary["date_precision"],
        upcoming=True,
        tbd=summary["tbd"],
        net=summary["net"],
    )
    launches.append(doc)

keys = load("auth/jwks.json")
jwks = {"keys": [keys["rsa-1"], keys["ec-1"]]}


def page_of(number):
    pages = max(1, -(-len(launches) // PER_PAGE))
    docs = launches[(number - 1) * PER_PAGE : number * PER_PAGE]
    return {
        "docs": docs,
        "totalDocs": len(launches),
        "offset": (number - 1) * PER_PAGE,
        "limit": PER_PAGE,
        "totalPages": pages,
        "page": number,
        "pagingCounter": (number - 1) * PER_PAGE + 1,
        "hasPrevPage": number > 1,
        "hasNextPage": number < pages,
        "prevPage": number - 1 if number > 1 else None,
        "nextPage": number + 1 if number < pages else None,
    }


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/":
            self.answer(200, {"status": "ok"})
        elif self.path == "/v4/launchpads":
            self.answer(200, launchpads)
        elif issuer and self.path == "/issuer/.well-known/openid-configuration":
            self.answer(200, {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"})
        elif issuer and self.path == "/issuer/jwks":
            self.answer(200, jwks)
        else:
            self.answer(404, {"error": f"the fake does not serve GET {self.path}"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            query = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.answer(400, {"error": "not JSON"})
        if self.path != "/v4/launches/query" or query.get("query") != {"upcoming": True}:
            return self.answer(404, {"error": f"the fake does not serve POST {self.path} {query}"})
        number = max(1, int(query.get("options", {}).get("page", 1)))
        self.answer(200, page_of(number))

    def log_message(self, format, *args):
        sys.stderr.write("fakes: %s\n" % (format % args))
        sys.stderr.flush()


print(f"fakes: listening on 0.0.0.0:{port} ({len(launches)} upcoming launches, issuer {issuer})", file=sys.stderr, flush=True)
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
