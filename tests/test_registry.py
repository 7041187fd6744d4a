"""The registry: programmer errors raise at once, lookups are exact."""

from __future__ import annotations

import math
from typing import Any

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from upgradable import UpgradeRegistry
from upgradable._core import parseProduct
from upgradable._registry import FactoryHandler
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
    with pytest.raises(ValueError, match="not a protocol product"):
        UpgradeRegistry().register(product, CountingFactory())


@pytest.mark.parametrize("again", [b"IRC/6.9", b"irc/6.9", b"Irc/6.9", "IRC/6.9"])
def test_duplicateProductRaisesWhateverTheCase(again: bytes | str) -> None:
    registry = UpgradeRegistry()
    first = CountingFactory()
    registry.register(b"IRC/6.9", first)
    with pytest.raises(ValueError, match="registered already"):
        registry.register(again, CountingFactory())
    # The first registration stands, as it was spelt.
    assert registry.products() == [b"IRC/6.9"]
    assert registry.lookup(key(b"irc/6.9")).factory is first  # type: ignore[union-attr]


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


# -- a call that raises leaves the registry as it was -------------------------


class FailingFactory(CountingFactory):
    """A factory whose start, or stop, raises."""

    def __init__(self, failStart: bool = True, failStop: bool = False) -> None:
        super().__init__()
        self.failStart, self.failStop = failStart, failStop

    def startFactory(self) -> None:
        super().startFactory()
        if self.failStart:
            raise RuntimeError("cannot start")

    def stopFactory(self) -> None:
        super().stopFactory()
        if self.failStop:
            raise RuntimeError("cannot stop")


def state(registry: UpgradeRegistry) -> tuple[object, ...]:
    """Everything a registry holds, to compare before and after a call."""
    return (
        dict(registry._handlers),
        dict(registry._products),
        list(registry._factories),
        dict(registry._idleTimeouts),
        registry._started,
        dict(registry._offers),
    )


def populated(started: bool) -> tuple[UpgradeRegistry, CountingFactory]:
    """A registry with a factory, a handler, an idle timeout and a remembered offer."""
    registry = UpgradeRegistry()
    factory = CountingFactory()
    registry.register(b"IRC/6.9", factory, idleTimeout=30)
    registry.register(b"echo", ScriptedHandler(None))
    if started:
        registry.startFactories()
    registry.offers([b"echo"])
    return registry, factory


INVALID_REGISTRATIONS = [
    pytest.param((b"IRC/", CountingFactory()), {}, ValueError, id="bad-product"),
    pytest.param(("é", CountingFactory()), {}, ValueError, id="non-ascii-str"),
    pytest.param((6, CountingFactory()), {}, TypeError, id="product-not-bytes"),
    pytest.param((b"irc/6.9", CountingFactory()), {}, ValueError, id="duplicate"),
    pytest.param((b"x", object()), {}, TypeError, id="handler-of-no-kind"),
    pytest.param((b"x", CountingFactory()), {"idleTimeout": 0}, ValueError, id="idle-0"),
    pytest.param((b"x", CountingFactory()), {"idleTimeout": -1}, ValueError, id="idle-negative"),
    pytest.param((b"x", CountingFactory()), {"idleTimeout": math.nan}, ValueError, id="idle-nan"),
    pytest.param((b"x", CountingFactory()), {"idleTimeout": math.inf}, ValueError, id="idle-inf"),
    pytest.param((b"x", CountingFactory()), {"idleTimeout": "5"}, TypeError, id="idle-str"),
    pytest.param((b"x", CountingFactory()), {"idleTimeout": True}, TypeError, id="idle-bool"),
]


@pytest.mark.parametrize("started", [False, True], ids=["stopped", "started"])
@pytest.mark.parametrize(("args", "kwargs", "error"), INVALID_REGISTRATIONS)
def test_aRegistrationThatRaisesChangesNothing(
    args: tuple[Any, Any], kwargs: dict[str, Any], error: type[Exception], started: bool
) -> None:
    """Every argument is checked before anything changes, and no factory is started."""
    registry, _ = populated(started)
    before = state(registry)
    with pytest.raises(error):
        registry.register(*args, **kwargs)
    assert state(registry) == before
    handler = args[1]
    if isinstance(handler, CountingFactory):
        assert handler.starts == 0
    assert b"x" not in registry


