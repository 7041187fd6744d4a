"""
Declaring an upgrade protocol plugin for ``twistd upgradable``.

A plugin file imports only this module, so scanning plugins stays cheap; the
protocol's own code is imported when a server enables it::

    # twisted/plugins/mypackage_upgrade.py
    from upgradable.plugin import UpgradeProtocolPlugin

    rot13 = UpgradeProtocolPlugin(
        name="rot13",
        tokens=[b"ROT13/1"],
        description="Answers every line rot13-encoded",
        handler="mypackage.rot13:makeHandler",
    )
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from importlib.metadata import packages_distributions
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from ._core import parseProduct
from .interfaces import IUpgradeProtocolPlugin

__all__ = ["UpgradeProtocolPlugin"]


@implementer(IPlugin, IUpgradeProtocolPlugin)
class UpgradeProtocolPlugin:
    """
    An :class:`~upgradable.interfaces.IUpgradeProtocolPlugin` whose handler
    comes from a function named by a string, imported only when needed.

    :param name: what ``--protocol`` selects it by.
    :param tokens: the products it serves.
    :param description: one line for ``--list-protocols``.
    :param handler: ``"package.module:function"``; the function takes the
        server's options and returns an
        :class:`~upgradable.interfaces.IUpgradeHandler` or a protocol factory.
    :param enabledByDefault: served when no ``--protocol`` is given.
    :param usage: how to try it, for the built-in page (``{url}``,
        ``{host}`` and ``{port}`` are filled in).
    """

    def __init__(
        self,
        name: str,
        tokens: Iterable[bytes],
        description: str,
        handler: str,
        enabledByDefault: bool = False,
        usage: str = "",
    ) -> None:
        self.name = name
        self.tokens = tuple(tokens)
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"plugin name {name!r}: use letters, digits, '-' and '_'")
        if not self.tokens:
            raise ValueError(f"plugin {name!r} serves no token")
        for token in self.tokens:
            if not isinstance(token, bytes) or parseProduct(token) is None:
                raise ValueError(f"plugin {name!r}: {token!r} is not a protocol product")
        module, colon, attribute = handler.partition(":")
        if not colon or not module or not attribute:
            raise ValueError(f"plugin {name!r}: handler must be 'module:function', not {handler!r}")
        self.description = description
        self.enabledByDefault = enabledByDefault
        self.usage = usage
        self._handler = handler

    @property
    def provider(self) -> str:
        top = self._handler.partition(":")[0].split(".")[0]
        return ", ".join(packages_distributions().get(top, [top]))

    def makeHandler(self, options: Any) -> Any:
        module, _, attribute = self._handler.partition(":")
        return getattr(import_module(module), attribute)(options)

    def __repr__(self) -> str:
        return f"<UpgradeProtocolPlugin {self.name} {b', '.join(self.tokens).decode()}>"
