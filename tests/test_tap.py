"""twistd upgradable's options and service, without running twistd."""

from __future__ import annotations

import re

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import StringTransport
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from zope.interface.verify import verifyObject

from upgradable import UpgradableSite
from upgradable._auth import BasicAuthHandler
from upgradable.app._page import WelcomePage
from upgradable.app.tap import Options, installedPlugins, makeService
from upgradable.interfaces import IUpgradeProtocolPlugin
from upgradable.plugin import UpgradeProtocolPlugin


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_serviceMakerIsFoundAsAPlugin() -> None:
    [maker] = [m for m in getPlugins(IServiceMaker) if m.tapname == "upgradable"]
    assert verifyObject(IServiceMaker, maker)
    assert maker.options is Options


def test_samplePluginsAreFoundAndProvideTheInterface() -> None:
    plugins = {p.name: p for p in installedPlugins()}
    assert {"irc", "http2-echo"} <= set(plugins)
    for plugin in plugins.values():
        assert verifyObject(IUpgradeProtocolPlugin, plugin)
        assert IPlugin.providedBy(plugin)
    assert plugins["irc"].tokens == (b"IRC/6.9",)
    assert plugins["http2-echo"].tokens == (b"HTTP/2.0",)
    assert plugins["irc"].provider == "upgradable"


def test_defaults() -> None:
    options = parse()
    assert options["listen"] == ["tcp:8080"]
    assert options["advertise"] is True
    assert {p.name for p in options["plugins"]} >= {"irc", "http2-echo"}
    assert all(p.enabledByDefault for p in options["plugins"])


def test_repeatedListenAndProtocol() -> None:
    options = parse(
        "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0:interface=::1",
        "--protocol", "irc", "--protocol", "irc", "--no-advertise",
    )  # fmt: skip
    assert options["listen"] == ["tcp:0:interface=127.0.0.1", r"tcp:0:interface=\:\:1"]
    assert [p.name for p in options["plugins"]] == ["irc"]
    assert options["advertise"] is False


def test_unknownProtocolListsTheAvailableOnes() -> None:
    with pytest.raises(usage.UsageError, match=r"unknown protocol nope; installed: .*irc"):
        parse("--protocol", "nope")


def test_contradictoryAdvertiseFlags() -> None:
    with pytest.raises(usage.UsageError):
        parse("--advertise", "--no-advertise")


def test_pathMustBeADirectory(tmp_path) -> None:
    with pytest.raises(usage.UsageError, match="not a directory"):
        parse("--path", str(tmp_path / "missing"))
    assert parse("--path", str(tmp_path))["path"] == str(tmp_path)


