"""
The channel over an in-memory transport: negotiation (RFC 9110 §7.8), the
101 and the hand-over, bad input. Case numbers refer to CONFORMANCE.md.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from upgradable import (
    Accept,
    Decline,
    Reject,
    UpgradableHTTPChannel,
    UpgradableSite,
    UpgradeRegistry,
)

from .helpers import (
    ECHO_REQ,
    IRC_REQ,
    EchoRequestResource,
    RecordingFactory,
    RecordingProtocol,
    ScriptedHandler,
    Server,
    parseResponses,
    standardServer,
)


def irc(upgrade: bytes = b"IRC/6.9", connection: bytes = b"Upgrade", extra: bytes = b"") -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: "
        + connection
        + b"\r\nUpgrade: "
        + upgrade
        + b"\r\n"
        + extra
        + b"\r\n"
    )


def assertSwitched(server: Server, product: bytes) -> bytes:
    """The output is exactly one clean 101 naming ``product``; return the rest."""
    responses, rest = parseResponses(server.output())
    assert [r.code for r in responses] == [101], responses
    switch = responses[0]
    assert switch.version == b"HTTP/1.1"
    assert [v.lower() for v in switch.header(b"upgrade")] == [product.lower()]
    assert b"upgrade" in switch.tokens(b"connection")
    assert not switch.header(b"content-length")
    assert not switch.header(b"transfer-encoding")
    return rest


def assertNotSwitched(server: Server, codes: list[int]) -> list:
    responses, rest = parseResponses(server.output())
    assert [r.code for r in responses] == codes, responses
    assert rest == b""
    return responses


# -- A. happy paths ---------------------------------------------------------


class TestHandOver:
    def test_minimalUpgradeGivesTrailingBytesToProtocol(self) -> None:
        """UPG-01: one 101, then the IRC protocol gets exactly the later bytes."""
        server, ircFactory = standardServer()
        server.send(IRC_REQ, b"NICK a\r\n")
        assert assertSwitched(server, b"IRC/6.9") == b""
        protocol = ircFactory.last
        assert protocol.made == 1
        assert protocol.data == b"NICK a\r\n"
        assert not server.closed

    def test_echoIsByteExactAndNeverParsesHTTP(self) -> None:
        """UPG-02 / UPG-07: HTTP-looking bytes after the switch are echoed verbatim."""
        server, _ = standardServer()
        payload = b"\x00\xff\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        server.send(ECHO_REQ, payload, b"x" * 65536)
        assert assertSwitched(server, b"HTTP/2.0") == payload + b"x" * 65536
        assert server.resource.seen == []  # the GET inside the payload reached no resource

    @pytest.mark.parametrize("way", ["whole", "bytewise", "split-head"])
    def test_trailingBytesArriveOnceWhateverTheChunking(self, way: str) -> None:
        """UPG-39/40/41: same packet, byte by byte, head split: same result."""
        server, ircFactory = standardServer()
        stream = IRC_REQ + b"NICK a\r\nUSER a 0 * :a\r\n"
        if way == "whole":
            server.send(stream)
        elif way == "bytewise":
            server.sendBytewise(stream)
        else:
            server.send(IRC_REQ[:-1], IRC_REQ[-1:] + b"NICK a\r\n", b"USER a 0 * :a\r\n")
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.made == 1
        assert ircFactory.last.data == b"NICK a\r\nUSER a 0 * :a\r\n"

    @pytest.mark.parametrize("k", range(len(IRC_REQ) + 1))
    def test_headerTerminatorSplitAtEveryOffset(self, k: int) -> None:
        """UPG-41: the 101 comes after the last byte of the head, wherever it is cut."""
        server, ircFactory = standardServer()
        server.send(IRC_REQ[:k])
        if k < len(IRC_REQ):
            assert server.output() == b""
        server.send(IRC_REQ[k:] + b"DATA")
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.data == b"DATA"

    def test_megabytesInTheSamePacketDoNotCountAsHeaders(self) -> None:
        """Bytes after the head never hit the header-size limit."""
        server, _ = standardServer()
        blob = bytes(range(256)) * 8192  # 2 MiB, no CRLF structure
        server.send(ECHO_REQ + blob)
        assert assertSwitched(server, b"HTTP/2.0") == blob

    def test_handlerSeesTheOriginalRequest(self) -> None:
        """UPG-06: method, target, headers reach the handler; nothing is replayed."""
        protocol = RecordingProtocol()
        handler = ScriptedHandler(Accept(protocol))
        registry = UpgradeRegistry()
        registry.register(b"IRC/6.9", handler)
        server = Server(registry=registry)
        server.send(
            b"GET /room/42?x=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: IRC/6.9\r\nX-Nick: bob\r\n\r\n"
        )
        [(request, product)] = handler.requests
        assert (request.method, request.uri, request.path) == (b"GET", b"/room/42?x=1", b"/room/42")
        assert request.headers.getRawHeaders(b"x-nick") == [b"bob"]
        assert request.offered == (b"IRC/6.9",)
        assert request.secure is False
        assert product == b"IRC/6.9"
        assert protocol.data == b""

    @pytest.mark.parametrize("bytewise", [False, True], ids=["one read", "byte by byte"])
    def test_acceptHeadersAreWrittenInTheSingle101(self, bytewise: bool) -> None:
        """The Accept's fields are in the one write of the 101, on either path."""
        protocol = RecordingProtocol()
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(Accept(protocol, [(b"X-Extra", b"1")])))
        server = Server(registry=registry)
        if bytewise:
            server.sendBytewise(irc(b"x"))
        else:
            server.send(irc(b"x"))
        assert server.writes == [
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
            b"X-Extra: 1\r\n\r\n"
        ]

    @pytest.mark.parametrize("bytewise", [False, True], ids=["one read", "byte by byte"])
    def test_101IsOneWriteBeforeTheProtocolStarts(self, bytewise: bool) -> None:
        """UPG-07: the 101 is written before makeConnection, so protocol output follows it."""

        class Greeter(RecordingProtocol):
            def connectionMade(self) -> None:
                self.transport.write(b"hello")

        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(Accept(Greeter())))
        server = Server(registry=registry)
        if bytewise:
            server.sendBytewise(irc(b"x"))
        else:
            server.send(irc(b"x"))
        # Exactly two writes: the whole 101 head, then the protocol's greeting.
        assert server.writes == [
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
            b"hello",
        ]


