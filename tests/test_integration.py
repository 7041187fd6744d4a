"""
Real loopback sockets: the hand-over over TCP, TLS and the PROXY protocol,
with Python sockets and with real third-party clients (curl, socat, openssl).
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IFileDescriptorReceiver, IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource

from upgradable import Accept, UpgradableSite, UpgradeRegistry
from upgradable.protocols.echo import EchoFactory

from .conftest import requirePeer
from .helpers import ECHO_REQ, IRC_REQ, RecordingFactory, ScriptedHandler, parseResponses

HOST = "127.0.0.1"


class Page(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"plain page\n"


class Closer(Protocol):
    """Closes the connection from the server side when it reads b"bye"."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
        if b"bye" in data:
            self.transport.loseConnection()


class Running:
    def __init__(self, port: Any, registry: UpgradeRegistry, irc: RecordingFactory) -> None:
        self.port = port
        self.registry = registry
        self.irc = irc
        self.number = port.getHost().port


async def listen(description: str) -> Running:
    irc = RecordingFactory()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", irc)
    registry.register(b"HTTP/2.0", EchoFactory())
    registry.register(b"closer", ScriptedHandler(lambda request, product: Accept(Closer())))
    site = UpgradableSite(Page(), registry, advertise=True)
    port = await serverFromString(reactor, description).listen(site)
    return Running(port, registry, irc)


@pytest_twisted.async_yield_fixture
async def tcp() -> AsyncIterator[Running]:
    running = await listen(f"tcp:0:interface={HOST}")
    yield running
    await running.port.stopListening()


@pytest_twisted.async_yield_fixture
async def tls(certificate: Path) -> AsyncIterator[Running]:
    running = await listen(f"ssl:0:interface={HOST}:privateKey={certificate}")
    yield running
    await running.port.stopListening()


def connect(port: int, secure: bool = False) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10)
    if secure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    return sock


def readUntilClosed(sock: socket.socket) -> bytes:
    out = []
    while chunk := sock.recv(65536):
        out.append(chunk)
    return b"".join(out)


def readExactly(sock: socket.socket, count: int) -> bytes:
    out = bytearray()
    while len(out) < count:
        chunk = sock.recv(min(65536, count - len(out)))
        assert chunk, f"closed after {len(out)} of {count} bytes"
        out += chunk
    return bytes(out)


def inThread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return threads.deferToThread(f, *args)


SWITCH_ECHO = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\n"
)


def echoRoundTrip(port: int, secure: bool, payload: bytes, together: bool) -> bytes:
    """Upgrade to the echo, send ``payload`` (with the request or after the 101)."""
    with connect(port, secure) as sock:
        if together:
            sock.sendall(ECHO_REQ + payload)
        else:
            sock.sendall(ECHO_REQ)
            assert readExactly(sock, len(SWITCH_ECHO)) == SWITCH_ECHO
        sent = 0
        received = bytearray()
        if together:
            received += readExactly(sock, len(SWITCH_ECHO) + len(payload))
            return bytes(received[len(SWITCH_ECHO) :])
        # Interleave so neither side's buffers fill up.
        while sent < len(payload):
            sock.sendall(payload[sent : sent + 65536])
            sent += 65536
            received += readExactly(sock, min(sent, len(payload)) - len(received))
        return bytes(received)


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("together", [False, True], ids=["after-101", "same-write"])
@pytest_twisted.ensureDeferred
async def test_echoIsByteExactOverRealSockets(
    secure: bool, together: bool, certificate: Path
) -> None:
    running = await listen(
        f"ssl:0:interface={HOST}:privateKey={certificate}" if secure else f"tcp:0:interface={HOST}"
    )
    try:
        payload = bytes(range(256)) * (4096 if not together else 64)
        echoed = await inThread(echoRoundTrip, running.number, secure, payload, together)
        assert echoed == payload
    finally:
        await running.port.stopListening()


