"""Where webhooks may go, at delivery (ADR 0022, Reliability A5): every attempt judges the URL,
resolves its host and checks every address, and sends to the address it checked; a redirect is
not followed. The network is a recording transport and the DNS a scripted resolver, except in the
last tests, which go to the loopback receiver over real sockets with the development setting on.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator, Sequence

import httpx2
import pytest

from core.config import get_settings
from sdk.webhooks import verify_webhook
from settlement.webhooks import delivery, limits
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_delivery import attempts, events, set_webhook, settle_day_one

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PUBLIC = ipaddress.ip_address("93.184.215.14")
HOST = "hooks.tea.example"
HOOK = f"https://{HOST}/alliance?till=7"


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


class ScriptedResolver:
    """Answers each lookup with the next of `answers` (the last one again once they run out),
    and remembers what it was asked."""

    def __init__(self, *answers: Sequence[IPAddress] | OSError) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.asked.append((host, port))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return answer


class Network:
    """A transport standing in for the network: it records every request it is given."""

    def __init__(self, answer: Callable[[httpx2.Request], httpx2.Response] | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.answer = answer or (lambda request: httpx2.Response(200, text="ok"))
        self.transport = httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)

    def hosts(self) -> list[str]:
        return [request.url.host for request in self.requests]


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The production setting: ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS off."""
    monkeypatch.setenv("ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def one_event_to(db, ledger, clock, receiver: Receiver, url: str) -> str:
    """A settled statement whose event is due, for a merchant whose webhook URL is `url` (set
    in the database, as a URL registered before the rules were would be)."""
    await settle_day_one(db, ledger, clock, receiver, hooked=1)
    [event] = await events(db)
    await set_webhook(db, str(event["merchant_id"]), url)
    return str(event["event_id"])


async def test_a_public_host_is_sent_to_at_the_address_checked(
    strict, alliance_db, alliance_ledger, day_clock, receiver
):
    event_id = await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, HOOK)
    resolver, network = ScriptedResolver([PUBLIC]), Network()

    report = await delivery.deliver_due(
        alliance_db, day_clock, transport=network.transport, resolver=resolver
    )

    assert [a.outcome for a in report.attempts] == ["delivered"]
    assert resolver.asked == [(HOST, 443)]
    [request] = network.requests
    assert request.url.host == str(PUBLIC)
    assert request.url.scheme == "https"
    assert request.headers["host"] == HOST
    assert request.extensions["sni_hostname"] == HOST  # the certificate is checked against it
    # Signed for the URL the merchant registered, and verifiable there.
    verified = verify_webhook(
        method="POST",
        url=HOOK,
        headers=dict(request.headers),
        body=request.content,
        public_keys=receiver.keys,
        now=day_clock.now().timestamp(),
    )
    assert verified.idempotency_key == event_id


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.7"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["100.64.0.1"],
        ["192.168.1.1"],
        ["::1"],
        ["::ffff:10.0.0.1"],
        ["fd00::5"],
        ["93.184.215.14", "10.0.0.7"],  # one private address among public ones is enough
    ],
)
async def test_a_host_resolving_to_a_private_address_is_refused_and_nothing_is_sent(
    strict, alliance_db, alliance_ledger, day_clock, receiver, addresses
):
    event_id = await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, HOOK)
    resolver, network = ScriptedResolver([ip(a) for a in addresses]), Network()

    [attempt] = (
        await delivery.deliver_due(
            alliance_db, day_clock, transport=network.transport, resolver=resolver
        )
    ).attempts

    assert network.requests == []
    assert attempt.outcome == "retrying"  # DNS may be put right: tried again later
    assert attempt.status_code is None
    assert attempt.error is not None
    assert attempt.error.startswith("refused, not sent:")
    assert f"{HOST} resolves to" in attempt.error
    assert "not a public address" in attempt.error
    [tried] = await attempts(alliance_db, event_id)
    assert (tried["status_code"], tried["error"]) == (None, attempt.error)


async def test_a_rebinding_resolver_gets_no_request_to_a_private_address(
    strict, alliance_db, alliance_ledger, day_clock, receiver
):
    """Public when checked, private next: the request goes to the address checked, and the next
    attempt, resolving again, is refused before anything is sent."""
    await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, HOOK)
    resolver = ScriptedResolver([PUBLIC], [ip("127.0.0.1")])
    network = Network(lambda request: httpx2.Response(503))

    [first] = (
        await delivery.deliver_due(
            alliance_db, day_clock, transport=network.transport, resolver=resolver
        )
    ).attempts
    assert (first.outcome, first.status_code) == ("retrying", 503)
    assert first.next_attempt_at is not None
    day_clock.set(first.next_attempt_at)
    [second] = (
        await delivery.deliver_due(
            alliance_db, day_clock, transport=network.transport, resolver=resolver
        )
    ).attempts

    assert network.hosts() == [str(PUBLIC)]  # one request, to the public address
    assert resolver.asked == [(HOST, 443), (HOST, 443)]  # once per attempt, nothing in between
    assert second.outcome == "retrying"
    assert second.error is not None
    assert "resolves to 127.0.0.1" in second.error


