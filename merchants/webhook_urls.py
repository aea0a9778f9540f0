"""Where a webhook may go (ADR 0022): the judgement of a webhook URL, and of the addresses its
host resolves to. Pure, but for `resolve`, which asks the system's resolver.

A webhook is a POST the exchange makes from inside its own network, to a URL a merchant chose:
pointed at the exchange's loopback, its private network, a cloud metadata service or any other
address that is not the public internet, it would be a request forgery (SSRF). So a webhook URL
is `https://` with a host and no userinfo or fragment; a host that is an IP literal, in any form
a URL parser or libc's `inet_aton` accepts (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`,
`[::ffff:127.0.0.1]`), must be a public (global unicast) address; `localhost` and `*.localhost`
are refused outright; and at delivery every address a host name resolves to must be public too,
and the connection is made to the address that was checked (settlement.webhooks.delivery).

`allow_private` (the `ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS` setting, for development and tests)
lifts the address rules, and allows plain `http://` to a loopback host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""Host name and port to the addresses a connection to them could use."""

URL_LENGTH_MAX = 2000
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK_NAMES = ("localhost",)
# Characters a URL parser may read differently from another (or from libc): refused, so that the
# URL judged here is the URL every parser sees.
_AMBIGUOUS = re.compile(r"[\s\\\x00-\x1f\x7f]")
_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


class UnsafeWebhookUrl(ValueError):
    """The URL (or an address its host resolves to) is not somewhere a webhook may go."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A judged URL's parts: the host (lower case, no brackets, no trailing dot), the port, and
    the host's address when the host is an IP literal."""

    scheme: str
    host: str
    port: int
    address: IPAddress | None


def check_url(url: str, *, allow_private: bool = False) -> WebhookTarget:
    """The URL's target if a webhook may be sent to it (its host not resolved yet); otherwise
    `UnsafeWebhookUrl` saying why."""
    if len(url) > URL_LENGTH_MAX:
        raise UnsafeWebhookUrl(f"the webhook URL is longer than {URL_LENGTH_MAX} characters")
    if _AMBIGUOUS.search(url):
        raise UnsafeWebhookUrl("the webhook URL has whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket, a port that is no number
        raise UnsafeWebhookUrl("the webhook URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeWebhookUrl("the webhook URL must be https://")
    if not host:
        raise UnsafeWebhookUrl("the webhook URL has no host")
    if "@" in parts.netloc:
        raise UnsafeWebhookUrl("the webhook URL must not have a user name or password (…@)")
    if parts.fragment or url.endswith("#"):
        raise UnsafeWebhookUrl("the webhook URL must not have a fragment (#…)")
    host = host.rstrip(".")
    if not host:
        raise UnsafeWebhookUrl("the webhook URL has no host")
    address = ip_literal(host)
    loopback = _is_loopback_name(host) or (address is not None and address.is_loopback)
    if scheme == "http" and not (allow_private and loopback):
        raise UnsafeWebhookUrl(
            "the webhook URL must be https:// (http:// only to loopback, and only where "
            "ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS is on)"
        )
    if not allow_private:
        if address is not None:
            check_address(address, host)
        elif _is_loopback_name(host):
            raise UnsafeWebhookUrl(f"the webhook URL's host {host} is this machine, not public")
        elif "." not in host:
            raise UnsafeWebhookUrl(
                f"the webhook URL's host {host} is not a fully qualified domain name"
            )
    return WebhookTarget(
        scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), address=address
    )


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form a URL parser or libc would take for one: IPv6
    (with or without brackets), dotted quads, and `inet_aton`'s decimal, octal, hex and short
    forms. None for a host name. A host whose last label is numeric but that is no address is
    refused: no domain name ends in a number, so it can only be an address in disguise."""
    bare = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    labels = bare.split(".")
    if not _INET_ATON_PART.fullmatch(labels[-1]):
        return None
    if not 1 <= len(labels) <= 4 or not all(_INET_ATON_PART.fullmatch(p) for p in labels):
        raise UnsafeWebhookUrl(f"the webhook URL's host {host} is neither a name nor an address")
    values = [int(p, 16) if p[:2].lower() == "0x" and len(p) > 2 else _aton_int(p) for p in labels]
    # inet_aton: a.b.c.d; a.b.c (c 16 bits); a.b (b 24 bits); a (32 bits).
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise UnsafeWebhookUrl(f"the webhook URL's host {host} is an address out of range")
    number = last
    for position, value in enumerate(head):
        number |= value << (24 - 8 * position)
    return ipaddress.IPv4Address(number)


def _aton_int(part: str) -> int:
    if part.lower() == "0x":
        return 0
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def _is_loopback_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


def is_public(address: IPAddress) -> bool:
    """A global unicast address: not private, loopback, link-local, multicast, reserved,
    unspecified or shared (CGNAT, 100.64.0.0/10); for IPv6, neither scoped nor carrying an IPv4
    address (mapped, 6to4, Teredo, NAT64) that is not public itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and not is_public(inner) for inner in embedded):
            return False
    elif address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_address(address: IPAddress, host: str, *, resolved: bool = False) -> None:
    """Refuse an address a webhook may not be sent to; `host` names it in the message."""
    if is_public(address):
        return
    if resolved:
        said = f"{host} resolves to {address}, which"
    else:
        said = host if host == str(address) else f"{host} (that is {address})"
    raise UnsafeWebhookUrl(
        f"the webhook URL's host {said} is not a public address "
        "(loopback, private, link-local, shared, multicast or reserved)"
    )


def check_addresses(
    addresses: Sequence[IPAddress], target: WebhookTarget, *, allow_private: bool = False
) -> IPAddress:
    """The address to connect to (the first), if every one of them may be sent to; a host that
    resolves to one public and one private address is refused, whichever a connection would use.
    With `allow_private`, any address, but plain http:// only to loopback ones."""
    if not addresses:
        raise UnsafeWebhookUrl(f"the webhook URL's host {target.host} resolves to no address")
    for address in addresses:
        if not allow_private:
            check_address(address, target.host, resolved=target.address is None)
        elif target.scheme == "http" and not address.is_loopback:
            raise UnsafeWebhookUrl(
                f"the webhook URL is http:// but its host {target.host} resolves to {address}, "
                "not loopback"
            )
    return addresses[0]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses the system's resolver gives for `host` (getaddrinfo, TCP), in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found
