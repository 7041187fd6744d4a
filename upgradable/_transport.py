# Two things about transports that more than one module needs:
# - every protocol here that registers as its transport's producer must
#   unregister before it closes: a registered producer keeps TLS's
#   loseConnection from ever closing (twisted/protocols/tls.py);
# - the 101 goes out in the same reactor turn as the request that asked
#   for it, when nothing else is queued on a plain TCP connection.
from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Server

__all__ = ["closeTransport", "writeNow"]


def closeTransport(transport: Any) -> None:
    """Unregister any producer, then close once pending writes are flushed."""
    try:
        transport.unregisterProducer()
    except RuntimeError:
        pass  # none was registered (an in-memory transport says so loudly)
    transport.loseConnection()


def writeNow(transport: Any, data: bytes) -> None:
    """
    ``transport.write(data)``, but on a plain TCP server connection with
    nothing queued, sent at once.

    A Twisted transport queues every write and sends it when the reactor
    next finds the socket writable, which costs two ``epoll_ctl`` calls and
    a turn of the reactor. Sending at once keeps the order (nothing is
    queued before it); whatever the socket does not take (or an error, which
    the transport finds again on its next write or read) is queued as usual.
    Anything else (TLS, PROXY and other wrappers, in-memory transports) gets
    an ordinary ``write``.
    """
    if (
        type(transport) is Server
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
