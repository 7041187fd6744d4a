"""
Faults: a client that leaves at every byte of a handshake, ten thousand
upgrades that must leave nothing behind, and SIGTERM with a thousand
upgraded connections open.
"""

from __future__ import annotations

import gc
import resource
import signal
import socket
import time

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from upgradable import UpgradableHTTPChannel
from upgradable.protocols.echo import EchoProtocol

from .helpers import IRC_REQ, standardServer

HANDSHAKE = (
    b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n"
    b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
)


@pytest.mark.parametrize("offset", range(len(HANDSHAKE)))
def test_clientLeavingAtEveryByteLeavesNothingBehind(offset: int, logged) -> None:
    server, irc = standardServer(limits={"handshakeTimeout": 5})
    server.send(HANDSHAKE[:offset])
    server.protocol.connectionLost(Failure(ConnectionDone()))
    assert irc.built == []
    assert server.clock.getDelayedCalls() == []
    assert logged.failures(BaseException) == []
    assert b" 101 " not in server.output()
    assert len(server.site.connections) == 0 and server.site.limits.upgraded == 0


def test_tenThousandUpgradesLeaveNoChannelRequestOrTimerAlive() -> None:
    from twisted.web.http import Request

    from upgradable._site import _NewConnection

    def alive(kind: type) -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, kind))

    gc.collect()
    kinds = (UpgradableHTTPChannel, _NewConnection, Request, EchoProtocol)
    before = tuple(alive(kind) for kind in kinds)
    server, _ = standardServer(limits={"handshakeTimeout": 5, "maxUpgraded": 100})
    site, clock = server.site, server.clock
    server.protocol.connectionLost(Failure(ConnectionDone()))  # the helper's own connection
    del server
    from twisted.internet.testing import StringTransport

    for _ in range(10_000):
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(IRC_REQ.replace(b"IRC/6.9", b"HTTP/2.0") + b"hello")
        protocol.connectionLost(Failure(ConnectionDone()))
    del protocol, transport
    gc.collect()
    after = tuple(alive(kind) for kind in kinds)
    assert all(a <= b for a, b in zip(after, before, strict=True)), (before, after)
    assert clock.getDelayedCalls() == []
    assert site.limits.upgraded == 0
    assert len(site.connections) == 0


def test_sigtermWithAThousandUpgradedConnections() -> None:
    from .test_twistd import HOST, twistd

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    sockets = []
    with twistd("--protocol", "http2-echo", "--grace-period", "1") as server:
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\n"
        for _ in range(1000):
            sock = socket.create_connection((HOST, server.port), timeout=10)
            sock.sendall(request + b"ping")
            sockets.append(sock)
        for sock in sockets:
            data = b""
            while not data.endswith(b"ping"):
                data += sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 101 ")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(20)
        elapsed = time.monotonic() - started
        closed = 0
        for sock in sockets:
            sock.settimeout(5)
            if sock.recv(10) == b"":
                closed += 1
            sock.close()
    assert code == -signal.SIGTERM
    assert 1 <= elapsed < 6, elapsed  # the grace period, then every close
    assert closed == 1000
    assert "Traceback" not in server.log()
    assert "Server Shut Down." in server.log()