def test_listProtocolsPrintsEachPluginAndExits0(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--list-protocols")
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    [irc] = [line for line in lines if line.startswith("irc ")]
    assert "IRC/6.9" in irc and "twisted.words" in irc and "[upgradable]" in irc


def test_makeServiceListensOnEveryEndpointWithOneSite() -> None:
    options = parse("--listen", "tcp:0", "--listen", "tcp:0:interface=127.0.0.1")
    service = makeService(options)
    assert isinstance(service, MultiService)
    children = list(service)
    assert len(children) == 2
    assert all(isinstance(c, StreamServerEndpointService) for c in children)
    site = children[0].factory
    assert site is children[1].factory
    assert isinstance(site, UpgradableSite)
    assert isinstance(site.resource.resource, WelcomePage)  # behind the health check
    assert site.advertise is True
    assert set(site.registry.products()) >= {b"IRC/6.9", b"HTTP/2.0"}


def test_makeServiceServesThePathWhenGiven(tmp_path) -> None:
    from twisted.web.static import File

    site = next(iter(makeService(parse("--path", str(tmp_path), "--health-path", "")))).factory
    assert isinstance(site.resource, File)


def test_authWrapsEveryHandler() -> None:
    options = parse("--auth", "memory:alice:secret", "--protocol", "http2-echo")
    site = next(iter(makeService(options))).factory
    handler = site.registry.lookup((b"http", b"2.0"))
    assert isinstance(handler, BasicAuthHandler)


def test_pluginDeclarationsAreValidated() -> None:
    with pytest.raises(ValueError):
        UpgradeProtocolPlugin("x y", [b"X/1"], "d", "m:f")
    with pytest.raises(ValueError):
        UpgradeProtocolPlugin("x", [], "d", "m:f")
    with pytest.raises(ValueError):
        UpgradeProtocolPlugin("x", [b"X/"], "d", "m:f")
    with pytest.raises(ValueError):
        UpgradeProtocolPlugin("x", [b"X/1"], "d", "no-colon")


def test_aPluginThatBuildsTheWrongThingFailsAtStartUp() -> None:
    from upgradable.app.tap import buildRegistry

    options = parse("--protocol", "irc")
    options["plugins"] = [UpgradeProtocolPlugin("bad", [b"BAD/1"], "d", "builtins:str")]
    with pytest.raises(TypeError, match="neither an IUpgradeHandler nor an IProtocolFactory"):
        buildRegistry(options)


def test_welcomePageWorksOnAUnixSocketAndNamesTheHostsPort() -> None:
    from twisted.internet.address import UNIXAddress

    from upgradable import UpgradeRegistry

    from .helpers import Server, parseResponses

    plugins = [p for p in installedPlugins() if p.name == "http2-echo"]
    server = Server(registry=UpgradeRegistry(), resource=WelcomePage(plugins, auth=False))  # type: ignore[arg-type]
    server.transport.hostAddr = UNIXAddress(b"/tmp/upgradable.sock")
    server.send(b"GET / HTTP/1.1\r\nHost: example.test:8443\r\n\r\n")
    server.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
    first, second = parseResponses(server.output())[0]
    assert first.code == second.code == 200
    assert b"TCP:example.test:8443" in first.body
    assert b"TCP:example.test:80" in second.body


def test_welcomePageIsMadeOncePerHostAndKeptForABoundedNumberOfThem() -> None:
    from upgradable import UpgradeRegistry
    from upgradable.app import _page

    from .helpers import Server, parseResponses

    plugins = [p for p in installedPlugins() if p.name == "http2-echo"]
    page = WelcomePage(plugins, auth=False)  # type: ignore[arg-type]
    server = Server(registry=UpgradeRegistry(), resource=page)  # type: ignore[arg-type]
    made: list[str] = []
    original = page._page

    def counted(url: str, hostPort: str, port: int) -> bytes:
        made.append(url)
        return original(url, hostPort, port)

    page._page = counted  # type: ignore[method-assign]
    server.send(b"GET / HTTP/1.1\r\nHost: a.test:8443\r\n\r\n" * 2)
    server.send(b"GET / HTTP/1.1\r\nHost: b.test:8443\r\n\r\n")
    first, again, other = parseResponses(server.output())[0]
    assert first.body == again.body
    assert b"a.test:8443" in first.body
    assert b"b.test:8443" in other.body and b"a.test" not in other.body
    assert made == ["http://a.test:8443/", "http://b.test:8443/"]
    for n in range(3 * _page._PAGES):
        server.send(b"GET / HTTP/1.1\r\nHost: h%d.test\r\n\r\n" % n)
    assert len(page._pages) <= _page._PAGES


def test_relayOptionParsesAndTakesTheTokenOver() -> None:
    from upgradable.app.tap import buildRegistry
    from upgradable.protocols.relay import RelayHandler

    options = parse("--relay", "irc/6.9=tcp:127.0.0.1:6667", "--protocol", "irc")
    assert options["relays"] == [(b"irc/6.9", "tcp:127.0.0.1:6667")]
    registry = buildRegistry(options)
    assert isinstance(registry.lookup((b"irc", b"6.9")), RelayHandler)
    assert registry.products() == [b"irc/6.9"]


@pytest.mark.parametrize(
    "spec",
    ["IRC/6.9", "IRC/=tcp:x:1", "=tcp:x:1", "IRC/6.9="],
    ids=["no-=", "bad", "no-token", "no-endpoint"],
)
def test_badRelaySpecsAreRefused(spec: str) -> None:
    with pytest.raises(usage.UsageError, match="--relay"):
        parse("--relay", spec)


def test_aTokenIsRelayedOnlyOnce() -> None:
    with pytest.raises(usage.UsageError, match="relayed already"):
        parse("--relay", "X/1=tcp:a:1", "--relay", "x/1=tcp:b:2")


def test_tunnelOptions() -> None:
    from upgradable.app.tunnel import Options as TunnelOptions
    from upgradable.app.tunnel import makeService as makeTunnel

    with pytest.raises(usage.UsageError, match="--url"):
        TunnelOptions().parseOptions(["--protocol", "IRC/6.9"])
    with pytest.raises(usage.UsageError, match="--protocol is required"):
        TunnelOptions().parseOptions(["--url", "http://x/"])
    with pytest.raises(usage.UsageError, match="not a protocol product"):
        TunnelOptions().parseOptions(["--url", "http://x/", "--protocol", "IRC/"])
    options = TunnelOptions()
    options.parseOptions(["--url", "https://x/", "--protocol", "IRC/6.9", "--user", "alice"])
    assert options["listen"] == ["tcp:6667:interface=127.0.0.1"]
    assert options["protocols"] == [b"IRC/6.9"]
    assert len(list(makeTunnel(options))) == 1
    [maker] = [m for m in getPlugins(IServiceMaker) if m.tapname == "upgradable-tunnel"]
    assert maker.options is TunnelOptions


def test_gracePeriodAndHealthPathOptions() -> None:
    options = parse()
    assert (options["grace-period"], options["health-path"]) == (10.0, "healthz")
    options = parse("--grace-period", "0", "--health-path", "/lb/")
    assert (options["grace-period"], options["health-path"]) == (0.0, "lb")
    assert parse("--health-path", "")["health-path"] == ""
    with pytest.raises(usage.UsageError):
        parse("--grace-period", "-1")
    with pytest.raises(usage.UsageError):
        parse("--health-path", "/a/b")


def test_healthCheckSaysOkThen503WhileDraining(tmp_path) -> None:
    from .helpers import parseResponses

    for args in [(), ("--path", str(tmp_path))]:
        site = next(iter(makeService(parse(*args)))).factory
        answers = []
        for _ in range(2):
            protocol = site.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answers += parseResponses(bytes(transport.value()))[0]
            protocol.connectionLost(None)
            site.drain(0)
        assert [(r.code, r.body) for r in answers] == [(200, b"ok\n"), (503, b"draining\n")]
        assert answers[1].header(b"retry-after") == [b"5"]
        site.closeAll()  # cancel the timers of the global reactor


def test_noHealthPathMeansNoHealthCheck() -> None:
    site = next(iter(makeService(parse("--health-path", "")))).factory
    assert isinstance(site.resource, WelcomePage)


@pytest.mark.parametrize(("args", "allowed"), [((), False), (("--h2c-behind-proxy",), True)])
def test_h2cBehindAProxyIsRefusedUnlessTheOperatorOptsIn(
    args: tuple[str, ...], allowed: bool
) -> None:
    """--h2c-behind-proxy reaches the h2c plugin's handler; without it, h2c
    requests that came through a proxy are declined."""
    from upgradable.protocols.h2c import H2CHandler

    site = next(iter(makeService(parse("--protocol", "h2c", *args)))).factory
    handler = site.registry.lookup((b"h2c", None))
    assert isinstance(handler, H2CHandler)
    assert handler.allowBehindProxy is allowed


@pytest.mark.parametrize("command", ["upgradable", "upgradable-tunnel"])
def test_versionPrintsUpgradablesVersionBesideTwistedsAndExits0(command: str, capsys) -> None:
    import upgradable
    from twisted import copyright

    [maker] = [m for m in getPlugins(IServiceMaker) if m.tapname == command]
    with pytest.raises(SystemExit) as exited:
        maker.options().parseOptions(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == (
        f"upgradable {upgradable.__version__}\nTwisted {copyright.version}\n"
    )


@pytest.mark.parametrize(
    ("typed", "used"),
    [
        ("tcp:8081:interface=::1", r"tcp:8081:interface=\:\:1"),
        (r"tcp:8081:interface=\:\:1", r"tcp:8081:interface=\:\:1"),
        ("tcp:0:interface=::", r"tcp:0:interface=\:\:"),
        ("haproxy:tcp:8080:interface=::1", r"haproxy:tcp:8080:interface=\:\:1"),
        ("tcp:8080:interface=::1:backlog=5", r"tcp:8080:interface=\:\:1:backlog=5"),
        ("tcp:interface=::1:8080", r"tcp:interface=\:\:1:8080"),
        ("tcp6:0:interface=fe80::1%lo", r"tcp6:0:interface=fe80\:\:1%lo"),
        ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        ("unix:/tmp/upgradable.sock", "unix:/tmp/upgradable.sock"),
    ],
)
def test_anIPv6InterfaceWorksAsPeopleTypeIt(typed: str, used: str) -> None:
    """Twisted wants an IPv6 interface's colons escaped; --listen escapes them."""
    from upgradable.app.tunnel import Options as TunnelOptions

    assert parse("--listen", typed)["listen"] == [used]
    tunnel = TunnelOptions()
    tunnel.parseOptions(["--url", "http://x/", "--protocol", "IRC/6.9", "--listen", typed])
    assert tunnel["listen"] == [used]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("tcp:nope", r"invalid literal for int\(\) with base 10: 'nope'"),
        ("bogus:8080", r"Unknown endpoint type: 'bogus'"),
        ("tcp", r"missing 1 required positional argument: 'port'"),
        ("tcp:8080:colour=blue", r"unexpected keyword argument 'colour'"),
        ("ssl:8443:privateKey=/nonexistent/key.pem", r"No such file or directory"),
        ("tcp:8080:interface=[::1]", r"a colon inside a value is written \\:, e.g. interface="),
    ],
)
def test_aBadListenIsAUsageErrorNamingTheValue(value: str, reason: str) -> None:
    from upgradable.app.tunnel import Options as TunnelOptions

    with pytest.raises(usage.UsageError, match=r"^--listen " + re.escape(value) + ": ") as raised:
        parse("--listen", value)
    assert re.search(reason, str(raised.value)), raised.value
    assert "_parse" not in str(raised.value)  # no Twisted function names
    with pytest.raises(usage.UsageError, match=r"^--listen " + re.escape(value) + ": "):
        TunnelOptions().parseOptions(["--url", "http://x/", "--protocol", "A/1", "--listen", value])


