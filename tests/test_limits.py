"""
The limits of UpgradableSite (and twistd upgradable): concurrent upgraded
connections, the handshake deadline, the size of an upgrade request's body.
"""

from __future__ import annotations

import os
import tempfile
from io import BytesIO

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from upgradable import Accept, UpgradeRegistry, UpgradeRequest
from upgradable._idle import IdleWatch
from upgradable._limits import UpgradeLimits

from .helpers import (
    IRC_REQ,
    RecordingFactory,
    RecordingProtocol,
    ScriptedHandler,
    Server,
    parseResponses,
)


def ircServer(
    idleTimeout: float | None = None, **limits: object
) -> tuple[Server, RecordingFactory]:
    irc = RecordingFactory()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", irc, idleTimeout=idleTimeout)
    return Server(registry=registry, limits=dict(limits)), irc


def codes(server: Server) -> list[int]:
    return [r.code for r in parseResponses(server.output())[0]]


def test_beyondMaxUpgradedIs503WithRetryAfterNeverA101() -> None:
    from twisted.internet.testing import StringTransport

    first, irc = ircServer(maxUpgraded=2)
    site = first.site

    def another() -> tuple[object, StringTransport]:
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    first.send(IRC_REQ)
    second, secondTransport = another()
    second.dataReceived(IRC_REQ)  # type: ignore[attr-defined]
    third, thirdTransport = another()
    third.dataReceived(IRC_REQ + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]
    assert codes(first) == [101]
    assert parseResponses(secondTransport.value())[0][0].code == 101
    responses, _ = parseResponses(thirdTransport.value())
    assert [r.code for r in responses] == [503, 200]
    assert responses[0].header(b"retry-after") == [b"1"]
    # No protocol was connected for the third: only the first two are.
    assert [protocol.made for protocol in irc.built] == [1, 1]
    # One upgraded connection ends: there is room again.
    first.protocol.connectionLost(Failure(ConnectionDone()))
    assert site.limits.upgraded == 1
    thirdTransport.clear()
    third.dataReceived(IRC_REQ)  # type: ignore[attr-defined]
    assert parseResponses(thirdTransport.value())[0][0].code == 101
    assert site.limits.upgraded == 2


def test_slowlorisGets408AfterTheDeadline() -> None:
    """Nothing while the head trickles in within 5 s of its first byte; then 408 and close."""
    server, irc = ircServer(handshakeTimeout=5)
    request = IRC_REQ[:-2]
    for i in range(0, len(request), 5):  # a byte every now and then
        server.send(request[i : i + 5])
        server.clock.advance(0.2)
    server.clock.advance(4.9 - server.clock.seconds())
    assert server.output() == b"" and not server.closed
    server.clock.advance(0.2)
    assert codes(server) == [408]
    assert server.closed
    assert irc.built == []


def test_theDeadlineDoesNotCutAnUpgradedConnection() -> None:
    server, _irc = ircServer(handshakeTimeout=5)
    server.send(IRC_REQ)
    server.clock.advance(60)
    assert codes(server) == [101]
    assert not server.closed
    assert server.clock.getDelayedCalls() == []


def test_theDeadlineAllowsSlowPlainRequestsToBeServedAndKeepAliveToIdle() -> None:
    server, _irc = ircServer(handshakeTimeout=5)
    server.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.clock.advance(30)  # idle between requests: the idle timeout's business
    server.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert codes(server) == [200, 200]


def test_aHandlerThatNeverAnswersIsCancelledAnd503() -> None:
    cancelled: list[Deferred] = []
    never: Deferred = Deferred(cancelled.append)
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(never))
    server = Server(registry=registry, limits={"handshakeTimeout": 5})
    server.send(IRC_REQ)
    server.clock.advance(4.9)
    assert cancelled == [] and server.output() == b"" and not server.closed
    server.clock.advance(0.1)
    assert cancelled == [never]
    assert codes(server) == [503]
    assert server.closed


def test_aHandlerThatAnswersInTimeIsNotCut() -> None:
    later: Deferred = Deferred()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(later))
    server = Server(registry=registry, limits={"handshakeTimeout": 5})
    server.send(IRC_REQ)
    server.clock.advance(4)
    later.callback(Accept(RecordingFactory().buildProtocol(None)))
    server.clock.advance(10)
    assert codes(server) == [101]
    assert not server.closed