def ircUpgrade(port: int, secure: bool) -> bytes:
    with connect(port, secure) as sock:
        sock.sendall(IRC_REQ + b"NICK alice\r\nUSER a 0 * :A\r\n")
        head = readExactly(sock, len(IRC_REQ) - 30)
        sock.sendall(b"JOIN #x\r\n")
        return head


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_sameSegmentBytesAndLaterBytesReachTheProtocolOnce(
    secure: bool, certificate: Path
) -> None:
    running = await listen(
        f"ssl:0:interface={HOST}:privateKey={certificate}" if secure else f"tcp:0:interface={HOST}"
    )
    try:
        await inThread(ircUpgrade, running.number, secure)
        for _ in range(100):
            if running.irc.built and running.irc.last.lost:
                break
            await deferLater(reactor, 0.05, lambda: None)
        protocol = running.irc.last
        assert protocol.data == b"NICK alice\r\nUSER a 0 * :A\r\nJOIN #x\r\n"
        assert protocol.made == 1
        assert len(protocol.lost) == 1
    finally:
        await running.port.stopListening()


def closeFromServer(port: int, secure: bool) -> bytes:
    with connect(port, secure) as sock:
        sock.sendall(IRC_REQ.replace(b"IRC/6.9", b"closer") + b"bye")
        sock.settimeout(5)
        return readUntilClosed(sock)


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_serverSideCloseReallyCloses(secure: bool, certificate: Path) -> None:
    """Over TLS a leftover HTTP producer would keep loseConnection from closing."""
    running = await listen(
        f"ssl:0:interface={HOST}:privateKey={certificate}" if secure else f"tcp:0:interface={HOST}"
    )
    try:
        # readUntilClosed returns only once the server has closed (else it times out).
        data = await inThread(closeFromServer, running.number, secure)
        assert data == (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: closer\r\n\r\nbye"
        )
    finally:
        await running.port.stopListening()


