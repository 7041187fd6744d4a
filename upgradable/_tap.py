# What the twistd plugins share.
from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

__all__ = ["LoggingEndpointService"]

_log = Logger()


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
