"""Helpers for writing a jobvisor worker in Python.

One file, standard library only, Python 3.8 or newer. Copy it beside your
worker (or put it on PYTHONPATH). It speaks the worker protocol
(docs/PROTOCOL.md): JSON lines on stdin and stdout.

    import jobvisor_worker as jv

    @jv.worker
    def resize(payload):
        for i, path in enumerate(payload["paths"]):
            jv.check_cancelled()              # raises jv.Cancelled when asked to stop
            jv.progress(i, len(payload["paths"]), path)
            jv.log("debug", "resizing", path=path)
        return {"resized": len(payload["paths"])}   # the execution's output

    if __name__ == "__main__":
        resize()

Register it with `jobvisor handler add resize --exec python3 --arg resize.py`.
The function gets the payload (decoded JSON). What it returns is the
execution's output; what it raises decides how the execution fails:

- `jv.Permanent("...")`: failed, never retried;
- `jv.Retryable("...")`, or any other exception: failed, retried while
  attempts remain (the traceback of an unexpected exception is logged);
- `jv.Cancelled()`: cancelled (what `check_cancelled()` raises);
- `jv.Snooze(seconds, "reason")`: run again later, without using a retry.

`@jv.worker(pooled=True)` keeps the process for execution after execution
(`handler add --pool-size N`); `@jv.worker(permanent=(ValueError,))` makes
those exception types permanent failures.

Outside jobvisor (no `JOBVISOR_PROTOCOL` in the environment) a worker runs
once, on the JSON payload given as its first argument, and prints the
protocol's lines, which makes it easy to try by hand.
"""

import json
import os
import queue
import sys
import threading
import traceback

__all__ = [
    "worker",
    "progress",
    "log",
    "heartbeat",
    "cancelled",
    "cancel_reason",
    "check_cancelled",
    "wait_cancelled",
    "on_cancel",
    "execution",
    "snoozes",
    "Retryable",
    "Permanent",
    "Cancelled",
    "Snooze",
    "LEVELS",
]

PROTOCOL = 1

#: The seven log levels, least severe first.
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "panic")


class Retryable(Exception):
    """A failure that another attempt may not meet: retried while attempts
    remain."""


class Permanent(Exception):
    """A failure that retrying cannot help: never retried."""


class Cancelled(Exception):
    """The execution stopped because it was asked to."""

    def __init__(self, reason="cancelled"):
        super().__init__(reason)


class Snooze(Exception):
    """Not a failure: end this execution as snoozed and run it again after
    `seconds`, without using a retry."""

    def __init__(self, seconds, reason=None):
        if seconds < 0:
            raise ValueError("a snooze cannot be negative")
        super().__init__(reason or "snoozed")
        self.seconds = seconds
        self.reason = reason