def proxied(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n" + IRC_REQ + b"NICK p\r\n")
        return readExactly(sock, 70)


@pytest_twisted.ensureDeferred
async def test_behindTheProxyProtocolTheHandlerSeesTheRealClient() -> None:
    seen: list[Any] = []
    running = await listen(f"haproxy:tcp:0:interface={HOST}")
    irc = running.irc
    running.registry.unregister(b"IRC/6.9")

    def accept(request: Any, product: bytes) -> Accept:
        seen.append(request.peer)
        return Accept(irc.buildProtocol(request.peer))

    running.registry.register(b"IRC/6.9", ScriptedHandler(accept))
    try:
        head = await inThread(proxied, running.number)
        assert head.startswith(b"HTTP/1.1 101 ")
        for _ in range(100):
            if irc.built and irc.last.data:
                break
            await deferLater(reactor, 0.05, lambda: None)
        assert seen[0].host == "203.0.113.7"
        assert irc.last.data == b"NICK p\r\n"
    finally:
        await running.port.stopListening()


def addressesSeen(port: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """The client socket's own address and the server's, after a switch."""
    with connect(port) as sock:
        sock.sendall(CLOSER_REQ + b"bye")
        readUntilClosed(sock)
        return sock.getsockname(), sock.getpeername()


CLOSER_REQ = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: closer\r\n\r\n"


@pytest.mark.parametrize("interface", [HOST, "0.0.0.0"])
@pytest_twisted.ensureDeferred
async def test_theHandlerSeesTheAddressesOfBothEnds(interface: str) -> None:
    # On the fast path the peer is the address the port gave the site, and
    # the local address the port's own when it is bound to one.
    running = await listen(f"tcp:0:interface={interface}")
    handler = ScriptedHandler(lambda request, product: Accept(Closer()))
    running.registry.unregister(b"closer")
    running.registry.register(b"closer", handler)
    try:
        client, server = await inThread(addressesSeen, running.number)
    finally:
        await running.port.stopListening()
    request = handler.requests[0][0]
    assert (request.peer.host, request.peer.port) == client
    assert (request.host.host, request.host.port) == server
    assert request.peer.type == request.host.type == "TCP"


@pytest_twisted.ensureDeferred
async def test_thePeerIsTheTransportsEvenWhenAFactoryGaveTheSiteAnother() -> None:
    registry = UpgradeRegistry()
    handler = ScriptedHandler(lambda request, product: Accept(Closer()))
    registry.register(b"closer", handler)
    site = UpgradableSite(Page(), registry)

    class Elsewhere(Factory):
        def buildProtocol(self, addr: Any) -> Any:
            return site.buildProtocol(IPv4Address("TCP", "192.0.2.9", 9))

    port = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(Elsewhere())
    try:
        client, _ = await inThread(addressesSeen, port.getHost().port)
    finally:
        await port.stopListening()
    peer = handler.requests[0][0].peer
    assert (peer.host, peer.port) == client


class NoDelayCloser(Closer):
    noDelay: list[bool] = []

    def connectionMade(self) -> None:
        self.noDelay.append(self.transport.getTcpNoDelay())


@pytest_twisted.ensureDeferred
async def test_anUpgradedTCPConnectionSendsSmallWritesAtOnce() -> None:
    # TCP_NODELAY, as HTTPChannel sets it for its connections: an upgraded
    # protocol's small writes are not held back by Nagle's algorithm.
    running = await listen(f"tcp:0:interface={HOST}")
    running.registry.unregister(b"closer")
    running.registry.register(b"closer", ScriptedHandler(lambda r, p: Accept(NoDelayCloser())))
    NoDelayCloser.noDelay = []
    try:
        await inThread(addressesSeen, running.number)
    finally:
        await running.port.stopListening()
    assert NoDelayCloser.noDelay == [True]


# -- real third-party clients ---------------------------------------------


async def run(program: str, *args: str, stdin: bytes | None = None) -> tuple[bytes, bytes, int]:
    path = requirePeer(program)
    if stdin is None:
        out, err, code = await getProcessOutputAndValue(path, args, env={}, reactor=reactor)
        return out, err, code
    # getProcessOutputAndValue has no stdin; go through a thread.
    import subprocess

    def call() -> tuple[bytes, bytes, int]:
        done = subprocess.run([path, *args], input=stdin, capture_output=True, timeout=30)
        return done.stdout, done.stderr, done.returncode

    return await inThread(call)


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_curlPlainGetIsServedAndAdvertised(tcp: Running) -> None:
    out, err, code = await run("curl", "-si", f"http://{HOST}:{tcp.number}/")
    assert code == 0, err
    [response], _ = parseResponses(out.replace(b"\r\n\r\n", b"\r\n\r\n", 1))
    assert response.code == 200
    assert response.body == b"plain page\n"
    assert response.header(b"upgrade") == [b"IRC/6.9, HTTP/2.0, closer"]
    assert b"upgrade" in response.tokens(b"connection")


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_curlH2cOfferIsDeclinedWithAnHTTP11Answer(tcp: Running) -> None:
    """curl --http2 offers h2c; with no h2c registered it gets HTTP/1.1 200."""
    out, err, code = await run("curl", "-si", "--http2", f"http://{HOST}:{tcp.number}/")
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 200 ")
    assert out.endswith(b"plain page\n")


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_curlPostWithExpectAndDeclinedUpgrade(tcp: Running) -> None:
    out, err, code = await run(
        "curl", "-si", "-H", "Connection: Upgrade", "-H", "Upgrade: nope/1",
        "-H", "Expect: 100-continue", "--data-binary", "x" * 2000,
        f"http://{HOST}:{tcp.number}/",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_curlOverTLSNegotiatesTwistedsOwnHTTP2ByALPN(tls: Running) -> None:
    out, err, code = await run("curl", "-si", "-k", "--http2", f"https://{HOST}:{tls.number}/")
    assert code == 0, err
    assert out.startswith(b"HTTP/2 200")
    assert out.endswith(b"plain page\n")


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_curlOverTLSWithHTTP11(tls: Running) -> None:
    out, err, code = await run("curl", "-si", "-k", "--http1.1", f"https://{HOST}:{tls.number}/")
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 200")


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_socatUpgradesAndEchoes(tcp: Running) -> None:
    payload = bytes(range(1, 256)) * 100
    out, err, code = await run(
        "socat", "-t", "2", "-", f"TCP:{HOST}:{tcp.number}", stdin=ECHO_REQ + payload
    )
    assert code == 0, err
    assert out == SWITCH_ECHO + payload


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_opensslClientUpgradesOverTLSAndIsClosedByTheServer(tls: Running) -> None:
    out, err, _code = await run(
        "openssl", "s_client", "-connect", f"{HOST}:{tls.number}", "-quiet", "-ign_eof",
        stdin=IRC_REQ.replace(b"IRC/6.9", b"closer") + b"hello bye",
    )  # fmt: skip
    assert out.endswith(b"Upgrade: closer\r\n\r\nhello bye"), (out, err)


def endpoint(kind: str, certificate: Path) -> str:
    """A server endpoint on loopback: plain, TLS, PROXY, or PROXY inside TLS."""
    return {
        "tcp": f"tcp:0:interface={HOST}",
        "tls": f"ssl:0:interface={HOST}:privateKey={certificate}",
        "haproxy": f"haproxy:tcp:0:interface={HOST}",
        "haproxy-tls": f"haproxy:ssl:0:interface={HOST}:privateKey={certificate}",
    }[kind]


def hello(port: int, secure: bool, proxy: bool) -> bytes:
    """The upgrade with its first bytes, then more bytes once the 101 is read."""
    with connect(port, secure) as sock:
        prefix = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n" if proxy else b""
        sock.sendall(prefix + IRC_REQ.replace(b"IRC/6.9", b"closer") + b"hi")
        sock.settimeout(5)
        head = b""
        while not head.endswith(b"hi"):
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        sock.sendall(b"bye")
        return head + readUntilClosed(sock)


@pytest.mark.parametrize("kind", ["tcp", "tls", "haproxy"])
@pytest_twisted.ensureDeferred
async def test_noHTTPLayerIsLeftInTheDataPath(kind: str, certificate: Path) -> None:
    """
    After the switch the reactor's transport calls the new protocol
    directly: no function of this package is between them.
    """
    import upgradable

    package = str(Path(upgradable.__file__).parent)
    running = await listen(endpoint(kind, certificate))
    callers: list[str] = []
    made: list[Closer] = []

    class Spy(Closer):
        def dataReceived(self, data: bytes) -> None:
            # The code that called this: Twisted's TCP, TLS or PROXY layer.
            callers.append(sys._getframe(1).f_code.co_filename)
            super().dataReceived(data)

    def accept(request: Any, product: bytes) -> Accept:
        made.append(Spy())
        return Accept(made[-1])

    running.registry.unregister(b"closer")
    running.registry.register(b"closer", ScriptedHandler(accept))
    try:
        data = await inThread(hello, running.number, kind == "tls", kind == "haproxy")
        assert data.endswith(b"bye")
        # The first bytes came with the request: the hand-over delivers them.
        first, *later = callers
        assert first.startswith(package)
        assert later and not [caller for caller in later if caller.startswith(package)]
        assert all("twisted" in caller for caller in later), later
    finally:
        await running.port.stopListening()


@pytest.mark.parametrize(
    "kind, secure", [("tcp", False), ("tls", True), ("haproxy-tls", True), ("haproxy", False)]
)
@pytest_twisted.ensureDeferred
async def test_theHandlerIsToldWhetherTheConnectionIsTLS(
    kind: str, secure: bool, certificate: Path
) -> None:
    running = await listen(endpoint(kind, certificate))
    seen: list[bool] = []

    def accept(request: Any, product: bytes) -> Accept:
        seen.append(request.secure)
        return Accept(Closer())

    running.registry.unregister(b"closer")
    running.registry.register(b"closer", ScriptedHandler(accept))
    try:
        data = await inThread(hello, running.number, kind != "tcp" and secure, "haproxy" in kind)
        assert data.endswith(b"bye")
        assert seen == [secure]
    finally:
        await running.port.stopListening()


def floodWithoutReading(port: int, limit: int) -> tuple[socket.socket, bytes]:
    """Send until the connection pushes back (or ``limit``), reading nothing."""
    sock = connect(port)
    sock.sendall(ECHO_REQ)
    sock.setblocking(False)
    sent = bytearray()
    block = bytes(range(256)) * 256
    stalled = 0
    while len(sent) < limit and stalled < 50:
        try:
            count = sock.send(block)
        except BlockingIOError:
            stalled += 1
            __import__("time").sleep(0.01)
            continue
        stalled = 0
        sent += block[:count]
    sock.setblocking(True)
    return sock, bytes(sent)


def drain(sock: socket.socket, count: int) -> bytes:
    data = readExactly(sock, count)
    sock.close()
    return data


@pytest_twisted.ensureDeferred
async def test_echoDoesNotBufferForAClientThatDoesNotRead() -> None:
    echoes: list[Any] = []
    running = await listen(f"tcp:0:interface={HOST}")
    factory = EchoFactory()

    def accept(request: Any, product: bytes) -> Accept:
        echoes.append(factory.buildProtocol(request.peer))
        return Accept(echoes[-1])

    running.registry.unregister(b"HTTP/2.0")
    running.registry.register(b"HTTP/2.0", ScriptedHandler(accept))
    try:
        sock, sent = await inThread(floodWithoutReading, running.number, 256 * 1024 * 1024)
        await deferLater(reactor, 0.2, lambda: None)
        transport = echoes[0].transport
        buffered = transport._tempDataLen + len(transport.dataBuffer) - transport.offset
        # The client stopped being able to send long before 256 MiB: the
        # echo stopped reading, so the kernel buffers filled up.
        assert len(sent) < 64 * 1024 * 1024
        assert buffered < 1024 * 1024, buffered
        data = await inThread(drain, sock, len(SWITCH_ECHO) + len(sent))
        assert data == SWITCH_ECHO + sent
    finally:
        await running.port.stopListening()


# -- h2c with real clients ---------------------------------------------------


async def listenH2C(description: str) -> Any:
    from upgradable.protocols.h2c import H2CHandler

    from .helpers import EchoRequestResource

    registry = UpgradeRegistry()
    registry.register(b"h2c", H2CHandler())
    root = Resource()
    for name in (b"a", b"b", b"c", b"echo"):
        root.putChild(name, EchoRequestResource())
    return await serverFromString(reactor, description).listen(UpgradableSite(root, registry))


@pytest.mark.peers
@pytest.mark.parametrize(
    ("args", "status", "body"),
    [
        ([], b"HTTP/2 200", b"GET /echo b''"),
        (["-I"], b"HTTP/2 200", b""),
        (["-d", "hello"], b"HTTP/2 200", b"POST /echo b'hello'"),
    ],
    ids=["GET", "HEAD", "POST"],
)
@pytest_twisted.ensureDeferred
async def test_curlUpgradesToH2c(args: list[str], status: bytes, body: bytes) -> None:
    port = await listenH2C(f"tcp:0:interface={HOST}")
    try:
        url = f"http://{HOST}:{port.getHost().port}/echo"
        out, err, code = await run("curl", "-si", "--http2", *args, url)
        assert code == 0, err
        # curl prints the 101 and then the HTTP/2 response.
        assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), out
        second = out.split(b"\r\n\r\n", 1)[1]
        assert second.startswith(status), out
        assert second.split(b"\r\n\r\n", 1)[1] == body
    finally:
        await port.stopListening()


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_nghttpFetchesSeveralResourcesConcurrentlyOnOneUpgradedConnection() -> None:
    port = await listenH2C(f"tcp:0:interface={HOST}")
    try:
        base = f"http://{HOST}:{port.getHost().port}"
        out, err, code = await run(
            "nghttp", "-u", "-v", "-n", "-s", f"{base}/a", f"{base}/b", f"{base}/c"
        )
        assert code == 0, err
        text = out.decode()
        assert "HTTP Upgrade success" in text
        assert "recv SETTINGS frame" in text
        # One connection; stream 1 is the upgrade request, the others follow.
        for path in ("/a", "/b", "/c"):
            assert any(line.split()[-1:] == [path] and " 200 " in line
                       for line in text.splitlines()), text  # fmt: skip
    finally:
        await port.stopListening()


def h2cOverTLS(port: int) -> bytes:
    with connect(port, secure=True) as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n\r\n"
        )
        sock.settimeout(5)
        return readUntilClosed(sock)


@pytest_twisted.ensureDeferred
async def test_h2cIsNotOfferedOverTLS(certificate: Path) -> None:
    """UPG-60 (c): over TLS the answer is plain HTTP/1.1."""
    port = await listenH2C(f"ssl:0:interface={HOST}:privateKey={certificate}")
    try:
        out = await inThread(h2cOverTLS, port.getHost().port)
        assert out.startswith(b"HTTP/1.1 200 OK\r\n"), out
        assert out.endswith(b"GET /a b''")
    finally:
        await port.stopListening()


def tlsExchange(port: int, secure: bool) -> tuple[bytes, bytes, bytes]:
    """On one connection: an h2c offer first (the fast path's case), a plain
    GET, then an h2c offer again (the usual path's); what came back for
    each, up to the first 101 (after which nothing more is sent)."""
    offer = (
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n\r\n"
    )
    answers = []
    with connect(port, secure) as sock:
        for request in (offer, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", offer):
            sock.sendall(request)
            data = b""
            while True:
                responses, _ = parseResponses(data)
                if responses:
                    break
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            answers.append(data)
            if responses[0].code == 101:
                break
    return answers[0], answers[-2] if len(answers) > 1 else b"", answers[-1]


@pytest_twisted.ensureDeferred
async def test_aTLSConnectionNeverAdvertisesNorSwitchesToH2c(certificate: Path) -> None:
    """RFC 9113 §3.1: h2c is for cleartext. Over a real TLS socket, with a
    handler for h2c that would accept anything, an h2c offer is answered in
    HTTP/1.1, first request or later, and the Upgrade field of ordinary
    answers lists the other protocols only; over TCP the same site
    advertises h2c and switches to it."""
    registry = UpgradeRegistry()
    registry.register(b"h2c", EchoFactory())
    registry.register(b"HTTP/2.0", EchoFactory())
    site = UpgradableSite(Page(), registry, advertise=True)
    for secure in (True, False):
        description = (
            f"ssl:0:interface={HOST}:privateKey={certificate}"
            if secure
            else (f"tcp:0:interface={HOST}")
        )
        port = await serverFromString(reactor, description).listen(site)
        try:
            first, plain, last = await inThread(tlsExchange, port.getHost().port, secure)
        finally:
            await port.stopListening()
        answers = [parseResponses(data)[0] for data in (first, plain, last)]
        if not secure:
            assert [r.code for r in answers[0]] == [101]
            assert answers[0][0].header(b"upgrade") == [b"h2c"]
            continue
        assert [[r.code for r in responses] for responses in answers] == [[200]] * 3, answers
        for [response] in answers:
            assert response.body == b"plain page\n"
            assert response.tokens(b"upgrade") == [b"http/2.0"], response
            assert b"upgrade" in response.tokens(b"connection")


# -- what a transport looks for on the protocol it delivers to, after the switch

SWITCH_IRC = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n"


def adoptedUNIXConnection(protocol: Any) -> socket.socket:
    """
    A site over one end of a UNIX socket pair, its upgrade answered with
    ``protocol``; the other end, for a client in a thread.
    """
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Accept(protocol)))
    site = UpgradableSite(Page(), registry)
    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        reactor.adoptStreamConnection(server.fileno(), socket.AF_UNIX, site)
    finally:
        server.close()  # adopted as a copy
    client.settimeout(10)
    return client