def test_upgradeBodyOverTheLimitIs413() -> None:
    server, _irc = ircServer(maxUpgradeBody=10)
    server.send(IRC_REQ[:-2] + b"Content-Length: 11\r\n\r\n")
    assert codes(server) == [413]
    assert server.closed


def test_chunkedUpgradeBodyOverTheLimitIs413() -> None:
    server, irc = ircServer(maxUpgradeBody=10)
    server.send(
        IRC_REQ[:-2] + b"Transfer-Encoding: chunked\r\n\r\n" + b"b\r\nhello world\r\n0\r\n\r\n"
    )
    assert codes(server) == [413]
    assert irc.built == []
    server.protocol.connectionLost(Failure(ConnectionDone()))  # closes the spooled body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_IRC_REQ = IRC_REQ[:-2] + b"Transfer-Encoding: chunked\r\n\r\n"


def test_aChunkedUpgradeBodyIs413TheMomentItPassesTheLimit() -> None:
    """
    The 413 comes with the chunk that takes the decoded body past the
    limit, not once the body is complete (it never is, here).
    """
    server, irc = ircServer(maxUpgradeBody=100)
    server.send(CHUNKED_IRC_REQ)
    for _ in range(3):
        server.send(chunk(b"x" * 30))
    assert server.output() == b"" and not server.closed  # 90 bytes: within the limit
    server.send(chunk(b"x" * 30))
    assert codes(server) == [413]
    assert server.closed
    server.send(chunk(b"x" * 30) + b"0\r\n\r\n")  # what was on its way is ignored
    assert codes(server) == [413]
    assert irc.built == []


def test_chunkedUpgradeBodyExactlyAtTheLimitIsGivenToTheHandler() -> None:
    answers: list[bytes] = []

    def accept(request: UpgradeRequest, product: bytes) -> Accept:
        answers.append(request.body)
        return Accept(RecordingFactory().buildProtocol(None))

    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(accept))
    server = Server(registry=registry, limits={"maxUpgradeBody": 100})
    server.send(CHUNKED_IRC_REQ, chunk(b"a" * 60), chunk(b"b" * 40), b"0\r\n\r\n")
    assert codes(server) == [101]
    assert answers == [b"a" * 60 + b"b" * 40]


def temporaryFiles() -> set[str]:
    """The files this process has open in the temporary directory."""
    directory = tempfile.gettempdir()
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory + "/"):
            found.add(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize(
    "head",
    [CHUNKED_IRC_REQ, IRC_REQ[:-2] + b"Content-Length: 300000\r\n\r\n"],
    ids=["chunked", "content-length"],
)
def test_anUpgradeBodyIsNeverSpooledToATemporaryFile(head: bytes) -> None:
    """
    Twisted spools a chunked body, or one of 100 kB or more, to a temporary
    file; an upgrade request's is kept in memory, within the limit.
    """
    before = temporaryFiles()
    server, _irc = ircServer()
    server.send(head)
    data = b"x" * 100_000
    server.send(chunk(data) if head is CHUNKED_IRC_REQ else data)
    content = server.protocol._http._channel.requests[-1].content
    assert temporaryFiles() == before
    assert isinstance(content, BytesIO)
    assert server.output() == b""


def test_withoutALimitGivenAnUpgradeBodyStopsAtOneMebibyte() -> None:
    assert UpgradeLimits().maxUpgradeBody == 1024 * 1024
    server, _irc = ircServer()
    server.send(CHUNKED_IRC_REQ)
    for _ in range(16):
        server.send(chunk(b"x" * 65536))  # exactly 1 MiB: still read
    assert server.output() == b""
    server.send(chunk(b"x"))
    assert codes(server) == [413]


def test_aDeclinedUpgradeWithABodyIsServedWithItsBody() -> None:
    from upgradable import Decline

    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Decline()))
    server = Server(registry=registry)
    server.send(CHUNKED_IRC_REQ, chunk(b"hello"), chunk(b" world"), b"0\r\n\r\n")
    assert codes(server) == [200]
    assert server.resource.seen == [(b"GET", b"/", b"hello world")]


