"""Refusals as the live exchange gives them, each raised as its own exception class with what the
caller needs: status, code, detail, request id. (Every code's class is pinned in
test_client_units.py; these are the ones a real partner meets first.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx2
import pytest

from core.database import Database
from merchants import service as merchants
from sdk import (
    KeyRevokedError,
    LiabilityLimitExceededError,
    MerchantSuspendedError,
    PayloadTooLargeError,
    ReplayedRequestError,
    SignatureExpiredError,
    UnknownKeyError,
)
from tests.factories import unique
from tests.sdk.conftest import ApiFactory, Partner, Waits, make_partner


class SendsTwice(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Sends each request twice, byte for byte (someone replaying it), and answers the second."""

    def __init__(self) -> None:
        self._sync, self._async = httpx2.HTTPTransport(), httpx2.AsyncHTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != "/v1/exchange-keys":
            self._sync.handle_request(request).read()
        response = self._sync.handle_request(request)
        response.read()
        return response

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != "/v1/exchange-keys":
            await (await self._async.handle_async_request(request)).aread()
        response = await self._async.handle_async_request(request)
        await response.aread()
        return response

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


async def test_a_suspended_merchant_is_refused(connect: ApiFactory, db: Database, waits: Waits):
    partner = await make_partner(db)
    api = connect(partner)
    await merchants.suspend(db, partner.merchant_id, datetime.now(UTC))

    with pytest.raises(MerchantSuspendedError) as refused:
        await api.enrol_member(external_ref=unique("card"))

    assert (refused.value.status, refused.value.code) == (403, "merchant_suspended")
    assert refused.value.request_id
    assert waits == []


async def test_a_revoked_key_is_refused(connect: ApiFactory, db: Database):
    partner = await make_partner(db)
    await merchants.revoke_key(
        db, merchant_id=partner.merchant_id, key_id=partner.key_id, now=datetime.now(UTC)
    )

    with pytest.raises(KeyRevokedError) as refused:
        await connect(partner).list_transactions()

    assert refused.value.status == 401


async def test_an_unregistered_key_is_refused(connect: ApiFactory, partner: Partner):
    stranger = Partner(partner.merchant_id, "key_never_registered", partner.private_key)

    with pytest.raises(UnknownKeyError) as refused:
        await connect(stranger).list_transactions()

    assert refused.value.status == 401


async def test_an_issuer_over_its_liability_limit_is_refused(connect: ApiFactory, db: Database):
    api = connect(await make_partner(db, liability_limit=1_000))
    member = await api.enrol_member(external_ref=unique("card"))

    with pytest.raises(LiabilityLimitExceededError):
        await api.issue(member_id=member.member_id, points=10**9, reference=unique("r"))

    assert (await api.get_balance(member_id=member.member_id)).available == 0


async def test_a_body_over_the_limit_is_refused(connect: ApiFactory, partner: Partner):
    api = connect(partner)

    with pytest.raises(PayloadTooLargeError):
        await api.enrol_member(external_ref="x" * (1024 * 1024 + 1))


async def test_a_replayed_request_is_refused(connect: ApiFactory, partner: Partner):
    api = connect(partner, transport=SendsTwice())

    with pytest.raises(ReplayedRequestError) as refused:
        await api.list_transactions()

    assert refused.value.code == "replayed_request"


async def test_a_clock_far_behind_gets_signature_expired(connect: ApiFactory, partner: Partner):
    # With the clock this far off the client cannot check the answer's age either, so checking is
    # off here: the point is which exception the exchange's refusal becomes.
    api = connect(partner, clock=lambda: time.time() - 1_000, verify_responses=False)

    with pytest.raises(SignatureExpiredError):
        await api.list_transactions()
