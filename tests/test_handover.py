"""
The guards of Twisted's private names (upgradable/_handover.py lists them):
each test fails, naming what changed, when a Twisted release renames or
changes one, instead of a feature quietly turning off. .ci/matrix runs them
on the oldest and newest Twisted supported.

And the rule that keeps them in one place: no other module of the package
imports a private name of Twisted's or reaches for one on a Twisted object.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor as _reactor
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers, InvalidHeaderName
from twisted.web.resource import Resource
from twisted.web.server import Site

from upgradable import _handover

reactor: Any = _reactor
PACKAGE = Path(_handover.__file__).parent


# -- used through _handover -------------------------------------------------


def test_aSitesProtocolIsTwistedsHTTPWrapperAroundAChannel() -> None:
    wrapper = Site(Resource()).buildProtocol(None)
    assert isinstance(wrapper, _handover.GenericHTTPChannelProtocol)
    assert isinstance(_handover.channelOf(wrapper), HTTPChannel)


def test_parseRequestLineSplitsAsHTTPChannelDoes() -> None:
    assert _handover.parseRequestLine(b"GET /a?b HTTP/1.1") == (b"GET", b"/a?b", b"HTTP/1.1")
    with pytest.raises(ValueError):
        _handover.parseRequestLine(b"GET /a  HTTP/1.1")


def test_fieldsOfIsTheHeadersOwnDictByCanonicalName() -> None:
    headers = Headers({b"content-length": [b"1"]})
    fields = _handover.fieldsOf(headers)
    assert fields == {b"Content-Length": [b"1"]}
    headers.addRawHeader(b"x-a", b"2")
    assert fields[b"X-A"] == [b"2"]  # not a copy
    assert "_rawHeaders" in Headers.__slots__
    assert _handover.RAW_HEADERS_SLOT.__get__(headers, Headers) is fields


def test_canonicalNamesAreAsHeadersKeepsThem() -> None:
    assert _handover.canonicalName(b"sec-websocket-key") == b"Sec-Websocket-Key"
    assert _handover.CANONICAL_NAMES[b"sec-websocket-key"] == b"Sec-Websocket-Key"
    assert Headers({b"sec-websocket-key": [b"k"]}).getRawHeaders(b"Sec-Websocket-Key") == [b"k"]
    with pytest.raises(InvalidHeaderName):
        _handover.canonicalName(b"a b")


def test_h2ConnectionHasWhatH2cStartsAndEndsStreamOneWith() -> None:
    from twisted.web._http2 import H2Stream

    connection = _handover.H2Connection
    assert callable(connection._tryToWriteControlData)
    assert callable(connection._requestReceived)
    assert "_cancelTimeouts" in inspect.signature(connection.connectionLost).parameters
    assert "self._request = " in inspect.getsource(H2Stream.__init__)
    assert callable(H2Stream.requestComplete)
    # Behaviour: tests/test_h2c.py serves stream 1 with a body and closes
    # after a bad preface, through these.


def test_aPROXYProtocolTransportIsTheWrapperThatHaproxyEndpointsGive() -> None:
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    memory = MemoryReactor()
    serverFromString(memory, "haproxy:tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(Protocol)
    )
    wrapping = memory.tcpServers[0][1]
    transport = wrapping.buildProtocol(None)
    assert type(transport) is _handover.HAProxyProtocolWrapper
    assert _handover.throughProxyProtocol(transport)


@pytest_twisted.ensureDeferred
async def test_aTCPServerConnectionShowsItsQueueSocketAndPeer() -> None:
    """What writeNow, LocalAddresses and the site's new connection read."""
    accepted: Deferred[Any] = Deferred()

    class Accepted(Protocol):
        def connectionMade(self) -> None:
            accepted.callback(self.transport)

    port = reactor.listenTCP(0, Factory.forProtocol(Accepted), interface="127.0.0.1")
    client = ClientFactory.forProtocol(Protocol)
    connector = reactor.connectTCP("127.0.0.1", port.getHost().port, client)
    try:
        transport = await accepted
        assert type(transport) is tcp.Server
        assert transport._tempDataBuffer == []
        assert transport.offset == len(transport.dataBuffer) == 0
        assert transport.TLS is False
        assert _handover.listeningSocketOf(transport) is port.socket
        peer = transport.getPeer()
        assert _handover.peerTupleOf(transport) == (peer.host, peer.port)
        _handover.writeNow(transport, b"x")  # writeSomeData: sent at once
        assert transport.offset == len(transport.dataBuffer) and not transport._tempDataBuffer
    finally:
        connector.disconnect()
        await port.stopListening()
    assert _handover.listeningSocketOf(transport) is None  # deleted once not listening


