"""A webhook receiver for the tests: Python's own HTTP server, and its own
HMAC, as a receiver written against docs/WEBHOOKS.md would check them.

    python3 webhook_receiver.py LOG [--fail N] [--port P]

Prints the port it listens on (first line of stdout), then records each
POST as one JSON line in LOG: the path, the X-Jobvisor-* headers, the body
(parsed), the status it answered, and whether the signature verified
against $WEBHOOK_SECRET (null when the variable is unset). It answers 503
to the first N requests, then 204. A signature older than five minutes is
refused, as docs/WEBHOOKS.md tells receivers to.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(secret, header, body):
    """The check docs/WEBHOOKS.md gives."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t, v1 = parts["t"], parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - int(t)) > 300:
        return False
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, v1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("log")
    p.add_argument("--fail", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                seen[0] += 1
                status = 503 if seen[0] <= args.fail else 204
                signed = None
                if secret is not None:
                    signed = verify(secret, self.headers.get("X-Jobvisor-Signature", ""), body)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                record = {
                    "path": self.path,
                    "event": self.headers.get("X-Jobvisor-Event"),
                    "delivery": self.headers.get("X-Jobvisor-Delivery"),
                    "content_type": self.headers.get("Content-Type"),
                    "user_agent": self.headers.get("User-Agent"),
                    "signed": signed,
                    "signature": self.headers.get("X-Jobvisor-Signature"),
                    "status": status,
                    "raw": body.decode("utf-8", "replace"),
                    "body": parsed,
                }
                with open(args.log, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
