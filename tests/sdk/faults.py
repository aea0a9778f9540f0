"""An httpx2 transport in front of the live exchange that fails on cue, sync and async.

Each request to the exchange (other than for its keys) takes the next step of a script:

    "pass"      forward it, return the answer
    "refuse"    fail to connect: the exchange never sees it
    "drop"      forward it (the exchange applies it), then lose the answer: the connection breaks
    "timeout"   forward it (applied), then time out waiting for the answer
    "503"       answer 503 service_unavailable (signed, as the exchange would), Retry-After: 1
    "429:N"     answer 429 rate_limited with Retry-After: N
    "502-proxy" answer an unsigned 502, as a load balancer in front of the exchange would

Once the script is used up, every request passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import httpx2

from exchange.exchange_keys import ExchangeKey
from tests.sdk.conftest import signed_problem


class FaultyTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    def __init__(self, script: Iterable[str], key: ExchangeKey) -> None:
        self.script = list(script)
        self.key = key
        self.requests: list[httpx2.Request] = []
        """Every request the client sent to the exchange, whatever happened to it."""
        self.forwarded = 0
        """How many of those reached the exchange."""
        self._sync = httpx2.HTTPTransport()
        self._async = httpx2.AsyncHTTPTransport()

    def _step(self, request: httpx2.Request) -> str:
        if request.url.path == "/v1/exchange-keys":
            return "pass"
        self.requests.append(request)
        return self.script.pop(0) if self.script else "pass"

    def _before(self, step: str, request: httpx2.Request) -> httpx2.Response | None:
        """The answer made up in place of the exchange's, or None to forward."""
        if step == "refuse":
            raise httpx2.ConnectError("connection refused", request=request)
        if step == "503":
            return signed_problem(
                request,
                self.key,
                status=503,
                code="service_unavailable",
                headers={"retry-after": "1"},
            )
        if step.startswith("429:"):
            return signed_problem(
                request,
                self.key,
                status=429,
                code="rate_limited",
                headers={"retry-after": step.removeprefix("429:")},
            )
        if step == "502-proxy":
            body = json.dumps({"detail": "bad gateway"}).encode()
            return httpx2.Response(502, content=body, request=request)
        return None

    def _forwarded(self, request: httpx2.Request) -> None:
        if request.url.path != "/v1/exchange-keys":
            self.forwarded += 1

    def _after(self, step: str, request: httpx2.Request) -> None:
        if step == "drop":
            raise httpx2.RemoteProtocolError("server disconnected", request=request)
        if step == "timeout":
            raise httpx2.ReadTimeout("timed out", request=request)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        step = self._step(request)
        made_up = self._before(step, request)
        if made_up is not None:
            return made_up
        response = self._sync.handle_request(request)
        response.read()
        self._forwarded(request)
        self._after(step, request)
        return response

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        step = self._step(request)
        made_up = self._before(step, request)
        if made_up is not None:
            return made_up
        response = await self._async.handle_async_request(request)
        await response.aread()
        self._forwarded(request)
        self._after(step, request)
        return response

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()