@pytest.mark.parametrize(
    ("argv", "pidfile"),
    [
        (["-n", "upgradable"], ""),
        (["--nodaemon", "upgradable-tunnel", "--url", "http://x/", "--protocol", "A/1"], ""),
        (["-n", "--pidfile", "twistd.pid", "upgradable"], "twistd.pid"),
        (["-n", "--pidf=twistd.pid", "upgradable"], "twistd.pid"),
        (["-n", "--pidfile=server.pid", "upgradable"], "server.pid"),
        (["upgradable"], "twistd.pid"),
    ],
    ids=["foreground", "tunnel", "asked", "abbreviated", "named", "daemon"],
)
def test_inTheForegroundNoPidFileUnlessAskedFor(
    argv: list[str], pidfile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """twistd.pid in the current directory would stop a second server there."""
    import os
    import sys

    from twisted.scripts.twistd import ServerOptions

    monkeypatch.setattr(sys, "argv", ["twistd", *argv])
    config = ServerOptions()
    config.parseOptions(argv)
    assert config["pidfile"] == (pidfile and os.path.abspath(pidfile))


def test_aCommandLineTwistdDidNotParseLeavesThePidFileAlone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import sys

    from twisted.scripts.twistd import ServerOptions

    monkeypatch.setattr(sys, "argv", ["pytest", "--no-such-option"])
    config = ServerOptions()
    config.parseOptions(["-n", "upgradable"])
    assert config["pidfile"] == os.path.abspath("twistd.pid")


@pytest.mark.parametrize(
    ("grace", "upgraded", "worker", "hint"),
    [
        (10.0, 1, False, "Waiting up to 10 s for 1 connection to end; "
                         "Ctrl-C or SIGTERM again closes it now"),
        (2.5, 2, False, "Waiting up to 2.5 s for 2 connections to end; "
                        "Ctrl-C or SIGTERM again closes them now"),
        (10.0, 0, False, None),  # nothing to wait for
        (0.0, 1, False, None),  # no grace period to cut short
        (10.0, 1, True, None),  # a worker: its master says it
    ],
)  # fmt: skip
def test_stoppingSaysThatASecondSignalClosesTheConnectionsNow(
    grace: float, upgraded: int, worker: bool, hint: str | None, logged, monkeypatch
) -> None:
    from twisted.logger import formatEvent

    from upgradable.app import _tap

    from .helpers import IRC_REQ, standardServer

    taken: list[object] = []
    monkeypatch.setattr(
        _tap, "onSecondSignal", lambda action: taken.append(action) or ["Ctrl-C", "SIGTERM"]
    )
    server, _ = standardServer()
    transports = []
    for _ in range(upgraded):
        protocol = server.site.buildProtocol(None)
        transports.append(StringTransport())
        protocol.makeConnection(transports[-1])
        protocol.dataReceived(IRC_REQ)
    server.protocol.connectionLost(None)
    service = _tap.DrainingService(server.site, grace)
    service.hint = not worker
    service.startService()
    service.stopService()

    def said() -> list[str]:
        return [
            formatEvent(e) for e in logged.events if e["log_namespace"] == "upgradable.app._tap"
        ]

    assert said() == ([hint] if hint else [])
    [secondSignal] = taken
    secondSignal()
    assert said()[-1] == (
        "Stop signal again: closing every connection now (any still open 5 s later is aborted)"
    )
    assert all(transport.disconnecting for transport in transports)


class _Listening:
    """An endpoint whose listen() answers with ``result``, now or when told."""

    def __init__(self, result: object, later: bool = False) -> None:
        from twisted.internet.defer import Deferred

        self.result = result
        self.waiting: Deferred[object] = Deferred()
        self.later = later

    def listen(self, factory: object) -> object:
        from twisted.internet.defer import fail, succeed

        if self.later:
            return self.waiting
        return fail(self.result) if isinstance(self.result, Exception) else succeed(self.result)


def test_aPortThatCannotListenStopsStartUpWithOneLineNamingTheListenValue(logged) -> None:
    from twisted.internet.error import CannotListenError

    from upgradable.app._tap import LoggingEndpointService

    error = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
    service = LoggingEndpointService(_Listening(error), None)
    service.endpointDescription = "tcp:8080:interface=127.0.0.1"
    with pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert str(exited.value) == (
        "--listen tcp:8080:interface=127.0.0.1: Couldn't listen on 127.0.0.1:8080: "
        "[Errno 98] Address already in use."
    )
    assert not [e for e in logged.events if "log_failure" in e]  # no traceback logged


def test_aPortThatFailsToListenLaterStopsTheReactorWithAnError(logged) -> None:
    from twisted.internet.error import CannotListenError
    from twisted.logger import LogLevel, formatEvent

    from upgradable.app._tap import LoggingEndpointService

    from .helpers import memoryReactor

    reactor = memoryReactor()
    reactor.running = True
    endpoint = _Listening(None, later=True)
    service = LoggingEndpointService(endpoint, None, reactor=reactor)
    service.endpointDescription = "tcp:8080"
    service.privilegedStartService()
    assert not reactor.hasStopped
    endpoint.waiting.errback(CannotListenError("", 8080, OSError(13, "Permission denied")))
    assert reactor.hasStopped
    [event] = [e for e in logged.events if e.get("log_level") is LogLevel.error]
    assert formatEvent(event) == (
        "Stopping: --listen tcp:8080: Couldn't listen on any:8080: [Errno 13] Permission denied."
    )
    assert not [e for e in logged.events if "log_failure" in e]
    service.stopService()
