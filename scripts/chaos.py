"""A chaos run against a real deployment: three `jobvisor serve` nodes on
one PostgreSQL or MySQL/MariaDB database, a stream of process, pooled and inproc
executions with side effects, diamond workflows (a -> b, c -> d), a
one-second cron and a daemon, and a webhook on every end; faults at
random (SIGKILL and restart of a node, SIGSTOP/SIGCONT, SIGKILL of a
worker, a node cut from the database for 15 s, the webhook's receiver gone
for a while); then the invariants.

Run it through `scripts/chaos`, which builds the binaries and starts a
throwaway PostgreSQL, or a throwaway MariaDB with `--database mysql`.
Exit status 0 means no violation.

Each node reaches the database through its own TCP relay on loopback, so
that one node can be cut off: during a cut its relay stops moving bytes
and accepting connections, as a dropped link does (TCP holds what was
sent, and delivers it if the link comes back).
"""

import argparse
import collections
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEASE_S = 10
# The ends the webhook hears (every end of every run but its own
# deliveries').
WEBHOOK_EVENTS = "succeeded,failed,retrying,cancelled,skipped,snoozed"
CUT_S = 15


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def admin_url(args):
    if args.database:
        return args.database
    if os.environ.get("JOBVISOR_TEST_POSTGRES"):
        return os.environ["JOBVISOR_TEST_POSTGRES"]
    if not os.environ.get("PGHOST"):
        sys.exit("chaos: no PostgreSQL (run scripts/chaos, which starts one)")
    return "postgres://{}:{}@{}:{}/{}".format(
        os.environ.get("PGUSER", "postgres"),
        os.environ.get("PGPASSWORD", ""),
        os.environ["PGHOST"],
        os.environ.get("PGPORT", "5432"),
        os.environ.get("PGDATABASE", "postgres"),
    )


def split_url(url):
    # postgres://user:pass@host:port/db (the database may be absent)
    rest = url.split("://", 1)[1]
    cred, hostpart = rest.rsplit("@", 1)
    hostport, _, db = hostpart.partition("/")
    host, port = hostport.rsplit(":", 1)
    return cred, host, int(port), db


def is_mysql(url):
    return url.startswith(("mysql://", "mariadb://"))


def sql(url, text):
    """Rows of a query, as lists of text, through the backend's own client
    (psql, or mariadb for a mysql:// URL)."""
    if is_mysql(url):
        cred, host, port, db = split_url(url)
        user, _, password = cred.partition(":")
        cmd = ["mariadb", "--no-defaults", "-h", host, "-P", str(port), "-u", user,
               f"--password={password}", "-N", "-B", "-e", text]
        if db:
            cmd += ["-D", db]
    else:
        cmd = ["psql", url, "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", text]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def uid(url, column):
    """A UUID column as its hyphenated lower-case text, on either backend
    (MySQL keeps it as 16 bytes)."""
    if is_mysql(url):
        return (f"LOWER(INSERT(INSERT(INSERT(INSERT(HEX({column}), 9, 0, '-'), "
                f"14, 0, '-'), 19, 0, '-'), 24, 0, '-'))")
    return f"{column}::text"


def text(url, column):
    """A column as text, on either backend."""
    return f"CAST({column} AS CHAR)" if is_mysql(url) else f"{column}::text"


