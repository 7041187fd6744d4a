"""
UpgradableSite.drain: a stopping server finishes its handshakes, lets its
upgraded connections end, and closes what is left after the grace period.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IProtocol,
)
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from upgradable import Accept, UpgradeRegistry
from upgradable.interfaces import IGoingAway

from .helpers import (
    ECHO_REQ,
    IRC_REQ,
    RecordingFactory,
    RecordingProtocol,
    ScriptedHandler,
    Server,
    TCPLikeTransport,
    deferred,
    parseResponses,
    standardServer,
)

DONE = Failure(ConnectionDone())
GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


def another(server: Server) -> tuple[Any, StringTransport]:
    """A second connection to the same site."""
    protocol = server.site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def fired(d: Any) -> bool:
    result: list[object] = []
    d.addBoth(result.append)
    return bool(result)


def test_drainWithNoConnectionsFiresAtOnce() -> None:
    server, _ = standardServer()
    server.protocol.connectionLost(DONE)
    assert fired(server.site.drain(10))
    assert server.site.draining


def test_anIdleKeepAliveConnectionIsClosedAtOnce() -> None:
    server, _ = standardServer()
    server.send(GET)
    assert parseResponses(server.output())[0][0].code == 200
    assert not server.closed
    drained = server.site.drain(10)
    assert server.closed
    assert not fired(drained)
    server.protocol.connectionLost(DONE)
    assert fired(drained)


def test_aRequestInProgressIsAnsweredWithConnectionCloseThenClosed() -> None:
    server, _ = standardServer()
    server.resource.delay = True
    server.send(GET)
    drained = server.site.drain(10)
    assert not server.closed
    server.resource.release()
    response = parseResponses(server.output())[0][0]
    assert response.code == 200
    assert response.tokens(b"connection") == [b"close"]
    assert server.closed
    server.protocol.connectionLost(DONE)
    assert fired(drained)


def test_aRequestLineStillArrivingIsAnsweredThenClosed() -> None:
    server, _ = standardServer()
    server.send(b"GET /x HT")
    drained = server.site.drain(10)
    assert not server.closed
    server.send(b"TP/1.1\r\nHost: x\r\n\r\n")
    responses, _ = parseResponses(server.output())
    assert [r.code for r in responses] == [200]
    assert responses[0].tokens(b"connection") == [b"close"]
    assert server.closed
    server.protocol.connectionLost(DONE)
    assert fired(drained)


def upgradedTo(protocol: Any) -> Server:
    """A server whose connection switched to ``protocol``, which got a NICK line."""
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Accept(protocol)))
    server = Server(registry=registry)
    server.send(IRC_REQ + b"NICK a\r\n")
    assert parseResponses(server.output())[0][0].code == 101
    assert protocol.data == b"NICK a\r\n"
    return server


def test_aProtocolWithSlotsIsTrackedAndWaitedFor() -> None:
    @implementer(IProtocol)
    class Slotted:  # nothing can be set on it
        __slots__ = ("data", "transport")

        def makeConnection(self, transport: Any) -> None:
            self.transport, self.data = transport, b""

        def dataReceived(self, data: bytes) -> None:
            self.data += data

        def connectionLost(self, reason: Any = None) -> None:
            pass

    protocol = Slotted()
    server = upgradedTo(protocol)
    drained = server.site.drain(10)
    assert not fired(drained)
    server.protocol.connectionLost(DONE)  # what the transport calls
    assert fired(drained)


def test_anUnhashableProtocolIsTrackedAndWaitedFor() -> None:
    from dataclasses import dataclass

    @dataclass(eq=True)  # eq without frozen: no __hash__
    class Unhashable(RecordingProtocol):
        def __post_init__(self) -> None:
            RecordingProtocol.__init__(self)

    protocol = Unhashable()
    server = upgradedTo(protocol)
    drained = server.site.drain(10)
    assert not fired(drained)
    server.protocol.connectionLost(DONE)
    assert fired(drained)
    assert len(protocol.lost) == 1


def test_aNewRequestOnADrainingConnectionIsTheLastOne() -> None:
    server, _ = standardServer()
    server.send(b"GET /x HTTP/1.1\r\nHost: x")  # a head still arriving
    server.site.drain(10)
    assert not server.closed
    server.send(b"\r\n\r\n" + GET)
    responses, _ = parseResponses(server.output())
    assert [r.code for r in responses] == [200]
    assert responses[0].tokens(b"connection") == [b"close"]
    assert server.closed


def test_aConnectionAcceptedDuringTheDrainIsServedOnce() -> None:
    """Its first request is answered (Connection: close); the pipelined second is not read."""
    server, _ = standardServer()
    server.site.drain(10)
    protocol, transport = another(server)
    assert not transport.disconnecting
    protocol.dataReceived(GET + GET)
    responses, rest = parseResponses(bytes(transport.value()))
    assert [r.code for r in responses] == [200] and rest == b""
    assert responses[0].tokens(b"connection") == [b"close"]
    assert server.resource.seen == [(b"GET", b"/x", b"")]
    assert transport.disconnecting


def test_anUpgradeBeingDecidedFinishesAndItsConnectionIsWaitedFor() -> None:
    pending = deferred()
    irc = RecordingFactory()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(lambda request, product: pending))
    server = Server(registry=registry)
    server.send(IRC_REQ + b"NICK a\r\n")
    drained = server.site.drain(None)
    assert not server.closed
    protocol = irc.buildProtocol(None)
    pending.callback(Accept(protocol))
    assert parseResponses(server.output())[0][0].code == 101
    assert protocol.data == b"NICK a\r\n"
    assert not server.closed
    assert not fired(drained)
    server.clock.advance(3600)  # no grace period: it may go on
    assert not server.closed
    server.protocol.connectionLost(DONE)
    assert protocol.lost == [DONE]
    assert fired(drained)


def test_upgradedConnectionsAreClosedAfterTheGracePeriodThenAborted() -> None:
    """
    Closed (loseConnection) when the grace period ends; the one still open
    abortAfter seconds later is aborted, the one that ended meanwhile is not.
    """
    server, irc = standardServer()
    server.send(IRC_REQ)
    echo, echoTransport = another(server)
    echo.dataReceived(ECHO_REQ)
    drained = server.site.drain(30)
    server.clock.advance(29)
    assert not server.closed and not echoTransport.disconnecting
    echo.dataReceived(b"still here")
    assert bytes(echoTransport.value()).endswith(b"still here")
    server.clock.advance(1)
    assert server.closed and echoTransport.disconnecting
    assert not server.transport.aborted and not echoTransport.disconnected
    echo.connectionLost(DONE)
    assert not fired(drained)
    server.clock.advance(server.site.connections.abortAfter - 0.1)
    assert not server.transport.aborted
    server.clock.advance(0.1)
    assert server.transport.aborted
    assert not echoTransport.disconnected  # it ended in time: not aborted
    server.protocol.connectionLost(DONE)
    assert irc.last.lost == [DONE]
    assert fired(drained)


@pytest.mark.parametrize("grace", [60, None], ids=["60 s", "none"])
def test_closeAllCutsTheGracePeriodShort(grace: float | None) -> None:
    server, _ = standardServer()
    server.send(ECHO_REQ)
    drained = server.site.drain(grace)
    assert not server.closed
    server.site.closeAll()
    assert server.closed  # now, not when the grace period would have ended
    # The grace period's timer is gone; only the abort of what does not close is left.
    abortAfter = server.site.connections.abortAfter
    assert [call.getTime() for call in server.clock.getDelayedCalls()] == [abortAfter]
    server.protocol.connectionLost(DONE)
    assert fired(drained)
    assert server.clock.getDelayedCalls() == []


@implementer(IGoingAway)
class Polite(RecordingProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.goneAway = 0

    def goingAway(self) -> None:
        self.goneAway += 1
        assert self.transport is not None
        self.transport.write(b"bye\r\n")
        self.transport.loseConnection()


def test_aProtocolThatCanGoAwayIsAskedTo() -> None:
    polite = Polite()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Accept(polite)))
    server = Server(registry=registry)
    server.send(IRC_REQ)
    server.site.drain(0)
    server.clock.advance(0)
    assert polite.goneAway == 1
    assert server.output().endswith(b"\r\n\r\nbye\r\n")
    assert server.closed


def test_theGracePeriodEndsAHandshakeStillBeingDecided() -> None:
    cancelled: list[Deferred[Any]] = []
    pending: Deferred[Any] = Deferred(cancelled.append)
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(lambda request, product: pending))
    server = Server(registry=registry)
    server.send(IRC_REQ)
    drained = server.site.drain(1)
    server.clock.advance(0.9)
    assert not server.closed and cancelled == []  # still deciding within the grace period
    server.clock.advance(0.1)
    assert server.closed
    assert server.output() == b""  # no 101 after all
    server.protocol.connectionLost(DONE)
    assert cancelled == [pending]  # cancelled with the connection
    assert fired(drained)


def test_aConnectionSwitchedAfterTheGracePeriodGoesAwayAtOnce() -> None:
    server, _ = standardServer()
    server.send(ECHO_REQ)
    server.site.drain(0)
    server.clock.advance(0)
    polite, transport = Polite(), StringTransport()
    polite.makeConnection(transport)
    connections = server.site.connections
    tracked = connections.switched(object(), polite, transport)  # type: ignore[arg-type]
    assert polite.goneAway == 0  # not before it has the connection
    connections.started(tracked)
    assert polite.goneAway == 1
    assert transport.value() == b"bye\r\n"


def test_theDrainCountsEveryConnectionOfTheSite() -> None:
    server, _ = standardServer()
    server.send(IRC_REQ)
    plain, _ = another(server)
    echo, _ = another(server)
    echo.dataReceived(ECHO_REQ)
    connections = server.site.connections
    assert (len(connections.http), len(connections.upgraded)) == (1, 2)
    plain.connectionLost(DONE)
    echo.connectionLost(DONE)
    assert (len(connections.http), len(connections.upgraded)) == (0, 1)
    server.protocol.connectionLost(DONE)
    assert len(connections) == 0


def test_anUpgradedProtocolsOwnConnectionLostIsCalledOnceAndCountsItOut() -> None:
    class Counted(RecordingProtocol):
        def connectionLost(self, reason: Any = None) -> None:
            calls.append("class")

    calls: list[str] = []
    for override in (False, True):
        del calls[:]
        protocol = Counted()
        if override:
            # An instance-level override, as another wrapper would set.
            protocol.connectionLost = lambda reason=None: calls.append("instance")  # type: ignore[method-assign]
        registry = UpgradeRegistry()
        registry.register(b"IRC/6.9", ScriptedHandler(lambda *_, p=protocol: Accept(p)))
        server = Server(registry=registry)
        server.send(IRC_REQ)
        assert server.site.connections.upgraded.items() == [(protocol, server.transport)]
        server.protocol.connectionLost(DONE)
        assert calls == (["instance"] if override else ["class"])
        assert not server.site.connections.upgraded.items()
        assert fired(server.site.drain(1))


def test_upgradedConnectionsAreCountedOutInAnyOrderAndOnlyOnce() -> None:
    from upgradable._drain import Connections

    connections = Connections()
    protocols = [RecordingProtocol() for _ in range(4)]
    transports = [StringTransport() for _ in protocols]
    # What each transport delivers to (TCP's transport.protocol).
    receivers = [
        connections.switched(object(), protocol, transport)  # type: ignore[arg-type]
        for protocol, transport in zip(protocols, transports, strict=True)
    ]
    assert len(connections.upgraded) == 4
    assert connections.upgraded.items() == list(zip(protocols, transports, strict=True))[::-1]
    for index in (2, 0, 2, 3):  # the middle, the oldest, the middle again, the newest
        receivers[index].connectionLost(DONE)
    assert connections.upgraded.items() == [(protocols[1], transports[1])]
    assert len(connections.upgraded) == 1
    assert [len(p.lost) for p in protocols] == [1, 0, 2, 1]
    receivers[1].connectionLost(DONE)
    assert (connections.upgraded.items(), len(connections.upgraded)) == ([], 0)


def test_theTrackingIsNotInTheDataPathAndChangesNothingOnTheProtocol() -> None:
    """The transport calls the protocol's own dataReceived; no attribute is set on it."""
    from upgradable._drain import Connections

    protocol = RecordingProtocol()
    before = dict(vars(protocol))
    receiver = Connections().switched(object(), protocol, StringTransport())  # type: ignore[arg-type]
    assert receiver.dataReceived == protocol.dataReceived
    assert receiver.dataReceived.__self__ is protocol
    assert vars(protocol) == before


