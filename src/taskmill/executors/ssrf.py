"""The SSRF guard of the ``http`` task: which addresses a job may reach, checked on connect.

Two layers. At job creation the URL's host is refused early if it is an IP literal in a
refused range, whatever its spelling (``2130706433``, ``0x7f.1``, ``::ffff:7f00:1``).
At run time :class:`GuardedBackend` (an httpcore network backend) resolves the host
itself, refuses the connection if any resolved address is refused, connects to the
checked address and checks the socket's peer again: the address checked is the address
connected to, so a name that resolves differently the second time (DNS rebinding)
cannot slip through.

The classification is written out range by range rather than taken from
``ipaddress``'s ``is_global``, which misjudges some IPv6 forms on Python 3.11.7 and
knows nothing of addresses embedded in IPv6 (mapped, 6to4, Teredo, NAT64).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list["IPAddress"]]]  # (name, port) -> addresses


class AddressClass(enum.Enum):
    """Why an address is (not) a public destination."""

    PUBLIC = "a public address"
    PRIVATE = "a private address"  # RFC 1918, fc00::/7
    SHARED = "a shared (carrier-grade NAT) address"  # 100.64.0.0/10
    LOOPBACK = "a loopback address"
    LINK_LOCAL = "a link-local address"  # 169.254.0.0/16 (cloud metadata), fe80::/10
    UNSPECIFIED = "an unspecified address"
    MULTICAST = "a multicast address"
    RESERVED = "a reserved address"  # documentation, benchmarking, future use, deprecated forms


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


_V4_RANGES: tuple[tuple[tuple[IPNetwork, ...], AddressClass], ...] = (
    (_nets("0.0.0.0/8"), AddressClass.UNSPECIFIED),  # "this network"; 0.0.0.0 reaches the host
    (_nets("127.0.0.0/8"), AddressClass.LOOPBACK),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), AddressClass.PRIVATE),
    (_nets("100.64.0.0/10"), AddressClass.SHARED),
    (_nets("169.254.0.0/16"), AddressClass.LINK_LOCAL),
    (_nets("224.0.0.0/4"), AddressClass.MULTICAST),
    (
        _nets(
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # TEST-NET-1
            "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
            "198.18.0.0/15",  # benchmarking
            "198.51.100.0/24",  # TEST-NET-2
            "203.0.113.0/24",  # TEST-NET-3
            "240.0.0.0/4",  # future use, and 255.255.255.255 broadcast
        ),
        AddressClass.RESERVED,
    ),
)

_V6_RANGES: tuple[tuple[tuple[IPNetwork, ...], AddressClass], ...] = (
    (_nets("::/128"), AddressClass.UNSPECIFIED),
    (_nets("::1/128"), AddressClass.LOOPBACK),
    (_nets("fc00::/7"), AddressClass.PRIVATE),
    (_nets("fe80::/10"), AddressClass.LINK_LOCAL),
    (_nets("ff00::/8"), AddressClass.MULTICAST),
    (
        _nets(
            "::/96",  # IPv4-compatible (deprecated): no stack should route it
            "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215)
            "100::/64",  # discard-only
            "2001:db8::/32",  # documentation
            "3fff::/20",  # documentation (RFC 9637)
            "fec0::/10",  # site-local (deprecated)
        ),
        AddressClass.RESERVED,
    ),
)
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _lookup(
    address: IPAddress, ranges: tuple[tuple[tuple[IPNetwork, ...], AddressClass], ...]
) -> AddressClass | None:
    for networks, cls in ranges:
        if any(address in net for net in networks):
            return cls
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and may end up reaching: mapped
    (``::ffff:a.b.c.d``), compatible (``::a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``),
    6to4 (``2002:aabb:ccdd::``) and Teredo (server and client)."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _SIX_TO_FOUR and address.sixtofour is not None:
        return [address.sixtofour]
    if address in _TEREDO and address.teredo is not None:
        return list(address.teredo)
    return []


def classify(address: IPAddress) -> AddressClass:
    """The class of ``address``; an IPv6 form embedding IPv4 takes its worst embedded
    address's class, so ``::ffff:127.0.0.1`` is loopback."""
    if isinstance(address, ipaddress.IPv4Address):
        return _lookup(address, _V4_RANGES) or AddressClass.PUBLIC
    if address.scope_id is not None:  # fe80::1%eth0
        return AddressClass.LINK_LOCAL
    for inner in embedded_ipv4(address):
        found = classify(inner)
        if found is not AddressClass.PUBLIC:
            return found
    if address.ipv4_mapped is not None or address in _NAT64:
        return AddressClass.PUBLIC  # checked above through the IPv4 address it carries
    known = _lookup(address, _V6_RANGES)
    if known is not None:
        return known
    # Everything outside 2000::/3 is unassigned by IANA: nothing public lives there.
    return AddressClass.PUBLIC if address in _GLOBAL_UNICAST_V6 else AddressClass.RESERVED