class _Channel:
    """The protocol's output: one JSON object per line, whole lines only,
    from any thread."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message):
        line = json.dumps(message, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class _Execution:
    """The execution running now: its run message and its cancel state."""

    def __init__(self, run):
        self.run = run
        self.cancel = threading.Event()
        self.reason = None
        self.callbacks = []
        self.lock = threading.Lock()

    def cancelled(self, reason):
        with self.lock:
            if self.cancel.is_set():
                return
            self.reason = reason or "cancelled"
            self.cancel.set()
            callbacks = list(self.callbacks)
        for callback in callbacks:
            try:
                callback(self.reason)
            except Exception:  # a callback's failure must not stop the reader
                _log_exception("a cancel callback raised")


_channel = None
_current = None


def _send(message):
    if _channel is None:
        raise RuntimeError("not inside a jobvisor worker (call the @worker function first)")
    _channel.send(message)


def _now():
    if _current is None:
        raise RuntimeError("no execution is running")
    return _current


def progress(value=None, total=None, message=None, percent=None, done=None, data=None):
    """Reports progress: a percentage (0..100), or `done` of `total` units
    (the supervisor derives the percentage), with an optional message, and
    optional free-form `data` (a dict of at most 64 KiB as JSON, kept in
    place of the last).

        jv.progress(42.5)                       # percent
        jv.progress(17, 40)                     # done of total
        jv.progress(17, 40, "copying chunk 17") # with a message
        jv.progress(done=17, total=40, message="copying chunk 17")

    The first argument is `done` when a total is given, else the percent.
    """
    if value is not None:
        if total is not None:
            if done is not None:
                raise TypeError("progress() got done twice")
            done = value
        else:
            if percent is not None:
                raise TypeError("progress() got percent twice")
            percent = value
    m = {"type": "progress"}
    if percent is not None:
        m["percent"] = float(percent)
    if message is not None:
        m["message"] = str(message)
    if done is not None:
        m["done"] = int(done)
    if total is not None:
        m["total"] = int(total)
    if data is not None:
        if not isinstance(data, dict):
            raise TypeError("progress() data must be a dict")
        m["data"] = data
    _send(m)


def log(level, message, **fields):
    """Logs a line at `level` (one of LEVELS), with structured fields.

        jv.log("warn", "retrying upstream", host="a.example", attempt=2)
    """
    if level not in LEVELS:
        raise ValueError("unknown log level %r (one of %s)" % (level, ", ".join(LEVELS)))
    m = {"type": "log", "level": level, "message": str(message)}
    if fields:
        m["fields"] = fields
    _send(m)


def heartbeat():
    """Tells a supervisor that watches for heartbeats (`handler add
    --heartbeat-timeout`) that this execution is alive."""
    _send({"type": "heartbeat"})


def cancelled():
    """Whether the supervisor asked this execution to stop."""
    return _now().cancel.is_set()


def cancel_reason():
    """Why the execution was asked to stop, or None."""
    return _now().reason


def check_cancelled():
    """Raises `Cancelled` if the supervisor asked this execution to stop."""
    e = _now()
    if e.cancel.is_set():
        raise Cancelled(e.reason)


def wait_cancelled(timeout=None):
    """Waits up to `timeout` seconds (forever if None) for a cancel; True
    if one came. A cancellable `time.sleep`."""
    return _now().cancel.wait(timeout)


def on_cancel(callback):
    """Calls `callback(reason)` when a cancel arrives (at once if one
    already has), from the thread that reads stdin: keep it short, such as
    setting a flag or terminating a subprocess. Usable as a decorator."""
    e = _now()
    with e.lock:
        e.callbacks.append(callback)
        done = e.cancel.is_set()
    if done:
        callback(e.reason)
    return callback


def execution():
    """The running execution's `run` message as a dict: `execution_id`,
    `job`, `handler`, `attempt`, `payload`, `timeout_ms` (if any),
    `inputs` (its parents' ends and outputs, if it has parents), and
    `snoozes`, `meta`, `tags` and `traceparent` (if it has any)."""
    return dict(_now().run)


def traceparent():
    """The W3C `traceparent` of the running attempt's span, when its run is
    traced (else None): give it to your tracer as the parent of your own
    spans, e.g. with OpenTelemetry's
    `TraceContextTextMapPropagator().extract({"traceparent": jv.traceparent()})`.
    A one-shot worker also finds it in $TRACEPARENT."""
    return _now().run.get("traceparent") or os.environ.get("TRACEPARENT") or None


def snoozes():
    """How many times the running execution's chain has snoozed before it
    (0 at first): a worker that polls until something is ready gives up
    after N with it, e.g. `if jv.snoozes() >= 10: raise jv.Permanent(...)`."""
    return int(_now().run.get("snoozes", 0))


def _log_exception(what):
    try:
        log("error", "%s: %s" % (what, traceback.format_exc().rstrip()))
    except Exception:
        traceback.print_exc()


def _result_of(function, payload, permanent):
    """Runs `function` on `payload`; the protocol's final message."""
    try:
        output = function(payload)
        try:
            json.dumps(output)
        except (TypeError, ValueError) as e:
            return {"type": "result", "status": "failed", "retry": False,
                    "error": "the output is not JSON: %s" % e}
        return {"type": "result", "status": "succeeded", "output": output}
    except Cancelled as e:
        return {"type": "result", "status": "cancelled", "error": str(e)}
    except Snooze as e:
        m = {"type": "snooze", "delay_ms": int(e.seconds * 1000)}
        if e.reason:
            m["reason"] = e.reason
        return m
    except Permanent as e:
        return {"type": "result", "status": "failed", "retry": False, "error": _text(e)}
    except Retryable as e:
        return {"type": "result", "status": "failed", "retry": True, "error": _text(e)}
    except Exception as e:
        _log_exception("unexpected %s" % type(e).__name__)
        retry = not isinstance(e, tuple(permanent))
        return {"type": "result", "status": "failed", "retry": retry,
                "error": "%s: %s" % (type(e).__name__, e)}


def _text(e):
    return str(e) or type(e).__name__


def _reader(stream, runs, state):
    """Reads stdin: runs go to `runs`, cancels to the running execution;
    the end of input is a None."""
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if not isinstance(m, dict):
            continue
        if m.get("type") == "run":
            runs.put(m)
        elif m.get("type") == "cancel":
            current = state.get("current")
            if current is not None:
                current.cancelled(m.get("reason"))
    runs.put(None)


def _serve(function, pooled, permanent, heartbeat_every):
    global _channel, _current
    # The protocol gets a private copy of stdout; what the handler (or a
    # program it starts) prints goes to stderr, so it cannot break a line.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace")
    os.dup2(2, 1)
    _channel = _Channel(out)
    _channel.send({"type": "hello", "protocol": PROTOCOL, "pooled": bool(pooled),
                   "handlers": [os.environ.get("JOBVISOR_HANDLER", function.__name__)]})
    stdin = open(os.dup(0), "r", encoding="utf-8", errors="replace")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    runs = queue.Queue()
    state = {}
    threading.Thread(target=_reader, args=(stdin, runs, state), daemon=True).start()
    while True:
        run = runs.get()
        if run is None:
            return 0
        _current = _Execution(run)
        state["current"] = _current
        beat = _Beat(heartbeat_every)
        try:
            final = _result_of(function, run.get("payload"), permanent)
        finally:
            beat.stop()
        state["current"] = None
        _channel.send(final)
        _current = None
        if not pooled:
            return 0


class _Beat:
    """Sends a heartbeat every `every` seconds while an execution runs."""

    def __init__(self, every):
        self._stop = threading.Event()
        if every:
            threading.Thread(target=self._run, args=(every,), daemon=True).start()

    def _run(self, every):
        while not self._stop.wait(every):
            heartbeat()

    def stop(self):
        self._stop.set()


def _by_hand(function, permanent):
    """Outside jobvisor: one run on argv[1]'s JSON, lines to stdout."""
    global _channel, _current
    _channel = _Channel(sys.stdout)
    payload = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
    _current = _Execution({"type": "run", "execution_id": "", "job": "", "attempt": 1,
                           "handler": function.__name__, "payload": payload})
    final = _result_of(function, payload, permanent)
    _channel.send(final)
    return 0 if final.get("status") in ("succeeded", None) else 1


class _Worker:
    def __init__(self, function, pooled, permanent, heartbeat_every):
        self.function = function
        self.pooled = pooled
        self.permanent = permanent
        self.heartbeat_every = heartbeat_every
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def __call__(self):
        """Runs the worker: serves the supervisor's runs until stdin closes
        (one run unless pooled), then exits the process."""
        if os.environ.get("JOBVISOR_PROTOCOL"):
            code = _serve(self.function, self.pooled, self.permanent, self.heartbeat_every)
        else:
            code = _by_hand(self.function, self.permanent)
        sys.stdout.flush()
        sys.exit(code)


def worker(function=None, pooled=False, permanent=(), heartbeat=None):
    """Turns `function(payload) -> output` into a worker: calling the result
    with no arguments serves the supervisor.

    pooled: run execution after execution in one process (say `hello` with
        `pooled: true`); the handler must then be added with `--pool-size`.
    permanent: exception types that fail an execution for good; any other
        unexpected exception is retried.
    heartbeat: send a heartbeat every this many seconds while running.
    """
    def wrap(f):
        return _Worker(f, pooled, tuple(permanent), heartbeat)
    if function is not None:
        return wrap(function)
    return wrap

