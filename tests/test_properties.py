"""
Property tests: however the client's bytes are cut into reads, the new
protocol gets exactly the bytes after the request, and a declined upgrade
followed by another request yields both responses in order.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from upgradable import Accept, UpgradeRegistry

from .helpers import ECHO_REQ, IRC_REQ, chunks, parseResponses, standardServer

REQUESTS = st.sampled_from(
    [
        IRC_REQ,
        b"POST /p HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: foo, IRC/6.9"
        b"\r\nContent-Length: 7\r\n\r\npayload",
        b"PUT / HTTP/1.1\r\nHost: x\r\nUpgrade: IRC/6.9\r\nConnection: Upgrade\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"\r\n" + IRC_REQ.replace(b"GET /", b"OPTIONS *"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    request=REQUESTS,
    trailing=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=12),
)
def test_anySplitDeliversExactlyTheTrailingBytes(
    request: bytes, trailing: bytes, cuts: list[int]
) -> None:
    server, ircFactory = standardServer()
    stream = request + trailing
    server.send(*chunks(stream, (c for c in cuts if c < len(stream))))
    responses, rest = parseResponses(server.output())
    assert [r.code for r in responses] == [101]
    assert rest == b""
    protocol = ircFactory.last  # one protocol, connected once
    assert protocol.made == 1
    assert protocol.data == trailing
    assert server.resource.seen == []  # no request of the stream was served as HTTP


@settings(max_examples=300, deadline=None)
@given(
    trailing=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=12),
)
def test_anySplitOfAnEchoUpgradeEchoesTheTrailingBytes(trailing: bytes, cuts: list[int]) -> None:
    server, _ = standardServer()
    stream = ECHO_REQ + trailing
    server.send(*chunks(stream, (c for c in cuts if c < len(stream))))
    responses, rest = parseResponses(server.output())
    assert [r.code for r in responses] == [101]
    assert rest == trailing


@settings(max_examples=300, deadline=None)
@given(
    declined=st.sampled_from(
        [
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: nope/1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: IRC/6.9\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.8\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            b"HEAD /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n",
        ]
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
)
def test_anySplitOfADeclinedUpgradeThenARequestYieldsBothInOrder(
    declined: bytes, cuts: list[int]
) -> None:
    server, ircFactory = standardServer()
    stream = declined + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    server.send(*chunks(stream, (c for c in cuts if c < len(stream))))
    isHead = declined.startswith(b"HEAD")
    responses, rest = parseResponses(server.output(), heads=[0] if isHead else [])
    assert [r.code for r in responses] == [200, 200]
    if not isHead:
        assert responses[0].body.startswith(declined.split(b" ")[0] + b" /a ")
    assert responses[1].body == b"GET /b b''"
    assert rest == b""
    assert ircFactory.built == []
    # The resource saw the two requests, in the order they were sent, once each.
    method = declined.split(b" ")[0]
    assert server.resource.seen == [
        (method, b"/a", b"abc" if method == b"POST" else b""),
        (b"GET", b"/b", b""),
    ]


# -- the fast path and the usual path answer alike ----------------------------

_LINES = st.sampled_from(
    [
        b"Host: x",
        b"host: x",
        b"Host: a b",
        b"Host: x",  # twice: 400
        b"Connection: Upgrade",
        b"connection: keep-alive, upgrade",
        b"Connection: close",
        b"Upgrade: IRC/6.9",
        b"upgrade: nope/1, HTTP/2.0",
        b"Upgrade: irc/6.9, IRC/6.9",
        b"Upgrade: ,,",
        b"Content-Length: 0",
        b"Content-Length: 3",
        b"Transfer-Encoding: chunked",
        b"Expect: 100-continue",
        b"X-Odd: a\x00b",
        b"X-Odd: a\rb",
        b"X-Odd: a\nb",
        b"X-Odd\n: b",
        b"X-Tab:\tv\t",
        b"Bad Name: v",
        b"NoColon",
        b" folded: v",
        b"X-Empty:",
        b"User-Agent: t",
    ]
)
_REQUEST_LINES = st.sampled_from(
    [
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1",
        b"GET /room?x=1 HTTP/1.1",
        b"HEAD / HTTP/1.1",
        b"POST /p HTTP/1.1",
        b"GET / HTTP/1.0",
        b"CONNECT x:1 HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"G@T / HTTP/1.1",
        b"GET /a\nb HTTP/1.1",
        b"GET /a\x00b HTTP/1.1",
    ]
)


def _answers(handler: object) -> object:
    from twisted.internet.defer import succeed

    from upgradable import Decline, Reject

    from .helpers import RecordingProtocol

    return {
        "accept": lambda request, product: Accept(RecordingProtocol()),
        "decline": lambda request, product: Decline(),
        "reject": lambda request, product: Reject(403, body=b"no\n"),
        "rejectFields": lambda request, product: Reject(
            429, [(b"Connection", b"upgrade"), (b"retry-after", b"1")], b"{}", reason=b"Slow down"
        ),
        "rejectClose": lambda request, product: Reject(
            401, [(b"WWW-Authenticate", b"Basic")], close=True
        ),
        "deferred": lambda request, product: succeed(Accept(RecordingProtocol())),
        "raise": ValueError("boom"),
    }[handler]  # type: ignore[index]


_BASE = [b"Host: x", b"Connection: Upgrade", b"Upgrade: IRC/6.9"]


@st.composite
def _headLines(draw: st.DrawFn) -> list[bytes]:
    """A valid upgrade request's fields, maybe one left out, plus a few odd ones."""
    lines = list(_BASE)
    if draw(st.integers(0, 3)) == 0:
        del lines[draw(st.integers(0, len(lines) - 1))]
    lines += draw(st.lists(_LINES, max_size=3))
    return draw(st.permutations(lines))


