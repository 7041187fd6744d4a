"""
writeNow over real loopback TCP: sent at once when nothing is queued, and
otherwise exactly as transport.write would: in order, whole, once. And
LocalAddresses: a connection's local address, as getHost gives it.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.tcp import Server
from twisted.internet.testing import StringTransport

from upgradable._handover import throughProxyProtocol, writeNow
from upgradable._transport import LocalAddresses


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
        sends: list[bytes] = []
        send = transport.writeSomeData

        def counted(data: bytes) -> Any:
            sends.append(bytes(data))
            return send(data)

        transport.writeSomeData = counted
        writeNow(transport, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        del transport.writeSomeData
        state["sends"] = sends
        state["queued"] = transport._tempDataLen + len(transport.dataBuffer)
        state["writing"] = transport in reactor.getWriters()

    data, _ = await serve(script)
    assert data == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    # One send to the socket, of the whole head, before writeNow returned.
    assert state == {
        "sends": [b"HTTP/1.1 101 Switching Protocols\r\n\r\n"],
        "queued": 0,
        "writing": False,
    }


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


# -- local addresses -----------------------------------------------------------


async def localAddresses(
    description: str,
    connections: int = 2,
    addresses: LocalAddresses | None = None,
    prepare: Callable[[Any], None] = lambda port: None,
) -> tuple[list[tuple[Any, Any, int]], Any]:
    """
    For each of ``connections`` to a port listening on ``description``
    (after ``prepare(port)``): what LocalAddresses.of gave, what getHost
    gives, and how many times the transport was asked.
    """
    addresses = addresses or LocalAddresses()
    found: list[tuple[Any, Any, int]] = []

    def script(transport: Any) -> None:
        asked = []
        transport.getHost = lambda: asked.append(1) or Server.getHost(transport)
        given = addresses.of(transport)
        found.append((given, Server.getHost(transport), len(asked)))

    seen: list[Any] = []
    factory = Factory.forProtocol(lambda: Scripted(script, seen))
    port = await serverFromString(reactor, description).listen(factory)
    prepare(port)
    host = port.getHost().host
    try:
        for _ in range(connections):
            await threads.deferToThread(readAllFrom, host, port.getHost().port)
    finally:
        await port.stopListening()
    return found, port


def readAllFrom(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        return sock.recv(1024)


@pytest_twisted.ensureDeferred
async def test_aPortBoundToOneAddressGivesItsConnectionsTheirAddressWithoutAsking() -> None:
    found, _ = await localAddresses("tcp:0:interface=127.0.0.1")
    assert [(given == actual, asked) for given, actual, asked in found] == [(True, 0)] * 2
    # Each connection gets an address of its own.
    assert found[0][0] is not found[1][0]


@pytest_twisted.ensureDeferred
async def test_aPortBoundToEveryAddressLetsEachConnectionBeAsked() -> None:
    found, _ = await localAddresses("tcp:0:interface=0.0.0.0")
    assert [(given == actual, asked) for given, actual, asked in found] == [(True, 1)] * 2


@pytest_twisted.ensureDeferred
async def test_aPortBoundToEveryIPv4AddressThroughIPv6LetsEachConnectionBeAsked() -> None:
    try:
        found, _ = await localAddresses("tcp6:0:interface=\\:\\:ffff\\:0.0.0.0")
    except CannotListenError:
        pytest.skip("no IPv4-mapped wildcard here")
    assert [(given == actual, asked) for given, actual, asked in found] == [(True, 1)] * 2


@pytest_twisted.ensureDeferred
async def test_aTransparentProxyPortLetsEachConnectionBeAsked() -> None:
    # TPROXY: such a port accepts connections to any address, whatever it
    # is bound to.
    def transparent(port: Any) -> None:
        try:
            port.socket.setsockopt(socket.IPPROTO_IP, 19, 1)  # IP_TRANSPARENT
        except PermissionError:
            pytest.skip("setting IP_TRANSPARENT needs CAP_NET_ADMIN")

    if not sys.platform.startswith("linux"):
        pytest.skip("TPROXY is Linux's")
    found, _ = await localAddresses("tcp:0:interface=127.0.0.1", prepare=transparent)
    assert [(given == actual, asked) for given, actual, asked in found] == [(True, 1)] * 2


@pytest_twisted.ensureDeferred
async def test_onlySoManyListeningSocketsAreRemembered() -> None:
    addresses = LocalAddresses()
    addresses.remembered = 2
    for _ in range(5):
        found, _ = await localAddresses("tcp:0:interface=127.0.0.1", 1, addresses)
        assert found[0][0] == found[0][1]
    assert 0 < len(addresses._sockets) <= 2


@pytest_twisted.ensureDeferred
async def test_anIPv6PortBoundToOneAddressGivesItToo() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        found, _ = await localAddresses("tcp6:0:interface=\\:\\:1")
    except CannotListenError:
        pytest.skip("::1 is not configured here")
    assert [(given, asked) for given, actual, asked in found] == [(found[0][1], 0)] * 2
    assert isinstance(found[0][0], IPv6Address)


@pytest_twisted.ensureDeferred
async def test_aPortThatListensAgainOnAnotherNumberIsLearntAgain() -> None:
    addresses = LocalAddresses()
    first, port = await localAddresses("tcp:0:interface=127.0.0.1", 1, addresses)
    # The same port object, listening again: a new socket with a new number.
    port.port = 0
    port.startListening()
    try:
        found: list[Any] = []
        port.factory = Factory.forProtocol(
            lambda: Scripted(lambda t: found.append((addresses.of(t), Server.getHost(t))), [])
        )
        await threads.deferToThread(readAllFrom, "127.0.0.1", port.getHost().port)
    finally:
        await port.stopListening()
    assert found[0][0] == found[0][1]
    assert found[0][0].port != first[0][0].port


def test_otherTransportsAreAsked() -> None:
    transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.1", 80))
    assert LocalAddresses().of(transport) == IPv4Address("TCP", "192.0.2.1", 80)


def sendAndClose(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.recv(1)  # until the server closes


@pytest.mark.parametrize(
    ("description", "expected"),
    [("haproxy:tcp:0:interface=127.0.0.1", True), ("tcp:0:interface=127.0.0.1", False)],
)
@pytest_twisted.ensureDeferred
async def test_aPROXYProtocolConnectionIsRecognised(description: str, expected: bool) -> None:
    """Guards the private HAProxyProtocolWrapper: the transport that a real
    haproxy: endpoint gives its protocol is one, a plain TCP one is not."""
    seen: list[bool] = []

    class Recording(Protocol):
        def dataReceived(self, data: bytes) -> None:
            seen.append(throughProxyProtocol(self.transport))
            self.transport.loseConnection()  # type: ignore[union-attr]

    port = await serverFromString(reactor, description).listen(Factory.forProtocol(Recording))
    try:
        await threads.deferToThread(
            sendAndClose, port.getHost().port, b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\nhello"
        )
    finally:
        await port.stopListening()
    assert seen == [expected]


def test_aPROXYProtocolConnectionIsRecognisedUnderAnotherWrapper() -> None:
    """TLS (or any ProtocolWrapper) over the PROXY protocol: still seen."""
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
    from twisted.protocols.policies import WrappingFactory

    inner = WrappingFactory(Factory.forProtocol(Protocol))
    outer = HAProxyWrappingFactory(inner).buildProtocol(None)
    outer.makeConnection(StringTransport())
    outer.dataReceived(b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\n")
    innermost = outer.wrappedProtocol.wrappedProtocol
    assert throughProxyProtocol(innermost.transport)
    assert not throughProxyProtocol(StringTransport())