@pytest.mark.skipif(not hasattr(socket, "send_fds"), reason="needs socket.send_fds")
@pytest_twisted.ensureDeferred
async def test_anUpgradedProtocolOnAUNIXSocketStillReceivesFileDescriptors() -> None:
    from zope.interface import implementer

    received: Deferred[int] = Deferred()

    @implementer(IFileDescriptorReceiver)
    class TakesDescriptors(Protocol):
        def fileDescriptorReceived(self, descriptor: int) -> None:
            received.callback(descriptor)

    protocol = TakesDescriptors()
    client = adoptedUNIXConnection(protocol)
    reading, writing = os.pipe()

    def clientSide() -> None:
        client.sendall(IRC_REQ)
        assert readExactly(client, len(SWITCH_IRC)) == SWITCH_IRC
        socket.send_fds(client, [b"x"], [reading])

    try:
        await inThread(clientSide)
        descriptor = await received.addTimeout(10, reactor)
        try:
            os.write(writing, b"the pipe itself")
            assert os.read(descriptor, 100) == b"the pipe itself"
        finally:
            os.close(descriptor)
    finally:
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        client.close()
        os.close(reading)
        os.close(writing)


@pytest_twisted.ensureDeferred
async def test_anUpgradedProtocolThatStartsTLSIsToldOfTheHandshake(certificate: Path) -> None:
    """TLS started after the switch (a STARTTLS) calls the protocol's handshakeCompleted."""
    from twisted.internet.ssl import PrivateCertificate
    from zope.interface import implementer

    options = PrivateCertificate.loadPEM(certificate.read_text()).options()
    handshake: Deferred[None] = Deferred()

    @implementer(IHandshakeListener)
    class StartsTLS(Protocol):
        def connectionMade(self) -> None:
            self.transport.startTLS(options)  # type: ignore[union-attr]

        def handshakeCompleted(self) -> None:
            handshake.callback(None)

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    protocol = StartsTLS()
    client = adoptedUNIXConnection(protocol)

    def clientSide() -> bytes:
        client.sendall(IRC_REQ)
        assert readExactly(client, len(SWITCH_IRC)) == SWITCH_IRC
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(client) as secure:
            secure.sendall(b"over TLS")
            return readExactly(secure, len(b"over TLS"))

    try:
        assert await inThread(clientSide) == b"over TLS"
        await handshake.addTimeout(10, reactor)
    finally:
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        client.close()