@settings(max_examples=500, deadline=None)
@given(
    requestLine=_REQUEST_LINES,
    lines=_headLines(),
    trailing=st.binary(max_size=40),
    handler=st.sampled_from(
        ["accept", "decline", "reject", "rejectFields", "rejectClose", "deferred", "raise"]
    ),
)
def test_oneReadAndByteByByteGetTheSameAnswer(
    requestLine: bytes, lines: list[bytes], trailing: bytes, handler: str
) -> None:
    """A request in one read may take the fast path; byte by byte it never does."""
    from upgradable import UpgradeRegistry

    from .helpers import ScriptedHandler, Server

    stream = b"\r\n".join([requestLine, *lines]) + b"\r\n\r\n" + trailing
    seen = []
    for send in ("whole", "bytewise"):
        scripted = ScriptedHandler(_answers(handler))
        registry = UpgradeRegistry()
        registry.register(b"IRC/6.9", scripted)
        registry.register(b"HTTP/2.0", ScriptedHandler(_answers(handler)))
        server = Server(registry=registry)
        if send == "whole":
            server.send(stream)
        else:
            server.sendBytewise(stream)
        requests = [(r.method, r.uri, r.body, list(r.headers.getAllRawHeaders()), r.offered,
                     product) for r, product in scripted.requests]  # fmt: skip
        # Twisted's Date field reads the wall clock, which may tick between
        # the two runs.
        output = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", server.output())
        seen.append((output, server.closed, requests))
        server.protocol.connectionLost(Failure(ConnectionDone()))
    assert seen[0] == seen[1]


def test_aHeadAtTheSizeLimitGetsTheSameAnswerHoweverItIsCut() -> None:
    """
    At the exact limit (request line and fields, counted without their line
    ends, as HTTPChannel counts), one past it and one short: the answer
    does not depend on where the reads end, a read ending between a CR and
    its LF included.
    """
    from .helpers import RecordingFactory, Server

    limit = 200
    base = IRC_REQ[: -len(b"\r\n")]  # the fields, each line ending in CRLF
    counted = len(base) - 2 * base.count(b"\r\n")
    for size in (limit - 1, limit, limit + 1):
        pad = size - counted - len(b"X-Pad: ")
        head = base + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"
        cuts = [("whole", [head]), ("bytewise", [head[i : i + 1] for i in range(len(head))])]
        cuts += [(f"cut at {i}", [head[:i], head[i:]]) for i in range(1, len(head))
                 if head[i - 1 : i] == b"\r"]  # fmt: skip
        answers = set()
        for _, reads in cuts:
            registry = UpgradeRegistry()
            registry.register(b"IRC/6.9", RecordingFactory())
            server = Server(registry=registry, limits={"maxHeaderSize": limit})
            server.send(*reads)
            answers.add(server.output().split(b"\r\n", 1)[0])
        expected = b"HTTP/1.1 101 Switching Protocols" if size <= limit else b"HTTP/1.1 431 "
        assert len(answers) == 1, (size, answers)
        assert answers.pop().startswith(expected), size
