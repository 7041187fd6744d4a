"""
The interfaces that connect protocols to the upgrade machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from ._decisions import UpgradeRequest

__all__ = ["IUpgradeHandler"]


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