# -- B. token matching ------------------------------------------------------


class TestTokens:
    @pytest.mark.parametrize("offer", [b"irc/6.9", b"Irc/6.9", b"IRC/6.9"])
    def test_nameIsCaseInsensitive(self, offer: bytes) -> None:
        """UPG-08: the 101 echoes the client's spelling."""
        server, _ = standardServer()
        server.send(irc(offer))
        responses, _ = parseResponses(server.output())
        assert responses[0].header(b"upgrade") == [offer]

    @pytest.mark.parametrize(
        "offer",
        [b"IRC/6.8", b"IRC/6.90", b"IRC/06.9", b"IRC/7", b"HTTP/2", b"HTTP/2.1"],
    )
    def test_versionMustMatchExactly(self, offer: bytes) -> None:
        """UPG-09: no switch, normal response, connection still serves."""
        server, _ = standardServer()
        server.send(irc(offer), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = assertNotSwitched(server, [200, 200])
        assert responses[1].body == b"GET /next b''"

    @pytest.mark.parametrize("offer", [b"IRC", b"IRC/", b"/6.9", b"h2c/1", b"IRC/6.9/x"])
    def test_unversionedAndDegenerateTokensNeverMatch(self, offer: bytes) -> None:
        """UPG-10: bare IRC is not IRC/6.9; invalid productions match nothing."""
        server, _ = standardServer()
        server.send(irc(offer))
        assertNotSwitched(server, [200])

    def test_firstSupportedOfferWins(self) -> None:
        """UPG-11."""
        server, ircFactory = standardServer()
        server.send(irc(b"foo/1, IRC/6.9, HTTP/2.0"), b"x")
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.data == b"x"

    @pytest.mark.parametrize(
        "line",
        [
            b"Upgrade: ,, \t IRC/6.9 \t,,\r\n",
            b"Upgrade:IRC/6.9\r\n",
            b"Upgrade: foo/1,IRC/6.9\r\n",
            b"Upgrade: IRC/6.9   \r\n",
            b"Upgrade: foo/1\r\nUpgrade: IRC/6.9\r\n",
        ],
    )
    def test_listSyntax(self, line: bytes) -> None:
        """UPG-12: OWS, empty elements, several field lines."""
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n" + line + b"\r\n")
        assertSwitched(server, b"IRC/6.9")

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b", ,",
            b"IRC/6.9; q=1",
            b"IRC 6.9",
            b"IRC/6.9/x",
            b'"IRC/6.9"',
            b"HTTP/1.1",
            b"h2",
            b"websocket2",
            b"IRC/6.9x",
            b"xIRC/6.9",
            "IRC/6.9\u212a".encode(),
            b"\xc4\xb0RC/6.9",
        ],
    )
    def test_malformedOrForeignTokensAreIgnored(self, value: bytes) -> None:
        """UPG-14/16: never a 101; no prefix, suffix or Unicode-folded match."""
        server, _ = standardServer()
        server.send(irc(value), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assertNotSwitched(server, [200, 200])


# -- C. Connection header ---------------------------------------------------


class TestConnectionOption:
    @pytest.mark.parametrize(
        "lines",
        [
            b"Connection: keep-alive, Upgrade\r\n",
            b"Connection: Upgrade, keep-alive\r\n",
            b"Connection: keep-alive,Upgrade\r\n",
            b"Connection: UPGRADE\r\n",
            b"Connection: keep-alive\r\nConnection: Upgrade\r\n",
        ],
    )
    def test_upgradeOptionAnywhere(self, lines: bytes) -> None:
        """UPG-17."""
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"Upgrade: IRC/6.9\r\n\r\n")
        assertSwitched(server, b"IRC/6.9")

    @pytest.mark.parametrize(
        "lines",
        [b"", b"Connection: keep-alive\r\n", b"Connection: upgraded\r\n", b"Connection: close\r\n"],
    )
    def test_upgradeWithoutConnectionOptionIsIgnored(self, lines: bytes) -> None:
        """UPG-18: never a 101 without the upgrade option."""
        server, ircFactory = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"Upgrade: IRC/6.9\r\n\r\n")
        assertNotSwitched(server, [200])
        assert ircFactory.built == []
        assert server.closed == (b"close" in lines)

    def test_connectionUpgradeWithoutUpgradeField(self) -> None:
        """UPG-19."""
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n")
        assertNotSwitched(server, [200])
        assert not server.closed

    @pytest.mark.parametrize(
        "connection",
        [b"Connection: Upgrade, close\r\n", b"Connection: close\r\nConnection: Upgrade\r\n"],
    )
    def test_switchWinsOverClose(self, connection: bytes) -> None:
        """UPG-21 (a)(b)."""
        server, ircFactory = standardServer()
        server.send(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + connection + b"Upgrade: IRC/6.9\r\n\r\nNICK a\r\n"
        )
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.data == b"NICK a\r\n"
        assert not server.closed

    def test_declinedUpgradeWithCloseCloses(self) -> None:
        """UPG-21 (c): close comes back into play; /next is never answered."""
        server, _ = standardServer()
        server.send(irc(b"nope/1", b"Upgrade, close"), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        [response] = assertNotSwitched(server, [200])
        assert response.tokens(b"connection") == [b"close"]
        assert server.closed

    def test_closeLaterInTheListIsSeen(self) -> None:
        """HTTPChannel reads only the first Connection line; we read them all."""
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive,close\r\n\r\n")
        assertNotSwitched(server, [200])
        assert server.closed


# -- D. HTTP version ----------------------------------------------------------


class TestVersions:
    @pytest.mark.parametrize("connection", [b"Upgrade", b"keep-alive, Upgrade"])
    def test_http10NeverSwitches(self, connection: bytes) -> None:
        """UPG-24."""
        server, ircFactory = standardServer()
        server.send(
            b"GET / HTTP/1.0\r\nHost: x\r\nConnection: "
            + connection
            + b"\r\nUpgrade: IRC/6.9\r\n\r\nNICK a\r\n"
        )
        responses, _rest = parseResponses(server.output())
        assert [r.code for r in responses] == [200]
        assert ircFactory.built == []
        assert server.closed

    @pytest.mark.parametrize(
        "line", [b"GET / http/1.1", b"GET / HTTP/01.1", b"GET / HTTP/2.0", b"PRI * HTTP/2.0"]
    )
    def test_badVersionSpellingIs400(self, line: bytes) -> None:
        """UPG-25."""
        server, _ = standardServer()
        server.send(line + b"\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n")
        [_response] = assertNotSwitched(server, [400])
        assert server.closed


# -- E. unknown and declined ------------------------------------------------


class TestDeclined:
    def test_unknownProtocolKeepsConnectionReusable(self) -> None:
        """UPG-26."""
        server, _ = standardServer()
        server.send(
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: totally-made-up/1.0\r\n\r\n"
        )
        server.send(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: yolo\r\n\r\n")
        responses = assertNotSwitched(server, [200, 200])
        assert [r.body for r in responses] == [b"GET /a b''", b"GET /b b''"]
        assert not server.closed

    def test_declineFallsBackToNextOffer(self) -> None:
        """UPG-27 (a)."""
        server, ircFactory = standardServer()
        failing = ScriptedHandler(Decline())
        server.registry.register(b"failing", failing)
        server.send(irc(b"failing, IRC/6.9"), b"x")
        assertSwitched(server, b"IRC/6.9")
        assert len(failing.requests) == 1
        assert ircFactory.last.data == b"x"

    def test_allDeclinedWithExpectGets100ThenNormalResponse(self) -> None:
        """UPG-27 (b)."""
        server, _ = standardServer()
        server.registry.register(b"failing", ScriptedHandler(Decline()))
        server.send(irc(b"failing", extra=b"Expect: 100-continue\r\n"))
        assert server.output().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
        assertNotSwitched(server, [100, 200])

    def test_upgradeOnLaterKeepAliveRequest(self) -> None:
        """UPG-28."""
        server, ircFactory = standardServer()
        server.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parseResponses(server.clear())[0][0].code == 200
        server.send(IRC_REQ + b"NICK a\r\n")
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.data == b"NICK a\r\n"

    def test_headIsDeclinedByPlainFactories(self) -> None:
        """UPG-52: a byte stream cannot answer HEAD; the HEAD gets a normal answer."""
        server, ircFactory = standardServer()
        server.send(IRC_REQ.replace(b"GET", b"HEAD", 1), b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        responses, _rest = parseResponses(server.output(), heads=[0])
        assert [r.code for r in responses] == [200, 200]
        assert responses[1].body == b"GET /b b''"
        assert ircFactory.built == []

    def test_optionsStarCanUpgrade(self) -> None:
        """UPG-53: OPTIONS * can be honoured by any protocol."""
        server, ircFactory = standardServer()
        server.send(IRC_REQ.replace(b"GET /", b"OPTIONS *", 1) + b"x")
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.data == b"x"

    def test_connectNeverSwitches(self) -> None:
        server, ircFactory = standardServer()
        server.send(
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nConnection: Upgrade\r\n"
            b"Upgrade: IRC/6.9\r\n\r\n"
        )
        assert b" 101 " not in server.output()
        assert ircFactory.built == []


# -- F/G. bodies and Expect ------------------------------------------------


class TestBodies:
    def test_contentLengthBodyIsConsumedBeforeTheSwitch(self) -> None:
        """UPG-29."""
        handler = ScriptedHandler(lambda request, product: Accept(RecordingProtocol()))
        registry = UpgradeRegistry()
        registry.register(b"HTTP/2.0", handler)
        server = Server(registry=registry)
        server.send(
            b"POST /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
            b"Upgrade: HTTP/2.0\r\nContent-Length: 15\r\n\r\nsweet post bodyHot diggity dogg"
        )
        [(request, _)] = handler.requests
        assert request.body == b"sweet post body"
        assertSwitched(server, b"HTTP/2.0")

    def test_echoGetsOnlyBytesAfterTheBody(self) -> None:
        server, _ = standardServer()
        server.send(
            b"POST /demo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: HTTP/2.0\r\nContent-Length: 15\r\n\r\nsweet post bodyHot diggity dogg"
        )
        assert assertSwitched(server, b"HTTP/2.0") == b"Hot diggity dogg"

    def test_emptyBodyThenRawData(self) -> None:
        server, _ = standardServer()
        server.send(
            ECHO_REQ.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n") + b"some raw data"
        )
        assert assertSwitched(server, b"HTTP/2.0") == b"some raw data"

    def test_chunkedBodyIsConsumedBeforeTheSwitch(self) -> None:
        handler = ScriptedHandler(lambda request, product: Accept(RecordingProtocol()))
        registry = UpgradeRegistry()
        registry.register(b"HTTP/2.0", handler)
        server = Server(registry=registry)
        server.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nAFTER"
        )
        assert handler.requests[0][0].body == b"hello"
        assertSwitched(server, b"HTTP/2.0")

    def test_slowBodyNoEarlySwitchNoLeak(self) -> None:
        """UPG-31."""
        server, _ = standardServer()
        server.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n"
            b"Content-Length: 10\r\n\r\n",
            b"01234",
        )
        assert server.output() == b""
        server.send(b"56789NEWPROTO")
        assert assertSwitched(server, b"HTTP/2.0") == b"NEWPROTO"

    def test_declinedUpgradeWithBody(self) -> None:
        """UPG-33."""
        server, _ = standardServer()
        server.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nContent-Length: 2\r\n"
            b"Upgrade: unknown\r\nContent-Type: application/json\r\n\r\n{}"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        responses = assertNotSwitched(server, [200, 200])
        assert responses[0].body == b"POST / b'{}'"
        assert responses[1].body == b"GET /next b''"

    def test_continueBeforeSwitchWithBody(self) -> None:
        """UPG-34."""
        server, _ = standardServer()
        server.send(
            b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n"
            b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        assert server.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
        server.send(b"bodyafter")
        responses, rest = parseResponses(server.output())
        assert [r.code for r in responses] == [100, 101]
        assert rest == b"after"

    @pytest.mark.parametrize("expect", [b"100-continue", b"100-Continue"])
    def test_continueBeforeSwitchWithoutBody(self, expect: bytes) -> None:
        """UPG-35."""
        server, _ = standardServer()
        server.send(irc(extra=b"Expect: " + expect + b"\r\n"))
        assert server.output().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 ")


# -- H. pipelining ----------------------------------------------------------


class TestPipelining:
    def test_pipelinedRequestIsAnsweredBeforeThe101(self) -> None:
        """UPG-36."""
        server, _ = standardServer()
        server.send(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\nhello"
        )
        responses, rest = parseResponses(server.output())
        assert [r.code for r in responses] == [200, 101]
        assert responses[0].body == b"GET /a b''"
        assert rest == b"hello"

    def test_slowPipelinedRequestDelaysThe101(self) -> None:
        """UPG-36 variant: /a finishes later; the 101 waits for it."""
        server, _ = standardServer()
        server.resource.delay = True
        server.send(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\nhello"
        )
        assert server.output() == b""
        server.resource.delay = False
        server.resource.release()
        responses, rest = parseResponses(server.output())
        assert [r.code for r in responses] == [200, 101]
        assert rest == b"hello"

    @pytest.mark.parametrize("trailing", [b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n", ECHO_REQ, IRC_REQ])
    def test_bytesAfterAcceptedUpgradeAreNeverHTTP(self, trailing: bytes) -> None:
        """UPG-37: exactly one 101; a second request is the new protocol's data."""
        server, _ = standardServer()
        server.send(ECHO_REQ + trailing)
        assert assertSwitched(server, b"HTTP/2.0") == trailing
        assert server.resource.seen == []


# -- asynchronous decisions -------------------------------------------------


class TestAsyncDecisions:
    def makeServer(self) -> tuple[Server, ScriptedHandler, list[Deferred]]:
        pending: list[Deferred] = []

        def later(request, product):
            d: Deferred = Deferred()
            pending.append(d)
            return d

        handler = ScriptedHandler(later)
        registry = UpgradeRegistry()
        registry.register(b"x", handler)
        return Server(registry=registry), handler, pending

    def test_bytesArrivingDuringTheDecisionAreKept(self) -> None:
        server, _, pending = self.makeServer()
        server.send(irc(b"x") + b"one", b"two")
        server.sendBytewise(b"three")
        assert server.output() == b""
        protocol = RecordingProtocol()
        pending[0].callback(Accept(protocol))
        server.send(b"four")
        assertSwitched(server, b"x")
        assert protocol.data == b"onetwothreefour"

    def test_manyBytesDuringTheDecisionPauseReading(self) -> None:
        server, _, pending = self.makeServer()
        server.send(irc(b"x"), b"a" * 70000)
        assert server.transport.producerState == "paused"
        protocol = RecordingProtocol()
        pending[0].callback(Accept(protocol))
        assert server.transport.producerState == "producing"
        assert server.transport.producer is None
        assert protocol.data == b"a" * 70000

    def test_asyncDeclineServesHTTPAndKeepsPipelinedRequests(self) -> None:
        server, _, pending = self.makeServer()
        server.send(irc(b"x") + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        pending[0].callback(Decline())
        responses = assertNotSwitched(server, [200, 200])
        assert responses[1].body == b"GET /next b''"

    def test_asyncRejectAnswersWithItsStatus(self) -> None:
        server, _, pending = self.makeServer()
        server.send(irc(b"x"))
        pending[0].callback(Reject(401, [(b"WWW-Authenticate", b'Basic realm="x"')], b"no\n"))
        [response] = assertNotSwitched(server, [401])
        assert response.header(b"www-authenticate") == [b'Basic realm="x"']
        assert response.body == b"no\n"
        assert not server.closed

    def test_rejectWithCloseCloses(self) -> None:
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(Reject(403, close=True)))
        server = Server(registry=registry)
        server.send(irc(b"x"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [response] = assertNotSwitched(server, [403])
        assert response.tokens(b"connection") == [b"close"]
        assert server.closed

    def test_coroutineHandler(self) -> None:
        protocol = RecordingProtocol()
        gate: Deferred = Deferred()

        async def decide(request, product):
            await gate
            return Accept(protocol)

        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(decide))
        server = Server(registry=registry)
        server.send(irc(b"x") + b"early")
        gate.callback(None)
        assertSwitched(server, b"x")
        assert protocol.data == b"early"

    def test_disconnectDuringDecisionCancelsIt(self) -> None:
        """UPG-44: a handler already started sees the connection lost."""
        cancelled: list[Deferred] = []
        d: Deferred = Deferred(cancelled.append)
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(d))
        server = Server(registry=registry)
        server.send(irc(b"x"))
        server.protocol.connectionLost(Failure(ConnectionDone()))
        assert cancelled == [d]
        assert server.clock.getDelayedCalls() == []
        assert server.output() == b""

    def test_lateAcceptAfterDisconnectIsDropped(self) -> None:
        """A handler that answers Accept even as it is cancelled gets no connection."""
        protocol = RecordingProtocol()
        d: Deferred = Deferred(lambda d: d.callback(Accept(protocol)))
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(d))
        server = Server(registry=registry)
        server.send(irc(b"x"))
        server.protocol.connectionLost(Failure(ConnectionDone()))
        assert protocol.made == 0
        assert protocol.transport is None
        assert server.output() == b""
        assert len(server.site.connections) == 0  # not counted as an upgraded connection


# -- failing handlers ---------------------------------------------------------


class TestFailingHandlers:
    @pytest.mark.parametrize(
        "answer",
        [ValueError("boom"), "not a decision", None],
        ids=["raises", "wrong-type", "none"],
    )
    def test_failingHandlerGets500AndConnectionGoesOn(self, logged, answer: object) -> None:
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(answer))
        server = Server(registry=registry)
        server.send(irc(b"x"), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = assertNotSwitched(server, [500, 200])
        assert b"Traceback" not in server.output()
        assert b"boom" not in server.output()
        if isinstance(answer, ValueError):
            assert len(logged.failures(ValueError)) == 1
        else:
            assert len(logged.failures(TypeError)) == 1
        assert responses[1].body == b"GET /next b''"

    def test_failedDeferredGets500(self, logged) -> None:
        d: Deferred = Deferred()
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(d))
        server = Server(registry=registry)
        server.send(irc(b"x"))
        d.errback(RuntimeError("backend down"))
        assertNotSwitched(server, [500])
        assert len(logged.failures(RuntimeError)) == 1

    def test_factoryWhoseBuildProtocolRaises(self, logged) -> None:
        class Broken(RecordingFactory):
            def buildProtocol(self, addr):
                raise KeyError("no")

        registry = UpgradeRegistry()
        registry.register(b"x", Broken())
        server = Server(registry=registry)
        server.send(irc(b"x"))
        assertNotSwitched(server, [500])
        assert len(logged.failures(KeyError)) == 1

    def test_factoryReturningNoneDeclines(self) -> None:
        class Refusing(RecordingFactory):
            def buildProtocol(self, addr):
                return None

        registry = UpgradeRegistry()
        registry.register(b"x", Refusing())
        server = Server(registry=registry)
        server.send(irc(b"x"))
        assertNotSwitched(server, [200])

    def test_protocolWhoseConnectionMadeRaisesIsClosed(self, logged) -> None:
        class Exploding(RecordingProtocol):
            def connectionMade(self) -> None:
                raise ZeroDivisionError()

        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(lambda r, p: Accept(Exploding())))
        server = Server(registry=registry)
        server.send(irc(b"x"))
        assertSwitched(server, b"x")
        assert server.closed
        assert len(logged.failures(ZeroDivisionError)) == 1


# -- J. lifetimes -----------------------------------------------------------


class TestLifetime:
    @pytest.mark.parametrize(
        "partial",
        [
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpg",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n"
            b"Content-Length: 10\r\n\r\n01234",
        ],
    )
    def test_disconnectMidHandshakeLeavesNothing(self, partial: bytes) -> None:
        """UPG-44."""
        server, ircFactory = standardServer()
        server.send(partial)
        server.protocol.connectionLost(Failure(ConnectionDone()))
        assert server.output() == b""
        assert ircFactory.built == []
        assert server.clock.getDelayedCalls() == []
        assert len(server.site.connections) == 0  # not counted as open any more
        assert server.site.limits.upgraded == 0

    def test_idleTimeoutNoLongerApplies(self) -> None:
        """UPG-46 (a)."""
        server, _ircFactory = standardServer(timeout=5)
        server.send(IRC_REQ)
        assert server.clock.getDelayedCalls() == []
        server.clock.advance(3600)
        assert not server.closed

    def test_idleTimeoutStillAppliesBeforeTheUpgrade(self) -> None:
        server, _ = standardServer(timeout=5)
        server.send(b"GET / HTTP/1.1\r\n")
        server.clock.advance(6)
        assert server.closed

    def test_protocolCanCloseAndRegisterProducer(self) -> None:
        """UPG-46 (b): no HTTP producer left; the protocol's own works."""
        server, _ = standardServer()
        server.send(ECHO_REQ)
        echo = server.transport.producer
        assert echo is not None and echo.__class__.__name__ == "EchoProtocol"
        echo.transport.loseConnection()
        assert server.closed

    @pytest.mark.parametrize("bytewise", [False, True], ids=["one read", "byte by byte"])
    def test_connectionLostReachesProtocolExactlyOnce(self, bytewise: bool) -> None:
        """
        UPG-46 (c): the transport's one connectionLost reaches the protocol
        once, with its reason, and nothing (a drain, its timers) calls it again.
        """
        server, ircFactory = standardServer()
        if bytewise:
            server.sendBytewise(IRC_REQ)
        else:
            server.send(IRC_REQ)
        assert ircFactory.last.lost == []
        reason = Failure(ConnectionDone())
        server.protocol.connectionLost(reason)
        assert ircFactory.last.lost == [reason]
        server.site.drain(0)
        server.site.closeAll()
        server.clock.advance(60)
        assert ircFactory.last.lost == [reason]
        assert len(server.site.connections) == 0

    @pytest.mark.parametrize("bytewise", [False, True], ids=["one read", "byte by byte"])
    def test_channelAndRequestAreFreedAfterTheSwitch(self, bytewise: bool) -> None:
        server, ircFactory = standardServer()
        requests: list[weakref.ref] = []

        class TrackedRequest(server.site.requestFactory):  # type: ignore[name-defined,misc]
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, **kwargs)
                requests.append(weakref.ref(self))

        server.site.requestFactory = TrackedRequest
        if bytewise:
            server.sendBytewise(IRC_REQ)
        else:
            server.send(IRC_REQ)
        # The new connection, and the HTTP stack if the usual path ran.
        first = server.protocol
        refs = [weakref.ref(first)]
        if first._http is not None:
            refs += [weakref.ref(first._http), weakref.ref(first._http._channel)]
        # Only the transport (here the test) and the new protocol refer to
        # the connection; drop the test's references.
        del first
        server.protocol = None  # type: ignore[assignment]
        gc.collect()
        assert len(requests) == (1 if bytewise else 0)  # none at all on the fast path
        assert all(r() is None for r in requests)
        assert len(refs) == (3 if bytewise else 1)
        assert all(r() is None for r in refs)
        assert ircFactory.last.made == 1


