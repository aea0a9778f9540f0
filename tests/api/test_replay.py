"""RELIABILITY S4: one captured signed request, re-sent 1,000 times one after another and 200
times at once, has exactly one effect; every other copy is refused as `replayed_request`. Once
its `created` is more than 300 s old (the clock is injected) no copy is accepted, and pruning
leaves no nonce past its expiry.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import httpx

from exchange import nonces
from tests.api.conftest import signed_headers
from tests.api.test_error_codes import assert_problem, enrol, issuance
from tests.api.writes import ledger_rows, transactions_of_merchant
from tests.factories import unique

SEQUENTIAL = 1_000
CONCURRENT = 200


@dataclass(frozen=True)
class Captured:
    """A signed request as an eavesdropper captured it: bytes and header fields, nothing more."""

    body: bytes
    headers: dict[str, str]

    async def send(self, client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/issuances", content=self.body, headers=self.headers)


async def capture(client, partner, clock) -> Captured:
    member = await enrol(client, partner, clock)
    body = json.dumps(issuance(member, 10)).encode()
    headers = signed_headers(
        partner,
        clock,
        method="POST",
        path="/v1/issuances",
        body=body,
        headers={"idempotency-key": unique("key")},
    )
    return Captured(body, headers)


def outcome(response: httpx.Response) -> str:
    if response.status_code == 201:
        return "accepted"
    assert_problem(response, 401, "replayed_request")
    return "replayed_request"


async def test_request_resent_1000_times_in_sequence_has_exactly_one_effect(
    db, client, clock, partner
):
    captured = await capture(client, partner, clock)
    before = await ledger_rows(db)
    outcomes = Counter([outcome(await captured.send(client)) for _ in range(SEQUENTIAL)])
    assert outcomes == {"accepted": 1, "replayed_request": SEQUENTIAL - 1}
    after = await ledger_rows(db)
    assert after["transactions"] == before["transactions"] + 1
    assert await transactions_of_merchant(db, partner.merchant_id) == 1


async def test_request_resent_200_times_at_once_has_exactly_one_effect(db, client, clock, partner):
    captured = await capture(client, partner, clock)
    before = await ledger_rows(db)
    responses = await asyncio.gather(*(captured.send(client) for _ in range(CONCURRENT)))
    assert Counter(outcome(response) for response in responses) == {
        "accepted": 1,
        "replayed_request": CONCURRENT - 1,
    }
    after = await ledger_rows(db)
    assert after["transactions"] == before["transactions"] + 1
    assert await transactions_of_merchant(db, partner.merchant_id) == 1


async def test_after_305_s_no_copy_is_accepted(db, client, clock, partner):
    sent, unsent = await capture(client, partner, clock), await capture(client, partner, clock)
    assert (await sent.send(client)).status_code == 201
    clock.advance(timedelta(seconds=305))
    before = await ledger_rows(db)
    for captured in (sent, unsent):
        response = await captured.send(client)
        assert_problem(response, 401, "signature_expired")
    assert await ledger_rows(db) == before
    assert await transactions_of_merchant(db, partner.merchant_id) == 1


async def test_the_window_edge_accepts_at_300_s_and_refuses_at_301_s(db, client, clock, partner):
    at_300, at_301 = await capture(client, partner, clock), await capture(client, partner, clock)
    clock.advance(timedelta(seconds=300))
    assert (await at_300.send(client)).status_code == 201
    clock.advance(timedelta(seconds=1))
    assert_problem(await at_301.send(client), 401, "signature_expired")


async def nonce_rows(db, key_id: str) -> list[tuple[str, object]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT nonce, expires_at FROM request_nonces WHERE key_id = $1", key_id
        )
    return [(row["nonce"], row["expires_at"]) for row in rows]


async def test_prune_removes_nonces_past_their_expiry_and_keeps_the_rest(
    db, client, clock, partner
):
    early = await capture(client, partner, clock)
    assert (await early.send(client)).status_code == 201
    clock.advance(timedelta(seconds=120))
    late = await capture(client, partner, clock)
    assert (await late.send(client)).status_code == 201
    rows = await nonce_rows(db, partner.key_id)
    assert len(rows) == 4  # two enrolments, two issuances
    early_expiry = min(expires_at for _, expires_at in rows)
    # A nonce must outlive every signature that could carry it: created + 300 s (+5 s skew).
    assert early_expiry >= clock.now() - timedelta(seconds=120) + timedelta(seconds=305)

    # Just before the earliest expiry nothing of this key goes; just after, the early ones do.
    await nonces.prune(db, early_expiry - timedelta(microseconds=1))
    assert len(await nonce_rows(db, partner.key_id)) == 4
    removed = await nonces.prune(db, early_expiry)
    assert removed >= 2
    remaining = await nonce_rows(db, partner.key_id)
    assert len(remaining) == 2
    assert all(expires_at > early_expiry for _, expires_at in remaining)
    async with db.connection() as conn:
        stale = await conn.fetchval(
            "SELECT count(*) FROM request_nonces WHERE expires_at <= $1", early_expiry
        )
    assert stale == 0

    # A pruned nonce's request is still refused: its signature has expired by then.
    clock.set(early_expiry)
    assert_problem(await early.send(client), 401, "signature_expired")
