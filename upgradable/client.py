"""
The client side: connect to an HTTP server, ask it to switch protocols, and
hand the connection to a protocol of yours.

    result = await upgrade(reactor, "https://example.com/irc", [b"IRC/6.9"], ircFactory)
    result.protocol   # connected, with any bytes that followed the 101
    result.product    # what the server switched to
"""

from __future__ import annotations

import math
from base64 import b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from ._decisions import _checkHeaders
from ._handover import reroute
from ._tokens import connectionOptions, isToken, parseProduct, parseUpgrade, splitList

__all__ = [
    "UpgradeFailed",
    "UpgradeResult",
    "UpgradeTimeout",
    "upgrade",
]

_MAX_HEAD = 64 * 1024
_MAX_ERROR_BODY = 64 * 1024


class UpgradeFailed(Exception):
    """
    The server did not switch, or answered in a way that cannot be trusted.

    :ivar status: the response's status code (0 if there was no valid
        status line).
    :ivar headers: the response's header fields.
    :ivar body: the start of the response body (at most 64 KiB).
    :ivar reason: why the answer was not accepted.
    """

    def __init__(self, status: int, headers: Headers, body: bytes, reason: str) -> None:
        super().__init__(f"upgrade refused ({status}): {reason}")
        self.status = status
        self.headers = headers
        self.body = body
        self.reason = reason


class UpgradeTimeout(TimeoutError):
    """No complete ``101`` within the time allowed."""


@dataclass(frozen=True)
class UpgradeResult:
    """A switched connection: the connected protocol and the chosen product."""

    protocol: IProtocol
    product: bytes


