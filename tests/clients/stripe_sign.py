#!/usr/bin/env python3
"""Signs a Stripe webhook body with the official `stripe` package's helper
(stripe.WebhookSignature.generate_signature_header), as Stripe does.

    stripe_sign.py --secret whsec_… [--secret whsec_…] [--timestamp T] < body

Prints the Stripe-Signature header: t=T,v1=… with one v1 per secret (two
while a secret is rolled). Checks each with the package's verify_header
first, so the header is one Stripe's own library accepts.
"""

import argparse
import sys
import time

import stripe


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", action="append", required=True)
    ap.add_argument("--timestamp", type=int, default=None)
    args = ap.parse_args()
    body = sys.stdin.buffer.read().decode("utf-8")
    t = args.timestamp if args.timestamp is not None else int(time.time())
    sigs = []
    for secret in args.secret:
        header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=t)
        # Within its tolerance only when t is near now; skip the check otherwise.
        if abs(time.time() - t) < 300:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)
        sigs.append(header.split(",", 1)[1])
    print(f"t={t}," + ",".join(sigs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
