# Joining two connections into one byte pipe, for relays (upgradable.protocols.relay)
# and the tunnel.
#
# Rules kept here:
# - Nothing is relayed until both sides are connected; a side that connects
#   first stops reading, and what it already read waits in order.
# - Memory stays bounded: each side's transport is registered as the
#   producer of the other's, so when one peer stops reading, reading from the
#   other stops too (Twisted's portforward pattern).
# - Half-close travels: a peer that shuts down its sending side gets its
#   partner's write side shut down; when both directions are done, or either
#   connection is lost, both close. Producers are unregistered before a
#   close, or a TLS transport would never close.
from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from .._transport import closeTransport

__all__ = ["Relay", "RelaySide"]


@implementer(IHalfCloseableProtocol)
class RelaySide(Protocol):
    """One end of a :class:`Relay`."""

    transport: Any

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.pending: list[bytes] = []
        self.connected = False
        self.readDone = False
        self.gone = False
        self.closing = False

    @property
    def partner(self) -> RelaySide:
        return self.relay.b if self is self.relay.a else self.relay.a

    def connectionMade(self) -> None:
        self.connected = True
        if not self.relay.started:
            self.transport.pauseProducing()
        self.relay.sideConnected()

    def dataReceived(self, data: bytes) -> None:
        if self.relay.started:
            self.partner.transport.write(data)
        else:
            self.pending.append(data)

    def readConnectionLost(self) -> None:
        self.readDone = True
        partner = self.partner
        if not self.relay.started:
            return
        if partner.readDone or ISSLTransport.providedBy(partner.transport):
            # TLS has no half-close: shutting the socket's write side under
            # it would cut the TLS session short. Close after the flush.
            self.relay.close()
        elif hasattr(partner.transport, "loseWriteConnection"):
            partner.transport.loseWriteConnection()
        else:
            self.relay.close()

    def writeConnectionLost(self) -> None:
        if self.readDone:
            self.relay.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone = True
        self.relay.close()


class Relay:
    """
    Two :class:`RelaySide` protocols, ``a`` and ``b``, that copy bytes to
    each other once both are connected.

    :param onStart: called when both sides are connected and relaying.
    """

    def __init__(self) -> None:
        self.a = RelaySide(self)
        self.b = RelaySide(self)
        self.started = False
        self.closed = False

    def sideConnected(self) -> None:
        if self.closed or self.a.gone or self.b.gone:
            self.close()  # a side that connects after the other left is closed too
            return
        if self.started or not (self.a.connected and self.b.connected):
            return
        self.started = True
        for side in (self.a, self.b):
            partner = side.partner
            pending, side.pending = side.pending, []
            for data in pending:
                partner.transport.write(data)
            # When `partner` cannot write fast enough, stop reading `side`.
            partner.transport.registerProducer(side.transport, True)
        for side in (self.a, self.b):
            side.transport.resumeProducing()
            if side.readDone:
                side.readConnectionLost()

    def close(self) -> None:
        """Close both sides (each flushes what it has to write first)."""
        self.closed = True
        for side in (self.a, self.b):
            if side.connected and not side.gone and not side.closing:
                side.closing = True
                closeTransport(side.transport)
