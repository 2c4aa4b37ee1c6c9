"""Next occurrences by cronsim (PyPI), an implementation of Debian cron's
semantics that nobody on this project wrote.

Reads JSON lines {"expr", "tz", "from", "count"} on stdin and writes, for
each, a JSON array of RFC 3339 UTC times or {"error": "..."}.
"""
import json
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

# crontab(5)'s table; cronsim reads only fields.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

for line in sys.stdin:
    q = json.loads(line)
    start = datetime.fromisoformat(q["from"].replace("Z", "+00:00"))
    start = start.astimezone(ZoneInfo(q["tz"]))
    try:
        it = CronSim(MACROS.get(q["expr"], q["expr"]), start)
        out = []
        for _ in range(q["count"]):
            try:
                t = next(it)
            except StopIteration:
                break
            out.append(t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    except CronSimError as e:
        out = {"error": str(e)}
    print(json.dumps(out), flush=True)
