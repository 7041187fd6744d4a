# Reason phrases. Twisted's RESPONSES predates RFC 6585 and RFC 9110's new
# codes; these fill the gaps with the RFC 9110 §15 / RFC 6585 phrases.
from __future__ import annotations

from twisted.web.http import RESPONSES

__all__ = ["reasonPhrase"]

_EXTRA = {
    421: b"Misdirected Request",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}


def reasonPhrase(code: int) -> bytes:
    """The reason phrase for ``code``, or ``b"Error"`` for unknown codes."""
    reason = RESPONSES.get(code) or _EXTRA.get(code)
    return reason if reason is not None else b"Error"
