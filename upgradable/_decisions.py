# What a handler is given (UpgradeRequest) and what it answers (Accept,
# Decline, Reject). Plain value objects: they hold no reference to the HTTP
# channel, so a handler that keeps one does not keep the connection's HTTP
# machinery alive. A protocol that keeps its request for the connection's
# life keeps keepable(request), whose header lines are one bytes object.
# Every upgrade makes a request and a decision, so the package's own hot
# paths make them through the slots (_newRequest, _trustedAccept): the
# frozen dataclasses' __init__ costs more than the rest of a decision.
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, AnyStr

from twisted.internet.interfaces import IAddress, IProtocol
from twisted.web.http_headers import Headers

from ._core import NOT_IN_101, NOT_IN_REJECT, checkHeaders, isFieldText, reasonPhrase
from ._core import parseFields as _parseFields
from ._handover import CANONICAL_NAMES, RAW_HEADERS_SLOT, canonicalName

__all__ = ["Accept", "Decision", "Decline", "Reject", "UpgradeRequest"]


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """
    The HTTP request that asked for an upgrade, as a handler sees it.

    :ivar method: the request method, e.g. ``b"GET"``.
    :ivar uri: the request target as sent, e.g. ``b"/room/42?x=1"``.
    :ivar path: ``uri`` without its query.
    :ivar version: the HTTP version, always ``b"HTTP/1.1"`` (older requests
        never upgrade).
    :ivar headers: every request header field, as Twisted's
        :class:`~twisted.web.http_headers.Headers`.
    :ivar body: the request body, read in full before the handler is asked.
    :ivar offered: every valid product the client offered, in its order.
    :ivar peer: the client's address (the real client's behind the PROXY
        protocol).
    :ivar host: the local address the connection arrived on.
    :ivar secure: whether the connection is TLS.
    :ivar site: the :class:`~twisted.web.server.Site` the connection belongs
        to (None for a channel built outside one), for protocols that go on
        serving its resources, like h2c.
    :ivar avatarId: who the client authenticated as, when the server checked
        credentials before asking this handler (``twistd upgradable --auth``);
        else None.
    :ivar proxyProtocol: whether the connection came through the PROXY
        protocol (an ``haproxy:`` endpoint), i.e. from a proxy: ``peer`` and
        ``host`` are the addresses its header named.
    """

    method: bytes
    uri: bytes
    path: bytes
    version: bytes
    headers: Headers
    body: bytes
    offered: tuple[bytes, ...]
    peer: IAddress
    host: IAddress
    secure: bool
    site: Any = None
    avatarId: bytes | str | None = None
    proxyProtocol: bool = False


# The frozen dataclass's __init__ sets each field through object.__setattr__,
# which costs about 2 microseconds per request; the fields' own slot
# descriptors set them in half that, for the two places that make a request
# per handshake. tests/test_decisions.py checks that both make equal requests.
_SETTERS = tuple(UpgradeRequest.__dict__[name].__set__ for name in UpgradeRequest.__slots__)
_new = object.__new__


def _newRequest(
    method: bytes,
    uri: bytes,
    path: bytes,
    version: bytes,
    headers: Headers,
    body: bytes,
    offered: tuple[bytes, ...],
    peer: IAddress,
    host: IAddress,
    secure: bool,
    site: Any,
    avatarId: bytes | str | None,
    proxyProtocol: bool = False,
) -> UpgradeRequest:
    """``UpgradeRequest(...)`` with every field given, made faster."""
    request: UpgradeRequest = _new(UpgradeRequest)
    (
        setMethod, setUri, setPath, setVersion, setHeaders, setBody,
        setOffered, setPeer, setHost, setSecure, setSite, setAvatarId, setProxyProtocol,
    ) = _SETTERS  # fmt: skip
    setMethod(request, method)
    setUri(request, uri)
    setPath(request, path)
    setVersion(request, version)
    setHeaders(request, headers)
    setBody(request, body)
    setOffered(request, offered)
    setPeer(request, peer)
    setHost(request, host)
    setSecure(request, secure)
    setSite(request, site)
    setAvatarId(request, avatarId)
    setProxyProtocol(request, proxyProtocol)
    return request


def parseFields(lines: Iterable[bytes]) -> dict[bytes, list[bytes]] | None:
    """
    Header field lines as :class:`Headers` keeps them, by Twisted's own
    canonical names (see :func:`upgradable._core.parseFields`).
    """
    return _parseFields(lines, canonicalName, CANONICAL_NAMES)


