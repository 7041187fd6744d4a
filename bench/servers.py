"""
The servers the benchmark compares, one per process:

    python bench/servers.py KIND PORT

prints ``ready`` once it listens on 127.0.0.1:PORT. Kinds:

raw          Twisted TCP echo: the limit for any Twisted server.
upgradable   UpgradableSite: ``bench/1`` upgrades to the same echo,
             ``websocket`` to our WebSocket echo, ``h2c`` to HTTP/2; GET
             serves a small page.
site         stock twisted.web Site with the same page (GET baseline).
h2tls        stock Site over TLS: HTTP/2 by ALPN (Twisted's own h2).
autobahn     Autobahn's Twisted WebSocket echo.
twistedws    twisted.web.websocket's WebSocketResource echo.
websockets   the websockets library's asyncio echo server.

bench/run.py also starts two servers with twistd, which it waits for by
polling the port: ``twistd upgradable`` with its defaults, and ``twistd web
--class servers.page``, which serves :func:`page` (this module is then
imported, not run) with the access log of a stock Site.
"""

from __future__ import annotations

import sys
from typing import Any


class Page:
    body = b"hello from the benchmark\n"


def page() -> Any:
    from twisted.web.resource import Resource

    class Leaf(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"Content-Type", b"text/plain")
            return Page.body

    return Leaf()


def echoFactory() -> Any:
    from twisted.internet.protocol import Factory, Protocol

    class Echo(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    return Factory.forProtocol(Echo)


def quiet(site: Any) -> Any:
    """
    No access log in any server: the peers (raw echo, Node, Autobahn) keep
    none. (Setting ``logFile`` is not enough: ``startFactory`` points it at
    the global log again when the port opens; with no ``log`` at all, no
    line is even formatted.)
    """
    site.log = lambda request: None
    return site


def logWarnings() -> None:
    """
    Begin logging as a server whose operator keeps no info log: warnings
    and errors go to stderr, the rest is dropped. (Without this, Twisted
    keeps every event of the process in memory until logging begins.)
    """
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def listen(factory: Any, port: int, tls: str | None = None) -> None:
    from twisted.internet import reactor

    logWarnings()
    from twisted.internet.endpoints import serverFromString

    description = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
    if tls:
        description = f"ssl:{port}:interface=127.0.0.1:backlog=1024:privateKey={tls}"
    endpoint = serverFromString(reactor, description)
    endpoint.listen(factory).addCallback(lambda _: print("ready", flush=True))
    reactor.run()


def main(kind: str, port: int, extra: list[str]) -> None:
    if kind == "raw":
        listen(echoFactory(), port)
    elif kind == "upgradable":
        from upgradable import UpgradableSite, UpgradeRegistry
        from upgradable.protocols.h2c import H2CHandler
        from upgradable.protocols.websocket import WebSocketHandler, WebSocketProtocol

        class WsEcho(WebSocketProtocol):
            def messageReceived(self, message: str | bytes) -> None:
                self.sendMessage(message)

        registry = UpgradeRegistry()
        registry.register(b"bench/1", echoFactory())
        registry.register(b"websocket", WebSocketHandler(default=WsEcho, compression=False))
        registry.register(b"h2c", H2CHandler())
        listen(quiet(UpgradableSite(page(), registry)), port)
    elif kind == "site":
        from twisted.web.server import Site

        listen(quiet(Site(page())), port)
    elif kind == "h2tls":
        from twisted.web.server import Site

        listen(quiet(Site(page())), port, tls=extra[0])
    elif kind == "autobahn":
        from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

        class AutobahnEcho(WebSocketServerProtocol):
            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                self.sendMessage(payload, isBinary)

        factory = WebSocketServerFactory(f"ws://127.0.0.1:{port}")
        factory.protocol = AutobahnEcho
        factory.setProtocolOptions(perMessageCompressionAccept=lambda offers: None)
        listen(factory, port)
    elif kind == "twistedws":
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.websocket import WebSocketResource

        class TwistedEcho:
            def negotiationStarted(self, transport: Any) -> None:
                self.transport = transport

            def negotiationFinished(self) -> None:
                pass

            def textMessageReceived(self, message: str) -> None:
                self.transport.sendTextMessage(message)

            def bytesMessageReceived(self, data: bytes) -> None:
                self.transport.sendBytesMessage(data)

            def pongReceived(self, payload: bytes) -> None:
                pass

            def connectionLost(self, reason: Any) -> None:
                pass

        class Factory:
            def buildProtocol(self, request: Any) -> TwistedEcho:
                return TwistedEcho()

        class Root(Resource):
            def getChild(self, path: bytes, request: Any) -> Any:
                return WebSocketResource(Factory())  # type: ignore[arg-type]

        listen(quiet(Site(Root())), port)
    elif kind == "websockets":
        import asyncio

        from websockets.asyncio.server import serve
        from websockets.exceptions import ConnectionClosed

        async def echo(ws: Any) -> None:
            try:
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass  # the load generator does not close politely

        async def run() -> None:
            async with serve(echo, "127.0.0.1", port, compression=None, backlog=1024):
                print("ready", flush=True)
                await asyncio.get_running_loop().create_future()

        asyncio.run(run())
    else:
        raise SystemExit(f"unknown server kind {kind}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
