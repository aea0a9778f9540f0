"""examples/webhook_receiver.py against the demo alliance, as its docstring walks through it: the
receiver on a free port, the tea house's webhook URL pointed at it (`alliance merchant
set-webhook-url`), `alliance settle`, then `alliance webhooks deliver`, the operator's commands
with ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS on, for the receiver is on loopback; what it prints
is checked against the statements the exchange has.
This module has its own demo alliance (test_examples.py's fixture), so its settlement runs after
the URL is set, whatever the order of the tests elsewhere."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.database import Database
from exchange import exchange_keys
from sdk import load_private_key
from sdk.signing import sign_request, split_url
from tests.conftest import PROJECT_ROOT
from tests.sdk import test_examples
from tests.sdk.live import alliance_command, alliance_env, free_port
from tests.sdk.test_examples import DEMO_TIMEOUT_S, DemoAlliance, statement_ids, tea_house

demo = test_examples.demo
"""`make run`'s demo alliance, served: test_examples.py's fixture (this module gets its own)."""

TEA_HOUSE = "tea-house-1"
WAIT_S = 60.0
STATEMENT_LINE = re.compile(
    r"statement (?P<statement>\S+) period (?P<period>\S+) net (?P<net>-?[0-9.]+) (?P<currency>\S+)"
    r" \([^)]*\) \[event (?P<event>\S+)\]"
)


class Output:
    """The receiver's stdout, line by line, as it prints it (read on a thread)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.ended = True  # the receiver closed its stdout: it has exited
            self._changed.notify_all()

    def wait_for(self, what: str, done: Callable[[list[str]], bool]) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: done(self.lines), timeout=WAIT_S):
                pytest.fail(f"the receiver did not print {what}; it printed:\n{self.text()}")

    def text(self) -> str:
        return "\n".join(self.lines)

    def statements(self) -> list[re.Match[str]]:
        return [match for line in self.lines if (match := STATEMENT_LINE.fullmatch(line))]

    def close(self) -> None:
        self._reader.join(timeout=15)


@dataclass
class Receiver:
    process: subprocess.Popen[str]
    output: Output
    url: str
    log: Path

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.output.close()
        return self.process.returncode


@pytest.fixture
def receiver(demo: DemoAlliance, tmp_path: Path) -> Iterator[Receiver]:
    """examples/webhook_receiver.py for the tea house, on a free port, ready to receive."""
    port = free_port()
    log = tmp_path / "receiver.stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                str(PROJECT_ROOT / "examples" / "webhook_receiver.py"),
                *("--port", str(port), "--merchant", TEA_HOUSE),
            ],
            env={
                **alliance_env(""),
                "ALLIANCE_BASE_URL": demo.server.url,
                "ALLIANCE_DEMO_KEYS": str(demo.keys),
            },
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    url = f"http://127.0.0.1:{port}/webhooks"
    running = Receiver(process, Output(process.stdout), url, log)
    try:
        running.output.wait_for(
            "that it is listening",
            lambda lines: (
                f"receiving webhooks for {TEA_HOUSE} at {url}" in lines or running.output.ended
            ),
        )
        assert process.poll() is None, log.read_text() + running.output.text()
        yield running
    finally:
        running.stop()
        process.stdout.close()


LOCAL_RECEIVERS = {"ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}
"""The development setting the walk-through turns on: webhooks may go to a loopback receiver."""


def alliance(
    demo: DemoAlliance, *args: str, env: dict[str, str] = LOCAL_RECEIVERS
) -> subprocess.CompletedProcess[str]:
    """Run an operator's command on the demo alliance, as the walk-through does."""
    return subprocess.run(
        [*alliance_command(), *args],
        env=alliance_env(demo.url, **env),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )


def operate(demo: DemoAlliance, *args: str) -> str:
    """An operator's command that succeeds; its output."""
    ran = alliance(demo, *args)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    return ran.stdout


async def merchant_of(db: Database, key_id: str) -> str:
    async with db.connection() as conn:
        merchant_id: str = await conn.fetchval(
            "SELECT merchant_id FROM merchant_keys WHERE key_id = $1", key_id
        )
    return merchant_id


async def point_webhooks_at(demo: DemoAlliance, key_id: str, url: str) -> None:
    """Set the webhook URL of the merchant whose key is `key_id`, as the example's docstring
    does: `alliance merchant set-webhook-url`, with the development setting on (and refused
    without it, the receiver being on loopback)."""
    merchant_id = await merchant_of(demo.db, key_id)
    off = {"ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS": "false"}
    refused = alliance(demo, "merchant", "set-webhook-url", merchant_id, url, env=off)
    assert refused.returncode == 1, refused.stderr + refused.stdout
    assert "ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS" in refused.stderr
    printed = operate(demo, "merchant", "set-webhook-url", merchant_id, url)
    assert f"webhooks go to {url}" in " ".join(printed.split())  # as rich may wrap it


async def events_of(db: Database, key_id: str) -> dict[str, tuple[str, str]]:
    """The merchant's webhook events: statement id -> (event id, status)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT d.statement_id, d.event_id, d.status FROM webhook_deliveries d
               JOIN merchant_keys k ON k.merchant_id = d.merchant_id
               WHERE k.key_id = $1""",
            key_id,
        )
    return {row["statement_id"]: (row["event_id"], row["status"]) for row in rows}


