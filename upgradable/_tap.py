# What the twistd plugins share.
from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ._site import UpgradableSite

__all__ = ["DrainingService", "LoggingEndpointService", "onSecondSignal", "printVersion"]

_log = Logger()


def printVersion() -> None:
    """``--version`` of the twistd commands: upgradable's version, and Twisted's; then exit 0."""
    from twisted import copyright

    from ._version import __version__

    sys.stdout.write(f"upgradable {__version__}\nTwisted {copyright.version}\n")
    sys.stdout.flush()
    sys.exit(0)


class LoggingEndpointService(StreamServerEndpointService):
    """Logs the address it really listens on (a tcp:0 port included)."""

    endpointDescription = ""

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        _log.info(
            "upgradable listening on {address} ({description})",
            address=str(port.getHost()),
            description=self.endpointDescription,
        )
        return port


class DrainingService(MultiService):
    """
    The listening services of one site. Stopping closes the ports first,
    then drains the site's connections (see
    :meth:`~upgradable.UpgradableSite.drain`); a second SIGTERM or SIGINT
    meanwhile closes them all at once.
    """

    def __init__(self, site: UpgradableSite, grace: float | None) -> None:
        super().__init__()
        self.site = site
        self.grace = grace

    def stopService(self) -> Deferred[Any]:
        stopped: Deferred[Any] = super().stopService()
        onSecondSignal(self._secondSignal)
        return stopped.addCallback(lambda _: self.site.drain(self.grace))

    def _secondSignal(self) -> None:
        _log.info("Stop signal again: closing every connection now")
        self.site.closeAll()


def onSecondSignal(action: Any) -> None:
    """
    From now on, have SIGTERM and SIGINT call ``action`` in the reactor
    thread (instead of stopping the reactor, which is stopping already).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    from twisted.internet import reactor

    def handler(number: int, frame: Any) -> None:
        reactor.callFromThread(action)  # type: ignore[attr-defined]

    for number in (signal.SIGTERM, signal.SIGINT):
        if callable(signal.getsignal(number)):
            signal.signal(number, handler)