@implementer(IHalfCloseableProtocol)
class _UpgradeClient(Protocol):
    """Sends the request, reads the response head, then steps aside."""

    def __init__(
        self,
        request: bytes,
        offered: Sequence[bytes],
        factory: IProtocolFactory,
        done: Deferred[UpgradeResult],
    ) -> None:
        self.request = request
        self.offered = {p.key: p.raw for p in map(parseProduct, offered) if p is not None}
        self.protocolFactory = factory
        self.done = done
        self.buffer = b""
        self.failure: UpgradeFailed | None = None
        self.expectedBody: int | None = None
        self.chunked = False
        self.method = request.split(b" ", 1)[0]
        self.protocol: IProtocol | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.failure is not None:
            self._collectErrorBody()
            return
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                if len(self.buffer) > _MAX_HEAD:
                    self._fail(0, Headers(), "response head too large")
                return
            status, headers = _parseHead(head)
            if 100 <= status < 200 and status != 101:
                self.buffer = rest  # 100 Continue and friends: keep reading
                continue
            break
        self.buffer = rest
        if status == 0:
            self._fail(0, headers, "the server did not answer in HTTP/1.1")
            return
        if status != 101:
            self._refused(status, headers, "the server did not switch protocols")
            return
        # RFC 9110 §7.8: a 101 carries the `upgrade` connection option and
        # names a protocol the client offered.
        if b"upgrade" not in connectionOptions(headers.getRawHeaders(b"connection", ())):
            self._fail(101, headers, "101 without the upgrade connection option")
            return
        products = parseUpgrade(headers.getRawHeaders(b"upgrade", ()))
        if not products or products[0].key not in self.offered:
            self._fail(101, headers, "101 names a protocol that was not offered")
            return
        self._switch(products[0].raw, rest)

    def _switch(self, product: bytes, leftover: bytes) -> None:
        transport: Any = self.transport
        protocol = self.protocolFactory.buildProtocol(transport.getPeer())
        if protocol is None:
            self._fail(101, Headers(), "the protocol factory refused the connection")
            return
        self.protocol = protocol
        reroute(transport, self, protocol)
        done, self.done = self.done, None  # type: ignore[assignment]
        protocol.makeConnection(transport)
        if done is not None and not done.called:
            done.callback(UpgradeResult(protocol, product))
        if leftover and not transport.disconnecting:
            protocol.dataReceived(leftover)

    def readConnectionLost(self) -> None:
        if self.protocol is not None and IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        elif self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.protocol is not None and IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.writeConnectionLost()

    def _refused(self, status: int, headers: Headers, reason: str) -> None:
        self.failure = UpgradeFailed(status, headers, b"", reason)
        lengths = headers.getRawHeaders(b"content-length")
        if status in (204, 304) or self.method == b"HEAD":
            self.expectedBody = 0  # RFC 9112 §6.3: these responses have no body
        elif b"chunked" in connectionOptions(headers.getRawHeaders(b"transfer-encoding", ())):
            self.chunked = True
        elif lengths and lengths[0].isdigit():
            self.expectedBody = int(lengths[0])
        self._collectErrorBody()

    def _collectErrorBody(self) -> None:
        assert self.failure is not None
        if self.chunked:
            body = _dechunk(self.buffer)
            if body is not None:
                self._finishFailure(body[:_MAX_ERROR_BODY])
            elif len(self.buffer) >= _MAX_ERROR_BODY:
                self._finishFailure(b"")
            return
        if self.expectedBody is not None and len(self.buffer) >= self.expectedBody:
            self._finishFailure(self.buffer[: self.expectedBody])
        elif len(self.buffer) >= _MAX_ERROR_BODY:
            self._finishFailure(self.buffer[:_MAX_ERROR_BODY])
        # Otherwise wait for more, or for the close that ends the body.

    def _finishFailure(self, body: bytes) -> None:
        failure = self.failure
        assert failure is not None
        failure.body = body
        self.transport.loseConnection()  # type: ignore[union-attr]
        self._errback(failure)

    def _fail(self, status: int, headers: Headers, reason: str) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]
        self._errback(UpgradeFailed(status, headers, self.buffer[:_MAX_ERROR_BODY], reason))

    def _errback(self, error: Exception | Failure) -> None:
        done, self.done = self.done, None  # type: ignore[assignment]
        if done is not None and not done.called:
            done.errback(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.failure is not None:
            self._finishFailure(self.buffer[:_MAX_ERROR_BODY])
        elif self.done is not None and not self.buffer:
            # Nothing came back: the connection's own error (a refused TLS
            # certificate, a reset) says more than any HTTP status could.
            self._errback(reason)
        elif self.done is not None:
            self._errback(
                UpgradeFailed(0, Headers(), self.buffer[:_MAX_ERROR_BODY],
                              f"connection lost before the 101: {reason.getErrorMessage()}")
            )  # fmt: skip


def _dechunk(data: bytes) -> bytes | None:
    """The body of a complete chunked message in ``data``, or None if incomplete."""
    body: list[bytes] = []
    while True:
        line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return b"".join(body)  # malformed: keep what was understood
        if size == 0:
            return b"".join(body)
        if len(rest) < size + 2:
            return None
        body.append(rest[:size])
        data = rest[size + 2 :]


def _parseHead(head: bytes) -> tuple[int, Headers]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return 0, Headers()
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name and name == name.strip():
            headers.addRawHeader(name, value.strip(b" \t"))
    return int(parts[1]), headers


# RFC 3986 §3.2.2: what a reg-name may hold (unreserved, sub-delims and
# percent-encoding), which is also what the Host field may (RFC 9110 §7.2).
_REG_NAME = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%"
)
# Fields this client writes itself, and the framing of a body it never sends
# (RFC 9112 §6: a Content-Length would make the server read the new
# protocol's first bytes as a body).
_NOT_FROM_CALLER = frozenset([b"content-length", b"transfer-encoding"])


