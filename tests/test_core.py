"""
The negotiation core, upgradable._core: its rules one by one, the heads it
writes read back by h11, and its plain request heads read differentially
against Twisted's HTTPChannel and h11.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.web.http import RESPONSES, HTTPChannel, Request

from upgradable import _core
from upgradable._core import (
    answerHead,
    checkHeaders,
    checkSwitch,
    connectionOptions,
    dechunk,
    errorResponse,
    matchOffers,
    mayUpgrade,
    oneValidHost,
    parseProduct,
    parseResponseHead,
    parseUpgrade,
    plainUpgradeHead,
    reasonPhrase,
    servedOver,
    splitList,
    switchingHead,
    withoutCleartextOnly,
)
from upgradable._handover import CANONICAL_NAMES, canonicalName, parseRequestLine


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


# -- the module itself ---------------------------------------------------------


def test_theCoreImportsNothingButTheStandardLibrary() -> None:
    """Loaded alone, outside the package, it imports neither Twisted nor zope."""
    path = Path(_core.__file__)
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('core', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.mayUpgrade(b'GET', b'HTTP/1.1', {b'Upgrade': [b'x'],"
        " b'Connection': [b'upgrade']}) == [b'x']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'zope',"
        " 'upgradable')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- which requests may upgrade --------------------------------------------------

_UPGRADE = {b"Upgrade": [b"IRC/6.9"], b"Connection": [b"Upgrade"], b"Host": [b"x"]}


@pytest.mark.parametrize(
    ("method", "version", "fields", "upgrade"),
    [
        (b"GET", b"HTTP/1.1", _UPGRADE, [b"IRC/6.9"]),
        (b"POST", b"HTTP/1.1", _UPGRADE, [b"IRC/6.9"]),
        (b"GET", b"HTTP/1.0", _UPGRADE, None),  # RFC 9110 §7.8: ignored in 1.0
        (b"CONNECT", b"HTTP/1.1", _UPGRADE, None),
        (b"GET", b"HTTP/1.1", {**_UPGRADE, b"Connection": [b"keep-alive"]}, None),
        (b"GET", b"HTTP/1.1", {**_UPGRADE, b"Connection": [b"close", b"UPGRADE"]}, [b"IRC/6.9"]),
        (b"GET", b"HTTP/1.1", {b"Upgrade": [b"IRC/6.9"]}, None),
        (b"GET", b"HTTP/1.1", {b"Connection": [b"upgrade"]}, None),
        (b"GET", b"HTTP/1.1", {**_UPGRADE, b"Connection": [b"upgrades"]}, None),
    ],
)
def test_onlyAnHTTP11RequestWithTheUpgradeOptionMayUpgrade(
    method: bytes, version: bytes, fields: dict[bytes, list[bytes]], upgrade: list[bytes] | None
) -> None:
    assert mayUpgrade(method, version, fields) == upgrade


@pytest.mark.parametrize(
    ("hosts", "valid"),
    [
        ([b"x"], True),
        ([b"example.com:8080"], True),
        ([b"[::1]:80"], True),
        ([b""], True),  # RFC 9112 §3.2: an empty Host is allowed (no authority)
        (None, False),
        ([], False),
        ([b"x", b"x"], False),
        ([b"a b"], False),
        ([b"a,b"], False),
        ([b"a/b"], False),
        ([b"user@host"], False),
        ([b"a\\b"], False),
        ([b"a\tb"], False),
    ],
)
def test_exactlyOneHostWithAValueAHostCanHave(hosts: list[bytes] | None, valid: bool) -> None:
    assert oneValidHost(hosts) is valid


def test_offersAreMatchedByKeyInTheClientsOrderAndKeepTheirSpelling() -> None:
    served = {(b"irc", b"6.9"): "irc", (b"websocket", None): "ws"}
    offered, matched = matchOffers([b"foo, WebSocket", b"x/1, irc/6.9, IRC/6.90"], served.get)
    assert offered == (b"foo", b"WebSocket", b"x/1", b"irc/6.9", b"IRC/6.90")
    assert [(product.raw, handler) for product, handler in matched] == [
        (b"WebSocket", "ws"),
        (b"irc/6.9", "irc"),
    ]


def test_cleartextOnlyProductsAreNeverServedOrAdvertisedOverTLS() -> None:
    served = {(b"h2c", None): "h2c", (b"websocket", None): "ws"}
    _, matched = matchOffers([b"H2C, websocket"], served.get)
    assert servedOver(matched, secure=False) == matched
    assert [product.raw for product, _ in servedOver(matched, secure=True)] == [b"websocket"]
    assert withoutCleartextOnly([b"h2c", b"IRC/6.9", b"H2C"]) == [b"IRC/6.9"]


# -- reason phrases --------------------------------------------------------------


def test_reasonPhrasesAreTwistedsWhereTwistedHasOne() -> None:
    """The fast path's bytes stay those of Twisted's own responses."""
    for code, phrase in RESPONSES.items():
        if code == 101 or code >= 400:
            assert reasonPhrase(code) == phrase, code
    assert reasonPhrase(431) == b"Request Header Fields Too Large"  # RFC 6585 §5
    assert reasonPhrase(426) == b"Upgrade Required"
    assert reasonPhrase(599) == b"Error"


# -- the heads the server writes, read back by h11 -------------------------------


def _h11Response(data: bytes, method: bytes = b"GET") -> list[Any]:
    """What h11, as a client that sent ``method``, reads from a response."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    events = []
    while True:
        event = client.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED):
            return events
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            return events


