"""A webhook receiver: the tea house's server takes the exchange's signed `statement.published`
webhooks, checks each one's signature with the SDK, and books each statement once.

    .venv/bin/python examples/webhook_receiver.py [--port 8081] [--merchant tea-house-1]

It is the standard library's http.server and the SDK, nothing else. Every POST is checked by
`AllianceClient.verify_webhook` (which fetches the exchange's keys at GET /v1/exchange-keys and
keeps them): a forged, altered, unsigned or stale one gets 401 and is not acted on. A verified
event is processed once per Idempotency-Key (the event's id, the same on every delivery); a
delivery the exchange sends again, because it did not get the answer, is answered 200 and not
processed twice. Only then is the answer a 2xx. Each statement prints one line: its id, period
and net position (positive: the alliance pays the merchant).

To see it work against `make run`'s demo alliance (`make run` serving in another terminal):

1. Start the receiver; it prints the URL it answers at, http://127.0.0.1:8081/webhooks:

       .venv/bin/python examples/webhook_receiver.py --port 8081

2. Point the tea house's webhook URL at it. Webhooks go only to public https:// URLs (ADR
   0022): a receiver on this machine needs the development setting
   ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true, which allows loopback and private addresses,
   and plain http:// to loopback, both when the URL is set and when webhooks are sent. Export it
   in the terminal where you run the steps below (never in production), find the tea house's id
   (Jade Tea House, mer_…) with `alliance merchant list`, and set its URL:

       export ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true
       .venv/bin/alliance merchant list
       .venv/bin/alliance merchant set-webhook-url MER_ID http://127.0.0.1:8081/webhooks

3. Settle the demo's finished days: one statement per merchant per day, and for each of the
   tea house's a `statement.published` event, written by the run that makes the statement:

       .venv/bin/alliance settle

   (If they were settled before the URL was set, no event was written for them. Make new
   business and settle it in an ad-hoc period instead: `.venv/bin/python examples/checkout.py`,
   then `.venv/bin/alliance settle --cutoff $(date -u +%Y-%m-%dT%H:%M:%SZ)`.)

4. Send the due webhooks now (the scheduler, `alliance scheduler`, does it every minute; it
   too needs ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true to send to this receiver, or it gives
   the events up as refused):

       .venv/bin/alliance webhooks deliver

   The receiver prints a line per statement; `.venv/bin/alliance webhooks list` shows them
   delivered. A POST the exchange did not sign is refused:
   `curl -i -X POST -d '{}' http://127.0.0.1:8081/webhooks` answers 401.

Ctrl-C (or SIGTERM) stops it. The events processed are remembered in memory only, for the
example's sake: a real receiver stores each Idempotency-Key with what it did about the event, in
the same transaction, so that a restart does not process an event again. `ALLIANCE_BASE_URL` and
`ALLIANCE_DEMO_KEYS` point it at another exchange or key directory.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from _demo import TEA_HOUSE, demo_client

from sdk import AllianceClient, AllianceError, Statement, WebhookEvent, WebhookVerificationError

HOST = "127.0.0.1"
PATH = "/webhooks"
MAX_BODY_BYTES = 1 << 20  # a statement is a few kilobytes


_output = threading.Lock()


def say(line: str) -> None:
    with _output:  # whole lines, though requests are served on threads
        print(line, flush=True)  # flushed at once, so a log (or a test) sees each line at once


class Receiver:
    """What the server does with a webhook: verify it, then process it once."""

    def __init__(self, client: AllianceClient, origin: str) -> None:
        self.client = client
        self.origin = origin
        """The scheme and authority of the webhook URL the exchange posts to, as it signed them
        (behind a proxy, the public ones, not this server's own address)."""
        self.processed: set[str] = set()
        self.lock = threading.Lock()

    def receive(self, target: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """The status and text to answer a POST to `target` (its path and query) with."""
        url = self.origin + target
        try:
            event = self.client.verify_webhook(method="POST", url=url, headers=headers, body=body)
        except WebhookVerificationError as error:
            say(f"refused a webhook: {error}")
            return 401, f"not verified: {error}"
        except AllianceError as error:
            # The exchange's keys could not be fetched: not the sender's fault; try again later.
            say(f"could not verify a webhook: {error}")
            return 503, "cannot verify webhooks right now"
        if event.idempotency_key is None:
            return 400, "no Idempotency-Key"
        with self.lock:  # check, process and remember as one step: never two at once
            if event.idempotency_key in self.processed:
                say(f"{event.idempotency_key} again: acknowledged, already processed")
                return 200, "already processed"
            try:
                self.process(event)
            except (AllianceError, LookupError, TypeError) as error:
                # Not remembered, and not a 2xx: the exchange sends it again later.
                say(f"could not process {event.idempotency_key}: {error!r}")
                return 500, "not processed"
            self.processed.add(event.idempotency_key)
        return 200, "processed"

    def process(self, event: WebhookEvent) -> None:
        """Book the event; here, print one line per statement."""
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        if data.get("type") != "statement.published":
            say(f"{event.idempotency_key}: {data.get('type')!r} events are not used here")
            return
        statement = Statement.from_json(data["data"]["statement"])
        period = statement.period.date or f"to {statement.period.end.isoformat()}"
        say(
            f"statement {statement.statement_id} period {period} "
            f"net {_money(statement.net, statement.raw)} ({_direction(statement.net)}) "
            f"[event {event.idempotency_key}]"
        )


def _money(minor: int, statement: Mapping[str, Any]) -> str:
    """Minor units as an amount, e.g. -1230 fen as `-12.30 CNY`."""
    minor_units, currency = statement.get("minor_units"), statement.get("currency")
    if not isinstance(minor_units, int) or not isinstance(currency, str):
        return f"{minor} minor units"
    return f"{Decimal(minor).scaleb(-minor_units)} {currency}"


def _direction(net: int) -> str:
    return "the alliance pays us" if net > 0 else "we pay the alliance" if net < 0 else "even"


class WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookServer
    timeout = 10  # seconds a sender may take to send its request

    def do_POST(self) -> None:
        if urlsplit(self.path).path != PATH:
            self._answer(404, "not a webhook URL")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413 if length > MAX_BODY_BYTES else 400, "bad Content-Length")
            return
        body = self.rfile.read(length)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():  # one value per name, repeats joined by ", "
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status, text = self.server.receiver.receive(self.path, headers, body)
        self._answer(status, text)

    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the receiver says what happened itself


class WebhookServer(ThreadingHTTPServer):
    def __init__(self, port: int, receiver: Receiver) -> None:
        super().__init__((HOST, port), WebhookHandler)
        self.receiver = receiver


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Receive the exchange's signed webhooks for a demo merchant."
    )
    parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (8081)")
    parser.add_argument(
        "--merchant", default=TEA_HOUSE, help=f"the demo merchant's key id ({TEA_HOUSE})"
    )
    args = parser.parse_args()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM stops it as Ctrl-C does

    signal.signal(signal.SIGTERM, stop)
    with demo_client(args.merchant) as client:
        try:
            server = WebhookServer(args.port, Receiver(client, f"http://{HOST}:{args.port}"))
        except OSError as error:
            sys.exit(f"cannot listen on {HOST}:{args.port}: {error}")
        with server:
            say(f"receiving webhooks for {args.merchant} at http://{HOST}:{args.port}{PATH}")
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                say("stopped")


if __name__ == "__main__":
    main()
