# Site wiring.
#
# A connection starts as a _NewConnection: no HTTP machinery, only the idle
# timer and the site's count. When its first bytes are a plain upgrade
# request (the fast path, decideFirst: a plain head as the core's
# plainUpgradeHead reads it, a strict subset of what HTTPChannel accepts,
# read as HTTPChannel reads it), that request is decided
# here, on this parse, whatever the answer: a switch, a Reject (or a 500 or
# 503) written here, an answer to come (waited for here), or every handler
# declining. After anything but a switch the connection gets the HTTP stack
# with the bytes that followed the request; only when every handler declined
# does HTTP get the request too, to serve it as a plain one, asking nobody.
# Anything else, and a TLS connection whose ALPN picked h2, gets the HTTP
# stack exactly as twisted.web builds it, _GenericHTTPChannelProtocol(channel)
# with our channel inside (that wrapper is what hands an ALPN "h2"
# connection to Twisted's HTTP/2), and the same bytes.
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.tcp import Server
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import implementer

from . import _channel
from ._accesslog import AccessLogFile, combinedLine
from ._channel import UpgradableHTTPChannel, offersFor, switchProtocols
from ._core import Product, answerHead, connectionOptions, plainUpgradeHead
from ._decisions import Accept, UpgradeRequest, _newRequest, _PackedHeaders
from ._handover import (
    CANONICAL_NAMES,
    GenericHTTPChannelProtocol,
    canonicalName,
    channelOf,
    parseRequestLine,
    peerTupleOf,
    reroute,
    throughProxyProtocol,
    writeNow,
)
from ._limits import UpgradeLimits, full
from ._negotiation import Negotiation, ask
from ._records import AnsweredRequest
from ._registry import UpgradeRegistry
from ._transport import LocalAddresses
from .interfaces import IUpgradeHandler

__all__ = ["UpgradableSite"]

# How many bytes a new connection keeps while its first request is being
# decided, before it stops reading: as HTTPChannel's pipelining buffer.
_HOLD = 16 * 1024

_log = Logger()