def test_the101IsReadByH11AsASwitchWithNothingAfterIt() -> None:
    head = switchingHead(b"WebSocket", [(b"Sec-WebSocket-Accept", b"abc=")])
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("Host", "x"), ("Connection", "upgrade"), ("Upgrade", "WebSocket")],
        )
    )
    client.send(h11.EndOfMessage())
    client.receive_data(head + b"\x81\x00")
    response = client.next_event()
    assert isinstance(response, h11.InformationalResponse)
    assert response.status_code == 101
    assert list(response.headers) == [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"WebSocket"),
        (b"sec-websocket-accept", b"abc="),
    ]
    assert client.next_event() is h11.PAUSED
    assert client.trailing_data == (b"\x81\x00", False)  # the new protocol's bytes, all


@pytest.mark.parametrize("code", [400, 408, 413, 414, 431])
def test_anErrorResponseIsAWholeFramedResponseThatCloses(code: int) -> None:
    response, data, end = _h11Response(errorResponse(code))
    assert response.status_code == code
    assert response.reason == reasonPhrase(code)
    assert (b"connection", b"close") in list(response.headers)
    assert data.data == reasonPhrase(code) + b"\n"
    assert isinstance(end, h11.EndOfMessage)


@settings(max_examples=200, deadline=None)
@given(
    code=st.integers(400, 599),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    b"X-A",
                    b"x-a",
                    b"WWW-Authenticate",
                    b"www-authenticate",
                    b"Retry-After",
                    b"content-type",
                    b"Connection",
                ]
            ),
            st.sampled_from([b"1", b"Basic", b"close", b"keep-alive", b"", b"a b"]),
        ),
        max_size=4,
    ),
    body=st.binary(max_size=20),
    closeFirst=st.booleans(),
    close=st.booleans(),
    advertise=st.booleans(),
)
def test_anAnswerHeadIsAValidResponseFramingItsBody(
    code: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    closeFirst: bool,
    close: bool,
    advertise: bool,
) -> None:
    advertised = b"IRC/6.9, websocket" if advertise else b""
    head = answerHead(code, reasonPhrase(code), headers, body, closeFirst, close, advertised,
                      canonicalName)  # fmt: skip
    events = _h11Response(head + body + b"HTTP/1.1 200 OK\r\n")
    response, end = events[0], events[-1]
    assert response.status_code == code
    assert isinstance(end, h11.EndOfMessage)
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == body
    fields = list(response.headers)
    # Every field the handler gave is there, with its value, under its name
    # (but the Connection of an answer that closes, which says only close).
    for name, value in headers:
        if not (close and name.lower() == b"connection"):
            assert (name.lower(), value) in fields
    options = connectionOptions([v for n, v in fields if n == b"connection"])
    if close or closeFirst:
        assert b"close" in options
    if advertise and b"close" not in options:
        assert (b"upgrade", b"IRC/6.9, websocket") in fields
        assert b"upgrade" in options


