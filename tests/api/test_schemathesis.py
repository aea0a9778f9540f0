"""RELIABILITY A1: Schemathesis over the app's OpenAPI document, against the app in-process (ASGI),
on the real database, with every generated request signed as a partner signs it.

- `test_signed_operations`: all phases Schemathesis runs under pytest (explicit examples, coverage,
  fuzzing; positive and negative data) and all its checks (no 5xx, documented status codes,
  content types, headers and bodies, negative data refused, valid data accepted, `ignored_auth`,
  ...). `SCHEMATHESIS_EXAMPLES` examples per operation: 100 in CI (the default), 1,000 for a
  release (`SCHEMATHESIS_EXAMPLES=1000`).
- `test_stateful_workflows`: the stateful phase, chaining operations by the links Schemathesis
  infers (enrol → issue → hold → capture → reverse, ...), with the same checks.
- `test_unsigned_requests_are_refused`: the same operations with signing removed: every /v1/
  operation but GET /v1/exchange-keys answers 401 problem+json, as documented.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import positive_data_acceptance

from core.clock import FixedClock
from core.database import Database
from core.limits import REQUEST_BODY_BYTES_MAX
from exchange.api.problems import PROBLEM_CONTENT_TYPE
from exchange.api.ratelimit import RateLimiter
from sdk.signing import (
    content_digest,
    request_components,
    request_covered_components,
    serialize_signature_params,
    sign_ed25519,
    signature_base,
)
from server.main import create_app
from tests.api.conftest import AUTHORITY, Partner, make_partner, signed_headers
from tests.factories import unique

BASE_URL = f"http://{AUTHORITY}"
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "100"))
"""Examples per operation (RELIABILITY A1: CI 100, Release 1,000)."""
STATEFUL_SCENARIOS = max(10, EXAMPLES // 2)
UNSIGNED_EXAMPLES = max(10, EXAMPLES // 5)
CLOCK = FixedClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
SIGN_ME = "sign-me"
"""What the auth provider puts in `Signature`: the signing hook replaces it with a signature."""
VALID_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")
AUTHENTICATION_CODES = {
    "signature_missing",
    "signature_invalid",
    "signature_expired",
    "unknown_key",
    "key_revoked",
    "replayed_request",
}
# Schema-valid requests the exchange rightly refuses (422) for a reason the document can give only
# in words, by operation: the offending fields it may name.
REFUSED_FOR_MEANING = {
    ("POST", "/v1/issuances"): {"expires_at"},  # must be in the future
    ("GET", "/v1/transactions"): {"cursor"},  # opaque: only a `next_cursor` handed out is valid
    ("GET", "/v1/statements"): {"cursor", "period"},  # the same; and a period is a real date
    # only issuances and redemptions can be reversed (a reversal, say, cannot)
    ("POST", "/v1/transactions/{transaction_id}/reversals"): {"transaction_id"},
}
HYPOTHESIS = {
    "deadline": None,  # a request runs through the ledger on a real database
    "suppress_health_check": [HealthCheck.too_slow],
}

# Schemathesis' default expectations, plus 413: a body over the documented 1 MiB limit is refused
# whatever it holds (a batch of 1,000 generated operations can outgrow it).
POSITIVE_STATUSES = "2xx 3xx 401 403 404 409 413 429 5xx".split()
NEGATIVE_STATUSES = "400 401 403 404 405 406 409 413 415 422 428 429 5xx".split()
CONFIG = {
    "checks": {
        "positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES},
        "negative_data_rejection": {"expected-statuses": NEGATIVE_STATUSES},
    }
}


class AppOnItsLoop:
    """The app under test, as Schemathesis calls it (ASGI, in-process).

    Schemathesis runs an ASGI app on an event loop of its own, in a thread of its own, and an
    asyncpg pool works only on the loop that made it (the session's `db` fixture pool fails there
    with "another operation is in progress"). So the app's database is connected at the app's
    lifespan startup, on that loop: `create_app(database=..., clock=CLOCK)` on the session's test
    database, which the `app_database` fixture names.
    """

    def __init__(self) -> None:
        self.database_url: str | None = None
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        await self.app(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        assert self.database_url is not None, "the app_database fixture names the database"
        database = await Database.connect(self.database_url, min_size=1, max_size=10)
        try:
            app = create_app(database=database, clock=CLOCK)
            async with app.router.lifespan_context(app):
                # Rate limits have their own tests (A4); here they would only hide the API.
                app.state.rate_limiter = RateLimiter(rate_per_s=1e9, burst=10**9)
                self.app = app
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        finally:
            await database.close()
        await send({"type": "lifespan.shutdown.complete"})


class SignAsThePartner(requests.auth.AuthBase):
    """The signing hook: signs each prepared request, byte for byte as it is sent, exactly as
    tests/api/conftest.py's `signed_headers` does (sdk.signing.sign_request, a fresh nonce, Host
    `exchange.test`, `created` from the app's clock).

    It signs only the requests Schemathesis authenticated (the `Signature: sign-me` placeholder of
    the auth provider below): requests whose auth Schemathesis removed or spoiled on purpose, as
    `ignored_auth` does, go as they are. A valid generated Idempotency-Key is replaced by a fresh
    one, so that each example reaches the ledger instead of replaying or refusing the one before
    it (`idempotency_key_reused`); invalid ones (empty, too long, not visible ASCII) stay.
    """

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.partner: Partner | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.headers.get("Signature") != SIGN_ME:
            return request
        del request.headers["Signature"]
        assert self.partner is not None, "the signer fixture names the partner"
        assert request.method is not None
        assert request.url is not None
        url = urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key is not None and VALID_IDEMPOTENCY_KEY.fullmatch(key):
            request.headers["Idempotency-Key"] = unique("key")
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            if request.method == "POST" and "idempotency-key" not in headers:
                signed = self._sign_without_idempotency_key(request.method, url, body, headers)
            else:
                signed = signed_headers(
                    self.partner,
                    self.clock,
                    method=request.method,
                    path=url.path,
                    query=url.query or None,
                    body=body,
                    headers=headers,
                )
        except ValueError:
            # A generated header value that a signature base cannot carry (RFC 9421 §2.5: ASCII,
            # one line): no client can sign this request, so it goes unsigned.
            return request
        for name, value in signed.items():
            request.headers[name] = value
        return request

    def _sign_without_idempotency_key(
        self, method: str, url: SplitResult, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        """A POST whose client forgot the key (Schemathesis drops required headers on purpose):
        everything else covered and signed, as the SDK would if it let the key go."""
        assert self.partner is not None
        headers = {"host": AUTHORITY, **headers}
        if body:
            headers["content-digest"] = content_digest(body)
        query = url.query or None
        covered = [
            name
            for name in request_covered_components(method=method, query=query, body=body)
            if name != "idempotency-key"
        ]
        lines = request_components(
            covered=covered,
            method=method,
            authority=AUTHORITY,
            path=url.path,
            query=query,
            headers=headers,
        )
        params = serialize_signature_params(
            [identifier for identifier, _ in lines],
            created=int(self.clock.now().timestamp()),
            keyid=self.partner.key_id,
            nonce=uuid.uuid4().hex,
        )
        signature = sign_ed25519(signature_base(lines, params), self.partner.private_key)
        return {
            **headers,
            "Signature-Input": f"sig1={params}",
            "Signature": f"sig1=:{base64.b64encode(signature).decode('ascii')}:",
        }


def load_schema() -> Any:
    loaded = schemathesis.openapi.from_dict(
        create_app().openapi(), config=SchemathesisConfig.from_dict(CONFIG)
    )
    loaded.app = APP
    return loaded


APP = AppOnItsLoop()
SIGNER = SignAsThePartner(CLOCK)
schema = load_schema()
unsigned_schema = load_schema().exclude(path="/v1/exchange-keys")


@schema.auth()
class SignedByThePartner:
    """Schemathesis' side of the signing: marks the requests it authenticates."""

    def get(self, case: Any, context: Any) -> str:
        return SIGN_ME

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Signature": data}


