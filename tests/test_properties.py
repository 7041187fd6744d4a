"""
Property tests: however the client's bytes are cut into reads, the new
protocol gets exactly the bytes after the request, and a declined upgrade
followed by another request yields both responses in order.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert ircFactory.last.data == trailing


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