# -- what handlers and callers may put in a head ---------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        (b"X-A", b"1", None),
        (b"X-A", b"obs-text \xe9 and\ttab", None),
        (b"X A", b"1", ValueError),
        (b"", b"1", ValueError),
        (b"X-A", b"a\r\nInjected: 1", ValueError),
        (b"X-A", b"a\nb", ValueError),
        (b"X-A", b"a\x00b", ValueError),
        (b"X-A", b"a\x01b", ValueError),
        (b"X-A", b"a\x7fb", ValueError),
        (b"Content-Length", b"1", ValueError),
        (b"transfer-encoding", b"chunked", ValueError),
        ("X-A", b"1", TypeError),
        (b"X-A", "1", TypeError),
    ],
)
def test_headerFieldsAreCheckedBeforeTheyAreWritten(
    name: Any, value: Any, error: type[Exception] | None
) -> None:
    forbidden = frozenset([b"content-length", b"transfer-encoding"])
    if error is None:
        assert checkHeaders([(name, value)], forbidden, "Reject") == ((name, value),)
    else:
        with pytest.raises(error):
            checkHeaders([(name, value)], forbidden, "Reject")


# -- the client's reading of a response --------------------------------------------


@pytest.mark.parametrize(
    ("head", "status", "fields"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x", 101, [(b"Upgrade", b"x")]),
        (b"HTTP/1.0 403", 403, []),
        (b"HTTP/1.1 101 \r\nA:  1 \r\nB:", 101, [(b"A", b"1"), (b"B", b"")]),
        (b"HTTP/1.1 101 OK\r\nA: 1\r\n  2\r\n\tthree", 101, [(b"A", b"1 2 three")]),
        (b"HTTP/1.1 101 OK\r\n folded first\r\nA: 1", 101, [(b"A", b"1")]),
        (b"HTTP/1.1 101 OK\r\nBad Name: 1\r\n more\r\nA: 1", 101, [(b"A", b"1")]),
        (b"HTTP/1.1 101 OK\r\nNoColon\r\n: empty name", 101, []),
        (b"HTTP/2 101 OK", 0, []),
        (b"ICY 200 OK", 0, []),
        (b"HTTP/1.1 1010 OK", 0, []),
        (b"HTTP/1.1junk 101 OK", 0, []),
        (b"HTTP/1.x 101 OK", 0, []),
        (b"HTTP/1.1 101", 101, []),
        (b"HTTP/1.1 10 OK", 0, []),
        (b"HTTP/1.1 abc OK", 0, []),
        (b"", 0, []),
    ],
)
def test_aResponseHeadIsReadAsRFC9112Says(
    head: bytes, status: int, fields: list[tuple[bytes, bytes]]
) -> None:
    assert parseResponseHead(head) == (status, fields)


@settings(max_examples=300, deadline=None)
@given(
    code=st.integers(100, 599),
    fields=st.lists(
        st.tuples(
            st.text("abcXYZ-_!#", min_size=1, max_size=8).map(str.encode),
            st.binary(max_size=12).filter(lambda v: not set(v) & set(b"\r\n\x00")),
        ),
        max_size=5,
    ),
)
def test_theClientReadsAResponseHeadAsH11Does(code: int, fields: list[tuple[bytes, bytes]]) -> None:
    head = b"\r\n".join([b"HTTP/1.1 %d Reason" % code, *(n + b": " + v for n, v in fields)])
    status, read = parseResponseHead(head)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(head + b"\r\n\r\n")
    try:
        response = client.next_event()
    except h11.RemoteProtocolError:
        return  # h11 refuses more than the client does (control bytes in values)
    assert status == response.status_code
    assert [(n.lower(), v) for n, v in read] == list(response.headers)


