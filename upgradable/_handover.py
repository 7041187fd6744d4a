# The hand-over, and the one place where Twisted's private names are used.
#
# Twisted has no public way to give a connected transport to another
# protocol (twisted/twisted#3204, #8301). Every carrier here (the server's
# fast path, its HTTP channel, the client) does it the same way (the client
# reroutes, then connects and delivers itself, to fire its Deferred between):
#
# 1. The protocol that has the connection stops everything of its own (its
#    timers, its producer registration) and says what it read and did not
#    consume: the leftover bytes, a value (as h11's trailing_data, hyper's
#    Parts.read_buf, Go's Hijack). Nothing else reaches into its buffers.
# 2. reroute(): the transport's events go to the new protocol. Whatever
#    calls the old one directly is pointed at the new one (TCP's
#    ``protocol``, the ``wrappedProtocol`` of TLS and PROXY wrappers, TLS
#    started on a TCP transport), and the old one's own entry points are
#    rebound too, for the callers that look them up on it (Twisted's ALPN
#    wrapper, in-memory test transports). No forwarding call of ours is
#    left in the data path, and the old protocol can be freed. What stands
#    in front of an upgraded protocol (a StandIn: the site's count, an idle
#    watch) is not passed over when that protocol hands its connection on
#    in turn: it is pointed at the new protocol, so the connection is still
#    counted once and watched.
# 3. takeOver(): ``makeConnection`` with the same transport, then the
#    leftover bytes, once. A protocol that fails to start is logged and its
#    connection closed: after a 101 nothing can be answered in HTTP.
#
# Twisted's private names, each with what it is used for. All were checked
# on Twisted 24.11, 25.5, 26.4 and 26.10 (.ci/matrix runs the suite on 24.11
# and 26.10); tests/test_handover.py fails, naming the name, if a release
# renames or changes one. Nothing here tests for a name with hasattr and
# turns a feature off without it: a missing name raises.
#
# Used through this module:
#   web.http._GenericHTTPChannelProtocol  the HTTP stack Site builds (and
#       its ALPN hand-off to HTTP/2); subclassed by the site, recognised by
#       reroute; ``._channel`` is the protocol inside it.
#   web.http._parseRequestLine            the fast path splits a request
#       line exactly as HTTPChannel does.
#   web.http_headers.Headers._rawHeaders  header fields by canonical name,
#       without re-encoding each name per lookup; its slot holds the
#       fields of a _PackedHeaders.
#   web.http_headers._nameEncoder         canonical names as Headers keeps
#       them (``encode``), and those it has made already
#       (``_canonicalHeaderCache``).
#   web._http2.H2Connection               h2c's protocol; its
#       ``_tryToWriteControlData``, ``connectionLost(_cancelTimeouts=)``,
#       ``_requestReceived`` and H2Stream's ``_request`` start stream 1
#       from the upgrade request and close after a protocol error.
#   protocols.haproxy._wrapper.HAProxyProtocolWrapper  the transport an
#       ``haproxy:`` endpoint gives: the connection came from a proxy.
#   internet.abstract.FileDescriptor._tempDataBuffer (with ``dataBuffer``,
#       ``offset``, ``writeSomeData``, ``TLS``)  whether nothing is queued,
#       so that a write may go out at once.
#   internet.tcp.Server ``server.socket``, ``client``  a connection's
#       listening socket and peer, without a system call.
#   internet.tcp._SocketCloser._shouldShutdown, unix.Port
#       ._fromListeningDescriptor  workers share a listening socket.
#   application.internet.StreamServerEndpointService._waitingForPort,
#       ._raiseSynchronously  twistd's log line once a port listens; a
#       worker that cannot adopt its socket fails at start-up.
#
# Used by subclasses of Twisted's classes, on their own inherited state (a
# subclass cannot do otherwise; each is still guarded by a test):
#   UpgradableHTTPChannel (HTTPChannel, LineReceiver): ``_buffer``,
#       ``_dataBuffer``, ``_handlingRequest``, ``_receivedHeaderSize``,
#       ``_receivedHeaderCount``, ``_command``, ``_path``, ``_version``,
#       ``_networkProducer``, ``_savedTimeOut``, and the override of
#       ``_respondToBadRequestAndDisconnect``.
#   protocols.irc (words.service.IRCUser): ``_cbLogin``, ``_ebLogin``,
#       ``_motdMessages``, and IRCFactory's ``_serverInfo``.
from __future__ import annotations

from operator import attrgetter
from typing import Any, TypeVar

from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IProtocol,
)
from twisted.internet.tcp import Server
from twisted.logger import Logger
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol, _parseRequestLine
from twisted.web.http_headers import Headers, _nameEncoder
from zope.interface import implementer, providedBy

from ._core import REMEMBERED

__all__ = [
    "CANONICAL_NAMES",
    "RAW_HEADERS_SLOT",
    "GenericHTTPChannelProtocol",
    "H2Connection",
    "StandIn",
    "adoptUNIXPort",
    "canonicalName",
    "channelOf",
    "closeAfterH2ProtocolError",
    "fieldsOf",
    "keepSharedSocketOpen",
    "listeningDeferred",
    "listeningSocketOf",
    "parseRequestLine",
    "peerTupleOf",
    "raiseWhenListeningFails",
    "reroute",
    "standInClass",
    "startH2Stream",
    "takeOver",
    "throughProxyProtocol",
    "writeNow",
]

