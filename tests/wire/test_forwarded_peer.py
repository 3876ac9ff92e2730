"""How `wire.http_server.forwarded_peer` reads the proxy's X-Forwarded-* headers (daphne's
`--proxy-headers`): as daphne does, except that a value it cannot use is ignored."""

from __future__ import annotations

import pytest

from wire.http_server import forwarded_peer

NAMES = (b"x-forwarded-for", b"x-forwarded-port", b"x-forwarded-proto")
PEER = ["10.0.0.2", 50123]


def peer(*headers: tuple[bytes, bytes]) -> tuple[object, str]:
    return forwarded_peer(list(headers), NAMES, PEER, "http")


def test_the_first_address_of_the_first_header_is_the_client() -> None:
    assert peer(
        (b"X-Forwarded-For", b"203.0.113.7, 10.0.0.1"),
        (b"X-Forwarded-For", b"198.51.100.9"),
        (b"X-Forwarded-Port", b"443"),
        (b"X-Forwarded-Proto", b"HTTPS"),
    ) == (["203.0.113.7", 443], "https")


def test_without_an_address_the_connection_speaks_for_itself() -> None:
    # Port and scheme are only believed beside an address, as daphne has it.
    assert peer((b"X-Forwarded-Proto", b"https")) == (PEER, "http")
    assert peer((b"X-Forwarded-For", b" , 10.0.0.1")) == (PEER, "http")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (((b"X-Forwarded-For", b"\xff\xfe"),), (PEER, "http")),
        (
            ((b"X-Forwarded-For", b"203.0.113.7"), (b"X-Forwarded-Proto", b"\xff")),
            (["203.0.113.7", 0], "http"),
        ),
        (
            ((b"X-Forwarded-For", b"203.0.113.7"), (b"X-Forwarded-Proto", b"javascript")),
            (["203.0.113.7", 0], "http"),
        ),
        (
            ((b"X-Forwarded-For", b"203.0.113.7"), (b"X-Forwarded-Port", b"\xe9")),
            (["203.0.113.7", 0], "http"),
        ),
        (
            ((b"X-Forwarded-For", b"203.0.113.7"), (b"X-Forwarded-Port", b"99999")),
            (["203.0.113.7", 0], "http"),
        ),
        (
            ((b"X-Forwarded-For", b"203.0.113.7"), (b"X-Forwarded-Port", b"-1")),
            (["203.0.113.7", 0], "http"),
        ),
    ],
    ids=[
        "address-not-ascii",
        "proto-not-ascii",
        "proto-unknown",
        "port-not-ascii",
        "port-too-big",
        "port-negative",
    ],
)
def test_a_value_that_cannot_be_used_is_treated_as_absent(
    headers: tuple[tuple[bytes, bytes], ...], expected: tuple[object, str]
) -> None:
    assert peer(*headers) == expected