def test_maxUpgradeBodyZeroAllowsNoBodyAtAll() -> None:
    """``--max-upgrade-body 0``: no body; an empty one is fine."""
    from upgradable.app.tap import Options, makeService

    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--max-upgrade-body", "0"])
    assert next(iter(makeService(options))).factory.limits.maxUpgradeBody == 0
    server, _irc = ircServer(maxUpgradeBody=0)
    server.send(IRC_REQ[:-2] + b"Content-Length: 1\r\n\r\n")
    assert codes(server) == [413]
    server, _irc = ircServer(maxUpgradeBody=0)
    server.send(CHUNKED_IRC_REQ, chunk(b"x"))
    assert codes(server) == [413]
    server, _irc = ircServer(maxUpgradeBody=0)
    server.send(IRC_REQ[:-2] + b"Content-Length: 0\r\n\r\n")
    assert codes(server) == [101]


def test_bodyLimitDoesNotApplyToPlainRequests() -> None:
    server, _irc = ircServer(maxUpgradeBody=10)
    server.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n" + b"x" * 20)
    assert codes(server) == [200]


def test_twistdDefaultsAndZeroMeansNoLimit() -> None:
    from upgradable.app.tap import Options, makeService

    options = Options()
    options.parseOptions(["--listen", "tcp:0"])
    limits = next(iter(makeService(options))).factory.limits
    assert (limits.maxUpgraded, limits.handshakeTimeout, limits.maxUpgradeBody) == (
        10000,
        10.0,
        1048576,
    )
    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--max-upgraded", "0", "--handshake-timeout", "0"])
    limits = next(iter(makeService(options))).factory.limits
    assert limits.maxUpgraded is None and limits.handshakeTimeout is None


def test_perProductIdleTimeoutClosesQuietUpgradedConnections() -> None:
    server, irc = ircServer(idleTimeout=30)
    server.send(IRC_REQ + b"NICK a\r\n")
    server.clock.advance(20)
    server.send(b"PING x\r\n")  # activity resets the clock
    server.clock.advance(20)
    assert not server.closed
    assert irc.last.data == b"NICK a\r\nPING x\r\n"
    server.clock.advance(11)
    assert server.closed
    server.protocol.connectionLost(Failure(ConnectionDone()))
    assert len(irc.last.lost) == 1
    assert server.clock.getDelayedCalls() == []


def test_theIdleTimeoutAsksAGoingAwayProtocolToSayGoodbyeThenAborts() -> None:
    """
    A protocol that provides IGoingAway ends its idle connection itself (a
    WebSocket close, an IRC ERROR); one that never lets go is aborted after
    the grace period.
    """
    from zope.interface import implementer

    from upgradable.interfaces import IGoingAway

    @implementer(IGoingAway)
    class Polite(RecordingProtocol):
        def __init__(self) -> None:
            super().__init__()
            self.asked = 0

        def goingAway(self) -> None:
            self.asked += 1
            self.transport.write(b"goodbye")

    polite = Polite()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(Accept(polite)), idleTimeout=30)
    server = Server(registry=registry)
    server.send(IRC_REQ)
    server.clear()
    server.clock.advance(29.9)
    assert polite.asked == 0
    server.clock.advance(0.1)
    assert polite.asked == 1
    assert server.output() == b"goodbye"
    assert not server.closed  # its goodbye is its own business...
    server.clock.advance(IdleWatch.grace - 0.1)
    assert not server.transport.disconnected
    server.clock.advance(0.1)
    assert server.transport.aborted  # ...for so long
    assert polite.asked == 1


def test_noIdleTimeoutByDefault() -> None:
    server, _irc = ircServer()
    server.send(IRC_REQ)
    server.clock.advance(10**6)
    assert not server.closed


def test_idleTimeoutOptionPerPlugin() -> None:
    import pytest
    from twisted.python import usage

    from upgradable.app.tap import Options, buildRegistry

    options = Options()
    options.parseOptions(["--idle-timeout", "http2-echo=300", "--protocol", "http2-echo"])
    assert buildRegistry(options).idleTimeout((b"http", b"2.0")) == 300
    for bad in ("nope=3", "http2-echo", "http2-echo=-1", "http2-echo=x"):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(["--idle-timeout", bad])


