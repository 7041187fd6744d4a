"""
upgradable.client over real loopback sockets: against our server (TCP and
TLS with certificate checking), against canned bad answers, and against a
server nobody here wrote (nghttpx's h2c upgrade).
"""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from upgradable import Accept, Reject, UpgradableSite, UpgradeRegistry
from upgradable._core import clientRequest
from upgradable.client import UpgradeFailed, UpgradeTimeout, upgrade
from upgradable.protocols.echo import EchoFactory

from .conftest import requirePeer
from .helpers import ScriptedHandler, memoryReactor
from .test_integration import HOST, Page


class Collector(Protocol):
    """Collects what arrives; ``waitFor(n)`` fires once n bytes are in."""

    def __init__(self) -> None:
        self.data = b""
        self.waiting: list[tuple[int, Deferred[bytes]]] = []
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for count, d in list(self.waiting):
            if len(self.data) >= count:
                self.waiting.remove((count, d))
                d.callback(self.data)

    def waitFor(self, count: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.waiting.append((count, d))
        self.dataReceived(b"")
        return d

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)


async def ourServer(description: str) -> Any:
    registry = UpgradeRegistry()
    registry.register(b"HTTP/2.0", EchoFactory())
    registry.register(
        b"greeter",
        ScriptedHandler(lambda request, product: Accept(Greeter(), [(b"X-Hello", b"yes")])),
    )
    registry.register(
        b"locked",
        ScriptedHandler(
            lambda request, product: Reject(
                401, [(b"WWW-Authenticate", b'Basic realm="x"')], b"who are you?\n"
            )
        ),
    )
    return await serverFromString(reactor, description).listen(UpgradableSite(Page(), registry))


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"greetings\n")  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_upgradeOverTCPAndEchoTheBytes() -> None:
    port = await ourServer(f"tcp:0:interface={HOST}")
    try:
        url = f"http://{HOST}:{port.getHost().port}/x"
        result = await upgrade(
            reactor, url, [b"nope/1", b"http/2.0"], Factory.forProtocol(Collector)
        )
        assert result.product == b"http/2.0"
        protocol = result.protocol
        assert isinstance(protocol, Collector)
        protocol.transport.write(b"ping")  # type: ignore[union-attr]
        assert await protocol.waitFor(4) == b"ping"
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        await protocol.lost
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_bytesRightAfterThe101ReachTheProtocol() -> None:
    port = await ourServer(f"tcp:0:interface={HOST}")
    try:
        url = f"http://{HOST}:{port.getHost().port}/"
        result = await upgrade(reactor, url, [b"greeter"], Factory.forProtocol(Collector))
        protocol = result.protocol
        assert await protocol.waitFor(10) == b"greetings\n"  # type: ignore[attr-defined]
        protocol.transport.loseConnection()  # type: ignore[attr-defined]
        await protocol.lost  # type: ignore[attr-defined]
        assert protocol.data == b"greetings\n"  # type: ignore[attr-defined]  # and no more
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_upgradeOverTLSChecksTheCertificate(certificate: Path) -> None:
    port = await ourServer(f"ssl:0:interface={HOST}:privateKey={certificate}")
    try:
        url = f"https://{HOST}:{port.getHost().port}/"
        trusted = Certificate.loadPEM(certificate.read_bytes())
        result = await upgrade(reactor, url, [b"HTTP/2.0"], Factory.forProtocol(Collector),
                               trustRoot=trusted)  # fmt: skip
        result.protocol.transport.write(b"over tls")  # type: ignore[attr-defined]
        assert await result.protocol.waitFor(8) == b"over tls"  # type: ignore[attr-defined]
        result.protocol.transport.loseConnection()  # type: ignore[attr-defined]
        # The platform's CAs do not vouch for a self-signed certificate.
        from OpenSSL.SSL import Error as TLSError

        with pytest.raises(TLSError, match="certificate verify failed"):
            await upgrade(reactor, url, [b"HTTP/2.0"], Factory.forProtocol(Collector))
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_refusalCarriesStatusHeadersAndBody() -> None:
    port = await ourServer(f"tcp:0:interface={HOST}")
    try:
        url = f"http://{HOST}:{port.getHost().port}/"
        with pytest.raises(UpgradeFailed) as failed:
            await upgrade(reactor, url, [b"locked"], Factory.forProtocol(Collector))
        assert failed.value.status == 401
        assert failed.value.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="x"']
        assert failed.value.body == b"who are you?\n"
        with pytest.raises(UpgradeFailed) as ignored:
            await upgrade(reactor, url, [b"unknown/1"], Factory.forProtocol(Collector))
        assert ignored.value.status == 200
        assert ignored.value.body == b"plain page\n"
    finally:
        await port.stopListening()


