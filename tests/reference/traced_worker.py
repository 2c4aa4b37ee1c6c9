"""A process worker that makes a span of its own, child of the span its
`run` message names in `traceparent`, and sends it to the OTLP receiver at
the payload's `otlp` URL with opentelemetry-proto, as a traced service would.
It fails its first attempt (retryable), so that a run has two attempts.

It speaks the protocol through the Python helper (sdk/python), whose
`traceparent()` gives the context.
"""

import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.environ["TRACED_WORKER_SDK"])
import jobvisor_worker as jv  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)


@jv.worker
def main(payload):
    tp = jv.traceparent()
    assert tp == os.environ.get("TRACEPARENT"), (tp, os.environ.get("TRACEPARENT"))
    _, trace_id, parent, _flags = tp.split("-")
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    a = rs.resource.attributes.add()
    a.key, a.value.string_value = "service.name", "python-worker"
    span = rs.scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex(trace_id)
    span.span_id = os.urandom(8)
    span.parent_span_id = bytes.fromhex(parent)
    span.name = "work in python"
    now = time.time_ns()
    span.start_time_unix_nano, span.end_time_unix_nano = now, now + 1000
    attempt = jv.execution()["attempt"]
    at = span.attributes.add()
    at.key, at.value.int_value = "attempt", attempt
    urllib.request.urlopen(urllib.request.Request(
        payload["otlp"] + "/v1/traces", data=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"}), timeout=10).read()
    if attempt == 1:
        raise jv.Retryable("the first attempt fails, to be tried again")
    return {"traced": True}


if __name__ == "__main__":
    main()
