"""
WebSocket over in-memory connections: CONFORMANCE.md section O and the
RFC 6455 test vectors.
"""

from __future__ import annotations

import pytest

from upgradable import UpgradeRegistry
from upgradable.protocols.websocket import WebSocketHandler, WebSocketProtocol

from .helpers import Server, parseResponses

WS_REQ = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
WS_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
WS_HELLO_MASKED = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # RFC 6455 §5.7
WS_CLOSE_MASKED = b"\x88\x82\x37\xfa\x21\x3d\x34\x12"  # close 1000, same mask


class Echo(WebSocketProtocol):
    instances: list[Echo] = []

    def __init__(self) -> None:
        self.received: list[str | bytes] = []
        self.closed: list[tuple[int | None, str]] = []
        Echo.instances.append(self)

    def messageReceived(self, message: str | bytes) -> None:
        self.received.append(message)
        self.sendMessage(message)

    def connectionClosed(self, code: int | None, reason: str) -> None:
        self.closed.append((code, reason))


def wsServer(**options: object) -> Server:
    registry = UpgradeRegistry()
    registry.register(b"websocket", WebSocketHandler({b"/chat": Echo}, **options))  # type: ignore[arg-type]
    return Server(registry=registry)


def opened(**options: object) -> tuple[Server, Echo]:
    """A server whose WebSocket handshake is done, and its application."""
    server = wsServer(**options)
    server.send(WS_REQ)
    server.clear()
    return server, Echo.instances[-1]


def mask(
    payload: bytes, opcode: int = 0x1, fin: bool = True, key: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    header = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_rfcVectorsHandshakeEchoAndClose() -> None:
    """UPG-04: accept token, echo of the masked Hello, close answered then TCP close."""
    server = wsServer()
    server.send(WS_REQ, WS_HELLO_MASKED, WS_CLOSE_MASKED)
    responses, rest = parseResponses(server.output())
    [switch] = responses
    assert switch.code == 101
    assert switch.header(b"sec-websocket-accept") == [WS_ACCEPT]
    assert switch.header(b"upgrade") == [b"websocket"]
    assert switch.header(b"sec-websocket-protocol") == []
    assert switch.header(b"sec-websocket-extensions") == []
    assert rest == b"\x81\x05Hello" + b"\x88\x02\x03\xe8"
    assert server.closed


def test_frameInTheSamePacketAsTheHandshakeIsEchoed() -> None:
    """UPG-65: the case Twisted's and Autobahn's resources lose."""
    server = wsServer()
    server.send(WS_REQ + WS_HELLO_MASKED)
    assert parseResponses(server.output())[1] == b"\x81\x05Hello"


def test_unmaskedClientFrameIsClosedWith1002() -> None:
    """UPG-65: RFC 6455 §5.1."""
    server = wsServer()
    server.send(WS_REQ, b"\x81\x05Hello")
    rest = parseResponses(server.output())[1]
    assert rest == b"\x88\x1e\x03\xeaclient frames must be masked"  # close 1002, and only that
    assert Echo.instances[-1].received == []
    assert server.closed


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ((b"GET /chat", b"POST /chat"), 405),
        ((b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), 400),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"123"), 400),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"eHh4eHh4eHh4eHh4"), 400),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"<not Base64 data>"), 400),
        ((b"Sec-WebSocket-Version: 13\r\n",
          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: eHh4eHh4eHh4eHh4eHh4eA==\r\n"), 400),
        ((b"Sec-WebSocket-Version: 13\r\n", b""), 400),
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 99"), 426),
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 11"),
         400),
    ],
    ids=["post", "no-key", "short-key", "12-byte-key", "not-base64", "two-keys", "no-version",
         "version-8", "version-99", "two-versions"],
)  # fmt: skip
def test_invalidHandshakesNeverSwitch(change: tuple[bytes, bytes], code: int) -> None:
    """UPG-61, UPG-62."""
    server = wsServer()
    server.send(WS_REQ.replace(*change), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    responses, _rest = parseResponses(server.output())
    assert responses[0].code == code
    assert 101 not in [r.code for r in responses]
    if code == 405:
        assert responses[0].header(b"allow") == [b"GET"]
    if code == 426:
        assert responses[0].header(b"sec-websocket-version") == [b"13"]
        # RFC 9110 §15.5.22: a 426 carries Upgrade.
        assert responses[0].header(b"upgrade") == [b"websocket"]


def test_caseInsensitiveHandshakeAndTokenLists() -> None:
    """UPG-63."""
    server = wsServer()
    server.send(
        b"GET /chat HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\n"
        b"connection: keep-alive, Upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    [switch] = parseResponses(server.output())[0]
    assert switch.code == 101
    assert switch.header(b"upgrade") == [b"WebSocket"]
    assert switch.header(b"sec-websocket-accept") == [WS_ACCEPT]


@pytest.mark.parametrize(
    ("origins", "code"),
    [
        ([b"https://evil.example"], 403),
        ([b"https://example.com.hacked"], 403),
        ([b"https://example.com", b"https://example.com"], 400),
        ([b"https://example.com"], 101),
        ([], 101),
    ],
    ids=["foreign", "partial-match", "two-lines", "allowed", "missing"],
)
def test_originAllowList(origins: list[bytes], code: int) -> None:
    """UPG-64: cross-site WebSocket hijacking; a missing Origin is a non-browser client."""
    server = wsServer(allowedOrigins=["https://example.com"])
    extra = b"".join(b"Origin: " + o + b"\r\n" for o in origins)
    server.send(WS_REQ[:-2] + extra + b"\r\n")
    assert parseResponses(server.output())[0][0].code == code


def test_requireOriginRefusesRequestsWithoutOne() -> None:
    server = wsServer(allowedOrigins=["https://example.com"], requireOrigin=True)
    server.send(WS_REQ)
    assert parseResponses(server.output())[0][0].code == 403


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(b"chat, superchat", [b"superchat"]), (b"chat", []), (None, [])],
)
def test_subprotocolNegotiation(offered: bytes | None, chosen: list[bytes]) -> None:
    """UPG-64: one of the offered, never the list, never an unoffered one."""
    server = wsServer(subprotocols=["superchat", "other"])
    extra = b"Sec-WebSocket-Protocol: " + offered + b"\r\n" if offered else b""
    server.send(WS_REQ[:-2] + extra + b"\r\n")
    [switch] = parseResponses(server.output())[0]
    assert switch.code == 101
    assert switch.header(b"sec-websocket-protocol") == chosen


