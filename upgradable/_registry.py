# Which handler serves which protocol product.
#
# A registry maps registered products (`name` or `name/version`) to handlers.
# Lookups use the comparison key from _core (name ASCII-case-insensitive,
# version exact), so `IRC/6.9` never matches `IRC`, `IRC/6.90` or `xIRC/6.9`.
# Mistakes by the programmer (a duplicate or malformed product, a handler of
# the wrong kind) raise at registration, never on a live connection.
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from twisted.internet.interfaces import IProtocol, IProtocolFactory
from zope.interface import implementer

from ._core import (
    REMEMBERED,
    Product,
    matchOffers,
    parseProduct,
    rememberable,
    withoutCleartextOnly,
)
from ._decisions import Accept, Decision, Decline, UpgradeRequest, _trustedAccept
from .interfaces import IUpgradeHandler

__all__ = ["FactoryHandler", "Offers", "UpgradeRegistry"]

#: What a registry makes of an Upgrade field: every valid product offered (as
#: sent), and those it serves with their handlers, in the client's order.
Offers = tuple[tuple[bytes, ...], tuple[tuple[Product, IUpgradeHandler], ...]]


@implementer(IUpgradeHandler)
class FactoryHandler:
    """
    The handler behind a plain protocol factory: accept with a protocol built
    by ``factory.buildProtocol(peer)``.

    It declines ``HEAD`` (a HEAD request cannot be answered by a byte stream
    that may carry a body, RFC 9110 §7.8) and declines when ``buildProtocol``
    returns None, Twisted's way for a factory to refuse a connection.
    """

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        if request.method == b"HEAD":
            return Decline()
        protocol = self.factory.buildProtocol(request.peer)
        if protocol is None:
            return Decline()
        if not IProtocol.providedBy(protocol):
            return Accept(protocol)  # which raises, saying what is wrong
        return _trustedAccept(protocol, ())

    def __repr__(self) -> str:
        return f"FactoryHandler({self.factory!r})"


