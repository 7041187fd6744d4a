"""
The client side: connect to an HTTP server, ask it to switch protocols, and
hand the connection to a protocol of yours.

    result = await upgrade(reactor, "https://example.com/irc", [b"IRC/6.9"], ircFactory)
    result.protocol   # connected, with any bytes that followed the 101
    result.product    # what the server switched to
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

from ._core import (
    checkSwitch,
    clientRequest,
    connectionOptions,
    dechunk,
    parseProduct,
    parseResponseHead,
)
from ._handover import reroute

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
            status, fields = parseResponseHead(head)
            if 100 <= status < 200 and status != 101:
                self.buffer = rest  # 100 Continue and friends: keep reading
                continue
            break
        self.buffer = rest
        headers = Headers()
        for name, value in fields:
            headers.addRawHeader(name, value)
        if status == 0:
            self._fail(0, headers, "the server did not answer in HTTP/1.1")
            return
        if status != 101:
            self._refused(status, headers, "the server did not switch protocols")
            return
        product, wrong = checkSwitch(fields, self.offered)
        if wrong:
            self._fail(101, headers, wrong)
            return
        self._switch(product, rest)

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
            body = dechunk(self.buffer)
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
        protocol that is not a token, a field value with a control
        character but a tab (CR, LF, NUL...), a
        ``Content-Length`` or ``Transfer-Encoding`` field, a non-ASCII
        path), named in the message; nothing is connected or sent then.
    :raises TypeError: an argument of the wrong type.
    :return: a Deferred that fires with an :class:`UpgradeResult`, or fails
        with :class:`UpgradeFailed` (carrying the status, headers and body
        the server sent), :class:`UpgradeTimeout`, or a connection error.
    """
    secure, host, port, offered, request = clientRequest(
        url, protocols, headers, credentials, method
    )
    if isinstance(url, bytes):
        url = url.decode("ascii")  # which clientRequest checked
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
