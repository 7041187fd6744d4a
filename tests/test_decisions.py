"""
What a handler is given: a request kept for a connection's life
(``keepable``) is equal to the one the handler saw, in every field and in
every Headers method, while it holds its headers as one bytes object.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.web.http_headers import Headers

from upgradable import UpgradeRequest
from upgradable._decisions import _PackedHeaders, keepable

from .helpers import EchoRequestResource

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def request(headers: Headers, uri: bytes = b"/chat?room=1") -> UpgradeRequest:
    return UpgradeRequest(
        method=b"GET",
        uri=uri,
        path=uri.split(b"?", 1)[0],
        version=b"HTTP/1.1",
        headers=headers,
        body=b"",
        offered=(b"websocket",),
        peer=PEER,
        host=PEER,
        secure=False,
    )


NAMES = st.sampled_from([b"Host", b"Cookie", b"X-Forwarded-For", b"Origin", b"A"])
VALUES = st.binary(max_size=30).map(lambda v: v.translate(None, b"\r\n\x00").strip(b" \t"))


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_aKeptRequestEqualsTheOriginal(fields: list[tuple[bytes, bytes]]) -> None:
    headers = Headers()
    for name, value in fields:
        headers.addRawHeader(name, value)
    original = request(headers)
    kept = keepable(original)
    assert isinstance(kept.headers, _PackedHeaders)
    assert kept == original
    assert list(kept.headers.getAllRawHeaders()) == list(original.headers.getAllRawHeaders())
    for name in (b"Host", b"cookie", b"Missing"):
        assert kept.headers.getRawHeaders(name) == original.headers.getRawHeaders(name)
        assert kept.headers.hasHeader(name) == original.headers.hasHeader(name)


def test_keptHeadersCanStillBeChanged() -> None:
    kept = keepable(request(Headers({b"Host": [b"x"], b"Cookie": [b"a=1", b"b=2"]})))
    headers = kept.headers
    headers.addRawHeader(b"Cookie", b"c=3")
    headers.removeHeader(b"Host")
    headers.setRawHeaders(b"X-New", [b"1"])
    assert headers.getRawHeaders(b"cookie") == [b"a=1", b"b=2", b"c=3"]
    assert not headers.hasHeader(b"host")
    copy = headers.copy()
    assert type(copy) is Headers and copy == headers


def test_aKeptRequestSharesItsMethodVersionAndPath() -> None:
    """Two kept requests share the objects each parsed request holds its own of."""

    def parsed() -> UpgradeRequest:
        line = bytes(bytearray(b"GET /plain HTTP/1.1"))  # a new object, as a parse makes
        method, uri, version = line.split(b" ")
        return replace(
            request(Headers()), method=method, uri=uri, path=bytes(bytearray(uri)), version=version
        )

    first, second = keepable(parsed()), keepable(parsed())
    assert first.path is first.uri
    assert first.method is second.method and first.version is second.version
    assert keepable(first) == first


def test_packedHeadersAreSmaller() -> None:
    fields = {
        b"Host": [b"example.com"],
        b"User-Agent": [b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"],
        b"Origin": [b"https://example.com"],
        b"Sec-Websocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ=="],
        b"Sec-Websocket-Version": [b"13"],
        b"Cookie": [b"session=0123456789abcdef"],
    }
    headers = Headers(fields)
    size = sys.getsizeof(headers._rawHeaders) + sum(
        sys.getsizeof(values) + sum(sys.getsizeof(v) for v in values)
        for values in headers._rawHeaders.values()
    )
    packed = keepable(request(headers)).headers
    assert isinstance(packed, _PackedHeaders)
    assert sys.getsizeof(packed._packed) < size / 2


@pytest.mark.parametrize("value", [b"", b"a: b", b"x:y"])
def test_valuesThatLookLikeSeparatorsSurvive(value: bytes) -> None:
    kept = keepable(request(Headers({b"A": [value], b"B": [b"1"]})))
    assert kept.headers.getRawHeaders(b"a") == [value]
    assert kept.headers.getRawHeaders(b"b") == [b"1"]


def test_theFastConstructorMakesTheSameRequest() -> None:
    """_newRequest sets the slots in UpgradeRequest's own field order."""
    from dataclasses import fields

    from upgradable._decisions import _newRequest

    values = {
        f.name: f"value of {f.name}".encode() for f in fields(UpgradeRequest)
    }  # each field its own value, so a swapped pair shows
    assert [f.name for f in fields(UpgradeRequest)] == list(UpgradeRequest.__slots__)
    made = _newRequest(*values.values())  # type: ignore[arg-type]
    assert made == UpgradeRequest(**values)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        made.method = b"POST"  # type: ignore[misc]