# -- K. limits and malformed input --------------------------------------------


class TestMalformed:
    def test_oversizedHeaderIs431(self) -> None:
        """UPG-47."""
        server, _ = standardServer()
        server.send(irc(extra=b"X-Pad: " + b"a" * 17000 + b"\r\n"))
        [_response] = assertNotSwitched(server, [431])
        assert server.closed

    def test_tooManyHeadersIs431(self) -> None:
        server, _ = standardServer()
        server.send(irc(extra=b"X-Foo: bar\r\n" * 501))
        assertNotSwitched(server, [431])
        assert server.closed

    def test_unterminatedRequestLineIs414(self) -> None:
        server, _ = standardServer()
        server.send(b"GET /" + b"a" * 16384)
        assertNotSwitched(server, [414])
        assert server.closed

    def test_headersOverTheTotalLimitAre431(self) -> None:
        server, _ = standardServer()
        server.send(irc(extra=b"X-Pad: " + b"a" * 9000 + b"\r\nX-Pad2: " + b"a" * 9000 + b"\r\n"))
        assertNotSwitched(server, [431])

    def test_nothingIsParsedAfterAnError(self) -> None:
        server, ircFactory = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Line\r\n\r\n" + IRC_REQ)
        server.send(IRC_REQ)
        assertNotSwitched(server, [400])
        assert ircFactory.built == []

    @pytest.mark.parametrize(
        "lines",
        [
            b"Host: x\r\nUpgrade IRC/6.9\r\nConnection: Upgrade\r\n",
            b"Host: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\x00\r\n",
            b"Host: x\r\nConnection: Upgrade\r\nUp grade: IRC/6.9\r\n",
            b"Host: x\r\nConnection: Upgrade\r\nUpgrade : IRC/6.9\r\n",
            b"Connection: Upgrade\r\nUpgrade: IRC/6.9\r\n",
            b"Host: x\r\nHost: y\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n",
            b" Host: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n",
            b"Host: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n"
            b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
            b"Host: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\nContent-Length: -1\r\n",
        ],
        ids=[
            "no-colon",
            "nul",
            "space-in-name",
            "space-before-colon",
            "no-host",
            "two-hosts",
            "leading-whitespace",
            "cl-and-te",
            "bad-cl",
        ],
    )
    def test_malformedHeadersAre400AndClose(self, lines: bytes) -> None:
        """UPG-48, R15, R16, R17."""
        server, ircFactory = standardServer()
        server.send(b"GET / HTTP/1.1\r\n" + lines + b"\r\nNICK a\r\n")
        assertNotSwitched(server, [400])
        assert server.closed
        assert ircFactory.built == []

    @pytest.mark.parametrize(
        "data",
        [
            b"BEEP BOOP IRC/1234\r\n\r\n",
            b"GET/ HTTP/1.1\r\n\r\n",
            b"HELO relay.invalid\r\nMAIL FROM: <a@invalid>\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",
        ],
    )
    def test_nonHTTPFirstLineIs400(self, data: bytes) -> None:
        """UPG-49."""
        server, _ = standardServer()
        server.send(data)
        assertNotSwitched(server, [400])
        assert server.closed

    def test_badChunkedBodyIs400(self) -> None:
        server, ircFactory = standardServer()
        server.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        assertNotSwitched(server, [400])
        assert ircFactory.built == []
        assert server.closed
        server.protocol.connectionLost(Failure(ConnectionDone()))

    def test_oneLeadingEmptyLineIsIgnored(self) -> None:
        """RFC 9112 §2.2."""
        server, _ = standardServer()
        server.send(b"\r\n" + IRC_REQ)
        assertSwitched(server, b"IRC/6.9")

    def test_http10WithoutHostIsServed(self) -> None:
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.0\r\n\r\n")
        assertNotSwitched(server, [200])


