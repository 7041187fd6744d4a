"""
HTTP/1.1 ``Upgrade`` for Twisted: switch a live HTTP connection to another
protocol after ``101 Switching Protocols`` (RFC 9110 §7.8).
"""

from ._channel import UpgradableHTTPChannel
from ._decisions import Accept, Decision, Decline, Reject, UpgradeRequest
from ._records import SwitchedRequest
from ._registry import UpgradeRegistry
from ._resource import UpgradeRequired
from ._site import UpgradableSite
from ._version import __version__ as __version__

__all__ = [
    "Accept",
    "Decision",
    "Decline",
    "Reject",
    "SwitchedRequest",
    "UpgradableHTTPChannel",
    "UpgradableSite",
    "UpgradeRegistry",
    "UpgradeRequest",
    "UpgradeRequired",
]
