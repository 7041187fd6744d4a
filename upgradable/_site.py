# Site wiring. Connections are built exactly as twisted.web builds them, as
# _GenericHTTPChannelProtocol(channel), only with our channel inside: that
# wrapper is what switches a TLS connection to HTTP/2 when ALPN picked "h2",
# so Twisted's own HTTP/2 keeps working next to the Upgrade path.
from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.resource import IResource
from twisted.web.server import Site

from ._channel import SwitchedRequest, UpgradableHTTPChannel, UpgradeLimits
from ._registry import UpgradeRegistry

__all__ = ["UpgradableSite"]

_log = Logger()


class UpgradableSite(Site):
    """
    A :class:`~twisted.web.server.Site` whose connections can be upgraded.

    :param resource: the root resource, served for every request that does
        not switch protocols.
    :param registry: the protocols to switch to.
    :param advertise: list the registered products in ``Upgrade`` on
        ordinary responses.
    :param maxUpgraded: at most this many upgraded connections at once
        (``503`` with ``Retry-After`` beyond); None: no limit.
    :param handshakeTimeout: seconds a request may take, from its first byte,
        to arrive and be decided (``408``, or ``503`` for a handler that does
        not answer); None: only Twisted's idle timeout applies.
    :param maxUpgradeBody: largest upgrade request body (``413``); None: no
        limit beyond Twisted's.
    :param maxHeaderSize: most bytes of request head (``414``/``431``).
    :param maxHeaders: most header fields (``431``).
    :param siteOptions: passed on to :class:`~twisted.web.server.Site`
        (``logPath``, ``timeout``, ``logFormatter``, ``reactor``, ...).
    """

    def __init__(
        self,
        resource: IResource,
        registry: UpgradeRegistry,
        *,
        advertise: bool = False,
        maxUpgraded: int | None = None,
        handshakeTimeout: float | None = None,
        maxUpgradeBody: int | None = None,
        maxHeaderSize: int = HTTPChannel.totalHeadersSize,
        maxHeaders: int = HTTPChannel.maxHeaders,
        **siteOptions: Any,
    ) -> None:
        super().__init__(resource, **siteOptions)
        self.registry = registry
        self.advertise = advertise
        self.limits = UpgradeLimits(
            maxUpgraded, handshakeTimeout, maxUpgradeBody, maxHeaderSize, maxHeaders
        )
        self.connections = self.limits.connections
        self.connections.callLater = self.reactor.callLater

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: the site is letting its connections go."""
        return self.connections.draining

    def drain(self, grace: float | None = None) -> Deferred[None]:
        """
        Let every connection end, for a clean stop; call it once the site's
        ports stopped listening.

        HTTP connections between requests are closed at once; the others
        answer the request in progress (an upgrade being decided included)
        and close. Upgraded connections go on until they end, or until
        ``grace`` seconds have passed: then each protocol that provides
        :class:`~upgradable.interfaces.IGoingAway` is asked to go away, the
        others are closed, and whatever is still open 5 s later is aborted.

        :param grace: seconds upgraded connections may go on; None: no limit.
        :return: fires when no connection of this site is left.
        """
        return self.connections.drain(grace)

    def closeAll(self) -> None:
        """Cut a drain's grace period short: close every connection now."""
        self.connections.closeAll()

    def log(self, request: Any) -> None:
        """
        The access log: a line per request, as :class:`~twisted.web.server.Site`
        writes it (``logPath``, ``logFormatter``). A request that switched
        protocols comes as a :class:`~upgradable.SwitchedRequest` (code 101)
        and is also recorded as an info event, ``Upgraded {peer} to {product}
        ({method} {uri})``. Replace this method with one that does nothing
        (as with any ``Site``) and neither is recorded.
        """
        super().log(request)
        if isinstance(request, SwitchedRequest):
            # The peer address is rendered only by an observer that formats
            # the event (its repr is the costly part).
            _log.info(
                "Upgraded {peer} to {product} ({method} {uri})",
                peer=request.client,
                product=request.product.decode("ascii"),
                method=request.method.decode("ascii"),
                uri=request.uri.decode("ascii", "replace"),
            )

    def protocol(self) -> _GenericHTTPChannelProtocol:
        channel = UpgradableHTTPChannel(self.registry, advertise=self.advertise, limits=self.limits)
        return _TrackedHTTPProtocol(channel)

    def startFactory(self) -> None:
        super().startFactory()
        self.registry.startFactories()

    def stopFactory(self) -> None:
        self.registry.stopFactories()
        super().stopFactory()


class _TrackedHTTPProtocol(_GenericHTTPChannelProtocol):
    """
    Twisted's wrapper (which hands a TLS connection to HTTP/2 when ALPN
    picked h2), counted in the site's connections from connectionMade until
    connectionLost, whichever protocol it ended up with. A connection that
    switches with Upgrade stops calling it: the channel reports the switch.
    """

    def __init__(self, channel: UpgradableHTTPChannel) -> None:
        super().__init__(channel)
        self._tracked = channel
        self._connections = channel.limits.connections

    def makeConnection(self, transport: Any) -> None:
        # The wrapper forwards makeConnection (not connectionMade) to the channel.
        self._connections.opened(self._tracked, self)
        if self._connections.draining:
            # Accepted as the ports closed: it sent its request already, which
            # is answered; checkPersistence makes it the last one.
            self._tracked._draining = True
        super().makeConnection(transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._connections.closed(self._tracked)