_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_OCTAL = re.compile(r"0[0-7]+")
_DECIMAL = re.compile(r"[1-9][0-9]*|0")


def _inet_aton_part(text: str) -> int | None:
    """One part of a BSD ``inet_aton`` address: decimal, ``0x`` hex or ``0`` octal."""
    if _HEX.fullmatch(text):
        return int(text[2:] or "0", 16)
    if _OCTAL.fullmatch(text):
        return int(text, 8)
    if _DECIMAL.fullmatch(text):
        return int(text, 10)
    return None


def _parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read the way ``inet_aton`` and resolvers read it: 1-4 parts, the last
    filling the remaining bytes (``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    values = [_inet_aton_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    numbers = [v for v in values if v is not None]
    head, last = numbers[:-1], numbers[-1]
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, byte in enumerate(head):
        value |= byte << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, in any form a resolver accepts; ``None`` for a name."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if ":" in host:
        try:
            # ``%25`` is how a URL writes the ``%`` of a zone id (fe80::1%25eth0).
            return ipaddress.IPv6Address(host.replace("%25", "%"))
        except ValueError:
            return None
    return _parse_ipv4_loose(host)


class AddressRefused(Exception):
    """A destination (an address, or a redirect's location) is not allowed by the
    configuration. The ``http`` task turns it into ``Fail("ssrf_blocked: …")``."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which destinations are allowed: public addresses always; private, shared and
    loopback ones with ``allow_private_networks``; anything inside ``allowed_networks``.
    Link-local (cloud metadata at 169.254.169.254), multicast, unspecified and reserved
    addresses need an explicit ``allowed_networks`` entry."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_private_networks: bool = False

    @classmethod
    def from_strings(
        cls, allowed_networks: Iterable[str], allow_private_networks: bool = False
    ) -> AddressPolicy:
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        return cls(nets, allow_private_networks)

    def _listed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)  # 127.0.0.1/32 also allows ::ffff:127.0.0.1
        return any(c in net for c in candidates for net in self.allowed_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or ``None`` when it may be reached."""
        cls = classify(address)
        if cls is AddressClass.PUBLIC or self._listed(address):
            return None
        private = (AddressClass.PRIVATE, AddressClass.SHARED, AddressClass.LOOPBACK)
        if self.allow_private_networks and cls in private:
            return None
        return (
            f"{address} is {cls.value}; private, loopback and link-local "
            "targets are refused unless listed in http.allowed_networks"
        )

    def check(self, address: IPAddress) -> None:
        """Raise :class:`AddressRefused` if ``address`` may not be reached."""
        reason = self.refusal(address)
        if reason is not None:
            raise AddressRefused(reason)


def _sockaddr_ip(sockaddr: Any) -> IPAddress:
    # getaddrinfo gives "fe80::1%eth0" for scoped addresses; the scope is checked as such.
    return ipaddress.ip_address(str(sockaddr[0]))


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal resolves to itself), in resolver order."""
    literal = parse_host_literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(_sockaddr_ip(info[4]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses ``policy`` allows.

    It resolves the host itself, refuses if *any* resolved address is refused (a name
    mixing public and private records is refused whole), then connects to the checked
    addresses one by one; TLS still verifies and sends SNI for the original host name,
    because httpcore passes the URL's host to ``start_tls``, not ours. After connecting,
    the socket's peer address is checked once more before a byte is written.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolver: Resolver | None = None,
    ):
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()  # what opens the sockets
        self._resolve = resolver or resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = parse_host_literal(host)  # a literal never reaches the resolver
        addresses = [literal] if literal is not None else await self._resolve(host, port)
        for address in addresses:
            self.policy.check(address)
        return await self._connect_first(addresses, port, timeout, local_address, socket_options)

    async def _connect_first(
        self,
        addresses: Sequence[IPAddress],
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception = httpcore.ConnectError("no address to connect to")
        options = list(socket_options or ())
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            await self._check_peer(stream)
            return stream
        raise error

    async def _check_peer(self, stream: httpcore.AsyncNetworkStream) -> None:
        peer = stream.get_extra_info("server_addr")
        if peer is None:  # a backend that cannot tell: the address we dialled was checked
            return
        reason = self.policy.refusal(_sockaddr_ip(peer))
        if reason is not None:
            await stream.aclose()
            raise AddressRefused(reason)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not HTTP job destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
