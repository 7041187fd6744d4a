# What every protocol here that registers as its transport's producer must
# do to close: a registered producer keeps TLS's loseConnection from ever
# closing (twisted/protocols/tls.py), so unregister it first.
from __future__ import annotations

from typing import Any

__all__ = ["closeTransport"]


def closeTransport(transport: Any) -> None:
    """Unregister any producer, then close once pending writes are flushed."""
    try:
        transport.unregisterProducer()
    except RuntimeError:
        pass  # none was registered (an in-memory transport says so loudly)
    transport.loseConnection()