class UpgradableSite(Site):
    """
    A :class:`~twisted.web.server.Site` whose connections can be upgraded.

    :param resource: the root resource, served for every request that does
        not switch protocols.
    :param registry: the protocols to switch to.
    :param advertise: list the registered products in ``Upgrade`` on
        ordinary responses.
    :param maxUpgraded: at most this many upgraded connections at once
        (``503`` with ``Retry-After`` beyond); None: no limit.
    :param handshakeTimeout: seconds a request may take, from its first byte,
        to arrive and be decided (``408``, or ``503`` for a handler that does
        not answer); None: no deadline. Then a request still arriving is
        closed only by the idle timeout (``timeout``, between reads), and a
        handler's answer is waited for as long as the connection lasts (the
        idle timeout does not run while a request is decided), unless the
        client's input ends (then 10 s more) or a drain's grace period does.
    :param maxUpgradeBody: largest upgrade request body (``413`` as soon as
        it passes it; the body is held in memory, never spooled); None: 1 MiB.
    :param maxHeaderSize: most bytes of request head (``414``/``431``).
    :param maxHeaders: most header fields (``431``).
    :param siteOptions: passed on to :class:`~twisted.web.server.Site`
        (``logPath``, ``timeout``, ``logFormatter``, ``reactor``, ...).
    """

    def __init__(
        self,
        resource: IResource,
        registry: UpgradeRegistry,
        *,
        advertise: bool = False,
        maxUpgraded: int | None = None,
        handshakeTimeout: float | None = None,
        maxUpgradeBody: int | None = None,
        maxHeaderSize: int = HTTPChannel.totalHeadersSize,
        maxHeaders: int = HTTPChannel.maxHeaders,
        **siteOptions: Any,
    ) -> None:
        # "-": standard output, which Site would take for a file name.
        self._logToStandardOutput = siteOptions.get("logPath") in ("-", b"-")
        if self._logToStandardOutput:
            siteOptions["logPath"] = None
        super().__init__(resource, **siteOptions)
        self.registry = registry
        self.advertise = advertise
        self.limits = UpgradeLimits(
            maxUpgraded, handshakeTimeout, maxUpgradeBody, maxHeaderSize, maxHeaders
        )
        self.connections = self.limits.connections
        self.connections.callLater = self.reactor.callLater
        self._firstBytes = _FirstBytesTimeout(self)
        self._localAddresses = LocalAddresses()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: the site is letting its connections go."""
        return self.connections.draining

    def drain(self, grace: float | None = None) -> Deferred[None]:
        """
        Let every connection end, for a clean stop; call it once the site's
        ports stopped listening.

        HTTP connections between requests are closed at once; the others
        answer the request in progress (an upgrade being decided included)
        and close. Upgraded connections go on until they end, or until
        ``grace`` seconds have passed: then each protocol that provides
        :class:`~upgradable.interfaces.IGoingAway` is asked to go away, the
        others are closed, and whatever is still open 5 s later is aborted.

        :param grace: seconds upgraded connections may go on; None: no limit.
        :return: fires when no connection of this site is left.
        """
        return self.connections.drain(grace)

    def closeAll(self) -> None:
        """Cut a drain's grace period short: close every connection now."""
        self.connections.closeAll()

    def log(self, request: Any) -> None:
        """
        The access log: a line per request, as :class:`~twisted.web.server.Site`
        writes it (``logPath``, ``logFormatter``), with two differences. With
        Twisted's default formatter (``combinedLogFormatter``) the line is
        made by a faster copy of it, and a request that switched protocols
        (a :class:`~upgradable.SwitchedRequest`, code 101) gets one more
        quoted field: the product switched to. That line is the one record
        of an upgrade. With ``logPath``, lines are buffered and written at
        most a second late, in whole lines, to a file opened for appending
        and reopened when it is moved (see :doc:`performance`);
        ``logPath="-"`` writes them to standard output.
        An upgrade request that a new connection answered itself (a Reject,
        a 500, a 503) comes as an ``AnsweredRequest`` with its status.
        Replace this method with one that does nothing (as with any
        ``Site``) to keep no access log.
        """
        try:
            logFile = self.logFile
        except AttributeError:  # not started, or stopped
            return
        formatter = self._logFormatter
        if formatter is combinedLogFormatter:
            line = combinedLine(self._logDateTime, request)
        else:
            line = formatter(self._logDateTime, request)
        logFile.write(line + "\n")

    def _openLogFile(self, path: str | bytes) -> AccessLogFile:
        """``logPath``'s file, buffered (Site's hook for opening it)."""
        return AccessLogFile(self.reactor, path=os.fsdecode(path))

    def buildProtocol(self, addr: Any) -> Any:
        """
        A connection's protocol: a small one until its first bytes show
        whether HTTP is needed (see :doc:`handover`), unless this site's
        ``protocol`` or ``buildProtocol`` was replaced (in a subclass or on
        the instance): then the HTTP stack from the start, as ``Site``
        builds it.
        """
        if (
            type(self).buildProtocol is not UpgradableSite.buildProtocol
            or getattr(self.protocol, "__func__", None) is not UpgradableSite.protocol
        ):
            return self._buildHTTP(addr)
        return _NewConnection(self, addr)

    def _buildHTTP(self, addr: Any) -> GenericHTTPChannelProtocol:
        """The HTTP stack for a connection, as twisted.web builds it."""
        protocol: GenericHTTPChannelProtocol = super().buildProtocol(addr)
        return protocol

    def protocol(self) -> GenericHTTPChannelProtocol:
        channel = UpgradableHTTPChannel(self.registry, advertise=self.advertise, limits=self.limits)
        return _TrackedHTTPProtocol(channel)

    def startFactory(self) -> None:
        super().startFactory()
        if self._logToStandardOutput:
            self.logFile = AccessLogFile(self.reactor, fd=1)
        self.registry.startFactories()

    def stopFactory(self) -> None:
        self.registry.stopFactories()
        super().stopFactory()


@implementer(IHalfCloseableProtocol)
class _TrackedHTTPProtocol(GenericHTTPChannelProtocol):
    """
    Twisted's wrapper (which hands a TLS connection to HTTP/2 when ALPN
    picked h2), counted in the site's connections from connectionMade until
    connectionLost, whichever protocol it ended up with. A connection that
    switches with Upgrade stops calling it: the channel reports the switch.
    A client's half-close goes to the channel, which still answers (see
    :meth:`UpgradableHTTPChannel.readConnectionLost`); Twisted's wrapper
    forwards only IProtocol, so TCP would close the whole connection.
    """

    def __init__(self, channel: UpgradableHTTPChannel) -> None:
        super().__init__(channel)
        self._tracked = channel
        self._connections = channel.limits.connections

    def makeConnection(self, transport: Any) -> None:
        # The wrapper forwards makeConnection (not connectionMade) to the channel.
        self._connections.opened(self._tracked, self)
        if self._connections.draining:
            # Accepted as the ports closed: it sent its request already, which
            # is answered; checkPersistence makes it the last one.
            self._tracked._draining = True
        super().makeConnection(transport)

    def readConnectionLost(self) -> None:
        channel: Any = channelOf(self)
        if channel is self._tracked:
            channel.readConnectionLost()
        else:
            # HTTP/2 took it over (TLS only, which has no half-close).
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Nothing shuts down the sending side alone: nothing to do."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._connections.closed(self._tracked)


