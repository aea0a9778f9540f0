"""Delivering the outbox: claim due events, sign, POST, record, retry with backoff (ADR 0022).

One call of `deliver_due` loops: claim up to `limits.CLAIM_BATCH` due events (FOR UPDATE SKIP
LOCKED, and each claimed event's `next_attempt_at` moved a lease ahead in the same short
transaction), send them concurrently, record each outcome, and claim again until nothing is due.
No transaction is open while a request is in flight. Two deliverers (two scheduler ticks, the
scheduler and `alliance webhooks deliver`) never send one event at the same time: the row lock
keeps them apart while claiming, the lease after.

Each request is signed as PROTOCOL.md signs a request, by `sdk.signing.sign_request` (the
canonicaliser the exchange's own verifier and response signer use), with the exchange's current
signing key (`exchange.exchange_keys.signing_key`, the key that signs responses): `"@method"`,
`"@authority"`, `"@path"`, `"@query"` when the URL has one, `"content-digest"`, and
`"idempotency-key"` (the event id, the same on every attempt), with `keyid`, `created` and a fresh
`nonce`. `sdk.webhooks.verify_webhook` checks exactly that.

Where a request may go (ADR 0022, "Where webhooks may go"): before each attempt the merchant's URL
is judged again (`merchants.webhook_urls.check_url`: https only, no userinfo or fragment, an IP
literal in any spelling must be public, no `localhost`), its host is resolved (`resolver`,
getaddrinfo by default) and every address it resolves to must be public; the request is then
sent to the first of those addresses, with the URL's host as the Host header and TLS server name
(SNI, and the certificate is checked against it), so the connection goes to the address that was
checked, whatever the resolver answers next (DNS rebinding). A refused URL is an attempt with an
error and no request: given up at once when the URL itself is refused (it cannot get better),
retried like an unreachable receiver when it is what the host resolves to (or it resolves to
nothing).
`ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS` (development and tests) lets loopback and private
addresses through, and plain http:// to loopback. Proxies from the environment are not used, nor
is a connection kept for another request (the pool would know it by address alone).

A 2xx answer delivers the event; anything else (another status, a redirect, which is not followed,
a timeout, a refused connection) schedules the next attempt after `backoff_s`, until
`limits.MAX_ATTEMPTS`, after which the event is marked failed. An event an operator put back
(`outbox.requeue_failed`) gets `limits.MAX_ATTEMPTS` more, counted from its `attempts_at_retry`,
with the backoff starting again from the first wait; its attempts keep their numbering.

Guarantees: at least once (an event whose answer was lost, or whose deliverer died after sending,
is sent again with the same Idempotency-Key); no order, not even per merchant (a retried event is
overtaken by newer ones).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx2
from asyncpg import Record

from core.clock import Clock
from core.config import webhook_private_targets_allowed
from core.database import Database
from exchange import exchange_keys
from exchange.exchange_keys import ExchangeKey
from merchants import webhook_urls
from merchants.webhook_urls import Resolver, UnsafeWebhookUrl, WebhookTarget
from sdk.signing import sign_request, split_url
from settlement.webhooks import limits, outbox

Progress = Callable[[int], None]
"""Called with the number of events attempted so far."""

USER_AGENT = "alliance-exchange-webhooks/1"


def quiet(done: int) -> None:
    """The default progress callback: say nothing."""


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first): the base doubled
    per earlier failure, stretched by up to `BACKOFF_JITTER`, capped at `BACKOFF_MAX_S`."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    base = limits.BACKOFF_BASE_S * 2.0 ** min(attempt - 1, 32)
    jitter = (rng or random).random() * limits.BACKOFF_JITTER
    return min(base * (1 + jitter), float(limits.BACKOFF_MAX_S))


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt at one event got."""

    event_id: str
    merchant_id: str
    attempt: int
    last_attempt: int
    """The attempt after which the event is given up (`limits.MAX_ATTEMPTS` from its last retry)."""
    url: str | None
    status_code: int | None
    error: str | None
    outcome: str
    """`delivered`, `retrying` (another attempt is scheduled) or `failed` (given up)."""
    next_attempt_at: datetime | None


@dataclass(slots=True)
class DeliveryReport:
    attempts: list[Attempt] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for attempt in self.attempts if attempt.outcome == outcome)

    @property
    def delivered(self) -> int:
        return self.count("delivered")

    @property
    def retrying(self) -> int:
        return self.count("retrying")

    @property
    def failed(self) -> int:
        return self.count("failed")


