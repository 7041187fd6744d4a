"""
A site's connection before its first bytes: what it costs and what it still
does (the idle timeout, the count for a drain, TLS's h2), and how it hands
its bytes over, on the fast path and to HTTP.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import _GenericHTTPChannelProtocol

from upgradable import UpgradableHTTPChannel
from upgradable._site import _NewConnection

from .helpers import IRC_REQ, RecordingTransport, parseResponses, standardServer

DONE = Failure(ConnectionDone())
GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


def test_aNewConnectionHasNoHTTPMachineryYet() -> None:
    server, _ = standardServer()
    assert isinstance(server.protocol, _NewConnection)
    assert server.protocol._http is None
    assert len(server.site.connections) == 1
    # One timer, the site's check for connections that send nothing.
    [timer] = server.clock.getDelayedCalls()
    assert timer.getTime() == server.site.timeOut / 4


def test_aConnectionThatSendsNothingTimesOutLikeHTTPChannel(logged) -> None:
    server, _ = standardServer()
    timeOut = server.site.timeOut
    aborted: list[bool] = []
    server.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    server.clock.advance(timeOut - 0.1)
    assert not server.closed
    server.clock.advance(timeOut / 4)  # checked every quarter of the timeout
    assert server.closed
    assert any("Timing out client" in str(e.get("log_format")) for e in logged.events)
    server.send(IRC_REQ)  # too late: ignored
    assert server.output() == b""
    # It does not close (TLS waiting for close_notify): aborted 15 s later.
    server.clock.advance(15)
    assert aborted == [True]
    server.protocol.connectionLost(DONE)
    assert server.clock.getDelayedCalls() == []
    assert len(server.site.connections) == 0


def test_oneTimerServesEveryWaitingConnectionAndStopsWithTheLast() -> None:
    server, _ = standardServer()
    timeOut = server.site.timeOut
    later = server.site.buildProtocol(None)
    server.clock.advance(timeOut / 2)
    later.makeConnection(StringTransport())
    assert len(server.clock.getDelayedCalls()) == 1
    server.clock.advance(timeOut * 3 / 4)  # the first one's time is up, not the later one's
    assert server.closed
    assert not later.transport.disconnecting
    later.dataReceived(b"GET / HTTP/1.1\r\n")  # no longer waiting for its first bytes
    server.protocol.connectionLost(DONE)
    assert [call.func.__self__ for call in server.clock.getDelayedCalls()] == [  # type: ignore[attr-defined]
        later._http._channel
    ]


def test_theFastPathLeavesNoTimerAndNoHTTP() -> None:
    server, irc = standardServer()
    server.send(IRC_REQ + b"NICK a\r\n")
    # One write, the 101 head alone: nothing of HTTP's before or after it.
    assert server.writes == [
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n"
    ]
    assert server.protocol._http is None
    assert server.clock.getDelayedCalls() == []
    assert irc.last.data == b"NICK a\r\n"
    assert list(server.site.connections.upgraded) == [irc.last]
    assert server.site.connections.http == {}


def test_anythingElseGetsTheHTTPStackWithTheSameBytes() -> None:
    server, _ = standardServer()
    server.send(GET[:10])
    http = server.protocol._http
    assert isinstance(http, _GenericHTTPChannelProtocol)
    assert isinstance(http._channel, UpgradableHTTPChannel)
    # The connection is counted once, now as HTTP's.
    assert list(server.site.connections.http) == [http._channel]
    server.send(GET[10:])
    [response], rest = parseResponses(server.output())
    assert response.code == 200 and rest == b""
    # HTTP parsed the very bytes sent: the first read's as well as the second's.
    assert server.resource.seen == [(b"GET", b"/x", b"")]
    # HTTP's own idle timer runs now; the new connection's is gone.
    [timer] = server.clock.getDelayedCalls()
    assert timer.func.__self__ is http._channel  # type: ignore[attr-defined]
    server.protocol.connectionLost(DONE)
    assert len(server.site.connections) == 0


def test_aDrainClosesAConnectionThatSentNothing() -> None:
    server, _ = standardServer()
    drained = server.site.drain(10)
    assert server.closed
    server.protocol.connectionLost(DONE)
    result: list[object] = []
    drained.addBoth(result.append)
    assert result == [None]


def test_aConnectionAcceptedDuringADrainIsAnsweredAndClosed() -> None:
    server, _ = standardServer()
    server.protocol.connectionLost(DONE)
    server.site.drain(10)
    protocol = server.site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(GET)
    [response], _ = parseResponses(transport.value())
    assert response.code == 200
    assert response.header(b"connection") == [b"close"]
    assert transport.disconnecting


def test_tlsWithALPNh2GoesToTwistedsHTTP2() -> None:
    class H2Transport(StringTransport):
        negotiatedProtocol = b"h2"

    server, _ = standardServer()
    protocol = server.site.buildProtocol(None)
    transport = H2Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert type(protocol._http._channel).__name__ == "H2Connection"


def test_switchingTimeoutsOffLetsWaitingConnectionsBe() -> None:
    server, _ = standardServer()
    server.site.timeOut = None
    server.clock.advance(10**6)
    assert not server.closed
    assert server.clock.getDelayedCalls() == []
    server.send(GET)  # and it is served when it speaks
    assert parseResponses(server.output())[0][0].code == 200


def test_bytesArrivingAfterADrainClosedItAreIgnored() -> None:
    # Over TLS the close waits for the peer's close_notify, and bytes may
    # still come: they must not start an upgrade on a closing connection.
    server, irc = standardServer()
    server.site.drain(10)
    assert server.closed
    server.send(IRC_REQ)
    assert server.output() == b""
    assert not irc.built
    assert server.site.connections.upgraded.items() == []


# -- the fast path carries out every answer on its own parse of the request --


def parsedByHTTP(monkeypatch) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The request lines HTTP's parser reads from now on (by its own parse)."""
    seen: list[bytes] = []
    original = UpgradableHTTPChannel.allHeadersReceived

    def allHeadersReceived(self: UpgradableHTTPChannel) -> None:
        seen.append(self._command + b" " + self._path)
        original(self)

    monkeypatch.setattr(UpgradableHTTPChannel, "allHeadersReceived", allHeadersReceived)
    return seen