# -- L. advertising -------------------------------------------------------


class TestAdvertising:
    def test_advertisesRegisteredProductsWhenEnabled(self) -> None:
        """UPG-51."""
        server, _ = standardServer(advertise=True)
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = assertNotSwitched(server, [200, 200])
        for response in responses:
            assert response.header(b"upgrade") == [b"IRC/6.9, HTTP/2.0"]
            assert b"upgrade" in response.tokens(b"connection")
        assert not server.closed

    def test_noAdvertisingByDefault(self) -> None:
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [response] = assertNotSwitched(server, [200])
        assert response.header(b"upgrade") == []

    def test_noAdvertisingOnAClosingResponse(self) -> None:
        server, _ = standardServer(advertise=True)
        server.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        [response] = assertNotSwitched(server, [200])
        assert response.header(b"upgrade") == []


def test_channelIsAnHTTPChannel() -> None:
    assert issubclass(UpgradableHTTPChannel, HTTPChannel)


def test_siteBuildsTheChannelInsideTwistedsALPNWrapper() -> None:
    from twisted.web.http import _GenericHTTPChannelProtocol

    site = UpgradableSite(ScriptedHandler(None), UpgradeRegistry())  # type: ignore[arg-type]
    protocol = site.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")  # not an upgrade: HTTP's
    assert isinstance(protocol._http, _GenericHTTPChannelProtocol)
    assert isinstance(protocol._http._channel, UpgradableHTTPChannel)
    assert protocol._http.site is site


