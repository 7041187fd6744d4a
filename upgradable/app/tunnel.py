"""
``twistd upgradable-tunnel``: let unmodified TCP clients reach an upgrade
protocol. Each local connection opens an upgraded connection to the server
and the two are relayed both ways, with backpressure and half-close::

    twistd -n upgradable-tunnel --listen tcp:6667:interface=127.0.0.1 \\
        --url http://server:8080/ --protocol IRC/6.9
    irssi -c 127.0.0.1 -p 6667
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, ServerFactory
from twisted.logger import Logger
from twisted.python import usage

from .._core import parseProduct
from ..client import UpgradeResult, upgrade
from ..protocols._bridge import Relay, RelaySide
from ._tap import LoggingEndpointService, checkListen, noForegroundPidfile, printVersion

__all__ = ["Options", "makeService"]

_log = Logger()


class Options(usage.Options):
    """Command-line options of ``twistd upgradable-tunnel``."""

    synopsis = "--url URL --protocol PRODUCT [options]"
    longdesc = (
        "Listen locally; relay every connection through an HTTP Upgrade to URL, "
        "so plain TCP clients can use an upgrade protocol."
    )
    optParameters = [
        ["url", None, None, "The server to upgrade with (http:// or https://)."],
        ["user", None, None, "HTTP Basic user name for the server."],
        ["password", None, None, "HTTP Basic password (or set UPGRADABLE_PASSWORD)."],
        [
            "trust-root",
            None,
            None,
            "For https: a PEM file of the certificate(s) to trust (default: the platform's CAs).",
        ],
        ["timeout", None, 30.0, "Seconds allowed for each upgrade.", float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["protocols"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this endpoint (repeatable; default tcp:6667:interface=127.0.0.1)."""
        self["listen"].append(checkListen(endpoint))

    def opt_protocol(self, product: str) -> None:
        """A product to offer, e.g. IRC/6.9 (repeatable, most preferred first)."""
        if parseProduct(product.encode("ascii", "replace")) is None:
            raise usage.UsageError(f"--protocol {product}: not a protocol product")
        self["protocols"].append(product.encode("ascii"))

    def opt_version(self) -> None:
        """Print the versions of upgradable and Twisted and exit."""
        printVersion()

    def postOptions(self) -> None:
        import os

        if not self["url"] or not self["url"].startswith(("http://", "https://")):
            raise usage.UsageError("--url http://... or https://... is required")
        if not self["protocols"]:
            raise usage.UsageError("--protocol is required")
        if not self["listen"]:
            self["listen"] = ["tcp:6667:interface=127.0.0.1"]
        if self["user"] is not None and self["password"] is None:
            self["password"] = os.environ.get("UPGRADABLE_PASSWORD", "")
        noForegroundPidfile(self)


class _LocalSide(RelaySide):
    """The local client's connection: it starts the upgrade."""

    def connectionMade(self) -> None:
        super().connectionMade()
        tunnel: TunnelFactory = self.factory
        d = upgrade(
            tunnel.reactor,
            tunnel.url,
            tunnel.protocols,
            Factory.forProtocol(lambda: self.relay.b),
            credentials=tunnel.credentials,
            trustRoot=tunnel.trustRoot,
            timeout=tunnel.timeout,
        )
        d.addCallbacks(self._upgraded, self._failed)

    def _upgraded(self, result: UpgradeResult) -> None:
        _log.info(
            "Tunnel for {peer} upgraded to {product}",
            peer=str(self.transport.getPeer()),
            product=result.product.decode("ascii"),
        )

    def _failed(self, failure: Any) -> None:
        _log.warn(
            "Tunnel for {peer} could not upgrade: {reason}",
            peer=str(self.transport.getPeer()),
            reason=failure.getErrorMessage(),
        )
        self.relay.close()


class TunnelFactory(ServerFactory):
    """Builds a relay for each local connection."""

    noisy = False  # no "Starting factory <upgradable.app.tunnel.TunnelFactory object at ...>"

    def logPrefix(self) -> str:
        # Twisted logs "<this> starting on <port>".
        return "upgradable-tunnel"

    def __init__(self, reactor: Any, options: Options) -> None:
        self.reactor = reactor
        self.url = options["url"]
        self.protocols = options["protocols"]
        self.credentials = (
            (options["user"], options["password"]) if options["user"] is not None else None
        )
        self.trustRoot = options["trust-root"]
        self.timeout = options["timeout"]

    def buildProtocol(self, addr: Any) -> _LocalSide:
        relay = Relay()
        relay.a = local = _LocalSide(relay)
        local.factory = self
        return local


def makeService(options: Options) -> MultiService:
    """Listen on every ``--listen`` endpoint with a tunnel factory."""
    from twisted.internet import reactor

    factory = TunnelFactory(reactor, options)
    service = MultiService()
    for description in options["listen"]:
        child = LoggingEndpointService(serverFromString(reactor, description), factory)
        child.endpointDescription = description
        child.command = "upgradable-tunnel"
        child.setServiceParent(service)
    return service