@pytest.mark.parametrize(
    ("fields", "product", "wrong"),
    [
        ([(b"Connection", b"Upgrade"), (b"Upgrade", b"irc/6.9")], b"irc/6.9", ""),
        ([(b"connection", b"keep-alive, UPGRADE"), (b"upgrade", b"IRC/6.9, x")], b"IRC/6.9", ""),
        ([(b"Upgrade", b"IRC/6.9")], b"", "101 without the upgrade connection option"),
        (
            [(b"Connection", b"upgrade"), (b"Upgrade", b"IRC/6.90")],
            b"",
            "101 names a protocol that was not offered",
        ),
        (
            [(b"Connection", b"upgrade"), (b"Upgrade", b"x, IRC/6.9")],
            b"",
            "101 names a protocol that was not offered",
        ),
        ([(b"Connection", b"upgrade")], b"", "101 names a protocol that was not offered"),
    ],
)
def test_a101IsCheckedAgainstWhatWasOffered(
    fields: list[tuple[bytes, bytes]], product: bytes, wrong: str
) -> None:
    offered = {(b"irc", b"6.9"): b"IRC/6.9"}
    assert checkSwitch(fields, offered) == (product, wrong)


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=30), max_size=5),
    cut=st.integers(0, 400),
    extension=st.booleans(),
)
def test_aChunkedBodyIsWholeOnlyOnceItsLastChunkArrived(
    chunks: list[bytes], cut: int, extension: bool
) -> None:
    ext = b";a=b" if extension else b""
    encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks) + b"0\r\n\r\n"
    assert dechunk(encoded) == b"".join(chunks)
    if cut < len(encoded) - 2:  # up to the last chunk's size line: incomplete
        assert dechunk(encoded[:cut]) is None or encoded[:cut].endswith(b"0\r\n")


# -- the fast path's heads, against HTTPChannel and h11 ------------------------------
#
# plainUpgradeHead is the one parser of the heads it accepts. Whatever it
# accepts, Twisted's HTTPChannel must accept too and read the same way
# (method, target, version, fields, no body, and the next request starting
# at the same byte), and so must h11; whatever it refuses goes to
# HTTPChannel whole. The heads are generated around a valid upgrade request.

_METHODS = [b"GET", b"GET", b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"get", b"G@T",
            b"M-SEARCH", b""]  # fmt: skip
_TARGETS = [b"/", b"/", b"/room?x=1", b"*", b"http://x/a", b"/a b", b"/\x7f", b"/\xe9", b"",
            b"/%00", b"/\x01", b"/\x80", b"/\xb0"]  # fmt: skip
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.10", b"http/1.1",
             b"HTTP/2.0", b"HTTP/1.1 "]  # fmt: skip
_ODD = [
    b"host: x", b"Host:x", b"Host:  x  ", b"Host : x", b"Host\t: x", b"\tHost: x", b"Host: a b",
    b"Host: a@b", b"Host: [::1]:80", b"Host: x", b"Host:", b"connection: keep-alive, upgrade",
    b"Connection: close", b"Connection: Upgrade, close", b"Upgrade: IRC/6.9", b"upgrade: websocket",
    b"Upgrade:", b"Upgrade: ,,", b"Content-Length: 0", b"Content-Length: 3",
    b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"X-Obs: \x80\xff", b"X-Ctl: a\x01b",
    b"X-Del: a\x7fb", b"X-Nul: a\x00b", b"X-Cr: a\rb", b"X-Lf: a\nb", b"X-Empty:", b": novalue",
    b"X(Y): z", b"Bad Name: v", b"NoColon", b" folded", b"X-Tab:\tv\t", b"User-Agent: t",
    b"WWW-Authenticate: x", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
]  # fmt: skip
_SECOND = b"GET /second HTTP/1.1\r\nHost: y\r\n\r\n"


def generatedHead(rng: random.Random) -> bytes:
    """An upgrade request head, perhaps mutated, then a second request."""

    def part(usual: bytes, odd: list[bytes]) -> bytes:
        return rng.choice(odd) if rng.random() < 0.25 else usual

    line = b" ".join([part(b"GET", _METHODS), part(b"/", _TARGETS), part(b"HTTP/1.1", _VERSIONS)])
    if rng.random() < 0.05:
        line = line.replace(b" ", b"  ", 1)
    fields = [b"Host: x", b"Connection: Upgrade", b"Upgrade: IRC/6.9"]
    if rng.random() < 0.1:
        del fields[rng.randrange(len(fields))]
    fields += rng.sample(_ODD, rng.choice([0, 0, 1, 1, 2]))
    rng.shuffle(fields)
    if rng.random() < 0.05:
        fields.append(b"X-Long: " + b"v" * rng.choice([100, 16 * 1024]))
    head = b"\r\n".join([line, *fields])
    if rng.random() < 0.05:
        head = b"\r\n" + head  # an empty line first: RFC 9112 §2.2 lets a server skip it
    return head + b"\r\n\r\n" + _SECOND