class _PackedHeaders(Headers):
    """
    Headers that keep their field lines as one bytes object, ``name: value``
    lines joined by CRLF (for a request read by the fast path, the lines as
    they arrived), parsed into Twisted's usual dict when first read.

    A WebSocket connection keeps its upgrade request for its life, and the
    bytes cost about a quarter of the dict of lists of values (0.7 KB for a
    browser's handshake). Every Headers method reads ``_rawHeaders``, which
    parses. The fields change only through the methods that change them,
    which forget the lines, so :func:`keepable` packs the fields anew after
    a change: the getters hand out copies of the lists of values, where a
    plain Headers hands out its own.
    """

    __slots__ = ("_packed",)

    def __init__(self, packed: bytes, raw: dict[bytes, list[bytes]] | None = None) -> None:
        # No super().__init__: the fields are parsed when first read.
        self._packed: bytes | None = packed
        if raw is not None:
            _RAW_SLOT.__set__(self, raw)

    @property
    def _rawHeaders(self) -> dict[bytes, list[bytes]]:
        try:
            raw: dict[bytes, list[bytes]] = _RAW_SLOT.__get__(self, Headers)
        except AttributeError:
            packed = self._packed
            raw = (parseFields(packed.split(b"\r\n")) if packed else None) or {}
            _RAW_SLOT.__set__(self, raw)
        return raw

    @_rawHeaders.setter
    def _rawHeaders(self, raw: dict[bytes, list[bytes]]) -> None:
        _RAW_SLOT.__set__(self, raw)
        self._packed = None

    def _forgetLines(self) -> None:
        """The fields are about to change: parse the lines, then drop them."""
        self._rawHeaders  # noqa: B018
        self._packed = None

    def setRawHeaders(self, name: str | bytes, values: Sequence[str | bytes]) -> None:
        self._forgetLines()
        super().setRawHeaders(name, values)

    def addRawHeader(self, name: str | bytes, value: str | bytes) -> None:
        self._forgetLines()
        super().addRawHeader(name, value)

    def removeHeader(self, name: AnyStr) -> None:
        self._forgetLines()
        super().removeHeader(name)

    def getRawHeaders(self, name: Any, default: Any = None) -> Any:
        values = super().getRawHeaders(name, default)
        return list(values) if type(values) is list and values is not default else values

    def getAllRawHeaders(self) -> Iterator[tuple[bytes, Sequence[bytes]]]:
        return ((name, list(values)) for name, values in self._rawHeaders.items())

    def copy(self) -> Headers:
        return Headers(self._rawHeaders)

    def __repr__(self) -> str:
        return f"Headers({self._rawHeaders!r})"


_RAW_SLOT: Any = RAW_HEADERS_SLOT

# Interned, so that a kept request shares them rather than holding its own.
_COMMON = {value: value for value in (b"GET", b"POST", b"PUT", b"OPTIONS", b"HTTP/1.1")}


def keepable(request: UpgradeRequest) -> UpgradeRequest:
    """
    ``request`` as a protocol that keeps it for the connection's life should
    hold it: equal in every field, with its headers packed (see
    :class:`_PackedHeaders`) and its method and version shared.
    """
    headers = request.headers
    packed = headers._packed if type(headers) is _PackedHeaders else None
    if packed is None:
        lines: list[bytes] = []
        for name, values in headers.getAllRawHeaders():
            if not values:
                return request  # a name without values has no line: kept as it is
            for value in values:
                if value.strip(b" \t") != value:
                    return request  # parsing would strip it: kept as it is
                lines.append(name + b": " + value)
        packed = b"\r\n".join(lines)
    return _newRequest(
        _COMMON.get(request.method, request.method),
        request.uri,
        request.uri if request.path == request.uri else request.path,
        _COMMON.get(request.version, request.version),
        _PackedHeaders(packed),
        request.body,
        request.offered,
        request.peer,
        request.host,
        request.secure,
        request.site,
        request.avatarId,
        request.proxyProtocol,
    )


@dataclass(frozen=True, slots=True)
class Accept:
    """
    Switch to ``protocol``.

    The channel writes ``101 Switching Protocols`` naming the product the
    client offered (plus ``headers``), then calls
    ``protocol.makeConnection(transport)`` with the connection's own
    transport, then delivers every byte the client sent after the request.

    :ivar protocol: the protocol that takes the connection over.
    :ivar headers: extra header fields for the 101, e.g.
        ``[(b"Sec-WebSocket-Accept", value)]``.
    """

    protocol: IProtocol
    headers: Sequence[tuple[bytes, bytes]] = ()

    def __post_init__(self) -> None:
        if not IProtocol.providedBy(self.protocol):
            raise TypeError(
                f"Accept needs a protocol (IProtocol), not {self.protocol!r}; "
                "for a factory, accept factory.buildProtocol(request.peer)"
            )
        if self.headers != ():  # the default needs no checking
            object.__setattr__(self, "headers", checkHeaders(self.headers, NOT_IN_101, "Accept"))


_setProtocol, _setHeaders = (Accept.__dict__[name].__set__ for name in ("protocol", "headers"))


def _trustedAccept(protocol: IProtocol, headers: tuple[tuple[bytes, bytes], ...]) -> Accept:
    """
    ``Accept(protocol, headers)`` without its checks, for this package's own
    handlers, whose protocol and header fields are right by construction:
    the checks cost more than the rest of a WebSocket handshake's decision.
    """
    accept: Accept = _new(Accept)
    _setProtocol(accept, protocol)
    _setHeaders(accept, headers)
    return accept


@dataclass(frozen=True, slots=True)
class Decline:
    """
    Do not switch to this product: the channel tries the client's next offered
    product, and when none is left serves the request as plain HTTP.
    """


@dataclass(frozen=True, slots=True)
class Reject:
    """
    Answer the upgrade request with an HTTP error and do not switch.

    :ivar code: the status code, e.g. 401 or 403.
    :ivar headers: header fields for the response.
    :ivar body: the response body (framed with ``Content-Length``).
    :ivar close: close the connection after the response.
    :ivar reason: the reason phrase (the status's usual one unless given);
        no control byte but HTAB (so no CR, LF or NUL).
    """

    code: int
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""
    close: bool = False
    reason: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise ValueError(f"Reject needs a 4xx or 5xx status, not {self.code}")
        object.__setattr__(self, "headers", checkHeaders(self.headers, NOT_IN_REJECT, "Reject"))
        if not isinstance(self.reason, bytes):
            raise TypeError(f"Reject's reason is bytes, not {self.reason!r}")
        if not self.reason:
            object.__setattr__(self, "reason", reasonPhrase(self.code))
        elif not isFieldText(self.reason):
            # It goes into the status line as it is.
            raise ValueError(f"Reject's reason {self.reason!r} contains a control byte")


Decision = Accept | Decline | Reject
"""What a handler answers: :class:`Accept`, :class:`Decline` or :class:`Reject`."""
