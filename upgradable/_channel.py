# The HTTP channel that can hand its connection to another protocol.
#
# Who owns the transport:
# - Until a handler accepts, Twisted's HTTPChannel owns it: it parses request
#   heads, decodes bodies, answers pipelined requests in order (head-of-line:
#   the next request is not parsed before the previous one is answered) and
#   buffers what arrives meanwhile in _dataBuffer / LineReceiver._buffer.
# - An upgrade is decided in allContentReceived, i.e. after the whole request,
#   body included, has been read and every earlier response written. While a
#   handler's answer is pending the channel is in Twisted's "handling a
#   request" state, so new bytes are only buffered (with backpressure).
# - On Accept, in this order: the HTTP idle timer is stopped, the channel
#   unregisters as the transport's producer and resumes reading, the leftover
#   bytes are taken out of both buffers, exactly one 101 header block is
#   written straight to the transport, the transport (or TLS/PROXY wrapper)
#   is pointed at the new protocol and the channel's own entry points are
#   rebound to it, makeConnection is called, and the leftover bytes are
#   delivered once. From then on the channel is not in the data path.
#
# What never happens:
# - a byte the client sent after the upgrade request lost, duplicated,
#   reordered or parsed as HTTP;
# - any HTTP byte after the 101 (no chunk terminator, no second response);
# - a 101 for HTTP/1.0, for CONNECT, without the `upgrade` connection option,
#   for a product the client did not offer, or after a malformed request;
# - a traceback sent to the peer: malformed input gets a status and a close,
#   a failing handler a 500.
from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers
from zope.interface import implementer

from ._core import (
    REQUEST_START,
    Product,
    connectionOptions,
    errorResponse,
    mayUpgrade,
    oneValidHost,
    servedOver,
    switchingHead,
)
from ._decisions import Accept, UpgradeRequest
from ._drain import Connections
from ._handover import fieldsOf, takeOver, throughProxyProtocol, writeNow
from ._idle import IdleWatch
from ._limits import UpgradeLimits, full
from ._negotiation import Negotiation
from ._records import SwitchedRequest
from ._registry import Offers, UpgradeRegistry

__all__ = [
    "HALF_CLOSED_WAIT",
    "UpgradableHTTPChannel",
    "offersFor",
    "switchProtocols",
]

#: How long a client whose input has ended (a half-close, or a close: TCP
#: cannot tell them apart) waits for a pending upgrade decision when no
#: handshake deadline is set, in seconds; as twistd's --handshake-timeout.
HALF_CLOSED_WAIT = 10.0

_NO_OFFERS: Offers = ((), ())

# A module-level logger: events carry no reference to the channel, so an
# observer that keeps events (the start-up buffer does) keeps no connection.
_log = Logger()


class _UpgradeBody(BytesIO):
    """
    The body of a request that may upgrade, as it arrives: in memory, up to
    ``limit`` bytes. The write that would pass the limit calls ``tooLarge``
    (once) instead, and it and every later write are dropped.
    """

    def __init__(self, limit: int, tooLarge: Callable[[], None]) -> None:
        super().__init__()
        self.limit = limit
        self.tooLarge: Callable[[], None] | None = tooLarge

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) <= self.limit:
            return super().write(data)
        tooLarge, self.tooLarge = self.tooLarge, None
        if tooLarge is not None:
            self.limit = -1  # nothing more is kept
            tooLarge()
        return 0

    def complete(self) -> None:
        """The whole body is here: no more writes, no reference to the channel."""
        self.tooLarge = None
        self.limit = -1

    def close(self) -> None:
        self.complete()
        super().close()


def _discard(data: bytes) -> None:
    """Drop bytes that arrive after the channel gave up on a connection."""


