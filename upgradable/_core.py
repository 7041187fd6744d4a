# The negotiation core: every rule of an HTTP/1.1 upgrade that needs no
# socket, in the manner of h11 and wsproto. No I/O and no Twisted here (a
# test loads this file alone, outside the package, and checks that nothing
# but the standard library is imported); the server's fast path
# (_site._NewConnection), the server's usual path (_channel) and the client
# (client) all decide with these functions and write these heads.
#
# A request's fields are passed as a mapping from a name in canonical
# capitalisation (``Upgrade``, ``Connection``, ``Host``, ``Content-Length``:
# what Twisted's Headers keeps, and what plainUpgradeHead makes) to the
# values in order; the fields of a response or of a handler's answer as
# ``(name, value)`` pairs, names as sent.
#
# Rules kept here (RFC 9110 §5.6.1, §7.6.1, §7.8, RFC 9112 §3.2):
# - Lists (#rule) are split on commas over every field line, with optional
#   whitespace around elements and empty elements ignored.
# - Connection options are compared ASCII-case-insensitively.
# - An Upgrade element is `protocol-name ["/" protocol-version]`, both tokens.
#   Names compare ASCII-case-insensitively, versions octet for octet; nothing
#   ever matches by prefix or substring. An element that is not a valid
#   production never matches anything (it is skipped, the others still count).
# - All comparisons are on bytes: bytes.lower() folds ASCII only, so no
#   Unicode case folding can make two different tokens equal.
# - Only an HTTP/1.1 request that is not CONNECT, lists `upgrade` in
#   Connection and has exactly one valid Host may switch; h2c never over TLS.
# - A plain head (the fast path's input) is a strict subset of what
#   Twisted's HTTPChannel accepts, read with Twisted's own request-line and
#   field-name functions (passed in): see plainUpgradeHead and
#   docs/handover.rst.
# - What a handler or a caller puts in a head is checked before it is
#   written: names are tokens, values hold no control byte but HTAB.
from __future__ import annotations

from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "CLEARTEXT_ONLY",
    "NOT_IN_101",
    "NOT_IN_REJECT",
    "REMEMBERED",
    "REQUEST_START",
    "ClientRequest",
    "PlainHead",
    "Product",
    "answerHead",
    "checkHeaders",
    "checkSwitch",
    "cleartextOnly",
    "clientRequest",
    "connectionOptions",
    "dechunk",
    "errorResponse",
    "isFieldText",
    "isToken",
    "matchOffers",
    "mayUpgrade",
    "oneValidHost",
    "parseFields",
    "parseProduct",
    "parseResponseHead",
    "parseUpgrade",
    "plainUpgradeHead",
    "reasonPhrase",
    "rememberable",
    "servedOver",
    "splitList",
    "switchingHead",
    "withoutCleartextOnly",
]

_Handler = TypeVar("_Handler")

# RFC 9110 §5.6.2: tchar.
_TCHAR_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_OWS = b" \t"
# Control bytes but HTAB (RFC 5234 CTL).
_CTL = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])

# The comparison keys of products that name a protocol over cleartext only:
# never offered, advertised or switched to on a TLS connection. RFC 9113
# §3.1 (RFC 7540 §3.2, §3.3): "h2c" is HTTP/2 over cleartext TCP; over TLS,
# HTTP/2 is "h2", negotiated by ALPN and never by Upgrade.
CLEARTEXT_ONLY = frozenset([(b"h2c", None)])


class Product(NamedTuple):
    """
    One element of an C{Upgrade} field: a protocol name and optional version.

    ``key`` is what two products are compared by: the name folded to ASCII
    lower case and the version exactly as sent. ``raw`` keeps the sender's
    spelling, which is what a 101 echoes back.
    """

    raw: bytes
    key: tuple[bytes, bytes | None]


def isToken(value: bytes) -> bool:
    """Whether ``value`` is a token (RFC 9110 §5.6.2)."""
    return bool(value) and not value.translate(None, _TCHAR_BYTES)


def splitList(values: Iterable[bytes]) -> list[bytes]:
    """
    Split the field lines of a list-valued field into its non-empty elements.

    :param values: every field line's value, in the order received.
    :return: the elements with surrounding whitespace removed.
    """
    out: list[bytes] = []
    for value in values:
        for element in value.split(b","):
            element = element.strip(_OWS)
            if element:
                out.append(element)
    return out


#: How many parses of field values are remembered, and of values up to how
#: many bytes: clients send the same few again and again; longer ones are
#: parsed every time, so that no client can pin much memory with them.
REMEMBERED = 256