def decideFirst(
    data: bytes,
    registry: UpgradeRegistry,
    limits: UpgradeLimits,
    transport: Any,
    site: Any,
    peer: IAddress | None = None,
    local: LocalAddresses | None = None,
) -> tuple[UpgradeRequest, Sequence[tuple[Product, IUpgradeHandler]], object, bytes] | None:
    """
    The fast path, for a connection's first bytes: when they hold a whole
    upgrade request of the plainest kind (:func:`upgradable._core.plainUpgradeHead`)
    within the limits, that offers a product ``registry`` serves, ask that
    product's handler, without Twisted's line parser, ``Request`` or
    ``Headers`` machinery. Return the request, the offers (the first is the
    one asked), the handler's answer (an Accept, Decline, Reject, Deferred,
    or the Failure it raised) and the bytes after the request; None when
    the request is anything else (no handler was asked), for HTTPChannel to
    parse.

    ``peer`` is ``transport.getPeer()`` when the caller knows it already;
    ``local`` finds the local address without asking the transport, where
    it can.
    """
    head = plainUpgradeHead(data, limits.maxHeaders, limits.maxHeaderSize, parseRequestLine,
                            canonicalName, CANONICAL_NAMES)  # fmt: skip
    if head is None or full(limits):
        return None
    secure = ISSLTransport.providedBy(transport)
    command, target, version = head.method, head.target, head.version
    offered, offers = offersFor(registry, command, version, head.fields, secure)
    if not offers:
        return None
    # The field lines as they arrived: a protocol that keeps the request
    # (keepable) keeps them rather than the dict.
    headers = _PackedHeaders(head.fieldBlock, head.fields)
    upgradeRequest = _newRequest(
        command,
        target,
        target.split(b"?", 1)[0],
        version,
        headers,
        b"",
        offered,
        transport.getPeer() if peer is None else peer,
        transport.getHost() if local is None else local.of(transport),
        secure,
        site,
        None,
        throughProxyProtocol(transport),
    )
    product, handler = offers[0]
    return upgradeRequest, offers, ask(handler, upgradeRequest, product), head.rest


