"""
``twistd upgradable``: an HTTP server that upgrades connections to the
protocols of the installed protocol plugins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import AuthOptionMixin
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath

from .._auth import BasicAuthHandler
from .._core import parseProduct
from .._registry import FactoryHandler, UpgradeRegistry
from .._site import UpgradableSite
from ..interfaces import IUpgradeHandler, IUpgradeProtocolPlugin
from ._health import WithHealthCheck
from ._tap import (
    DrainingService,
    LoggingEndpointService,
    accessLogDestination,
    checkListen,
    noForegroundPidfile,
    printVersion,
)

__all__ = ["Options", "installedPlugins", "makeService"]

_log = Logger()


def installedPlugins() -> list[IUpgradeProtocolPlugin]:
    """Every protocol plugin in ``twisted.plugins``, sorted by name."""
    import twisted.plugins

    return sorted(getPlugins(IUpgradeProtocolPlugin, twisted.plugins), key=lambda p: p.name)


class Options(usage.Options, AuthOptionMixin):
    """Command-line options of ``twistd upgradable``."""

    synopsis = "[options]"
    longdesc = (
        "Serve HTTP and switch connections to the enabled protocols when clients "
        "ask with Upgrade (RFC 9110 §7.8). Protocols come from plugins: "
        "--list-protocols shows the installed ones."
    )
    supportedInterfaces = [IUsernamePassword]
    optFlags = [
        [
            "advertise",
            None,
            "List the enabled protocols in an Upgrade field on ordinary responses (the default).",
        ],
        ["no-advertise", None, "Do not advertise the protocols on ordinary responses."],
        [
            "h2c-behind-proxy",
            None,
            "Let requests that came through a proxy (PROXY protocol, Forwarded, Via, "
            "X-Forwarded-*, X-Real-IP) upgrade to h2c: only behind a proxy that enforces "
            "no rule by path, which h2c streams would bypass.",
        ],
    ]
    optParameters = [
        [
            "path",
            None,
            None,
            "Serve this directory to plain HTTP requests "
            "(default: a page that describes the enabled protocols).",
            str,
        ],
        ["realm", None, "upgradable", "The realm named in HTTP Basic challenges."],
        [
            "max-upgraded",
            None,
            10000,
            "At most this many upgraded connections at once "
            "(503 with Retry-After beyond; 0: no limit).",
            int,
        ],
        [
            "handshake-timeout",
            None,
            10.0,
            "Seconds a request may take from its first byte "
            "to arrive and, if it upgrades, be decided (408 or 503 after; 0: no limit).",
            float,
        ],
        [
            "max-upgrade-body",
            None,
            1048576,
            "Largest body an upgrade request may carry, in bytes (413 beyond; 0: none at all).",
            int,
        ],
        [
            "max-header-size",
            None,
            16384,
            "Most bytes of request line and header fields (414 or 431 beyond).",
            int,
        ],
        ["max-headers", None, 500, "Most header fields in a request (431 beyond).", int],
        [
            "workers",
            None,
            1,
            "Serve with this many worker processes that share the listening sockets "
            "(1: this process serves; 0: one per CPU).",
            int,
        ],
        [
            "grace-period",
            None,
            10.0,
            "On SIGTERM, after the ports close and handshakes finish, seconds upgraded "
            "connections may go on before they are asked to close (a second signal: at once).",
            float,
        ],
        [
            "access-log",
            None,
            None,
            "Where the access log goes: a file, - for standard output, twistd for twistd's "
            "log (an event per line, which every log observer sees: slower), or none. "
            "Default: standard output when twistd logs there (-n, or --logfile -), with "
            "--syslog or --logger twistd's log, else NAME.access.log beside twistd's "
            "log file NAME.log.",
            str,
        ],
        [
            "health-path",
            None,
            "/healthz",
            "Answer GET here with 200 ok, or 503 while stopping, for load balancers "
            "(empty: no health check).",
            str,
        ],
    ]
    compData = usage.Completions(
        optActions={"path": usage.CompleteDirs(), "listen": usage.Completer()}
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["protocols"] = []
        self["without"] = []
        self["relays"] = []
        self["idle-timeouts"] = {}

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        # Kept for --workers, whose workers parse the same command line.
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this server endpoint: tcp:8080, tcp:8080:interface=127.0.0.1, tcp:8080:interface=::1, ssl:8443:privateKey=key.pem, haproxy:tcp:8080 ... (repeatable; default tcp:8080: every IPv4 interface)."""  # noqa: E501
        self["listen"].append(checkListen(endpoint))

    def opt_protocol(self, name: str) -> None:
        """Enable the protocol plugin of this name (repeatable; default: every installed plugin that is enabled by default)."""  # noqa: E501
        self["protocols"].append(name)

    def opt_relay(self, spec: str) -> None:
        """Relay upgrades for TOKEN to a backend: TOKEN=ENDPOINT, e.g. IRC/6.9=tcp:127.0.0.1:6667 (repeatable; takes the token over from any plugin)."""  # noqa: E501
        token, equals, endpoint = spec.partition("=")
        product = parseProduct(token.strip().encode("ascii", "replace"))
        if not equals or product is None or not endpoint:
            raise usage.UsageError(
                f"--relay {spec}: use TOKEN=ENDPOINT, e.g. IRC/6.9=tcp:host:6667"
            )
        if any(parseProduct(t).key == product.key for t, _ in self["relays"]):  # type: ignore[union-attr]
            raise usage.UsageError(f"--relay {spec}: {token} is relayed already")
        self["relays"].append((product.raw, endpoint))

    def opt_idle_timeout(self, spec: str) -> None:
        """Close a protocol's upgraded connections after SECONDS without a byte from the client: NAME=SECONDS, e.g. websocket-echo=300 (repeatable; off by default, for IRC too)."""  # noqa: E501
        name, equals, seconds = spec.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1
        if not equals or not name or value <= 0:
            raise usage.UsageError(f"--idle-timeout {spec}: use NAME=SECONDS, e.g. http2-echo=300")
        self["idle-timeouts"][name] = value

    def opt_without(self, name: str) -> None:
        """Do not enable the protocol plugin of this name, e.g. --without h2c (repeatable)."""
        self["without"].append(name)

    def opt_version(self) -> None:
        """Print the versions of upgradable and Twisted and exit."""
        printVersion()

    def opt_list_protocols(self) -> None:
        """List the installed protocol plugins and exit."""
        plugins = installedPlugins()
        rows = [
            (
                plugin.name,
                ", ".join(t.decode("ascii") for t in plugin.tokens),
                plugin.description + (" (default)" if plugin.enabledByDefault else ""),
                plugin.provider,
            )
            for plugin in plugins
        ]
        nameWidth = max((len(row[0]) for row in rows), default=0)
        tokenWidth = max((len(row[1]) for row in rows), default=0)
        for name, tokens, description, provider in rows:
            sys.stdout.write(
                f"{name:<{nameWidth}}  {tokens:<{tokenWidth}}  {description}  [{provider}]\n"
            )
        sys.stdout.flush()
        sys.exit(0)

    def postOptions(self) -> None:
        for name in ("max-upgraded", "handshake-timeout", "max-upgrade-body", "grace-period"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} cannot be negative")
        for name in ("max-header-size", "max-headers"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["workers"] < 0:
            raise usage.UsageError("--workers cannot be negative")
        if self["workers"] == 0:
            self["workers"] = os.cpu_count() or 1
        health = self["health-path"].strip("/")
        if "/" in health:
            raise usage.UsageError("--health-path: one path segment, e.g. /healthz")
        self["health-path"] = health
        if self["advertise"] and self["no-advertise"]:
            raise usage.UsageError("--advertise and --no-advertise contradict each other")
        self["advertise"] = not self["no-advertise"]
        if not self["listen"]:
            self["listen"] = ["tcp:8080"]
        if self["path"] is not None and not FilePath(self["path"]).isdir():
            raise usage.UsageError(f"--path {self['path']}: not a directory")
        plugins = {plugin.name: plugin for plugin in installedPlugins()}
        unknown = [
            name for name in [*self["without"], *self["idle-timeouts"]] if name not in plugins
        ]
        if unknown:
            raise usage.UsageError(
                f"unknown protocol {', '.join(unknown)}; installed: "
                + (", ".join(sorted(plugins)) or "none")
            )
        if self["protocols"]:
            unknown = [name for name in self["protocols"] if name not in plugins]
            if unknown:
                raise usage.UsageError(
                    f"unknown protocol {', '.join(unknown)}; installed: "
                    + (", ".join(sorted(plugins)) or "none")
                )
            chosen = [plugins[name] for name in dict.fromkeys(self["protocols"])]
        else:
            chosen = [plugin for plugin in plugins.values() if plugin.enabledByDefault]
        self["plugins"] = [plugin for plugin in chosen if plugin.name not in self["without"]]
        noForegroundPidfile(self)
        self["access-log"] = accessLogDestination(self)


def _asHandler(made: Any, plugin: IUpgradeProtocolPlugin) -> IUpgradeHandler:
    if IUpgradeHandler.providedBy(made):
        return made
    if IProtocolFactory.providedBy(made):
        return FactoryHandler(made)
    raise TypeError(
        f"protocol plugin {plugin.name!r} built {made!r}, "
        "which is neither an IUpgradeHandler nor an IProtocolFactory"
    )


def buildRegistry(options: Options) -> UpgradeRegistry:
    """The registry of the enabled plugins and relays, behind ``--auth`` if given."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString

    from ..protocols.relay import RelayHandler

    registry = UpgradeRegistry()
    checkers: Sequence[Any] = options.get("credCheckers", [])

    def guarded(handler: IUpgradeHandler) -> IUpgradeHandler:
        return BasicAuthHandler(handler, checkers, options["realm"]) if checkers else handler

    authNote = " (HTTP Basic credentials required)" if checkers else ""
    relayed = {}
    for token, endpoint in options["relays"]:
        relayed[parseProduct(token).key] = token  # type: ignore[union-attr]
        relay = RelayHandler(reactor, clientFromString(reactor, endpoint), endpoint)
        registry.register(token, guarded(relay))
        _log.info(
            "Relay enabled: Upgrade: {token} to {endpoint}{auth}",
            token=token.decode("ascii"),
            endpoint=endpoint,
            auth=authNote,
        )
    for plugin in options["plugins"]:
        tokens = [t for t in plugin.tokens if parseProduct(t).key not in relayed]  # type: ignore[union-attr]
        for token in plugin.tokens:
            if token not in tokens:
                _log.info(
                    "Relay for {token} takes it over from protocol {name}",
                    token=token.decode("ascii"),
                    name=plugin.name,
                )
        if not tokens:
            continue
        handler = guarded(_asHandler(plugin.makeHandler(options), plugin))
        idle = options["idle-timeouts"].get(plugin.name)
        for token in tokens:
            registry.register(token, handler, idleTimeout=idle)
        _log.info(
            "Protocol {name} enabled: Upgrade: {tokens}{auth}",
            name=plugin.name,
            tokens=", ".join(t.decode("ascii") for t in tokens),
            auth=authNote,
        )
    return registry


_ACCESS_LOG_NAMES = {
    "-": "standard output",
    "twistd": "twistd's log",
    "none": "none (--access-log none)",
}


def _noAccessLog(request: Any) -> None:
    """The access log of ``--access-log none``."""


def makeService(
    options: Options, inherited: Sequence[tuple[int, int]] | None = None
) -> MultiService:
    """
    Build the service for ``options``: the listening services of one site,
    or, with ``--workers`` above 1, the master of that many worker processes.

    :param inherited: in a worker, the (descriptor, address family) of each
        ``--listen`` endpoint's socket, in order, to accept on instead of
        binding.
    """
    from twisted.internet import reactor
    from twisted.web.static import File

    from ._page import WelcomePage
    from ._sockets import adoptingReactor

    destination = options["access-log"]
    if inherited is None:
        _log.info("Access log: {where}", where=_ACCESS_LOG_NAMES.get(destination, destination))
    if options["workers"] > 1 and inherited is None:
        from ._workers import WorkerPool

        service = MultiService()
        pool = WorkerPool(
            options.argv,
            options["listen"],
            options["workers"],
            options["grace-period"],
            accessLog=destination,
        )
        pool.setServiceParent(service)
        return service

    registry = buildRegistry(options)
    if options["path"] is not None:
        resource: Any = File(options["path"])
    else:
        resource = WelcomePage(options["plugins"], bool(options.get("credCheckers")))
    if options["health-path"]:
        resource = WithHealthCheck(resource, options["health-path"].encode("utf-8"))
    site = UpgradableSite(
        resource,
        registry,
        advertise=options["advertise"],
        maxUpgraded=options["max-upgraded"] or None,
        handshakeTimeout=options["handshake-timeout"] or None,
        maxUpgradeBody=options["max-upgrade-body"],
        maxHeaderSize=options["max-header-size"],
        maxHeaders=options["max-headers"],
        logPath=None if destination in ("twistd", "none") else destination,
    )
    if destination == "none":
        site.log = _noAccessLog  # type: ignore[method-assign]
    site.noisy = False  # no "Starting factory <upgradable._site.UpgradableSite object at ...>"
    service = DrainingService(site, options["grace-period"])
    service.hint = inherited is None  # a worker's master says it once for all
    for index, description in enumerate(options["listen"]):
        endpointReactor: Any = reactor
        if inherited is not None:
            endpointReactor = adoptingReactor(reactor, *inherited[index])
        endpoint = serverFromString(endpointReactor, description)
        child = LoggingEndpointService(endpoint, site)
        child.endpointDescription = description
        child.setServiceParent(service)
    return service
