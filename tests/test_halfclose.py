"""
A client that sends its request and then shuts down its sending side (as
``printf ... | socat`` does), over real loopback sockets: it gets its answer
however late the handler decides, and after a ``101`` the new protocol sees
the half-close.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from zope.interface import implementer

from upgradable import Accept, Decline, Reject, UpgradableSite, UpgradeRegistry, UpgradeRequest
from upgradable.interfaces import IUpgradeHandler
from upgradable.protocols.echo import EchoProtocol

from .helpers import RecordingProtocol, parseResponses
from .test_integration import inThread, readUntilClosed
from .test_twistd import twistd

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: later\r\n\r\n"


class Page(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"plain page\n"


@implementer(IUpgradeHandler)
class Later:
    """Answers when the test says so: with a Deferred, or from a coroutine."""

    def __init__(self) -> None:
        self.coroutine = False
        self.pending: list[Deferred[Any]] = []
        self.cancelled = 0

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Any:
        def cancel(_: object) -> None:
            self.cancelled += 1

        answer: Deferred[Any] = Deferred(cancel)
        self.pending.append(answer)
        if not self.coroutine:
            return answer

        async def decide() -> Any:
            return await answer

        return decide()


class Running:
    def __init__(self, site: UpgradableSite, port: Any, handler: Later) -> None:
        self.site = site
        self.port = port
        self.handler = handler
        self.number = port.getHost().port

    async def inputEnded(self) -> None:
        """
        Wait until the server has read the client's end of input: its
        connection stopped reading (half-closed) or was lost (the bug), and
        the handler was asked.
        """
        for _ in range(2000):
            channels = list(self.site.connections.http)
            readers = reactor.getReaders()  # type: ignore[attr-defined]
            if self.handler.pending and (
                self.handler.cancelled or all(c.transport not in readers for c in channels)
            ):
                return
            await deferLater(reactor, 0.005, lambda: None)
        raise AssertionError("the server never read the end of input")


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[Running]:
    handler = Later()
    registry = UpgradeRegistry()
    registry.register(b"later", handler)
    site = UpgradableSite(Page(), registry)
    port = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(site)
    yield Running(site, port, handler)
    await port.stopListening()


def halfClosed(port: int, data: bytes) -> bytes:
    """Send ``data``, shut down the sending side, read until the server closes."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return readUntilClosed(sock)


async def answerAfterTheHalfClose(
    server: Running, answer: Callable[[], object], data: bytes = REQUEST
) -> bytes:
    """What a half-closed client gets when the handler answers after its end of input."""
    received = inThread(halfClosed, server.number, data)
    await server.inputEnded()
    assert server.handler.cancelled == 0, "the handler was cancelled at the half-close"
    server.handler.pending[0].callback(answer())
    result: bytes = await received
    return result


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: later\r\n\r\n"


@pytest.mark.parametrize("coroutine", [False, True], ids=["deferred", "coroutine"])
@pytest_twisted.ensureDeferred
async def test_aHalfClosedClientGetsA101ThenItsProtocolSeesTheHalfClose(
    server: Running, coroutine: bool
) -> None:
    """
    The echo (half-closeable) gets the bytes sent after the request, then
    the end of input: it echoes them and closes.
    """
    server.handler.coroutine = coroutine
    received = await answerAfterTheHalfClose(
        server, lambda: Accept(EchoProtocol()), REQUEST + b"sent before the half-close"
    )
    assert received == SWITCHED + b"sent before the half-close"


@pytest_twisted.ensureDeferred
async def test_aProtocolThatIsNotHalfCloseableIsToldTheConnectionIsDone(server: Running) -> None:
    """As TCP itself does: connectionLost(ConnectionDone), after the bytes."""
    protocol = RecordingProtocol()
    received = await answerAfterTheHalfClose(server, lambda: Accept(protocol), REQUEST + b"hi")
    assert received == SWITCHED
    assert protocol.data == b"hi"
    assert len(protocol.lost) == 1 and protocol.lost[0].check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_aHalfClosedClientGetsARejection(server: Running) -> None:
    received = await answerAfterTheHalfClose(server, lambda: Reject(403, body=b"no\n"))
    responses, rest = parseResponses(received)
    assert [r.code for r in responses] == [403] and rest == b""