def test_aListeningPortCanBeKeptFromShuttingItsSocketDown() -> None:
    assert tcp.Port._shouldShutdown is True  # the class default, which workers turn off
    port = tcp.Port(0, Factory())
    _handover.keepSharedSocketOpen(port)
    assert port._shouldShutdown is False
    parameters = inspect.signature(unix.Port._fromListeningDescriptor).parameters
    assert list(parameters) == ["reactor", "fd", "factory"]


def test_aStreamServerServiceHasItsListenDeferredAndCanRaise() -> None:
    from twisted.internet.testing import MemoryReactor

    service = StreamServerEndpointService(TCP4ServerEndpoint(MemoryReactor(), 0), Factory())
    assert service._raiseSynchronously is False
    _handover.raiseWhenListeningFails(service)
    assert service._raiseSynchronously is True
    service.privilegedStartService()
    assert isinstance(_handover.listeningDeferred(service), Deferred)


# -- used by our subclasses, on their own inherited state --------------------


def test_httpChannelKeepsTheStateTheChannelSubclassReads() -> None:
    """UpgradableHTTPChannel reads these of HTTPChannel's (and LineReceiver's)."""
    channel = HTTPChannel()
    channel.makeConnection(StringTransport())
    for name in ("_dataBuffer", "_handlingRequest", "_receivedHeaderSize",
                 "_receivedHeaderCount", "_networkProducer", "_savedTimeOut",
                 "_buffer"):  # fmt: skip
        assert hasattr(channel, name), name
    assert callable(channel._respondToBadRequestAndDisconnect)
    assert not hasattr(channel, "_command")  # no request line yet
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a")
    assert (channel._command, channel._path, channel._version) == (b"GET", b"/x", b"HTTP/1.1")
    assert channel._buffer == b"Host: a"  # the line not yet complete
    assert channel._receivedHeaderCount == 0 and channel._receivedHeaderSize > 0


def test_ircUserHasTheLoginHooksTheIRCSampleOverrides() -> None:
    from twisted.words.service import IRCFactory, IRCUser

    assert callable(IRCUser._cbLogin) and callable(IRCUser._ebLogin)
    assert list(inspect.signature(IRCUser._ebLogin).parameters) == ["self", "err", "nickname"]
    assert all(len(message) == 2 for message in IRCUser._motdMessages)
    assert "self._serverInfo = " in inspect.getsource(IRCFactory.__init__)


# -- nothing else reaches for them --------------------------------------------

# The private names of Twisted's that only _handover may use on Twisted's
# objects (or import), and the subclasses that may use their own state.
_ONLY_IN_HANDOVER = {
    "_GenericHTTPChannelProtocol", "_parseRequestLine", "_nameEncoder", "_canonicalHeaderCache",
    "_http2", "_wrapper", "_tempDataBuffer", "_shouldShutdown", "_fromListeningDescriptor",
    "_bindPath", "_waitingForPort", "_raiseSynchronously", "_tryToWriteControlData",
    "_requestReceived", "_terminate", "_channel", "_rawHeaders",
}  # fmt: skip
# _PackedHeaders is a Headers: it overrides its own _rawHeaders.
_OWN_STATE = {"_decisions.py": {"_rawHeaders"}}


def _privateUses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
            parts = [*(node.module or "").split("."), *(alias.name for alias in node.names)]
            found += [
                f"import {part}" for part in parts if part.startswith("_") and part != "__future__"
            ]
        elif isinstance(node, ast.Attribute) and node.attr in _ONLY_IN_HANDOVER:
            if node.attr not in _OWN_STATE.get(path.name, ()):
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_onlyTheHandoverModuleUsesTwistedsPrivateNames() -> None:
    uses = {
        str(path.relative_to(PACKAGE)): _privateUses(path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_handover.py"
    }
    assert {name: found for name, found in uses.items() if found} == {}