async def due_count(db: Database, now: datetime) -> int:
    """Events due now: what a `deliver_due` starting now would attempt (others aside)."""
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM webhook_deliveries
               WHERE status = 'pending' AND next_attempt_at <= $1""",
            now,
        )
    return count


async def deliver_due(
    db: Database,
    clock: Clock,
    *,
    max_events: int = limits.MAX_PER_RUN,
    transport: httpx2.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
    progress: Progress = quiet,
    resolver: Resolver = webhook_urls.resolve,
    allow_private_targets: bool | None = None,
) -> DeliveryReport:
    """Attempt every event due now, once each, at most `max_events`; see the module's doc.
    `allow_private_targets` None means the `ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS` setting."""
    report = DeliveryReport()
    timeout = httpx2.Timeout(limits.REQUEST_TIMEOUT_S)
    if allow_private_targets is None:
        allow_private_targets = webhook_private_targets_allowed()
    targets = _Targets(resolver, allow_private_targets)
    # No keep-alive: the pool knows a connection by address, and a connection (its TLS session
    # verified for one host name) must not carry the next request, maybe for another name there.
    async with httpx2.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        trust_env=False,
        limits=httpx2.Limits(max_keepalive_connections=0),
    ) as client:
        while len(report.attempts) < max_events:
            now = clock.now()
            batch = min(limits.CLAIM_BATCH, max_events - len(report.attempts))
            claimed = await _claim(db, now, batch)
            if not claimed:
                break
            key = await exchange_keys.signing_key(db, now)
            outcomes = await asyncio.gather(
                *(_attempt(db, client, targets, clock, key, event, rng) for event in claimed)
            )
            report.attempts.extend(outcomes)
            progress(len(report.attempts))
    return report


async def _claim(db: Database, now: datetime, batch: int) -> list[Record]:
    async with db.transaction() as conn:
        rows: list[Record] = await conn.fetch(
            """WITH due AS (
                   SELECT event_id FROM webhook_deliveries
                   WHERE status = 'pending' AND next_attempt_at <= $1
                   ORDER BY next_attempt_at, created_at, event_id
                   LIMIT $2
                   FOR UPDATE SKIP LOCKED
               )
               UPDATE webhook_deliveries d
               SET attempts = d.attempts + 1, last_attempt_at = $1, next_attempt_at = $3
               FROM due, merchants m
               WHERE d.event_id = due.event_id AND m.merchant_id = d.merchant_id
               RETURNING d.event_id, d.event_type, d.merchant_id, d.statement_id, d.created_at,
                         d.attempts, d.attempts_at_retry, m.webhook_url""",
            now,
            batch,
            now + timedelta(seconds=limits.LEASE_S),
        )
    return rows


async def _attempt(
    db: Database,
    client: httpx2.AsyncClient,
    targets: _Targets,
    clock: Clock,
    key: ExchangeKey,
    event: Record,
    rng: random.Random | None,
) -> Attempt:
    started_at = clock.now()
    started = time.monotonic()
    url: str | None = event["webhook_url"]
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    final = False
    if url is None:
        error, final = "the merchant has no webhook URL any more", True
    else:
        try:
            pinned = await targets.pin(url)
            async with db.connection() as conn:
                body = await outbox.render(conn, event)
            headers = _signed_headers(url, body, event["event_id"], key, clock)
            status_code, excerpt = await _post(client, pinned, body, headers)
        except _Refused as refused:
            error, final = f"refused, not sent: {refused}"[: limits.ERROR_CHARS], refused.final
        except outbox.EventGone as gone:
            error, final = str(gone), True
        except (httpx2.HTTPError, ValueError) as failure:
            # ValueError: a URL httpx2 or the signer cannot use; it will not get better by itself.
            error = f"{type(failure).__name__}: {failure}"[: limits.ERROR_CHARS]
    delivered = status_code is not None and 200 <= status_code < 300
    return await _record(
        db,
        event,
        started_at=started_at,
        duration_ms=int((time.monotonic() - started) * 1000),
        url=url,
        status_code=status_code,
        error=error,
        excerpt=excerpt,
        delivered=delivered,
        give_up=final or _budget_used(event) >= limits.MAX_ATTEMPTS,
        rng=rng,
    )


def _budget_used(event: Record) -> int:
    """Attempts made since the event was last put back by an operator (all of them if never)."""
    used: int = event["attempts"] - event["attempts_at_retry"]
    return used


class _Refused(Exception):
    """A webhook URL, or what its host resolves to, is not somewhere a webhook may go."""

    def __init__(self, reason: str, *, final: bool) -> None:
        super().__init__(reason)
        self.final = final
        """True when the URL itself is refused: no later attempt can succeed."""


@dataclass(frozen=True, slots=True)
class _Pinned:
    """Where one request goes: `url` has the checked address for its host; the Host header and
    the TLS server name keep the URL's host."""

    url: httpx2.URL
    host_header: str
    server_name: str