def test_aSiteSubclassWithItsOwnChannelGetsItFromTheStart() -> None:
    class Channel(UpgradableHTTPChannel):
        pass

    class Site(UpgradableSite):
        def protocol(self) -> Any:
            from upgradable._site import _TrackedHTTPProtocol

            return _TrackedHTTPProtocol(Channel(self.registry, limits=self.limits))

    site = Site(ScriptedHandler(None), UpgradeRegistry())  # type: ignore[arg-type]
    assert isinstance(site.buildProtocol(None)._channel, Channel)


def test_aSiteWhoseProtocolIsReplacedOnTheInstanceServesThatProtocol() -> None:
    from twisted.web.http import _genericHTTPChannelProtocolFactory

    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", RecordingFactory())
    site = UpgradableSite(EchoRequestResource(), registry)
    site.protocol = lambda: _genericHTTPChannelProtocolFactory(site)  # type: ignore[method-assign]
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(IRC_REQ)
    assert transport.value().startswith(b"HTTP/1.1 200 OK")  # a plain HTTPChannel


def test_aSiteSubclassThatAdjustsBuildProtocolGetsTheHTTPStack() -> None:
    class Site(UpgradableSite):
        def buildProtocol(self, addr: Any) -> Any:
            protocol = super().buildProtocol(addr)
            protocol.timeOut = 5
            return protocol

    site = Site(ScriptedHandler(None), UpgradeRegistry())  # type: ignore[arg-type]
    protocol = site.buildProtocol(None)
    assert isinstance(protocol._channel, UpgradableHTTPChannel)
    assert protocol._channel.timeOut == 5


