# Letting a site's connections end before its process stops.
#
# A site knows its live connections: the HTTP channels, until they close or
# switch, and the upgraded protocols, until their connections are lost. A
# drain (UpgradableSite.drain, which twistd's stop runs once the listening
# ports are closed) then:
# - closes every HTTP connection that is between requests at once, and lets
#   every other one finish its request (an upgrade being decided included:
#   a 101 moves it to the upgraded ones) and close after its response;
# - leaves upgraded connections alone until they end by themselves, or until
#   the grace period is over: then each is asked to go away (IGoingAway, e.g.
#   a WebSocket close 1001) or closed, and aborted a few seconds later.
# The Deferred it returns fires when no connection is left.
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._handover import GenericHTTPChannelProtocol, H2Connection, StandIn, channelOf, standInClass
from ._transport import closeTransport
from .interfaces import IGoingAway


class HTTPConnection(Protocol):
    """What the connections of a site are until they switch: an
    UpgradableHTTPChannel, or a new connection that has received nothing."""

    transport: Any

    def stopPersisting(self) -> None:
        """Serve no request after the current one (close now if none)."""


__all__ = ["Connections", "goAway", "plural"]

_log = Logger()


class Connections:
    """
    The live connections of one site, and how to let them go.

    :param callLater: schedules the grace period and the aborts; the site
        sets it (channels outside a site only count, they never drain).
    """

    #: Seconds a connection asked to close (or go away) may take to do so
    #: before it is aborted; over TLS a close waits for the peer's close_notify.
    abortAfter = 5.0

    def __init__(self, callLater: Any = None) -> None:
        self.callLater = callLater
        # Each HTTP connection's channel, with the protocol its transport
        # calls (Twisted's wrapper, which may have given it to HTTP/2).
        self.http: dict[HTTPConnection, Any] = {}
        self.upgraded = _Upgraded(self)
        self.draining = False
        self._closing = False
        self._drained: list[Deferred[None]] = []
        self._timers: list[IDelayedCall] = []

    def __len__(self) -> int:
        return len(self.http) + len(self.upgraded)

    # -- what the channels report -----------------------------------------

    def opened(self, channel: HTTPConnection, wrapper: Any) -> None:
        self.http[channel] = wrapper

    def closed(self, channel: HTTPConnection) -> None:
        if self.http.pop(channel, None) is not None:
            self._check()

    def switched(
        self, channel: HTTPConnection, protocol: IProtocol, transport: Any, receiver: Any = None
    ) -> Any:
        """
        ``channel`` gives its connection to ``protocol``: track that until it
        is lost. Return what the transport's events must go to (see
        :class:`_Tracked`); ``receiver`` is what they would go to otherwise
        (``protocol``, or a wrapper of its read path). Once the protocol has
        the connection, :meth:`started` is told.
        """
        self.http.pop(channel, None)
        return self.upgraded.add(protocol, transport, protocol if receiver is None else receiver)

    def started(self, tracked: _Tracked) -> None:
        """
        The protocol ``tracked`` stands for has its connection: the 101 is
        written, it is connected and has its first bytes. If the drain's
        grace period is over, it is asked to go away now, after its 101 and
        not before (a WebSocket close, an IRC ``ERROR`` follows the switch).
        """
        if self._closing and tracked in self.upgraded:
            goAway(tracked.protocol, tracked.transport)

    # -- draining -----------------------------------------------------------

    def drain(self, grace: float | None) -> Deferred[None]:
        """
        Stop keeping connections: see the module comment. ``grace`` is how
        long upgraded connections may go on (None: as long as they like; 0:
        ask them to go now).
        """
        if not self.draining:
            self.draining = True
            _log.info(
                "Draining {http} HTTP and {upgraded} upgraded {connections} "
                "(grace period: {grace})",
                http=len(self.http),
                upgraded=len(self.upgraded),
                connections=plural(len(self), "connection"),
                grace="none" if grace is None else f"{grace:g} s",
            )
            for channel, wrapper in list(self.http.items()):
                if _servedBy(channel, wrapper) is channel:
                    channel.stopPersisting()
                # else: HTTP/2 (TLS ALPN) took it over; it goes on until the
                # grace period is over, like an upgraded connection.
            if grace is not None:
                self._timers.append(self.callLater(grace, self.closeAll))
        if not self:
            self._check()
            return succeed(None)
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        return drained

    def closeAll(self) -> None:
        """End the drain's grace period now: close every connection left."""
        if self._closing:
            return  # already closing; the aborts are scheduled
        self.draining = self._closing = True
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = [self.callLater(self.abortAfter, self._abortAll)]
        if self:
            _log.info("Closing the {count} {connections} left",
                      count=len(self), connections=plural(len(self), "connection"))  # fmt: skip
        for channel, wrapper in list(self.http.items()):
            current = _servedBy(channel, wrapper)
            if current is not channel and isinstance(current, H2Connection):
                # HTTP/2 over TLS (ALPN): GOAWAY(NO_ERROR) first.
                current.conn.close_connection()
                channel.transport.write(current.conn.data_to_send())
            closeTransport(channel.transport)
        for protocol, transport in self.upgraded.items():
            goAway(protocol, transport)
        self._check()

    def _abortAll(self) -> None:
        for channel in list(self.http):
            channel.transport.abortConnection()
        for transport in self.upgraded.values():
            transport.abortConnection()

    def _check(self) -> None:
        if self.draining and not self:
            for timer in self._timers:
                if timer.active():
                    timer.cancel()
            drained, self._drained = self._drained, []
            if drained:
                _log.info("Drained: no connection left")
            for deferred in drained:
                deferred.callback(None)


