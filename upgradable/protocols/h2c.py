"""
``h2c``: HTTP/2 over cleartext by upgrade (RFC 7540 §3.2), serving the very
same site as HTTP/1.1 with Twisted's own HTTP/2 implementation.

Twisted speaks HTTP/2 only after TLS ALPN; this handler lets ``curl --http2``
and ``nghttp -u`` reach it over ``http://``. The original request becomes
stream 1, answered through the site's resources like any later stream, so
what a resource allows or refuses is the same on every stream and over
HTTP/1.1.

Decisions where the RFC leaves room:

* ``HTTP2-Settings`` must be present exactly once and decode (unpadded
  base64url) to a valid SETTINGS payload; otherwise the request is declined
  and answered in HTTP/1.1 (RFC 7540 §3.2: "MUST NOT upgrade").
* It need not also be listed in ``Connection``: a default nginx rewrites
  ``Connection: Upgrade, HTTP2-Settings`` to ``Connection: upgrade`` but
  forwards the field, and nghttpx upgrades in that case too.
* ``h2c`` is refused on TLS connections (RFC 7540 §3.3: TLS uses ALPN ``h2``,
  which Twisted already serves), and ``h2`` is never an upgrade token.
* ``h2c`` is refused, by default, on requests that came through a proxy: a
  PROXY protocol connection, or a request carrying a field that proxies add
  (``Forwarded``, ``Via``, ``X-Forwarded-*``, ``X-Real-IP``). After the
  switch the client's later requests are HTTP/2 streams the proxy cannot
  read, so a rule the proxy enforces by path (``deny /admin``) would hold
  for the first request only: h2c smuggling. ``allowBehindProxy`` (twistd:
  ``--h2c-behind-proxy``) lets them upgrade, for a proxy that enforces no
  such rule.
* A request body (curl sends one with ``--http2 -d``) becomes stream 1's
  request body; it has been read in full over HTTP/1.1 before the switch.
"""

from __future__ import annotations

import binascii
import struct
from base64 import urlsafe_b64decode
from typing import Any

from h2.errors import ErrorCodes
from h2.events import RequestReceived
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._decisions import Accept, Decision, Decline, UpgradeRequest
from .._handover import H2Connection, closeAfterH2ProtocolError, startH2Stream
from .._transport import closeTransport
from ..interfaces import IGoingAway, IUpgradeHandler

__all__ = ["H2CHandler", "cameThroughProxy", "decodeSettings", "makeHandler"]

_log = Logger()

# RFC 7540 §6.5.2 identifiers and their bounds.
_ENABLE_PUSH = 0x2
_INITIAL_WINDOW_SIZE = 0x4
_MAX_FRAME_SIZE = 0x5
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_URLSAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

# Connection-specific fields (RFC 9113 §8.2.2) and those HTTP/2 carries as
# pseudo-headers or not at all: never copied into stream 1.
_NOT_FORWARDED = frozenset(
    [
        b"connection",
        b"upgrade",
        b"http2-settings",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"host",
        b"expect",
        b"content-length",
    ]
)


# Fields that proxies add to the requests they forward: RFC 7239
# (Forwarded), RFC 9110 §7.6.3 (Via), and the de facto X-Forwarded-For,
# -Host, -Proto (HAProxy's option forwardfor, nginx's usual config) and
# X-Real-IP (nginx).
_FORWARDING = (
    b"forwarded",
    b"via",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
)


def cameThroughProxy(request: UpgradeRequest) -> bool:
    """
    Whether ``request`` came through a proxy: over the PROXY protocol, or
    with a field that proxies add (``Forwarded``, ``Via``,
    ``X-Forwarded-For``, ``X-Forwarded-Host``, ``X-Forwarded-Proto``,
    ``X-Real-IP``). A client may send such a field itself; it then only
    loses h2c, which is the safe side.
    """
    if request.proxyProtocol:
        return True
    headers = request.headers
    return any(headers.hasHeader(name) for name in _FORWARDING)


def decodeSettings(value: bytes) -> bytes | None:
    """
    The SETTINGS payload in an ``HTTP2-Settings`` value (RFC 7540 §3.2.1), or
    None when it is not valid base64url or not a valid payload.
    """
    value = value.strip().rstrip(b"=")
    if any(c not in _URLSAFE for c in value) or len(value) % 4 == 1:
        return None
    try:
        payload = urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(payload) % 6:
        return None
    for offset in range(0, len(payload), 6):
        identifier, setting = struct.unpack_from(">HI", payload, offset)
        if identifier == _ENABLE_PUSH and setting > 1:
            return None
        if identifier == _INITIAL_WINDOW_SIZE and setting > 2**31 - 1:
            return None
        if identifier == _MAX_FRAME_SIZE and not 2**14 <= setting <= 2**24 - 1:
            return None
    return payload


