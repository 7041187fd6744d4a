"""
Serve a page over HTTP, and WebSocket on ``/shout``: each message comes back
in capitals.

Run: python docs/examples/websocket_shout.py tcp:8080
Then talk to it: python -m websockets ws://127.0.0.1:8080/shout
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.web.resource import Resource

from upgradable import UpgradableSite, UpgradeRegistry
from upgradable.protocols.websocket import WebSocketHandler, WebSocketProtocol


class Shout(WebSocketProtocol):
    def connectionOpened(self):
        self.sendMessage("hello " + self.request.path.decode())

    def messageReceived(self, message):  # str for text, bytes for binary
        self.sendMessage(message.upper())

    def connectionClosed(self, code, reason):
        print("closed", code, reason, flush=True)


class Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"WebSocket on /shout\n"


registry = UpgradeRegistry()
registry.register(
    b"websocket",
    WebSocketHandler(
        {b"/shout": Shout},
        allowedOrigins=["https://example.com"],  # browsers on other sites get 403
        subprotocols=["shout.v1"],
        maxMessageSize=64 * 1024,
    ),
)
site = UpgradableSite(Page(), registry)
endpoint = endpoints.serverFromString(reactor, sys.argv[1] if len(sys.argv) > 1 else "tcp:8080")
endpoint.listen(site).addCallback(lambda port: print("listening on", port.getHost(), flush=True))
reactor.run()