def _requestHead(
    url: str | bytes,
    protocols: Sequence[bytes],
    headers: Sequence[tuple[bytes, bytes]] | None,
    credentials: tuple[str | bytes, str | bytes] | None,
    method: bytes,
) -> tuple[bool, str, int, list[bytes], bytes]:
    """
    Check what a caller of :func:`upgrade` supplies, and build the request
    from it: whether it is ``https``, the host and port to connect to, the
    products offered, and the request's head. Nothing the caller gives reaches the wire unchecked,
    so that no CR or LF in it can end a field or the head early.

    :raises ValueError: a value that cannot be sent, named in the message.
    :raises TypeError: a value of the wrong type.
    """
    if isinstance(url, bytes):
        try:
            url = url.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"the URL {url!r} is not ASCII: percent-encode it") from None
    if not isinstance(url, str):
        raise TypeError(f"the URL must be str or bytes, not {url!r}")
    # urlsplit quietly drops tabs, CRs and LFs; a request line has no room
    # for controls or spaces (RFC 9112 §3.2), so any of them is refused.
    bad = next((c for c in url if c <= " " or c == "\x7f"), None)
    if bad is not None:
        raise ValueError(f"the URL {url!r} holds {bad!r}: percent-encode it")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upgrade needs an http:// or https:// URL, not {url!r}")
    secure = parts.scheme == "https"
    host = parts.hostname
    try:
        explicit = parts.port
    except ValueError as error:
        raise ValueError(f"the URL {url!r} has a bad port: {error}") from None
    if explicit == 0:
        raise ValueError(f"the URL {url!r} has port 0, which no server listens on")
    port = (443 if secure else 80) if explicit is None else explicit
    if ":" in host:
        hostBytes = b"[" + host.encode("ascii") + b"]"  # urlsplit checks the address
    elif host.isascii():
        if not set(host) <= _REG_NAME:
            raise ValueError(f"the URL's host {host!r} is not a host name (RFC 3986 §3.2.2)")
        hostBytes = host.encode("ascii")
    else:
        try:
            hostBytes = host.encode("idna")
        except UnicodeError:
            raise ValueError(f"the URL's host {host!r} is not a valid host name") from None
    if explicit:
        hostBytes += b":%d" % (explicit,)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not target.isascii():
        raise ValueError(f"the URL's path {target!r} is not ASCII: percent-encode it")

    if not isinstance(method, bytes):
        raise TypeError(f"method must be bytes, not {method!r}")
    if not isToken(method):
        raise ValueError(f"method {method!r} is not a token (RFC 9110 §9.1)")

    if isinstance(protocols, (bytes, str)):
        raise TypeError(f"protocols is a list of products, not one: [{protocols!r}]")
    offered = list(protocols)
    if not offered:
        raise ValueError("offer one or more protocol products")
    for product in offered:
        if not isinstance(product, bytes):
            raise TypeError(f"protocol products must be bytes, not {product!r}")
        if parseProduct(product) is None:
            raise ValueError(
                f"{product!r} is not a protocol product: use a token, or "
                f"token/token, such as b'IRC/6.9' (RFC 9110 §7.8)"
            )

    # RFC 9110 §5.1, §5.5: names are tokens, values hold no CR, LF or NUL.
    extra = _checkHeaders(list(headers or ()), frozenset(), "upgrade")
    options = [b"Upgrade"]
    lines = [method + b" " + target.encode("ascii") + b" HTTP/1.1", b"Host: " + hostBytes]
    for name, value in extra:
        folded = name.lower()
        if folded in _NOT_FROM_CALLER:
            raise ValueError(f"upgrade sends no body: it may not send {name.decode()}")
        if folded == b"connection":
            for option in splitList([value]):
                if not isToken(option):
                    raise ValueError(
                        f"connection option {option!r} is not a token (RFC 9110 §7.6.1)"
                    )
            options.append(value)
        elif folded not in (b"upgrade", b"host"):
            lines.append(name + b": " + value)
    if credentials is not None:
        user, password = (c.encode("utf-8") if isinstance(c, str) else c for c in credentials)
        if b":" in user:
            raise ValueError(f"the user name {user!r} holds a colon (RFC 7617 §2)")
        lines.append(b"Authorization: Basic " + b64encode(user + b":" + password))
    lines.append(b"Connection: " + b", ".join(options))
    lines.append(b"Upgrade: " + b", ".join(offered))
    return secure, host, port, offered, b"\r\n".join(lines) + b"\r\n\r\n"


