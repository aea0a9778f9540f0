"""A forged or altered answer is refused: the client checks every /v1/ answer against the keys the
exchange publishes, on by default. The live exchange answers; a transport in between alters what
comes back, as someone on the path could."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.database import Database
from exchange.exchange_keys import ExchangeKey
from sdk import ResponseVerificationError
from sdk.signing import content_digest, sign_response
from tests.factories import unique
from tests.sdk.conftest import ApiFactory, Partner, Waits, count_transactions, signed_response

Tamper = Callable[[httpx2.Request, httpx2.Response], httpx2.Response]


class TamperingTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Forwards to the exchange, then hands `tamper` each answer (but the keys) to alter."""

    def __init__(self, tamper: Tamper) -> None:
        self.tamper = tamper
        self.key_fetches = 0
        self._sync, self._async = httpx2.HTTPTransport(), httpx2.AsyncHTTPTransport()

    def _alter(self, request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        if request.url.path == "/v1/exchange-keys":
            self.key_fetches += 1
            return response
        return self.tamper(request, response)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self._sync.handle_request(request)
        response.read()
        return self._alter(request, response)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._async.handle_async_request(request)
        await response.aread()
        return self._alter(request, response)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


def replaced(response: httpx2.Response, *, content: bytes | None = None, **headers: str):
    fields = dict(response.headers.items())
    fields.pop("content-length", None)
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    return httpx2.Response(
        response.status_code,
        headers=fields,
        content=response.content if content is None else content,
    )


def more_points(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
    return replaced(response, content=response.content.replace(b'"points":25', b'"points":2500'))


def more_points_with_a_fresh_digest(request, response):
    body = response.content.replace(b'"points":25', b'"points":2500')
    return replaced(response, content=body, content_digest=content_digest(body))


def _forged_by(key_id: str) -> Tamper:
    """Re-signed by an attacker's own key, claiming to be `key_id`."""
    attacker = Ed25519PrivateKey.generate()

    def forge(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        body = response.content.replace(b'"points":25', b'"points":2500')
        digest = content_digest(body)
        signature = sign_response(
            status=response.status_code,
            content_digest=digest,
            request_method=request.method,
            request_path=request.url.path,
            key_id=key_id,
            private_key=attacker,
            created=int(datetime.now(UTC).timestamp()),
        )
        return replaced(response, content=body, content_digest=digest, **_fields(signature))

    return forge


def _fields(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower().replace("-", "_"): value for name, value in headers.items()}


def unsigned(request, response):
    fields = {k: v for k, v in response.headers.items() if not k.startswith("signature")}
    return httpx2.Response(response.status_code, headers=fields, content=response.content)


def status_changed(request, response):
    return httpx2.Response(200, headers=dict(response.headers.items()), content=response.content)


@pytest.fixture
async def member_id(connect: ApiFactory, partner: Partner) -> str:
    member = await connect(partner).enrol_member(external_ref=unique("card"))
    return str(member.member_id)


async def issue_through(connect, partner, tamper: Tamper, member_id: str):
    transport = TamperingTransport(tamper)
    client = connect(partner, transport=transport)
    reference = unique("receipt")
    with pytest.raises(ResponseVerificationError) as refused:
        await client.issue(member_id=member_id, points=25, reference=reference)
    return refused.value, transport, reference


@pytest.mark.parametrize(
    "tamper",
    [more_points, more_points_with_a_fresh_digest, unsigned, status_changed],
    ids=["body-altered", "body-and-digest-altered", "signature-removed", "status-altered"],
)
async def test_an_altered_answer_is_refused(connect, partner, member_id, tamper, waits: Waits):
    refused, _, _ = await issue_through(connect, partner, tamper, member_id)

    assert refused.status in (200, 201)
    assert "not signed by the exchange" in refused.detail
    assert waits == []  # a 2xx that does not verify is final: asking again cannot fix it


async def test_an_answer_forged_under_the_exchanges_key_id_is_refused(
    connect, partner, member_id, exchange_key: ExchangeKey
):
    refused, transport, _ = await issue_through(
        connect, partner, _forged_by(exchange_key.key_id), member_id
    )

    assert "does not verify" in refused.detail
    assert transport.key_fetches == 1


async def test_an_unknown_key_id_refreshes_the_keys_once_then_refuses(connect, partner, member_id):
    forge = _forged_by("xk_forged")

    def forge_writes(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        return forge(request, response) if request.method == "POST" else response

    transport = TamperingTransport(forge_writes)
    client = connect(partner, transport=transport)
    await client.get_balance(member_id=member_id)  # genuine: the keys are fetched and kept
    assert transport.key_fetches == 1

    with pytest.raises(ResponseVerificationError) as refused:
        await client.issue(member_id=member_id, points=25, reference=unique("r"))

    # An unknown key id may be a rotation: the keys are fetched once more, and it is not there.
    assert transport.key_fetches == 2
    assert "not one the exchange publishes" in refused.value.detail
    await client.get_balance(member_id=member_id)  # the known keys still verify, no new fetch
    assert transport.key_fetches == 2


async def test_an_old_answer_replayed_is_refused(connect, partner, member_id, exchange_key):
    def stale(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        old = int(datetime.now(UTC).timestamp()) - 400
        return signed_response(
            request, exchange_key, status=response.status_code, body=response.content, created=old
        )

    refused, _, _ = await issue_through(connect, partner, stale, member_id)

    assert "time window" in refused.detail


@pytest.mark.parametrize("skew_s", [-200, 200], ids=["clock-behind", "clock-ahead"])
async def test_a_client_whose_clock_is_200_s_off_still_verifies_the_answers(
    connect, partner, skew_s: int
):
    # The clock signs the requests and checks the answers: 200 s behind the exchange, every answer
    # looks 200 s from the future, and the exchange's window forgives the requests the same way.
    client = connect(partner, clock=lambda: time.time() + skew_s)
    member = await client.enrol_member(external_ref=unique("card"))
    issued = await client.issue(member_id=member.member_id, points=25, reference=unique("r"))
    balance = await client.get_balance(member_id=member.member_id)

    assert issued.points == 25
    assert balance.available == 25


async def test_an_answer_to_another_request_is_refused(connect, partner: Partner, db: Database):
    direct = connect(partner)
    mine = await direct.enrol_member(external_ref=unique("card"))
    other = await direct.enrol_member(external_ref=unique("card"))
    await direct.issue(member_id=other.member_id, points=999, reference=unique("r"))
    other_balance: dict[str, httpx2.Response] = {}

    def swap(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        # Remember the other member's (genuine, signed) balance, and serve it for ours.
        if other.member_id in request.url.path:
            other_balance["answer"] = response
            return response
        stolen = other_balance["answer"]
        return httpx2.Response(
            stolen.status_code,
            headers=dict(stolen.headers.items()),
            content=stolen.content,
        )

    client = connect(partner, transport=TamperingTransport(swap))
    assert (await client.get_balance(member_id=other.member_id)).available == 999
    with pytest.raises(ResponseVerificationError):
        await client.get_balance(member_id=mine.member_id)


async def test_a_refused_answer_still_leaves_a_safe_way_to_the_truth(
    connect, partner: Partner, member_id: str, db: Database
):
    refused, _, reference = await issue_through(connect, partner, more_points, member_id)

    # The exchange did apply the issuance; the same key brings back its genuine answer.
    honest = connect(partner)
    issued = await honest.issue(
        member_id=member_id,
        points=25,
        reference=reference,
        idempotency_key=refused.idempotency_key,
    )
    assert issued.points == 25
    assert await count_transactions(db, merchant_id=partner.merchant_id, reference=reference) == 1


async def test_verification_can_be_turned_off(connect, partner: Partner, member_id: str):
    client = connect(partner, transport=TamperingTransport(unsigned), verify_responses=False)

    issued = await client.issue(member_id=member_id, points=25, reference=unique("r"))

    assert issued.points == 25


def test_the_signature_input_the_exchange_emits_is_what_the_client_reads(exchange, partner):
    # A guard against drift: the live exchange's header matches the strict pattern sdk.signing
    # reads (one signature, exactly the four components PROTOCOL.md names).
    answer = httpx2.post(f"{exchange.url}/v1/members", content=json.dumps({}).encode())
    components = r'\("@status" "content-digest" "@method";req "@path";req\)'
    assert re.fullmatch(
        rf'[a-z0-9]+={components};created=\d+;keyid="[^"]+"', answer.headers["signature-input"]
    )
