"""
WebSocket (RFC 6455) through the upgrade registry.

The handshake is validated here (RFC 6455 §4.2); framing, masking, UTF-8,
fragmentation and ``permessage-deflate`` (RFC 7692) are wsproto's. Because
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

import binascii
import zlib
from base64 import b64decode
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, generate_accept_token
from zope.interface import implementer

from .._decisions import Accept, Decision, Decline, Reject, UpgradeRequest
from .._tokens import splitList
from .._transport import closeTransport
from ..interfaces import IGoingAway, IUpgradeHandler

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
            self._connection.sendEvent(Ping(payload=payload))

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake."""
        if self._connection is not None:
            self._connection.close(code, reason)


@implementer(IPushProducer, IGoingAway)
class _WebSocketConnection(Protocol):
    """Bytes on the transport <-> wsproto <-> the application."""

    transport: Any

    def __init__(
        self, app: WebSocketProtocol, extensions: list[Extension], maxMessageSize: int
    ) -> None:
        self.app = app
        self.ws = Connection(ConnectionType.SERVER, extensions=extensions)
        self.maxMessageSize = maxMessageSize
        self._parts: list[str | bytes] = []
        self._size = 0
        self._closedCode: int | None = None
        self._closedReason = ""

    def connectionMade(self) -> None:
        self.app._connection = self
        self.transport.registerProducer(self, True)
        self.app.connectionOpened()

    def dataReceived(self, data: bytes) -> None:
        if self.ws.state is ConnectionState.CLOSED:
            return  # closed: TLS may still deliver bytes until the peer's close_notify
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Message):
                self._messagePart(event)
            elif isinstance(event, Ping):
                self.sendEvent(event.response())
            elif isinstance(event, CloseConnection):
                self._closedCode, self._closedReason = event.code, event.reason or ""
                if self.ws.state is not ConnectionState.CLOSED:  # type: ignore[comparison-overlap]
                    # Answer the peer's close, or fail the connection after a
                    # protocol error (RFC 6455 §7.1.7: 1002, 1007, ...).
                    self.sendEvent(CloseConnection(code=event.code, reason=event.reason))
                self._drop()
                return
            if self.transport.disconnecting:
                return

    def _messagePart(self, event: Message[Any]) -> None:
        self._size += len(event.data)
        if self._size > self.maxMessageSize:
            self.close(MESSAGE_TOO_BIG, "message too big")
            self._drop()
            return
        self._parts.append(event.data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            message: str | bytes
            if isinstance(event, TextMessage):
                message = "".join(parts)  # type: ignore[arg-type]
            else:
                message = b"".join(parts)  # type: ignore[arg-type]
            self.app.messageReceived(message)

    def sendMessage(self, message: str | bytes) -> None:
        if self.ws.state is not ConnectionState.OPEN:
            return
        if isinstance(message, str):
            self.sendEvent(TextMessage(data=message))
        else:
            self.sendEvent(BytesMessage(data=message))

    def sendEvent(self, event: Any) -> None:
        try:
            data = self.ws.send(event)
        except LocalProtocolError:
            return  # closing or closed: nothing more may be sent
        if data:
            self.transport.write(data)

    def close(self, code: int, reason: str) -> None:
        if self.ws.state is ConnectionState.OPEN:
            self.sendEvent(CloseConnection(code=code, reason=reason))
            # Give the peer a moment to answer the close, then drop it.
            self._closeTimer = self._reactor().callLater(5, self.transport.abortConnection)

    def goingAway(self) -> None:
        """The server is stopping: close with 1001, or drop a closing connection."""
        if self.ws.state is ConnectionState.OPEN:
            self.close(GOING_AWAY, "server going away")
        else:
            self._drop()

    def _drop(self) -> None:
        closeTransport(self.transport)

    def _reactor(self) -> Any:
        # The site's reactor (a test's Clock, say), else the global one.
        site = getattr(self.app, "request", None) and self.app.request.site
        if site is not None and getattr(site, "reactor", None) is not None:
            return site.reactor
        from twisted.internet import reactor

        return reactor

    def connectionLost(self, reason: Failure | None = None) -> None:
        timer = getattr(self, "_closeTimer", None)
        if timer is not None and timer.active():
            timer.cancel()
        self.app._connection = None
        self.app.connectionClosed(self._closedCode, self._closedReason)

    # IPushProducer: the transport tells us when the peer stops reading.
    def pauseProducing(self) -> None:
        self.app.pauseProducing()

    def resumeProducing(self) -> None:
        self.app.resumeProducing()

    def stopProducing(self) -> None:
        self._drop()


Factory = Callable[[], WebSocketProtocol]


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
        self.subprotocols = list(subprotocols)
        self.compression = compression
        self.maxMessageSize = maxMessageSize

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        app = self.routes.get(request.path, self.default)
        if app is None:
            return Decline()
        headers = request.headers
        # RFC 6455 §4.2.1: the opening handshake is a GET.
        if request.method != b"GET":
            return Reject(405, [(b"Allow", b"GET")], b"WebSocket handshakes use GET\n")
        versions = headers.getRawHeaders(b"sec-websocket-version")
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
        keys = headers.getRawHeaders(b"sec-websocket-key")
        if keys is None or len(keys) != 1 or not _validKey(keys[0]):
            return Reject(400, body=b"Sec-WebSocket-Key must be one base64 16-byte nonce\n")
        origins = headers.getRawHeaders(b"origin")
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

        response = [(b"Sec-WebSocket-Accept", generate_accept_token(keys[0].strip()))]
        chosen = self._subprotocol(headers.getRawHeaders(b"sec-websocket-protocol", []))
        if chosen is not None:
            response.append((b"Sec-WebSocket-Protocol", chosen.encode()))
        extensions: list[Extension] = []
        if self.compression:
            offers = headers.getRawHeaders(b"sec-websocket-extensions", [])
            accepted = _acceptDeflate(offers, self.maxMessageSize)
            if accepted is not None:
                extension, value = accepted
                extensions.append(extension)
                response.append((b"Sec-WebSocket-Extensions", value.encode()))

        application = app()
        application.request = request
        application.subprotocol = chosen
        return Accept(_WebSocketConnection(application, extensions, self.maxMessageSize), response)

    def _subprotocol(self, offered: Sequence[bytes]) -> str | None:
        offers = _splitList(offered)
        for protocol in self.subprotocols:
            if protocol in offers:
                return protocol
        return None


def _validKey(key: bytes) -> bool:
    try:
        return len(b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _splitList(values: Sequence[bytes]) -> list[str]:
    return [element.decode("latin-1") for element in splitList(values)]


class _BoundedDeflate(PerMessageDeflate):
    """
    permessage-deflate that never inflates a message past the size limit:
    wsproto's own inflates each chunk in full first, so a small compressed
    frame could grow to hundreds of megabytes before any size check.
    """

    def __init__(self, maxMessageSize: int) -> None:
        super().__init__()
        self.maxMessageSize = maxMessageSize
        self._inflated = 0

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self.maxMessageSize - self._inflated + 1
        try:
            out = self._decompressor.decompress(bytes(data), room)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.maxMessageSize or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


def _acceptDeflate(offers: Sequence[bytes], maxMessageSize: int) -> tuple[Extension, str] | None:
    for text in _splitList(offers):
        if text.split(";", 1)[0].strip() != PerMessageDeflate.name:
            continue
        extension = _BoundedDeflate(maxMessageSize)
        try:
            accepted = extension.accept(text)
        except (ValueError, KeyError, TypeError):
            continue
        if accepted is True or accepted == "":
            # A bare offer is accepted with a bare answer (RFC 7692 §5).
            return extension, extension.name
        if accepted:
            return extension, f"{extension.name}; {accepted}"
    return None


class _Echo(WebSocketProtocol):
    def messageReceived(self, message: str | bytes) -> None:
        self.sendMessage(message)


def makeHandler(options: Any) -> WebSocketHandler:
    """The ``websocket-echo`` plugin's handler: an echo on every path."""
    return WebSocketHandler(default=_Echo)