def drainMessages(logged: Any) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in logged.events if e.get("log_namespace") == "upgradable._drain"]


def test_theLogCountsConnectionsInWordsOneOrMany(logged: Any) -> None:
    """ "1 upgraded connection", never "the 1 connections"."""
    server, _ = standardServer()
    server.send(IRC_REQ)
    server.site.drain(10)
    server.site.closeAll()
    other, _ = standardServer()
    other.send(IRC_REQ)
    another(other)[0].dataReceived(IRC_REQ)
    other.site.drain(None)
    other.site.closeAll()
    assert drainMessages(logged) == [
        "Draining 0 HTTP and 1 upgraded connection (grace period: 10 s)",
        "Closing the 1 connection left",
        "Draining 0 HTTP and 2 upgraded connections (grace period: none)",
        "Closing the 2 connections left",
    ]


class PoliteOnlyWhenConnected(Polite):
    """A Polite protocol that records whether it was connected when asked to go."""

    def __init__(self) -> None:
        super().__init__()
        self.connectedWhenAsked: list[bool] = []

    def goingAway(self) -> None:
        self.connectedWhenAsked.append(self.transport is not None and self.made == 1)
        super().goingAway()


def test_aConnectionAcceptedAfterTheGracePeriodIsAskedToGoAwayAfterIts101(logged: Any) -> None:
    """
    A connection that arrives as the ports close, once the grace period is
    over, and upgrades: the 101 comes first, then the protocol's goodbye,
    once it has the connection.
    """
    polite = PoliteOnlyWhenConnected()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Accept(polite)))
    server = Server(registry=registry)
    server.send(GET)  # a connection that keeps the drain going
    server.site.drain(0)
    server.clock.advance(0)  # the grace period is over: closing
    assert server.closed
    protocol, transport = another(server)
    protocol.dataReceived(IRC_REQ + b"NICK a\r\n")
    [response], rest = parseResponses(bytes(transport.value()))
    assert response.code == 101
    assert rest == b"bye\r\n"
    assert polite.connectedWhenAsked == [True]
    assert polite.data == b"NICK a\r\n"  # its bytes, then the goodbye
    assert logged.failures(Exception) == []
    assert transport.disconnecting