class Relay:
    """A loopback TCP relay to the database that can be cut."""

    def __init__(self, host, port):
        self.upstream = (host, port)
        self.open = threading.Event()
        self.open.set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            self.open.wait()
            client, _ = self.sock.accept()
            self.open.wait()
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while True:
                self.open.wait()
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready or not self.open.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def descendants(pid):
    """Every live process below `pid` (by parent links)."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append((c, start_time(c)))
            todo.append(c)
    return [p for p in out if p[1] is not None]


def start_time(pid):
    """The process's start time (clock ticks since boot), or None if it is
    gone or a zombie: a pid plus its start time names one process, even
    when the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(proc):
    pid, started = proc
    return start_time(pid) == started


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Receiver:
    """The webhook's receiver: records every delivery; it can go away (its
    port refuses connections) and come back on the same port."""

    def __init__(self):
        self.received = []
        self.lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server = None
        self.start()

    def start(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append((self.headers.get("X-Jobvisor-Delivery"),
                                              self.headers.get("X-Jobvisor-Event"), body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def up(self):
        return self.server is not None


class Node:
    def __init__(self, n, bin_dir, url, workdir):
        self.n = n
        self.bin = os.path.join(bin_dir, "jobvisor")
        self.url = url
        self.log_path = os.path.join(workdir, f"node{n}.log")
        self.proc = None
        self.state = "down"
        self.start()

    def start(self):
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [self.bin, "--database", self.url, "serve", "--listen", "off",
             "--node-lease", f"{LEASE_S}s", "--log-format", "text"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.state = "up"

    @property
    def pid(self):
        return self.proc.pid


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = tempfile.mkdtemp(prefix="jobvisor-chaos-")
        self.effects = os.path.join(self.workdir, "effects")
        # The built-in `append` exists only with the test built-ins, and
        # writes under its directory only: every node and command has both.
        os.environ["JOBVISOR_TEST_BUILTINS"] = "1"
        os.environ["JOBVISOR_APPEND_DIR"] = self.workdir
        self.bin = os.path.join(args.bin_dir, "jobvisor")
        admin = admin_url(args)
        self.db = f"jv_chaos_{uuid.uuid4().hex[:12]}"
        sql(admin, f"CREATE DATABASE {self.db}")
        self.admin = admin
        cred, host, port, _ = split_url(admin)
        scheme = "mysql" if is_mysql(admin) else "postgres"
        self.url = f"{scheme}://{cred}@{host}:{port}/{self.db}"
        self.relays = [Relay(host, port) for _ in range(args.nodes)]
        self.node_urls = [f"{scheme}://{cred}@127.0.0.1:{r.port}/{self.db}" for r in self.relays]
        self.enqueued = []
        self.workflows = []
        self.faults = collections.Counter()
        self.violations = []
        self.pending_checks = []
        self.lock = threading.Lock()
        self.stop_load = threading.Event()
        self.daemon_samples = 0
        self.receiver = Receiver()

    def cli(self, *args, check=True, stdin=None):
        out = subprocess.run([self.bin, "--database", self.url, *args],
                             capture_output=True, text=True, input=stdin,
                             env={**os.environ, "NO_COLOR": "1"})
        if check and out.returncode != 0:
            raise RuntimeError(f"jobvisor {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def violation(self, what):
        with self.lock:
            self.violations.append(what)
        log(f"VIOLATION: {what}")

    def setup(self):
        self.cli("migrate")
        # Process mode, one process per execution, with a grandchild: five
        # numbered lines, then the side effect.
        script = ("i=1; while [ $i -le 5 ]; do echo \"sh line $i\"; i=$((i+1)); done; "
                  "sleep 0.3 & wait; "
                  "echo \"$JOBVISOR_EXECUTION_ID $JOBVISOR_ATTEMPT $JOBVISOR_JOB\" >> \"$EFFECTS\"")
        self.cli("handler", "add", "effect-sh", "--exec", "/bin/sh", "--arg", "-c", "--arg", script,
                 "--env", f"EFFECTS={self.effects}", "--timeout", "60s")
        # The built-in `append`: pooled in process mode, or inproc per run.
        self.cli("handler", "add", "append", "--builtin", "--mode", "process", "--pool-size", "2")
        payload = json.dumps({"path": self.effects, "lines": 3})
        self.cli("job", "add", "tick", "--handler", "append", "--mode", "inproc",
                 "--cron", "* * * * * *", "--payload", payload, "--retries", "10")
        daemon = json.dumps({"path": self.effects, "lines": 2, "ms": 3000})
        self.cli("job", "add", "keeper", "--handler", "append", "--mode", "inproc",
                 "--daemon", "--payload", daemon, "--backoff", "200ms")
        self.cli("webhook", "add", "chaos", "--url", f"http://127.0.0.1:{self.receiver.port}/hook",
                 "--events", WEBHOOK_EVENTS)
        self.nodes = [Node(i + 1, self.args.bin_dir, self.node_urls[i], self.workdir)
                      for i in range(self.args.nodes)]

    def workflow(self, payload):
        # A diamond (a -> b, c -> d) across the modes, every step retried.
        def step(name, handler, after, extra=None):
            s = {"name": name, "handler": handler, "retries": 20, "backoff": "100ms",
                 "after": after}
            if handler == "append":
                s["payload"] = json.loads(payload)
            s.update(extra or {})
            return s
        wf = {"name": "chaos-diamond", "step": [
            step("a", "effect-sh", []),
            step("b", "append", ["a"]),
            step("c", "append", ["a"], {"mode": "inproc"}),
            step("d", "effect-sh", ["b", "c"]),
        ]}
        out = self.cli("workflow", "run", "-", stdin=json.dumps(wf))
        with self.lock:
            self.workflows.append(out.strip())

    def load(self):
        kinds = [("effect-sh", []), ("append", []), ("append", ["--mode", "inproc"])]
        payload = json.dumps({"path": self.effects, "lines": 4, "ms": 200})
        rounds = 0
        while not self.stop_load.is_set():
            rounds += 1
            if rounds % 10 == 0:
                try:
                    self.workflow(payload)
                except RuntimeError as e:
                    log(f"workflow submit failed (retried later): {e}")
            handler, extra = self.rng.choice(kinds)
            args = ["run", handler, "--retries", "20", "--backoff", "100ms", *extra]
            if handler == "append":
                args += ["--payload", payload]
            try:
                out = self.cli(*args)
                with self.lock:
                    self.enqueued.append(out.strip())
            except RuntimeError as e:
                log(f"enqueue failed (retried later): {e}")
            time.sleep(0.05)

    def sample_daemon(self):
        while not self.stop_load.is_set():
            rows = sql(self.url, "SELECT count(*) FROM executions WHERE job = 'keeper' AND status = 'running'")
            if int(rows[0][0]) > 1:
                self.violation(f"{rows[0][0]} executions of the daemon run at once")
            self.daemon_samples += 1
            time.sleep(1)

    def healthy(self):
        return [n for n in self.nodes if n.state == "up"]

    def fault(self):
        healthy = self.healthy()
        if len(healthy) < 2:
            return
        node = self.rng.choice(healthy)
        kind = self.rng.choice(["kill", "kill", "stop", "worker", "worker", "cut", "receiver"])
        if kind == "receiver":
            if not self.receiver.up:
                return
            secs = self.rng.uniform(3, 20)
            self.receiver.stop()
            log(f"the webhook's receiver is gone for {secs:.1f} s")
            self.after(secs, self.receiver_back)
        elif kind == "kill":
            procs = descendants(node.pid)
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()
            node.state = "killed"
            at = time.monotonic()
            self.pending_checks.append((at + LEASE_S, node.n, procs))
            log(f"SIGKILL node {node.n} ({len(procs)} processes below it)")
            self.after(self.rng.uniform(1, 6), lambda: self.restart(node))
        elif kind == "stop":
            secs = self.rng.uniform(3, 15)
            node.proc.send_signal(signal.SIGSTOP)
            node.state = "stopped"
            log(f"SIGSTOP node {node.n} for {secs:.1f} s")
            self.after(secs, lambda: self.cont(node))
        elif kind == "worker":
            workers = [p for p, _ in descendants(node.pid) if "--guardian" not in cmdline(p)]
            if not workers:
                return
            victim = self.rng.choice(workers)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                return
            log(f"SIGKILL worker {victim} of node {node.n}: {cmdline(victim)[:60]}")
        else:
            relay = self.relays[node.n - 1]
            relay.open.clear()
            node.state = "cut"
            log(f"cut node {node.n} from the database for {CUT_S} s")
            self.after(CUT_S, lambda: self.heal(node))
        self.faults[kind] += 1

    def after(self, secs, f):
        t = threading.Timer(secs, f)
        t.daemon = True
        t.start()

    def receiver_back(self):
        if not self.receiver.up:
            self.receiver.start()
            log("the webhook's receiver is back")

    def restart(self, node):
        if node.state == "killed":
            node.start()
            log(f"restarted node {node.n}")

    def cont(self, node):
        if node.state == "stopped":
            node.proc.send_signal(signal.SIGCONT)
            node.state = "up"
            log(f"SIGCONT node {node.n}")

    def heal(self, node):
        if node.state == "cut":
            self.relays[node.n - 1].open.set()
            node.state = "up"
            log(f"node {node.n} reaches the database again")

    def check_orphans(self, final=False):
        now = time.monotonic()
        due = [c for c in self.pending_checks if final or c[0] <= now]
        self.pending_checks = [c for c in self.pending_checks if c not in due]
        for deadline, n, procs in due:
            if final and deadline > now:
                time.sleep(deadline - now)
            left = [p for p in procs if alive(p)]
            if left:
                self.violation(f"processes of killed node {n} outlived it by the lease: "
                               + ", ".join(f"{p} ({cmdline(p)[:40]})" for p, _ in left))

    def run(self):
        self.setup()
        log(f"3 nodes on database {self.db}; faults for {self.args.minutes} min; work in {self.workdir}")
        threads = [threading.Thread(target=self.load, daemon=True),
                   threading.Thread(target=self.sample_daemon, daemon=True)]
        for t in threads:
            t.start()
        end = time.monotonic() + self.args.minutes * 60
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(2, 6))
            self.fault()
            self.check_orphans()
        self.stop_load.set()
        for t in threads:
            t.join()
        log("faults over: healing every node")
        time.sleep(0.5)
        for node in self.nodes:
            self.cont(node)
            self.heal(node)
            self.restart(node)
        self.receiver_back()
        self.check_orphans(final=True)
        self.cli("job", "pause", "tick")
        self.cli("job", "pause", "keeper")
        self.drain()
        self.verify()
        for node in self.nodes:
            node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                self.violation(f"node {node.n} did not stop within 60 s of SIGTERM")
        try:
            force = "" if is_mysql(self.admin) else " WITH (FORCE)"
            sql(self.admin, f"DROP DATABASE {self.db}{force}")
        except RuntimeError as e:
            log(f"cannot drop {self.db}: {e}")
        return self.summary()

    def drain(self):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # Webhook deliveries too, and the changes yet to be taken for
            # them.
            rows = sql(self.url, "SELECT (SELECT count(*) FROM executions WHERE status IN "
                        "('pending', 'running', 'waiting')) + (SELECT count(*) FROM event_outbox)")
            if int(rows[0][0]) == 0:
                return
            time.sleep(1)
        self.violation("executions still pending or running 300 s after the faults ended")

    def verify(self):
        u = self.url
        rows = sql(u, f"SELECT {uid(u, 'id')}, status, coalesce({uid(u, 'next_id')}, ''), job, "
                   f"coalesce({text(u, 'occurrence')}, ''), attempt FROM executions")
        by_id = {r[0]: r for r in rows}
        self.attempts = len(rows)
        final = {"succeeded", "failed", "cancelled"}
        for first in self.enqueued:
            cur = by_id.get(first)
            hops = 0
            while cur is not None and cur[2] and hops < 100:
                cur = by_id.get(cur[2])
                hops += 1
            if cur is None:
                self.violation(f"execution {first} (or a retry of it) is missing")
            elif cur[1] not in final:
                self.violation(f"execution {first} ended {cur[1]}, not in a final state")
            elif cur[1] != "succeeded":
                self.violation(f"execution {first} ended {cur[1]} after {hops + 1} attempts")
        # Workflows: every step's last attempt succeeded, and no attempt of a
        # step started before each of its parents' last attempt ended.
        steps = sql(u, f"""
            SELECT {uid(u, 'e.workflow_id')}, e.step, e.status, count(*) OVER (PARTITION BY e.workflow_id)
            FROM executions e WHERE e.workflow_id IS NOT NULL AND e.next_id IS NULL""")
        per_wf = collections.defaultdict(dict)
        for wf, step, status, _ in steps:
            per_wf[wf][step] = status
        for wf in self.workflows:
            got = per_wf.get(wf, {})
            if sorted(got) != ["a", "b", "c", "d"]:
                self.violation(f"workflow {wf} has steps {sorted(got)}, not a, b, c, d")
            for step, status in got.items():
                if status != "succeeded":
                    self.violation(f"workflow {wf} step {step} ended {status}")
        early = sql(u, f"""
            SELECT {uid(u, 'c.id')}, {uid(u, 'p.id')} FROM dependencies d
            JOIN executions c ON c.id = d.child_id JOIN executions p ON p.id = d.parent_id
            WHERE c.started_at IS NOT NULL AND (p.finished_at IS NULL OR c.started_at < p.finished_at)""")
        for child, parent in early:
            self.violation(f"execution {child} started before its parent {parent} ended")
            self.show_attempts(parent, child)
        self.workflow_steps = len(steps)
        # Side effects: at most one per attempt.
        effects = collections.Counter()
        if os.path.exists(self.effects):
            with open(self.effects) as f:
                for line in f:
                    effects[line.split()[0]] += 1
        self.effects_count = sum(effects.values())
        for ex, count in effects.items():
            if count > 1:
                self.violation(f"the side effect of attempt {ex} happened {count} times")
        # Cron: one first attempt per occurrence, at most one success.
        occ = collections.defaultdict(lambda: [0, 0])
        for r in rows:
            if r[3] == "tick" and r[4]:
                occ[r[4]][0] += r[5] == "1"
                occ[r[4]][1] += r[1] == "succeeded"
        self.occurrences = len(occ)
        for o, (firsts, wins) in occ.items():
            if firsts > 1 or wins > 1:
                self.violation(f"cron occurrence {o}: {firsts} first attempts, {wins} successes")
        # Logs: a succeeded execution has every line its worker wrote.
        lines = sql(u, f"""
            SELECT {uid(u, 'e.id')}, e.handler, {text(u, 'e.payload')},
                   SUM(CASE WHEN l.message LIKE 'sh line %' OR l.message LIKE 'append line %'
                       THEN 1 ELSE 0 END)
            FROM executions e LEFT JOIN logs l ON l.execution_id = e.id
            WHERE e.status = 'succeeded' GROUP BY e.id, e.handler, {text(u, 'e.payload')}""")
        self.checked_logs = 0
        for ex, handler, payload, got in lines:
            if handler == "effect-sh":
                expected = 5
            else:
                expected = (json.loads(payload) or {}).get("lines", 0)
            self.checked_logs += 1
            if int(got) != expected:
                self.violation(f"execution {ex} ({handler}) stored {got} of its {expected} log lines")

        self.verify_webhook()

    def verify_webhook(self):
        """Every end of every run (but the webhook's own deliveries) was
        delivered at least once; a delivery id always came with the same
        body; no end was delivered under two delivery ids."""
        u = self.url
        rows = sql(u, f"""
            SELECT {uid(u, 'id')}, status, CASE WHEN next_id IS NOT NULL THEN 't' ELSE 'f' END
            FROM executions
            WHERE handler <> 'webhook' AND status IN
                ('succeeded', 'failed', 'cancelled', 'skipped', 'snoozed')""")
        expected = {}
        for ex, status, retried in rows:
            if status in ("failed", "cancelled") and retried == "t":
                expected[ex] = "retrying"
            else:
                expected[ex] = status
        bodies = collections.defaultdict(set)
        delivered = collections.defaultdict(set)
        with self.receiver.lock:
            received = list(self.receiver.received)
        for delivery, event, body in received:
            bodies[delivery].add(body)
            try:
                ex = json.loads(body)["execution"]["id"]
            except (ValueError, KeyError, TypeError):
                self.violation(f"delivery {delivery}: a body that is not an execution's event")
                continue
            delivered[(ex, event)].add(delivery)
        for delivery, b in bodies.items():
            if len(b) > 1:
                self.violation(f"delivery {delivery} came with {len(b)} different bodies")
        for key, ids in delivered.items():
            if len(ids) > 1:
                self.violation(f"{key[1]} of {key[0]} was delivered under {len(ids)} delivery ids")
        missing = [(ex, ev) for ex, ev in expected.items() if (ex, ev) not in delivered]
        for ex, ev in missing[:20]:
            self.violation(f"{ev} of execution {ex} was never delivered")
        if len(missing) > 20:
            self.violation(f"... and {len(missing) - 20} more ends never delivered")
        extra = [k for k in delivered if expected.get(k[0]) != k[1]]
        for ex, ev in extra[:20]:
            self.violation(f"{ev} of execution {ex} was delivered, but it ended {expected.get(ex)}")
        self.deliveries = (len(expected), len(received), len(bodies))

    def show_attempts(self, *ids):
        """Log each row's whole attempt chain (its first attempt to its
        last), so that an ordering violation explains itself."""
        for first in ids:
            u = self.url
            first_id = (f"UNHEX(REPLACE('{first}', '-', ''))" if is_mysql(u)
                        else f"'{first}'::uuid")
            rows = sql(u, f"""
                WITH RECURSIVE back(id) AS (
                    SELECT {first_id}
                    UNION SELECT e.id FROM executions e JOIN back b ON e.next_id = b.id),
                start AS (SELECT id FROM back b WHERE NOT EXISTS
                    (SELECT 1 FROM executions e WHERE e.next_id = b.id)),
                chain(id) AS (
                    SELECT id FROM start
                    UNION SELECT e.next_id FROM executions e JOIN chain c ON e.id = c.id
                    WHERE e.next_id IS NOT NULL)
                SELECT {uid(u, 'e.id')}, coalesce(e.step, ''), e.attempt, e.status,
                       coalesce(e.node, ''), coalesce({text(u, 'e.started_at')}, ''),
                       coalesce({text(u, 'e.finished_at')}, ''), e.waiting_on, coalesce(e.error, '')
                FROM chain c JOIN executions e ON e.id = c.id ORDER BY e.attempt""")
            for r in rows:
                log("    " + " | ".join(r))

    def summary(self):
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        log(f"summary: {len(self.enqueued)} executions enqueued, {len(self.workflows)} workflows "
            f"({self.workflow_steps} steps), {self.attempts} attempts in all, "
            f"{self.occurrences} cron occurrences, {self.effects_count} side effects, "
            f"{self.checked_logs} succeeded executions' logs checked, {self.daemon_samples} daemon samples, "
            f"{self.deliveries[0]} ends to deliver: {self.deliveries[1]} posts of {self.deliveries[2]} deliveries received")
        log(f"faults injected: {sum(self.faults.values())} ({faults})")
        log(f"violations: {len(self.violations)}")
        for v in self.violations[:50]:
            log(f"  {v}")
        return 0 if not self.violations else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--database", default=None,
                   help="the server's admin URL, postgres://... or mysql://... "
                        "(a database is made for the run); default: PostgreSQL from the environment")
    p.add_argument("--bin-dir", default=os.path.join(os.path.dirname(__file__), "..", "target", "debug"))
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    log(f"seed {args.seed} (--seed repeats the same choice of faults)")
    sys.exit(Chaos(args).run())


if __name__ == "__main__":
    main()