async def test_the_receiver_prints_each_statement_once_and_acknowledges_a_redelivery(
    demo: DemoAlliance,
    receiver: Receiver,
):
    await point_webhooks_at(demo, TEA_HOUSE, receiver.url)
    operate(demo, "settle", "--out", str(demo.keys.parent / "payments"))
    operate(demo, "webhooks", "deliver")

    expected = await statement_ids(demo.db, TEA_HOUSE)
    assert len(expected) >= 2  # the demo's week settles into a statement a day
    events = await events_of(demo.db, TEA_HOUSE)
    assert sorted(events) == expected
    statuses = {status for _, status in events.values()}
    assert statuses == {"delivered"}, receiver.output.text()
    receiver.output.wait_for(
        f"{len(expected)} statements", lambda _: len(receiver.output.statements()) >= len(expected)
    )
    printed = {match["statement"]: match for match in receiver.output.statements()}
    assert len(receiver.output.statements()) == len(expected), receiver.output.text()
    assert sorted(printed) == expected
    with tea_house(demo) as client:
        for statement_id in expected:
            statement = client.get_statement(statement_id=statement_id)
            line = printed[statement_id]
            assert line["period"] == statement.period.date
            net = Decimal(statement.net).scaleb(-statement.raw["minor_units"])
            assert (line["net"], line["currency"]) == (str(net), statement.raw["currency"])
            assert line["event"] == events[statement_id][0]

    # The exchange sends an event again when it did not get the answer: same Idempotency-Key,
    # new signature. Here the event is made due again, as a lost answer leaves it.
    again_statement = expected[0]
    again_event = events[again_statement][0]
    async with demo.db.connection() as conn:
        await conn.execute(
            """UPDATE webhook_deliveries
               SET status = 'pending', finished_at = NULL, next_attempt_at = now() - interval '1 s'
               WHERE event_id = $1""",
            again_event,
        )
    operate(demo, "webhooks", "deliver")

    receiver.output.wait_for(  # its first line, and one more: acknowledged, or processed again
        "the redelivery", lambda lines: sum(again_event in line for line in lines) >= 2
    )
    assert [m["statement"] for m in receiver.output.statements()].count(again_statement) == 1
    assert f"{again_event} again: acknowledged, already processed" in receiver.output.lines
    async with demo.db.connection() as conn:
        attempts = await conn.fetch(
            "SELECT attempt, status_code FROM webhook_attempts WHERE event_id = $1 ORDER BY 1",
            again_event,
        )
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 200), (2, 200)]
    assert (await events_of(demo.db, TEA_HOUSE))[again_statement][1] == "delivered"

    assert receiver.stop() == 0, receiver.log.read_text()
    assert receiver.output.lines[-1] == "stopped"


def signed_headers(
    url: str, body: bytes, event_id: str, key_id: str, private_key: Ed25519PrivateKey
) -> dict[str, str]:
    """A POST's headers signed as the exchange signs a webhook (ADR 0022)."""
    parts = split_url(url)
    headers = {"content-type": "application/json", "idempotency-key": event_id}
    return headers | sign_request(
        method="POST",
        authority=parts.authority,
        path=parts.path,
        query=parts.query,
        headers=headers,
        body=body,
        key_id=key_id,
        private_key=private_key,
        created=int(time.time()),
        nonce=uuid.uuid4().hex,
    )


async def test_the_receiver_refuses_what_the_exchange_did_not_sign(
    demo: DemoAlliance,
    receiver: Receiver,
):
    exchange_key = await exchange_keys.signing_key(demo.db, datetime.now(UTC))
    event_id = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"event_id": event_id, "type": "points.expired", "data": {}}).encode()
    genuine = signed_headers(
        receiver.url, body, event_id, exchange_key.key_id, exchange_key.private_key
    )
    merchant_key = load_private_key(demo.keys / f"{TEA_HOUSE}.pem")

    def post(headers: dict[str, str], content: bytes = body) -> int:
        return httpx2.post(receiver.url, content=content, headers=headers, timeout=10).status_code

    unsigned = post({"content-type": "application/json", "idempotency-key": event_id})
    by_a_merchant = post(signed_headers(receiver.url, body, event_id, TEA_HOUSE, merchant_key))
    other_url = "https://shop.example/webhooks"
    for_another_url = post(
        signed_headers(other_url, body, event_id, exchange_key.key_id, exchange_key.private_key)
    )
    altered = post(genuine, body.replace(b"points.expired", b"points.expires"))
    assert (unsigned, by_a_merchant, for_another_url, altered) == (401, 401, 401, 401)

    # The genuine one is taken, and the same request again is acknowledged, not processed again.
    assert post(genuine) == 200
    assert post(genuine) == 200
    receiver.output.wait_for("the repeat", lambda lines: f"{event_id} again" in " ".join(lines))
    processed = [line for line in receiver.output.lines if "not used here" in line]
    assert processed == [f"{event_id}: 'points.expired' events are not used here"]
    refused = [line for line in receiver.output.lines if line.startswith("refused a webhook")]
    assert len(refused) == 4, receiver.output.text()
