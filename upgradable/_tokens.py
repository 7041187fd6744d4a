# Pure parsing of the header fields that decide an upgrade: no I/O, no Twisted.
#
# Rules kept here (RFC 9110 §5.6.1, §7.6.1, §7.8):
# - Lists (#rule) are split on commas over every field line, with optional
#   whitespace around elements and empty elements ignored.
# - Connection options are compared ASCII-case-insensitively.
# - An Upgrade element is `protocol-name ["/" protocol-version]`, both tokens.
#   Names compare ASCII-case-insensitively, versions octet for octet; nothing
#   ever matches by prefix or substring. An element that is not a valid
#   production never matches anything (it is skipped, the others still count).
# - All comparisons are on bytes: bytes.lower() folds ASCII only, so no
#   Unicode case folding can make two different tokens equal.
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "CLEARTEXT_ONLY",
    "REMEMBERED",
    "Product",
    "connectionOptions",
    "isToken",
    "parseProduct",
    "parseUpgrade",
    "rememberable",
    "splitList",
]

# RFC 9110 §5.6.2: tchar.
_TCHAR_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_OWS = b" \t"

# The comparison keys of products that name a protocol over cleartext only:
# never offered, advertised or switched to on a TLS connection. RFC 9113
# §3.1 (RFC 7540 §3.2, §3.3): "h2c" is HTTP/2 over cleartext TCP; over TLS,
# HTTP/2 is "h2", negotiated by ALPN and never by Upgrade.
CLEARTEXT_ONLY = frozenset([(b"h2c", None)])


class Product(NamedTuple):
    """
    One element of an C{Upgrade} field: a protocol name and optional version.

    ``key`` is what two products are compared by: the name folded to ASCII
    lower case and the version exactly as sent. ``raw`` keeps the sender's
    spelling, which is what a 101 echoes back.
    """

    raw: bytes
    key: tuple[bytes, bytes | None]


def isToken(value: bytes) -> bool:
    """Whether ``value`` is a token (RFC 9110 §5.6.2)."""
    return bool(value) and not value.translate(None, _TCHAR_BYTES)


def splitList(values: Iterable[bytes]) -> list[bytes]:
    """
    Split the field lines of a list-valued field into its non-empty elements.

    :param values: every field line's value, in the order received.
    :return: the elements with surrounding whitespace removed.
    """
    out: list[bytes] = []
    for value in values:
        for element in value.split(b","):
            element = element.strip(_OWS)
            if element:
                out.append(element)
    return out


#: How many parses of field values are remembered, and of values up to how
#: many bytes: clients send the same few again and again; longer ones are
#: parsed every time, so that no client can pin much memory with them.
REMEMBERED = 256


def rememberable(values: tuple[bytes, ...]) -> bool:
    """Whether the parse of these field values may be remembered."""
    return sum(map(len, values)) <= REMEMBERED


def connectionOptions(values: Iterable[bytes]) -> frozenset[bytes]:
    """
    The connection options of a C{Connection} field, folded to lower case.
    """
    values = tuple(values)
    if rememberable(values):
        return _connectionOptions(values)
    return _connectionOptions.__wrapped__(values)


@lru_cache(maxsize=REMEMBERED)
def _connectionOptions(values: tuple[bytes, ...]) -> frozenset[bytes]:
    return frozenset(element.lower() for element in splitList(values))


def parseProduct(element: bytes) -> Product | None:
    """
    Parse one C{protocol} production (RFC 9110 §7.8), or return None when it
    is not one (so that it can never match a registered protocol).
    """
    name, slash, version = element.partition(b"/")
    if not isToken(name):
        return None
    if not slash:
        return Product(element, (name.lower(), None))
    if not isToken(version):
        return None
    return Product(element, (name.lower(), version))


def parseUpgrade(values: Iterable[bytes]) -> list[Product]:
    """
    The valid products offered by the C{Upgrade} field lines, in the client's
    order of preference. Invalid elements are left out.
    """
    products = []
    for element in splitList(values):
        product = parseProduct(element)
        if product is not None:
            products.append(product)
    return products
