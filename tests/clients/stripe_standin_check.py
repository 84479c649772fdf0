#!/usr/bin/env python3
"""Check the Stripe stand-in (tally-standins stripe) with the official `stripe` SDK.

Starts the stand-in binary on a free loopback port, points stripe-python at it
(global `stripe.api_base` for the resource classes, `StripeClient(base_addresses=
{"api": url, "meter_events": url})` for the client API), and checks that the SDK
accepts its answers and maps its errors as it maps Stripe's. Exits non-zero on
any mismatch and ends with an "N passed, M failed" line.

Usage:
  tests/clients/.venv/bin/python tests/clients/stripe_standin_check.py [--bin PATH]

The binary defaults to $TALLY_STANDINS_BIN, else
$CARGO_TARGET_DIR/debug/tally-standins, else target/debug/tally-standins
(build it with `cargo build -p tally-standins`). The venv comes from
scripts/test-deps (tests/clients/requirements.txt pins stripe).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

import stripe

KEY = "sk_test_standin_check_0001"
ROOT = Path(__file__).resolve().parents[2]

results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"PASS {name}")
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            results.append((name, e))
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
        return fn

    return wrap


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_raises(exc_type, fn):
    try:
        fn()
    except exc_type as e:
        return e
    except stripe.StripeError as e:
        raise AssertionError(f"expected {exc_type.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc_type.__name__}, nothing raised")


def find_bin(arg):
    if arg:
        return arg
    if os.environ.get("TALLY_STANDINS_BIN"):
        return os.environ["TALLY_STANDINS_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    return str(Path(target) / "debug" / "tally-standins")


def control(url, path, method="POST"):
    req = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    args = ap.parse_args()
    binary = find_bin(args.bin)
    if not os.path.exists(binary):
        print(f"stand-in binary not found: {binary} (cargo build -p tally-standins)", file=sys.stderr)
        return 2
    proc = subprocess.Popen(
        [binary, "stripe", "--addr", "127.0.0.1:0", "--api-key", KEY, "--processing-ms", "0",
         "--meter", "tokens:sum", "--meter", "storage:sum:hour", "--meter", "seats:last"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = None
        meters = {}
        deadline = time.time() + 20
        while time.time() < deadline:
            line = proc.stdout.readline().strip()
            if line.startswith("meter "):
                _, mid, name = line.split()
                meters[name] = mid
            elif line.startswith("http://"):
                url = line
                break
        if not url:
            print("the stand-in did not print its URL", file=sys.stderr)
            return 2
        run_checks(url, meters)
    finally:
        proc.stdout.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    failed = [n for n, e in results if e is not None]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def run_checks(url, meters):
    stripe.api_key = KEY
    stripe.api_base = url
    stripe.max_network_retries = 0
    client = stripe.StripeClient(KEY, base_addresses={"api": url, "meter_events": url}, max_network_retries=0)
    state = lambda: control(url, "/_standin/state", "GET")  # noqa: E731
    now = int(time.time())

    @check("MeterEvent.create is accepted and parsed")
    def _():
        ev = stripe.billing.MeterEvent.create(
            event_name="tokens", payload={"stripe_customer_id": "cus_py", "value": "5"}, identifier="py-1", timestamp=now)
        expect(isinstance(ev, stripe.billing.MeterEvent), f"type {type(ev)}")
        expect(ev.object == "billing.meter_event", ev.object)
        expect(ev.identifier == "py-1" and ev.timestamp == now and ev.event_name == "tokens", str(ev))
        expect(ev.payload["value"] == "5" and ev.payload["stripe_customer_id"] == "cus_py", str(ev.payload))
        expect(ev.livemode is False and isinstance(ev.created, int), str(ev))
        expect(ev.last_response.request_id.startswith("req_"), ev.last_response.request_id)
        ev2 = client.v1.billing.meter_events.create({"event_name": "tokens", "payload": {"stripe_customer_id": "cus_py", "value": "-2"}})
        expect(ev2.identifier, "generated identifier")

    @check("duplicate identifier: InvalidRequestError, exact message, not retried")
    def _():
        retrying = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=2)
        before = state()["stats"]["calls"]
        e = expect_raises(stripe.InvalidRequestError, lambda: retrying.v1.billing.meter_events.create(
            {"event_name": "tokens", "payload": {"stripe_customer_id": "cus_py", "value": "5"}, "identifier": "py-1", "timestamp": now}))
        expect(e.user_message == "An event already exists with identifier py-1.", e.user_message)
        expect(e.http_status == 400 and e.param == "identifier", (e.http_status, e.param))
        expect(e.headers.get("stripe-should-retry") == "false", dict(e.headers))
        expect(e.request_id and e.request_id.startswith("req_"), e.request_id)
        expect(state()["stats"]["calls"] - before == 1, "Stripe-Should-Retry: false must stop the SDK's retries")

    @check("timestamps older than 35 days or over 5 minutes ahead are refused")
    def _():
        old = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.MeterEvent.create(
            event_name="tokens", payload={"stripe_customer_id": "cus_py", "value": "1"}, timestamp=now - 36 * 86400))
        expect(old.param == "timestamp", old.param)
        expect(old.user_message.startswith("The event timestamp cannot be more than 35 days in past."), old.user_message)
        fut = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.MeterEvent.create(
            event_name="tokens", payload={"stripe_customer_id": "cus_py", "value": "1"}, timestamp=now + 600))
        expect(fut.param == "timestamp", fut.param)

    @check("values that are not whole numbers or have > 15 digits are refused")
    def _():
        for bad in ("1.5", "12a", "1234567890123456"):
            e = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.MeterEvent.create(
                event_name="tokens", payload={"stripe_customer_id": "cus_py", "value": bad}))
            expect(e.param == "payload[value]", (bad, e.param))
        e = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.MeterEvent.create(
            event_name="tokens", payload={"stripe_customer_id": "cus_py", "value": "1234567890123456"}))
        expect("at most 15 digits" in e.user_message, e.user_message)

    @check("idempotency keys: replay and idempotency_error")
    def _():
        params = dict(event_name="tokens", payload={"stripe_customer_id": "cus_idem", "value": "3"}, identifier="py-idem")
        a = stripe.billing.MeterEvent.create(idempotency_key="py-key-1", **params)
        b = stripe.billing.MeterEvent.create(idempotency_key="py-key-1", **params)
        expect(b.last_response.headers.get("idempotent-replayed") == "true", dict(b.last_response.headers))
        expect(a.identifier == b.identifier, "same object")
        params["payload"] = {"stripe_customer_id": "cus_idem", "value": "4"}
        e = expect_raises(stripe.IdempotencyError, lambda: stripe.billing.MeterEvent.create(idempotency_key="py-key-1", **params))
        expect("same parameters" in e.user_message, e.user_message)

    @check("meters list with auto-pagination, retrieve")
    def _():
        listed = [m.event_name for m in stripe.billing.Meter.list(limit=1).auto_paging_iter()]
        expect(sorted(listed) == ["seats", "storage", "tokens"], listed)
        via_client = [m.id for m in client.v1.billing.meters.list({"limit": 2}).auto_paging_iter()]
        expect(len(via_client) == 3 and len(set(via_client)) == 3, via_client)
        m = stripe.billing.Meter.retrieve(meters["storage"])
        expect(m.event_time_window == "hour" and m.default_aggregation.formula == "sum", str(m))
        expect(m.customer_mapping.event_payload_key == "stripe_customer_id" and m.status == "active", str(m))
        expect(isinstance(m, stripe.billing.Meter), type(m))
        e = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.Meter.retrieve("mtr_nope"))
        expect(e.http_status == 404 and e.code == "resource_missing", (e.http_status, e.code))

    @check("event summaries: values, pagination, alignment errors")
    def _():
        day = now - now % 86400 - 86400
        # hourly pre-aggregated: a second send for hour 0 overwrites the first
        sends = [(0, "10"), (0, "12"), (1, "5"), (2, "7"), (5, "1")]
        for i, (h, v) in enumerate(sends):
            stripe.billing.MeterEvent.create(event_name="storage", identifier=f"sum-{i}", timestamp=day + h * 3600 + 60,
                                             payload={"stripe_customer_id": "cus_sum", "value": v})
        summaries = stripe.billing.Meter.list_event_summaries(
            meters["storage"], customer="cus_sum", start_time=day, end_time=day + 86400, value_grouping_window="hour", limit=2)
        expect(len(summaries.data) == 2 and summaries.has_more, str(summaries))
        got = [(int((s.start_time - day) / 3600), s.aggregated_value) for s in summaries.auto_paging_iter()]
        expect(got == [(5, 1.0), (2, 7.0), (1, 5.0), (0, 12.0)], got)
        s0 = summaries.data[0]
        expect(isinstance(s0, stripe.billing.MeterEventSummary) and s0.meter == meters["storage"], type(s0))
        whole = client.v1.billing.meters.event_summaries.list(
            meters["storage"], {"customer": "cus_sum", "start_time": day, "end_time": day + 86400})
        expect([s.aggregated_value for s in whole.data] == [25.0], [s.aggregated_value for s in whole.data])
        for params in ({"start_time": day + 30, "end_time": day + 3600},
                       {"start_time": day + 60, "end_time": day + 3600, "value_grouping_window": "hour"},
                       {"start_time": day + 3600, "end_time": day + 86400, "value_grouping_window": "day"}):
            e = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.Meter.list_event_summaries(
                meters["storage"], customer="cus_sum", **params))
            expect(e.http_status == 400 and e.param in ("start_time", "end_time"), (params, e.param))

    @check("adjustments cancel an event")
    def _():
        stripe.billing.MeterEvent.create(event_name="tokens", identifier="py-cancel", payload={"stripe_customer_id": "cus_adj", "value": "9"})
        adj = stripe.billing.MeterEventAdjustment.create(event_name="tokens", type="cancel", cancel={"identifier": "py-cancel"})
        expect(isinstance(adj, stripe.billing.MeterEventAdjustment), type(adj))
        expect(adj.status in ("pending", "complete") and adj.cancel.identifier == "py-cancel" and adj.type == "cancel", str(adj))
        ev = [e for e in state()["events"] if e["identifier"] == "py-cancel"]
        expect(ev and ev[0]["cancelled"], ev)
        e = expect_raises(stripe.InvalidRequestError, lambda: stripe.billing.MeterEventAdjustment.create(
            event_name="tokens", type="cancel", cancel={"identifier": "never-sent"}))
        expect(e.http_status == 400, e.http_status)

    @check("v2 meter event session + stream")
    def _():
        session = client.v2.billing.meter_event_session.create()
        expect(session.object == "v2.billing.meter_event_session", session.object)
        expect(session.authentication_token and session.expires_at.endswith("Z"), str(session))
        streamer = stripe.StripeClient(session.authentication_token, base_addresses={"api": url, "meter_events": url}, max_network_retries=0)
        out = streamer.v2.billing.meter_event_stream.create({"events": [
            {"event_name": "tokens", "identifier": "v2-a", "payload": {"stripe_customer_id": "cus_v2", "value": "4"}},
            {"event_name": "tokens", "identifier": "v2-b", "payload": {"stripe_customer_id": "cus_v2", "value": "oops"}},
        ]})
        expect(out is None, out)
        st = state()
        expect(any(e["identifier"] == "v2-a" for e in st["events"]), "v2-a recorded")
        expect(any(e["identifier"] == "v2-b" and e["code"] == "meter_event_invalid_value" for e in st["async_errors"]), st["async_errors"])
        control(url, "/_standin/settings?session_ttl_secs=1")
        short = client.v2.billing.meter_event_session.create()
        control(url, "/_standin/clock?advance_secs=5")
        late = stripe.StripeClient(short.authentication_token, base_addresses={"api": url, "meter_events": url}, max_network_retries=0)
        e = expect_raises(stripe.TemporarySessionExpiredError, lambda: late.v2.billing.meter_event_stream.create(
            {"events": [{"event_name": "tokens", "payload": {"stripe_customer_id": "cus_v2", "value": "1"}}]}))
        expect(e.http_status == 401 and e.code == "billing_meter_event_session_expired", (e.http_status, e.code))
        control(url, "/_standin/settings?session_ttl_secs=900")

    @check("a wrong API key raises AuthenticationError")
    def _():
        bad = stripe.StripeClient("sk_test_wrong_key_9999", base_addresses={"api": url}, max_network_retries=0)
        e = expect_raises(stripe.AuthenticationError, lambda: bad.v1.billing.meters.list())
        expect(e.http_status == 401 and e.user_message.startswith("Invalid API Key provided: sk_test_"), e.user_message)
        expect(e.user_message.endswith("9999") and "*" in e.user_message, e.user_message)

    @check("injected 429 -> RateLimitError, injected 500 -> APIError (and retried when allowed)")
    def _():
        params = {"event_name": "tokens", "payload": {"stripe_customer_id": "cus_f", "value": "1"}}
        control(url, "/_standin/inject?fault=rate_limit")
        e = expect_raises(stripe.RateLimitError, lambda: client.v1.billing.meter_events.create(params))
        # stripe-python builds v1 RateLimitErrors without `code`; the body has it.
        expect(e.http_status == 429 and e.json_body["error"]["code"] == "rate_limit", (e.http_status, e.json_body))
        control(url, "/_standin/inject?fault=server_error")
        e = expect_raises(stripe.APIError, lambda: client.v1.billing.meter_events.create(params))
        expect(e.http_status == 500 and e.headers.get("stripe-should-retry") == "true", (e.http_status, dict(e.headers)))
        expect(type(e) is stripe.APIError, type(e))
        # With retries on, the SDK honours Stripe-Should-Retry: true and succeeds.
        control(url, "/_standin/inject?fault=server_error")
        retrying = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=1)
        ok = retrying.v1.billing.meter_events.create(params)
        expect(ok.object == "billing.meter_event", str(ok))

    @check("connection reset and slow answers -> APIConnectionError; SDK retry replays the saved answer")
    def _():
        def params(ident):
            return {"event_name": "tokens", "identifier": ident, "payload": {"stripe_customer_id": "cus_net", "value": "1"}}

        def recorded(ident):
            return sum(1 for e in state()["events"] if e["identifier"] == ident)

        control(url, "/_standin/inject?fault=reset_before_record")
        expect_raises(stripe.APIConnectionError, lambda: client.v1.billing.meter_events.create(params("net-1")))
        expect(recorded("net-1") == 0, "not recorded before the reset")
        control(url, "/_standin/inject?fault=reset_after_record")
        expect_raises(stripe.APIConnectionError, lambda: client.v1.billing.meter_events.create(params("net-2")))
        expect(recorded("net-2") == 1, "recorded, though the client never heard")
        # With retries on, stripe-python sends one Idempotency-Key for all
        # attempts: the retry gets the saved 200 back, the event counts once.
        control(url, "/_standin/inject?fault=reset_after_record")
        retrying = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=2)
        ev = retrying.v1.billing.meter_events.create(params("net-3"))
        expect(ev.last_response.headers.get("idempotent-replayed") == "true", dict(ev.last_response.headers))
        expect(recorded("net-3") == 1, "once")
        control(url, "/_standin/settings?slow_ms=2500")
        control(url, "/_standin/inject?fault=slow")
        impatient = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0,
                                        http_client=stripe.RequestsClient(timeout=0.5))
        expect_raises(stripe.APIConnectionError, lambda: impatient.v1.billing.meter_events.create(params("net-4")))
        expect(recorded("net-4") == 1, "a slow answer still recorded the event")

    @check("concurrent calls for one customer and meter -> RateLimitError endpoint-concurrency")
    def _():
        control(url, "/_standin/settings?processing_ms=400")
        errors = []

        def send(i):
            try:
                stripe.billing.MeterEvent.create(event_name="tokens", identifier=f"conc-{i}",
                                                 payload={"stripe_customer_id": "cus_conc", "value": "1"})
            except stripe.StripeError as e:  # noqa: PERF203
                errors.append(e)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        threads[0].start()
        time.sleep(0.1)
        threads[1].start()
        for t in threads:
            t.join()
        control(url, "/_standin/settings?processing_ms=0")
        expect(len(errors) == 1 and isinstance(errors[0], stripe.RateLimitError), errors)
        expect(errors[0].headers.get("stripe-rate-limited-reason") == "endpoint-concurrency", dict(errors[0].headers))

    @check("webhook signature verifies with stripe.Webhook.construct_event")
    def _():
        # The Rust signer's known vector (standins/src/stripe/webhook.rs test).
        payload = '{"id":"evt_1"}'
        header = "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a"
        stripe.WebhookSignature.verify_header(payload, header, "whsec_test_secret", tolerance=None)


if __name__ == "__main__":
    sys.exit(main())