def test_headerLimitsAreConfigurable() -> None:
    small, _ = ircServer(maxHeaderSize=200)
    small.send(IRC_REQ[:-2] + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n")
    assert codes(small) == [431]
    long, _ = ircServer(maxHeaderSize=200)
    long.send(b"GET /" + b"a" * 300)  # no CRLF yet: the request line is too long
    assert codes(long) == [414]
    few, _ = ircServer(maxHeaders=3)
    few.send(IRC_REQ[:-2] + b"A: 1\r\nB: 2\r\n\r\n")
    assert codes(few) == [431]
    enough, _ = ircServer(maxHeaders=3)
    enough.send(IRC_REQ)
    assert codes(enough) == [101]


def test_headerLimitOptions() -> None:
    import pytest
    from twisted.python import usage

    from upgradable.app.tap import Options, makeService

    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--max-header-size", "8192", "--max-headers", "50"])
    limits = next(iter(makeService(options))).factory.limits
    assert (limits.maxHeaderSize, limits.maxHeaders) == (8192, 50)
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-headers", "0"])


def test_aSynchronousRejectStopsTheDeadline() -> None:
    from upgradable import Reject

    for answer in (Reject(403), RuntimeError("boom")):
        registry = UpgradeRegistry()
        registry.register(b"IRC/6.9", ScriptedHandler(answer))
        server = Server(registry=registry, limits={"handshakeTimeout": 5})
        server.send(IRC_REQ)
        server.clock.advance(30)  # idle keep-alive: past the deadline, before idle timeout
        assert len(codes(server)) == 1
        assert not server.closed


def test_afterAnAsyncDeclineTheNextHandlerIsStillHeldToTheDeadline() -> None:
    from upgradable import Decline

    first: Deferred = Deferred()
    never: Deferred = Deferred()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(first))
    registry.register(b"HTTP/2.0", ScriptedHandler(never))
    server = Server(registry=registry, limits={"handshakeTimeout": 5})
    server.send(IRC_REQ.replace(b"Upgrade: IRC/6.9", b"Upgrade: IRC/6.9, HTTP/2.0"))
    server.clock.advance(1)
    first.callback(Decline())
    server.clock.advance(5)
    assert codes(server) == [503]
    assert server.closed


def test_aPlainUploadIsNotHeldToTheHandshakeDeadline() -> None:
    server, _ = ircServer(handshakeTimeout=5)
    server.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    server.clock.advance(8)  # a slow upload
    server.send(b"56789")
    assert codes(server) == [200]


def test_idleWatchToleratesBytesAfterItsClose() -> None:
    """Over TLS bytes can still arrive after the polite close; then it aborts."""
    server, _ = ircServer(idleTimeout=30)
    server.send(IRC_REQ)
    server.clock.advance(31)
    assert server.closed and not server.transport.aborted  # closed politely first
    server.send(b"late\r\n")  # must not raise AlreadyCalled
    server.clock.advance(IdleWatch.grace)
    assert server.transport.aborted


def test_idleWatchSeesReadsTheWayTheTransportDeliversThem() -> None:
    """
    After the switch the transport's reads reach the idle watch, which
    passes them on: the clock restarts with each, and the protocol gets
    every byte, once.
    """
    from twisted.internet.testing import StringTransport

    from upgradable._idle import IdleWatch

    server, irc = ircServer(idleTimeout=30)
    server.send(IRC_REQ)
    protocol = irc.last
    assert isinstance(server.protocol.dataReceived.__self__, IdleWatch)
    for _ in range(5):
        server.clock.advance(20)
        server.send(b"PING x\r\n")
    assert not server.closed
    assert isinstance(server.transport, StringTransport)
    assert protocol.received == [b"PING x\r\n"] * 5
    assert protocol.transport is server.transport  # the protocol writes to it directly


def test_anAcceptThatFindsTheLimitReachedIsNotUsedForALaterRequest() -> None:
    """
    The fast path asks the handler, which accepts, but meanwhile the limit
    was reached: the usual path answers 503, and the next upgrade request on
    the connection is asked anew (the stale Accept is dropped).
    """
    from twisted.internet.testing import StringTransport

    from upgradable.protocols.echo import EchoFactory

    from .helpers import ECHO_REQ, RecordingProtocol

    made: list[RecordingProtocol] = []
    holder: list[Server] = []
    other: list[object] = []

    def answer(request: object, product: bytes) -> Accept:
        made.append(RecordingProtocol())
        if len(made) == 1:
            # Meanwhile another connection takes the last place.
            protocol = holder[0].site.buildProtocol(None)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(ECHO_REQ)
            other.append(protocol)
        return Accept(made[-1])

    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(answer))
    registry.register(b"HTTP/2.0", EchoFactory())
    server = Server(registry=registry, limits={"maxUpgraded": 1})
    holder.append(server)
    server.send(IRC_REQ)
    assert codes(server) == [503]
    other[0].connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    server.send(IRC_REQ + b"NICK a\r\n")
    assert codes(server) == [503, 101]
    assert len(made) == 2
    assert made[0].made == 0 and made[1].data == b"NICK a\r\n"