def rememberable(values: tuple[bytes, ...]) -> bool:
    """Whether the parse of these field values may be remembered."""
    return sum(map(len, values)) <= REMEMBERED


def connectionOptions(values: Iterable[bytes]) -> frozenset[bytes]:
    """
    The connection options of a C{Connection} field, folded to lower case.
    """
    values = tuple(values)
    if rememberable(values):
        return _connectionOptions(values)
    return _connectionOptions.__wrapped__(values)


@lru_cache(maxsize=REMEMBERED)
def _connectionOptions(values: tuple[bytes, ...]) -> frozenset[bytes]:
    return frozenset(element.lower() for element in splitList(values))


def parseProduct(element: bytes) -> Product | None:
    """
    Parse one C{protocol} production (RFC 9110 §7.8), or return None when it
    is not one (so that it can never match a registered protocol).
    """
    name, slash, version = element.partition(b"/")
    if not isToken(name):
        return None
    if not slash:
        return Product(element, (name.lower(), None))
    if not isToken(version):
        return None
    return Product(element, (name.lower(), version))


def parseUpgrade(values: Iterable[bytes]) -> list[Product]:
    """
    The valid products offered by the C{Upgrade} field lines, in the client's
    order of preference. Invalid elements are left out.
    """
    products = []
    for element in splitList(values):
        product = parseProduct(element)
        if product is not None:
            products.append(product)
    return products


def matchOffers(
    upgrade: Iterable[bytes], lookup: Callable[[tuple[bytes, bytes | None]], _Handler | None]
) -> tuple[tuple[bytes, ...], tuple[tuple[Product, _Handler], ...]]:
    """
    What the ``Upgrade`` field lines ``upgrade`` offer: every valid product
    (as sent), and those ``lookup`` finds a handler for (by comparison key)
    with their handlers, both in the client's order of preference.
    """
    offered = parseUpgrade(upgrade)
    served = []
    for product in offered:
        handler = lookup(product.key)
        if handler is not None:
            served.append((product, handler))
    return tuple(product.raw for product in offered), tuple(served)


def cleartextOnly(product: bytes) -> bool:
    """Whether ``product`` names a protocol over cleartext only (h2c)."""
    parsed = parseProduct(product)
    return parsed is not None and parsed.key in CLEARTEXT_ONLY


def withoutCleartextOnly(products: Iterable[bytes]) -> list[bytes]:
    """``products`` but those that run over cleartext only: for a TLS connection."""
    return [product for product in products if not cleartextOnly(product)]


def servedOver(
    served: tuple[tuple[Product, _Handler], ...], secure: bool
) -> tuple[tuple[Product, _Handler], ...]:
    """
    The served offers that may be switched to on this connection: on a
    ``secure`` (TLS) one, no cleartext-only product (RFC 9113 §3.1: h2c
    never runs over TLS, whatever its handler says).
    """
    if secure and any(product.key in CLEARTEXT_ONLY for product, _ in served):
        return tuple(offer for offer in served if offer[0].key not in CLEARTEXT_ONLY)
    return served


# -- reason phrases -----------------------------------------------------------

# Twisted's phrases (twisted.web.http.RESPONSES, for the codes it has: the
# bytes stay those Twisted's own responses carry; a test checks that they
# agree), and RFC 9110 §15 / RFC 6585 ones for the codes it lacks.
_REASONS = {
    101: b"Switching Protocols",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Time-out",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Request Entity Too Large",
    414: b"Request-URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Requested Range not satisfiable",
    417: b"Expectation Failed",
    418: b"I'm a teapot",
    421: b"Misdirected Request",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Time-out",
    505: b"HTTP Version not supported",
    507: b"Insufficient Storage Space",
    510: b"Not Extended",
}


def reasonPhrase(code: int) -> bytes:
    """The reason phrase for ``code``, or ``b"Error"`` for unknown codes."""
    return _REASONS.get(code, b"Error")


# -- requests: which may upgrade ----------------------------------------------

#: The bytes a request may start with: a method's first (a token) or the
#: empty line RFC 9112 §2.2 lets a server skip. Anything else (a TLS
#: ClientHello, binary junk) is not HTTP.
REQUEST_START = frozenset(_TCHAR_BYTES + b"\r\n")

# Bytes that cannot appear in a valid Host value (RFC 9112 §3.2, RFC 3986).
_NOT_IN_HOST = b" \t,/@\\"


