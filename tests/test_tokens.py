"""The pure header-list parsing in upgradable._tokens."""

from __future__ import annotations

import pytest

from upgradable._tokens import connectionOptions, parseProduct, parseUpgrade, splitList


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"a, b"], [b"a", b"b"]),
        ([b",, \t a \t,,"], [b"a"]),
        ([b"a", b"b,c"], [b"a", b"b", b"c"]),
        ([b""], []),
        ([], []),
    ],
)
def test_splitList(values: list[bytes], expected: list[bytes]) -> None:
    assert splitList(values) == expected


def test_connectionOptionsFoldASCIICaseOnly() -> None:
    assert connectionOptions([b"Keep-Alive, UPGRADE", b"close"]) == {
        b"keep-alive",
        b"upgrade",
        b"close",
    }


@pytest.mark.parametrize(
    ("element", "key"),
    [
        (b"IRC/6.9", (b"irc", b"6.9")),
        (b"websocket", (b"websocket", None)),
        (b"WebSocket", (b"websocket", None)),
        (b"h2c", (b"h2c", None)),
        (b"HTTP/2.0", (b"http", b"2.0")),
        (b"x/Y", (b"x", b"Y")),
    ],
)
def test_validProducts(element: bytes, key: tuple[bytes, bytes | None]) -> None:
    product = parseProduct(element)
    assert product is not None
    assert product.key == key
    assert product.raw == element


@pytest.mark.parametrize(
    "element",
    [b"", b"IRC/", b"/6.9", b"IRC/6.9/x", b'"IRC"', b"IRC 6.9", b"a;q=1", b"\xc3\xa9", b"a\x00"],
)
def test_invalidProducts(element: bytes) -> None:
    assert parseProduct(element) is None


def test_parseUpgradeKeepsOrderAndSkipsInvalidElements() -> None:
    products = parseUpgrade([b"foo/1, IRC/, bar", b'"x", HTTP/2.0'])
    assert [p.raw for p in products] == [b"foo/1", b"bar", b"HTTP/2.0"]


def test_connectionOptionsOfLongValuesAreParsedToo() -> None:
    # Long values are not remembered, but parsed the same way.
    long = b", ".join([b"opt%d" % i for i in range(100)] + [b"Upgrade"])
    assert b"upgrade" in connectionOptions([long])
    assert len(connectionOptions([long])) == 101
