"""
h2c (RFC 7540 §3.2) over in-memory connections, with the ``h2`` library as a
scripted client: CONFORMANCE.md section N and UPG-70.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.resource import ForbiddenResource, Resource

from upgradable import UpgradeRegistry
from upgradable.protocols.h2c import H2CHandler, decodeSettings

from .helpers import EchoRequestResource, Server, parseResponses

CURL_SETTINGS = b"AAMAAABkAAQAAQAAAAIAAAAA"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_EMPTY = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def h2cRequest(
    settings: list[bytes] | None = None,
    method: bytes = b"GET",
    path: bytes = b"/",
    connection: bytes = b"Upgrade, HTTP2-Settings",
    extra: bytes = b"",
) -> bytes:
    lines = [
        method + b" " + path + b" HTTP/1.1",
        b"Host: x",
        b"Connection: " + connection,
        b"Upgrade: h2c",
    ]
    lines += [
        b"HTTP2-Settings: " + s for s in (settings if settings is not None else [CURL_SETTINGS])
    ]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def h2cServer(resource: Resource | None = None) -> Server:
    registry = UpgradeRegistry()
    registry.register(b"h2c", H2CHandler())
    if resource is None:
        return Server(registry=registry)
    return Server(registry=registry, resource=resource)  # type: ignore[arg-type]


class Client:
    """An h2 client on the other end of an upgraded in-memory connection."""

    def __init__(self, server: Server, initialWindow: int | None = None) -> None:
        self.server = server
        config = h2.config.H2Configuration(client_side=True)
        self.conn = h2.connection.H2Connection(config=config)
        if initialWindow is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initialWindow})
            self.conn.clear_outbound_data_buffer()
        self.settingsHeader = self.conn.initiate_upgrade_connection()
        self.events: list[Any] = []

    def request(self, body: bytes = b"", method: bytes = b"GET", path: bytes = b"/",
                extra: bytes = b"", together: bytes = b"") -> list[Any]:  # fmt: skip
        if body:
            extra += b"Content-Length: %d\r\n" % len(body)
        head = h2cRequest([self.settingsHeader], method, path, extra=extra)
        self.server.send(head + body + together)
        responses, rest = parseResponses(self.server.clear())
        assert [r.code for r in responses][-1] == 101, responses
        assert not responses[-1].header(b"http2-settings")
        self.first = rest
        return responses

    def exchange(self, data: bytes = b"") -> list[Any]:
        """Send ``data`` (plus anything h2 queued), run the clock, read events."""
        self.server.send(data + self.conn.data_to_send())
        step(self.server)
        incoming = self.first + self.server.clear()
        self.first = b""
        events = self.conn.receive_data(incoming) if incoming else []
        self.events += events
        return events

    def response(self, streamId: int) -> tuple[dict[bytes, bytes], bytes, bool]:
        headers: dict[bytes, bytes] = {}
        body, ended = b"", False
        for event in self.events:
            if getattr(event, "stream_id", None) != streamId:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, streamId)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        return headers, body, ended


def get(path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":path", path), (b":scheme", b"http"), (b":authority", b"x")]


def test_happyPathAnswersStream1ThenLaterStreams() -> None:
    """UPG-03, UPG-06: SETTINGS first; the original request on stream 1."""
    server = h2cServer()
    client = Client(server)
    client.request()
    # The first frame after the 101 is the server's SETTINGS (type 4, stream 0).
    assert client.first[3:9] == b"\x04\x00\x00\x00\x00\x00"
    client.exchange()
    headers, body, ended = client.response(1)
    assert headers[b":status"] == b"200"
    assert body == b"GET / b''"
    assert ended
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events)
    client.conn.send_headers(3, get(b"/three"), end_stream=True)
    client.exchange()
    assert client.response(3)[1] == b"GET /three b''"


def test_prefaceInTheSamePacketAsTheRequest() -> None:
    """UPG-60 (b): the client did not wait for the 101; nothing is lost."""
    server = h2cServer()
    client = Client(server)
    client.request(together=client.conn.data_to_send())
    client.exchange()
    headers, body, ended = client.response(1)
    assert (headers[b":status"], body, ended) == (b"200", b"GET / b''", True)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events)
    # The preface was read as the client's, not an error: no GOAWAY, still open.
    assert not [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert not server.closed


def test_requestBodyBecomesStream1Body() -> None:
    """UPG-59: the body is read over HTTP/1.1 and given to stream 1."""
    server = h2cServer()
    client = Client(server)
    client.request(body=b"hello", method=b"POST", path=b"/echo")
    client.exchange()
    assert client.response(1)[1] == b"POST /echo b'hello'"


def test_expectContinueComesBeforeThe101() -> None:
    server = h2cServer()
    client = Client(server)
    head = h2cRequest([client.settingsHeader], b"POST", b"/e",
                      extra=b"Expect: 100-continue\r\nContent-Length: 5\r\n")  # fmt: skip
    server.send(head)
    assert server.clear() == b"HTTP/1.1 100 Continue\r\n\r\n"
    server.send(b"hello")
    responses, client.first = parseResponses(server.clear())
    assert [r.code for r in responses] == [101]
    client.exchange()
    _headers, body, _ = client.response(1)
    assert body == b"POST /e b'hello'"
    # No second 100 inside HTTP/2.
    assert not [e for e in client.events if isinstance(e, h2.events.InformationalResponseReceived)]


def frames(data: bytes) -> list[Any]:
    """The HTTP/2 frames in ``data`` (which must hold whole frames)."""
    from hyperframe.frame import Frame

    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def step(server: Server, times: int = 50) -> None:
    """
    Run the calls that are due, ``times`` rounds. Clock.advance(0) would also
    run the calls they schedule for the same instant, without end while
    H2Connection's send loop reschedules itself with callLater(0).
    """
    clock = server.clock
    for _ in range(times):
        due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
        if not due:
            return
        for call in due:
            if call.active():
                clock.calls.remove(call)
                call.called = True
                call.func(*call.args, **call.kw)


def run(server: Server) -> bytes:
    step(server)
    return server.clear()


def test_headGetsHeadersWithoutData() -> None:
    """
    UPG-52: headers and no body on stream 1. (Twisted's H2Stream ends every
    response, HEAD included, with a DATA frame; for HEAD it is empty.)
    """
    server = h2cServer()
    server.send(h2cRequest(method=b"HEAD"))
    _, rest = parseResponses(server.clear())
    stream1 = [f for f in frames(rest + run(server)) if f.stream_id == 1]
    assert type(stream1[0]).__name__ == "HeadersFrame"
    assert b"".join(f.data for f in stream1 if type(f).__name__ == "DataFrame") == b""
    assert "END_STREAM" in stream1[-1].flags


@pytest.mark.parametrize(
    "settings",
    [[], [CURL_SETTINGS, CURL_SETTINGS], [b"!!!!"], [b"AAMAAABkAAQ"], [b"AAIAAAAC"], [b"AASAAAAA"],
     [b"AAUAAAAA"], [b"AAMAAABkAAQAAP//"]],
    ids=["missing", "duplicate", "not-base64", "not-6-byte-records", "enable-push-2",
         "window-2**31", "max-frame-0", "plain-base64"],
)  # fmt: skip
def test_missingDuplicateOrInvalidSettingsAnswerInHTTP11(settings: list[bytes]) -> None:
    """UPG-55, UPG-56: never a 101; the connection stays usable."""
    server = h2cServer()
    server.send(h2cRequest(settings), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    responses, rest = parseResponses(server.output())
    assert [r.code for r in responses] == [200, 200] and rest == b""
    assert [r.body for r in responses] == [b"GET / b''", b"GET /next b''"]
    assert not server.closed


@pytest.mark.parametrize("value", [b"AAMAAABkAAQAAP__", b"", CURL_SETTINGS, b"AAMAAABkAAQAAP__=="])
def test_unusualButValidSettingsUpgrade(value: bytes) -> None:
    """UPG-57."""
    server = h2cServer()
    server.send(h2cRequest([value]))
    responses, _ = parseResponses(server.output())
    assert [r.code for r in responses] == [101]


def test_connectionWithoutHTTP2SettingsOptionStillUpgrades() -> None:
    """UPG-55 (c), policy: lenient, as behind a default nginx."""
    server = h2cServer()
    server.send(h2cRequest(connection=b"upgrade"))
    responses, _ = parseResponses(server.output())
    assert [r.code for r in responses] == [101]


def test_clientSettingsAreApplied() -> None:
    """UPG-57: with INITIAL_WINDOW_SIZE=16 stream 1 gets 16 bytes until a WINDOW_UPDATE."""
    from hyperframe.frame import WindowUpdateFrame

    class Hundred(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return b"x" * 100

    server = h2cServer(Hundred())
    server.send(h2cRequest([b"AAQAAAAQ"]))
    _, rest = parseResponses(server.clear())
    sent = frames(rest + run(server))
    data = [f for f in sent if type(f).__name__ == "DataFrame"]
    assert sum(len(f.data) for f in data) == 16
    # Only one SETTINGS (the server's own), no ACK for the header's settings.
    assert [f for f in sent if type(f).__name__ == "SettingsFrame" and "ACK" in f.flags] == []
    update = WindowUpdateFrame(1, window_increment=1000).serialize()
    server.send(PREFACE + SETTINGS_EMPTY + update)
    later = frames(run(server))
    data += [f for f in later if type(f).__name__ == "DataFrame"]
    assert b"".join(f.data for f in data) == b"x" * 100
    assert "END_STREAM" in data[-1].flags


def test_dataOnStream1IsAStreamError() -> None:
    """UPG-58: stream 1 is half-closed (remote)."""
    server = h2cServer()
    client = Client(server)
    client.request()
    client.exchange()
    raw = b"\x00\x00\x03\x00\x00\x00\x00\x00\x01abc"
    server.send(raw)
    # RST_STREAM(STREAM_CLOSED) on stream 1, and nothing else: no GOAWAY.
    sent = [(type(f).__name__, f.stream_id, f.error_code) for f in frames(run(server))]
    assert sent == [("RstStreamFrame", 1, h2.errors.ErrorCodes.STREAM_CLOSED)]
    # A stream error, not a connection error: the connection serves stream 3.
    assert not server.closed
    client.conn.send_headers(3, get(b"/three"), end_stream=True)
    client.exchange()
    assert client.response(3)[1] == b"GET /three b''"


def test_http11AfterThe101IsAProtocolError() -> None:
    """UPG-60 (a): GOAWAY and close."""
    server = h2cServer()
    server.send(h2cRequest())
    server.clear()
    server.send(b"GET / HTTP/1.1\r\n\r\n")
    # One frame: GOAWAY(PROTOCOL_ERROR), stream 1 the last one processed.
    [goaway] = frames(server.output())
    assert isinstance(goaway, hyperframe.frame.GoAwayFrame)
    assert (goaway.error_code, goaway.last_stream_id) == (h2.errors.ErrorCodes.PROTOCOL_ERROR, 1)
    assert server.closed
    assert server.resource.seen == [(b"GET", b"/", b"")]  # stream 1 only; the GET is not served


def test_aProtocolErrorUnderLimitsAndDrainIsCountedOutOnce() -> None:
    """
    H2Connection calls its own connectionLost with an extra argument, then
    the transport calls it again: the counting wrappers take both.
    """
    registry = UpgradeRegistry()
    registry.register(b"h2c", H2CHandler())
    server = Server(registry=registry, limits={"maxUpgraded": 5})
    server.send(h2cRequest())
    assert server.site.limits.upgraded == 1
    assert len(server.site.connections.upgraded) == 1
    server.send(b"GET / HTTP/1.1\r\n\r\n")
    assert server.closed
    server.protocol.connectionLost(Failure(ConnectionDone()))
    assert server.site.limits.upgraded == 0
    assert len(server.site.connections) == 0


def test_goingAwaySendsGoawayWithNoErrorAndCloses() -> None:
    server = h2cServer()
    server.send(h2cRequest())
    step(server)
    server.clear()
    drained = server.site.drain(0)
    server.clock.advance(0)
    goaway = [f for f in frames(server.output()) if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert [(f.error_code, f.last_stream_id) for f in goaway] == [(0, 1)]
    assert server.closed
    # Counted out when the transport is closed (the GOAWAY written), not
    # before: a drain that ended first would let the reactor drop it.
    assert len(server.site.connections.upgraded) == 1 and not drained.called
    server.protocol.connectionLost(Failure(ConnectionDone()))
    assert drained.called


def test_tlsConnectionsAreDeclined() -> None:
    """UPG-60 (c): h2c is for cleartext; TLS uses ALPN h2."""
    from dataclasses import replace

    from twisted.internet.address import IPv4Address
    from twisted.web.http_headers import Headers

    from upgradable import UpgradeRequest

    headers = Headers({b"http2-settings": [CURL_SETTINGS], b"host": [b"x"]})
    peer = IPv4Address("TCP", "127.0.0.1", 1)
    request = UpgradeRequest(b"GET", b"/", b"/", b"HTTP/1.1", headers, b"", (b"h2c",),
                             peer, peer, secure=True, site=object())  # fmt: skip
    assert H2CHandler().upgrade(request, b"h2c").__class__.__name__ == "Decline"
    assert (
        H2CHandler().upgrade(replace(request, site=None, secure=False), b"h2c").__class__.__name__
        == "Decline"
    )


def proxiedRequest(**fields: Any) -> Any:
    """A valid h2c upgrade request, as the handler gets it, with ``fields``."""
    from twisted.internet.address import IPv4Address
    from twisted.web.http_headers import Headers

    from upgradable import UpgradeRequest

    headers = Headers({b"http2-settings": [CURL_SETTINGS], b"host": [b"x"]})
    peer = IPv4Address("TCP", "127.0.0.1", 1)
    site = h2cServer().site
    return UpgradeRequest(b"GET", b"/", b"/", b"HTTP/1.1", headers, b"", (b"h2c",),
                          peer, peer, secure=False, site=site, **fields)  # fmt: skip


@pytest.mark.parametrize(
    "field",
    [b"Forwarded", b"Via", b"X-Forwarded-For", b"X-Forwarded-Host", b"X-Forwarded-Proto",
     b"X-Real-IP", b"x-forwarded-for"],
)  # fmt: skip
def test_aRequestWithAFieldThatProxiesAddIsDeclined(field: bytes) -> None:
    """The proxy that added it could not see the HTTP/2 streams that would
    follow, so a rule it enforces by path would hold for stream 1 only."""
    request = proxiedRequest()
    assert type(H2CHandler().upgrade(request, b"h2c")).__name__ == "Accept"
    request.headers.setRawHeaders(field, [b"127.0.0.1"])
    assert type(H2CHandler().upgrade(request, b"h2c")).__name__ == "Decline"
    assert type(H2CHandler(allowBehindProxy=True).upgrade(request, b"h2c")).__name__ == "Accept"


def test_aRequestThatCameOverThePROXYProtocolIsDeclined() -> None:
    request = proxiedRequest(proxyProtocol=True)
    assert type(H2CHandler().upgrade(request, b"h2c")).__name__ == "Decline"
    assert type(H2CHandler(allowBehindProxy=True).upgrade(request, b"h2c")).__name__ == "Accept"


def proxyServer(allowBehindProxy: bool = False) -> tuple[Any, Any]:
    """An h2c site behind an in-memory PROXY protocol wrapper, as a
    ``haproxy:`` endpoint builds it; its protocol and transport."""
    from twisted.internet.testing import StringTransport
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    from upgradable import UpgradableSite

    registry = UpgradeRegistry()
    registry.register(b"h2c", H2CHandler(allowBehindProxy))
    protocol = HAProxyWrappingFactory(
        UpgradableSite(EchoRequestResource(), registry)
    ).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


PROXY_V1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 8081\r\n"


@pytest.mark.parametrize("second", [False, True], ids=["first-request", "second-request"])
@pytest.mark.parametrize("allowed", [False, True], ids=["default", "allowBehindProxy"])
def test_h2cOverThePROXYProtocolIsAnsweredInHTTP11(second: bool, allowed: bool) -> None:
    """Through a PROXY protocol connection h2c is declined, whether the
    upgrade is the first request (the fast path) or a later one; with
    allowBehindProxy it switches."""
    protocol, transport = proxyServer(allowed)
    before = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" if second else b""
    protocol.dataReceived(PROXY_V1 + before + h2cRequest())
    responses, rest = parseResponses(transport.value())
    codes = [r.code for r in responses]
    assert codes == [200] * second + ([101] if allowed else [200]), transport.value()
    if not allowed:
        assert responses[-1].body == b"GET / b''" and rest == b""


def test_h2TokenIsNeverAnUpgrade() -> None:
    server = h2cServer()
    server.send(h2cRequest().replace(b"Upgrade: h2c", b"Upgrade: h2"))
    responses, _ = parseResponses(server.output())
    assert [r.code for r in responses] == [200]


def test_resourceSecurityIsTheSameOnEveryStream() -> None:
    """UPG-70: /admin is refused over HTTP/1.1, on stream 1 and on stream 3."""
    root = Resource()
    root.putChild(b"public", EchoRequestResource())
    root.putChild(b"admin", ForbiddenResource())
    server = h2cServer(root)
    server.send(b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
    [response], _ = parseResponses(server.clear())
    assert response.code == 403
    client = Client(server)
    client.request(path=b"/public")
    client.conn.send_headers(3, get(b"/admin"), end_stream=True)
    client.exchange()
    assert client.response(1)[0][b":status"] == b"200"
    assert client.response(3)[0][b":status"] == b"403"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", b""),
        (b"AAMAAABk", b"\x00\x03\x00\x00\x00\x64"),
        (b"AAMAAABkAAQAAP__", b"\x00\x03\x00\x00\x00\x64\x00\x04\x00\x00\xff\xff"),
        (b"AAMAAABk ", b"\x00\x03\x00\x00\x00\x64"),
        (b"A", None),
        (b"AAMAAABkAA", None),
    ],
)
def test_decodeSettings(value: bytes, expected: bytes | None) -> None:
    assert decodeSettings(value) == expected


def test_aFullSendBufferStopsReadingUntilItDrains() -> None:
    """
    When the transport's buffer is full, the connection stops reading the
    client (its PINGs wait in the socket instead of queueing answers), and
    reads again, answering, once the buffer drains.
    """
    server = h2cServer()
    client = Client(server)
    client.request()
    client.exchange()
    transport = server.transport
    connection = transport.producer
    assert transport.streaming and transport.producerState == "producing"
    connection.pauseProducing()  # what a full buffer makes the transport do
    assert transport.producerState == "paused"
    client.conn.ping(b"12345678")
    client.exchange()
    assert not any(isinstance(e, h2.events.PingAckReceived) for e in client.events)
    connection.resumeProducing()
    assert transport.producerState == "producing"
    client.exchange()
    assert [e.ping_data for e in client.events if isinstance(e, h2.events.PingAckReceived)] == [
        b"12345678"
    ]


def test_aResumeThatFillsTheBufferAgainLeavesReadingStopped() -> None:
    """
    What the connection writes when it resumes (its queued answers) may fill
    the buffer at once: reading then stays stopped.
    """
    server = h2cServer()
    client = Client(server)
    client.request()
    client.exchange()
    transport = server.transport
    connection = transport.producer
    connection.pauseProducing()
    client.conn.ping(b"12345678")
    client.exchange()
    write = transport.write

    def writeAndFill(data: bytes) -> None:
        write(data)
        connection.pauseProducing()  # the flushed answer fills the buffer again

    transport.write = writeAndFill  # type: ignore[method-assign]
    connection.resumeProducing()
    assert transport.producerState == "paused"