def upgrade(
    reactor: Any,
    url: str | bytes,
    protocols: Sequence[bytes],
    factory: IProtocolFactory,
    headers: Sequence[tuple[bytes, bytes]] | None = None,
    *,
    credentials: tuple[str | bytes, str | bytes] | None = None,
    trustRoot: Any = None,
    tlsOptions: IOpenSSLClientConnectionCreator | None = None,
    method: bytes = b"GET",
    timeout: float = 30,
) -> Deferred[UpgradeResult]:
    """
    Connect to ``url`` and ask to switch to one of ``protocols``.

    :param reactor: a reactor providing TCP and time.
    :param url: ``http://`` or ``https://`` URL; its path and query are the
        request target.
    :param protocols: the products to offer, most preferred first.
    :param factory: builds the protocol that takes the connection over.
    :param headers: extra request fields. A ``Connection`` field adds its
        options to ``Upgrade`` (e.g. ``HTTP2-Settings``).
    :param credentials: ``(user, password)`` for HTTP Basic.
    :param trustRoot: for ``https``: what to trust, as for
        :func:`twisted.internet.ssl.optionsForClientTLS` (a
        :class:`~twisted.internet.ssl.Certificate`, a PEM file path, or None
        for the platform's CAs). The certificate is checked against the
        URL's host name.
    :param tlsOptions: full TLS options instead of ``trustRoot``.
    :param method: the request method, a token.
    :param timeout: seconds allowed for connecting and the ``101``.
    :raises ValueError: an argument that cannot be sent as it is (a CR,
        LF, NUL, space or other control in the URL, a method, field name or
        protocol that is not a token, a field value with CR, LF or NUL, a
        ``Content-Length`` or ``Transfer-Encoding`` field, a non-ASCII
        path), named in the message; nothing is connected or sent then.
    :raises TypeError: an argument of the wrong type.
    :return: a Deferred that fires with an :class:`UpgradeResult`, or fails
        with :class:`UpgradeFailed` (carrying the status, headers and body
        the server sent), :class:`UpgradeTimeout`, or a connection error.
    """
    secure, host, port, offered, request = _requestHead(
        url, protocols, headers, credentials, method
    )
    if isinstance(url, bytes):
        url = url.decode("ascii")  # which _requestHead checked
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be positive and finite, not {timeout!r}")

    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if secure:
        if tlsOptions is None:
            if isinstance(trustRoot, str):
                with open(trustRoot, "rb") as pem:
                    trustRoot = Certificate.loadPEM(pem.read())
            tlsOptions = optionsForClientTLS(host, trustRoot=trustRoot)
        endpoint = wrapClientTLS(tlsOptions, endpoint)

    connected: list[_UpgradeClient] = []

    def cancel(d: Deferred[UpgradeResult]) -> None:
        attempt.cancel()
        for client in connected:
            if client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]

    done: Deferred[UpgradeResult] = Deferred(cancel)

    def build() -> _UpgradeClient:
        client = _UpgradeClient(request, offered, factory, done)
        connected.append(client)
        return client

    connecting = Factory.forProtocol(build)
    connecting.noisy = False  # no "Starting factory <...Factory object at 0x...>" per upgrade
    attempt = endpoint.connect(connecting)
    attempt.addErrback(lambda f: done.errback(f) if not done.called else None)

    clock: IReactorTime = reactor
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        done.cancel()

    timer = clock.callLater(timeout, expire)

    def finished(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if expired and isinstance(result, Failure):
            # Whatever the cancellation turned into (CancelledError while
            # waiting for the 101, ConnectingCancelledError while connecting).
            return Failure(UpgradeTimeout(f"no 101 from {url} within {timeout} s"))
        return result

    done.addBoth(finished)
    return done