def positive_data_acceptance_in_words(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' `positive_data_acceptance`, but for the 422 refusals in REFUSED_FOR_MEANING,
    which JSON Schema cannot state (a time in the future, a cursor this API handed out)."""
    allowed = REFUSED_FOR_MEANING.get((case.method.upper(), case.path), set())
    if response.status_code == 422 and allowed:
        fields = response.json().get("fields") or {}
        if fields and set(fields) <= allowed:
            return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


CHECKS: dict[str, Any] = {
    "excluded_checks": [positive_data_acceptance],
    "additional_checks": [positive_data_acceptance_in_words],
}


def whole_floats_as_integers(value: Any) -> Any:
    """`120.0` as `120`. JSON Schema counts 120.0 as an integer and Schemathesis sends it so, but
    PROTOCOL.md wants points as JSON integers and the exchange refuses 120.0 (422) on purpose; the
    document says so in words, which is all JSON Schema allows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: whole_floats_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_floats_as_integers(item) for item in value]
    return value


def has_whole_floats(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(has_whole_floats(item) for item in value.values())
    if isinstance(value, list):
        return any(has_whole_floats(item) for item in value)
    return False


def prepare(case: Any) -> None:
    # Only when there is something to change: an assignment makes Schemathesis revalidate the case.
    if case.media_type == "application/json" and has_whole_floats(case.body):
        case.body = whole_floats_as_integers(case.body)


def signing_session(signer: SignAsThePartner = SIGNER) -> requests.Session:
    session = requests.Session()
    session.auth = signer
    return session


def new_partner() -> Partner:
    """A merchant and key of its own, made on a connection of its own (the session's pool is
    bound to pytest's event loop, which does not run inside a synchronous test)."""
    assert APP.database_url is not None

    async def make(url: str) -> Partner:
        database = await Database.connect(url, min_size=1, max_size=1)
        try:
            return await make_partner(database)
        finally:
            await database.close()

    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, make(APP.database_url)).result()


