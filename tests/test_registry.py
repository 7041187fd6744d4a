"""The registry: programmer errors raise at once, lookups are exact."""

from __future__ import annotations

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from upgradable import UpgradeRegistry
from upgradable._registry import FactoryHandler
from upgradable._tokens import parseProduct
from upgradable.interfaces import IUpgradeHandler

from .helpers import ScriptedHandler


def key(product: bytes) -> tuple[bytes, bytes | None]:
    parsed = parseProduct(product)
    assert parsed is not None
    return parsed.key


class CountingFactory(Factory):
    protocol = Protocol

    def __init__(self) -> None:
        self.starts = self.stops = 0

    def startFactory(self) -> None:
        self.starts += 1

    def stopFactory(self) -> None:
        self.stops += 1


def test_factoriesAreWrappedInAHandler() -> None:
    registry = UpgradeRegistry()
    factory = CountingFactory()
    registry.register(b"IRC/6.9", factory)
    handler = registry.lookup(key(b"irc/6.9"))
    assert isinstance(handler, FactoryHandler)
    assert verifyObject(IUpgradeHandler, handler)
    assert handler.factory is factory


def test_handlersAreUsedAsTheyAre() -> None:
    registry = UpgradeRegistry()
    handler = ScriptedHandler(None)
    registry.register("websocket", handler)
    assert registry.lookup(key(b"WEBSOCKET")) is handler
    assert registry.lookup(key(b"websocket/13")) is None


@pytest.mark.parametrize("product", [b"IRC/", b"a b", b"", b"/1", b"x/1/2", "é"])
def test_invalidProductsRaise(product: bytes | str) -> None:
    with pytest.raises((ValueError, UnicodeEncodeError)):
        UpgradeRegistry().register(product, CountingFactory())


def test_duplicateProductRaisesWhateverTheCase() -> None:
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", CountingFactory())
    with pytest.raises(ValueError, match="registered already"):
        registry.register(b"irc/6.9", CountingFactory())


def test_wrongKindOfHandlerRaises() -> None:
    with pytest.raises(TypeError, match="neither"):
        UpgradeRegistry().register(b"x", object())  # type: ignore[arg-type]


def test_productsKeepRegistrationOrderAndSpelling() -> None:
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", CountingFactory())
    registry.register(b"HTTP/2.0", CountingFactory())
    assert registry.products() == [b"IRC/6.9", b"HTTP/2.0"]
    assert list(registry) == [b"IRC/6.9", b"HTTP/2.0"]
    assert len(registry) == 2
    assert b"irc/6.9" in registry and "HTTP/2.0" in registry
    assert b"IRC" not in registry and 3 not in registry


def test_unregister() -> None:
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", CountingFactory())
    registry.unregister(b"irc/6.9")
    assert len(registry) == 0
    with pytest.raises(KeyError):
        registry.unregister(b"IRC/6.9")


def test_factoriesAreStartedAndStoppedWithTheSite() -> None:
    registry = UpgradeRegistry()
    early, late = CountingFactory(), CountingFactory()
    registry.register(b"a", early)
    registry.startFactories()
    registry.register(b"b", late)
    assert (early.starts, late.starts) == (1, 1)
    registry.stopFactories()
    assert (early.stops, late.stops) == (1, 1)


def test_offersAreInTheClientsOrderWithTheirHandlers() -> None:
    registry = UpgradeRegistry()
    irc, echo = ScriptedHandler(None), ScriptedHandler(None)
    registry.register(b"IRC/6.9", irc)
    registry.register(b"echo", echo)
    offered, served = registry.offers([b"websocket, ECHO", b"x/, irc/6.9"])
    assert offered == (b"websocket", b"ECHO", b"irc/6.9")
    assert [(product.raw, handler) for product, handler in served] == [
        (b"ECHO", echo),
        (b"irc/6.9", irc),
    ]


def test_rememberedOffersFollowRegistrations() -> None:
    registry = UpgradeRegistry()
    handler = ScriptedHandler(None)
    assert registry.offers([b"echo"])[1] == ()
    registry.register(b"echo", handler)
    assert [h for _, h in registry.offers([b"echo"])[1]] == [handler]
    registry.unregister(b"echo")
    assert registry.offers([b"echo"])[1] == ()


def test_onlyShortOffersAreRememberedAndOnlySoMany() -> None:
    registry = UpgradeRegistry()
    registry.register(b"echo", ScriptedHandler(None))
    long = b", ".join([b"x%d" % i for i in range(100)] + [b"echo"])
    assert registry.offers([long])[0][-1] == b"echo"
    assert not registry._offers
    for i in range(1000):
        registry.offers([b"p%d, echo" % i])
    assert 0 < len(registry._offers) <= 256


def test_offersAskASubclassesLookupEachTime() -> None:
    handler = ScriptedHandler(None)

    class Dynamic(UpgradeRegistry):
        serving = False

        def lookup(self, key: tuple[bytes, bytes | None]) -> object:  # type: ignore[override]
            return handler if self.serving and key == (b"echo", None) else None

    registry = Dynamic()
    registry.register(b"other", ScriptedHandler(None))
    assert registry.offers([b"echo"])[1] == ()
    registry.serving = True
    assert [h for _, h in registry.offers([b"echo"])[1]] == [handler]


def test_aFactoryThatBuildsNoProtocolIsAProgrammingError() -> None:
    """The factory's Accept skips Accept's checks, but not this one."""
    from upgradable import Accept

    from .test_decisions import request

    class Wrong(Factory):
        def buildProtocol(self, addr: object) -> object:  # type: ignore[override]
            return object()

    with pytest.raises(TypeError, match="Accept needs a protocol"):
        FactoryHandler(Wrong()).upgrade(request(Headers()), b"x")
    decision = FactoryHandler(Factory.forProtocol(Protocol)).upgrade(request(Headers()), b"x")
    assert isinstance(decision, Accept) and decision == Accept(decision.protocol)