class _Upgraded:
    """
    A site's live upgraded connections: each protocol, with its transport.

    Each is held by the :class:`_Tracked` that its transport's events go
    to, and these form a doubly linked list, so that a connection costs that
    object alone and no dict entry. Adding, removing and counting take
    constant time, listing them linear time; there is no lookup by protocol.
    """

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self._first: _Tracked | None = None
        self._count = 0

    def add(self, protocol: IProtocol, transport: Any, receiver: Any) -> _Tracked:
        """Track ``protocol`` until its connection is lost; see :class:`_Tracked`."""
        entry = standInClass(_Tracked, receiver)(self.connections, protocol, transport, receiver)
        entry.before = None
        entry.after = first = self._first
        if first is not None:
            first.before = entry
        self._first = entry
        self._count += 1
        return entry

    def __contains__(self, entry: object) -> bool:
        """Whether ``entry`` (a :class:`_Tracked`) is still tracked."""
        return isinstance(entry, _Tracked) and (entry.before is not None or self._first is entry)

    def remove(self, entry: _Tracked) -> None:
        """Stop tracking ``entry``'s protocol (again: nothing happens)."""
        before, after = entry.before, entry.after
        if before is None and self._first is not entry:
            return  # removed already
        if before is None:
            self._first = after
        else:
            before.after = after
        if after is not None:
            after.before = before
        entry.before = entry.after = None
        self._count -= 1

    def items(self) -> list[tuple[IProtocol, Any]]:
        """Each protocol with its transport, newest first: a list made now."""
        pairs = []
        entry = self._first
        while entry is not None:
            pairs.append((entry.protocol, entry.transport))
            entry = entry.after
        return pairs

    def values(self) -> list[Any]:
        """Each transport, newest first: a list made now."""
        return [transport for _, transport in self.items()]

    def __iter__(self) -> Iterator[IProtocol]:
        return iter([protocol for protocol, _ in self.items()])

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"_Upgraded({self.items()!r})"


class _Tracked(StandIn):
    """
    What an upgraded connection's transport delivers to, so that the site
    counts the connection out when it is lost: nothing is replaced on the
    protocol (a protocol with ``__slots__`` is tracked like any other).

    It is not in the data path: its ``dataReceived`` is the receiver's own
    bound method, kept as an attribute, so the transport calls the
    protocol (or the wrapper of its read path) directly. It is looked up
    when the protocol gets the connection, and again if the connection is
    handed on (:meth:`standFor`): a protocol that assigns another
    ``dataReceived`` to itself later is not seen. Only ``connectionLost``
    is its own; extra arguments pass through (Twisted's H2Connection calls
    its own with ``_cancelTimeouts=False``). It provides what its receiver
    provides of the interfaces transports look for (see
    :class:`~upgradable._handover.StandIn`).
    """

    __slots__ = ("after", "before", "connections", "dataReceived", "protocol", "receiver",
                 "transport")  # fmt: skip
    # Neighbours in the site's list of upgraded connections.
    before: _Tracked | None
    after: _Tracked | None

    def __init__(
        self, connections: Connections, protocol: IProtocol, transport: Any, receiver: Any
    ) -> None:
        self.connections = connections
        self.protocol = protocol
        self.transport = transport
        self.receiver = receiver
        self.dataReceived = receiver.dataReceived

    def standFor(self, protocol: Any) -> None:
        receiver = self.receiver
        if isinstance(receiver, StandIn):
            receiver.standFor(protocol)  # an idle watch: it watches the new one
        else:
            self.receiver = receiver = protocol
        self.protocol = protocol
        self.dataReceived = receiver.dataReceived
        self.__class__ = standInClass(type(self), receiver)

    def connectionLost(self, reason: Failure = connectionDone, *args: Any, **kwargs: Any) -> None:
        connections = self.connections
        connections.upgraded.remove(self)
        try:
            self.receiver.connectionLost(reason, *args, **kwargs)
        finally:
            connections._check()

    def __repr__(self) -> str:
        return f"<_Tracked {self.protocol!r}>"


def _servedBy(channel: HTTPConnection, wrapper: Any) -> Any:
    """
    What serves an HTTP connection now: its channel, or HTTP/2, when
    Twisted's wrapper gave the connection to it (ALPN chose h2).
    """
    return channelOf(wrapper) if isinstance(wrapper, GenericHTTPChannelProtocol) else channel


def goAway(protocol: IProtocol, transport: Any) -> None:
    """
    End an upgraded connection politely: ask ``protocol`` to go away when it
    provides :class:`~upgradable.interfaces.IGoingAway` (a WebSocket close
    1001, an IRC ``ERROR``, an HTTP/2 GOAWAY), else close ``transport`` once
    its pending writes are out. A protocol that fails at it is aborted.
    The caller aborts the connection if it is still open a while later.
    """
    try:
        if IGoingAway.providedBy(protocol):
            protocol.goingAway()
        else:
            closeTransport(transport)
    except Exception:
        _log.failure("{protocol!r} failed to go away; closing", protocol=protocol)
        transport.abortConnection()


def plural(count: int, noun: str) -> str:
    """``noun`` as it reads after ``count``: 1 connection, 0 or 2 connections."""
    return noun if count == 1 else noun + "s"
