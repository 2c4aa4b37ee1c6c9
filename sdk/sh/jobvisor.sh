# jobvisor.sh: helpers for a jobvisor worker written in POSIX sh.
#
# Source it from the worker script, then report what the job does:
#
#   . /path/to/jobvisor.sh
#   jv_on_cancel 'rm -f "$tmp"'         # on a cancel: clean up, end as cancelled
#   jv_progress 3/10 "copying"         # done/total, or a percentage: jv_progress 30
#   jv_log warn "disk almost full" free=812M mount=/var
#   jv_result '{"copied": 10}'          # succeeded, with this JSON output
#   jv_fail "upstream returned 503"     # failed, retried while attempts remain
#   jv_fail --permanent "bad input"     # failed, never retried
#
# Each function writes one line of the worker protocol (docs/PROTOCOL.md)
# to stdout. A result is final: exit after jv_result or jv_fail. Without
# either, the exit code decides (0: succeeded). A script that starts
# programs writing to stdout should send their output elsewhere (`>&2`),
# where it is logged too.
#
# The run's JSON (payload and all) is the first line of stdin:
# `jv_read_run` puts it in $JV_RUN. Its ids are in the environment:
# $JOBVISOR_EXECUTION_ID, $JOBVISOR_JOB, $JOBVISOR_HANDLER, $JOBVISOR_ATTEMPT,
# and $JOBVISOR_SNOOZES (how many times the run's chain snoozed before it:
# `[ "$JOBVISOR_SNOOZES" -ge 10 ] && jv_fail --permanent "still not ready"`).
#
# The functions return 2, saying why on stderr, when given bad arguments.

# _jv_string TEXT: TEXT as a JSON string, quotes included.
_jv_string() {
    printf '%s' "$1" | LC_ALL=C awk '
        BEGIN {
            for (i = 1; i < 32; i++) code[sprintf("%c", i)] = sprintf("\\u%04x", i)
            code["\t"] = "\\t"; code["\r"] = "\\r"; code["\b"] = "\\b"; code["\f"] = "\\f"
            printf "\""
        }
        {
            if (NR > 1) printf "\\n"
            out = ""
            n = length($0)
            for (i = 1; i <= n; i++) {
                c = substr($0, i, 1)
                if (c == "\\") out = out "\\\\"
                else if (c == "\"") out = out "\\\""
                else if (c in code) out = out code[c]
                else out = out c
            }
            printf "%s", out
        }
        END { printf "\"" }'
}

# _jv_number WHAT VALUE: whether VALUE is a non-negative decimal number.
_jv_number() {
    case $2 in
        '' | *[!0-9.]* | *.*.* | . | *.)
            echo "jobvisor.sh: $1 must be a number, not '$2'" >&2
            return 2 ;;
    esac
}

# jv_progress PERCENT|DONE/TOTAL [MESSAGE]
jv_progress() {
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then
        echo "jobvisor.sh: usage: jv_progress PERCENT|DONE/TOTAL [MESSAGE]" >&2
        return 2
    fi
    case $1 in
        */*)
            _jv_done=${1%%/*}
            _jv_total=${1#*/}
            case $_jv_done$_jv_total in *.*)
                echo "jobvisor.sh: done and total are whole numbers, not '$1'" >&2
                return 2 ;;
            esac
            _jv_number done "$_jv_done" || return 2
            _jv_number total "$_jv_total" || return 2
            _jv_fields="\"done\":$_jv_done,\"total\":$_jv_total" ;;
        *)
            _jv_number percent "$1" || return 2
            _jv_fields="\"percent\":$1" ;;
    esac
    case $1 in .*) _jv_fields="\"percent\":0$1" ;; esac
    if [ $# -eq 2 ]; then
        _jv_fields="$_jv_fields,\"message\":$(_jv_string "$2")"
    fi
    printf '{"type":"progress",%s}\n' "$_jv_fields"
}

# jv_log LEVEL MESSAGE [KEY=VALUE ...]
# LEVEL: trace, debug, info, warn, error, fatal or panic. Fields are strings.
jv_log() {
    if [ $# -lt 2 ]; then
        echo "jobvisor.sh: usage: jv_log LEVEL MESSAGE [KEY=VALUE ...]" >&2
        return 2
    fi
    case $1 in
        trace | debug | info | warn | error | fatal | panic) ;;
        *)
            echo "jobvisor.sh: unknown log level '$1' (trace, debug, info, warn, error, fatal, panic)" >&2
            return 2 ;;
    esac
    _jv_line="{\"type\":\"log\",\"level\":\"$1\",\"message\":$(_jv_string "$2")"
    shift 2
    if [ $# -gt 0 ]; then
        _jv_sep=""
        _jv_line="$_jv_line,\"fields\":{"
        for _jv_kv in "$@"; do
            case $_jv_kv in
                *=*) ;;
                *)
                    echo "jobvisor.sh: a field is KEY=VALUE, not '$_jv_kv'" >&2
                    return 2 ;;
            esac
            _jv_line="$_jv_line$_jv_sep$(_jv_string "${_jv_kv%%=*}"):$(_jv_string "${_jv_kv#*=}")"
            _jv_sep=","
        done
        _jv_line="$_jv_line}"
    fi
    printf '%s}\n' "$_jv_line"
}

# jv_heartbeat: this execution is alive (for `handler add --heartbeat-timeout`).
jv_heartbeat() {
    printf '{"type":"heartbeat"}\n'
}

# jv_result [JSON]: succeeded, with JSON (a JSON text, default null) as output.
jv_result() {
    if [ $# -gt 1 ]; then
        echo "jobvisor.sh: usage: jv_result [JSON]" >&2
        return 2
    fi
    # The output is written as given: one line, so its newlines go.
    _jv_output=$(printf '%s' "${1:-null}" | tr '\n\r' '  ')
    printf '{"type":"result","status":"succeeded","output":%s}\n' "$_jv_output"
}

# jv_fail [--permanent] MESSAGE: failed; retried while attempts remain,
# unless --permanent.
jv_fail() {
    _jv_retry=true
    if [ "$1" = "--permanent" ]; then
        _jv_retry=false
        shift
    fi
    if [ $# -ne 1 ]; then
        echo "jobvisor.sh: usage: jv_fail [--permanent] MESSAGE" >&2
        return 2
    fi
    printf '{"type":"result","status":"failed","error":%s,"retry":%s}\n' "$(_jv_string "$1")" "$_jv_retry"
}

# jv_cancelled [REASON]: ended as cancelled.
jv_cancelled() {
    printf '{"type":"result","status":"cancelled","error":%s}\n' "$(_jv_string "${1:-cancelled}")"
}

# jv_on_cancel [COMMAND]: on a cancel, run COMMAND (if given), report the
# execution cancelled and exit. A shell worker does not read cancel lines:
# the supervisor sends it SIGTERM, which this traps.
jv_on_cancel() {
    _jv_on_cancel=${1:-}
    trap '_jv_cancel' TERM INT
}

_jv_cancel() {
    trap - TERM INT
    if [ -n "$_jv_on_cancel" ]; then
        eval "$_jv_on_cancel"
    fi
    jv_cancelled "stopped on request"
    exit 143
}

# jv_read_run: reads the run line from stdin into $JV_RUN (empty if there is
# none, as when the script is run by hand).
jv_read_run() {
    JV_RUN=
    IFS= read -r JV_RUN || true
}
