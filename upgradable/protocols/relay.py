"""
Relays: an accepted upgrade connects to a TCP (or any stream) backend and
copies bytes both ways, so any TCP service can sit behind one HTTP port
(``twistd upgradable --relay IRC/6.9=tcp:127.0.0.1:6667``).

The backend is connected *before* the answer: a backend that refuses or is
down gets ``502 Bad Gateway``, one that does not answer in time ``503``
with ``Retry-After``, never a ``101`` followed by a close. Bytes the backend
sends before the switch (an IRC server's greeting) wait and follow the
``101``. A backend that goes away closes the client side after what it sent
is delivered.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from .._decisions import Accept, Decision, Decline, Reject, UpgradeRequest
from ..interfaces import IUpgradeHandler
from ._bridge import Relay

__all__ = ["RelayHandler"]

_log = Logger()


@implementer(IUpgradeHandler)
class RelayHandler:
    """
    Accept upgrades by connecting ``endpoint`` and relaying to it.

    :param reactor: for the connect timeout.
    :param endpoint: where the backend listens.
    :param description: how to name the backend in logs.
    :param timeout: seconds to wait for the backend to connect.
    """

    def __init__(
        self, reactor: Any, endpoint: IStreamClientEndpoint, description: str, timeout: float = 10
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.description = description
        self.timeout = timeout

    async def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        if request.method == b"HEAD":
            return Decline()
        relay = Relay()
        attempt = self.endpoint.connect(Factory.forProtocol(lambda: relay.b))
        timedOut: list[bool] = []

        def expire() -> None:
            timedOut.append(True)
            attempt.cancel()

        timer = self.reactor.callLater(self.timeout, expire)
        try:
            await attempt
        except (CancelledError, error.ConnectingCancelledError):
            if not timedOut:
                raise CancelledError() from None  # the client went away: stop connecting
            _log.warn(
                "Backend {backend} did not answer in {timeout} s",
                backend=self.description,
                timeout=self.timeout,
            )
            return Reject(503, [(b"Retry-After", b"5")], b"The backend did not answer in time\n")
        except (error.ConnectError, OSError) as reason:
            _log.warn(
                "Backend {backend} refused the relay for {peer}: {reason}",
                backend=self.description,
                peer=str(request.peer),
                reason=str(reason),
            )
            return Reject(502, body=b"The backend is not reachable\n")
        finally:
            if timer.active():
                timer.cancel()
        # If the client is gone by now the channel drops this Accept; do not
        # leave the backend connection open behind it.
        self.reactor.callLater(self.timeout, self._abandoned, relay)
        return Accept(relay.a)

    def _abandoned(self, relay: Relay) -> None:
        if not relay.started and not relay.closed:
            relay.close()
