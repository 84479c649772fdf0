#!/usr/bin/env python3
"""An on-call endpoint for tally's alert tests, checking requests the way a
real one would, with code that shares nothing with tally:

  POST /hook  Alertmanager webhook (version "4") signed per Standard Webhooks;
              the signature is verified by the `standardwebhooks` package
              (401 if it does not verify), the body's shape is checked
              (400 naming the field if it is wrong).
  POST /pd    PagerDuty Events API v2: answers 202 like PagerDuty, or 400
              {"status": "invalid event", "errors": [...]}.

Every request is appended to --out as one JSON line: {"path", "status",
"webhook_id", "body", "error"}; the test reads that file. A receiver stopped
and started again on the same --port and --out keeps the earlier lines.
--fail-first N answers the first N requests with 503 (a receiver that is
down but reachable).

Prints "listening <port>" once ready.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

ALERT_FIELDS = {
    "status": str, "labels": dict, "annotations": dict, "startsAt": str,
    "endsAt": str, "generatorURL": str, "fingerprint": str,
}
TOP_FIELDS = {
    "version": str, "groupKey": str, "status": str, "receiver": str, "groupLabels": dict,
    "commonLabels": dict, "commonAnnotations": dict, "externalURL": str, "alerts": list,
}


def alertmanager_errors(body):
    errors = []
    for k, t in TOP_FIELDS.items():
        if not isinstance(body.get(k), t):
            errors.append(f"{k}: missing or not a {t.__name__}")
    if body.get("version") != "4":
        errors.append("version: must be \"4\"")
    if body.get("status") not in ("firing", "resolved"):
        errors.append("status: must be firing or resolved")
    for i, a in enumerate(body.get("alerts") or []):
        for k, t in ALERT_FIELDS.items():
            if not isinstance(a.get(k), t):
                errors.append(f"alerts[{i}].{k}: missing or not a {t.__name__}")
        for label in ("alertname", "severity", "tenant"):
            if label not in (a.get("labels") or {}):
                errors.append(f"alerts[{i}].labels.{label}: missing")
    if not body.get("alerts"):
        errors.append("alerts: empty")
    return errors


def pagerduty_errors(body):
    errors = []
    if not isinstance(body.get("routing_key"), str) or len(body.get("routing_key", "")) == 0:
        errors.append("routing_key: required")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("event_action: must be trigger, acknowledge or resolve")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("dedup_key: at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("dedup_key: required to acknowledge or resolve")
    if action == "trigger":
        p = body.get("payload")
        if not isinstance(p, dict):
            errors.append("payload: required to trigger")
        else:
            if not isinstance(p.get("summary"), str) or not 0 < len(p["summary"]) <= 1024:
                errors.append("payload.summary: 1 to 1024 characters")
            if not isinstance(p.get("source"), str) or not p["source"]:
                errors.append("payload.source: required")
            if p.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("payload.severity: critical, error, warning or info")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()
    webhook = Webhook(args.secret)
    lock = threading.Lock()
    state = {"failures_left": args.fail_first}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def answer(self, status, record, reply):
            record["status"] = status
            with lock:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            record = {"path": self.path, "webhook_id": self.headers.get("webhook-id"), "body": None, "error": None}
            with lock:
                fail = state["failures_left"] > 0
                if fail:
                    state["failures_left"] -= 1
            if fail:
                record["error"] = "failing on purpose"
                return self.answer(503, record, {"error": "unavailable"})
            try:
                body = json.loads(raw)
            except ValueError as e:
                record["error"] = f"not JSON: {e}"
                return self.answer(400, record, {"error": record["error"]})
            record["body"] = body
            if self.path == "/hook":
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    webhook.verify(raw, headers)
                except Exception as e:  # the package raises WebhookVerificationError
                    record["error"] = f"signature: {e}"
                    return self.answer(401, record, {"error": record["error"]})
                errors = alertmanager_errors(body)
                if errors:
                    record["error"] = "; ".join(errors)
                    return self.answer(400, record, {"error": record["error"]})
                return self.answer(200, record, {"ok": True})
            if self.path == "/pd":
                errors = pagerduty_errors(body)
                if errors:
                    record["error"] = "; ".join(errors)
                    return self.answer(400, record, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
                return self.answer(202, record, {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")})
            record["error"] = "no such path"
            return self.answer(404, record, {"error": "not found"})

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
