"""Helpers of scripts/crash-campaign (python3 stdlib only): free ports, one
keep-alive HTTP connection per client, the tally and Stripe stand-in child
processes, the campaign's database (a fresh PostgreSQL database, or SQLite in
the data dir), and the OTLP/JSON and CloudEvents bodies the clients send."""

import ctypes
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse

HOUR_MS = 3_600_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent():
    """Children get SIGKILL when the campaign dies, even by SIGKILL. Only the
    main thread spawns them (PR_SET_PDEATHSIG follows the spawning thread)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


class Refused(Exception):
    """Nothing reached tally (connection refused): safe to retry or drop."""


class Http:
    """One keep-alive HTTP/1.1 connection, reopened after any error. request()
    raises Refused when tally was not there, any other exception when the
    request may or may not have been handled (in doubt)."""

    def __init__(self, port, timeout=20.0):
        self.port, self.timeout, self.conn = port, timeout, None

    def request(self, method, path, body=None, ctype="application/json"):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"content-type": ctype} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except ConnectionRefusedError as e:
            self.close()
            raise Refused(str(e)) from e
        except Exception:
            self.close()
            raise

    def json(self, method, path, body=None):
        status, data = self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def get_json(port, path, timeout=20.0):
    h = Http(port, timeout)
    try:
        return h.json("GET", path)
    finally:
        h.close()


class Tally:
    """The tally daemon as a child process on fixed ports and one data dir,
    started again after every SIGKILL; stderr of every run appended to one log."""

    def __init__(self, binary, config, env, log_path, api_port):
        self.binary, self.config, self.env, self.log_path, self.api_port = binary, config, env, log_path, api_port
        self.proc, self.started, self.runs = None, 0.0, 0

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(f'{{"campaign":"start {self.runs + 1}","at":{time.time():.3f}}}\n'.encode())
            self.proc = subprocess.Popen([self.binary, "--config", self.config, "serve"], env=self.env,
                                         stdout=log, stderr=log, preexec_fn=_die_with_parent)
        self.started, self.runs = time.monotonic(), self.runs + 1

    def ready(self):
        try:
            status, _ = Http(self.api_port, 1.0).request("GET", "/readyz")
            return status == 200
        except Exception:
            return False

    def wait_ready(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tally exited at start ({self.proc.returncode}); see {self.log_path}")
            if self.ready():
                return time.monotonic() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"tally not ready within {timeout:.0f}s; see {self.log_path}")

    def exited(self):
        """Exit code if tally ended by itself, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_scan(self):
        """(panic lines, ERROR lines, WARN lines) over every run's log."""
        panics, errors, warns = [], [], []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if "panicked" in line or "RUST_BACKTRACE" in line:
                    panics.append(line.rstrip())
                elif '"level":"ERROR"' in line:
                    errors.append(line.rstrip())
                elif '"level":"WARN"' in line and "no API keys exist" not in line:
                    warns.append(line.rstrip())
        return panics, errors, warns


class Standin:
    """`tally-standins stripe` on a free port; its state through /_standin."""

    def __init__(self, binary, meters, log_path):
        self.port = free_port()
        args = [binary, "stripe", "--addr", f"127.0.0.1:{self.port}", "--rate-limit", "unlimited"]
        for m in meters:
            args += ["--meter", f"{m}:sum"]
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, preexec_fn=_die_with_parent)
        for line in self.proc.stdout:
            if line.startswith(b"http"):
                self.url = line.decode().strip()
                break
        else:
            raise RuntimeError(f"the Stripe stand-in did not start; see {log_path}")

    def control(self, path, method="POST"):
        h = Http(self.port, 60.0)
        try:
            return h.json(method, "/_standin" + path)
        finally:
            h.close()

    def state(self):
        return self.control("/state", "GET")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Database:
    """A fresh PostgreSQL database (dropped at the end), or SQLite: empty
    database_url, the file in tally's data dir. rows() reads the ledger."""

    def __init__(self, kind, admin_url, data_dir):
        self.kind, self.admin, self.data_dir, self.name = kind, admin_url, data_dir, None
        self.url = ""
        if kind == "postgres":
            self.name = f"tally_crash_{os.getpid()}"
            self._psql(self.admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            self._psql(self.admin, f"CREATE DATABASE {self.name}")
            self.url = self.admin.rsplit("/", 1)[0] + "/" + self.name

    @staticmethod
    def _psql(url, sql):
        out = subprocess.run(["psql", url, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def query(self, sql):
        if self.kind == "postgres":
            return self._psql(self.url, sql)
        path = os.path.join(self.data_dir, "tally.db")
        with sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=30) as c:
            return [[str(v) for v in row] for row in c.execute(sql)]

    def rows(self):
        """{(tenant, source, event_id, meter): value} of usage_events."""
        rows = self.query("SELECT tenant, source, event_id, meter, value FROM usage_events")
        return {(t, s, e, m): float(v) for t, s, e, m, v in rows}

    def drop(self):
        if self.name:
            try:
                self._psql(self.admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print(f"crash-campaign: could not drop {self.name}: {e}")


# ---- bodies ------------------------------------------------------------------------

def _attr(key, value):
    v = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}
    return {"key": key, "value": v}


def cloudevent(client, eid, tenant, time_ms, tokens):
    return {"specversion": "1.0", "id": eid, "source": f"crash-ce-{client}", "type": "crash.usage",
            "subject": tenant, "time": rfc3339(time_ms), "data": {"tokens": tokens}}


def spans_body(tenant, spans):
    """OTLP/JSON traces of one tenant; spans = [(trace_hex, span_hex, end_ms, tokens)]."""
    out = []
    for trace_id, span_id, end_ms, tokens in spans:
        end = end_ms * 1_000_000
        out.append({"traceId": trace_id, "spanId": span_id, "name": "chat", "kind": 3,
                    "startTimeUnixNano": str(end - 250_000_000), "endTimeUnixNano": str(end),
                    "attributes": [_attr("gen_ai.usage.output_tokens", tokens), _attr("gen_ai.request.model", "m1")],
                    "status": {"code": 1}})
    resource = {"attributes": [_attr("service.name", "crash-llm"), _attr("tenant.id", tenant)]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "crash"}, "spans": out}]}]}


def counter_body(tenant, points):
    """OTLP/JSON metrics: one cumulative monotonic Sum series; points = [(start_ns, time_ns, value)]."""
    dps = [{"startTimeUnixNano": str(s), "timeUnixNano": str(t), "asInt": str(v), "attributes": []}
           for s, t, v in points]
    metric = {"name": "crash.units", "unit": "1",
              "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": dps}}
    resource = {"attributes": [_attr("service.name", "crash-worker"), _attr("tenant.id", tenant)]}
    return {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"scope": {"name": "crash"},
                                                                          "metrics": [metric]}]}]}
