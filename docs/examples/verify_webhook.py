"""Receive credited's webhooks and verify their signature: Python's standard library only.

    CREDITED_WEBHOOK_SECRET=... python docs/examples/verify_webhook.py --port 8080

The notifier POSTs each notification as JSON (NOTIFIER_WEBHOOK_URL) with
    X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>
    X-Credited-Notification-Id: <the notification's id>
Verify the raw bytes before parsing them, refuse a timestamp more than 5 minutes away (a replay), accept any
of the active secrets while one is being rotated (comma-separated), and compare in constant time. A
notification can arrive more than once: the notification id tells a repeat apart.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300
_SIGNATURE = re.compile(r"^t=(?P<t>[0-9]{1,12}),v1=(?P<v1>[0-9a-f]{64})$")


class BadSignature(ValueError):
    """The request is not from credited, or is a replay."""


def verify(header: str | None, body: bytes, secrets: list[str], now: float) -> int:
    """The signature's timestamp if `header` signs `body` with one of `secrets`; else BadSignature."""
    match = _SIGNATURE.match((header or "").strip())
    if match is None:
        raise BadSignature("X-Signature is missing or malformed")
    timestamp = int(match["t"])
    if abs(now - timestamp) > TOLERANCE_S:
        raise BadSignature("X-Signature is too old or from the future")
    signed = match["t"].encode() + b"." + body
    matched = False
    for secret in secrets:  # every secret is tried, so the time taken does not tell which one matched
        matched |= hmac.compare_digest(hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest(), match["v1"])
    if not matched:
        raise BadSignature("X-Signature does not match")
    return timestamp


class WebhookHandler(BaseHTTPRequestHandler):
    secrets: list[str] = []
    seen: set[str] = set()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            verify(self.headers.get("x-signature"), body, self.secrets, time.time())
        except BadSignature as exc:
            self._answer(401, {"error": "bad_signature", "detail": str(exc)})
            return
        notification = json.loads(body)
        if notification["notification_id"] not in self.seen:  # a repeat is acknowledged, not acted on twice
            self.seen.add(notification["notification_id"])
            print(json.dumps(notification, ensure_ascii=False), flush=True)
        self._answer(204, None)

    def _answer(self, status: int, body: dict[str, str] | None) -> None:
        data = json.dumps(body).encode() if body else b""
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    secrets = [s for s in os.environ.get("CREDITED_WEBHOOK_SECRET", "").split(",") if s]
    if not secrets:
        parser.error("set CREDITED_WEBHOOK_SECRET (comma-separated while rotating)")
    WebhookHandler.secrets = secrets
    server = ThreadingHTTPServer((args.host, args.port), WebhookHandler)
    print(f"listening on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
