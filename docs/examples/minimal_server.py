"""
Serve a page over HTTP and upgrade ``HTTP/2.0`` requests to an echo.

Run: python docs/examples/minimal_server.py tcp:8080
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.web.resource import Resource

from upgradable import UpgradableSite, UpgradeRegistry
from upgradable.protocols.echo import EchoFactory


class Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"Upgrade me: Connection: Upgrade, Upgrade: HTTP/2.0\n"


registry = UpgradeRegistry()
registry.register(b"HTTP/2.0", EchoFactory())  # any IProtocolFactory will do
site = UpgradableSite(Page(), registry)
endpoint = endpoints.serverFromString(reactor, sys.argv[1] if len(sys.argv) > 1 else "tcp:8080")
endpoint.listen(site).addCallback(lambda port: print("listening on", port.getHost(), flush=True))
reactor.run()
