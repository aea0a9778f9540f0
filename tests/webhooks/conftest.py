"""Webhook tests: an alliance of their own (settlement's fixtures) and a real HTTP receiver on
127.0.0.1 that checks every delivery with `sdk.webhooks.verify_webhook`, against the keys the
exchange publishes at GET /v1/exchange-keys. The receiver is on loopback, where webhooks may go
only with ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS on: these tests turn it on (test_targets.py
turns it off where it checks what is refused)."""

from __future__ import annotations

import asyncio
import base64
import collections
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from core.clock import Clock
from core.config import get_settings
from core.database import Database
from sdk.webhooks import WebhookEvent, WebhookVerificationError, verify_webhook
from server.main import create_app
from tests.api.conftest import AUTHORITY
from tests.cli.conftest import alliance  # noqa: F401
from tests.settlement.conftest import alliance_db, alliance_ledger, day_clock  # noqa: F401


@pytest.fixture(autouse=True)
def private_targets_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The development setting on: the receiver below is on 127.0.0.1."""
    monkeypatch.setenv("ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def published_keys(db: Database, clock: Clock) -> dict[str, bytes]:
    """The exchange's keys as a merchant gets them: GET /v1/exchange-keys, a JWK set."""
    app = create_app(database=db, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as c:
            response = await c.get("/v1/exchange-keys")
    assert response.status_code == 200, response.text
    return {
        jwk["kid"]: base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        for jwk in response.json()["keys"]
    }


@dataclass
class Delivery:
    """One request the receiver got, verified."""

    url: str
    event: WebhookEvent
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    """A merchant's webhook endpoint. `answer(event_id, nth)` picks the status of the nth request
    (from 1) carrying that event; `now` is the clock the signatures are checked against."""

    port: int = 0
    keys: dict[str, bytes] = field(default_factory=dict)
    now: Callable[[], float] = lambda: 0.0
    answer: Callable[[str, int], int] = lambda event_id, nth: 200
    delay_s: float = 0.0
    body: str = "ok"
    received: list[Delivery] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    in_flight: collections.Counter[str] = field(default_factory=collections.Counter)
    peers: list[object] = field(default_factory=list)
    """The exchange's end (address, port) of the connection each request came on."""
    overlaps: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}?till=7"

    def of(self, event_id: str) -> list[Delivery]:
        return [d for d in self.received if d.event.idempotency_key == event_id]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.transport is not None:
            self.peers.append(request.transport.get_extra_info("peername"))
        headers = {name: ", ".join(request.headers.getall(name)) for name in request.headers}
        try:
            event = verify_webhook(
                method=request.method,
                url=str(request.url),
                headers=headers,
                body=body,
                public_keys=self.keys,
                now=self.now(),
            )
        except WebhookVerificationError as error:
            self.refused.append(str(error))
            return web.Response(status=400, text=str(error))
        event_id = event.idempotency_key or ""
        self.in_flight[event_id] += 1
        if self.in_flight[event_id] > 1:
            self.overlaps += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            nth = len(self.of(event_id)) + 1
            status = self.answer(event_id, nth)
            self.received.append(Delivery(str(request.url), event, headers, status))
        finally:
            self.in_flight[event_id] -= 1
        return web.Response(status=status, text=self.body)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{name}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()
