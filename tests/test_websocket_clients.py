"""
WebSocket with real clients over loopback: the ``websockets`` library, node's
``ws`` package, headless Chromium, and Twisted's own WebSocket resource run
side by side on the frame it loses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site

from upgradable import UpgradableSite, UpgradeRegistry
from upgradable.app._page import WelcomePage
from upgradable.app.tap import installedPlugins
from upgradable.protocols.websocket import WebSocketHandler, WebSocketProtocol

from .conftest import requirePeer
from .test_integration import (
    HOST,
    connect,
    inThread,
    readExactly,
    readUntilClosed,
)
from .test_websocket import WS_CLOSE_MASKED, WS_HELLO_MASKED, WS_REQ
from .test_wsframes import FINAL_ENDINGS, DeflatingClient, afterFinalBlocks

NODE_PEERS = Path(__file__).resolve().parent / "node"


class Echo(WebSocketProtocol):
    def messageReceived(self, message: str | bytes) -> None:
        if message == "close please":
            self.close(4001, "as you wish")
        else:
            self.sendMessage(message)


async def listen(description: str = f"tcp:0:interface={HOST}") -> Any:
    registry = UpgradeRegistry()
    registry.register(b"websocket", WebSocketHandler(default=Echo))
    plugins = [p for p in installedPlugins() if p.name == "websocket-echo"]
    return await serverFromString(reactor, description).listen(
        UpgradableSite(WelcomePage(plugins, auth=False), registry)
    )


def websocketsClient(url: str, compression: str | None) -> list[Any]:
    from websockets.sync.client import connect as wsConnect

    out: list[Any] = []
    with wsConnect(url, compression=compression, open_timeout=10) as ws:
        out.append(ws.response.headers.get("Sec-WebSocket-Extensions"))
        ws.send("hello")
        out.append(ws.recv(timeout=10))
        ws.send(bytes(range(256)) * 64)
        out.append(ws.recv(timeout=10))
        ws.send("close please")
        try:
            ws.recv(timeout=10)
        except Exception as closed:  # ConnectionClosedOK
            out.append((closed.rcvd.code, closed.rcvd.reason))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
@pytest_twisted.ensureDeferred
async def test_websocketsLibraryTextBinaryAndServerClose(compression: str | None) -> None:
    port = await listen()
    try:
        url = f"ws://{HOST}:{port.getHost().port}/anything"
        extensions, text, binary, closed = await inThread(websocketsClient, url, compression)
        assert (extensions or "").startswith("permessage-deflate") == (compression is not None)
        assert text == "hello"
        assert binary == bytes(range(256)) * 64
        assert closed == (4001, "as you wish")
    finally:
        await port.stopListening()


def websocketsBulk(url: str, compression: str | None) -> list[Any]:
    """Large messages sent back to back, fragments, and a ping, all at once."""
    from websockets.sync.client import connect as wsConnect

    sent: list[str | bytes] = [
        os.urandom(900_000),
        "κόσμε " * 90_000,  # 990 kB of UTF-8, under the 1 MiB limit
        b"\x00" * 1_000_000,
        "end",
    ]
    with wsConnect(url, compression=compression, open_timeout=10, max_size=None) as ws:
        for message in sent[:-1]:
            ws.send(message)
        ws.send(iter(["frag", "ment", "ed"]))  # one message in three frames
        ws.send(sent[-1])
        pong = ws.ping(b"are you there")
        received = [ws.recv(timeout=30) for _ in range(len(sent) + 1)]
        pong.wait(timeout=10)
    return [received == [*sent[:-1], "fragmented", sent[-1]], [len(m) for m in received]]


@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
@pytest_twisted.ensureDeferred
async def test_websocketsLibraryLargeMessagesEchoByteExact(compression: str | None) -> None:
    """Large frames are read in many pieces and written in partial sends, in order."""
    port = await listen()
    try:
        url = f"ws://{HOST}:{port.getHost().port}/"
        same, lengths = await inThread(websocketsBulk, url, compression)
        assert same, lengths
    finally:
        await port.stopListening()


@pytest.mark.peers
@pytest.mark.parametrize("compression", ["deflate", "none"])
@pytest_twisted.ensureDeferred
async def test_nodeWsClientTextAndBinary(compression: str) -> None:
    node = requirePeer("node")
    if not (NODE_PEERS / "node_modules" / "ws").exists():
        requirePeer("node_modules/ws (run: npm install --prefix tests/node)")
    port = await listen()
    try:
        url = f"ws://{HOST}:{port.getHost().port}/x"
        done = await inThread(
            lambda: subprocess.run(
                [node, str(NODE_PEERS / "ws_client.js"), url, compression],
                capture_output=True, text=True, timeout=30,
                env={**os.environ, "NODE_PATH": str(NODE_PEERS / "node_modules")},
            )
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines[0]["extensions"].startswith("permessage-deflate") == (compression == "deflate")
        assert {"text": "hello from node"} in lines
        assert {"binary": [0, 1, 2, 255]} in lines
        assert lines[-1] == {"close": 1000}
    finally:
        await port.stopListening()


def sameSegment(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(WS_REQ + WS_HELLO_MASKED)
        sock.settimeout(2)
        data = b""
        try:
            while b"Hello" not in data.split(b"\r\n\r\n", 1)[-1]:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        return data


@pytest_twisted.ensureDeferred
async def test_frameWithTheHandshakeIsEchoedHereAndLostByTwistedsOwn() -> None:
    # Twisted's own WebSocket support is new in Twisted 25.5.
    WebSocketResource = pytest.importorskip("twisted.web.websocket").WebSocketResource

    class TwistedEcho:
        def negotiationStarted(self, transport: Any) -> None:
            self.transport = transport

        def negotiationFinished(self) -> None:
            pass

        def textMessageReceived(self, message: str) -> None:
            self.transport.sendTextMessage(message)

        def bytesMessageReceived(self, data: bytes) -> None:
            self.transport.sendBytesMessage(data)

        def pongReceived(self, payload: bytes) -> None:
            pass

        def connectionLost(self, reason: Any) -> None:
            pass

    class Factory:
        def buildProtocol(self, request: Any) -> TwistedEcho:
            return TwistedEcho()

    root = Resource()
    root.putChild(b"chat", WebSocketResource(Factory()))  # type: ignore[arg-type]
    theirs = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(Site(root))
    ours = await listen()
    try:
        theirReply = await inThread(sameSegment, theirs.getHost().port)
        ourReply = await inThread(sameSegment, ours.getHost().port)
    finally:
        await theirs.stopListening()
        await ours.stopListening()
    # Both accept the handshake...
    assert theirReply.startswith(b"HTTP/1.1 101 ")
    assert ourReply.startswith(b"HTTP/1.1 101 ")
    # ...but only ours echoes the frame that came with it.
    assert ourReply.split(b"\r\n\r\n", 1)[1] == b"\x81\x05Hello"
    assert b"Hello" not in theirReply.split(b"\r\n\r\n", 1)[1]


def closeOverTLS(port: int) -> bytes:
    from .test_websocket import mask

    with connect(port, secure=True) as sock:
        sock.sendall(WS_REQ)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += readExactly(sock, 1)
        sock.sendall(mask(b"close please"))
        sock.settimeout(5)
        closing = readExactly(sock, 15)
        # Answer the server's close as a client must (RFC 6455 §5.5.1); the
        # server then has to close the TCP connection, TLS or not.
        sock.sendall(mask(closing[2:4], opcode=0x8))
        return closing + readUntilClosed(sock)  # returns only if the server closes


@pytest_twisted.ensureDeferred
async def test_serverInitiatedCloseOverTLSReallyCloses(certificate: Path) -> None:
    import time

    port = await listen(f"ssl:0:interface={HOST}:privateKey={certificate}")
    try:
        started = time.monotonic()
        data = await inThread(closeOverTLS, port.getHost().port)
        assert data.startswith(b"\x88\x0d\x0f\xa1as you wish")
        # Closed right after the client's close frame, not by the 5 s
        # fallback timer that a stuck TLS close would fall through to.
        assert time.monotonic() - started < 3
    finally:
        await port.stopListening()


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_chromiumChatPageSendsAndSeesTheEcho() -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        browser = requirePeer("chromium")
    port = await listen()
    profile = tempfile.mkdtemp(prefix="upgradable-chromium-")
    try:
        url = f"http://{HOST}:{port.getHost().port}/chat?say=hello%20from%20chromium"
        done = await inThread(
            lambda: subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                 "--dump-dom", url],
                capture_output=True, text=True, timeout=60,
            )
        )  # fmt: skip
    finally:
        await port.stopListening()
        shutil.rmtree(profile, ignore_errors=True)
    assert '<p id="status">connected</p>' in done.stdout, done.stdout + done.stderr[-2000:]
    assert '<li class="echo">hello from chromium</li>' in done.stdout


def brokenFrameAfterHandshake(port: int, broken: bytes) -> bytes:
    with connect(port) as sock:
        sock.sendall(WS_REQ)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += readExactly(sock, 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(broken)
        return readUntilClosed(sock)  # returns only if the server closes


@pytest.mark.parametrize(
    ("broken", "code"),
    [
        (b"\x81\x05Hello", 1002),  # unmasked
        (b"\x81\x81\x00\x00\x00\x00\xff", 1007),  # not UTF-8
        # A header announcing 1 MiB + 1 byte, past the default limit: no payload needed.
        (b"\x82\xff" + (2**20 + 1).to_bytes(8, "big") + b"\x00" * 4, 1009),
    ],
    ids=["unmasked", "not-utf8", "too-big"],
)
@pytest_twisted.ensureDeferred
async def test_aBrokenFrameOverARealSocketGetsItsCloseCodeAndTheClose(
    broken: bytes, code: int
) -> None:
    """Bad input gets a close frame that says why, then the TCP close."""
    port = await listen()
    try:
        reply = await inThread(brokenFrameAfterHandshake, port.getHost().port, broken)
    finally:
        await port.stopListening()
    assert reply[0] == 0x88 and int.from_bytes(reply[2:4], "big") == code


# -- messages after a final deflate block, over a real socket --------------------

DEFLATE_OFFERS = [
    b"permessage-deflate",
    b"permessage-deflate; client_no_context_takeover",
    b"permessage-deflate; server_no_context_takeover",
    b"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
]


def readServerFrame(sock: Any) -> tuple[int, bool, bytes]:
    """One unmasked frame from the server: opcode, RSV1 and payload."""
    first, second = readExactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(readExactly(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(readExactly(sock, 8), "big")
    assert first & 0x80, "the server's frames are final"
    return first & 0x0F, bool(first & 0x40), readExactly(sock, length)


def deflateEchoes(port: int, offer: bytes, messages: list[bytes]) -> tuple[bytes, list[str]]:
    """
    Offer ``offer``, send the frames of ``messages``, and inflate the
    server's echoes as a client would (RFC 7692 §7.2.2).
    """
    answer = b""
    echoes: list[str] = []
    with connect(port) as sock:
        sock.sendall(
            WS_REQ.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: " + offer + b"\r\n\r\n")
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += readExactly(sock, 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-extensions:"):
                answer = line.split(b":", 1)[1].strip()
        sock.sendall(b"".join(messages))
        inflater = zlib.decompressobj(-15)
        for _ in messages:
            opcode, compressed, payload = readServerFrame(sock)
            assert opcode == 0x1 and compressed
            if b"server_no_context_takeover" in answer:
                inflater = zlib.decompressobj(-15)
            echoes.append(inflater.decompress(payload + b"\x00\x00\xff\xff").decode("utf-8"))
        sock.sendall(WS_CLOSE_MASKED)
        readUntilClosed(sock)
    return answer, echoes


@pytest.mark.parametrize(
    "offer", DEFLATE_OFFERS, ids=["takeover", "client-no", "server-no", "both-no"]
)
@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
@pytest.mark.parametrize("ending", FINAL_ENDINGS)
@pytest_twisted.ensureDeferred
async def test_messagesAfterAFinalDeflateBlockInflateOverARealSocket(
    ending: str, fragmented: bool, offer: bytes
) -> None:
    """
    A client that ends messages with a final deflate block (RFC 7692
    §7.2.3.4), with context takeover or without, whole or in fragments,
    has every later message inflated and echoed, empty ones included.
    """
    client = DeflatingClient(noContext=b"client_no_context_takeover" in offer)
    sent = afterFinalBlocks(ending)
    messages = [client.message(text, how, fragmented) for text, how in sent]
    port = await listen()
    try:
        answer, echoes = await inThread(deflateEchoes, port.getHost().port, offer, messages)
    finally:
        await port.stopListening()
    assert answer == offer  # both parameters echoed (RFC 7692 §7.1.1)
    assert echoes == [text for text, _ in sent]


def finishingDeflate() -> Any:
    """
    websockets' permessage-deflate for a client that ends every message
    with a final block (zlib's Z_FINISH) and so starts a new stream for the
    next, as clients on platforms without a sync flush do (RFC 7692 §7.2.3.4).
    """
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        PerMessageDeflate,
    )
    from websockets.frames import Frame, Opcode

    class FinishingDeflate(PerMessageDeflate):
        def encode(self, frame: Frame) -> Frame:
            if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                return frame
            if frame.opcode is not Opcode.CONT:
                self.encoder = zlib.compressobj(wbits=-self.local_max_window_bits)
            flush = zlib.Z_FINISH if frame.fin else zlib.Z_SYNC_FLUSH
            data = self.encoder.compress(frame.data) + self.encoder.flush(flush)
            return Frame(frame.opcode, data, frame.fin, frame.opcode is not Opcode.CONT)

    class FinishingFactory(ClientPerMessageDeflateFactory):
        def process_response_params(self, params: Any, accepted: Any) -> PerMessageDeflate:
            made = super().process_response_params(params, accepted)
            return FinishingDeflate(
                made.remote_no_context_takeover,
                made.local_no_context_takeover,
                made.remote_max_window_bits,
                made.local_max_window_bits,
            )

    return FinishingFactory()


def websocketsFinishingEveryMessage(url: str) -> list[Any]:
    from websockets.sync.client import connect as wsConnect

    sent: list[str | bytes] = ["first", "", "second", "second", b"\x00" * 70_000, "fifth"]
    with wsConnect(url, compression=None, extensions=[finishingDeflate()], open_timeout=10) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions")
        for message in sent:
            ws.send(message)
        ws.send(iter(["frag", "ment", "ed"]))
        received = [ws.recv(timeout=10) for _ in range(len(sent) + 1)]
    return [answer, received == [*sent, "fragmented"], [m[:20] for m in received]]


@pytest_twisted.ensureDeferred
async def test_websocketsClientEndingEveryMessageWithAFinalBlockIsUnderstood() -> None:
    """The websockets library, sending each message as a finished deflate stream."""
    port = await listen()
    try:
        url = f"ws://{HOST}:{port.getHost().port}/"
        answer, same, received = await inThread(websocketsFinishingEveryMessage, url)
    finally:
        await port.stopListening()
    assert answer.startswith("permessage-deflate")
    assert same, received
