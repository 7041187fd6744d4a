"""
A handler that looks at the request before it accepts: only clients that send
``X-Token: letmein`` may switch to the echo; the check is asynchronous, as a
database or credentials lookup would be.

Run: python docs/examples/handler.py tcp:8080
"""

import sys

from twisted.internet import endpoints, reactor, task
from twisted.web.resource import Resource
from zope.interface import implementer

from upgradable import Accept, Reject, UpgradableSite, UpgradeRegistry
from upgradable.interfaces import IUpgradeHandler
from upgradable.protocols.echo import EchoProtocol


@implementer(IUpgradeHandler)
class TokenChecked:
    async def upgrade(self, request, product):
        tokens = request.headers.getRawHeaders(b"x-token", [])
        await task.deferLater(reactor, 0.01)  # stands in for a real lookup
        if tokens != [b"letmein"]:
            return Reject(403, body=b"wrong or missing X-Token\n")
        return Accept(EchoProtocol(), headers=[(b"X-Welcome", request.path)])


class Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"Upgrade: HTTP/2.0 with X-Token\n"


registry = UpgradeRegistry()
registry.register(b"HTTP/2.0", TokenChecked())
endpoint = endpoints.serverFromString(reactor, sys.argv[1] if len(sys.argv) > 1 else "tcp:8080")
endpoint.listen(UpgradableSite(Page(), registry)).addCallback(
    lambda port: print("listening on", port.getHost(), flush=True)
)
reactor.run()