def test_permessageDeflateIsNegotiatedAndUsed() -> None:
    import zlib

    server = wsServer()
    server.send(
        WS_REQ[:-2]
        + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    [switch], _ = parseResponses(server.clear())
    [value] = switch.header(b"sec-websocket-extensions")
    assert value.startswith(b"permessage-deflate")
    compressor = zlib.compressobj(wbits=-15)
    payload = compressor.compress(b"compressed " * 20) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = mask(payload[:-4])
    server.send(bytes([frame[0] | 0x40]) + frame[1:])  # RSV1: compressed
    reply = server.clear()
    assert reply[0] == 0xC1  # FIN + RSV1 + text: the echo is compressed too
    assert Echo.instances[-1].received[-1] == "compressed " * 20


def test_compressionCanBeSwitchedOff() -> None:
    server = wsServer(compression=False)
    server.send(WS_REQ[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    [switch], _ = parseResponses(server.output())
    assert switch.header(b"sec-websocket-extensions") == []


def test_fragmentedMessagesAreReassembled() -> None:
    server, _ = opened()
    server.send(mask(b"frag", opcode=0x1, fin=False), mask(b"ment", opcode=0x0, fin=False))
    server.send(mask(b"\x00ping", opcode=0x9))  # a control frame in between
    server.send(mask(b"ed", opcode=0x0, fin=True))
    out = server.clear()
    assert out == b"\x8a\x05\x00ping" + b"\x81\x0afragmented"


def test_oversizedMessageIsClosedWith1009() -> None:
    server, _ = opened(maxMessageSize=100)
    server.send(mask(b"x" * 60, fin=False), mask(b"y" * 60, opcode=0x0))
    out = server.clear()
    assert out[:4] == b"\x88\x11\x03\xf1"  # close 1009 "message too big"
    assert server.closed


def test_serverInitiatedCloseAndPeerReply() -> None:
    server, app = opened()
    app.close(4000, "bye")
    assert server.clear() == b"\x88\x05\x0f\xa0bye"
    server.send(mask(b"\x0f\xa0", opcode=0x8))
    assert server.closed


def test_aPeerThatNeverAnswersTheCloseIsDroppedAfterFiveSeconds() -> None:
    server, app = opened()
    app.close()
    assert len(server.clock.getDelayedCalls()) == 1  # on the site's reactor
    server.clock.advance(4.9)
    assert not server.transport.disconnecting  # still waiting for the peer's close
    server.clock.advance(0.1)
    assert server.transport.aborted


def test_pathWithoutApplicationIsDeclined() -> None:
    server = wsServer()
    server.send(WS_REQ.replace(b"/chat", b"/elsewhere"))
    assert parseResponses(server.output())[0][0].code == 200


def test_bareDeflateOfferIsAccepted() -> None:
    """RFC 7692 §5: an offer without parameters gets a bare answer."""
    server = wsServer()
    server.send(WS_REQ[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    [switch], _ = parseResponses(server.output())
    assert switch.header(b"sec-websocket-extensions") == [b"permessage-deflate"]


def test_compressedMessagesCannotInflatePastTheLimit() -> None:
    """A small compressed frame that would inflate to 10 MB is closed with 1009."""
    import zlib

    server = wsServer(maxMessageSize=1000)
    server.send(WS_REQ[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    server.clear()
    compressor = zlib.compressobj(wbits=-15)
    bomb = compressor.compress(b"\0" * 10_000_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 20_000
    frame = mask(bomb[:-4], opcode=0x2)
    import tracemalloc

    tracemalloc.start()
    try:
        server.send(bytes([frame[0] | 0x40]) + frame[1:])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"inflating took {peak} bytes"
    out = server.clear()
    assert out[0] == 0x88 and out[2:4] == b"\x03\xf1"  # close 1009
    assert server.closed
    assert Echo.instances[-1].received == []


def test_bytesAfterTheCloseAreIgnored() -> None:
    """Over TLS bytes can still arrive after the close; they must not raise."""
    server = wsServer()
    server.send(WS_REQ, WS_CLOSE_MASKED, WS_HELLO_MASKED)
    assert server.closed
    # The close is answered; the Hello after it is neither delivered nor echoed.
    assert parseResponses(server.output())[1] == b"\x88\x02\x03\xe8"
    assert Echo.instances[-1].received == []


def test_aCloseWithoutACodeIsAnsweredWithoutOne() -> None:
    """RFC 6455 §5.5.1: the answer echoes the status code, and there is none."""
    server, app = opened()
    connection = app._connection
    server.send(mask(b"", opcode=0x8))
    assert server.clear() == b"\x88\x00"
    assert server.closed and connection is not None
    connection.connectionLost()  # as the transport does once closed
    assert app.closed == [(None, "")]


def test_aPingAfterOurCloseIsNotAnswered() -> None:
    """RFC 6455 §5.5.1: nothing is sent after a close frame."""
    server, app = opened()
    app.close(1001, "later")
    assert server.clear() == b"\x88\x07\x03\xe9later"
    server.send(mask(b"hi", opcode=0x9), WS_HELLO_MASKED)
    assert server.clear() == b""  # no pong, no echo
    assert app.received == ["Hello"]  # the peer's message still arrives


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_closingWithACodeNoPeerMaySendRaises(code: int) -> None:
    server, app = opened()
    with pytest.raises(ValueError, match="may not be sent"):
        app.close(code)
    assert server.clear() == b""


def test_aPingLongerThanAControlFrameRaises() -> None:
    server, app = opened()
    with pytest.raises(ValueError, match="125"):
        app.ping(b"x" * 126)
    app.ping(b"x" * 125)
    assert server.clear() == b"\x89\x7d" + b"x" * 125


def test_aProtocolErrorIsReportedToTheApplication() -> None:
    server, app = opened()
    connection = app._connection
    server.send(mask(b"\xff"))
    assert server.clear() == b"\x88\x1b\x03\xeftext message is not UTF-8"  # close 1007
    assert server.closed and connection is not None
    connection.connectionLost()
    assert app.closed == [(1007, "text message is not UTF-8")]


def test_theApplicationSeesTheHandshakesRequest() -> None:
    """The request is kept packed for the connection's life, and reads the same."""
    server = wsServer()
    server.send(WS_REQ.replace(b"/chat", b"/chat?room=1")[:-2] + b"Cookie: a=1\r\n\r\n")
    request = Echo.instances[-1].request
    assert (request.method, request.uri, request.path) == (b"GET", b"/chat?room=1", b"/chat")
    assert request.headers.getRawHeaders(b"cookie") == [b"a=1"]
    assert request.headers.getRawHeaders(b"sec-websocket-key") == [b"dGhlIHNhbXBsZSBub25jZQ=="]


@pytest.mark.parametrize("subprotocol", ["two words", "chat\r\nX: y", "", "dé", b"chat"])
def test_aSubprotocolThatIsNoTokenIsRefusedAtOnce(subprotocol: object) -> None:
    """RFC 6455 §4.1; the 101's fields are not checked again per handshake."""
    with pytest.raises(ValueError, match="token"):
        WebSocketHandler(subprotocols=[subprotocol])  # type: ignore[list-item]


def test_theAcceptIsTheOneAcceptWouldMake() -> None:
    from upgradable import Accept

    server = wsServer(subprotocols=["chat"])
    registry = server.registry
    [(_, handler)] = registry.offers([b"websocket"])[1]
    from .test_decisions import fastPathRequest

    request = fastPathRequest(
        WS_REQ[:-2] + b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: "
        b"permessage-deflate; server_max_window_bits=10\r\n\r\n"
    )
    decision = handler.upgrade(request, b"websocket")
    assert isinstance(decision, Accept)
    assert decision == Accept(decision.protocol, decision.headers)
    assert dict(decision.headers) == {
        b"Sec-WebSocket-Accept": WS_ACCEPT,
        b"Sec-WebSocket-Protocol": b"chat",
        b"Sec-WebSocket-Extensions": b"permessage-deflate; server_max_window_bits=10",
    }


@pytest.mark.parametrize(
    "frame", [mask(b"\x03\xe8", opcode=0x8), mask(b"\xff")], ids=["peer-close", "peer-error"]
)
def test_aPeerThatStopsReadingAfterTheCloseIsAbortedAfterFiveSeconds(frame: bytes) -> None:
    """Our answer may never be read; the connection does not wait for it forever."""
    server, _ = opened()
    server.send(frame)
    assert server.transport.disconnecting and not server.transport.aborted
    server.clock.advance(4.9)
    assert not server.transport.aborted
    server.clock.advance(0.1)
    assert server.transport.aborted


def deflatedMessage(payload: bytes) -> bytes:
    import zlib

    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = mask(data[:-4], opcode=0x2)
    return bytes([frame[0] | 0x40]) + frame[1:]  # RSV1: compressed


class PausingEcho(Echo):
    """An echo whose first answer fills the transport's buffer."""

    pauses = 0
    resumes = 0

    def messageReceived(self, message: str | bytes) -> None:
        super().messageReceived(message)
        assert self._connection is not None
        if len(self.received) == 1:
            self._connection.transport.producer.pauseProducing()

    def pauseProducing(self) -> None:
        self.pauses += 1
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.resumes += 1
        super().resumeProducing()


def test_aFullBufferStopsParsingTheRestOfARead() -> None:
    """
    When an answer fills the transport's buffer, the messages left in the
    same read are neither inflated nor delivered until it drains, and
    reading stops meanwhile; the application sees one pause and one resume.
    """
    registry = UpgradeRegistry()
    registry.register(b"websocket", WebSocketHandler({b"/chat": PausingEcho}))
    server = Server(registry=registry)
    server.send(WS_REQ[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    server.clear()
    app = Echo.instances[-1]
    assert isinstance(app, PausingEcho)
    messages = [bytes([n]) * (256 * 1024) for n in range(8)]
    server.send(b"".join(deflatedMessage(m) for m in messages))
    assert app.received == messages[:1]
    assert server.transport.producerState == "paused"
    server.transport.producer.resumeProducing()
    assert app.received == messages
    assert server.transport.producerState == "producing"
    assert (app.pauses, app.resumes) == (1, 1)


def test_aReadWhilePausedIsParsedWhole() -> None:
    """
    An application that goes on reading while paused gets every message of
    each read: nothing piles up unparsed behind the pause.
    """

    class KeepReading(Echo):
        def pauseProducing(self) -> None:
            pass  # its choice: go on reading

    registry = UpgradeRegistry()
    registry.register(b"websocket", WebSocketHandler({b"/chat": KeepReading}))
    server = Server(registry=registry)
    server.send(WS_REQ[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    server.clear()
    app = Echo.instances[-1]
    server.transport.producer.pauseProducing()
    messages = [bytes([n]) * (256 * 1024) for n in range(4)]
    server.send(b"".join(deflatedMessage(m) for m in messages))
    assert app.received == messages
