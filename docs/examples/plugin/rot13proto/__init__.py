"""A line protocol that answers every line rot13-encoded, after an upgrade."""

import codecs

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from upgradable import Accept, Reject
from upgradable.interfaces import IUpgradeHandler


class Rot13(LineReceiver):
    def connectionMade(self):
        # The first thing after the 101 answers the request that asked for it.
        self.sendLine(b"ROT13 ready for " + self.factory.path)

    def lineReceived(self, line):
        self.sendLine(codecs.encode(line.decode("utf-8"), "rot13").encode("utf-8"))


@implementer(IUpgradeHandler)
class Rot13Handler:
    """Accepts GET upgrades; anything else is refused with 405."""

    def upgrade(self, request, product):
        if request.method != b"GET":
            return Reject(405, [(b"Allow", b"GET")], b"ROT13 upgrades need GET\n")
        factory = Factory.forProtocol(Rot13)
        factory.path = request.path
        return Accept(factory.buildProtocol(request.peer))


def makeHandler(options):
    """Called once per server, with the server's options."""
    return Rot13Handler()
