# What the twistd plugins share.
from __future__ import annotations

import getopt
import ipaddress
import os
import re
import signal
import sys
import threading
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from .._drain import plural
from .._handover import listeningDeferred
from .._site import UpgradableSite

__all__ = [
    "CannotListen",
    "DrainingService",
    "LoggingEndpointService",
    "accessLogDestination",
    "checkListen",
    "noForegroundPidfile",
    "onSecondSignal",
    "printVersion",
]

_log = Logger()


class CannotListen(SystemExit, Exception):
    """
    A ``--listen`` value that cannot listen: start-up ends with this one
    line as the message, and exit status 1.

    A ``SystemExit``, so that in the foreground Python prints the message
    alone, without a traceback; and an ``Exception`` too, because a daemon's
    twistd reports only an ``Exception`` from start-up to the process that
    launched it (and removes its pid file): a bare ``SystemExit`` left that
    process waiting forever.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


def printVersion() -> None:
    """``--version`` of the twistd commands: upgradable's version, and Twisted's; then exit 0."""
    from twisted import copyright

    from .._version import __version__

    sys.stdout.write(f"upgradable {__version__}\nTwisted {copyright.version}\n")
    sys.stdout.flush()
    sys.exit(0)


ENDPOINTS_HOWTO = "https://docs.twisted.org/en/stable/core/howto/endpoints.html#servers"


def checkListen(description: str) -> str:
    """
    The server endpoint string to use for ``--listen description``: as
    given, or with the colons of an IPv6 ``interface=`` escaped (Twisted's
    syntax wants ``interface=\\:\\:1``; people type ``interface=::1``).

    :raises usage.UsageError: Twisted cannot make an endpoint of it; the
        message names the value and says why.
    """
    from twisted.internet import reactor

    error: Exception | None = None
    for candidate in [*_escapedInterfaces(description), description]:
        try:
            serverFromString(reactor, candidate)
        except Exception as failed:
            error = error or failed
        else:
            return candidate
    assert error is not None
    # Twisted's parsers are called with the string's parts as arguments:
    # "_parseTCP() got an unexpected keyword argument 'x'" names a function.
    reason = re.sub(r"^_?\w+\(\) ", "", str(error)) or type(error).__name__
    hint = f"see {ENDPOINTS_HOWTO}"
    if _spillsOver(description):
        hint = "a colon inside a value is written \\:, e.g. interface=\\:\\:1; " + hint
    raise usage.UsageError(f"--listen {description}: {reason} ({hint})")


def _split(description: str) -> list[str]:
    """The parts of an endpoint string between its unescaped colons."""
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _escapedInterfaces(description: str) -> list[str]:
    """
    Readings of ``description`` where an ``interface=`` value typed with
    bare colons is an IPv6 address, its colons escaped: longest first, so
    that ``interface=::1:50`` is the address ``::1:50`` when that makes an
    endpoint, and ``::1`` followed by ``50`` otherwise.
    """
    parts = _split(description)
    for index, part in enumerate(parts):
        if not part.startswith("interface=") or "\\" in part:
            continue
        end = index + 1
        while end < len(parts) and "=" not in parts[end] and "\\" not in parts[end]:
            end += 1
        readings = []
        for stop in range(end, index + 1, -1):
            address = ":".join([part.removeprefix("interface="), *parts[index + 1 : stop]])
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                continue
            escaped = "interface=" + address.replace(":", "\\:")
            readings.append(":".join([*parts[:index], escaped, *parts[stop:]]))
        return readings
    return []


def _spillsOver(description: str) -> bool:
    """Whether a part without ``=`` follows a ``key=value`` one (a bare colon in a value)."""
    parts = _split(description)
    keyed = [i for i, part in enumerate(parts) if "=" in part]
    return bool(keyed) and any("=" not in part for part in parts[keyed[0] + 1 :])


def noForegroundPidfile(options: usage.Options) -> None:
    """
    In the foreground (``twistd -n``), write no pid file unless ``--pidfile``
    was given: twistd's default, ``twistd.pid`` in the current directory,
    only stops a second server (the tunnel beside the server, a second
    backend) from starting in the same directory. A daemon keeps twistd's
    default, which is how it is found and stopped.

    Call it from the ``postOptions`` of a twistd command's options: twistd
    parses the command's options inside its own, before its ``postOptions``.
    """
    parent = options.parent
    if parent is None or not parent.get("nodaemon") or parent.get("pidfile") != "twistd.pid":
        return
    # Whether --pidfile twistd.pid was asked for: twistd keeps no record of
    # which options were given, so parse its command line again, as it did.
    try:
        given, rest = getopt.getopt(sys.argv[1:], parent.shortOpt, parent.longOpt)
    except getopt.GetoptError:
        return  # not the command line twistd parsed: leave it alone
    if rest[:1] == [parent.subCommand] and all(name != "--pidfile" for name, _ in given):
        parent["pidfile"] = ""


def accessLogDestination(options: usage.Options) -> str:
    """
    Where ``--access-log`` sends the access log: an absolute path, ``-``
    (standard output), ``twistd`` (twistd's log, an event per line) or
    ``none``. Without the option, it follows twistd's log: standard output
    when twistd logs there, twistd's log with ``--syslog`` or ``--logger``
    (an observer that wants every event), else ``NAME.access.log`` beside
    twistd's log file ``NAME.log`` (not that file itself: twistd writes it
    at its own offset and rotates it by renaming).

    A relative path is made absolute here, as twistd opens its log before
    it changes directory (``--rundir``); the access log is opened later.
    """
    given: str | None = options["access-log"]
    if given in ("-", "twistd", "none"):
        destination = given
    elif given:
        destination = os.path.abspath(given)
    else:
        destination = _followingTwistd(options.parent)
    parent = options.parent
    if destination == "-" and parent is not None and not parent.get("nodaemon"):
        raise usage.UsageError(
            "--access-log -: a daemon has no standard output; give a file, or run with -n"
        )
    return destination


def _followingTwistd(parent: usage.Options | None) -> str:
    if parent is None:  # not run by twistd: the library's default
        return "twistd"
    if parent.get("syslog") or parent.get("logger"):
        return "twistd"
    logfile = parent.get("logfile")
    if logfile == "-" or (not logfile and parent.get("nodaemon")):
        return "-"
    directory, name = os.path.split(os.path.abspath(logfile or "twistd.log"))
    stem = name[: -len(".log")] if name.endswith(".log") and name != ".log" else name
    return os.path.join(directory, f"{stem}.access.log")


class LoggingEndpointService(StreamServerEndpointService):
    """
    Logs the address it really listens on (a tcp:0 port included). A port
    that cannot listen (an address in use, a port below 1024 without the
    right) stops twistd with one line that names the ``--listen`` value,
    instead of a logged traceback and a process that serves nothing.
    """

    endpointDescription = ""
    #: The command that listens, as the log names it.
    command = "upgradable"

    def __init__(self, endpoint: Any, factory: Any, reactor: Any = None) -> None:
        super().__init__(_NotingFailure(endpoint, self._cannotListen), factory)
        self._reactor = reactor
        self._failure: Failure | None = None
        self._starting = False

    def privilegedStartService(self) -> None:
        self._starting = True
        try:
            super().privilegedStartService()
        finally:
            self._starting = False
        if self._failure is not None:
            # Listening failed at once, as tcp:, ssl: and unix: do.
            raise CannotListen(self._message(self._failure))
        listeningDeferred(self).addCallback(self._listening)

    def _message(self, failure: Failure) -> str:
        return f"--listen {self.endpointDescription}: {failure.getErrorMessage()}"

    def _cannotListen(self, failure: Failure) -> None:
        if self._starting:
            # twistd prints the SystemExit's message (to its log, once it
            # logs stderr there).
            self._failure = failure
        else:  # later, from an endpoint that listens asynchronously
            from twisted.internet import reactor

            _log.error("Stopping: {message}", message=self._message(failure))
            (self._reactor or reactor).stop()

    def _listening(self, port: IListeningPort | None) -> IListeningPort | None:
        if port is not None:
            _log.info(
                "{command} listening on {address} ({description})",
                command=self.command,
                address=str(port.getHost()),
                description=self.endpointDescription,
            )
        return port


@implementer(IStreamServerEndpoint)
class _NotingFailure:
    """An endpoint whose failure to listen goes to ``failed``, not to its caller."""

    def __init__(self, endpoint: Any, failed: Any) -> None:
        self.endpoint = endpoint
        self.failed = failed

    def listen(self, factory: Any) -> Deferred[Any]:
        def noted(failure: Failure) -> Failure | None:
            if failure.check(CancelledError):
                return failure  # stopped before it listened: the service's business
            self.failed(failure)
            return None

        listening: Deferred[Any] = self.endpoint.listen(factory)
        return listening.addErrback(noted)


class DrainingService(MultiService):
    """
    The listening services of one site. Stopping closes the ports first,
    then drains the site's connections (see
    :meth:`~upgradable.UpgradableSite.drain`); a second SIGTERM or SIGINT
    meanwhile closes them all at once.
    """

    #: Whether stopping says in the log which signal cuts the grace period
    #: short (a worker's master says it for all its workers).
    hint = True

    def __init__(self, site: UpgradableSite, grace: float | None) -> None:
        super().__init__()
        self.site = site
        self.grace = grace

    def stopService(self) -> Deferred[Any]:
        stopped: Deferred[Any] = super().stopService()
        signals = onSecondSignal(self._secondSignal)
        return stopped.addCallback(lambda _: self._drain(signals))

    def _drain(self, signals: list[str]) -> Deferred[None]:
        drained = self.site.drain(self.grace)
        left = len(self.site.connections)
        if self.hint and signals and left and self.grace != 0 and not drained.called:
            _log.info(
                "Waiting {grace} for {count} {connections} to end; {signals} again closes "
                "{them} now",
                grace="as long as they last" if self.grace is None else f"up to {self.grace:g} s",
                count=left,
                connections=plural(left, "connection"),
                signals=" or ".join(signals),
                them="it" if left == 1 else "them",
            )
        return drained

    def _secondSignal(self) -> None:
        _log.info(
            "Stop signal again: closing every connection now "
            "(any still open {abortAfter:g} s later is aborted)",
            abortAfter=self.site.connections.abortAfter,
        )
        self.site.closeAll()


def onSecondSignal(action: Any) -> list[str]:
    """
    From now on, have SIGTERM and SIGINT call ``action`` in the reactor
    thread (instead of stopping the reactor, which is stopping already).

    :return: the signals taken over, as a user sends them ("Ctrl-C" for
        SIGINT); none outside the main thread, nor those ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    from twisted.internet import reactor

    def handler(number: int, frame: Any) -> None:
        reactor.callFromThread(action)  # type: ignore[attr-defined]

    taken = []
    for number, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        if callable(signal.getsignal(number)):
            signal.signal(number, handler)
            taken.append(name)
    return taken
