#!/bin/sh
# A job's condition (`job add ... --condition ready`): answers true once the
# file named by its first argument exists, false until then. As a plain
# program it could also just exit 0 (run) or fail (fail the occurrence);
# answering false is what records the occurrence as skipped.
#
#   jobvisor handler add ready --exec "$PWD/examples/ready_condition.sh" --arg /tmp/jobvisor-ready
if [ -f "${1:?usage: ready_condition.sh FILE}" ]; then
    answer=true
else
    answer=false
fi
printf '{"type":"result","status":"succeeded","output":%s}\n' "$answer"
