"""
Relays to TCP backends over real loopback sockets: bytes both ways, the
backend's greeting after the 101, refusals as 502/503, a backend that leaves.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from upgradable import UpgradableSite, UpgradeRegistry
from upgradable.protocols.echo import EchoFactory
from upgradable.protocols.relay import RelayHandler

from .helpers import IRC_REQ
from .test_integration import (
    HOST,
    Page,
    connect,
    inThread,
    readExactly,
    readUntilClosed,
)

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n"


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b":backend NOTICE * :hello\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[union-attr]
        if b"QUIT" in data.upper():
            self.transport.loseConnection()  # type: ignore[union-attr]


async def server(endpoint: IStreamClientEndpoint, timeout: float = 10) -> Any:
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", RelayHandler(reactor, endpoint, "backend", timeout=timeout))
    return await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(
        UpgradableSite(Page(), registry)
    )


def talk(port: int, first: bytes, then: bytes) -> bytes:
    with connect(port) as sock:
        sock.sendall(IRC_REQ + first)
        sock.settimeout(10)
        head = readExactly(sock, len(SWITCH))
        sock.sendall(then)
        return head + readUntilClosed(sock)


@pytest_twisted.ensureDeferred
async def test_relayCarriesBytesBothWaysAndTheGreetingFollowsThe101() -> None:
    backend = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(
        Factory.forProtocol(Greeter)
    )
    front = await server(TCP4ClientEndpoint(reactor, HOST, backend.getHost().port))
    try:
        out = await inThread(talk, front.getHost().port, b"nick a\r\n", b"quit\r\n")
        assert out == SWITCH + b":backend NOTICE * :hello\r\nNICK A\r\nQUIT\r\n"
    finally:
        await front.stopListening()
        await backend.stopListening()


def refused(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(IRC_REQ.replace(b"Connection: Upgrade", b"Connection: Upgrade, close"))
        sock.settimeout(10)
        return readUntilClosed(sock)


@pytest_twisted.ensureDeferred
async def test_backendThatRefusesGets502NotA101() -> None:
    probe = socket.socket()
    probe.bind((HOST, 0))
    free = probe.getsockname()[1]
    probe.close()
    front = await server(TCP4ClientEndpoint(reactor, HOST, free))
    try:
        out = await inThread(refused, front.getHost().port)
        assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert b" 101 " not in out
    finally:
        await front.stopListening()


@implementer(IStreamClientEndpoint)
class Blackhole:
    """A backend that never answers the connect."""

    def connect(self, factory: Any) -> Deferred[Any]:
        return Deferred()


@pytest_twisted.ensureDeferred
async def test_backendThatDoesNotAnswerGets503WithRetryAfter() -> None:
    front = await server(Blackhole(), timeout=0.3)
    try:
        out = await inThread(refused, front.getHost().port)
        assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 5\r\n" in out
    finally:
        await front.stopListening()


@pytest_twisted.ensureDeferred
async def test_largeTransferIsByteExactThroughTheRelay() -> None:
    backend = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(EchoFactory())
    front = await server(TCP4ClientEndpoint(reactor, HOST, backend.getHost().port))
    payload = bytes(range(256)) * 40000  # 10 MB

    def pump(port: int) -> bytes:
        import threading

        with connect(port) as sock:
            sock.sendall(IRC_REQ)
            assert readExactly(sock, len(SWITCH)) == SWITCH
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            data = readExactly(sock, len(payload))
            sender.join()
            return data

    try:
        assert await inThread(pump, front.getHost().port) == payload
    finally:
        await front.stopListening()
        await backend.stopListening()


def test_aBackendThatNeverConnectsGets503() -> None:
    """A real endpoint cancelled by the timeout fails with ConnectingCancelledError."""
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.endpoints import clientFromString

    from upgradable import Reject

    from .helpers import memoryReactor

    clock = memoryReactor()
    handler = RelayHandler(clock, clientFromString(clock, "tcp:127.0.0.1:6667"), "b", timeout=10)
    request = upgradeRequest()
    results: list[object] = []
    ensureDeferred(handler.upgrade(request, b"IRC/6.9")).addBoth(results.append)
    clock.advance(9.9)
    assert results == []  # still connecting
    clock.advance(0.1)
    [decision] = results
    assert isinstance(decision, Reject) and decision.code == 503
    # The attempt was cancelled, not left running behind the 503.
    assert [connector.stoppedConnecting for connector in clock.connectors] == [True]
    assert clock.getDelayedCalls() == []


def upgradeRequest() -> Any:
    from twisted.internet.address import IPv4Address
    from twisted.web.http_headers import Headers

    from upgradable import UpgradeRequest

    peer = IPv4Address("TCP", "127.0.0.1", 1)
    return UpgradeRequest(b"GET", b"/", b"/", b"HTTP/1.1", Headers(), b"", (b"IRC/6.9",),
                          peer, peer, False)  # fmt: skip


def tlsTalk(port: int) -> bytes:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((HOST, port), timeout=10)
    # suppress_ragged_eofs=False: a TLS session cut short raises SSLEOFError.
    with context.wrap_socket(raw, suppress_ragged_eofs=False) as sock:
        sock.sendall(IRC_REQ + b"quit\r\n")
        return readUntilClosed(sock)


@pytest_twisted.ensureDeferred
async def test_backendCloseOverTLSEndsTheTLSSessionCleanly(certificate: Any, logged: Any) -> None:
    backend = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(
        Factory.forProtocol(Greeter)
    )
    registry = UpgradeRegistry()
    endpoint = TCP4ClientEndpoint(reactor, HOST, backend.getHost().port)
    registry.register(b"IRC/6.9", RelayHandler(reactor, endpoint, "backend"))
    front = await serverFromString(
        reactor, f"ssl:0:interface={HOST}:privateKey={certificate}"
    ).listen(UpgradableSite(Page(), registry))
    try:
        out = await inThread(tlsTalk, front.getHost().port)
        assert out == SWITCH + b":backend NOTICE * :hello\r\nQUIT\r\n"
        assert logged.failures(Exception) == []
    finally:
        await front.stopListening()
        await backend.stopListening()