_log = Logger()

# -- the hand-over --------------------------------------------------------


@implementer(ILoggingContext)
class StandIn:
    """
    What stands between a transport and the upgraded protocol it delivers
    to, in the read path only: the transport calls it, and it passes the
    events on to its ``receiver`` (the protocol, or another stand-in).

    Transports look on what they deliver to for interfaces that the
    protocol may provide: a half-close (TCP), file descriptors (UNIX
    sockets), the end of a TLS handshake (TLS started after the switch).
    A stand-in provides exactly those its receiver provides, by its class
    (see :func:`standInClass`), so nothing is looked up per read; it
    forwards those calls (which a transport makes only to a provider).

    :ivar protocol: the upgraded protocol it stands for.
    """

    __slots__ = ()
    protocol: Any
    receiver: Any

    def standFor(self, protocol: Any) -> None:
        """``protocol`` has the connection now, handed on by the one before (reroute)."""
        raise NotImplementedError

    def readConnectionLost(self) -> None:
        self.receiver.readConnectionLost()

    def writeConnectionLost(self) -> None:
        self.receiver.writeConnectionLost()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self.receiver.fileDescriptorReceived(descriptor)

    def handshakeCompleted(self) -> None:
        self.receiver.handshakeCompleted()

    def logPrefix(self) -> str:
        logPrefix = getattr(self.protocol, "logPrefix", None)
        return logPrefix() if logPrefix is not None else type(self.protocol).__name__


#: The interfaces a stand-in provides when its receiver does.
_FORWARDED = (IHalfCloseableProtocol, IFileDescriptorReceiver, IHandshakeListener)
# Each stand-in class with the interfaces it adds (at most 2 ** 3 for a
# class, each made once), and the class for each stand-in class and what a
# receiver provides (its class's declaration, usually), for so many.
_withInterfaces: dict[tuple[Any, ...], Any] = {}
_standInClasses: dict[tuple[Any, Any], Any] = {}

_S = TypeVar("_S", bound=StandIn)


def standInClass(base: type[_S], receiver: Any) -> type[_S]:
    """
    ``base``, or the subclass of it that also provides what ``receiver``
    provides of the interfaces transports look for (its layout the same, so
    that a stand-in can change to another when its receiver changes).
    ``base`` may be such a subclass already.
    """
    provided = providedBy(receiver)
    kind: type[_S] | None = _standInClasses.get((base, provided))
    if kind is None:
        plain = base.__dict__.get("_plainClass", base)
        interfaces = tuple(i for i in _FORWARDED if provided.isOrExtends(i))
        kind = _withInterfaces.get((plain, interfaces))
        if kind is None:
            kind = plain
            if interfaces:
                name = plain.__name__ + "".join(i.__name__[1:] for i in interfaces)
                namespace = {"__slots__": (), "__module__": plain.__module__, "_plainClass": plain}
                kind = implementer(*interfaces)(type(name, (plain,), namespace))
            _withInterfaces[(plain, interfaces)] = kind
        if len(_standInClasses) < REMEMBERED:
            _standInClasses[(base, provided)] = kind
    return kind


def reroute(transport: Any, old: Any, new: IProtocol) -> None:
    """
    Route ``transport``'s events to ``new`` instead of ``old``, the protocol
    it was connected to (see the module's note).
    """
    old.dataReceived = new.dataReceived
    if isinstance(old, HTTPChannel):
        old.rawDataReceived = new.dataReceived  # type: ignore[method-assign]
    old.connectionLost = new.connectionLost
    if getattr(transport, "protocol", None) is old:
        transport.protocol = new  # TCP: the only caller
        return
    # A ProtocolWrapper transport (PROXY, TLS by wrapping factory) calls
    # its wrappedProtocol; TLS started on a TCP transport calls
    # transport.protocol.wrappedProtocol; either may be Twisted's HTTP
    # wrapper around ``old``, or a stand-in in front of ``old``.
    for holder in (transport, getattr(transport, "protocol", None)):
        if isinstance(holder, StandIn):
            continue  # re-pointed as a whole below, or already
        for attribute in ("protocol", "wrappedProtocol"):
            current = getattr(holder, attribute, None)
            if current is old or (
                isinstance(current, _GenericHTTPChannelProtocol) and current._channel is old
            ):
                setattr(holder, attribute, new)
            elif isinstance(current, StandIn) and current.protocol is old:
                current.standFor(new)


