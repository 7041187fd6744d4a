"""
writeNow over real loopback TCP: sent at once when nothing is queued, and
otherwise exactly as transport.write would: in order, whole, once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from upgradable._transport import writeNow


class Scripted(Protocol):
    """Runs ``script(transport)`` once connected, then closes."""

    def __init__(self, script: Callable[[Any], None], seen: list[Any]) -> None:
        self.script = script
        self.seen = seen

    def connectionMade(self) -> None:
        self.script(self.transport)
        self.seen.append(self.transport)
        self.transport.loseConnection()  # type: ignore[union-attr]


def readAll(port: int, delay: float = 0.0) -> bytes:
    import time

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        time.sleep(delay)  # let the server's socket buffer fill up first
        out = []
        while chunk := sock.recv(1 << 20):
            out.append(chunk)
        return b"".join(out)


async def serve(script: Callable[[Any], None], delay: float = 0.0) -> tuple[bytes, Any]:
    seen: list[Any] = []
    factory = Factory.forProtocol(lambda: Scripted(script, seen))
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    try:
        received: Deferred[bytes] = threads.deferToThread(readAll, port.getHost().port, delay)
        return await received, seen[0]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_aWriteWithNothingQueuedIsSentWithoutWaitingForTheReactor() -> None:
    state: dict[str, Any] = {}

    def script(transport: Any) -> None:
        writeNow(transport, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        state["queued"] = transport._tempDataLen + len(transport.dataBuffer)
        state["writing"] = transport in reactor.getWriters()

    data, _ = await serve(script)
    assert data == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    assert state == {"queued": 0, "writing": False}


@pytest_twisted.ensureDeferred
async def test_whatTheSocketDoesNotTakeIsQueuedInOrder() -> None:
    # More than any loopback socket buffer takes at once, to a client that
    # does not read yet: the rest is queued and follows, whole.
    payload = bytes(range(256)) * (64 * 1024)  # 16 MiB
    state: dict[str, Any] = {}

    def script(transport: Any) -> None:
        writeNow(transport, payload)
        state["queued"] = transport._tempDataLen
        transport.write(b"after")

    data, _ = await serve(script, delay=0.2)
    assert 0 < state["queued"] < len(payload)
    assert data == payload + b"after"


@pytest_twisted.ensureDeferred
async def test_aWriteBehindQueuedBytesWaitsItsTurn() -> None:
    def script(transport: Any) -> None:
        transport.write(b"first ")
        writeNow(transport, b"second")

    data, _ = await serve(script)
    assert data == b"first second"


@pytest_twisted.ensureDeferred
async def test_aClosingTransportGetsAnOrdinaryWrite() -> None:
    # As transport.write: still sent, after what was queued, before the close.
    def script(transport: Any) -> None:
        transport.write(b"queued ")
        transport.loseConnection()
        writeNow(transport, b"then this")

    data, _ = await serve(script)
    assert data == b"queued then this"


def test_otherTransportsGetAnOrdinaryWrite() -> None:
    transport = StringTransport()
    writeNow(transport, b"queued")
    assert transport.value() == b"queued"