async def test_a_redirect_to_a_private_address_is_not_followed(
    strict, alliance_db, alliance_ledger, day_clock, receiver
):
    await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, HOOK)
    inside = f"http://127.0.0.1:{receiver.port}/hooks/inside"
    network = Network(lambda request: httpx2.Response(302, headers={"Location": inside}))

    [attempt] = (
        await delivery.deliver_due(
            alliance_db, day_clock, transport=network.transport, resolver=ScriptedResolver([PUBLIC])
        )
    ).attempts

    assert network.hosts() == [str(PUBLIC)]
    assert (attempt.outcome, attempt.status_code) == ("retrying", 302)
    assert receiver.received == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hooks", "not a public address"),
        ("https://2130706433/hooks", "(that is 127.0.0.1)"),
        ("https://0x7f.1/hooks", "(that is 127.0.0.1)"),
        ("https://[::ffff:169.254.169.254]/latest", "not a public address"),
        ("https://localhost/hooks", "is this machine"),
        ("http://hooks.tea.example/hooks", "must be https://"),
        ("https://good@hooks.tea.example/hooks", "user name or password"),
        ("https://hooks.tea.example@127.0.0.1/hooks", "user name or password"),
    ],
)
async def test_a_url_refused_outright_is_given_up_without_a_lookup_or_a_request(
    strict, alliance_db, alliance_ledger, day_clock, receiver, url, reason
):
    event_id = await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, url)
    resolver, network = ScriptedResolver([PUBLIC]), Network()

    [attempt] = (
        await delivery.deliver_due(
            alliance_db, day_clock, transport=network.transport, resolver=resolver
        )
    ).attempts

    assert (network.requests, resolver.asked) == ([], [])
    assert attempt.outcome == "failed"  # the URL cannot get better by itself
    assert attempt.error is not None
    assert attempt.error.startswith("refused, not sent:")
    assert reason in attempt.error
    [stored] = await events(alliance_db)
    assert (stored["event_id"], stored["status"]) == (event_id, "failed")


async def test_a_host_that_does_not_resolve_is_retried(
    strict, alliance_db, alliance_ledger, day_clock, receiver
):
    await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, HOOK)
    resolver = ScriptedResolver(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    network = Network()

    [attempt] = (
        await delivery.deliver_due(
            alliance_db, day_clock, transport=network.transport, resolver=resolver
        )
    ).attempts

    assert network.requests == []
    assert attempt.outcome == "retrying"
    assert attempt.error is not None
    assert f"cannot resolve {HOST}" in attempt.error
    assert len(attempt.error) <= limits.ERROR_CHARS


# With ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS on (this package's default), over real sockets.


async def test_with_the_development_setting_a_loopback_name_is_delivered_to_its_checked_address(
    alliance_db, alliance_ledger, day_clock, receiver
):
    """The name `localhost` goes to the address the resolver gave and was checked, with
    `localhost:port` for Host: the receiver verifies the signature for the URL as registered."""
    url = f"http://localhost:{receiver.port}/hooks/named?till=7"
    await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, url)
    resolver = ScriptedResolver([ip("127.0.0.1")])

    [attempt] = (await delivery.deliver_due(alliance_db, day_clock, resolver=resolver)).attempts

    assert attempt.outcome == "delivered", attempt.error
    assert resolver.asked == [("localhost", receiver.port)]
    assert receiver.refused == []
    [received] = receiver.received
    assert received.url == url


async def test_the_connection_goes_where_the_resolver_said_not_where_the_system_would(
    alliance_db, alliance_ledger, day_clock, receiver
):
    """Pinning over real sockets: the system resolves `localhost` to 127.0.0.1, where the
    receiver listens; the resolver checked says 127.0.0.2, where nothing does. The connection is
    refused: it went to 127.0.0.2."""
    url = f"http://localhost:{receiver.port}/hooks/named"
    await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, url)

    [attempt] = (
        await delivery.deliver_due(
            alliance_db, day_clock, resolver=ScriptedResolver([ip("127.0.0.2")])
        )
    ).attempts

    assert attempt.outcome == "retrying"
    assert attempt.error is not None
    assert "ConnectError" in attempt.error
    assert receiver.received == []


async def test_with_the_development_setting_plain_http_still_goes_only_to_loopback(
    alliance_db, alliance_ledger, day_clock, receiver
):
    url = f"http://localhost:{receiver.port}/hooks/named"
    await one_event_to(alliance_db, alliance_ledger, day_clock, receiver, url)
    network = Network()

    [attempt] = (
        await delivery.deliver_due(
            alliance_db,
            day_clock,
            transport=network.transport,
            resolver=ScriptedResolver([ip("10.0.0.7")]),
        )
    ).attempts

    assert network.requests == []
    assert attempt.error is not None
    assert "not loopback" in attempt.error


async def test_no_connection_is_reused_for_another_request(
    alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    """Two names at one address: the second request gets a connection of its own, as a TLS
    session verified for one name must not carry a request for another."""
    monkeypatch.setattr(limits, "CLAIM_BATCH", 1)  # one after the other, in one client
    merchants, _ = await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=2)
    named = f"http://localhost:{receiver.port}/hooks/{merchants[0].merchant_id}?till=7"
    await set_webhook(alliance_db, merchants[0].merchant_id, named)

    report = await delivery.deliver_due(
        alliance_db, day_clock, resolver=ScriptedResolver([ip("127.0.0.1")])
    )

    assert report.delivered == 2
    assert sorted(d.url for d in receiver.received) == sorted(
        [named, receiver.url(merchants[1].merchant_id)]
    )
    assert len(set(receiver.peers)) == 2, receiver.peers
