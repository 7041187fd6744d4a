"""
WebSocket (RFC 6455) through the upgrade registry.

The handshake is validated here (RFC 6455 §4.2); framing, masking, UTF-8,
fragmentation and ``permessage-deflate`` (RFC 7692) are ``_wsframes``'. Because
the channel hands over the connection with every byte that followed the
handshake, a frame sent in the same packet as the request is not lost, and
because no HTTP producer is left behind, a server-side close over TLS closes.

An application subclasses :class:`WebSocketProtocol` and mounts it per path::

    class Echo(WebSocketProtocol):
        def messageReceived(self, message):
            self.sendMessage(message)

    registry.register(b"websocket", WebSocketHandler({b"/echo": Echo}))

Policies:

* ``Origin``: with ``allowedOrigins`` set, a request whose ``Origin`` is not
  in the list (compared exactly, scheme and port included) gets ``403``;
  several ``Origin`` fields get ``400``. A request *without* ``Origin`` is
  accepted: browsers always send it, so its absence means a non-browser
  client, which cross-site WebSocket hijacking cannot involve. Pass
  ``requireOrigin=True`` to refuse those too.
* Unsupported ``Sec-WebSocket-Version``: ``426`` with
  ``Sec-WebSocket-Version: 13``; missing or repeated: ``400``.
* A method other than ``GET``: ``405`` with ``Allow: GET``.
* A path with no application: declined, so the site answers it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._core import isToken, splitList
from .._decisions import Decision, Decline, Reject, UpgradeRequest, _trustedAccept, keepable
from .._handover import canonicalName, fieldsOf, writeNow
from .._transport import closeTransport
from ..interfaces import IGoingAway, IUpgradeHandler
from ._wsframes import (
    BINARY,
    CLOSE,
    FAIL,
    PING,
    PONG,
    TEXT,
    Deflate,
    FrameParser,
    acceptToken,
    closePayload,
    frame,
    negotiateDeflate,
    sendableCloseCode,
)

__all__ = ["WebSocketHandler", "WebSocketProtocol", "makeHandler"]

_log = Logger()

# RFC 6455 §7.4.1 close codes used here.
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011


class WebSocketProtocol:
    """
    One WebSocket connection, as an application sees it. Subclass it and
    override the callbacks; call the ``send``/``close`` methods.

    :ivar request: the upgrade request (path, headers, peer, ...).
    :ivar subprotocol: the negotiated ``Sec-WebSocket-Protocol``, or None.
    """

    request: UpgradeRequest
    subprotocol: str | None = None
    _connection: _WebSocketConnection | None = None

    def connectionOpened(self) -> None:
        """The handshake is done: messages can be sent."""

    def messageReceived(self, message: str | bytes) -> None:
        """A whole message arrived: text as str, binary as bytes."""

    def connectionClosed(self, code: int | None, reason: str) -> None:
        """The connection is closed (``code`` None: no close frame was seen)."""

    def pauseProducing(self) -> None:
        """
        The peer is not reading what we send. By default the connection
        stops reading the peer's frames until it catches up.
        """
        if self._connection is not None:
            self._connection.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """The peer reads again."""
        if self._connection is not None:
            self._connection.transport.resumeProducing()

    def sendMessage(self, message: str | bytes) -> None:
        """Send a text (str) or binary (bytes) message."""
        if self._connection is not None:
            self._connection.sendMessage(message)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the peer answers with a pong."""
        if self._connection is not None:
            self._connection.ping(payload)

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake."""
        if self._connection is not None:
            self._connection.close(code, reason)


# The connection's states: open, closing (our close frame is sent, the
# peer's awaited), closed (no frame is sent or read any more).
_OPEN, _CLOSING, _CLOSED = range(3)


@implementer(IPushProducer, IGoingAway)
class _WebSocketConnection(Protocol):
    """
    Bytes on the transport <-> frames (``_wsframes``) <-> the application.

    Frames are sent at once when nothing is queued (``writeNow``), as the
    101 is: a queued write costs two ``epoll_ctl`` calls and a turn of the
    reactor, more than the frame itself.
    """

    transport: Any
    state = _OPEN
    _closedCode: int | None = None
    _closedReason = ""
    _closeTimer: Any = None
    _writable = True  # the transport takes more (it has not paused us)
    _appPaused = False

    def __init__(
        self, app: WebSocketProtocol, deflate: Deflate | None, maxMessageSize: int
    ) -> None:
        self.app = app
        self.frames = FrameParser(maxMessageSize, deflate)

    def connectionMade(self) -> None:
        self.app._connection = self
        self.transport.registerProducer(self, True)
        self.app.connectionOpened()

    def dataReceived(self, data: bytes) -> None:
        if self.state == _CLOSED:
            return  # closed: TLS may still deliver bytes until the peer's close_notify
        # Bytes that arrive while paused (the application chose to go on
        # reading, or TLS had them decrypted already) are all parsed, so
        # that the backlog never holds more than one read.
        self._deliver(self.frames.receive(data), whole=not self._writable)

    def _deliver(self, events: list[tuple[int, Any]], whole: bool = False) -> None:
        """
        Hand ``events`` on, then the parser's backlog, a budget at a time,
        while the transport can take what the application answers (or all
        of it, if ``whole``).
        """
        while True:
            for kind, value in events:
                if kind == TEXT or kind == BINARY:
                    self.app.messageReceived(value)
                elif kind == PING:
                    if self.state == _OPEN:
                        writeNow(self.transport, frame(PONG, value))
                else:
                    # CLOSE: answer the peer's close with its code (RFC 6455
                    # §5.5.1); FAIL: fail the connection with the code the
                    # error calls for (§7.1.7: 1002, 1007, 1009).
                    code, reason = value
                    self._closedCode, self._closedReason = code, reason
                    if self.state == _OPEN:
                        answer = closePayload(code, reason if kind == FAIL else "")
                        writeNow(self.transport, frame(CLOSE, answer))
                    self.state = _CLOSED
                    self._drop()
                    return
                if self.transport.disconnecting:
                    return
            if not (self._writable or whole) or self.state == _CLOSED or not self.frames.backlog:
                return
            events = self.frames.receive(b"")

    def sendMessage(self, message: str | bytes) -> None:
        if self.state != _OPEN:
            return
        if isinstance(message, str):
            opcode, payload = TEXT, message.encode("utf-8")
        else:
            opcode, payload = BINARY, message
        deflate = self.frames.deflate
        if deflate is not None:
            payload = deflate.compress(payload)
        writeNow(self.transport, frame(opcode, payload, compressed=deflate is not None))

    def ping(self, payload: bytes) -> None:
        if len(payload) > 125:
            raise ValueError("a ping carries at most 125 bytes (RFC 6455 §5.5)")
        if self.state == _OPEN:
            writeNow(self.transport, frame(PING, payload))

    def close(self, code: int, reason: str) -> None:
        if not sendableCloseCode(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if self.state == _OPEN:
            writeNow(self.transport, frame(CLOSE, closePayload(code, reason)))
            self.state = _CLOSING
            # Give the peer a moment to answer the close, then drop it.
            self._abortLater()

    def _abortLater(self) -> None:
        """
        Abort the connection if it is still open in 5 seconds: a peer that
        never answers our close, or that stops reading while what we sent
        last (an answer to its close, our close after its error) waits.
        """
        if self._closeTimer is None:
            self._closeTimer = self._reactor().callLater(5, self.transport.abortConnection)

    def goingAway(self) -> None:
        """The server is stopping: close with 1001, or drop a closing connection."""
        if self.state == _OPEN:
            self.close(GOING_AWAY, "server going away")
        else:
            self._drop()

    def _drop(self) -> None:
        closeTransport(self.transport)
        self._abortLater()  # a close waits for our last bytes to be read

    def _reactor(self) -> Any:
        # The site's reactor (a test's Clock, say), else the global one.
        site = getattr(self.app, "request", None) and self.app.request.site
        if site is not None and getattr(site, "reactor", None) is not None:
            return site.reactor
        from twisted.internet import reactor

        return reactor

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.state = _CLOSED
        timer = self._closeTimer
        if timer is not None and timer.active():
            timer.cancel()
        self.app._connection = None
        self.app.connectionClosed(self._closedCode, self._closedReason)

    # IPushProducer: the transport tells us when the peer stops reading.
    # What the parser has not parsed yet (a read is parsed a budget at a
    # time) waits too, and is parsed first when the peer reads again; the
    # application sees pause and resume alternate.
    def pauseProducing(self) -> None:
        self._writable = False
        if not self._appPaused:
            self._appPaused = True
            self.app.pauseProducing()

    def resumeProducing(self) -> None:
        self._writable = True
        if self.frames.backlog and self.state != _CLOSED:
            self._deliver(self.frames.receive(b""))
        if self._writable and self._appPaused:
            self._appPaused = False
            self.app.resumeProducing()

    def stopProducing(self) -> None:
        self._drop()


Factory = Callable[[], WebSocketProtocol]

_VERSION, _KEY, _ORIGIN, _PROTOCOL, _EXTENSIONS = (
    canonicalName(name)
    for name in (
        b"Sec-WebSocket-Version",
        b"Sec-WebSocket-Key",
        b"Origin",
        b"Sec-WebSocket-Protocol",
        b"Sec-WebSocket-Extensions",
    )
)


@implementer(IUpgradeHandler)
class WebSocketHandler:
    """
    Serves ``Upgrade: websocket`` requests with the application mounted on
    the request's path.

    :param routes: path (bytes, without the query) to a callable that returns
        a new :class:`WebSocketProtocol` for each connection.
    :param default: the application for paths not in ``routes``; without it
        such requests are declined and answered by the site.
    :param allowedOrigins: the ``Origin`` values browsers may connect from,
        e.g. ``["https://example.com"]``; None allows every origin.
    :param requireOrigin: refuse requests without ``Origin`` (``403``).
    :param subprotocols: the subprotocols this server speaks, in its order of
        preference; the first one the client offers is chosen.
    :param compression: accept ``permessage-deflate`` (RFC 7692) offers.
    :param maxMessageSize: larger messages close the connection with 1009.
    """

    def __init__(
        self,
        routes: Mapping[bytes, Factory] | None = None,
        *,
        default: Factory | None = None,
        allowedOrigins: Sequence[str] | None = None,
        requireOrigin: bool = False,
        subprotocols: Sequence[str] = (),
        compression: bool = True,
        maxMessageSize: int = 1 << 20,
    ) -> None:
        self.routes = dict(routes or {})
        self.default = default
        self.allowedOrigins = None if allowedOrigins is None else set(allowedOrigins)
        self.requireOrigin = requireOrigin
        for subprotocol in subprotocols:
            # RFC 6455 §4.1: each is a token (RFC 2616 §2.2).
            if not (isinstance(subprotocol, str) and subprotocol.isascii()) or not isToken(
                subprotocol.encode()
            ):
                raise ValueError(f"a subprotocol must be a token, not {subprotocol!r}")
        self.subprotocols = list(subprotocols)
        self.compression = compression
        self.maxMessageSize = maxMessageSize

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        app = self.routes.get(request.path, self.default)
        if app is None:
            return Decline()
        # By canonical name, as Headers keeps them (getRawHeaders encodes the
        # name on every call); an empty list counts as absent, as there.
        fields = fieldsOf(request.headers)
        # RFC 6455 §4.2.1: the opening handshake is a GET.
        if request.method != b"GET":
            return Reject(405, [(b"Allow", b"GET")], b"WebSocket handshakes use GET\n")
        versions = fields.get(_VERSION) or None
        if versions is None or len(versions) != 1:
            return Reject(400, body=b"exactly one Sec-WebSocket-Version is required\n")
        if versions[0].strip() != b"13":
            # RFC 6455 §4.2.2: name the versions this server understands.
            # RFC 9110 §15.5.22: a 426 names what to upgrade to.
            return Reject(
                426,
                [
                    (b"Sec-WebSocket-Version", b"13"),
                    (b"Upgrade", b"websocket"),
                    (b"Connection", b"Upgrade"),
                ],
                b"unsupported Sec-WebSocket-Version\n",
            )
        keys = fields.get(_KEY) or None
        if keys is None or len(keys) != 1 or not _validKey(keys[0]):
            return Reject(400, body=b"Sec-WebSocket-Key must be one base64 16-byte nonce\n")
        origins = fields.get(_ORIGIN) or None
        if origins is not None and len(origins) != 1:
            return Reject(400, body=b"more than one Origin\n")
        if origins is None:
            if self.requireOrigin:
                return Reject(403, body=b"Origin required\n")
        elif self.allowedOrigins is not None:
            if origins[0].decode("latin-1") not in self.allowedOrigins:
                _log.info(
                    "Refused WebSocket from {peer}: origin {origin!r} not allowed",
                    peer=str(request.peer),
                    origin=origins[0].decode("latin-1"),
                )
                return Reject(403, body=b"Origin not allowed\n")

        # Every value is base64, a token checked when the handler was made,
        # or one negotiateDeflate wrote: the fields need no checking here.
        response = [(b"Sec-WebSocket-Accept", acceptToken(keys[0].strip()))]
        chosen = None
        if self.subprotocols:
            chosen = self._subprotocol(fields.get(_PROTOCOL, []))
        if chosen is not None:
            response.append((b"Sec-WebSocket-Protocol", chosen.encode()))
        deflate = None
        if self.compression:
            offers = fields.get(_EXTENSIONS) or None
            accepted = None if offers is None else negotiateDeflate(offers)
            if accepted is not None:
                deflate, value = accepted
                response.append((b"Sec-WebSocket-Extensions", value))

        application = app()
        application.request = keepable(request)
        application.subprotocol = chosen
        connection = _WebSocketConnection(application, deflate, self.maxMessageSize)
        return _trustedAccept(connection, tuple(response))

    def _subprotocol(self, offered: Sequence[bytes]) -> str | None:
        offers = _splitList(offered)
        for protocol in self.subprotocols:
            if protocol in offers:
                return protocol
        return None


# RFC 6455 §4.2.1: the base64 of 16 bytes, i.e. 22 characters of the
# alphabet and two of padding (what a2b_base64(strict_mode=True) accepts
# for 16 bytes; that argument is new in Python 3.11).
_NONCE = re.compile(rb"[A-Za-z0-9+/]{22}==\Z")


def _validKey(key: bytes) -> bool:
    return _NONCE.match(key.strip()) is not None


def _splitList(values: Sequence[bytes]) -> list[str]:
    return [element.decode("latin-1") for element in splitList(values)]


class _Echo(WebSocketProtocol):
    def messageReceived(self, message: str | bytes) -> None:
        self.sendMessage(message)


def makeHandler(options: Any) -> WebSocketHandler:
    """The ``websocket-echo`` plugin's handler: an echo on every path."""
    return WebSocketHandler(default=_Echo)