@implementer(IGoingAway)
class _H2CConnection(H2Connection):
    """
    Twisted's ``H2Connection``, started by an upgrade instead of a preface
    exchange: the client's settings come from ``HTTP2-Settings`` and the
    original request is stream 1, half-closed (remote).
    """

    transport: Any
    _prefaceSeen = 0

    def __init__(self, request: UpgradeRequest, payload: bytes) -> None:
        site = request.site
        super().__init__(reactor=site.reactor)
        self.site = site
        self.factory = site
        self.requestFactory = site.requestFactory
        self.timeOut = site.timeOut
        self.callLater = site.reactor.callLater  # type: ignore[method-assign]
        self._upgradeRequest = request
        # Validated before the 101: h2 applies the settings and queues the
        # server preface (whose first frame is SETTINGS, RFC 7540 §3.5).
        self.conn.initiate_upgrade_connection(_padded(payload))

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.timeOut)
        self.transport.write(self.conn.data_to_send())
        self.transport.registerProducer(self, True)
        self._serveStream1()

    def dataReceived(self, data: bytes) -> None:
        # A client that goes on in HTTP/1.1 (or anything but the preface)
        # gets GOAWAY(PROTOCOL_ERROR) before the close (RFC 7540 §3.5);
        # h2 alone would just raise and Twisted would close without a word.
        if self._prefaceSeen < len(_PREFACE):
            seen = self._prefaceSeen
            chunk = data[: len(_PREFACE) - seen]
            if chunk != _PREFACE[seen : seen + len(chunk)]:
                self.conn.close_connection(
                    error_code=ErrorCodes.PROTOCOL_ERROR,
                    additional_data=b"expected the HTTP/2 connection preface",
                )
                reason = Failure(ValueError("no HTTP/2 preface after the h2c upgrade"))
                closeAfterH2ProtocolError(self, reason)
                return
            self._prefaceSeen = seen + len(chunk)
        super().dataReceived(data)

    # IPushProducer, as the transport's producer: Twisted's H2Connection only
    # stops *writing* when the transport's buffer is full, and goes on reading;
    # every PING or SETTINGS it reads then queues an answer (RFC 9113 §6.5.3,
    # §6.7) until 17 KiB are queued and it aborts the connection. Reading
    # stops too, as for every other protocol here: the peer's frames wait in
    # its socket until it reads what we sent, and nothing queues meanwhile.
    def pauseProducing(self) -> None:
        super().pauseProducing()
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        # Reading first: what the resumed sender writes may pause us again.
        self.transport.resumeProducing()
        super().resumeProducing()

    def goingAway(self) -> None:
        # RFC 9113 §6.8: GOAWAY(NO_ERROR) names the last stream served, so
        # the client knows what to retry elsewhere.
        # Closed by the transport once the GOAWAY is written: tearing the
        # connection down here (as on a protocol error) would count it out
        # at once, and a drain that ends then lets the reactor drop the
        # unwritten frame.
        self.conn.close_connection(error_code=ErrorCodes.NO_ERROR)
        self.transport.write(self.conn.data_to_send())
        closeTransport(self.transport)

    def _serveStream1(self) -> None:
        request = self._upgradeRequest
        del self._upgradeRequest
        headers = [
            (b":method", request.method),
            (b":scheme", b"http"),
            (b":authority", request.headers.getRawHeaders(b"host", [b""])[0]),
            (b":path", request.uri),
        ]
        for name, values in request.headers.getAllRawHeaders():
            lowered = name.lower()
            if lowered not in _NOT_FORWARDED:
                headers.extend((lowered, value) for value in values)
        if request.body or request.method not in (b"GET", b"HEAD"):
            headers.append((b"content-length", b"%d" % len(request.body)))
        startH2Stream(self, RequestReceived(stream_id=1, headers=headers), request.body)


def _padded(payload: bytes) -> bytes:
    from base64 import urlsafe_b64encode

    return urlsafe_b64encode(payload)


@implementer(IUpgradeHandler)
class H2CHandler:
    """
    Switches ``Upgrade: h2c`` requests to HTTP/2, served by the same site.

    Register it for ``b"h2c"``. It declines (so the request is answered in
    HTTP/1.1) on TLS connections, when ``HTTP2-Settings`` is missing,
    repeated or invalid, and, unless ``allowBehindProxy``, when the request
    came through a proxy (see :func:`cameThroughProxy`).

    :param allowBehindProxy: upgrade requests that came through a proxy
        too. Only safe when the proxy enforces no rule by path or by
        request: after the switch it sees HTTP/2 frames, not requests.
    """

    def __init__(self, allowBehindProxy: bool = False) -> None:
        self.allowBehindProxy = allowBehindProxy

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        if request.secure or request.site is None:
            return Decline()
        if not self.allowBehindProxy and cameThroughProxy(request):
            _log.info(
                "Declined h2c from {peer}: the request came through a proxy, which "
                "could not see the requests that follow (--h2c-behind-proxy allows it)",
                peer=request.peer,
            )
            return Decline()
        values = request.headers.getRawHeaders(b"http2-settings")
        if values is None or len(values) != 1:
            return Decline()
        payload = decodeSettings(values[0])
        if payload is None:
            return Decline()
        return Accept(_H2CConnection(request, payload))


def makeHandler(options: Any) -> H2CHandler:
    """The ``h2c`` plugin's handler (``--h2c-behind-proxy`` lets proxied requests upgrade)."""
    return H2CHandler(allowBehindProxy=bool(options.get("h2c-behind-proxy")))