class Canned(Protocol):
    answer = b""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(self.answer)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: HTTP/2.0\r\n\r\n", "connection option"),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n",
         "not offered"),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.00\r\n\r\n",
         "not offered"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer in HTTP"),
    ],
    ids=["no-connection-option", "other-product", "other-version", "not-http"],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_bad101sAreRefused(answer: bytes, reason: str) -> None:
    factory = Factory.forProtocol(Canned)
    Canned.answer = answer
    port = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(factory)
    try:
        url = f"http://{HOST}:{port.getHost().port}/"
        with pytest.raises(UpgradeFailed, match=reason):
            await upgrade(reactor, url, [b"HTTP/2.0"], Factory.forProtocol(Collector))
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_noAnswerTimesOutWithAClearError() -> None:
    silent = Factory.forProtocol(Protocol)
    port = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(silent)
    try:
        url = f"http://{HOST}:{port.getHost().port}/"
        started = time.monotonic()
        with pytest.raises(UpgradeTimeout, match="no 101"):
            await upgrade(reactor, url, [b"HTTP/2.0"], Factory.forProtocol(Collector), timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_refusedConnectionFailsPlainly() -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    free = sock.getsockname()[1]
    sock.close()
    with pytest.raises(Exception, match=r"refused|Connection"):
        await upgrade(reactor, f"http://{HOST}:{free}/", [b"x"], Factory.forProtocol(Collector))


def test_badArgumentsRaiseAtOnce() -> None:
    with pytest.raises(ValueError):
        upgrade(reactor, "ftp://x/", [b"x"], Factory.forProtocol(Collector))
    with pytest.raises(ValueError):
        upgrade(reactor, "http://x/", [b"IRC/"], Factory.forProtocol(Collector))


def sentBy(**arguments: Any) -> tuple[MemoryReactorClock, bytes]:
    """What ``upgrade`` writes to the connection it makes, over a memory reactor."""
    clock = memoryReactor()
    call = {"url": "http://127.0.0.1:8080/", "protocols": [b"IRC/6.9"], **arguments}
    upgrade(clock, factory=Factory.forProtocol(Collector), **call)
    assert len(clock.tcpClients) == 1
    transport = StringTransport()
    clock.tcpClients[0][2].buildProtocol(None).makeConnection(transport)
    return clock, transport.value()


def test_theRequestIsWhatTheCallerAskedFor() -> None:
    """Fields in order, Connection options merged, Upgrade and Host the client's own."""
    _, sent = sentBy(
        url=b"http://127.0.0.1:8080/chat/room?x=1&y=%0D%0A#fragment",
        protocols=[b"IRC/6.9", b"echo"],
        headers=[
            (b"X-Trace", b"abc def"),
            (b"Connection", b"HTTP2-Settings"),
            (b"HTTP2-Settings", b"AAMAAABkAAQAAP__"),
            (b"Upgrade", b"other"),
            (b"Host", b"elsewhere"),
        ],
        credentials=("user", "pass:word"),
        method=b"OPTIONS",
    )
    assert sent == (
        b"OPTIONS /chat/room?x=1&y=%0D%0A HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"X-Trace: abc def\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
        b"Authorization: Basic dXNlcjpwYXNzOndvcmQ=\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: IRC/6.9, echo\r\n\r\n"
    )


def test_hostsAreWrittenAsTheHostFieldWantsThem() -> None:
    """IPv6 literals in brackets, international names in IDNA (RFC 9110 §7.2)."""
    assert b"\r\nHost: [::1]:81\r\n" in sentBy(url="http://[::1]:81/")[1]
    _, _, _, _, head = clientRequest("http://bücher.example/", [b"x"], None, None, b"GET")
    assert b"\r\nHost: xn--bcher-kva.example\r\n" in head


BAD_ARGUMENTS = [
    # The URL: urlsplit would drop CR, LF and tab unseen.
    ({"url": "http://127.0.0.1/a\r\nX-Injected: 1"}, ValueError, "'\\r'"),
    ({"url": "http://127.0.0.1/a\nb"}, ValueError, "'\\n'"),
    ({"url": "http://127.0.0.1/a\tb"}, ValueError, "'\\t'"),
    ({"url": "http://127.0.0.1/a b"}, ValueError, "' '"),
    ({"url": "http://127.0.0.1/a\x00b"}, ValueError, "'\\x00'"),
    ({"url": "http://127.0.0.1/a\x7fb"}, ValueError, "'\\x7f'"),
    ({"url": "http://127.0.0.1/caf\u00e9"}, ValueError, "'/café'"),
    ({"url": b"http://127.0.0.1/caf\xc3\xa9"}, ValueError, "caf\\xc3"),
    ({"url": 'http://a"b/'}, ValueError, "'a\"b'"),
    ({"url": "http://" + "\u00e4" * 70 + "/"}, ValueError, "not a valid host name"),
    ({"url": "http://127.0.0.1:99999/"}, ValueError, "99999"),
    ({"url": "http://127.0.0.1:0/"}, ValueError, "port 0"),
    # The method.
    ({"method": b"GET / HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET"}, ValueError, "X-Injected"),
    ({"method": b""}, ValueError, "b''"),
    ({"method": "GET"}, TypeError, "'GET'"),
    # Header names (tokens, RFC 9110 §5.1) and values (RFC 9110 §5.5).
    ({"headers": [(b"X-A\r\nX-Injected", b"1")]}, ValueError, "X-Injected"),
    ({"headers": [(b"X A", b"1")]}, ValueError, "b'X A'"),
    ({"headers": [(b"", b"1")]}, ValueError, "b''"),
    ({"headers": [(b"X-A", b"1\r\nX-Injected: 1")]}, ValueError, "b'X-A'"),
    ({"headers": [(b"X-A", b"1\nX-Injected: 1")]}, ValueError, "b'X-A'"),
    ({"headers": [(b"X-A", b"1\x00")]}, ValueError, "b'X-A'"),
    ({"headers": [("X-A", "1")]}, TypeError, "'X-A'"),
    ({"headers": [(b"Connection", b"a b")]}, ValueError, "b'a b'"),
    ({"headers": [(b"Content-Length", b"5")]}, ValueError, "Content-Length"),
    ({"headers": [(b"transfer-encoding", b"chunked")]}, ValueError, "transfer-encoding"),
    # Products: tokens, with an optional /version.
    ({"protocols": [b"IRC/6.9", b"IRC/"]}, ValueError, "b'IRC/'"),
    ({"protocols": [b"a\r\nX-Injected: 1"]}, ValueError, "X-Injected"),
    ({"protocols": [b"IRC/6.9/1"]}, ValueError, "b'IRC/6.9/1'"),
    ({"protocols": []}, ValueError, "one or more"),
    ({"protocols": b"websocket"}, TypeError, "b'websocket'"),
    ({"protocols": ["websocket"]}, TypeError, "'websocket'"),
    # Credentials (RFC 7617 §2) and the time allowed.
    ({"credentials": ("a:b", "c")}, ValueError, "b'a:b'"),
    ({"timeout": 0}, ValueError, "0"),
    ({"timeout": math.nan}, ValueError, "nan"),
    ({"timeout": math.inf}, ValueError, "inf"),
    ({"timeout": "5"}, TypeError, "'5'"),
]


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    BAD_ARGUMENTS,
    ids=[f"{next(iter(a))}-{i}" for i, (a, _, _) in enumerate(BAD_ARGUMENTS)],
)
def test_aBadArgumentRaisesNamingItBeforeAnythingIsSent(
    arguments: dict[str, Any], error: type[Exception], named: str
) -> None:
    """No CR or LF of the caller's can end a field early: the call raises, connects nothing."""
    clock = memoryReactor()
    call = {"url": "http://127.0.0.1:8080/", "protocols": [b"IRC/6.9"], **arguments}
    with pytest.raises(error) as raised:
        upgrade(clock, factory=Factory.forProtocol(Collector), **call)
    assert named in str(raised.value)
    clock.advance(60)
    assert clock.tcpClients == [] and clock.getDelayedCalls() == []