def fastPathRequest(head: bytes) -> UpgradeRequest:
    """The request the fast path gives the first handler for ``head``."""
    from twisted.internet.testing import StringTransport
    from zope.interface import implementer

    from upgradable import Accept, UpgradableSite, UpgradeRegistry
    from upgradable._site import decideFirst
    from upgradable.interfaces import IUpgradeHandler

    from .helpers import RecordingFactory

    seen: list[UpgradeRequest] = []

    @implementer(IUpgradeHandler)
    class Recording:
        def upgrade(self, request: UpgradeRequest, product: bytes) -> Accept:
            seen.append(request)
            return Accept(RecordingFactory().buildProtocol(None))

    registry = UpgradeRegistry()
    registry.register(b"websocket", Recording())
    site = UpgradableSite(EchoRequestResource(), registry)
    assert decideFirst(head, registry, site.limits, StringTransport(), site) is not None
    return seen[0]


HEAD = (
    b"GET /chat HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nConnection:Upgrade\r\n"
    b"X-Twice: 1\r\nx-twice:  2 \r\n\r\n"
)


def test_theFastPathKeepsTheLinesAsTheyArrived() -> None:
    request = fastPathRequest(HEAD)
    kept = keepable(request)
    assert isinstance(kept.headers, _PackedHeaders)
    assert kept.headers._packed == HEAD[HEAD.index(b"\r\n") + 2 : -4]
    assert kept.headers.getRawHeaders(b"x-twice") == [b"1", b"2"]
    assert list(kept.headers.getAllRawHeaders()) == list(request.headers.getAllRawHeaders())
    assert kept == request


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.addRawHeader(b"Cookie", b"a=1"),
        lambda h: h.setRawHeaders(b"Host", [b"elsewhere"]),
        lambda h: h.removeHeader(b"X-Twice"),
    ],
    ids=["add", "set", "remove"],
)
def test_aChangeBeforeKeepingIsKept(change: Any) -> None:
    """A handler that changes the fields first: the kept request has the change."""
    request = fastPathRequest(HEAD)
    change(request.headers)
    kept = keepable(request)
    assert list(kept.headers.getAllRawHeaders()) == list(request.headers.getAllRawHeaders())


def test_valuesWithSurroundingWhitespaceAreKeptExactly() -> None:
    original = request(Headers({b"A": [b" padded "]}))
    assert keepable(original).headers.getRawHeaders(b"a") == [b" padded "]


def test_valuesHandedOutAreCopiesSoTheKeptLinesStayTrue() -> None:
    """Changing a list a getter gave changes nothing, as keepable assumes."""
    request = fastPathRequest(HEAD)
    request.headers.getRawHeaders(b"x-twice").clear()  # type: ignore[union-attr]
    for _, values in request.headers.getAllRawHeaders():
        values.clear()  # type: ignore[attr-defined]
    assert request.headers.getRawHeaders(b"x-twice") == [b"1", b"2"]
    assert keepable(request) == request


def test_aNameWithoutValuesIsKeptExactly() -> None:
    original = request(Headers({b"A": [b"1"]}))
    original.headers.setRawHeaders(b"Empty", [])
    kept = keepable(original)
    assert kept == original and kept.headers.hasHeader(b"empty")


def test_packedHeadersLookLikeHeaders() -> None:
    request = fastPathRequest(HEAD)
    assert repr(request.headers).startswith("Headers({b'Host': [b'x'], ")


@pytest.mark.parametrize(
    "reason", [b"No\r\nSet-Cookie: a=1", b"No\nSet-Cookie: a=1", b"No\rX", b"No\x00", b"No\x7f"]
)
def test_aRejectsReasonPhraseCannotCarryAControlByte(reason: bytes) -> None:
    """The reason phrase goes into the status line as it is: no header can be injected."""
    from upgradable import Reject

    with pytest.raises(ValueError, match="contains a control byte"):
        Reject(403, reason=reason)


def test_aRejectsReasonPhraseIsBytes() -> None:
    from upgradable import Reject

    with pytest.raises(TypeError, match="reason is bytes"):
        Reject(403, reason="Nope")  # type: ignore[arg-type]


def test_aRejectsOwnReasonPhraseIsKept() -> None:
    from upgradable import Reject

    assert Reject(403, reason=b"Go away, politely").reason == b"Go away, politely"
    assert Reject(403).reason == b"Forbidden"
