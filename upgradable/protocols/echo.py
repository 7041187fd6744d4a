"""
A byte echo, the sample behind the ``HTTP/2.0`` token.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from .._transport import closeTransport

__all__ = ["EchoFactory", "EchoProtocol"]


@implementer(IPushProducer, IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Writes back every byte it receives, unchanged, until the peer closes.

    When the peer only shuts down its sending side, the echo finishes
    writing what it has and then closes.

    It respects flow control: it registers as the transport's producer, so
    when the transport's send buffer is full it stops reading from the peer
    (a client that sends but never reads cannot make it buffer without
    bound), and reads again once the buffer drains.
    """

    transport: Any

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._close()

    def readConnectionLost(self) -> None:
        self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def _close(self) -> None:
        closeTransport(self.transport)


class EchoFactory(Factory):
    """Builds :class:`EchoProtocol`."""

    protocol = EchoProtocol
    # Started with the site that serves it: "Starting factory <...EchoFactory
    # object at 0x...>" would only repeat what the start-up log says.
    noisy = False


def makeHandler(options: object) -> EchoFactory:
    """The ``http2-echo`` plugin's handler: an echo factory."""
    return EchoFactory()