# -- the HTTP idle timer, kept from one request to the next -------------------

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def assertIdleTimeoutFromNow(server: Server) -> None:
    """The connection stays open for the whole 10 s timeout from now, then closes."""
    server.clock.advance(9.9)
    assert not server.closed
    server.clock.advance(0.2)
    assert server.closed


def test_keepAliveRequestsShareOneIdleTimer() -> None:
    # HTTPChannel cancels its timer for each request and makes a new one
    # after the response; here the one DelayedCall is paused and reset.
    server = Server(timeout=10)
    server.send(GET)
    [timer] = server.clock.getDelayedCalls()
    for _ in range(20):
        server.send(GET)
        server.clock.advance(1)
    assert server.clock.getDelayedCalls() == [timer]
    assert [r.code for r in parseResponses(server.output())[0]] == [200] * 21
    assert not server.closed


def test_aKeptAliveConnectionTimesOutAfterItsLastResponse() -> None:
    server = Server(timeout=10)
    server.send(GET)
    server.clock.advance(5)
    server.send(GET)  # answered at once: the idle time counts from here
    assertIdleTimeoutFromNow(server)


def test_aRequestInProgressIsNotTimedOutHoweverLongItTakes() -> None:
    server = Server(timeout=10)
    server.resource.delay = True
    server.send(GET)
    server.clock.advance(35)  # the paused timer fires meanwhile, and does nothing
    assert not server.closed and server.output() == b""
    server.resource.release()
    assert [r.code for r in parseResponses(server.output())[0]] == [200]
    assertIdleTimeoutFromNow(server)


def test_aRequestThatEndsBeforeThePausedTimerFiresRestartsTheIdleTime() -> None:
    server = Server(timeout=10)
    server.send(GET)
    server.clock.advance(8)
    server.resource.delay = True
    server.send(GET)
    server.clock.advance(5)  # past the first idle deadline, while in progress
    assert not server.closed
    server.resource.release()
    assertIdleTimeoutFromNow(server)


def test_noTimerOutlivesTheConnectionEvenMidRequest() -> None:
    server = Server(timeout=10)
    server.send(GET)
    server.resource.delay = True
    server.send(GET)  # in progress: the timer is paused, not cancelled
    server.protocol.connectionLost(Failure(ConnectionDone()))
    assert server.clock.getDelayedCalls() == []


def test_anUpgradeThroughHTTPLeavesNoIdleTimer() -> None:
    irc = RecordingFactory()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", irc)
    server = Server(registry=registry, timeout=10)
    server.send(GET)  # HTTP first, then the upgrade on the same connection
    server.send(IRC_REQ)
    assert parseResponses(server.output(), heads=[1])[0][1].code == 101
    assert server.clock.getDelayedCalls() == []


@pytest.mark.parametrize("send", ["whole", "bytewise"], ids=["fast path", "HTTP channel"])
def test_withoutADeadlineAnAnswerToComeIsWaitedForWhileTheConnectionLasts(send: str) -> None:
    """
    handshakeTimeout=None, as the docs say, on both paths alike: the site's
    idle timeout does not run while a handler decides, so a handler that
    never answers holds its connection until the client's input ends (then
    HALF_CLOSED_WAIT seconds more) or the connection is lost.
    """
    from upgradable._channel import HALF_CLOSED_WAIT

    from .helpers import TCPLikeTransport

    cancelled: list[Deferred[object]] = []
    never: Deferred[object] = Deferred(cancelled.append)
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", ScriptedHandler(lambda request, product: never))
    server = Server(registry=registry, timeout=60)
    server.protocol.connectionLost(Failure(ConnectionDone()))  # the helper's own
    transport = TCPLikeTransport().connect(server.site.buildProtocol(None))
    if send == "whole":
        transport.deliver(IRC_REQ)
    else:
        transport.deliver(*(IRC_REQ[i : i + 1] for i in range(len(IRC_REQ))))
    server.clock.advance(10**6)  # far past the site's idle timeout of 60 s
    assert transport.value() == b""
    assert not transport.disconnecting and cancelled == []
    transport.endInput()
    server.clock.advance(HALF_CLOSED_WAIT - 0.1)
    assert not transport.aborted
    server.clock.advance(0.1)
    assert transport.aborted and transport.value() == b""
    transport.lose()
    assert cancelled == [never]