class UpgradeRegistry:
    """
    A mapping from protocol products to the handlers that serve them.

    >>> registry = UpgradeRegistry()
    >>> registry.register(b"IRC/6.9", ircFactory)          # doctest: +SKIP
    >>> registry.register("websocket", websocketHandler)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._handlers: dict[tuple[bytes, bytes | None], IUpgradeHandler] = {}
        self._products: dict[tuple[bytes, bytes | None], bytes] = {}
        self._factories: list[IProtocolFactory] = []
        self._idleTimeouts: dict[tuple[bytes, bytes | None], float] = {}
        self._started = False
        # offers(), per distinct Upgrade value; emptied when anything changes.
        self._offers: dict[tuple[bytes, ...], Offers] = {}
        # advertised(), for plain and TLS connections; emptied with _offers.
        self._advertised: dict[bool, bytes] = {}

    def register(
        self,
        product: bytes | str,
        handler: IUpgradeHandler | IProtocolFactory,
        idleTimeout: float | None = None,
    ) -> None:
        """
        Serve upgrades to ``product`` with ``handler``.

        :param product: ``name`` or ``name/version``, e.g. ``b"IRC/6.9"``.
            Offers match it when the name is equal ignoring ASCII case and
            the version is equal exactly.
        :param handler: an :class:`~upgradable.interfaces.IUpgradeHandler`,
            or an :class:`~twisted.internet.interfaces.IProtocolFactory`
            whose protocols take the connection over.
        :param idleTimeout: close an upgraded connection of this product
            after this many seconds without a byte from the client, with
            the protocol's goodbye if it provides
            :class:`~upgradable.interfaces.IGoingAway` (off by default; it
            costs one call per read).
        :raises ValueError: ``product`` is not a valid product, or is
            registered already; ``idleTimeout`` is not positive and finite.
        :raises TypeError: ``product`` is neither bytes nor str, ``handler``
            is neither kind, or ``idleTimeout`` is not a number.

        Everything is checked before anything changes: a call that raises
        (a factory's ``doStart`` included, when the registry's factories
        are started) leaves the registry as it was.
        """
        # Validate everything, then change state: a call that raises leaves
        # the registry as it was (and starts no factory).
        raw = _productBytes(product)
        parsed = parseProduct(raw)
        if parsed is None:
            raise ValueError(
                f"{product!r} is not a protocol product: use a token, or "
                f"token/token, such as b'IRC/6.9' or b'websocket' (RFC 9110 §7.8)"
            )
        if parsed.key in self._handlers:
            raise ValueError(
                f"{product!r} is registered already (as "
                f"{self._products[parsed.key]!r}); unregister it first"
            )
        if IUpgradeHandler.providedBy(handler):
            resolved: IUpgradeHandler = handler
        elif IProtocolFactory.providedBy(handler):
            resolved = FactoryHandler(handler)
        else:
            raise TypeError(f"{handler!r} provides neither IUpgradeHandler nor IProtocolFactory")
        if idleTimeout is not None:
            if isinstance(idleTimeout, bool) or not isinstance(idleTimeout, (int, float)):
                raise TypeError(f"idleTimeout must be a number of seconds, not {idleTimeout!r}")
            if not 0 < idleTimeout < math.inf:
                raise ValueError(f"idleTimeout must be positive and finite, not {idleTimeout!r}")
        if isinstance(resolved, FactoryHandler):
            if self._started:
                resolved.factory.doStart()  # if it raises, nothing has changed
            self._factories.append(resolved.factory)
        self._handlers[parsed.key] = resolved
        self._products[parsed.key] = raw
        self._offers.clear()
        self._advertised.clear()
        if idleTimeout is not None:
            self._idleTimeouts[parsed.key] = idleTimeout

    def unregister(self, product: bytes | str) -> None:
        """
        Stop serving ``product``. A protocol factory registered for it is
        stopped (``doStop``) if the registry's factories are started; if
        that raises, the product is unregistered all the same.

        :raises KeyError: it is not registered.
        """
        try:
            raw = _productBytes(product)
        except (TypeError, ValueError):
            raise KeyError(product) from None
        parsed = parseProduct(raw)
        if parsed is None or parsed.key not in self._handlers:
            raise KeyError(product)
        handler = self._handlers.pop(parsed.key)
        del self._products[parsed.key]
        self._offers.clear()
        self._advertised.clear()
        self._idleTimeouts.pop(parsed.key, None)
        if isinstance(handler, FactoryHandler):
            self._factories.remove(handler.factory)
            if self._started:
                handler.factory.doStop()

    def lookup(self, key: tuple[bytes, bytes | None]) -> IUpgradeHandler | None:
        """
        The handler for a product's comparison key (see
        :func:`upgradable._core.parseProduct`), or None.
        """
        return self._handlers.get(key)

    def offers(self, upgrade: Sequence[bytes]) -> Offers:
        """
        What the ``Upgrade`` field lines ``upgrade`` offer: every valid
        product (as sent), and those this registry serves with their
        handlers, both in the client's order of preference.

        Each product is looked up with :meth:`lookup`. The answer for a short
        field value is remembered (clients send the same few) until a product
        is registered or unregistered, unless a subclass overrides
        :meth:`lookup`.
        """
        key = tuple(upgrade)
        known = self._offers.get(key)
        if known is not None:
            return known
        if isinstance(upgrade, (bytes, str)) or not all(isinstance(v, bytes) for v in key):
            raise TypeError(f"offers takes the Upgrade field's lines as bytes, not {upgrade!r}")
        result: Offers = matchOffers(key, self.lookup)
        # A subclass's lookup may answer differently from one call to the next.
        if type(self).lookup is UpgradeRegistry.lookup and rememberable(key):
            if len(self._offers) >= REMEMBERED:
                self._offers.clear()
            self._offers[key] = result
        return result

    def idleTimeout(self, key: tuple[bytes, bytes | None]) -> float | None:
        """The idle timeout registered for a product's comparison key, if any."""
        return self._idleTimeouts.get(key)

    def products(self) -> list[bytes]:
        """
        The registered products, as registered, in registration order.
        """
        return list(self._products.values())

    def advertised(self, secure: bool) -> bytes:
        """
        The value of an ``Upgrade`` field that advertises the registered
        products on a response (RFC 9110 §7.8), e.g. ``b"IRC/6.9, websocket"``;
        none that runs over cleartext only on a ``secure`` connection; empty
        when there is none to advertise. Remembered until a product is
        registered or unregistered, unless a subclass overrides
        :meth:`products`.
        """
        known = self._advertised.get(secure)
        if known is None:
            products = self.products()
            known = b", ".join(withoutCleartextOnly(products) if secure else products)
            if type(self).products is UpgradeRegistry.products:
                self._advertised[secure] = known
        return known

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.products())

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, product: object) -> bool:
        if isinstance(product, str):
            product = product.encode("ascii", "replace")
        if not isinstance(product, bytes):
            return False
        parsed = parseProduct(product)
        return parsed is not None and parsed.key in self._handlers

    def startFactories(self) -> None:
        """
        Call ``doStart`` on every registered protocol factory, as a listening
        port does for its factory. :class:`~upgradable.UpgradableSite` calls
        this when it starts.
        """
        if self._started:
            return
        started: list[IProtocolFactory] = []
        try:
            for factory in self._factories:
                factory.doStart()
                started.append(factory)
        except BaseException:
            # All or none: stop those already started, and stay stopped.
            for factory in reversed(started):
                factory.doStop()
            raise
        self._started = True

    def stopFactories(self) -> None:
        """
        Call ``doStop`` on every registered protocol factory. When one
        raises, the others are stopped all the same and the first error is
        raised after.
        """
        if not self._started:
            return
        self._started = False
        failure: BaseException | None = None
        for factory in self._factories:
            try:
                factory.doStop()
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure


def _productBytes(product: object) -> bytes:
    """A product as bytes: bytes as they are, str only if it is ASCII."""
    if isinstance(product, bytes):
        return product
    if not isinstance(product, str):
        raise TypeError(f"a protocol product is bytes or str, not {product!r}")
    if not product.isascii():
        raise ValueError(
            f"{product!r} is not a protocol product: products are ASCII tokens (RFC 9110 §7.8)"
        )
    return product.encode("ascii")