def test_anUpgradeDecidedAfterTheGracePeriodSaysGoodbyeAfterIts101(logged: Any) -> None:
    """
    The grace period ends while a handler decides (over TLS the close waits
    for the peer, and the answer can still come): the goodbye still follows
    the 101.
    """
    pending = deferred()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(lambda request, product: pending))
    server = Server(registry=registry)
    server.send(IRC_REQ)
    server.site.drain(0)
    server.clock.advance(0)
    polite = PoliteOnlyWhenConnected()
    pending.callback(Accept(polite))
    [response], rest = parseResponses(server.output())
    assert response.code == 101
    assert rest == b"bye\r\n"
    assert polite.connectedWhenAsked == [True]
    assert logged.failures(Exception) == []


# -- what stands in the read path: it follows a hand-over, and it shows the
# -- transport what the protocol behind it provides


IDLE = pytest.mark.parametrize("idle", [None, 30], ids=["counted", "counted+idle watch"])


def tcpLike(protocol: Any, idle: float | None = None) -> tuple[Server, TCPLikeTransport]:
    """A site whose one connection, over a TCP-like transport, switched to ``protocol``."""
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Accept(protocol)), idleTimeout=idle)
    server = Server(registry=registry)
    server.protocol.connectionLost(DONE)  # the helper's own connection: not this test's
    transport = TCPLikeTransport().connect(server.site.buildProtocol(None))
    transport.deliver(IRC_REQ)
    assert parseResponses(bytes(transport.value()))[0][0].code == 101
    assert transport.protocol is not protocol  # something stands in front of it
    return server, transport


