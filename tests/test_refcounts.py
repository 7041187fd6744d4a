"""
An ended upgraded connection is freed by reference counting alone: nothing
of it waits for the garbage collector. A reference cycle through an
upgraded protocol keeps its transport, socket and buffers until the next
collection, and makes the collector run far more often under load (it runs
after every 700 objects left alive).

Each test runs real loopback connections with the collector switched off and
checks, by weak reference, that the protocol and its transport are gone once
the connection is lost.
"""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from upgradable import Accept, UpgradableSite, UpgradeRegistry
from upgradable.protocols.websocket import WebSocketHandler, WebSocketProtocol

from .helpers import ScriptedHandler

HOST = "127.0.0.1"
ECHO_REQ = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
WS_REQ = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Tracked:
    """Weak references to every upgraded protocol and its transport."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Any]] = []
        self.lost: list[Deferred[None]] = []

    def track(self, protocol: Any) -> None:
        self.refs += [weakref.ref(protocol), weakref.ref(protocol.transport)]

    def alive(self) -> list[str]:
        return [type(ref()).__name__ for ref in self.refs if ref() is not None]


class Echo(Protocol):
    def __init__(self, tracked: Tracked) -> None:
        self.tracked = tracked
        self.done: Deferred[None] = Deferred()
        tracked.lost.append(self.done)

    def connectionMade(self) -> None:
        self.tracked.track(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(None)


def wsEchoClass(tracked: Tracked) -> type[WebSocketProtocol]:
    class WsEcho(WebSocketProtocol):
        def connectionOpened(self) -> None:
            self.done: Deferred[None] = Deferred()
            tracked.lost.append(self.done)
            tracked.refs.append(weakref.ref(self))
            tracked.track(self._connection)

        def messageReceived(self, message: str | bytes) -> None:
            self.sendMessage(message)

        def connectionClosed(self, code: int | None, reason: str) -> None:
            self.done.callback(None)

    return WsEcho


@pytest.fixture
def noCollector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def talk(port: int, request: bytes, payload: bytes, secure: bool, split: bool) -> bytes:
    """Upgrade, send ``payload``, read as many bytes back, close."""
    sock: Any = socket.create_connection((HOST, port), timeout=10)
    if secure:
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    with sock:
        if split:
            sock.sendall(request[:10])
            import time

            time.sleep(0.02)  # a second read: the HTTP channel decides
            sock.sendall(request[10:])
        else:
            sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        sock.sendall(payload)
        back = b""
        while len(back) < 2:
            back += sock.recv(4096)
        return back


# A masked WebSocket text frame "hi" (RFC 6455 §5.7).
WS_FRAME = bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])


async def upgradeAndClose(
    register: Callable[[UpgradeRegistry, Tracked], None],
    request: bytes,
    payload: bytes,
    certificate: Path | None = None,
    split: bool = False,
    count: int = 3,
) -> Tracked:
    tracked = Tracked()
    registry = UpgradeRegistry()
    register(registry, tracked)
    site = UpgradableSite(Resource(), registry)
    description = f"tcp:0:interface={HOST}"
    if certificate is not None:
        description = f"ssl:0:interface={HOST}:privateKey={certificate}"
    port = await serverFromString(reactor, description).listen(site)
    try:
        for _ in range(count):
            await deferToThread(
                talk, port.getHost().port, request, payload, certificate is not None, split
            )
        for done in tracked.lost:
            await done
        await deferLater(reactor, 0.05, lambda: None)  # the transport's own ending
    finally:
        await port.stopListening()
    assert len(tracked.lost) == count
    # Every connection was tracked (its protocol and transport at least), so
    # that alive() == [] says they were freed, not that none was watched.
    assert len(tracked.refs) >= 2 * count
    return tracked


def echo(idleTimeout: float | None = None) -> Callable[[UpgradeRegistry, Tracked], None]:
    def register(registry: UpgradeRegistry, tracked: Tracked) -> None:
        handler = ScriptedHandler(lambda request, product: Accept(Echo(tracked)))
        registry.register(b"echo", handler, idleTimeout=idleTimeout)

    return register


def websocket(registry: UpgradeRegistry, tracked: Tracked) -> None:
    registry.register(b"websocket", WebSocketHandler(default=wsEchoClass(tracked)))


@pytest.mark.parametrize("split", [False, True], ids=["fast path", "through HTTP"])
@pytest_twisted.ensureDeferred
async def test_anUpgradedConnectionIsFreedWithoutTheCollector(
    noCollector: None, split: bool
) -> None:
    tracked = await upgradeAndClose(echo(), ECHO_REQ, b"hi", split=split)
    assert tracked.alive() == []


@pytest_twisted.ensureDeferred
async def test_anIdleWatchedConnectionIsFreedWithoutTheCollector(noCollector: None) -> None:
    tracked = await upgradeAndClose(echo(idleTimeout=30), ECHO_REQ, b"hi")
    assert tracked.alive() == []


@pytest_twisted.ensureDeferred
async def test_aWebSocketIsFreedWithoutTheCollector(noCollector: None) -> None:
    tracked = await upgradeAndClose(websocket, WS_REQ, WS_FRAME)
    assert tracked.alive() == []


@pytest_twisted.ensureDeferred
async def test_anUpgradedTLSConnectionIsFreedWithoutTheCollector(
    noCollector: None, certificate: Path
) -> None:
    # Twisted's own TLS transport is in a cycle of its own (an echo over TLS
    # without any upgrade leaves it too); the upgraded protocol is not.
    tracked = await upgradeAndClose(echo(), ECHO_REQ, b"hi", certificate=certificate)
    assert set(tracked.alive()) <= {"BufferingTLSTransport"}
    assert "Echo" not in tracked.alive()