@pytest_twisted.ensureDeferred
async def test_aHalfClosedClientWhoseUpgradeIsDeclinedGetsThePageAndEveryPipelinedAnswer(
    server: Running,
) -> None:
    """Requests that arrived before the half-close are all answered, then it closes."""
    plain = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    received = await answerAfterTheHalfClose(server, Decline, REQUEST + plain + plain)
    responses, rest = parseResponses(received)
    assert [r.code for r in responses] == [200, 200, 200] and rest == b""
    assert responses[0].body == b"plain page\n"


@pytest_twisted.ensureDeferred
async def test_aHalfCloseBeforeTheRequestIsCompleteCloses(server: Running) -> None:
    received = await inThread(halfClosed, server.number, REQUEST[:20])
    assert received == b""


def slowBackend() -> tuple[socket.socket, socket.socket]:
    """
    A listening socket whose accept queue is full (listen(0) with one
    connection waiting), so that a new connection to it is not established
    before the first is accepted: the kernel drops its SYN, and the
    connecting side retries about a second later.
    """
    backend = socket.socket()
    backend.bind((HOST, 0))
    backend.listen(0)
    filler = socket.create_connection(backend.getsockname(), timeout=10)
    return backend, filler


def connectingTo(port: int) -> bool:
    """Whether a socket of this host is trying to connect to ``port`` (SYN sent)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "02" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


def letTheRelayConnect(backend: socket.socket) -> socket.socket:
    """
    Once the relay is trying to connect (its SYN dropped, the client's end
    of input sent before), accept the filler, then the relay's connection.
    """
    port = backend.getsockname()[1]
    deadline = time.monotonic() + 10
    while not connectingTo(port):
        assert time.monotonic() < deadline, "the relay never tried to connect"
        time.sleep(0.01)
    backend.settimeout(10)
    backend.accept()[0].close()  # the filler: the relay's retried SYN now gets through
    relayed, _ = backend.accept()
    relayed.settimeout(10)
    return relayed


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs /proc/net/tcp")
def test_aHalfClosedClientOfARelayGetsThe101AndTheBackendSeesTheHalfClose() -> None:
    """
    ``--relay`` connects its backend before it answers; the backend here
    accepts slowly, so the client's end of input comes first. The backend
    then gets the bytes and the half-close, and its answer reaches the client.
    """
    backend, filler = slowBackend()
    port = backend.getsockname()[1]
    with (
        backend,
        filler,
        twistd("--relay", f"slow/1=tcp:{HOST}:{port}", "--handshake-timeout", "30") as server,
    ):
        client = socket.create_connection((HOST, server.port), timeout=10)
        client.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: slow/1\r\n\r\nping"
        )
        client.shutdown(socket.SHUT_WR)
        relayed = letTheRelayConnect(backend)
        with relayed, client:
            assert readUntilClosed(relayed) == b"ping"  # then the half-close
            relayed.sendall(b"pong")
            relayed.shutdown(socket.SHUT_WR)
            received = readUntilClosed(client)
    assert received == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: slow/1\r\n\r\npong"
    )
    assert "Traceback" not in server.log()


@pytest.mark.peers
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs /proc/net/tcp")
def test_socatPipedIntoARelayGetsTheBackendsAnswer() -> None:
    """``printf ... | socat - TCP:...``, the issue's own example, through a relay."""
    from .conftest import requirePeer

    socat = requirePeer("socat")
    backend, filler = slowBackend()
    port = backend.getsockname()[1]
    with backend, filler, twistd("--relay", f"slow/1=tcp:{HOST}:{port}") as server:
        client = subprocess.Popen(
            [socat, "-t", "10", "-", f"TCP:{HOST}:{server.port}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert client.stdin is not None
        client.stdin.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: slow/1\r\n\r\nping"
        )
        client.stdin.close()  # socat shuts down its sending side
        relayed = letTheRelayConnect(backend)
        with relayed:
            assert readUntilClosed(relayed) == b"ping"
            relayed.sendall(b"pong")
        assert client.stdout is not None
        out = client.stdout.read()  # until socat ends, after the server's close
        client.stdout.close()
        assert client.wait(20) == 0
    assert out.endswith(b"\r\n\r\npong"), out
    assert out.startswith(b"HTTP/1.1 101 "), out


# -- the same, in memory: what the channel does when TCP reports the end of input


def inMemory() -> tuple[Any, Later]:
    from .helpers import Server

    handler = Later()
    registry = UpgradeRegistry()
    registry.register(b"later", handler)
    return Server(registry=registry), handler


def test_theEndOfInputWhileAnUpgradeIsDecidedKeepsTheConnectionForTheAnswer() -> None:
    from twisted.internet.interfaces import IHalfCloseableProtocol

    server, handler = inMemory()
    server.send(REQUEST)
    # What TCP calls: the site's new connection, which decides the request
    # of its first bytes itself (or the HTTP stack, once it has one).
    wrapper = server.transport.protocol = server.protocol._http or server.protocol
    assert IHalfCloseableProtocol.providedBy(wrapper)
    wrapper.readConnectionLost()
    assert not server.closed and handler.cancelled == 0
    protocol = RecordingProtocol()
    handler.pending[0].callback(Accept(protocol))
    assert server.output() == SWITCHED
    assert protocol.made == 1


def test_theEndOfInputBetweenRequestsClosesAfterTheAnswers() -> None:
    server, _handler = inMemory()
    server.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.protocol._http.readConnectionLost()
    assert [r.code for r in parseResponses(server.output())[0]] == [200]
    assert server.closed


# -- a client that closes (TCP shows the same FIN as a half-close) ----------


class LongPoll(Resource):
    """Answers never; records the requests whose client went away."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.gone: list[object] = []

    def render(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        request.notifyFinish().addErrback(self.gone.append)
        return NOT_DONE_YET


async def waitUntil(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_aClientThatClosesDuringAPlainRequestIsNoticedAtOnce() -> None:
    """
    A long poll whose client closes its socket learns of it through
    notifyFinish, and the connection is gone: a FIN during a plain request
    is not held as a half-close.
    """
    page = LongPoll()
    site = UpgradableSite(page, UpgradeRegistry())
    port = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(site)
    try:
        sock = socket.create_connection((HOST, port.getHost().port), timeout=10)
        sock.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        await waitUntil(lambda: bool(list(site.connections.http)))
        sock.close()
        await waitUntil(lambda: bool(page.gone))
        await waitUntil(lambda: not list(site.connections.http))
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_aClientThatClosesWhileAnUpgradeIsDecidedIsAbortedAfterTheWait(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A client that closed (or half-closed) while its upgrade is being decided
    waits for the decision at most HALF_CLOSED_WAIT seconds (no handshake
    deadline here): then the connection is aborted and the handler cancelled,
    so a handler that never answers does not hold a connection forever.
    """
    from upgradable import _channel

    monkeypatch.setattr(_channel, "HALF_CLOSED_WAIT", 0.3)
    sock = socket.create_connection((HOST, server.number), timeout=10)
    sock.sendall(REQUEST)
    sock.close()
    await server.inputEnded()
    assert server.handler.cancelled == 0  # kept for the answer, at first
    await waitUntil(lambda: server.handler.cancelled == 1, seconds=5)
    await waitUntil(lambda: not list(server.site.connections.http))