def test_aFactoryThatFailsToStartIsNotRegistered() -> None:
    registry, _ = populated(started=True)
    before = state(registry)
    failing = FailingFactory()
    with pytest.raises(RuntimeError, match="cannot start"):
        registry.register(b"x", failing, idleTimeout=5)
    assert state(registry) == before
    registry.stopFactories()
    assert failing.stops == 0


@pytest.mark.parametrize("product", [b"nothere", b"IRC", b"IRC/", "é", 6, None])
def test_unregisteringWhatIsNotRegisteredRaisesKeyErrorAndChangesNothing(product: Any) -> None:
    registry, factory = populated(started=True)
    before = state(registry)
    with pytest.raises(KeyError):
        registry.unregister(product)
    assert state(registry) == before
    assert factory.stops == 0


@pytest.mark.parametrize("upgrade", [b"echo", "echo", ["echo"], [b"echo", 1]])
def test_offersOfSomethingButLinesOfBytesRaiseAndRememberNothing(upgrade: Any) -> None:
    registry, _ = populated(started=False)
    before = state(registry)
    with pytest.raises(TypeError, match="lines as bytes"):
        registry.offers(upgrade)
    assert state(registry) == before


def test_startingFactoriesIsAllOrNothing() -> None:
    """When one factory fails to start, those started before it are stopped again."""
    registry, first = populated(started=False)
    failing, last = FailingFactory(), CountingFactory()
    registry.register(b"failing", failing)
    registry.register(b"last", last)
    before = state(registry)
    with pytest.raises(RuntimeError, match="cannot start"):
        registry.startFactories()
    assert state(registry) == before
    assert (first.starts, first.stops) == (1, 1)
    assert (last.starts, last.stops) == (0, 0)
    failing.failStart = False
    registry.startFactories()
    assert (first.starts, failing.starts, last.starts) == (2, 2, 1)


def test_stoppingFactoriesStopsEveryOneWhenOneRaises() -> None:
    registry, first = populated(started=False)
    failing, last = FailingFactory(failStart=False, failStop=True), CountingFactory()
    registry.register(b"failing", failing)
    registry.register(b"last", last)
    registry.startFactories()
    with pytest.raises(RuntimeError, match="cannot stop"):
        registry.stopFactories()
    assert (first.stops, failing.stops, last.stops) == (1, 1, 1)
    assert not registry._started
    registry.stopFactories()  # stopped already: nothing more
    assert (first.stops, failing.stops, last.stops) == (1, 1, 1)


def test_theAdvertisedValueFollowsRegistrationsAndLeavesH2COutOverTLS() -> None:
    registry = UpgradeRegistry()
    assert registry.advertised(secure=False) == b""
    registry.register(b"IRC/6.9", Factory.forProtocol(Protocol))
    registry.register(b"h2c", Factory.forProtocol(Protocol))
    assert registry.advertised(secure=False) == b"IRC/6.9, h2c"
    assert registry.advertised(secure=True) == b"IRC/6.9"
    registry.register(b"websocket", Factory.forProtocol(Protocol))
    assert registry.advertised(secure=False) == b"IRC/6.9, h2c, websocket"
    registry.unregister(b"IRC/6.9")
    assert registry.advertised(secure=True) == b"websocket"


def test_aRegistryWhoseProductsAreItsOwnIsAskedEachTime() -> None:
    class Rotating(UpgradeRegistry):
        calls = 0

        def products(self) -> list[bytes]:
            self.calls += 1
            return [b"p%d" % self.calls]

    registry = Rotating()
    assert registry.advertised(secure=False) == b"p1"
    assert registry.advertised(secure=False) == b"p2"