def oneValidHost(hosts: Sequence[bytes] | None) -> bool:
    """RFC 9112 §3.2: exactly one Host field, and a value a host can have."""
    return (
        hosts is not None
        and len(hosts) == 1
        and len(hosts[0].translate(None, _NOT_IN_HOST)) == len(hosts[0])
    )


def mayUpgrade(
    method: bytes, version: bytes, fields: Mapping[bytes, Sequence[bytes]]
) -> Sequence[bytes] | None:
    """
    The ``Upgrade`` field lines of a request that may switch protocols, or
    None when it may not: it is not HTTP/1.1 (RFC 9110 §7.8: a server MUST
    ignore Upgrade in HTTP/1.0), it is CONNECT, it has no Upgrade field, or
    its Connection field lacks the ``upgrade`` option (the sender MUST list
    it; one without it passed an intermediary that should have dropped it).
    The Host rule is the parser's: a request without one valid Host is a
    400 whatever it asks.
    """
    if version != b"HTTP/1.1":
        return None
    upgrade = fields.get(b"Upgrade")
    if upgrade is None or method == b"CONNECT":
        return None
    if b"upgrade" not in connectionOptions(fields.get(b"Connection", ())):
        return None
    return upgrade


def parseFields(
    lines: Iterable[bytes], canonical: Callable[[bytes], bytes], known: Mapping[bytes, bytes]
) -> dict[bytes, list[bytes]] | None:
    """
    Header field lines as Twisted's Headers keeps them: each canonical name
    with its values in order, stripped of whitespace (RFC 9112 §5.1). None
    when a line is not ``name: value`` with a name that ``canonical``
    accepts (it raises ValueError for one that is not a token); ``known``
    maps the names it made before to their canonical form. The lines must
    hold no CR, LF or NUL.
    """
    fields: dict[bytes, list[bytes]] = {}
    for line in lines:
        raw, colon, value = line.partition(b":")
        if not colon:
            return None
        name = known.get(raw)  # only names that canonical accepted are there
        if name is None:
            try:
                name = canonical(raw)
            except ValueError:
                return None
        value = value.strip(_OWS)
        if name in fields:
            fields[name].append(value)
        else:
            fields[name] = [value]
    return fields


class PlainHead(NamedTuple):
    """A plain upgrade request's head, as :func:`plainUpgradeHead` read it."""

    method: bytes
    target: bytes
    version: bytes
    #: The header fields by canonical name, values in order, stripped.
    fields: dict[bytes, list[bytes]]
    #: The field lines as they arrived, separated by CRLF.
    fieldBlock: bytes
    #: Every byte after the head.
    rest: bytes


def plainUpgradeHead(
    data: bytes,
    maxHeaders: int,
    maxHeaderSize: int,
    splitRequestLine: Callable[[bytes], tuple[bytes, bytes, bytes]],
    canonical: Callable[[bytes], bytes],
    known: Mapping[bytes, bytes],
) -> PlainHead | None:
    """
    The head at the start of ``data`` when it is an upgrade request of the
    plainest kind, or None for anything else: the fast path reads these and
    leaves the rest to Twisted's HTTPChannel.

    Plain means: the head is complete; it holds no control byte but HTAB
    and the CRLF line ends (so no NUL, no bare CR or LF); it is within
    ``maxHeaders`` fields and ``maxHeaderSize`` bytes (counted as
    HTTPChannel counts); its request line is one that ``splitRequestLine``
    (Twisted's own) splits, of HTTP/1.1, with an ASCII target; every field
    line is ``name: value`` with a name that ``canonical`` (Twisted's own,
    raising ValueError for a non-token) accepts; it has exactly one valid
    Host and no Content-Length, Transfer-Encoding or Expect (so no body, no
    100-continue); and it has an ``Upgrade`` field. ``known`` maps names to
    their canonical form, as ``canonical`` made them before.

    Every head accepted here is one HTTPChannel accepts and reads the same:
    same method, target, version, fields and body (none), so the same bytes
    follow it; and one that h11 reads the same. tests/test_core.py checks
    both on generated heads.
    """
    end = data.find(b"\r\n\r\n")
    if end <= 0:
        return None
    head = data[:end]
    # Cheap test first: most first requests that do not upgrade stop here.
    if b"pgrade:" not in head:
        return None
    lines = head.split(b"\r\n")
    count = len(lines) - 1
    if count > maxHeaders or end - 2 * count > maxHeaderSize:
        return None
    # No control byte but HTAB and the line ends' CRLFs (so no NUL, no bare
    # CR or LF): what h11 refuses too, and what a field may not hold (RFC
    # 9110 §5.5).
    if len(head.translate(None, _CTL)) != end - 2 * count:
        return None
    try:
        method, target, version = splitRequestLine(lines[0])
    except ValueError:
        return None
    # Twisted's target may hold bytes up to 0xB0; h11 (and RFC 9112 §3.2)
    # allow only visible ASCII, which is all a plain head may hold.
    if version != b"HTTP/1.1" or not target.isascii():
        return None
    fields = parseFields(lines[1:], canonical, known)
    if fields is None:
        return None
    if (
        not oneValidHost(fields.get(b"Host"))
        or b"Content-Length" in fields
        or b"Transfer-Encoding" in fields
        or b"Expect" in fields
        or b"Upgrade" not in fields
    ):
        return None
    return PlainHead(method, target, version, fields, head[len(lines[0]) + 2 :],
                     data[end + 4 :])  # fmt: skip