def scripted(*answers: object, **options: object):  # type: ignore[no-untyped-def]
    from upgradable import UpgradeRegistry

    from .helpers import ScriptedHandler, Server

    registry = UpgradeRegistry()
    handlers = [ScriptedHandler(answer) for answer in answers]
    for product, handler in zip([b"IRC/6.9", b"HTTP/2.0"], handlers, strict=False):
        registry.register(product, handler)
    return Server(registry=registry, **options), handlers  # type: ignore[arg-type]


BOTH = IRC_REQ.replace(b"Upgrade: IRC/6.9", b"Upgrade: IRC/6.9, HTTP/2.0")


def test_aRejectOnTheFastPathIsAnsweredThereAndHTTPParsesOnlyWhatFollows(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    from upgradable import Reject

    seen = parsedByHTTP(monkeypatch)
    server, [handler] = scripted(Reject(403, [(b"www-authenticate", b"x")], b"no\n"))
    server.send(IRC_REQ + GET)
    [rejected, served], rest = parseResponses(server.output())
    assert (rejected.code, served.code, rest) == (403, 200, b"")
    assert dict(rejected.headers)[b"WWW-Authenticate"] == b"x"
    assert len(handler.requests) == 1
    assert seen == [b"GET /x"]  # the upgrade request never reached HTTP's parser


def test_whenEveryHandlerDeclinesHTTPServesTheRequestWithoutAskingAgain(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    from upgradable import Decline

    seen = parsedByHTTP(monkeypatch)
    server, handlers = scripted(Decline(), Decline())
    server.send(BOTH)
    [response], _ = parseResponses(server.output())
    assert response.code == 200
    assert [len(h.requests) for h in handlers] == [1, 1]  # each asked once, here
    assert seen == [b"GET /"]  # served by HTTP, as a plain request


def test_aDeferredAnswerOnTheFastPathKeepsTheBytesThatArriveMeanwhileForTheProtocol() -> None:
    from upgradable import Accept

    from .helpers import RecordingProtocol, deferred

    later = deferred()
    server, _ = scripted(later)
    server.send(IRC_REQ + b"one ")
    server.send(b"two ", b"three")
    assert server.output() == b""
    assert server.protocol._http is None  # still deciding, without HTTP
    protocol = RecordingProtocol()
    later.callback(Accept(protocol))
    assert server.output().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert protocol.received == [b"one two three"]
    server.send(b" four")
    assert protocol.received == [b"one two three", b" four"]


def test_aFastPathAnswerThatTakesTooLongIs503AndCloses() -> None:
    from .helpers import deferred

    later = deferred()
    server, _ = scripted(later, limits={"handshakeTimeout": 5})
    server.send(IRC_REQ)
    server.clock.advance(5)
    [response], _ = parseResponses(server.output())
    assert (response.code, dict(response.headers)[b"Retry-After"]) == (503, b"5")
    assert server.closed
    assert later.called  # cancelled


def test_aDrainWhileTheFastPathDecidesGetsTheAnswerThenCloses() -> None:
    from upgradable import Reject

    from .helpers import deferred

    later = deferred()
    server, _ = scripted(later)
    server.send(IRC_REQ)
    drained = server.site.drain(10)
    assert not server.closed
    later.callback(Reject(403))
    [response], _ = parseResponses(server.output())
    assert (response.code, dict(response.headers)[b"Connection"]) == (403, b"close")
    assert server.closed
    server.protocol.connectionLost(DONE)
    assert drained.called


def test_theFastPathAndHTTPAnswerAnUpgradeRequestWithTheSameBytes() -> None:
    """Sent whole (the fast path answers) and byte by byte (HTTP answers)."""
    from upgradable import Reject

    answers = [
        Reject(403),
        Reject(401, [(b"www-authenticate", b"Basic"), (b"X-A", b"1"), (b"x-a", b"2")], b"no"),
        Reject(429, [(b"Content-Type", b"application/json")], b"{}", close=True),
        # The handler's own Connection values stay, beside the close a
        # request asked for.
        Reject(403, [(b"Connection", b"upgrade")], b"x"),
        Reject(403, [(b"connection", b"keep-alive"), (b"X-A", b"1")], close=True),
        Reject(451, reason=b"Unavailable For Legal Reasons"),
        ValueError("boom"),
    ]
    requests = [
        IRC_REQ,
        IRC_REQ.replace(b"GET", b"HEAD"),
        IRC_REQ.replace(b"Connection: Upgrade", b"Connection: Upgrade, close"),
    ]
    for answer in answers:
        for request in requests:
            for advertise in (False, True):
                outputs = []
                for send in ("whole", "bytewise"):
                    server, _ = scripted(answer, advertise=advertise)
                    if send == "whole":
                        server.send(request + GET)
                    else:
                        server.sendBytewise(request + GET)
                    # Twisted's Date field reads the wall clock.
                    output = re.sub(rb"\r\nDate: [^\r]*", b"", server.output())
                    outputs.append((output, server.closed))
                assert outputs[0] == outputs[1], (answer, request, advertise)


def test_anAnswerTheFastPathWritesIsLoggedButNotAsAnUpgrade(logged) -> None:  # type: ignore[no-untyped-def]
    from upgradable import Reject

    server, _ = scripted(Reject(405))
    records: list[object] = []
    original = type(server.site).log

    def log(request: object) -> None:
        records.append(request)
        original(server.site, request)

    server.site.log = log  # type: ignore[method-assign]
    server.send(IRC_REQ)
    [record] = records
    assert (record.code, record.method, record.uri) == (405, b"GET", b"/")  # type: ignore[attr-defined]
    assert not [e for e in logged.events if "Upgraded" in str(e.get("log_format"))]


# -- reading again once the answer is here --


def test_aPauseOfTheNewOwnerIsNotUndoneWhenTheAnswerComes() -> None:
    """
    The connection stopped reading while its answer was to come; once it
    is here, reading resumes before HTTP gets what was held, so HTTP's own
    pause (more than it keeps waiting behind a request in progress) holds.
    """
    from upgradable import Reject

    from .helpers import deferred

    later = deferred()
    server, _ = scripted(later)
    server.resource.delay = True  # HTTP holds what follows its first request
    server.send(IRC_REQ)
    server.send(GET * 1000)  # more than the 16 KiB kept while deciding
    assert server.transport.producerState == "paused"
    later.callback(Reject(403))
    assert server.protocol._http is not None
    assert server.resource.seen == [(b"GET", b"/x", b"")]  # in progress
    assert server.transport.producerState == "paused"  # HTTP's pause, not undone
    server.resource.release()
    assert len(server.resource.seen) > 1


class DeliversWhenResumed(RecordingTransport):
    """
    A transport that delivers what it read meanwhile as soon as it is
    resumed, in the same call (nothing in Twisted does, nothing forbids it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.readMeanwhile: list[bytes] = []

    def resumeProducing(self) -> None:
        super().resumeProducing()
        while self.readMeanwhile:
            self.protocol.dataReceived(self.readMeanwhile.pop(0))


@pytest.mark.parametrize("answer", ["accept", "reject", "decline"])
def test_bytesATransportDeliversAsItResumesReachTheNewOwnerInOrder(answer: str) -> None:
    from upgradable import Accept, Decline, Reject

    from .helpers import RecordingProtocol, deferred

    later = deferred()
    server, _ = scripted(later)
    server.protocol.connectionLost(DONE)  # the helper's connection: not this test's
    transport = DeliversWhenResumed()
    transport.protocol = protocol = server.site.buildProtocol(None)
    protocol.makeConnection(transport)
    held = [b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n"] * 700  # over what is kept: paused
    protocol.dataReceived(IRC_REQ)
    protocol.dataReceived(b"".join(held))
    assert transport.producerState == "paused"
    meanwhile = [b"GET /then HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n"]
    transport.readMeanwhile = list(meanwhile)
    upgraded = RecordingProtocol()
    later.callback(
        {"accept": Accept(upgraded), "reject": Reject(403), "decline": Decline()}[answer]
    )
    assert transport.producerState == "producing"
    if answer == "accept":
        assert transport.value().startswith(b"HTTP/1.1 101 ")
        assert upgraded.data == b"".join(held + meanwhile)  # each byte once, in order
        assert protocol._http is None  # no HTTP stack was built on the way
        transport.protocol.dataReceived(b"!")
        assert upgraded.data.endswith(b"/more HTTP/1.1\r\nHost: x\r\n\r\n!")
    else:
        first = [b"/"] if answer == "decline" else []  # served as a plain request
        paths = [uri for _, uri, _ in server.resource.seen]
        assert paths == first + [b"/held"] * 700 + [b"/then", b"/more"]
        responses, rest = parseResponses(bytes(transport.value()))
        assert rest == b""
        assert [r.code for r in responses] == [403 if answer == "reject" else 200] + [200] * 702