@implementer(IHalfCloseableProtocol)
class _NewConnection(Protocol):
    """
    A site's connection until its first bytes: counted in the site's
    connections, closed when idle for the site's ``timeOut`` (as
    ``HTTPChannel`` would). When its first bytes are a plain upgrade request
    it decides that request itself, whatever the answer (see the module's
    note); otherwise, and after any answer but a switch, the connection goes
    to the HTTP stack. Either way its own entry points are rebound to the
    protocol that took over, and the transport is pointed at that protocol.
    """

    #: As HTTPChannel's: how long a timed-out connection may take to close.
    abortTimeout = 15
    transport: Any

    def __init__(self, site: UpgradableSite, addr: Any) -> None:
        self.site = self.factory = site
        self.addr = addr
        self._abort: Any = None
        self._http: GenericHTTPChannelProtocol | None = None
        # While the first request's answer is to come (see _wait).
        self._negotiation: Negotiation | None = None
        self._request: Any = None
        self._data = self._leftover = b""
        self._held: list[bytes] = []
        self._heldSize = 0
        self._paused = self._inputEnded = False
        self._draining = False
        self._deadline: Any = None
        self._halfClosedCall: Any = None

    def logPrefix(self) -> str:
        return "UpgradableHTTPChannel"

    def makeConnection(self, transport: Any) -> None:
        self.connected = 1
        self.transport = transport
        site = self.site
        if site.connections.draining:
            # Accepted as the ports closed: HTTP answers the request it sent
            # already, and closes.
            self._becomeHTTP()
            return
        site.connections.opened(self, self)
        if site.timeOut is not None:
            site._firstBytes.waiting(self, site.timeOut)

    def dataReceived(self, data: bytes) -> None:
        if self._negotiation is not None:
            # An answer is to come: keep what arrives meanwhile for whoever
            # has the connection next, and stop reading once more than
            # HTTPChannel would keep is waiting. (Until then the end of the
            # client's input is seen, and a client that left is let go.)
            self._held.append(data)
            self._heldSize += len(data)
            if self._heldSize > _HOLD and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        if self.transport.disconnecting:
            return  # timed out, or closed by a drain: TLS may still deliver bytes
        site = self.site
        site._firstBytes.done(self)
        transport = self.transport
        if getattr(transport, "negotiatedProtocol", None) != b"h2":
            # On plain TCP the address given to buildProtocol is the peer's,
            # unless a factory in between gave another.
            peer = None
            if type(transport) is Server:
                addr = self.addr
                if type(addr) is IPv4Address and (addr.host, addr.port) == peerTupleOf(transport):
                    peer = addr
            decided = decideFirst(data, site.registry, site.limits, transport, site,
                                  peer, site._localAddresses)  # fmt: skip
            if decided is not None:
                upgradeRequest, offers, result, leftover = decided
                if isinstance(result, Accept) and not full(site.limits):
                    # The usual case, without a Negotiation object.
                    self._switch(upgradeRequest, offers[0][0], result, leftover)
                    return
                # Anything else is carried out here too, on this parse of the
                # request: nothing parses it again to decide.
                self._data, self._request, self._leftover = data, upgradeRequest, leftover
                negotiation = self._negotiation = Negotiation(
                    self, upgradeRequest, offers, self._full
                )
                negotiation.run(result)
                if negotiation is self._negotiation:
                    self._wait()
                return
        self._becomeHTTP().dataReceived(data)

    def _full(self) -> bool:
        return full(self.site.limits)

    def _switch(
        self, upgradeRequest: UpgradeRequest, product: Product, accept: Accept, leftover: bytes
    ) -> None:
        site, transport = self.site, self.transport
        # As HTTPChannel does for the connections it gets.
        if ITCPTransport.providedBy(transport):
            try:
                transport.setTcpNoDelay(True)
            except OSError:
                pass  # a socket the peer reset already (BSD says EINVAL)
        switchProtocols(self, transport, upgradeRequest, product, accept, leftover,
                        site.registry, site.connections, site.log,
                        site.reactor.callLater)  # fmt: skip

    # -- an answer to come ------------------------------------------------

    def _wait(self) -> None:
        """
        The answer is to come: give it until the handshake deadline (counted
        from now, the first bytes' arrival).
        """
        timeout = self.site.limits.handshakeTimeout
        if timeout is not None:
            self._deadline = self.site.reactor.callLater(timeout, self._deadlinePassed)

    def _deadlinePassed(self) -> None:
        self._deadline = None
        negotiation = self._negotiation
        if negotiation is not None:
            _log.info("Request from {peer} not decided in {timeout} s; closing",
                      peer=self.transport.getPeer(),
                      timeout=self.site.limits.handshakeTimeout)  # fmt: skip
            negotiation.expire()

    def _settled(self) -> bytes:
        """The answer is here: stop waiting; the bytes that followed the request."""
        if self._paused or self._inputEnded:
            # Reading again before the new owner has the connection, so that
            # it may pause again (HTTP does, behind a request in progress),
            # and while still holding: a transport that delivers at once what
            # it read meanwhile has it kept here, in order, as the channel
            # resumes before it takes its leftover (not held back a second
            # time). When the client's input had ended, TCP reads its end
            # again and tells whoever has the connection by then.
            self._paused, self._inputEnded = True, False
            self.transport.resumeProducing()
            self._paused = False
        self._negotiation = None
        for call in (self._deadline, self._halfClosedCall):
            if call is not None and call.active():
                call.cancel()
        self._deadline = self._halfClosedCall = None
        rest = self._leftover + b"".join(self._held)
        self._data = self._leftover = b""
        self._held = []
        self._heldSize = 0
        return rest

    # Carrier: what the negotiation of the first request came to.

    def accepted(self, product: Product, accept: Accept) -> None:
        request = self._request
        self._request = None
        self._switch(request, product, accept, self._settled())

    def answered(
        self,
        code: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        close: bool,
    ) -> None:
        request, self._request = self._request, None
        rest = self._settled()
        site = self.site
        # As the channel's checkPersistence: a request that asked to close,
        # or a drain, makes this the last answer.
        closeFirst = (
            self._draining
            or site.connections.draining
            or (b"close" in connectionOptions(request.headers.getRawHeaders(b"connection", ())))
        )
        advertised = site.registry.advertised(request.secure) if site.advertise else b""
        transport = self.transport
        sent = 0 if request.method == b"HEAD" else len(body)
        head = answerHead(code, reason, headers, body, closeFirst, close, advertised,
                          canonicalName)  # fmt: skip
        writeNow(transport, head + body[:sent])
        try:
            site.log(AnsweredRequest(request, code, reason, sent))
        except Exception:
            _log.failure("The access log failed for an answered upgrade request")
        if close or closeFirst:
            transport.loseConnection()
            return
        http = self._becomeHTTP()
        if rest:
            http.dataReceived(rest)

    def declined(self) -> None:
        """Every handler declined: HTTP serves the request as a plain one."""
        self._request = None
        first, leftover = self._data, self._leftover
        rest = self._settled()
        # The first read whole, with what came after it.
        self._becomeHTTP(firstDeclined=True).dataReceived(first + rest[len(leftover) :])

    def broken(self) -> None:
        self.transport.abortConnection()

    # -- a client that shuts down its sending side -------------------------

    def readConnectionLost(self) -> None:
        """
        The client's input ended. An answer to come is still given, within
        the handshake deadline or :data:`~upgradable._channel.HALF_CLOSED_WAIT`
        seconds (then the connection is aborted); else the connection closes,
        as for a protocol that is not told of half-closes.
        """
        if self._negotiation is not None:
            self._inputEnded = True
            if self._halfClosedCall is None:
                wait = self.site.limits.handshakeTimeout or _channel.HALF_CLOSED_WAIT
                self._halfClosedCall = self.site.reactor.callLater(wait, self._halfClosedTooLong)
            return
        self.transport.loseConnection()

    def _halfClosedTooLong(self) -> None:
        self._halfClosedCall = None
        if self._negotiation is not None:
            _log.info("Closing {peer}: its input ended and the upgrade was not decided "
                      "in time", peer=self.transport.getPeer())  # fmt: skip
            self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """Nothing shuts down the sending side alone: nothing to do."""

    def _becomeHTTP(self, firstDeclined: bool = False) -> GenericHTTPChannelProtocol:
        http = self.site._buildHTTP(self.addr)
        # The first request was looked at here already (or not at all: h2,
        # draining); when its handlers declined, HTTP serves it as it is.
        channelOf(http)._fastPathTried(firstDeclined)
        self._http = http
        # The HTTP stack counts the connection from here on.
        self.site.connections.http.pop(self, None)
        reroute(self.transport, self, http)
        http.makeConnection(self.transport)
        return http

    def stopPersisting(self) -> None:
        """
        A drain began: with nothing received nothing is owed, and the
        connection closes; an answer to come is given, then it closes.
        """
        if self._negotiation is not None:
            self._draining = True
            return
        self.site._firstBytes.done(self)
        self.transport.loseConnection()

    def _timedOut(self) -> None:
        _log.info("Timing out client: {peer}", peer=str(self.transport.getPeer()))
        self._abort = self.site.reactor.callLater(self.abortTimeout, self.transport.abortConnection)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = 0
        negotiation, self._negotiation = self._negotiation, None
        if negotiation is not None:
            negotiation.cancel()
        for call in (self._deadline, self._halfClosedCall):
            if call is not None and call.active():
                call.cancel()
        self.site._firstBytes.done(self)
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self.site.connections.closed(self)