class _Recorded(Request):
    seen: list[tuple[bytes, bytes, bytes, dict[bytes, list[bytes]], bytes]]

    def process(self) -> None:
        assert self.content is not None
        fields = dict(self.requestHeaders.getAllRawHeaders())
        self.seen.append((self.method, self.uri, self.clientproto, fields, self.content.read()))
        self.finish()


def twistedReads(data: bytes) -> list[Any]:
    """The requests a plain HTTPChannel reads from ``data``, in order."""
    seen: list[Any] = []
    recorded = type("Recorded", (_Recorded,), {"seen": seen})
    channel = HTTPChannel()
    channel.requestFactory = recorded
    channel.makeConnection(StringTransport())
    channel.dataReceived(data)
    channel.connectionLost(None)  # type: ignore[arg-type]
    return seen


def h11Reads(data: bytes) -> tuple[Any, bytes] | None:
    """The first request h11 reads from ``data``, and the bytes after it; None if refused."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    try:
        request = server.next_event()
        end = server.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request) or not isinstance(end, h11.EndOfMessage):
        return None
    return request, server.trailing_data[0]


def plainReads(data: bytes) -> _core.PlainHead | None:
    return plainUpgradeHead(data, HTTPChannel.maxHeaders, HTTPChannel.totalHeadersSize,
                            parseRequestLine, canonicalName, CANONICAL_NAMES)  # fmt: skip


def differential(count: int, seed: int) -> dict[str, int]:
    """
    Read ``count`` generated heads three ways; fail on the first that the
    fast path reads differently from HTTPChannel or h11. The figures: how
    many each accepted.
    """
    rng = random.Random(seed)
    figures = dict.fromkeys(["heads", "plain", "twisted", "h11", "twistedNotPlain"], 0)
    for _ in range(count):
        data = generatedHead(rng)
        plain, twisted, other = plainReads(data), twistedReads(data), h11Reads(data)
        figures["heads"] += 1
        figures["twisted"] += bool(twisted)
        figures["h11"] += other is not None
        if plain is None:
            figures["twistedNotPlain"] += bool(twisted)
            continue
        figures["plain"] += 1
        # Twisted reads the same request, with no body, then the second one.
        assert twisted[:1] == [(plain.method, plain.target, plain.version, plain.fields, b"")], data
        if b"close" not in connectionOptions(plain.fields.get(b"Connection", ())):
            assert [request[1] for request in twisted] == [plain.target, b"/second"], data
        assert plain.rest == _SECOND, data
        # And so does h11.
        assert other is not None, data
        request, rest = other
        assert (request.method, request.target) == (plain.method, plain.target), data
        assert request.http_version == plain.version[5:], data
        h11Fields: dict[bytes, list[bytes]] = {}
        for name, value in request.headers:
            h11Fields.setdefault(name, []).append(value)
        assert h11Fields == {name.lower(): values for name, values in plain.fields.items()}, data
        assert rest == _SECOND, data
    return figures


def test_theFastPathReadsOnlyHeadsThatHTTPChannelAndH11ReadTheSame() -> None:
    figures = differential(5000, seed=8301)
    # The generator exercises both sides of the rule: heads the fast path
    # reads, and heads only HTTPChannel reads (which the fast path leaves to it).
    assert figures["plain"] >= 200, figures
    assert figures["twistedNotPlain"] >= 200, figures


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120).map(lambda tail: b"GET / HTTP/1.1\r\nUpgrade: x\r\n" + tail))
def test_anyBytesTheFastPathReadsHTTPChannelReadsTheSame(data: bytes) -> None:
    plain = plainReads(data)
    if plain is not None:
        [first, *_] = twistedReads(data)
        assert first == (plain.method, plain.target, plain.version, plain.fields, b"")


if __name__ == "__main__":
    print(differential(5000, seed=8301))