# -- heads the server writes ----------------------------------------------------

# RFC 9110 §15.2: a 1xx has no body, so no framing fields; Connection and
# Upgrade of the 101 are the server's.
NOT_IN_101 = frozenset([b"content-length", b"transfer-encoding", b"connection", b"upgrade"])
#: What a handler's error response may not set: the server frames the body.
NOT_IN_REJECT = frozenset([b"content-length", b"transfer-encoding"])


def isFieldText(value: bytes) -> bool:
    """
    Whether ``value`` may stand in a field value or a reason phrase as it
    is: no control byte but HTAB (RFC 9110 §5.5, RFC 9112 §4), so no CR, LF
    or NUL that could end a line.
    """
    return len(value.translate(None, _CTL)) == len(value)


def checkHeaders(
    headers: Iterable[tuple[bytes, bytes]], forbidden: frozenset[bytes], owner: str
) -> tuple[tuple[bytes, bytes], ...]:
    """
    Check header fields a handler or a caller supplies: names are tokens,
    values hold no control byte but HTAB (RFC 9110 §5.5: so no CR, LF or
    NUL that could end a line), and no name in ``forbidden`` (lower case)
    appears: the writer of the head sets those itself.

    :raises TypeError: a name or value that is not bytes.
    :raises ValueError: anything else, named in the message.
    """
    checked = []
    good = _goodNames.setdefault(forbidden, set())
    for name, value in headers:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(f"header names and values must be bytes: {name!r}: {value!r}")
        if name not in good:
            if not isToken(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in forbidden:
                raise ValueError(f"{owner} may not set {name.decode()}: the channel writes it")
            if len(good) < REMEMBERED:
                good.add(name)
        if not isFieldText(value):
            raise ValueError(f"header value for {name!r} contains a control byte: {value!r}")
        checked.append((name, value))
    return tuple(checked)


# Names that passed the checks, per set of forbidden names: a handler sends
# the same few names on every handshake.
_goodNames: dict[frozenset[bytes], set[bytes]] = {}


def switchingHead(product: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """
    The ``101 Switching Protocols`` head (RFC 9110 §15.2.2) that switches to
    ``product`` (as the client spelt it), with a handler's checked
    ``headers``; nothing of HTTP follows it.
    """
    head = [b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ", product,
            b"\r\n"]  # fmt: skip
    for name, value in headers:
        head += [name, b": ", value, b"\r\n"]
    head.append(b"\r\n")
    return b"".join(head)


def errorResponse(code: int) -> bytes:
    """
    The whole response to a request that cannot be read (a 400, 408, 413,
    414 or 431), after which the connection closes: nothing after the
    offending bytes is read.
    """
    reason = reasonPhrase(code)
    body = reason + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\nConnection: close\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
        % (code, reason, len(body), body)
    )


def answerHead(
    code: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    closeFirst: bool,
    close: bool,
    advertised: bytes,
    canonical: Callable[[bytes], bytes],
) -> bytes:
    """
    The head of an ordinary answer to an upgrade request (a Reject, a 500,
    a 503), byte for byte as Twisted's ``Request`` writes the usual path's
    (``UpgradableHTTPChannel._respond``): fields named as ``canonical``
    (Twisted's Headers) names them, in its order (a name's values together,
    where it first came), framed with ``Content-Length``.

    :param closeFirst: the request asked to close (or a drain began), so
        ``Connection: close`` comes first, as ``checkPersistence`` sets it.
    :param close: the answer closes the connection.
    :param advertised: the ``Upgrade`` value that advertises the products
        (when the answer does not close), e.g. ``b"IRC/6.9, websocket"``;
        empty for none.
    """
    fields: dict[bytes, list[bytes]] = {b"Connection": [b"close"]} if closeFirst else {}
    for name, value in headers:
        fields.setdefault(canonical(name), []).append(value)
    fields[b"Content-Length"] = [b"%d" % len(body)]
    if body and b"Content-Type" not in fields:
        fields[b"Content-Type"] = [b"text/plain; charset=utf-8"]
    if close:
        fields[b"Connection"] = [b"close"]
    if advertised:
        connection = fields.get(b"Connection", [])
        options = connectionOptions(connection)
        if b"close" not in options and b"Upgrade" not in fields:
            fields[b"Upgrade"] = [advertised]
            if b"upgrade" not in options:
                fields[b"Connection"] = [*connection, b"Upgrade"]
    lines = [b"HTTP/1.1 %d %s" % (code, reason)]
    for name, values in fields.items():
        lines.extend(name + b": " + value for value in values)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


# -- the client -------------------------------------------------------------------

# RFC 3986 §3.2.2: what a reg-name may hold (unreserved, sub-delims and
# percent-encoding), which is also what the Host field may (RFC 9110 §7.2).
_REG_NAME = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%"
)
# Fields the client writes itself, and the framing of a body it never sends
# (RFC 9112 §6: a Content-Length would make the server read the new
# protocol's first bytes as a body).
_NOT_FROM_CALLER = frozenset([b"content-length", b"transfer-encoding"])