class TestUpgradeRequired:
    def makeServer(self) -> tuple[Server, RecordingFactory]:
        from twisted.web.resource import Resource

        from upgradable import UpgradeRequired

        server, ircFactory = standardServer()
        root = Resource()
        root.putChild(b"irc-only", UpgradeRequired([b"IRC/6.9"]))
        server.site.resource = root
        return server, ircFactory

    def test_plainRequestGets426ThenTheUpgradeWorks(self) -> None:
        """UPG-50."""
        server, ircFactory = self.makeServer()
        server.send(b"GET /irc-only HTTP/1.1\r\nHost: x\r\n\r\n")
        [response], _ = parseResponses(server.clear())
        assert (response.code, response.reason) == (426, b"Upgrade Required")
        assert response.header(b"upgrade") == [b"IRC/6.9"]
        assert b"upgrade" in response.tokens(b"connection")
        assert response.body == b"Upgrade Required\n"
        assert not server.closed
        server.send(IRC_REQ.replace(b"GET /", b"GET /irc-only") + b"NICK a\r\n")
        assertSwitched(server, b"IRC/6.9")
        assert ircFactory.last.data == b"NICK a\r\n"

    def test_productsAreValidated(self) -> None:
        from upgradable import UpgradeRequired

        with pytest.raises(ValueError):
            UpgradeRequired([])
        with pytest.raises(ValueError):
            UpgradeRequired([b"IRC/"])

    def test_426IsNotDoubleAdvertised(self) -> None:
        server, _ = self.makeServer()
        server.site.advertise = True
        server.send(b"GET /irc-only HTTP/1.1\r\nHost: x\r\n\r\n")
        [response], _ = parseResponses(server.output())
        assert response.header(b"upgrade") == [b"IRC/6.9"]
        assert response.header(b"connection") == [b"Upgrade"]


