"""
Shared test helpers: recording protocols, an in-memory server, and a small
parser for what the server wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IReactorPluggableNameResolver,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import alsoProvides, implementer

from upgradable import (
    Accept,
    Decline,
    Reject,
    UpgradableSite,
    UpgradeRegistry,
    UpgradeRequest,
)
from upgradable.interfaces import IUpgradeHandler
from upgradable.protocols.echo import EchoFactory


def memoryReactor() -> MemoryReactorClock:
    """
    A MemoryReactorClock as Twisted 26.10 makes it on every release we
    support: not yet run or stopped, and with a name resolver (before 25.5
    it has none, and HostnameEndpoint warns that it is deprecated; every
    name resolves to 127.0.0.1, as Twisted's own SynchronousResolver does).
    """
    reactor = MemoryReactorClock()
    reactor.hasRun = reactor.hasStopped = False
    if not IReactorPluggableNameResolver.providedBy(reactor):
        reactor.nameResolver = _LoopbackResolver()  # type: ignore[attr-defined]
        reactor.installNameResolver = _installer(reactor)  # type: ignore[attr-defined]
        alsoProvides(reactor, IReactorPluggableNameResolver)
    return reactor


class _LoopbackResolver:
    """Resolves every name to 127.0.0.1 at once, keeping the port."""

    def resolveHostName(
        self, receiver: Any, hostName: str, portNumber: int = 0, *args: Any, **kwargs: Any
    ) -> Any:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        receiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        receiver.resolutionComplete()
        return resolution


@dataclass
class _Resolution:
    name: str

    def cancel(self) -> None:
        raise RuntimeError("already resolved")


def _installer(reactor: Any) -> Any:
    def installNameResolver(resolver: Any) -> Any:
        previous, reactor.nameResolver = reactor.nameResolver, resolver
        return previous

    return installNameResolver


IRC_REQ = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n"
ECHO_REQ = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\n"


class RecordingProtocol(Protocol):
    """Records what the hand-over gives it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.made = 0
        self.lost: list[Failure] = []

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.append(reason)  # type: ignore[arg-type]

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


class RecordingFactory(Factory):
    def __init__(self) -> None:
        self.built: list[RecordingProtocol] = []

    def buildProtocol(self, addr: Any) -> RecordingProtocol:
        protocol = RecordingProtocol()
        protocol.factory = self
        self.built.append(protocol)
        return protocol

    @property
    def last(self) -> RecordingProtocol:
        assert len(self.built) == 1, self.built
        return self.built[0]


@implementer(IUpgradeHandler)
class ScriptedHandler:
    """A handler that answers what a test tells it to, and records requests."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[tuple[UpgradeRequest, bytes]] = []

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Any:
        self.requests.append((request, product))
        answer = self.answer
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request, product)
        return answer


class EchoRequestResource(Resource):
    """Answers with the method, target and body it saw, framed."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, bytes]] = []
        self.pending: list[Request] = []
        self.delay = False

    def render(self, request: Request) -> bytes | int:
        body = request.content.read()
        self.seen.append((request.method, request.uri, body))
        payload = b"%s %s %r" % (request.method, request.uri, body)
        request.setHeader(b"Content-Type", b"text/plain")
        request.setHeader(b"Content-Length", b"%d" % len(payload))
        if self.delay:
            self.pending.append(request)
            request.delayedPayload = payload  # type: ignore[attr-defined]
            return 1  # NOT_DONE_YET
        return payload

    def release(self) -> None:
        for request in self.pending:
            request.write(request.delayedPayload)  # type: ignore[attr-defined]
            request.finish()
        self.pending = []


class RecordingTransport(StringTransport):
    """
    A StringTransport that also records, in order, each call that writes or
    ends the connection: ``("write", data)``, ``("writeSequence", joined)``,
    ``("loseConnection", b"")`` and ``("abortConnection", b"")``. Its
    ``value()`` is the bytes joined; ``writes`` shows how they were cut, so
    a test can tell one write from two.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.calls: list[tuple[str, bytes]] = []  # before: StringTransport's __init__ clears
        super().__init__(*args, **kwargs)

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))
        super().write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        self.calls.append(("writeSequence", b"".join(data)))
        super().writeSequence(data)

    def loseConnection(self) -> None:
        self.calls.append(("loseConnection", b""))
        super().loseConnection()

    def abortConnection(self) -> None:
        self.calls.append(("abortConnection", b""))
        # StringTransport's abortConnection calls loseConnection: record one call.
        self.disconnected = True
        StringTransport.loseConnection(self)

    @property
    def writes(self) -> list[bytes]:
        """The bytes of each write, in order (writeSequence's joined)."""
        return [data for name, data in self.calls if name in ("write", "writeSequence")]

    @property
    def aborted(self) -> bool:
        return any(name == "abortConnection" for name, _ in self.calls)

    def clear(self) -> None:
        super().clear()
        self.calls = [call for call in self.calls if call[0] not in ("write", "writeSequence")]


class TCPLikeTransport(RecordingTransport):
    """
    A RecordingTransport that delivers as Twisted's reactor transports do:
    each event to whatever ``protocol`` is at that moment (the hand-over
    points it elsewhere), with each optional call made only to a protocol
    that provides its interface, checked when the event comes, as TCP (a
    half-close), UNIX sockets (file descriptors) and TLS (the handshake) do.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocol: Any = None

    def connect(self, protocol: Any) -> TCPLikeTransport:
        self.protocol = protocol
        protocol.makeConnection(self)
        return self

    def deliver(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.dataReceived(chunk)

    def endInput(self) -> None:
        """The peer shut its sending side down (tcp.Connection.readConnectionLost)."""
        receiver = IHalfCloseableProtocol(self.protocol, None)
        if receiver is not None:
            receiver.readConnectionLost()
        else:
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def lose(self, reason: Failure | None = None) -> None:
        self.protocol.connectionLost(reason or Failure(ConnectionDone()))

    def deliverFileDescriptor(self, fd: int) -> bool:
        """As unix.Server: False when the protocol does not take descriptors."""
        if IFileDescriptorReceiver.providedBy(self.protocol):
            self.protocol.fileDescriptorReceived(fd)
            return True
        return False

    def completeHandshake(self) -> None:
        """As TLSMemoryBIOProtocol once its handshake is done."""
        if IHandshakeListener.providedBy(self.protocol):
            self.protocol.handshakeCompleted()


@dataclass
class Server:
    """An UpgradableSite driven over an in-memory transport."""

    registry: UpgradeRegistry = field(default_factory=UpgradeRegistry)
    resource: EchoRequestResource = field(default_factory=EchoRequestResource)
    advertise: bool = False
    timeout: float = 60
    clock: Clock = field(default_factory=Clock)
    limits: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.site = UpgradableSite(
            self.resource,
            self.registry,
            advertise=self.advertise,
            timeout=self.timeout,
            reactor=self.clock,
            **self.limits,
        )
        self.protocol = self.site.buildProtocol(None)
        self.transport = RecordingTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, *chunks: bytes) -> Server:
        for chunk in chunks:
            self.protocol.dataReceived(chunk)
        return self

    def sendBytewise(self, data: bytes) -> Server:
        return self.send(*(data[i : i + 1] for i in range(len(data))))

    def output(self) -> bytes:
        return bytes(self.transport.value())

    @property
    def writes(self) -> list[bytes]:
        """Each write to the transport since the last clear(), in order."""
        return self.transport.writes

    def clear(self) -> bytes:
        value = self.output()
        self.transport.clear()
        return value

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


def standardServer(**kwargs: Any) -> tuple[Server, RecordingFactory]:
    """A server with IRC/6.9 (recording) and HTTP/2.0 (echo) registered."""
    irc = RecordingFactory()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", irc)
    registry.register(b"HTTP/2.0", EchoFactory())
    return Server(registry=registry, **kwargs), irc


@dataclass
class Response:
    version: bytes
    code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def tokens(self, name: bytes) -> list[bytes]:
        return [t.strip().lower() for v in self.header(name) for t in v.split(b",") if t.strip()]


def parseResponses(data: bytes, heads: Iterable[int] = ()) -> tuple[list[Response], bytes]:
    """
    Split what a server wrote into responses. Parsing stops after a 101 (the
    rest is the new protocol's) or at a response framed by connection close.
    Returns the responses and the bytes after the last one. ``heads`` are the
    indexes of final responses that answer HEAD requests (they have no body).
    """
    heads = set(heads)
    finals = 0
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data!r}"
        lines = head.split(b"\r\n")
        version, code, reason = ([*lines[0].split(b" ", 2), b""])[:3]
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon, f"bad header line {line!r}"
            headers.append((name, value.strip()))
        response = Response(version, int(code), reason, headers, b"")
        responses.append(response)
        if 100 <= response.code < 200:
            data = rest
            if response.code == 101:
                return responses, rest
            continue
        lengths = response.header(b"content-length")
        finals += 1
        if finals - 1 in heads:
            data = rest
        elif response.tokens(b"transfer-encoding") == [b"chunked"]:
            body = b""
            while True:
                sizeLine, _, rest = rest.partition(b"\r\n")
                size = int(sizeLine, 16)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
            response.body = body
            data = rest
        elif lengths:
            size = int(lengths[0])
            response.body, data = rest[:size], rest[size:]
        else:
            response.body, data = rest, b""
    return responses, data


def deferred() -> Deferred[Any]:
    return Deferred()


def chunks(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets."""
    out, last = [], 0
    for cut in sorted(set(cuts)):
        out.append(data[last:cut])
        last = cut
    out.append(data[last:])
    return [c for c in out if c]


__all__ = [
    "ECHO_REQ",
    "IRC_REQ",
    "Accept",
    "Decline",
    "EchoRequestResource",
    "RecordingFactory",
    "RecordingProtocol",
    "RecordingTransport",
    "Reject",
    "Response",
    "ScriptedHandler",
    "Server",
    "TCPLikeTransport",
    "chunks",
    "deferred",
    "parseResponses",
    "standardServer",
]
