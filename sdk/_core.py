"""What the sync and async clients share: a logical call as data, one attempt's outcome, and
every decision that needs no I/O (building the request, reading the answer, when to retry)."""

from __future__ import annotations

import json
import random as _random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdk._auth import RequestSigner
from sdk._constants import (
    CONNECT_TIMEOUT_S,
    IDEMPOTENCY_KEY_LENGTH_MAX,
    TIMEOUT_S,
    __version__,
)
from sdk._errors import (
    AllianceError,
    APIConnectionError,
    APITimeoutError,
    ResponseVerificationError,
    UnexpectedResponseError,
    problem_error,
)
from sdk._keys import verify
from sdk._models import ExchangeKey, new_idempotency_key
from sdk._retry import RetryPolicy
from sdk.signing import UnknownResponseKeyError

T = TypeVar("T")
Params = Mapping[str, str | int | None]

USER_AGENT = f"alliance-sdk/{__version__} httpx2/{httpx2.__version__}"
DEFAULT_TIMEOUT = httpx2.Timeout(TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One logical call: everything needed to send it, as many times as it takes, and to read
    its answer. A POST's idempotency key is fixed here, once, before the first attempt."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    body: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    signed: bool = True
    content: bytes = field(init=False)

    def __post_init__(self) -> None:
        if self.method == "POST" and self.idempotency_key is None:
            object.__setattr__(self, "idempotency_key", new_idempotency_key())
        if self.idempotency_key is not None:
            check_idempotency_key(self.idempotency_key)
        # Serialised once: every attempt sends, digests and signs these exact bytes.
        content = b"" if self.body is None else _json_bytes(self.body)
        object.__setattr__(self, "content", content)


@dataclass(frozen=True, slots=True)
class Success(Generic[T]):
    """An attempt that produced the call's value."""

    value: T


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that failed, with what the retry decision needs."""

    error: AllianceError
    status: int | None = None
    """The response's status; None when there was no response."""
    retry_after: str | None = None
    transient: bool = True
    """False for failures that no retry can fix (an invalid URL, an unreadable answer)."""


Attempt = Success[T] | Failure


class ClientCore:
    """Configuration and the I/O-free half of a client."""

    def __init__(
        self,
        *,
        key_id: str,
        private_key: Ed25519PrivateKey,
        retry: RetryPolicy | None,
        verify_responses: bool,
        random: Callable[[], float] | None,
        clock: Callable[[], float] | None,
    ) -> None:
        self.clock = clock or time.time
        self.random = random or _random.random
        self.retry = retry or RetryPolicy()
        self.verify_responses = verify_responses
        self.signer = RequestSigner(key_id=key_id, private_key=private_key, clock=self.clock)
        self.exchange_keys: dict[str, bytes] | None = None

    def build_request(
        self, http: httpx2.Client | httpx2.AsyncClient, call: Call[Any]
    ) -> httpx2.Request:
        headers = {"accept": "application/json"}
        if call.content:
            headers["content-type"] = "application/json"
        if call.idempotency_key is not None:
            headers["idempotency-key"] = call.idempotency_key
        params = {
            name: str(value) for name, value in (call.params or {}).items() if value is not None
        }
        return http.build_request(
            call.method, call.path, params=params or None, content=call.content, headers=headers
        )

    def wait_before_retry(self, retry: int, attempt: Failure) -> float | None:
        """Seconds to wait before retry number `retry`, or None: the failure stands."""
        if not attempt.transient:
            return None
        return self.retry.delay_s(
            retry=retry,
            status=attempt.status,
            retry_after=attempt.retry_after,
            now=self.clock(),
            random=self.random,
        )

    def remember_keys(self, keys: list[ExchangeKey]) -> dict[str, bytes]:
        self.exchange_keys = {key.key_id: key.public_key for key in keys}
        return self.exchange_keys

    def signature_verifies(self, response: httpx2.Response, keys: Mapping[str, bytes]) -> bool:
        """Whether the exchange signed `response` with one of `keys`. False when the signing key
        is not among them (a rotation the client has not seen yet): refresh and ask again.
        Raises `ResponseVerificationError` for every other fault."""
        try:
            verify(response, public_keys=keys, now=self.clock())
        except UnknownResponseKeyError:
            return False
        return True


def verification_failure(
    error: AllianceError, response: httpx2.Response, call: Call[Any]
) -> Failure:
    """A response that did not verify still says, by its status, whether asking again may help:
    an unsigned 503 from a proxy is worth a retry (always safe), a forged 201 is not."""
    error.idempotency_key = call.idempotency_key
    if not isinstance(error, ResponseVerificationError):
        # Fetching the exchange's keys failed: the attempt proved nothing either way. Like a
        # lost answer, it is retried (an unreadable key set is not: it will not change).
        return Failure(error, transient=not isinstance(error, UnexpectedResponseError))
    return Failure(
        error, status=response.status_code, retry_after=response.headers.get("retry-after")
    )


def transport_failure(error: httpx2.TransportError, call: Call[Any]) -> Failure:
    """An attempt that got no response. Timeouts and broken connections are worth retrying (a
    POST carries its idempotency key, so a retry never applies it twice); a bad URL is not."""
    transient = isinstance(
        error, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError
    )
    cls = APITimeoutError if isinstance(error, httpx2.TimeoutException) else APIConnectionError
    failure = cls(
        f"{call.method} {call.path}: {type(error).__name__}: {error}",
        idempotency_key=call.idempotency_key,
    )
    return Failure(failure, transient=transient)


def read_response(call: Call[T], response: httpx2.Response) -> Attempt[T]:
    """The value of a 2xx, or the problem of anything else, as an attempt's outcome."""
    request_id = response.headers.get("x-request-id")
    retry_after = response.headers.get("retry-after")
    if response.is_success:
        try:
            return Success(call.parse(_json(response)))
        except UnexpectedResponseError as unreadable:
            unreadable.status, unreadable.request_id = response.status_code, request_id
            unreadable.idempotency_key = call.idempotency_key
            return Failure(unreadable, status=response.status_code, transient=False)
    try:
        body = _json(response)
    except UnexpectedResponseError:
        body = None
    problem = body if isinstance(body, Mapping) else {"detail": f"HTTP {response.status_code}"}
    refusal = problem_error(
        status=response.status_code,
        problem=problem,
        request_id=request_id,
        idempotency_key=call.idempotency_key,
    )
    return Failure(refusal, status=response.status_code, retry_after=retry_after)


def _json(response: httpx2.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise UnexpectedResponseError(
            f"the exchange's {response.status_code} answer is not JSON"
        ) from None


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def segment(value: str, name: str) -> str:
    """An id as one path segment, percent-encoded so it can only ever name one resource."""
    if not isinstance(value, str) or value in ("", ".", ".."):
        raise ValueError(f"{name} must be a non-empty id, not {value!r}")
    return quote(value, safe="")


def check_idempotency_key(key: str) -> str:
    """1–255 visible ASCII characters (PROTOCOL.md)."""
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH_MAX or not all("!" <= c <= "~" for c in key):
        raise ValueError("an idempotency key is 1 to 255 visible ASCII characters")
    return key
