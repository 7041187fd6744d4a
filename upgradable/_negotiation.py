# Asking the handlers: one request, the offers a registry serves for it (in
# the client's order), and a carrier that carries the outcome out. The same
# for every carrier: an HTTP/1.1 channel, a site's new connection (the fast
# path), and whatever comes next (an HTTP/2 stream by extended CONNECT).
# Nothing here knows how the request was framed or how an answer is
# written: the carrier is told what to answer.
#
# The rules:
# - handlers are asked one at a time, in the client's order of preference;
#   a Decline passes to the next one, and when none is left the request is
#   served as it is (plain HTTP);
# - an Accept is carried out, unless the limit of upgraded connections was
#   reached meanwhile: then 503 with Retry-After, never a switch;
# - a Reject is the answer, as the handler gave it;
# - a handler that raises, fails its Deferred or answers anything else gets
#   a logged traceback, and the client a 500;
# - an answer still to come (a Deferred, or a coroutine, which becomes one)
#   is cancelled when the carrier goes away (cancel) or its deadline passes
#   (expire: 503, then the connection closes).
from __future__ import annotations

from collections.abc import Callable, Sequence
from inspect import iscoroutine
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from ._core import Product, reasonPhrase
from ._decisions import Accept, Decline, Reject, UpgradeRequest
from .interfaces import IUpgradeHandler

__all__ = ["Carrier", "Negotiation", "ask"]

_log = Logger()

Offer = tuple[Product, IUpgradeHandler]

# No answer given (a handler may answer None, which is a mistake of its own).
_NOTHING: Any = object()


class Carrier(Protocol):
    """What carries a negotiation's outcome out, on its own connection or stream."""

    def accepted(self, product: Product, accept: Accept) -> None:
        """Switch to ``accept.protocol``, naming ``product``."""

    def answered(
        self,
        code: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        close: bool,
    ) -> None:
        """Answer the request with this response, and close after it if ``close``."""

    def declined(self) -> None:
        """No handler switches: serve the request as it is."""

    def broken(self) -> None:
        """The negotiation itself failed (logged): drop the connection."""


def ask(handler: IUpgradeHandler, request: UpgradeRequest, product: Product) -> object:
    """
    ``handler``'s answer: a decision, a Deferred (a coroutine becomes one),
    or the Failure of what it raised.
    """
    try:
        result = handler.upgrade(request, product.raw)
        if iscoroutine(result):
            return ensureDeferred(result)
        return result
    except Exception:
        return Failure()


class Negotiation:
    """
    Asks the handlers of ``offers`` about ``request`` in turn and tells
    ``carrier`` what came of it (see the module's rules).

    :param full: whether the limit of upgraded connections is reached now.
    :param first: the first handler's answer when the carrier asked it
        already (as :func:`ask` gives it); else not given.
    """

    def __init__(
        self,
        carrier: Carrier,
        request: UpgradeRequest,
        offers: Sequence[Offer],
        full: Callable[[], bool],
    ) -> None:
        self.carrier = carrier
        self.request = request
        self.offers = offers
        self.full = full
        #: The answer still to come, if any.
        self.pending: Deferred[Any] | None = None
        self._gone = False
        self._expired = False

    def run(self, first: object = _NOTHING) -> None:
        """Ask the handlers, from the first; ``first``: its answer, if asked already."""
        if self.full():
            if isinstance(first, Deferred):
                first.cancel()
            self._busy()
            return
        self._tryFrom(0, first)

    def cancel(self) -> None:
        """The carrier went away: cancel the answer to come; nothing more is told."""
        self._gone = True
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()

    def expire(self) -> None:
        """The deadline passed: cancel the answer to come, and answer 503 (then close)."""
        if self.pending is not None:
            self._expired = True
            self.pending.cancel()

    def _tryFrom(self, index: int, first: object = _NOTHING) -> None:
        offers = self.offers
        while index < len(offers):
            product, handler = offers[index]
            if first is not _NOTHING:
                result, first = first, _NOTHING
            else:
                result = ask(handler, self.request, product)
            if isinstance(result, Failure):
                self._handlerFailed(product, handler, result)
                return
            if isinstance(result, Deferred):
                self.pending = result
                result.addCallbacks(
                    self._decided,
                    self._decisionFailed,
                    callbackArgs=(index,),
                    errbackArgs=(product, handler),
                )
                result.addErrback(self._bug)
                return
            if not self._apply(product, handler, result):
                return
            index += 1
        self.carrier.declined()

    def _decided(self, decision: object, index: int) -> None:
        self.pending = None
        if self._gone:
            return
        product, handler = self.offers[index]
        if self._apply(product, handler, decision):
            self._tryFrom(index + 1)

    def _decisionFailed(self, failure: Failure, product: Product, handler: IUpgradeHandler) -> None:
        self.pending = None
        if self._expired and failure.check(CancelledError):
            self.carrier.answered(503, reasonPhrase(503), [(b"Retry-After", b"5")],
                                  b"The upgrade was not decided in time\n", True)  # fmt: skip
            return
        if self._gone:
            if not failure.check(CancelledError):
                _log.failure(
                    "Upgrade handler {handler!r} failed for {product} after the client left",
                    failure,
                    handler=handler,
                    product=product.raw.decode("ascii"),
                )
            return
        self._handlerFailed(product, handler, failure)

    def _bug(self, failure: Failure) -> None:
        """A failure in the carrier itself: log it and drop the connection."""
        _log.failure("Upgrade failed; closing the connection", failure)
        self.carrier.broken()

    def _apply(self, product: Product, handler: IUpgradeHandler, decision: object) -> bool:
        """Carry out a handler's decision; True means "declined, try the next"."""
        if isinstance(decision, Decline):
            return True
        if isinstance(decision, Accept):
            if self.full():
                self._busy()  # filled up while the handler was deciding
            else:
                self.carrier.accepted(product, decision)
        elif isinstance(decision, Reject):
            self.carrier.answered(
                decision.code, decision.reason, decision.headers, decision.body, decision.close
            )
        else:
            error = TypeError(
                f"{handler!r}.upgrade returned {decision!r}; expected Accept, Decline or Reject"
            )
            self._handlerFailed(product, handler, Failure(error))
        return False

    def _busy(self) -> None:
        # Never a 101 beyond the limit: 503 with a hint when to come back.
        self.carrier.answered(503, reasonPhrase(503), [(b"Retry-After", b"1")],
                              b"Too many upgraded connections\n", False)  # fmt: skip

    def _handlerFailed(self, product: Product, handler: IUpgradeHandler, failure: Failure) -> None:
        _log.failure(
            "Upgrade handler {handler!r} failed for {product}",
            failure,
            handler=handler,
            product=product.raw.decode("ascii"),
        )
        self.carrier.answered(500, RESPONSES[500], (), b"Internal Server Error\n", False)
