"""Safe retries, against the live exchange through a transport that fails on cue: each logical
call is applied exactly once (the ledger says so), with the attempts and waits sdk/_retry.py
documents. With the tests' jitter source fixed at 0.5, the backoff waits are
0.5 × 0.875 = 0.4375 s, then 0.875 s, then 1.75 s."""

from __future__ import annotations

import pytest

from core.database import Database
from sdk import (
    APIConnectionError,
    APITimeoutError,
    InsufficientPointsError,
    RateLimitedError,
    ResponseVerificationError,
    RetryPolicy,
    ServiceUnavailableError,
)
from tests.factories import unique
from tests.sdk.conftest import ApiFactory, Partner, Waits, count_transactions
from tests.sdk.faults import FaultyTransport

BACKOFF = [0.4375, 0.875, 1.75]


@pytest.fixture
def faulty(exchange_key):
    def make(*script: str) -> FaultyTransport:
        return FaultyTransport(script, exchange_key)

    return make


async def issue_through(connect: ApiFactory, partner: Partner, transport: FaultyTransport, **kw):
    """A member enrolled directly, then one issuance through `transport`; its reference."""
    direct = connect(partner)
    member = await direct.enrol_member(external_ref=unique("card"))
    reference = unique("receipt")
    client = connect(partner, transport=transport, **kw)
    result = await client.issue(member_id=member.member_id, points=25, reference=reference)
    return result, reference


def signature_nonces(transport: FaultyTransport) -> list[str]:
    return [
        request.headers["signature-input"].split('nonce="')[1] for request in transport.requests
    ]


def idempotency_keys(transport: FaultyTransport) -> set[str]:
    return {request.headers["idempotency-key"] for request in transport.requests}


async def test_refused_connections_are_retried_with_backoff(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    transport = faulty("refuse", "refuse")

    issued, reference = await issue_through(connect, partner, transport)

    assert len(transport.requests) == 3
    assert waits == BACKOFF[:2]
    assert issued.points == 25
    assert await count_transactions(db, merchant_id=partner.merchant_id, reference=reference) == 1
    # One logical call: one idempotency key; three attempts: three signatures, three nonces.
    assert len(idempotency_keys(transport)) == 1
    assert len(set(signature_nonces(transport))) == 3


async def test_a_lost_answer_is_retried_and_replayed_never_applied_twice(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    # The exchange applies the first attempt, but the connection breaks before the answer; the
    # second times out after the exchange answered. The third hears the first's result again.
    transport = faulty("drop", "timeout")

    issued, reference = await issue_through(connect, partner, transport)

    assert transport.forwarded == 3
    assert waits == BACKOFF[:2]
    assert await count_transactions(db, merchant_id=partner.merchant_id, reference=reference) == 1
    assert len(idempotency_keys(transport)) == 1
    direct = connect(partner)
    assert await direct.get_transaction(transaction_id=issued.transaction_id) == issued


async def test_503_and_429_wait_as_retry_after_says(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    transport = faulty("503", "429:2")

    _, reference = await issue_through(connect, partner, transport)

    assert len(transport.requests) == 3
    assert waits == [1.0, 2.0]
    assert await count_transactions(db, merchant_id=partner.merchant_id, reference=reference) == 1


async def test_retries_stop_after_three_and_report_the_last_failure(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    transport = faulty(*["refuse"] * 4)

    with pytest.raises(APIConnectionError) as failed:
        await issue_through(connect, partner, transport)

    assert len(transport.requests) == 4
    assert waits == BACKOFF
    assert failed.value.idempotency_key in idempotency_keys(transport)
    assert transport.forwarded == 0


async def test_a_call_that_timed_out_every_time_is_found_again_by_its_key(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    transport = faulty(*["timeout"] * 4)
    member = await connect(partner).enrol_member(external_ref=unique("card"))
    client = connect(partner, transport=transport)

    with pytest.raises(APITimeoutError) as failed:
        await client.issue(member_id=member.member_id, points=9, reference="lost")
    assert len(transport.requests) == 4
    assert waits == BACKOFF

    # The client never heard, but the exchange applied it once; the key finds out which.
    again = await client.issue(
        member_id=member.member_id,
        points=9,
        reference="lost",
        idempotency_key=failed.value.idempotency_key,
    )
    assert again.points == 9
    balance = await connect(partner).get_balance(member_id=member.member_id)
    assert balance.available == 9


async def test_503_every_time_is_reported_after_four_attempts(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    transport = faulty(*["503"] * 4)

    with pytest.raises(ServiceUnavailableError) as failed:
        await issue_through(connect, partner, transport)

    assert (failed.value.status, failed.value.code) == (503, "service_unavailable")
    assert len(transport.requests) == 4
    assert waits == [1.0, 1.0, 1.0]


async def test_a_retry_after_beyond_the_cap_is_not_waited_out(
    connect, partner: Partner, faulty, waits: Waits
):
    transport = faulty("429:120")

    with pytest.raises(RateLimitedError):
        await issue_through(connect, partner, transport)

    assert len(transport.requests) == 1
    assert waits == []


async def test_other_4xx_are_never_retried(connect, partner: Partner, faulty, waits: Waits):
    transport = faulty()
    client = connect(partner, transport=transport)
    member = await client.enrol_member(external_ref=unique("card"))
    transport.requests.clear()

    with pytest.raises(InsufficientPointsError):
        await client.redeem(member_id=member.member_id, points=1, reference=unique("r"))

    assert len(transport.requests) == 1
    assert waits == []


async def test_an_unsigned_502_from_a_proxy_is_retried(
    connect, partner: Partner, db: Database, faulty, waits: Waits
):
    transport = faulty("502-proxy")

    _, reference = await issue_through(connect, partner, transport)

    assert waits == BACKOFF[:1]
    assert await count_transactions(db, merchant_id=partner.merchant_id, reference=reference) == 1


async def test_an_unsigned_502_every_time_is_reported_as_unverified(
    connect, partner: Partner, faulty, waits: Waits
):
    transport = faulty(*["502-proxy"] * 4)

    with pytest.raises(ResponseVerificationError) as failed:
        await issue_through(connect, partner, transport)

    assert failed.value.status == 502
    assert len(transport.requests) == 4


async def test_reads_are_retried_too(connect, partner: Partner, faulty, waits: Waits):
    transport = faulty("refuse", "503")
    client = connect(partner, transport=transport)
    member = await connect(partner).enrol_member(external_ref=unique("card"))

    balance = await client.get_balance(member_id=member.member_id)

    assert balance.available == 0
    assert waits == [BACKOFF[0], 1.0]
    assert "idempotency-key" not in transport.requests[0].headers


async def test_no_retries_when_the_policy_allows_none(
    connect, partner: Partner, faulty, waits: Waits
):
    transport = faulty("refuse")

    with pytest.raises(APIConnectionError):
        await issue_through(connect, partner, transport, retry=RetryPolicy(max_retries=0))

    assert len(transport.requests) == 1
    assert waits == []
