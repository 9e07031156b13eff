"""The SSRF guard's address classification (executors/ssrf.py): a table of forms."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmill.executors.ssrf import (
    AddressClass,
    AddressPolicy,
    AddressRefused,
    classify,
    parse_host_literal,
)

C = AddressClass

# (host as written in a URL, what it is)
HOSTS: list[tuple[str, AddressClass]] = [
    # IPv4, dotted
    ("127.0.0.1", C.LOOPBACK),
    ("127.255.255.254", C.LOOPBACK),
    ("10.0.0.1", C.PRIVATE),
    ("172.16.0.1", C.PRIVATE),
    ("172.31.255.255", C.PRIVATE),
    ("192.168.1.1", C.PRIVATE),
    ("100.64.0.1", C.SHARED),
    ("100.127.255.255", C.SHARED),
    ("169.254.169.254", C.LINK_LOCAL),  # cloud metadata
    ("0.0.0.0", C.UNSPECIFIED),
    ("0.1.2.3", C.UNSPECIFIED),
    ("224.0.0.1", C.MULTICAST),
    ("239.255.255.250", C.MULTICAST),
    ("255.255.255.255", C.RESERVED),
    ("240.0.0.1", C.RESERVED),
    ("192.0.2.1", C.RESERVED),
    ("198.18.0.1", C.RESERVED),
    ("192.0.0.8", C.RESERVED),
    ("8.8.8.8", C.PUBLIC),
    ("172.32.0.1", C.PUBLIC),  # just outside 172.16/12
    ("100.128.0.1", C.PUBLIC),  # just outside 100.64/10
    ("1.1.1.1", C.PUBLIC),
    # IPv4, the other spellings resolvers accept
    ("2130706433", C.LOOPBACK),
    ("0x7f000001", C.LOOPBACK),
    ("0x7f.1", C.LOOPBACK),
    ("0x7F.0.0.1", C.LOOPBACK),
    ("0177.0.0.1", C.LOOPBACK),
    ("0177.1", C.LOOPBACK),
    ("127.1", C.LOOPBACK),
    ("127.0.1", C.LOOPBACK),
    ("017700000001", C.LOOPBACK),
    ("3232235777", C.PRIVATE),  # 192.168.1.1
    ("0xa9.0xfe.0xa9.0xfe", C.LINK_LOCAL),  # 169.254.169.254
    ("2852039166", C.LINK_LOCAL),
    ("0", C.UNSPECIFIED),
    ("127.0.0.1.", C.LOOPBACK),  # trailing dot
    ("134744072", C.PUBLIC),  # 8.8.8.8
    # IPv6
    ("::1", C.LOOPBACK),
    ("[::1]", C.LOOPBACK),
    ("::", C.UNSPECIFIED),
    ("fc00::1", C.PRIVATE),
    ("fd12:3456:789a::1", C.PRIVATE),
    ("fe80::1", C.LINK_LOCAL),
    ("fe80::1%25eth0", C.LINK_LOCAL),
    ("febf::1", C.LINK_LOCAL),
    ("fec0::1", C.RESERVED),  # site-local, deprecated
    ("ff02::1", C.MULTICAST),
    ("ff05::2", C.MULTICAST),
    ("2001:db8::1", C.RESERVED),
    ("100::1", C.RESERVED),
    ("4000::1", C.RESERVED),  # outside 2000::/3: unassigned
    ("2606:4700:4700::1111", C.PUBLIC),
    ("2a00:1450:4001::200e", C.PUBLIC),
    # IPv4 embedded in IPv6
    ("::ffff:127.0.0.1", C.LOOPBACK),
    ("::ffff:7f00:1", C.LOOPBACK),
    ("[::ffff:7f00:1]", C.LOOPBACK),
    ("::ffff:10.0.0.1", C.PRIVATE),
    ("::ffff:169.254.169.254", C.LINK_LOCAL),
    ("::ffff:a9fe:a9fe", C.LINK_LOCAL),
    ("::ffff:8.8.8.8", C.PUBLIC),
    ("::127.0.0.1", C.LOOPBACK),  # IPv4-compatible
    ("::8.8.8.8", C.RESERVED),  # IPv4-compatible is deprecated whatever it carries
    ("64:ff9b::127.0.0.1", C.LOOPBACK),  # NAT64
    ("64:ff9b::a00:1", C.PRIVATE),
    ("64:ff9b::808:808", C.PUBLIC),
    ("64:ff9b:1::1", C.RESERVED),  # local-use NAT64
    ("2002:7f00:1::", C.LOOPBACK),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", C.PRIVATE),  # 6to4 of 192.168.1.1
    ("2002:a9fe:a9fe::1", C.LINK_LOCAL),
    ("2002:808:808::1", C.PUBLIC),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", C.RESERVED),  # Teredo, client 192.0.2.45
    ("2001:0:808:808:0:f227:80ff:fffe", C.LOOPBACK),  # Teredo, client 127.0.0.1
    ("2001:0:808:808:0:f227:f7f7:f7f7", C.PUBLIC),  # Teredo, 8.8.8.8 both ends
]


@pytest.mark.parametrize(("host", "expected"), HOSTS)
def test_classify_host_forms(host: str, expected: AddressClass) -> None:
    address = parse_host_literal(host)
    assert address is not None, host
    assert classify(address) is expected


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "localhost.",
        "xn--bcher-kva.example",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.16777216",
        "4294967296",
        "0x1g.1",
        "08.1.1.1",  # not octal, not decimal
        "1..1",
        "+1.1.1.1",
        "1_0.0.0.1",
        "",
        "[not:an:address]",
    ],
)
def test_parse_host_literal_names_are_not_addresses(host: str) -> None:
    assert parse_host_literal(host) is None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_classify_mapped_ipv6_as_its_ipv4(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert classify(mapped) is classify(v4)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_parse_host_literal_integer_forms_agree(value: int) -> None:
    expected = ipaddress.IPv4Address(value)
    assert parse_host_literal(str(value)) == expected
    assert parse_host_literal(hex(value)) == expected
    assert parse_host_literal(".".join(f"0{b:o}" for b in expected.packed)) == expected


def test_address_policy_refuses_private_by_default() -> None:
    policy = AddressPolicy()
    assert policy.refusal(ipaddress.ip_address("8.8.8.8")) is None
    reason = policy.refusal(ipaddress.ip_address("127.0.0.1"))
    assert reason is not None and "loopback" in reason and "http.allowed_networks" in reason
    with pytest.raises(AddressRefused, match="link-local"):
        policy.check(ipaddress.ip_address("169.254.169.254"))


def test_address_policy_allowed_networks() -> None:
    policy = AddressPolicy.from_strings(["127.0.0.1/32", "fd00::/8"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("fd00::5")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) is not None


def test_address_policy_allow_private_keeps_link_local_refused() -> None:
    policy = AddressPolicy(allow_private_networks=True)
    for allowed in ("10.1.2.3", "127.0.0.1", "::1", "fd00::1", "100.64.0.1"):
        assert policy.refusal(ipaddress.ip_address(allowed)) is None, allowed
    for refused in ("169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "240.0.0.1"):
        assert policy.refusal(ipaddress.ip_address(refused)) is not None, refused
    explicit = AddressPolicy.from_strings(["169.254.169.254/32"])
    assert explicit.refusal(ipaddress.ip_address("169.254.169.254")) is None