def takeOver(
    old: Any, transport: Any, protocol: IProtocol, leftover: bytes, receiver: Any = None
) -> bool:
    """
    Give ``transport`` to ``protocol`` instead of ``old``, which has stopped
    everything of its own, then the ``leftover`` bytes it read and did not
    consume. False when the protocol failed to start or to take them: that
    is logged and the connection is closed.

    :param receiver: what gets the transport's events instead of
        ``protocol``: a wrapper that passes them on (an idle timeout's);
        ``protocol`` itself writes to the transport directly.
    """
    if receiver is None:
        receiver = protocol
    try:
        reroute(transport, old, receiver)
        protocol.makeConnection(transport)
        if leftover:
            receiver.dataReceived(leftover)
    except Exception:
        _log.failure("{protocol!r} failed as it took the connection over; closing",
                     protocol=protocol)  # fmt: skip
        transport.loseConnection()
        return False
    return True


# -- Twisted's HTTP/1.1 ---------------------------------------------------

#: Twisted's wrapper around an HTTP channel, which gives a TLS connection
#: to HTTP/2 when ALPN chose h2; what ``Site.buildProtocol`` returns.
GenericHTTPChannelProtocol = _GenericHTTPChannelProtocol


def channelOf(wrapper: Any) -> Any:
    """The protocol inside Twisted's HTTP wrapper: our channel, or HTTP/2."""
    return wrapper._channel


#: ``parseRequestLine(line) -> (method, target, version)``, as HTTPChannel
#: splits a request line; ValueError when it would answer 400.
parseRequestLine = _parseRequestLine

#: ``fieldsOf(headers)``: a Headers' fields, ``{canonical name: [values]}``,
#: Twisted's own dict (not a copy). A C-level getter: it runs per request.
fieldsOf: Any = attrgetter("_rawHeaders")

#: The slot in which Headers keeps that dict.
RAW_HEADERS_SLOT: Any = Headers.__dict__["_rawHeaders"]

#: ``canonicalName(name)``: a header name as Headers keeps it, e.g.
#: ``b"Content-Length"``; InvalidHeaderName when it is not a token.
canonicalName = _nameEncoder.encode

#: The names ``canonicalName`` has made already, to the canonical form.
CANONICAL_NAMES: dict[Any, bytes] = _nameEncoder._canonicalHeaderCache


# -- Twisted's HTTP/2 -----------------------------------------------------


def closeAfterH2ProtocolError(connection: H2Connection, reason: Failure) -> None:
    """
    Write what ``connection`` has queued (a GOAWAY) and close, leaving its
    timers armed so that a peer that never reads is still timed out: what
    H2Connection does itself on a protocol error (inline in
    ``dataReceived`` before 26.10, in ``_terminate`` since).
    """
    if connection._tryToWriteControlData():
        transport: Any = connection.transport
        transport.loseConnection()
        connection.connectionLost(reason, _cancelTimeouts=False)


def startH2Stream(connection: H2Connection, event: Any, body: bytes) -> None:
    """
    Serve a request that arrived some other way (the HTTP/1.1 request of
    an h2c upgrade) as ``event``'s stream, with its whole ``body``.
    """
    connection._requestReceived(event)
    stream = connection.streams[event.stream_id]
    if body:
        # Read already, outside HTTP/2: no HTTP/2 flow control applies.
        stream._request.handleContentChunk(body)
    stream.requestComplete()


# -- transports -----------------------------------------------------------

# How many wrapping transports are looked through (TLS over PROXY, PROXY
# over TLS, a test's wrapper): more than any real stack has.
_WRAPPERS = 4


def throughProxyProtocol(transport: Any) -> bool:
    """
    Whether ``transport`` (or a transport it wraps) is a PROXY protocol
    connection, as ``haproxy:`` endpoints make: its peer is a proxy.
    """
    for _ in range(_WRAPPERS):
        if type(transport) is Server or transport is None:
            return False
        if isinstance(transport, HAProxyProtocolWrapper):
            return True
        transport = getattr(transport, "transport", None)
    return False


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


def listeningSocketOf(transport: Server) -> Any:
    """
    The listening socket that accepted a TCP server connection; None once
    its port has stopped listening (Twisted deletes the attribute then).
    """
    return getattr(transport.server, "socket", None)


def peerTupleOf(transport: Server) -> Any:
    """A TCP server connection's peer, as the socket gave it: ``(host, port)``."""
    return transport.client


# -- listening ports shared by processes, and twistd's services -----------


def keepSharedSocketOpen(port: Any) -> None:
    """
    Closing ``port`` (a TCP or UNIX listening port) must not shut its socket
    down: other processes accept on it too.
    """
    port._shouldShutdown = False


def adoptUNIXPort(reactor: Any, fileno: int, factory: Any) -> Any:
    """
    A UNIX listening port around the listening socket ``fileno`` (duplicated;
    the caller closes its own), not yet listening. ``reactor.adoptStreamPort``
    has no UNIX variant that leaves the socket's file alone.
    """
    from twisted.internet import unix

    return unix.Port._fromListeningDescriptor(reactor, fileno, factory)


def listeningDeferred(service: Any) -> Any:
    """
    The Deferred of a started StreamServerEndpointService's ``listen``: it
    fires with the port, or fails with why it cannot listen.
    """
    return service._waitingForPort


def raiseWhenListeningFails(service: Any) -> None:
    """Make a StreamServerEndpointService raise at start-up if it cannot listen."""
    service._raiseSynchronously = True