class HandsOn(RecordingProtocol):
    """Gives its connection to ``then`` (the hand-over's takeOver) at a SWITCH line."""

    def __init__(self, then: Any) -> None:
        super().__init__()
        self.then = then

    def dataReceived(self, data: bytes) -> None:
        before, switch, after = data.partition(b"SWITCH\r\n")
        self.received.append(before + switch)
        if switch:
            from upgradable._handover import takeOver

            takeOver(self, self.transport, self.then, after)


@IDLE
def test_aConnectionHandedOnGoesToTheNewProtocolAndIsCountedOutOnce(idle: float | None) -> None:
    second = Polite()
    first = HandsOn(second)
    server, transport = tcpLike(first, idle)
    connections = server.site.connections
    transport.deliver(b"one\r\nSWITCH\r\ntwo\r\n", b"three\r\n")
    assert first.data == b"one\r\nSWITCH\r\n"
    assert second.made == 1
    assert second.received == [b"two\r\n", b"three\r\n"]  # each once, in order
    # The site knows which protocol has the connection now: the one a drain
    # asks to go away.
    assert connections.upgraded.items() == [(second, transport)]
    drained = server.site.drain(0)
    server.clock.advance(0)
    assert second.goneAway == 1
    transport.lose(DONE)
    assert (first.lost, second.lost) == ([], [DONE])
    assert len(connections.upgraded) == 0
    assert fired(drained)


