# What a site (or a channel) allows: one object, shared by the channels of a
# site, that also holds the site's count of its connections (_drain).
from __future__ import annotations

from twisted.web.http import HTTPChannel

from ._drain import Connections

__all__ = ["DEFAULT_MAX_UPGRADE_BODY", "UpgradeLimits", "full"]

#: The limit of an upgrade request's body when none is given: 1 MiB, as
#: nginx's ``client_max_body_size`` (whose default is 1 MiB too).
DEFAULT_MAX_UPGRADE_BODY = 1024 * 1024


class UpgradeLimits:
    """
    What a channel allows; shared by the channels of one site, which count
    their upgraded connections here (in :attr:`connections`).

    :param maxUpgraded: at most this many upgraded connections at once;
        beyond it an upgrade request gets ``503`` with ``Retry-After``.
    :param handshakeTimeout: seconds from a request's first byte until its
        head is complete and, if it asks to upgrade, its body read and the
        upgrade decided: a request still arriving gets ``408``, a handler
        still deciding is cancelled and the request gets ``503``; both then
        close. None (the default): no deadline. A request still arriving is
        then closed only by the site's idle timeout (between reads), and a
        handler's answer is waited for as long as the connection lasts, on
        a site's fast path as through the channel: the idle timeout does not
        run while a request is decided. Only the end of the client's input
        (then :data:`HALF_CLOSED_WAIT` seconds more), the connection's loss
        or a drain's grace period ends the wait.
    :param maxUpgradeBody: largest body an upgrade request may carry
        (``413`` as soon as its decoded body passes it); None: 1 MiB. The
        body is held in memory for the handler, never spooled to disk, so
        there is always a limit.
    :param maxHeaderSize: most bytes of request line and header fields
        (``414``/``431`` beyond); Twisted's default, 16 KiB.
    :param maxHeaders: most header fields (``431`` beyond); Twisted's default, 500.
    """

    def __init__(
        self,
        maxUpgraded: int | None = None,
        handshakeTimeout: float | None = None,
        maxUpgradeBody: int | None = None,
        maxHeaderSize: int = HTTPChannel.totalHeadersSize,
        maxHeaders: int = HTTPChannel.maxHeaders,
    ) -> None:
        self.maxUpgraded = maxUpgraded
        self.handshakeTimeout = handshakeTimeout
        self.maxUpgradeBody = DEFAULT_MAX_UPGRADE_BODY if maxUpgradeBody is None else maxUpgradeBody
        self.maxHeaderSize = maxHeaderSize
        self.maxHeaders = maxHeaders
        self.connections = Connections()

    @property
    def upgraded(self) -> int:
        """How many connections are upgraded now."""
        return len(self.connections.upgraded)


def full(limits: UpgradeLimits) -> bool:
    """Whether the limit of upgraded connections is reached."""
    limit = limits.maxUpgraded
    return limit is not None and limits.upgraded >= limit
