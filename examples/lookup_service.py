#!/usr/bin/env python3
"""A small HTTP service for the `enrich` example (the demo) and the external-call tests.

    lookup_service.py [--port N] [--log FILE]

Prints `listening on http://127.0.0.1:PORT` once it accepts connections,
then serves (threaded) until killed. Each request is appended to FILE as one
JSON line: {"method", "path", "key"} where key is its Idempotency-Key header.

Paths:
  /lookup/KEY            200 {"key": KEY, "tier": ...}; 404 when KEY starts with "missing"
  /slow/MS/KEY           the same as /lookup/KEY after MS milliseconds
  /big/BYTES/KEY         200 with a body of BYTES bytes
  /status/CODE/KEY       answers CODE
  /redirect/KEY          302 to http://example.invalid/KEY
  /trap-once/...         "trap" to an Idempotency-Key not seen before, "ok" after
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LOCK = threading.Lock()
SEEN_KEYS = set()
LOG = None

TIERS = ["bronze", "silver", "gold"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def lookup(self, key):
        if key.startswith("missing"):
            return self.answer(404, json.dumps({"error": "unknown key"}))
        tier = TIERS[sum(key.encode()) % len(TIERS)]
        return self.answer(200, json.dumps({"key": key, "tier": tier}))

    def handle_any(self):
        key = self.headers.get("Idempotency-Key")
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        with LOCK:
            if LOG:
                LOG.write(json.dumps({"method": self.command, "path": self.path, "key": key}) + "\n")
                LOG.flush()
            first = key not in SEEN_KEYS
            SEEN_KEYS.add(key)
        parts = [unquote(p) for p in self.path.split("?")[0].split("/")[1:]]
        kind = parts[0] if parts else ""
        try:
            if kind == "lookup" and len(parts) == 2:
                return self.lookup(parts[1])
            if kind == "slow" and len(parts) == 3:
                time.sleep(int(parts[1]) / 1000)
                return self.lookup(parts[2])
            if kind == "big" and len(parts) == 3:
                return self.answer(200, b"x" * int(parts[1]), "application/octet-stream")
            if kind == "status" and len(parts) == 3:
                return self.answer(int(parts[1]), json.dumps({"status": int(parts[1])}))
            if kind == "redirect":
                return self.answer(302, "", headers=[("location", "http://example.invalid/" + "/".join(parts[1:]))])
            if kind == "trap-once":
                return self.answer(200, "trap" if first else "ok", "text/plain")
        except (ValueError, BrokenPipeError, ConnectionResetError):
            pass
        return self.answer(400, json.dumps({"error": "unknown path " + self.path}))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


def main():
    global LOG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log")
    args = parser.parse_args()
    if args.log:
        LOG = open(args.log, "a", encoding="utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
