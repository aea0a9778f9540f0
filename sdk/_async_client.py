"""`AsyncAllianceClient`: `AllianceClient` for asyncio, method for method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdk import _endpoints as endpoints
from sdk._config import ClientSettings
from sdk._constants import BATCH_OPERATIONS_MAX, PAGE_SIZE_MAX
from sdk._core import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    Call,
    ClientCore,
    Failure,
    Success,
    read_response,
    transport_failure,
    verification_failure,
)
from sdk._errors import AllianceError, UnexpectedResponseError
from sdk._keys import verification_error
from sdk._models import (
    Balance,
    BatchOperation,
    BatchResult,
    ExchangeKey,
    Hold,
    Member,
    Page,
    Statement,
    Transaction,
)
from sdk._retry import RetryPolicy
from sdk.webhooks import UnknownWebhookKeyError, WebhookEvent, verify_webhook

T = TypeVar("T")


class AsyncAllianceClient:
    """`AllianceClient` for asyncio: the same methods, each a coroutine (the iterators are async
    iterators), the same signing, verification and retries; `sleep` is awaited."""

    def __init__(
        self,
        *,
        base_url: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        timeout: httpx2.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        verify_responses: bool = True,
        transport: httpx2.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._core = ClientCore(
            key_id=key_id,
            private_key=private_key,
            retry=retry,
            verify_responses=verify_responses,
            random=random,
            clock=clock,
        )
        self._sleep = sleep
        self._http = httpx2.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
        )

    @classmethod
    def from_env(
        cls,
        *,
        base_url: str | None = None,
        key_id: str | None = None,
        key_file: str | Path | None = None,
        **options: Any,
    ) -> AsyncAllianceClient:
        """A client configured by `ALLIANCE_BASE_URL`, `ALLIANCE_KEY_ID` and `ALLIANCE_KEY_FILE`
        (a PEM private key); an argument given here wins over its variable."""
        settings = ClientSettings.resolve(base_url=base_url, key_id=key_id, key_file=key_file)
        return cls(
            base_url=settings.base_url,
            key_id=settings.key_id,
            private_key=settings.private_key(),
            **options,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    @property
    def key_id(self) -> str:
        return self._core.signer.key_id

    # --- Members --------------------------------------------------------------------------------

    async def enrol_member(
        self, *, external_ref: str, idempotency_key: str | None = None
    ) -> Member:
        """`POST /v1/members`: the member for your reference, enrolling them if new (the same
        reference is the same member at every merchant)."""
        return await self._send(
            endpoints.enrol_member(external_ref=external_ref, idempotency_key=idempotency_key)
        )

    async def get_balance(self, *, member_id: str) -> Balance:
        """`GET /v1/members/{member_id}/balance`."""
        return await self._send(endpoints.get_balance(member_id=member_id))

    # --- Points ---------------------------------------------------------------------------------

    async def issue(
        self,
        *,
        member_id: str,
        points: int,
        reference: str,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """`POST /v1/issuances`: give a member points (they expire at `expires_at`, by default
        after the alliance's points lifetime)."""
        return await self._send(
            endpoints.issue(
                member_id=member_id,
                points=points,
                reference=reference,
                expires_at=expires_at,
                idempotency_key=idempotency_key,
            )
        )

    async def redeem(
        self, *, member_id: str, points: int, reference: str, idempotency_key: str | None = None
    ) -> Transaction:
        """`POST /v1/redemptions`: spend a member's points at once; `settlement_value` is the
        money you will receive for them."""
        return await self._send(
            endpoints.redeem(
                member_id=member_id,
                points=points,
                reference=reference,
                idempotency_key=idempotency_key,
            )
        )

    async def hold(
        self,
        *,
        member_id: str,
        points: int,
        reference: str,
        expires_in_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        """`POST /v1/holds`: reserve points for a later `capture` (or `void`)."""
        return await self._send(
            endpoints.hold(
                member_id=member_id,
                points=points,
                reference=reference,
                expires_in_seconds=expires_in_seconds,
                idempotency_key=idempotency_key,
            )
        )

    async def capture(
        self, *, hold_id: str, points: int | None = None, idempotency_key: str | None = None
    ) -> Transaction:
        """`POST /v1/holds/{hold_id}/capture`: redeem all of a hold, or `points` of it."""
        return await self._send(
            endpoints.capture(hold_id=hold_id, points=points, idempotency_key=idempotency_key)
        )

    async def void(self, *, hold_id: str, idempotency_key: str | None = None) -> Hold:
        """`POST /v1/holds/{hold_id}/void`: release a hold's points."""
        return await self._send(endpoints.void(hold_id=hold_id, idempotency_key=idempotency_key))

    async def reverse(
        self,
        *,
        transaction_id: str,
        reference: str,
        points: int | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """`POST /v1/transactions/{transaction_id}/reversals`: undo an issuance or redemption,
        all that is not yet reversed or `points` of it (a refund)."""
        return await self._send(
            endpoints.reverse(
                transaction_id=transaction_id,
                reference=reference,
                points=points,
                idempotency_key=idempotency_key,
            )
        )

    # --- Transactions ---------------------------------------------------------------------------

    async def get_transaction(self, *, transaction_id: str) -> Transaction:
        """`GET /v1/transactions/{transaction_id}` (your own only)."""
        return await self._send(endpoints.get_transaction(transaction_id=transaction_id))

    async def list_transactions(
        self, *, member_id: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Transaction]:
        """`GET /v1/transactions`: one page of your transactions, newest first."""
        return await self._send(
            endpoints.list_transactions(member_id=member_id, limit=limit, cursor=cursor)
        )

    def iter_transactions(
        self, *, member_id: str | None = None, page_size: int = PAGE_SIZE_MAX
    ) -> AsyncIterator[Transaction]:
        """All your transactions (of one member, if given), newest first, page after page."""
        return self._pages(
            lambda cursor: self.list_transactions(
                member_id=member_id, limit=page_size, cursor=cursor
            )
        )

    async def batch(
        self, operations: Sequence[BatchOperation], *, idempotency_key: str | None = None
    ) -> list[BatchResult]:
        """`POST /v1/batches`: 1 to 1,000 operations, each applied (or refused) on its own; one
        result per operation, in order. Use `batch_all` for longer lists."""
        return await self._send(endpoints.batch(operations, idempotency_key=idempotency_key))

    async def batch_all(
        self, operations: Sequence[BatchOperation], *, chunk_size: int = BATCH_OPERATIONS_MAX
    ) -> list[BatchResult]:
        """Any number of operations, sent in batches of at most `chunk_size` (1,000), one after
        another; one result per operation, in order. Each operation's own idempotency key makes
        sending the same list again safe, should a batch fail part way."""
        results: list[BatchResult] = []
        for chunk in endpoints.chunks(operations, chunk_size):
            results.extend(await self.batch(chunk))
        return results

    # --- Statements -----------------------------------------------------------------------------

    async def list_statements(
        self, *, period: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Statement]:
        """`GET /v1/statements`: one page of your settlement statements, newest first;
        `period` (YYYY-MM-DD) selects one business day's."""
        return await self._send(
            endpoints.list_statements(period=period, limit=limit, cursor=cursor)
        )

    def iter_statements(
        self, *, period: str | None = None, page_size: int = PAGE_SIZE_MAX
    ) -> AsyncIterator[Statement]:
        """All your statements, newest first, page after page."""
        return self._pages(
            lambda cursor: self.list_statements(period=period, limit=page_size, cursor=cursor)
        )

    async def get_statement(self, *, statement_id: str) -> Statement:
        """`GET /v1/statements/{statement_id}`."""
        return await self._send(endpoints.get_statement(statement_id=statement_id))

    # --- The exchange's keys and webhooks -------------------------------------------------------

    async def get_exchange_keys(self) -> list[ExchangeKey]:
        """`GET /v1/exchange-keys`: the keys the exchange signs answers and webhooks with. The
        client also keeps them, to check answers."""
        keys = await self._send(endpoints.get_exchange_keys())
        self._core.remember_keys(keys)
        return keys

    async def verify_webhook(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookEvent:
        """Check that a webhook request you received was signed by the exchange (see
        `sdk.webhooks.verify_webhook`), with the exchange's published keys; return its event.
        `url` is the full URL the exchange posted to (your public webhook URL)."""

        def check(keys: Mapping[str, bytes]) -> WebhookEvent:
            return verify_webhook(
                method=method,
                url=url,
                headers=headers,
                body=body,
                public_keys=keys,
                now=self._core.clock(),
            )

        keys = self._core.exchange_keys
        if keys is not None:
            try:
                return check(keys)
            except UnknownWebhookKeyError:
                pass  # a key we have not seen (a rotation): fetch them once more
        return check(await self._refresh_keys())

    # --- Lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAllianceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- Sending --------------------------------------------------------------------------------

    async def _send(self, call: Call[T]) -> T:
        """Attempt `call` until it succeeds, fails for good, or the retry policy says stop."""
        retry = 0
        while True:
            attempt = await self._attempt(call)
            if isinstance(attempt, Success):
                return attempt.value
            retry += 1
            wait_s = self._core.wait_before_retry(retry, attempt)
            if wait_s is None:
                raise attempt.error
            await self._sleep(wait_s)

    async def _attempt(self, call: Call[T]) -> Success[T] | Failure:
        request = self._core.build_request(self._http, call)
        try:
            response = await self._http.send(
                request, auth=self._core.signer if call.signed else None
            )
        except httpx2.TransportError as error:
            return transport_failure(error, call)
        if call.signed and self._core.verify_responses:
            try:
                await self._verify(response)
            except AllianceError as error:
                return verification_failure(error, response, call)
        return read_response(call, response)

    async def _verify(self, response: httpx2.Response) -> None:
        keys = self._core.exchange_keys
        if keys is not None and self._core.signature_verifies(response, keys):
            return
        # No keys yet, or signed by a key we have not seen (a rotation): fetch them once more.
        if not self._core.signature_verifies(response, await self._refresh_keys()):
            raise verification_error(response, "its key is not one the exchange publishes")

    async def _refresh_keys(self) -> dict[str, bytes]:
        attempt = await self._attempt(endpoints.get_exchange_keys())
        if isinstance(attempt, Failure):
            raise attempt.error
        return self._core.remember_keys(attempt.value)

    async def _pages(self, fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await fetch(cursor)
            for item in page.data:
                yield item
            if page.next_cursor is None:
                return
            if page.next_cursor == cursor:
                raise UnexpectedResponseError("the exchange returned the same cursor again")
            cursor = page.next_cursor
