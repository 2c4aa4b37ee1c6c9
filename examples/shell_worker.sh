#!/bin/sh
# A jobvisor worker in POSIX sh, written with sdk/sh/jobvisor.sh.
#
#   jobvisor handler add report --exec examples/shell_worker.sh --arg 5
#   jobvisor run report --wait
#
# It counts ROWS rows (its first argument), DELAY seconds apart (its second,
# default 0), reporting progress and logging each one; it stops at a cancel,
# and fails as its third argument asks (permanent or retryable).
. "$(dirname "$0")/../sdk/sh/jobvisor.sh"

rows=${1:?usage: shell_worker.sh ROWS [DELAY] [permanent|retryable]}
delay=${2:-0}
row=0
jv_on_cancel 'jv_log warn "cancelled at row $row"'
while [ "$row" -lt "$rows" ]; do
    row=$((row + 1))
    sleep "$delay"
    jv_log debug "row counted" row="$row"
    jv_progress "$row/$rows" "row $row"
done
case ${3:-} in
    permanent) jv_fail --permanent "the report is wrong" ;;
    retryable) jv_fail "the upstream is busy" ;;
    *) jv_result "{\"rows\": $rows, \"attempt\": ${JOBVISOR_ATTEMPT:-1}}" ;;
esac
