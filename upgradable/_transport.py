# Things about transports that more than one module needs:
# - every protocol here that registers as its transport's producer must
#   unregister before it closes: a registered producer keeps TLS's
#   loseConnection from ever closing (twisted/protocols/tls.py);
# - a plain TCP connection's local address is its listening port's, when
#   that port is bound to one address (on Linux): no getsockname per upgrade.
# (Writing at once and recognising the PROXY protocol need Twisted's
# private names, and live in _handover.)
from __future__ import annotations

import socket
import sys
from ipaddress import ip_address
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.tcp import Server

from ._handover import listeningSocketOf

__all__ = ["LocalAddresses", "closeTransport"]


def closeTransport(transport: Any) -> None:
    """Unregister any producer, then close once pending writes are flushed."""
    try:
        transport.unregisterProducer()
    except RuntimeError:
        pass  # none was registered (an in-memory transport says so loudly)
    transport.loseConnection()


class LocalAddresses:
    """
    The local addresses of plain TCP server connections, learnt once per
    listening port.

    On Linux, a connection accepted on a port bound to one address
    (``127.0.0.1``, ``::1``, a host's own address) has that address, so it
    needs no ``getsockname`` system call of its own (as in nginx). The
    connections of a port bound to every address (``0.0.0.0``, ``::``,
    ``::ffff:0.0.0.0``) or set up for transparent proxying (TPROXY, which
    accepts connections to any address), of ports on other systems, and of
    other transports (TLS, PROXY, UNIX, in memory) are asked, as before.
    """

    #: How many listening sockets are remembered; a site whose ports listen
    #: again and again forgets them all beyond that, and learns anew.
    remembered = 64

    def __init__(self) -> None:
        # Each listening socket seen (a port that listens again has a new
        # one), with its bound address, or None when it does not tell.
        self._sockets: dict[Any, IPv4Address | IPv6Address | None] = {}

    def of(self, transport: Any) -> IAddress:
        """``transport.getHost()``, without a system call where the port tells."""
        if type(transport) is Server:
            listening = listeningSocketOf(transport)
            if listening is not None:
                known = self._sockets
                if listening in known:
                    bound = known[listening]
                else:
                    if len(known) >= self.remembered:
                        known.clear()
                    bound = known[listening] = _boundAddress(transport.server)
                # A copy: Twisted's addresses can be changed, and each
                # request has its own.
                if type(bound) is IPv4Address:
                    return IPv4Address("TCP", bound.host, bound.port)
                if type(bound) is IPv6Address:
                    return IPv6Address("TCP", bound.host, bound.port, bound.flowInfo, bound.scopeID)
        address: IAddress = transport.getHost()
        return address


# Linux's IP_TRANSPARENT and IPV6_TRANSPARENT (not in Python's socket module).
_TRANSPARENT = ((socket.IPPROTO_IP, 19), (socket.IPPROTO_IPV6, 75))


def _boundAddress(port: Any) -> IPv4Address | IPv6Address | None:
    """``port``'s address if all its connections have it, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        address = port.getHost()
        if not isinstance(address, (IPv4Address, IPv6Address)):
            return None
        # A link-local IPv6 address carries its scope after "%".
        ip = ip_address(address.host.partition("%")[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return None
        for level, option in _TRANSPARENT:
            try:
                if port.socket.getsockopt(level, option):
                    return None
            except OSError:
                pass  # not an option of this socket's family
    except (OSError, ValueError, AttributeError):
        return None  # not listening any more, or an address of another kind
    return address