class _FirstBytesTimeout:
    """
    Closes a site's new connections that send nothing for the site's
    ``timeOut``, as ``HTTPChannel``'s idle timeout would: with one timer for
    all of them, which checks every quarter of the timeout (so a connection
    goes after 1 to 1.25 times it), rather than a timer per connection that
    nearly every connection sets and cancels at once. The timer runs only
    while some connection is waiting.
    """

    def __init__(self, site: UpgradableSite) -> None:
        self.site = site
        self.since: dict[_NewConnection, float] = {}
        self.timer: Any = None

    def waiting(self, connection: _NewConnection, timeOut: float) -> None:
        reactor = self.site.reactor
        self.since[connection] = reactor.seconds()
        if self.timer is None:
            self.timer = reactor.callLater(timeOut / 4, self._check)

    def done(self, connection: _NewConnection) -> None:
        since = self.since
        if since.pop(connection, None) is not None and not since and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        timeOut = self.site.timeOut
        if timeOut is None:
            # Timeouts were switched off meanwhile: no connection times out.
            self.since.clear()
            return
        now = self.site.reactor.seconds()
        for connection, since in list(self.since.items()):
            if now - since >= timeOut and self.since.pop(connection, None) is not None:
                try:
                    connection._timedOut()
                except Exception:
                    _log.failure("Timing out {connection!r} failed", connection=connection)
        if self.since:
            self.timer = self.site.reactor.callLater(timeOut / 4, self._check)
