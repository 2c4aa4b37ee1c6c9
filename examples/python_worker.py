#!/usr/bin/env python3
"""A jobvisor worker in Python, written with sdk/python/jobvisor_worker.py.

    jobvisor handler add report --exec python3 --arg examples/python_worker.py
    jobvisor run report --payload '{"rows": 5}' --wait

Its handler counts `rows` rows, `delay_ms` apart, reporting progress and
logging each one; it stops at a cancel, and fails as asked (`"fail":
"permanent"` or `"retryable"`).
"""

import os
import sys
import time

# The helper is one file: copy it beside your worker, or point at it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sdk", "python"))
import jobvisor_worker as jv  # noqa: E402


@jv.worker
def report(payload):
    rows = payload["rows"]
    delay = payload.get("delay_ms", 0) / 1000.0
    for row in range(1, rows + 1):
        if jv.wait_cancelled(delay):
            jv.log("warn", "cancelled at row %d" % row)
            raise jv.Cancelled(jv.cancel_reason())
        jv.log("debug", "row counted", row=row)
        jv.progress(row, rows, "row %d" % row)
    if payload.get("fail") == "permanent":
        raise jv.Permanent("the report is wrong")
    if payload.get("fail"):
        raise jv.Retryable("the upstream is busy")
    return {"rows": rows, "attempt": jv.execution()["attempt"]}


if __name__ == "__main__":
    report()
