# An idle timeout for upgraded connections, opt-in per product.
#
# A wrapper in the read path only, as Twisted's own
# twisted.protocols.policies.TimeoutProtocol, but thinner: the hand-over
# routes the transport's events to it, and the protocol is connected to the
# transport itself, so its writes, its producer and its transport's methods
# are the transport's own. Nothing is rebound on the protocol, so a protocol
# with __slots__ is watched like any other. It calls the protocol's
# dataReceived as it was when the protocol got the connection, as the
# site's count does (a product behaves the same with or without an idle
# timeout), and follows the connection when the protocol hands it on.
from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._drain import goAway
from ._handover import StandIn, standInClass

__all__ = ["IdleWatch"]

_log = Logger()


class IdleWatch(StandIn):
    """
    Stands between a transport and the upgraded ``protocol`` it delivers
    to: every byte from the peer restarts the clock; after ``seconds``
    without one the protocol is asked to go away, politely, as a graceful
    stop does (see :func:`~upgradable._drain.goAway`), and the connection is
    aborted if it is still open ``grace`` seconds later.

    It provides what ``protocol`` provides of the interfaces transports look
    for (a half-close, file descriptors, the TLS handshake; see
    :class:`~upgradable._handover.StandIn`), so those reach it as before.
    """

    #: After the polite close, how long a peer may take to let go (over TLS
    #: the close waits for the peer's close_notify).
    grace = 5.0

    __slots__ = ("abort", "callLater", "deliver", "protocol", "seconds", "timer", "transport")

    def __new__(cls, protocol: IProtocol, *args: Any, **kwargs: Any) -> IdleWatch:
        kind: Any = standInClass(cls, protocol)
        watch: IdleWatch = object.__new__(kind)
        return watch

    def __init__(self, protocol: IProtocol, transport: Any, seconds: float, callLater: Any) -> None:
        self.protocol = protocol
        self.deliver = protocol.dataReceived
        self.transport = transport
        self.seconds = seconds
        self.callLater = callLater
        self.abort: Any = None
        self.timer: Any = callLater(seconds, self.expired)

    @property
    def receiver(self) -> Any:
        """What it passes the transport's events on to: its protocol."""
        return self.protocol

    def standFor(self, protocol: Any) -> None:
        self.protocol = protocol
        self.deliver = protocol.dataReceived
        self.__class__ = standInClass(type(self), protocol)

    def dataReceived(self, data: bytes) -> None:
        timer = self.timer
        if timer is not None and timer.active():
            timer.reset(self.seconds)
        self.deliver(data)

    def connectionLost(self, reason: Failure = connectionDone, *args: Any, **kwargs: Any) -> None:
        for call in (self.timer, self.abort):
            if call is not None and call.active():
                call.cancel()
        # No timer refers to the watch any more: no reference cycle outlives
        # the connection.
        self.timer = self.abort = None
        self.protocol.connectionLost(reason, *args, **kwargs)

    def expired(self) -> None:
        self.timer = None
        _log.info("Closing {peer}: idle for {seconds} s after the upgrade",
                  peer=self.transport.getPeer(), seconds=self.seconds)  # fmt: skip
        # The protocol's own goodbye, as when the server stops (a WebSocket
        # close 1001, an IRC ERROR, an HTTP/2 GOAWAY): a browser sees a
        # clean close, not 1006.
        transport = self.transport
        self.abort = self.callLater(self.grace, transport.abortConnection)
        goAway(self.protocol, transport)

    def __repr__(self) -> str:
        return f"<IdleWatch {self.seconds:g} s around {self.protocol!r}>"