@dataclass(frozen=True, slots=True)
class _Targets:
    resolver: Resolver
    allow_private: bool

    async def pin(self, url: str) -> _Pinned:
        """The checked address to send to, or `_Refused`. The URL is judged as registration
        judges it; the host httpx2 would connect to is then resolved here, once, and the request
        goes to the address checked, not to a name a resolver could answer differently later."""
        try:
            webhook_urls.check_url(url, allow_private=self.allow_private)
            parsed = httpx2.URL(url)
            host = parsed.raw_host.decode("ascii").strip("[]").rstrip(".")
            literal = webhook_urls.ip_literal(host)
        except (UnsafeWebhookUrl, httpx2.InvalidURL, ValueError) as unsafe:
            raise _Refused(str(unsafe), final=True) from None
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        target = WebhookTarget(scheme=parsed.scheme, host=host, port=port, address=literal)
        if literal is not None:
            addresses: list[webhook_urls.IPAddress] = [literal]
        else:
            try:
                async with asyncio.timeout(limits.REQUEST_TIMEOUT_S):
                    addresses = list(await self.resolver(host, port))
            except OSError as failure:  # socket.gaierror, TimeoutError
                reason = f"cannot resolve {host}: {type(failure).__name__}: {failure}"
                raise _Refused(reason, final=False) from None
        try:
            chosen = webhook_urls.check_addresses(
                addresses, target, allow_private=self.allow_private
            )
        except UnsafeWebhookUrl as unsafe:
            raise _Refused(str(unsafe), final=literal is not None) from None
        return _Pinned(
            url=parsed.copy_with(host=str(chosen)),
            host_header=parsed.netloc.decode("ascii"),
            server_name=host,
        )


async def _post(
    client: httpx2.AsyncClient, pinned: _Pinned, body: bytes, headers: dict[str, str]
) -> tuple[int, str | None]:
    """The answer's status and the start of its text; the rest of the body is never read."""
    request = client.build_request(
        "POST",
        pinned.url,
        content=body,
        headers=headers | {"Host": pinned.host_header},
        extensions={"sni_hostname": pinned.server_name},
    )
    response = await client.send(request, stream=True)
    try:
        wanted = limits.RESPONSE_EXCERPT_CHARS * 4  # UTF-8 needs at most 4 bytes a character
        start = b""
        async for chunk in response.aiter_bytes():
            start += chunk
            if len(start) >= wanted:
                break
        text = start[:wanted].decode("utf-8", errors="replace")
        return response.status_code, text[: limits.RESPONSE_EXCERPT_CHARS] or None
    finally:
        await response.aclose()


def _signed_headers(
    url: str, body: bytes, event_id: str, key: ExchangeKey, clock: Clock
) -> dict[str, str]:
    parts = split_url(url)
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": event_id,
        "User-Agent": USER_AGENT,
    }
    return headers | sign_request(
        method="POST",
        authority=parts.authority,
        path=parts.path,
        query=parts.query,
        headers=headers,
        body=body,
        key_id=key.key_id,
        private_key=key.private_key,
        created=int(clock.now().timestamp()),
        nonce=uuid.uuid4().hex,
    )


async def _record(
    db: Database,
    event: Record,
    *,
    started_at: datetime,
    duration_ms: int,
    url: str | None,
    status_code: int | None,
    error: str | None,
    excerpt: str | None,
    delivered: bool,
    give_up: bool,
    rng: random.Random | None,
) -> Attempt:
    """The attempt's row, and the event's next state; only if the event is still this
    deliverer's claim (its attempt count unchanged), which a live deliverer's always is."""
    if delivered:
        outcome, next_at = "delivered", None
    elif give_up:
        outcome, next_at = "failed", None
    else:
        outcome = "retrying"
        next_at = started_at + timedelta(seconds=backoff_s(_budget_used(event), rng))
    async with db.transaction() as conn:
        await conn.execute(
            """INSERT INTO webhook_attempts (event_id, attempt, started_at, duration_ms, url,
                                             status_code, error, response_excerpt)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (event_id, attempt) DO NOTHING""",
            event["event_id"],
            event["attempts"],
            started_at,
            duration_ms,
            url,
            status_code,
            error,
            excerpt,
        )
        await conn.execute(
            """UPDATE webhook_deliveries
               SET status = $3,
                   next_attempt_at = coalesce($4, next_attempt_at),
                   last_status_code = $5,
                   last_error = $6,
                   finished_at = $7
               WHERE event_id = $1 AND attempts = $2 AND status = 'pending'""",
            event["event_id"],
            event["attempts"],
            "pending" if outcome == "retrying" else outcome,
            next_at,
            status_code,
            error,
            None if outcome == "retrying" else started_at,
        )
    return Attempt(
        event_id=event["event_id"],
        merchant_id=event["merchant_id"],
        attempt=event["attempts"],
        last_attempt=event["attempts_at_retry"] + limits.MAX_ATTEMPTS,
        url=url,
        status_code=status_code,
        error=error,
        outcome=outcome,
        next_attempt_at=next_at,
    )
