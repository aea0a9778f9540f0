"""The SDK against a live exchange: one `alliance serve` process for the session, on the shared
test database, so every test can check what the SDK did against the ledger itself."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.database import Database
from exchange import exchange_keys
from exchange.exchange_keys import ExchangeKey
from merchants import service as merchants
from sdk import AllianceClient, AsyncAllianceClient
from sdk.signing import content_digest, sign_response
from tests.factories import CREATED_AT, unique
from tests.sdk.live import Server, serving

JITTER = 0.5
"""What the tests' random source always returns: each backoff is shortened by 0.25 × 0.5."""


@dataclass
class Partner:
    """A merchant as its till sees itself: an id, a key id, a private key."""

    merchant_id: str
    key_id: str
    private_key: Ed25519PrivateKey


async def make_partner(db: Database, *, liability_limit: int = 10**12) -> Partner:
    merchant = await merchants.create_merchant(
        db, name=unique("sdk-shop"), liability_limit=liability_limit, now=CREATED_AT
    )
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key = await merchants.add_key(
        db, merchant_id=merchant.merchant_id, public_key=public, now=CREATED_AT
    )
    return Partner(merchant.merchant_id, key.key_id, private)


class Waits(list[float]):
    """Stands in for `time.sleep` / `asyncio.sleep`: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="session")
def exchange(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(database_url, tmp_path_factory.mktemp("exchange") / "server.log") as server:
        # The first answer creates the exchange's first signing key; later reads see the same.
        httpx2.get(f"{server.url}/v1/exchange-keys", timeout=10).raise_for_status()
        yield server


@pytest.fixture
async def exchange_key(db: Database, exchange: Server) -> ExchangeKey:
    """The key the live exchange signs with (private half included, for forging "its" answers)."""
    return await exchange_keys.signing_key(db, datetime.now(UTC))


@pytest.fixture
async def partner(db: Database) -> Partner:
    return await make_partner(db)


@pytest.fixture
def waits() -> Waits:
    return Waits()


def sync_client(server: Server, partner: Partner, waits: Waits, **options: Any) -> AllianceClient:
    return AllianceClient(
        base_url=server.url,
        key_id=partner.key_id,
        private_key=partner.private_key,
        sleep=waits,
        random=lambda: JITTER,
        **options,
    )


def async_client(
    server: Server, partner: Partner, waits: Waits, **options: Any
) -> AsyncAllianceClient:
    return AsyncAllianceClient(
        base_url=server.url,
        key_id=partner.key_id,
        private_key=partner.private_key,
        sleep=waits.asleep,
        random=lambda: JITTER,
        **options,
    )


class Api:
    """One face for both clients, so that each end-to-end test runs against both: every method
    is awaited, and iterators (sync or async) come back as lists."""

    def __init__(self, client: AllianceClient | AsyncAllianceClient) -> None:
        self.client = client

    @property
    def is_async(self) -> bool:
        return isinstance(self.client, AsyncAllianceClient)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                return await result
            if hasattr(result, "__aiter__"):
                return [item async for item in result]
            if isinstance(result, Iterator):
                return list(result)
            return result

        return call

    async def aclose(self) -> None:
        if isinstance(self.client, AsyncAllianceClient):
            await self.client.close()
        else:
            self.client.close()


ApiFactory = Callable[..., Api]


@pytest.fixture(params=["sync", "async"])
async def connect(
    request: pytest.FixtureRequest, exchange: Server, waits: Waits
) -> AsyncIterator[ApiFactory]:
    """`connect(partner, **options)`: a client of the flavour under test, for that partner."""
    made: list[Api] = []

    def make(partner: Partner, **options: Any) -> Api:
        factory = sync_client if request.param == "sync" else async_client
        api = Api(factory(exchange, partner, waits, **options))
        made.append(api)
        return api

    yield make
    for api in made:
        await api.aclose()


@pytest.fixture
async def api(connect: ApiFactory, partner: Partner) -> Api:
    return connect(partner)


async def count_transactions(db: Database, *, merchant_id: str, reference: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE merchant_id = $1 AND reference = $2",
            merchant_id,
            reference,
        )
        return count


def signed_problem(
    request: httpx2.Request,
    key: ExchangeKey,
    *,
    status: int,
    code: str,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """A problem answer to `request` signed with the exchange's key, as the exchange sends one."""
    body = json.dumps(
        {
            "type": f"about:blank#{code}",
            "title": code,
            "status": status,
            "detail": code,
            "code": code,
        }
    ).encode()
    return signed_response(request, key, status=status, body=body, headers=headers)


def signed_response(
    request: httpx2.Request,
    key: ExchangeKey,
    *,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    created: int | None = None,
) -> httpx2.Response:
    digest = content_digest(body)
    signature = sign_response(
        status=status,
        content_digest=digest,
        request_method=request.method,
        request_path=request.url.raw_path.decode().partition("?")[0],
        key_id=key.key_id,
        private_key=key.private_key,
        created=created if created is not None else int(datetime.now(UTC).timestamp()),
    )
    return httpx2.Response(
        status,
        headers={
            "content-type": "application/problem+json" if status >= 400 else "application/json",
            "content-digest": digest,
            **signature,
            **(headers or {}),
        },
        content=body,
        request=request,
    )