class ClientRequest(NamedTuple):
    """An upgrade request to send, and where to."""

    #: Whether the URL is ``https``.
    secure: bool
    #: The host to connect to.
    host: str
    port: int
    #: The products offered, in order.
    offered: list[bytes]
    #: The request's head, ending in the empty line.
    head: bytes


def clientRequest(
    url: str | bytes,
    protocols: Sequence[bytes],
    headers: Iterable[tuple[bytes, bytes]] | None,
    credentials: tuple[str | bytes, str | bytes] | None,
    method: bytes,
) -> ClientRequest:
    """
    Check what a caller of the client supplies, and build the request from
    it. Nothing the caller gives reaches the wire unchecked, so that no CR
    or LF in it can end a field or the head early.

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

    # RFC 9110 §5.1, §5.5: names are tokens, values hold no control byte but HTAB.
    extra = checkHeaders(list(headers or ()), frozenset(), "upgrade")
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
    return ClientRequest(secure, host, port, offered, b"\r\n".join(lines) + b"\r\n\r\n")


def parseResponseHead(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """
    The status and header fields of a response head (without its empty
    line); status 0 when it is not an HTTP/1.x status line with a
    three-digit code (RFC 9112 §4). Field lines whose name is not a token
    are left out; an obs-fold line (starting with SP or HTAB) continues the
    previous value, joined with one SP (RFC 9112 §5.2).
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (
        len(parts) < 2
        or len(parts[0]) != 8
        or not parts[0].startswith(b"HTTP/1.")
        or not parts[0][7:].isdigit()
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        return 0, []
    fields: list[tuple[bytes, bytes]] = []
    keep = False  # whether the previous line was a field kept
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if keep:
                name, value = fields[-1]
                folded = line.strip(_OWS)
                fields[-1] = (name, value + b" " + folded if value and folded else value + folded)
            continue
        name, colon, value = line.partition(b":")
        keep = bool(colon) and isToken(name)
        if keep:
            fields.append((name, value.strip(_OWS)))
    return int(parts[1]), fields


def checkSwitch(
    fields: Iterable[tuple[bytes, bytes]], offered: Mapping[tuple[bytes, bytes | None], bytes]
) -> tuple[bytes, str]:
    """
    Check a ``101`` against what was offered (RFC 9110 §7.8): it carries the
    ``upgrade`` connection option and names, first, a protocol the client
    offered (``offered`` maps their comparison keys to them).

    :return: the product switched to (as the server spelt it) and ``""``,
        or ``b""`` and what is wrong with the 101.
    """
    connection = []
    upgrade = []
    for name, value in fields:
        folded = name.lower()
        if folded == b"connection":
            connection.append(value)
        elif folded == b"upgrade":
            upgrade.append(value)
    if b"upgrade" not in connectionOptions(connection):
        return b"", "101 without the upgrade connection option"
    products = parseUpgrade(upgrade)
    if not products or products[0].key not in offered:
        return b"", "101 names a protocol that was not offered"
    return products[0].raw, ""


def dechunk(data: bytes) -> bytes | None:
    """
    The body of a complete chunked message (RFC 9112 §7.1) at the start of
    ``data``, or None if it is not complete yet; a malformed chunk size
    ends it with what was understood.
    """
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
