"""An OTLP/HTTP trace receiver for the tests: Python's HTTP server, the
protobuf decoded with PyPI's opentelemetry-proto (the project's own
definitions, not jobvisor's), as a collector would.

    python otlp_receiver.py LOG

Prints the port it listens on (first line of stdout), then writes each span
of each POST to /v1/traces as one JSON line in LOG: the resource's
service.name, the scope, the ids in hex, the name, the kind, the times
(µs), the attributes and the status.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def main():
    log = sys.argv[1]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(415)
                self.end_headers()
                return
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            lines = []
            for rs in req.resource_spans:
                res = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        lines.append(json.dumps({
                            "service": res.get("service.name"),
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": s.kind,
                            "start_us": s.start_time_unix_nano // 1000,
                            "end_us": s.end_time_unix_nano // 1000,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                            "status": s.status.code,
                            "flags": s.flags,
                        }))
            with lock, open(log, "a") as f:
                for line in lines:
                    f.write(line + "\n")
            out = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
