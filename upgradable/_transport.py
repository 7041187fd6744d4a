# Things about transports that more than one module needs:
# - every protocol here that registers as its transport's producer must
#   unregister before it closes: a registered producer keeps TLS's
#   loseConnection from ever closing (twisted/protocols/tls.py);
# - the 101 goes out in the same reactor turn as the request that asked
#   for it, when nothing else is queued on a plain TCP connection;
# - a plain TCP connection's local address is its listening port's, when
#   that port is bound to one address: no getsockname per upgrade.
from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.tcp import Server

__all__ = ["LocalAddresses", "closeTransport", "writeNow"]


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


class LocalAddresses:
    """
    The local addresses of plain TCP server connections, learnt once per
    listening port.

    A connection accepted on a port bound to one address (``127.0.0.1``,
    ``::1``, a host's own address) has that address, so it needs no
    ``getsockname`` system call of its own (as in nginx); a port bound to
    every address (``0.0.0.0``, ``::``) does not tell, and its connections
    are asked, as are other transports (TLS, PROXY, UNIX, in memory).
    """

    def __init__(self) -> None:
        # Each listening socket seen (a port that listens again has a new
        # one), with its bound address, or None when it does not tell.
        self._sockets: dict[Any, IPv4Address | IPv6Address | None] = {}

    def of(self, transport: Any) -> IAddress:
        """``transport.getHost()``, without a system call where the port tells."""
        if type(transport) is Server:
            listening = getattr(transport.server, "socket", None)
            if listening is not None:
                known = self._sockets
                if listening in known:
                    bound = known[listening]
                else:
                    bound = known[listening] = _boundAddress(transport.server)
                # A copy: Twisted's addresses can be changed, and each
                # request has its own.
                if type(bound) is IPv4Address:
                    return IPv4Address("TCP", bound.host, bound.port)
                if type(bound) is IPv6Address:
                    return IPv6Address("TCP", bound.host, bound.port, bound.flowInfo, bound.scopeID)
        address: IAddress = transport.getHost()
        return address


def _boundAddress(port: Any) -> IPv4Address | IPv6Address | None:
    """``port``'s address if it is bound to one address, else None."""
    try:
        address = port.getHost()
        if isinstance(address, (IPv4Address, IPv6Address)):
            # A link-local IPv6 address carries its scope after "%".
            if not ip_address(address.host.partition("%")[0]).is_unspecified:
                return address
    except (OSError, ValueError, AttributeError):
        pass  # not listening any more, or an address of another kind
    return None
