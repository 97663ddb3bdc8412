"""Which addresses a user's webhook, push or Apprise URL may make Notefly reach, and the
connection backend that enforces it on the address actually connected to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import httpcore
import httpx
import pytest

from channels._targets import GuardedBackend, TargetRefused, guarded_transport
from notefly.netguard import IPAddress, TargetRules, embedded_ipv4, problem, url_host

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("fe80::1", "link-local"),
    ("100.64.0.1", "non-public"),  # shared address space (CGNAT)
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "private"),  # reserved for future use; Python files it as private
    ("fc00::1", "private"),  # unique local
    ("fd00:ec2::254", "private"),  # the metadata service over IPv6
    ("fec0::1", "site-local"),
    ("192.0.2.10", "private"),  # documentation range
    # IPv6 forms that carry an IPv4 address Notefly may not reach
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::1", "NAT64 local-use"),
    ("::127.0.0.1", "reserved"),  # IPv4-compatible (deprecated)
]
PUBLIC = [
    "93.184.215.14",
    "8.8.8.8",
    "2606:4700:4700::1111",
    "64:ff9b::808:808",
    "::ffff:8.8.8.8",
    "2002:808:808::",
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_non_public_addresses_are_named_by_kind(address: str, kind: str) -> None:
    assert problem(ipaddress.ip_address(address)) == kind
    assert TargetRules().refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert problem(ipaddress.ip_address(address)) is None


def test_embedded_ipv4_addresses_are_found_in_every_form() -> None:
    def inner(address: str) -> list[str]:
        return [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(address))]

    assert inner("::ffff:10.0.0.1") == ["10.0.0.1"]
    assert inner("2002:c0a8:101::") == ["192.168.1.1"]
    assert inner("64:ff9b::c0a8:101") == ["192.168.1.1"]
    # Teredo: the server and the (obfuscated) client address
    assert inner("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ["65.54.227.120", "192.0.2.45"]


def test_the_allow_settings_lift_what_they_say() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    private = ipaddress.ip_address("10.0.0.1")
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    assert TargetRules(allow_loopback=True).refusal(loopback) is None
    assert TargetRules(allow_loopback=True).refusal(mapped) is None
    assert TargetRules(allow_loopback=True).refusal(private) == "private"
    assert TargetRules(allow_private=True).refusal(private) is None
    found = TargetRules().first_refused([ipaddress.ip_address("8.8.8.8"), private])
    assert found == (private, "private")  # one bad address among good ones is enough


def test_the_host_and_port_of_a_url() -> None:
    assert url_host("https://hooks.example.org/n") == ("hooks.example.org", 443)
    assert url_host("http://127.0.0.1:8080/n") == ("127.0.0.1", 8080)
    assert url_host("https://[::1]:9/n") == ("::1", 9)
    assert url_host("https://host:99999/n") is None
    assert url_host("mailto:x") is None


# -- the connection backend --------------------------------------------------------


class RecordingBackend(httpcore.AsyncMockBackend):
    """Answers every connection with one canned HTTP response; records where it went."""

    def __init__(self) -> None:
        super().__init__([b"HTTP/1.1 204 No Content\r\n\r\n"])
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        return await super().connect_tcp(host, port, timeout, local_address, socket_options)


def resolver(*addresses: str) -> object:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


async def test_the_backend_connects_to_the_address_it_checked() -> None:
    inner = RecordingBackend()
    backend = GuardedBackend(TargetRules(), resolver("93.184.215.14"), inner)  # type: ignore[arg-type]
    stream = await backend.connect_tcp("hooks.example.org", 443, timeout=1)
    await stream.aclose()
    assert inner.connected == [("93.184.215.14", 443)]


async def test_the_backend_refuses_a_name_with_any_private_address() -> None:
    inner = RecordingBackend()
    rebound = resolver("93.184.215.14", "127.0.0.1")
    backend = GuardedBackend(TargetRules(), rebound, inner)  # type: ignore[arg-type]
    with pytest.raises(TargetRefused, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        await backend.connect_tcp("hooks.example.org", 443)
    assert inner.connected == []


async def test_a_name_that_does_not_resolve_is_a_connection_error() -> None:
    async def nowhere(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    backend = GuardedBackend(TargetRules(), nowhere, RecordingBackend())
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await backend.connect_tcp("nowhere.example", 443)


async def test_the_refusal_reaches_the_caller_of_an_httpx_client() -> None:
    """Through a whole client: a permanent failure, not an httpx error to retry."""
    transport = guarded_transport(TargetRules(), resolver("169.254.169.254"))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(TargetRefused, match="link-local"):
            await client.post("https://metadata.example/latest", content=b"{}")