# -- a server nobody here wrote ---------------------------------------------


@pytest.fixture
def nghttpxProgram() -> str:
    # Looked up in a plain fixture: a skip raised inside pytest-twisted's
    # async fixture is reported as an error, not a skip.
    return requirePeer("nghttpx")


@pytest_twisted.async_yield_fixture
async def nghttpx(nghttpxProgram: str) -> AsyncIterator[int]:
    program = nghttpxProgram
    backend = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(
        UpgradableSite(Page(), UpgradeRegistry())
    )
    probe = socket.socket()
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    work = tempfile.mkdtemp(prefix="nghttpx-")
    process = subprocess.Popen(
        [program, "--conf=/dev/null", f"-f{HOST},{port};no-tls",
         f"-b{HOST},{backend.getHost().port}", "--workers=1",
         f"--errorlog-file={work}/error.log", f"--accesslog-file={work}/access.log",
         f"--pid-file={work}/pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                await deferLater(reactor, 0.05, lambda: None)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        await backend.stopListening()


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_h2cUpgradeToNghttpx(nghttpx: int) -> None:
    url = f"http://{HOST}:{nghttpx}/"
    headers = [(b"Connection", b"HTTP2-Settings"), (b"HTTP2-Settings", b"AAMAAABkAAQAAP__")]
    result = await upgrade(reactor, url, [b"h2c"], Factory.forProtocol(Collector), headers)
    assert result.product == b"h2c"
    data = await result.protocol.waitFor(9)  # type: ignore[attr-defined]
    # The first thing after nghttpx's 101 is its SETTINGS frame (type 4, stream 0).
    assert data[3:9] == b"\x04\x00\x00\x00\x00\x00"
    result.protocol.transport.loseConnection()  # type: ignore[attr-defined]


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_nghttpxDecliningIsAnUpgradeFailed(nghttpx: int) -> None:
    # No HTTP2-Settings: nghttpx answers in HTTP/1.1 (our backend's page).
    with pytest.raises(UpgradeFailed) as failed:
        await upgrade(
            reactor, f"http://{HOST}:{nghttpx}/", [b"h2c"], Factory.forProtocol(Collector)
        )
    assert failed.value.status == 200
    assert failed.value.body == b"plain page\n"


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         200, b"hello"),
        (b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", 304, b""),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    ],
    ids=["chunked", "304", "204"],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_refusalsWithoutContentLengthEndWithoutWaitingForTheClose(
    answer: bytes, status: int, body: bytes
) -> None:
    Canned.answer = answer  # the server keeps the connection open
    port = await serverFromString(reactor, f"tcp:0:interface={HOST}").listen(
        Factory.forProtocol(Canned)
    )
    try:
        url = f"http://{HOST}:{port.getHost().port}/"
        with pytest.raises(UpgradeFailed) as failed:
            await upgrade(reactor, url, [b"x"], Factory.forProtocol(Collector), timeout=5)
        assert (failed.value.status, failed.value.body) == (status, body)
    finally:
        await port.stopListening()


def test_timeoutWhileConnectingIsAnUpgradeTimeout() -> None:
    """At the timeout, not before: one UpgradeTimeout, and the connection attempt stopped."""
    clock = memoryReactor()
    d = upgrade(clock, "http://127.0.0.1:9/", [b"x"], Factory.forProtocol(Collector), timeout=5)
    failures: list[Failure] = []
    d.addErrback(failures.append)
    clock.advance(4.9)
    assert failures == []
    clock.advance(1.1)
    [failure] = failures
    assert failure.check(UpgradeTimeout)
    assert [connector.stoppedConnecting for connector in clock.connectors] == [True]
    assert clock.getDelayedCalls() == []