class Lines:
    """A site's log file that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, data: str) -> None:
        self.lines.append(data)

    def close(self) -> None:
        pass


class TestLogging:
    def test_upgradeIsInTheAccessLogWithStatus101(self) -> None:
        server, _ = standardServer()
        log = Lines()
        server.site.logFile = log
        server.send(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        server.send(IRC_REQ.replace(b"GET /", b"GET /chat"))
        assert len(log.lines) == 2
        assert '"GET /before HTTP/1.1" 200 ' in log.lines[0]
        assert '"GET /chat HTTP/1.1" 101 ' in log.lines[1]

    def test_anUpgradeIsRecordedOnceByItsAccessLineWhichNamesTheProduct(self, logged) -> None:
        server, _ = standardServer()
        log = Lines()
        server.site.logFile = log
        server.send(IRC_REQ.replace(b"GET /", b"GET /chat"))
        [line] = log.lines
        assert '"GET /chat HTTP/1.1" 101 - ' in line
        assert line.endswith(' "IRC/6.9"\n')
        assert not [e for e in logged.events if "Upgraded" in str(e.get("log_format"))]

    def test_theAccessLogGetsTheProductSwitchedTo(self) -> None:
        from upgradable import SwitchedRequest

        server, _ = standardServer()
        seen: list[SwitchedRequest] = []
        server.site.log = seen.append
        server.send(IRC_REQ.replace(b"GET /", b"GET /chat?x=1"))
        [request] = seen
        assert isinstance(request, SwitchedRequest)
        assert (request.product, request.code, request.method) == (b"IRC/6.9", 101, b"GET")
        assert (request.uri, request.path) == (b"/chat?x=1", b"/chat")
        assert request.getHeader(b"upgrade") == b"IRC/6.9"

    @pytest.mark.parametrize("split", [False, True], ids=["one read", "byte by byte"])
    def test_aSiteWithoutLogRecordsNoUpgrade(self, logged, split: bool) -> None:
        # Replacing Site.log is how a Twisted site keeps no access log; an
        # upgrade leaves no other record, on the fast and the usual path.
        server, irc = standardServer()
        server.site.log = lambda request: None
        request = IRC_REQ + b"NICK a\r\n"
        for chunk in [request[i : i + 1] for i in range(len(request))] if split else [request]:
            server.send(chunk)
        assertSwitched(server, b"IRC/6.9")
        assert irc.last.data == b"NICK a\r\n"
        assert not [e for e in logged.events if e.get("product")]


class TestReviewedEdges:
    @pytest.mark.parametrize("headers", [None, 0])
    def test_acceptHeadersMustBeASequence(self, headers: Any) -> None:
        with pytest.raises(TypeError):
            Accept(RecordingProtocol(), headers)

    def test_acceptNeedsAProtocol(self) -> None:
        with pytest.raises(TypeError, match="IProtocol"):
            Accept(RecordingFactory())  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "name", [b"Content-Length", b"transfer-encoding", b"Upgrade", b"Connection"]
    )
    def test_acceptMayNotSetFieldsTheChannelWrites(self, name: bytes) -> None:
        with pytest.raises(ValueError, match="may not set"):
            Accept(RecordingProtocol(), [(name, b"x")])

    @pytest.mark.parametrize("name", [b"Content-Length", b"Transfer-Encoding"])
    def test_rejectMayNotSetFraming(self, name: bytes) -> None:
        with pytest.raises(ValueError, match="may not set"):
            Reject(403, [(name, b"chunked")])

    @pytest.mark.parametrize("name", [b"X(", b"", b"A B", b"\xff"])
    def test_headerNamesMustBeTokens(self, name: bytes) -> None:
        with pytest.raises(ValueError):
            Reject(403, [(name, b"v")])

    def test_protocolFailingOnItsFirstBytesAfterALaterAcceptIsClosed(self, logged) -> None:
        class Fragile(RecordingProtocol):
            def dataReceived(self, data: bytes) -> None:
                raise RuntimeError("cannot take it")

        d: Deferred = Deferred()
        registry = UpgradeRegistry()
        registry.register(b"x", ScriptedHandler(d))
        server = Server(registry=registry)
        server.send(irc(b"x") + b"early")
        d.callback(Accept(Fragile()))
        assertSwitched(server, b"x")
        assert server.closed
        assert len(logged.failures(RuntimeError)) == 1

    def test_conformanceUnterminatedLineIsAnsweredAtOnce(self) -> None:
        """UPG-47 (c), exactly as the catalogue sends it."""
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\n" + b"a" * 16384)
        assertNotSwitched(server, [431])
        assert server.closed

    def test_tlsClientHelloWithoutCRLFIsRefusedAtOnce(self) -> None:
        """R19 (RFC 9931): the first octet 22 is not a method character."""
        server, _ = standardServer()
        server.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64))
        assertNotSwitched(server, [400])
        assert server.closed

    @pytest.mark.parametrize("host", [b"x, y", b"a b", b"user@x", b"x/y"])
    def test_invalidHostValueIs400(self, host: bytes) -> None:
        server, _ = standardServer()
        server.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assertNotSwitched(server, [400])


@pytest.mark.parametrize("subclass", [False, True], ids=["channel", "a subclass"])
def test_advertisingFollowsTheChannelsAdvertiseAttribute(subclass: bool) -> None:
    class Mine(UpgradableHTTPChannel):
        def __init__(self, registry: UpgradeRegistry, extra: int = 0) -> None:
            super().__init__(registry, advertise=True)
            self.extra = extra

    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", RecordingFactory())

    def answer(channel: UpgradableHTTPChannel) -> list[bytes]:
        channel.requestFactory = _Answered
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [response], _ = parseResponses(transport.value())
        return response.header(b"upgrade")

    made = (
        [Mine(registry, extra=1), Mine(registry)]
        if subclass
        else [
            UpgradableHTTPChannel(registry, advertise=True),
            UpgradableHTTPChannel(registry, True),
        ]
    )
    for channel in made:
        assert answer(channel) == [b"IRC/6.9"]
    silent = Mine(registry) if subclass else UpgradableHTTPChannel(registry, advertise=True)
    silent.advertise = False  # a channel attribute: it may change after construction
    assert answer(silent) == []
    assert answer(UpgradableHTTPChannel(registry)) == []


class _Answered(Request):
    def process(self) -> None:
        self.setResponseCode(204)
        self.finish()
