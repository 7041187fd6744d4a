# What a site's access log gets for an upgrade request that never became a
# twisted.web Request: the parts of Request that Twisted's log formatters
# read, with the status it got.
from __future__ import annotations

from typing import Any

from ._core import reasonPhrase
from ._decisions import UpgradeRequest

__all__ = ["AnsweredRequest", "SwitchedRequest"]


class _LoggedRequest:
    """
    The parts of :class:`~twisted.web.http.Request` that Twisted's access
    log formatters read, for an upgrade request that never became one.
    """

    code: int
    code_message: bytes
    sentLength = 0

    def __init__(self, request: UpgradeRequest) -> None:
        self.request = request
        self.method = request.method
        self.uri = request.uri
        self.path = request.path
        self.clientproto = request.version
        self.requestHeaders = request.headers
        self.client = request.peer

    def getClientAddress(self) -> Any:
        return self.client

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None


class SwitchedRequest(_LoggedRequest):
    """
    What a site's access log gets for a request that switched protocols: the
    parts of :class:`~twisted.web.http.Request` that Twisted's log
    formatters read, and the product switched to.

    :ivar product: the product the connection switched to, as the 101 named
        it, e.g. ``b"websocket"``.
    :ivar request: the upgrade request.
    """

    code = 101
    code_message = reasonPhrase(101)

    def __init__(self, request: UpgradeRequest, product: bytes) -> None:
        super().__init__(request)
        self.product = product


class AnsweredRequest(_LoggedRequest):
    """
    What a site's access log gets for an upgrade request that a site's new
    connection answered itself (a Reject, a 500 or a 503): its status and
    the length of the body sent.
    """

    def __init__(self, request: UpgradeRequest, code: int, reason: bytes, sent: int) -> None:
        super().__init__(request)
        self.code = code
        self.code_message = reason
        self.sentLength = sent
