"""
``twistd upgradable``: an HTTP server that upgrades connections.
"""

from __future__ import annotations

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.python import usage

from ._registry import UpgradeRegistry
from ._site import UpgradableSite

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """Command-line options of ``twistd upgradable``."""

    synopsis = "[options]"
    longdesc = (
        "Serve HTTP on one or more endpoints and switch connections to the "
        "enabled protocols when clients ask with Upgrade (RFC 9110 §7.8)."
    )
    optFlags = [
        ["advertise", None, "List the upgrade protocols in Upgrade on ordinary responses."],
        ["no-advertise", None, "Do not advertise (the default)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        A server endpoint to listen on, e.g. tcp:8080,
        tcp:8080:interface=127.0.0.1 or ssl:8443:privateKey=key.pem
        (repeatable; default tcp:8080).
        """
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        if self["advertise"] and self["no-advertise"]:
            raise usage.UsageError("--advertise and --no-advertise contradict each other")
        if not self["listen"]:
            self["listen"] = ["tcp:8080"]


def makeService(config: Options) -> MultiService:
    """Build the listening services for ``config``."""
    from twisted.web.static import Data

    from .protocols.echo import EchoFactory

    registry = UpgradeRegistry()
    registry.register(b"HTTP/2.0", EchoFactory())
    site = UpgradableSite(
        Data(b"upgradable: try Upgrade: HTTP/2.0\n", "text/plain"),
        registry,
        advertise=bool(config["advertise"]),
    )
    service = MultiService()
    for endpoint in config["listen"]:
        strports.service(endpoint, site).setServiceParent(service)
    return service