@IDLE
def test_aHalfCloseReachesTheProtocolTheConnectionWasHandedTo(idle: float | None) -> None:
    @implementer(IHalfCloseableProtocol)
    class HalfCloseable(RecordingProtocol):
        readEnded = 0

        def readConnectionLost(self) -> None:
            self.readEnded += 1

        def writeConnectionLost(self) -> None:
            pass

    second = HalfCloseable()
    server, transport = tcpLike(HandsOn(second), idle)
    transport.deliver(b"SWITCH\r\n")
    transport.endInput()
    assert (second.readEnded, second.lost) == (1, [])
    assert len(server.site.connections.upgraded) == 1  # still open for writing


def test_theIdleWatchFollowsTheConnectionHandedOn() -> None:
    second = Polite()
    server, transport = tcpLike(HandsOn(second), 30)
    transport.deliver(b"SWITCH\r\n")
    server.clock.advance(20)
    transport.deliver(b"x")  # the new protocol's reads restart the clock
    server.clock.advance(20)
    assert second.goneAway == 0
    server.clock.advance(10)
    assert second.goneAway == 1  # its goodbye, not the first protocol's


@IDLE
def test_aProtocolReadsWithTheMethodItHadWhenItGotTheConnection(idle: float | None) -> None:
    """
    The transport calls the protocol's ``dataReceived`` as it was when the
    protocol got the connection, with or without an idle watch: assigning
    another one to itself later changes nothing (no call of ours per read
    looks it up again); the bytes still arrive once each.
    """

    class Rebinds(RecordingProtocol):
        def dataReceived(self, data: bytes) -> None:
            super().dataReceived(data)
            self.dataReceived = self.elsewhere  # type: ignore[method-assign]

        def elsewhere(self, data: bytes) -> None:
            raise AssertionError("not called")

    protocol = Rebinds()
    _, transport = tcpLike(protocol, idle)
    transport.deliver(b"one", b"two")
    assert protocol.received == [b"one", b"two"]


@implementer(IFileDescriptorReceiver, IHandshakeListener)
class TakesDescriptorsAndTLS(RecordingProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.descriptors: list[int] = []
        self.handshakes = 0

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self.descriptors.append(descriptor)

    def handshakeCompleted(self) -> None:
        self.handshakes += 1


@IDLE
def test_anUpgradedProtocolStillGetsFileDescriptorsAndTheTLSHandshake(idle: float | None) -> None:
    """
    What stands in front of the protocol provides what the protocol does, so
    UNIX sockets still pass it descriptors and TLS (started after the
    switch) still tells it of the handshake.
    """
    protocol = TakesDescriptorsAndTLS()
    _, transport = tcpLike(protocol, idle)
    assert transport.deliverFileDescriptor(7)
    transport.completeHandshake()
    assert (protocol.descriptors, protocol.handshakes) == ([7], 1)


@IDLE
def test_whatStandsInFrontClaimsNoInterfaceItsProtocolLacks(idle: float | None) -> None:
    """A protocol without them: a UNIX socket closes the descriptors, as for any protocol."""
    _, transport = tcpLike(RecordingProtocol(), idle)
    for interface in (IFileDescriptorReceiver, IHandshakeListener, IHalfCloseableProtocol):
        assert not interface.providedBy(transport.protocol), interface
    assert not transport.deliverFileDescriptor(7)


@IDLE
def test_theInterfacesFollowTheConnectionHandedOn(idle: float | None) -> None:
    second = TakesDescriptorsAndTLS()
    _, transport = tcpLike(HandsOn(second), idle)
    assert not IFileDescriptorReceiver.providedBy(transport.protocol)
    transport.deliver(b"SWITCH\r\n")
    assert transport.deliverFileDescriptor(7)
    assert second.descriptors == [7]


@IDLE
def test_theTransportsLogPrefixIsTheProtocols(idle: float | None) -> None:
    """As ProtocolWrapper (TLS started after the switch) names what it wraps."""
    from twisted.internet.protocol import Factory
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    class Named(RecordingProtocol):
        def logPrefix(self) -> str:
            return "IRC client 42"

    _, transport = tcpLike(Named(), idle)
    assert ILoggingContext.providedBy(transport.protocol)
    wrapper = ProtocolWrapper(WrappingFactory(Factory()), transport.protocol)
    assert wrapper.logPrefix() == "IRC client 42 (ProtocolWrapper)"