@pytest.fixture(scope="module", autouse=True)
def app_database(database_url: str) -> Iterator[None]:
    APP.database_url = database_url
    yield
    shutdown_lifespans()
    APP.app = None


@pytest.fixture(scope="module")
async def signer(db: Any) -> SignAsThePartner:
    """The partner whose key signs every request: a real merchant, a key made here."""
    SIGNER.partner = await make_partner(db)
    return SIGNER


@schema.parametrize()
@settings(max_examples=EXAMPLES, **HYPOTHESIS)
def test_signed_operations(case: Any, signer: SignAsThePartner) -> None:
    prepare(case)
    case.call_and_validate(base_url=BASE_URL, session=signing_session(), **CHECKS)


class SignedWorkflow(schema.as_state_machine()):  # type: ignore[misc]
    """Each scenario runs as a merchant of its own and enrols members of its own, so that what it
    sees does not depend on the scenarios before it on the same ledger: Hypothesis needs the same
    steps to give the same responses (else it reports a flaky strategy, not the failure)."""

    def setup(self) -> None:
        signer = SignAsThePartner(CLOCK)
        signer.partner = new_partner()
        self.session = signing_session(signer)

    def before_call(self, case: Any) -> None:
        prepare(case)
        # A reference enrolled before answers 200 instead of 201.
        if case.path == "/v1/members" and isinstance(case.body, dict):
            if isinstance(case.body.get("external_ref"), str):
                case.body = {**case.body, "external_ref": unique("card")}

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"base_url": BASE_URL, "session": self.session}

    def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        case.validate_response(
            response, transport_kwargs=kwargs or None, recorder=self.recorder, **CHECKS
        )


def test_stateful_workflows() -> None:
    SignedWorkflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=20,
            # No shrinking: every step is a request through the ledger, and shrinking a scenario
            # of 20 replays it hundreds of times (minutes); the failing steps are shown as run.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            **HYPOTHESIS,
        )
    )


@unsigned_schema.parametrize()
@settings(max_examples=UNSIGNED_EXAMPLES, **HYPOTHESIS)
def test_unsigned_requests_are_refused(case: Any) -> None:
    prepare(case)
    response = case.call(base_url=BASE_URL)
    # The body limit is checked before the signature: a body over it is refused unread.
    sent = response.request.body or b""
    expected = 413 if len(sent) > REQUEST_BODY_BYTES_MAX else 401
    assert response.status_code == expected, response.text
    assert response.headers["content-type"][0] == PROBLEM_CONTENT_TYPE
    assert response.status_code == 413 or response.json()["code"] in AUTHENTICATION_CODES
    case.validate_response(response, **CHECKS)
