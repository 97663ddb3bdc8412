"""Which network addresses a user-supplied URL may make Notefly reach (SSRF).

Webhook, push and Apprise targets are URLs that users type; Notefly then connects to them
from inside its own network. So an address that is not on the public internet is
refused: loopback, private ranges, link-local (the cloud metadata service at
169.254.169.254 among them), shared address space (CGNAT), multicast, reserved and
unspecified addresses, and the IPv6 forms that carry such an IPv4 address (IPv4-mapped,
6to4, Teredo, NAT64). ``NOTEFLY_ALLOW_PRIVATE_TARGETS=1`` lifts the rule (an intranet
deployment); the per-provider ``ALLOW_HTTP`` settings, meant for tests and local
development, allow loopback only.

A name is judged by every address it resolves to: one private address among public ones
is enough to refuse it. The check at registration is there to tell the user at once; the
one that protects is made at send time on the address actually connected to
(``channels._targets``), since a name may resolve differently by then (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from notefly.config import Settings
from notefly.errors import InvalidInput
from notefly.provider_settings import ProviderSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> every address; raises OSError when the name does not resolve
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

ALLOW_PRIVATE_SETTING = "NOTEFLY_ALLOW_PRIVATE_TARGETS"
RESOLVE_SECONDS = 5.0
# NAT64 (RFC 6052): the well-known prefix carries an IPv4 address in its last 32 bits;
# the local-use prefix (RFC 8215) reaches whatever the local translator decides.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, 6to4, Teredo, NAT64)."""
    found = [
        inner
        for inner in (address.ipv4_mapped, address.sixtofour, *(address.teredo or ()))
        if inner is not None
    ]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def problem(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or ``None`` for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return "NAT64 local-use"
        # IPv4-mapped and NAT64 addresses are only another spelling of the IPv4 one (and
        # their prefixes sit inside ::/8, which Python files as reserved).
        if address.ipv4_mapped is not None:
            return problem(address.ipv4_mapped)
        if address in _NAT64:
            return problem(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded_ipv4(address):
            found = problem(inner)
            if found is not None:
                return found
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, applies in checks if applies), None)


@dataclass(frozen=True, slots=True)
class TargetRules:
    """What the operator allows besides public addresses."""

    allow_loopback: bool = False
    allow_private: bool = False

    def refusal(self, address: IPAddress) -> str | None:
        """Why this address may not be reached, or ``None`` when it may."""
        if self.allow_private:
            return None
        kind = problem(address)
        if kind == "loopback" and self.allow_loopback:
            return None
        return kind

    def first_refused(self, addresses: Iterable[IPAddress]) -> tuple[IPAddress, str] | None:
        for address in addresses:
            kind = self.refusal(address)
            if kind is not None:
                return address, kind
        return None


def allows_private(settings: Settings) -> bool:
    """``NOTEFLY_ALLOW_PRIVATE_TARGETS``: may targets be on any network at all?"""
    return ProviderSettings(settings, "ALLOW", "user-supplied targets").flag("PRIVATE_TARGETS")


def literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, with the event loop's resolver.

    Raises:
        OSError: the name does not resolve.
    """
    found = literal(host)
    if found is not None:
        return [found]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def url_host(url: str) -> tuple[str, int] | None:
    """The host and port an http(s) URL names, or ``None`` when it names none."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or (443 if parts.scheme.endswith("s") else 80)


async def check_host(
    host: str,
    port: int,
    rules: TargetRules,
    field_name: str = "url",
    resolver: Resolver = resolve,
) -> None:
    """Refuse a host that resolves to any address the rules do not allow.

    A name that does not resolve (yet) is let through: there is nothing to check, and
    nothing can be sent to it either until it resolves, when the send-time check runs.

    Raises:
        InvalidInput: naming the field, the host and the address refused.
    """
    if rules.allow_private:
        return
    try:
        addresses = await asyncio.wait_for(resolver(host, port), RESOLVE_SECONDS)
    except (OSError, TimeoutError, UnicodeError, ValueError):
        return
    refused = rules.first_refused(addresses)
    if refused is None:
        return
    address, kind = refused
    said = host if literal(host) is not None else f"{host} resolves to {address}, which"
    problem_text = (
        f"{said} is a {kind} address: only public addresses can be reached"
        f" (the operator can allow others with {ALLOW_PRIVATE_SETTING}=1)"
    )
    raise InvalidInput(
        f"{field_name}: {problem_text}",
        code="validation_failed",
        details=[{"field": field_name, "problem": problem_text}],
    )


async def check_url_target(
    url: str, rules: TargetRules, field_name: str = "url", resolver: Resolver = resolve
) -> None:
    """``check_host`` for the host of an http(s) URL."""
    target = url_host(url)
    if target is not None:
        await check_host(*target, rules, field_name=field_name, resolver=resolver)