@implementer(IHalfCloseableProtocol)
class UpgradableHTTPChannel(HTTPChannel):
    """
    An :class:`~twisted.web.http.HTTPChannel` that switches protocols on
    ``Upgrade`` (RFC 9110 §7.8).

    Requests without an acceptable upgrade are served exactly as by
    ``HTTPChannel``. When an HTTP/1.1 request carries the ``upgrade``
    connection option and offers a product that ``registry`` serves, the
    registered handler decides; on :class:`~upgradable.Accept` the channel
    answers ``101 Switching Protocols`` and gives the same transport to the
    handler's protocol, with every byte that followed the request.

    :param registry: the protocols this channel may switch to.
    :param advertise: list the registered products in an ``Upgrade`` field
        (with ``Connection: Upgrade``) on ordinary responses (RFC 9110 §7.8).
    :param limits: the limits it enforces; by default none.
    """

    # The transport of a connected channel; HTTPChannel types it as Optional.
    transport: Any

    def __init__(
        self,
        registry: UpgradeRegistry | None = None,
        advertise: bool = False,
        limits: UpgradeLimits | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry if registry is not None else UpgradeRegistry()
        self.advertise = advertise
        self.limits = limits if limits is not None else UpgradeLimits()
        if self.limits.maxHeaderSize != HTTPChannel.totalHeadersSize:
            self.totalHeadersSize = self.MAX_LENGTH = self.limits.maxHeaderSize
        if self.limits.maxHeaders != HTTPChannel.maxHeaders:
            self.maxHeaders = self.limits.maxHeaders
        self._failed = False
        self._lost = False
        # The negotiation of the request being decided, and that request.
        self._negotiation: Negotiation | None = None
        self._deciding: Request | None = None
        self._halfClosedCall: Any = None
        self._deadline: Any = None
        self._draining = False
        # Whether the first request is to be served as a plain one: a site's
        # new connection negotiated it already, and every handler declined.
        self._firstDeclined = False

    def stopPersisting(self) -> None:
        """
        Serve no request after the current one (the server is stopping):
        close now if none is in progress, else once it is answered.
        """
        self._draining = True
        if self.requests:
            # Answered, then closed; the answer says so if still unwritten.
            self.persistent = False
            for request in self.requests:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        elif not self._buffer and not self._dataBuffer:
            self.loseConnection()
        # else a request is arriving: checkPersistence makes it the last one
        # (HTTPChannel would drop it unanswered if persistent were False now).

    # -- request parsing: answer what HTTPChannel closes silently ---------

    def dataReceived(self, data: bytes) -> None:
        if (
            self._deadline is None
            and self.limits.handshakeTimeout is not None
            and self.line_mode
            and not self._handlingRequest
        ):
            # The first byte of a request: it has this long to be complete
            # (and decided, if it asks to upgrade). Slowloris ends here.
            self._deadline = self.callLater(self.limits.handshakeTimeout, self._deadlinePassed)
        super().dataReceived(data)
        pending = self._buffer
        if not pending or not self.line_mode or self._failed:
            return
        if not self._receivedHeaderSize and not self._inHeaders():
            # A request starts with a method (a token) or an empty line;
            # anything else (a TLS ClientHello, binary junk) is not HTTP, and
            # RFC 9931 (R19) expects a parsing error and a close at once.
            if pending[0] not in REQUEST_START:
                self._respondError(400)
                return
        # LineReceiver only looks at a line once it is complete (or past
        # MAX_LENGTH + 2); a head that grows past the limit without a CRLF is
        # answered now rather than left waiting for the idle timeout.
        # A CR at the end of what is waiting is half a line end, which
        # LineReceiver does not count either.
        waiting = len(pending) - pending.endswith(b"\r")
        if self._receivedHeaderSize + waiting > self.totalHeadersSize:
            self._respondError(431 if self._inHeaders() else 414)

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver's default drops the connection without a word.
        self._respondError(431 if self._inHeaders() else 414)

    def _inHeaders(self) -> bool:
        return hasattr(self, "_command")

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        # Read by canonical name, as Headers stores them: this runs for every
        # request, and getRawHeaders canonicalizes the name each time.
        fields = fieldsOf(request.requestHeaders)
        if self._version == b"HTTP/1.1":
            # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request
            # without a Host field or with more than one.
            if not oneValidHost(fields.get(b"Host")):
                self._respondError(400)
                return
        if b"Upgrade" not in fields:
            # A plain request: the deadline was for its head, which is here;
            # a slow upload is the idle timeout's business.
            if self._deadline is not None:
                self._stopDeadline()
        elif offersFor(self.registry, self._command, self._version, fields, self.isSecure())[1]:
            # A request that may upgrade: its body goes to the handler as
            # bytes, so it is kept in memory, never in Twisted's temporary
            # file, and refused (RFC 9110 §15.5.14) as soon as it is known to
            # be too large: by its Content-Length, or once its decoded bytes
            # pass the limit (chunked).
            limit = self.limits.maxUpgradeBody
            if self.length is not None and self.length > limit:
                self._respondError(413)
                return
            request.gotLength = self._upgradeBody
            try:
                super().allHeadersReceived()
            finally:
                del request.gotLength
            return
        super().allHeadersReceived()

    def _upgradeBody(self, length: int | None) -> None:
        """Stands in for Request.gotLength for a request that may upgrade."""
        self.requests[-1].content = _UpgradeBody(self.limits.maxUpgradeBody, self._bodyTooLarge)

    def _bodyTooLarge(self) -> None:
        _log.info("Upgrade request body from {peer} over {limit} bytes; 413",
                  peer=self.transport.getPeer(), limit=self.limits.maxUpgradeBody)  # fmt: skip
        self._respondError(413)

    def rawDataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        super().rawDataReceived(data)

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        # HTTPChannel reads only the first Connection line and splits it on
        # spaces, so "keep-alive,close" is missed (RFC 9110 §7.6.1).
        if version != b"HTTP/1.1":
            return False
        if self._draining:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        values = fieldsOf(request.requestHeaders).get(b"Connection")
        if values is None:
            return True
        if b"close" in connectionOptions(values):
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return True

    def _respondToBadRequestAndDisconnect(self) -> None:
        # HTTPChannel says 400 for everything; a client learns more from
        # 414/431 when a size limit was hit (RFC 9110 §15.5.15, RFC 6585 §5).
        if self._receivedHeaderSize > self.totalHeadersSize:
            self._respondError(431 if self._inHeaders() else 414)
        elif self._receivedHeaderCount > self.maxHeaders:
            self._respondError(431)
        else:
            self._respondError(400)

    def _respondError(self, code: int) -> None:
        """
        Answer a request that cannot be parsed, then close: nothing after
        the offending bytes is read.
        """
        if self._failed:
            return
        self._failed = True
        self._stopDeadline()
        self.dataReceived = _discard  # type: ignore[method-assign]
        self._dataBuffer = []
        self.clearLineBuffer()
        self.transport.write(errorResponse(code))
        self.loseConnection()

    # -- negotiation ------------------------------------------------------

    def allContentReceived(self) -> None:
        if self._failed:
            return
        # The common case first: no Upgrade field, nothing to decide.
        fields = fieldsOf(self.requests[-1].requestHeaders)
        if b"Upgrade" not in fields or self._firstDeclined:
            self._firstDeclined = False
            if self._deadline is not None:
                self._stopDeadline()
            super().allContentReceived()
            return
        secure = self.isSecure()
        offered, offers = offersFor(self.registry, self._command, self._version, fields, secure)
        if not offers:
            self._stopDeadline()
            super().allContentReceived()
            return
        request = self.requests[-1]
        command, path, version = self._command, self._path, self._version
        # Let HTTPChannel reset its parser and enter its "handling a request"
        # state (idle timer saved and stopped, later bytes buffered), but
        # keep the request from reaching the resource tree yet.
        request.requestReceived = _discardRequest
        try:
            super().allContentReceived()
        finally:
            del request.requestReceived
        request.method, request.uri, request.clientproto = command, path, version
        request.path = path.split(b"?", 1)[0]
        content = request.content
        if type(content) is _UpgradeBody:
            content.complete()
        content.seek(0)
        body = content.read()
        upgradeRequest = UpgradeRequest(
            method=command,
            uri=path,
            path=request.path,
            version=version,
            headers=request.requestHeaders,
            body=body,
            offered=offered,
            peer=request.client,
            host=request.host,
            secure=secure,
            site=getattr(self, "site", None),
            proxyProtocol=throughProxyProtocol(self.transport),
        )
        self._deciding = request
        negotiation = self._negotiation = Negotiation(
            self, upgradeRequest, offers, self._limitReached
        )
        negotiation.run()

    def _limitReached(self) -> bool:
        return full(self.limits)

    # Carrier: what the negotiation of the request being decided came to.

    def _decidedRequest(self) -> Request:
        request, self._deciding = self._deciding, None
        self._negotiation = None
        assert request is not None
        return request

    def accepted(self, product: Product, accept: Accept) -> None:
        negotiation = self._negotiation
        assert negotiation is not None
        self._switch(self._decidedRequest(), negotiation.request, product, accept)

    def answered(
        self,
        code: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        close: bool,
    ) -> None:
        self._respond(self._decidedRequest(), code, reason, headers, body, close)

    def declined(self) -> None:
        request = self._decidedRequest()
        self._stopDeadline()
        request.requestReceived(request.method, request.uri, request.clientproto)

    def broken(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def _deadlinePassed(self) -> None:
        self._deadline = None
        if self._lost or self._failed:
            return
        _log.info("Request from {peer} not complete and decided in {timeout} s; closing",
                  peer=self.transport.getPeer(), timeout=self.limits.handshakeTimeout)  # fmt: skip
        negotiation = self._negotiation
        if negotiation is not None and negotiation.pending is not None:
            # The handler did not answer in time: cancel it, answer 503.
            negotiation.expire()
        else:
            self._respondError(408)

    def _stopDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _respond(
        self,
        request: Request,
        code: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        close: bool,
    ) -> None:
        """
        Answer the upgrade request with an ordinary, framed HTTP response;
        the connection then goes on with the next request unless ``close``.
        """
        self._stopDeadline()
        request.setResponseCode(code, reason)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        if body and not request.responseHeaders.hasHeader(b"content-type"):
            request.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
        if close:
            self.persistent = False
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        request.write(body)
        request.finish()

    # -- the hand-over ----------------------------------------------------

    def _switch(
        self, request: Request, upgradeRequest: UpgradeRequest, product: Product, accept: Accept
    ) -> None:
        self._stopDeadline()
        # No paused reads left behind by HTTP's backpressure; the bytes that
        # followed the request, out of both of HTTPChannel's buffers.
        self._networkProducer.resumeProducing()
        leftover = b"".join(self._dataBuffer) + self.clearLineBuffer()
        self._dataBuffer = []
        del self.requests[:]
        # The handler has the body's bytes, and the request is never processed.
        if request.content is not None:
            request.content.close()
        self._takeOver(upgradeRequest, product, accept, leftover)

    def _takeOver(
        self, upgradeRequest: UpgradeRequest, product: Product, accept: Accept, leftover: bytes
    ) -> None:
        """
        Answer 101 and give the connection to ``accept.protocol``, then the
        ``leftover`` bytes.
        """
        # Nothing of HTTP may act on the connection any more: no idle timer,
        # no producer registration (the new protocol may register its own).
        self.timeOut = None
        self._cancelIdle()
        self._savedTimeOut = None
        self._networkProducer.unregisterProducer()  # type: ignore[attr-defined]
        switchProtocols(
            self,
            self.transport,
            upgradeRequest,
            product,
            accept,
            leftover,
            self.registry,
            self.limits.connections,
            getattr(self.factory, "log", None),
            self.callLater,
        )

    def _fastPathTried(self, firstDeclined: bool) -> None:
        """
        A site's new connection looked at the first bytes this channel is
        about to get (see :mod:`upgradable._site`): when ``firstDeclined``,
        it negotiated their request already and every handler declined, so
        that request is served as a plain one.
        """
        self._firstDeclined = firstDeclined

    # -- a client that shuts down its sending side -----------------------

    def readConnectionLost(self) -> None:
        """
        The client's input ended: it shut down its sending side (a TCP
        half-close, as ``printf ... | socat`` does) or closed the
        connection; TCP cannot tell the two apart.

        An upgrade whose handler is still deciding is answered, if its
        decision comes within :data:`HALF_CLOSED_WAIT` seconds (or the
        handshake deadline, when one is set): after that the connection is
        aborted, which cancels the handler. Until then nothing is read;
        reading resumes once the answer is out (or at the switch), and TCP
        then reports the end of input again: to this channel, which answers
        any request that arrived before it and closes once none is left, or,
        after a ``101``, to the new protocol (its ``readConnectionLost`` if
        it provides :class:`~twisted.internet.interfaces.IHalfCloseableProtocol`,
        else ``connectionLost``, as TCP does).

        Anything else closes the connection at once, as Twisted's
        ``HTTPChannel`` does: a plain request in progress learns of it
        through ``notifyFinish`` (a long poll is not kept for a client that
        has gone).
        """
        if self._pending() and not self._failed:
            if self._halfClosedCall is None:
                wait = self.limits.handshakeTimeout or HALF_CLOSED_WAIT
                self._halfClosedCall = self.callLater(wait, self._halfClosedTooLong)
            return
        self.loseConnection()

    def _halfClosedTooLong(self) -> None:
        self._halfClosedCall = None
        if self._pending() and not self._lost:
            _log.info("Closing {peer}: its input ended and the upgrade was not decided "
                      "in time", peer=self.transport.getPeer())  # fmt: skip
            self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """The channel never shuts down its sending side alone: nothing to do."""

    def _pending(self) -> bool:
        """Whether a handler's answer is to come."""
        negotiation = self._negotiation
        return negotiation is not None and negotiation.pending is not None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._cancelIdle()
        self._stopDeadline()
        if self._halfClosedCall is not None:
            call, self._halfClosedCall = self._halfClosedCall, None
            if call.active():
                call.cancel()
        negotiation, self._negotiation = self._negotiation, None
        if negotiation is not None:
            negotiation.cancel()
        super().connectionLost(reason)

    # -- the idle timer -----------------------------------------------------
    #
    # HTTPChannel turns its idle timeout off for each request it handles
    # (setTimeout(None), which cancels the DelayedCall) and on again once the
    # response is done (setTimeout(saved), a new DelayedCall): about 2 us of
    # every keep-alive request, more than all of this class's own checks.
    # Here the timer between two requests is kept: turned off while a
    # request is in progress it is only paused (firing then does nothing),
    # and turning it on again resets it. Off with no request in progress (a
    # switch, HTTP/2 by ALPN) or once the connection is lost, it is
    # cancelled, as before. TimeoutMixin's own timer is never used.

    _idleCall: Any = None
    _idlePaused = False

    def setTimeout(self, period: int | None) -> int | None:
        previous = self.timeOut
        self.timeOut = period
        call = self._idleCall
        if period is None:
            if call is not None:
                if self.requests and not self._lost:
                    self._idlePaused = True
                else:
                    self._cancelIdle()
        else:
            self._idlePaused = False
            if call is not None:
                call.reset(period)
            else:
                self._idleCall = self.callLater(period, self._idleExpired)
        return previous

    def resetTimeout(self) -> None:
        if self._idleCall is not None and self.timeOut is not None:
            self._idleCall.reset(self.timeOut)

    def _idleExpired(self) -> None:
        self._idleCall = None
        if not self._idlePaused:
            self.timeoutConnection()

    def _cancelIdle(self) -> None:
        call, self._idleCall = self._idleCall, None
        self._idlePaused = False
        if call is not None and call.active():
            call.cancel()

    def isSecure(self) -> bool:
        # HTTPChannel adapts the transport to ISSLTransport, which for every
        # plain TCP connection walks all of zope's adapter hooks in vain; a
        # TLS transport (TLSMemoryBIOProtocol, startTLS, a PROXY wrapper
        # around either) provides it directly.
        return ISSLTransport.providedBy(self.transport)

    # -- advertising ------------------------------------------------------

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        if not self.advertise:
            super().writeHeaders(version, code, reason, headers)
            return
        if self.registry and isinstance(headers, Headers):
            # By canonical name, in Headers' own dict: this runs for every
            # response, and each Headers method canonicalises the name again.
            fields = fieldsOf(headers)
            connection = fields.get(b"Connection", ())
            options = connectionOptions(connection)
            if b"close" not in options and b"Upgrade" not in fields:
                # RFC 9110 §7.8: advertise in any other response; the
                # upgrade option keeps intermediaries from forwarding it.
                advertised = self.registry.advertised(self.isSecure())
                if advertised:
                    fields[b"Upgrade"] = [advertised]
                    if b"upgrade" not in options:
                        fields[b"Connection"] = [*connection, b"Upgrade"]
        super().writeHeaders(version, code, reason, headers)


# -- shared by the channel and by a site's new connections --------------------


def offersFor(
    registry: UpgradeRegistry,
    command: bytes,
    version: bytes,
    fields: dict[bytes, list[bytes]],
    secure: bool = False,
) -> Offers:
    """
    The valid products a request offered (as sent), and those of them
    ``registry`` could switch to with their handlers, in the client's order;
    both empty when the request may not switch at all (see
    :func:`upgradable._core.mayUpgrade`). ``fields`` are the request's
    header fields by canonical name; on a ``secure`` (TLS) connection no
    cleartext-only product (h2c) is served.
    """
    upgrade = mayUpgrade(command, version, fields) if registry else None
    if upgrade is None:
        return _NO_OFFERS
    offered, served = registry.offers(upgrade)
    return offered, servedOver(served, secure)


def switchProtocols(
    old: Any,
    transport: Any,
    upgradeRequest: UpgradeRequest,
    product: Product,
    accept: Accept,
    leftover: bytes,
    registry: UpgradeRegistry,
    connections: Connections,
    log: Any,
    callLater: Any,
) -> None:
    """
    Answer 101 on ``transport`` and give it to ``accept.protocol`` instead
    of ``old`` (which has stopped everything of its own), then deliver the
    ``leftover`` bytes; ``log`` is the site's access log, if any. When a
    drain's grace period is over, the protocol is asked to go away then,
    after its 101.
    """
    protocol = accept.protocol
    # A product with an idle timeout gets a watch in its read path; the
    # site's count of upgraded connections sees the connection's end.
    idle = registry.idleTimeout(product.key)
    watch = None if idle is None else IdleWatch(protocol, transport, idle, callLater)
    receiver = connections.switched(old, protocol, transport, watch)

    writeNow(transport, switchingHead(product.raw, accept.headers))

    # The site's access log (UpgradableSite's also emits the "Upgraded"
    # event); a site that keeps no log spends nothing here.
    if log is not None:
        try:
            log(SwitchedRequest(upgradeRequest, product.raw))
        except Exception:
            _log.failure("The access log failed for an upgraded request")

    if takeOver(old, transport, protocol, leftover, receiver):
        connections.started(receiver)


def _discardRequest(command: bytes, path: bytes, version: bytes) -> None:
    """Stands in for Request.requestReceived while an upgrade is decided."""
