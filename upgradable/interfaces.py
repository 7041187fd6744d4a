"""
The interfaces that connect protocols to the upgrade machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from ._decisions import UpgradeRequest

__all__ = ["IGoingAway", "IUpgradeHandler", "IUpgradeProtocolPlugin"]


class IUpgradeHandler(Interface):
    """
    Decides whether, and how, a connection switches to one protocol product.

    Register one with :meth:`upgradable.UpgradeRegistry.register`. A plain
    :class:`~twisted.internet.interfaces.IProtocolFactory` can be registered
    instead; it is wrapped in a handler that accepts every method but ``HEAD``.
    """

    def upgrade(request: UpgradeRequest, product: bytes) -> Any:
        """
        Decide on an upgrade request that offered ``product``.

        :param request: the request, with its headers and complete body.
        :param product: the product as the client spelled it (this handler's
            registered name matched it ASCII-case-insensitively).
        :return: an :class:`~upgradable.Accept`, :class:`~upgradable.Decline`
            or :class:`~upgradable.Reject`; or a
            :class:`~twisted.internet.defer.Deferred` or coroutine that
            produces one. While it is pending the connection reads no further
            request, and bytes the client sends are kept for whichever
            protocol ends up with the connection. If the client disconnects
            first the Deferred is cancelled. An exception (raised or as a
            failure) is logged and answered with ``500``.
        """


class IGoingAway(Interface):
    """
    An upgraded protocol that can end its connection politely when the
    server stops: a drain's grace period is over
    (:meth:`upgradable.UpgradableSite.drain`, ``twistd upgradable
    --grace-period``), or when its connection has been idle for its
    product's ``idleTimeout`` (``twistd upgradable --idle-timeout``). A
    protocol without it is simply closed.
    """

    def goingAway() -> None:
        """
        Tell the peer the server is going away and close the connection
        (a WebSocket close 1001, an HTTP/2 GOAWAY, an IRC ``ERROR``). The
        connection is aborted if it is still open a few seconds later.
        """


class IUpgradeProtocolPlugin(Interface):
    """
    A protocol that ``twistd upgradable`` can serve, found with
    :func:`twisted.plugin.getPlugins` in the ``twisted.plugins`` package.

    A package adds one by shipping ``twisted/plugins/<package>_upgrade.py``
    that creates an :class:`upgradable.plugin.UpgradeProtocolPlugin`; see
    "Writing an upgrade protocol plugin" in the documentation.
    """

    name = Attribute("The name ``--protocol`` selects it by, e.g. ``'irc'`` (str).")
    tokens = Attribute("The products it serves, e.g. ``(b'IRC/6.9',)`` (sequence of bytes).")
    description = Attribute("A one-line description (str).")
    enabledByDefault = Attribute("Served when no ``--protocol`` is given (bool).")
    usage = Attribute(
        "How a visitor tries it: text for the server's built-in page, where "
        "``{url}``, ``{host}`` and ``{port}`` stand for the server's address (str)."
    )
    provider = Attribute("The distribution that provides it (str), for ``--list-protocols``.")

    def makeHandler(options: Any) -> Any:
        """
        Build what serves this protocol's tokens, once per server.

        :param options: the server's parsed options
            (:class:`upgradable.app.tap.Options`, a dict: ``credCheckers`` holds
            the ``--auth`` checkers).
        :return: an :class:`IUpgradeHandler` or an
            :class:`~twisted.internet.interfaces.IProtocolFactory`.
        """
