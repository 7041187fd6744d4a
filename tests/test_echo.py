"""The http2-echo sample: byte-exact, and it respects flow control."""

from __future__ import annotations

from upgradable.protocols.echo import EchoProtocol

from .helpers import ECHO_REQ, standardServer


def test_echoRegistersAsProducerAndPausesReadingWhenTheBufferIsFull() -> None:
    server, _ = standardServer()
    server.send(ECHO_REQ)
    echo = server.transport.producer
    assert isinstance(echo, EchoProtocol)
    assert server.transport.streaming
    # The transport's buffer is full: the echo stops reading from the peer...
    echo.pauseProducing()
    assert server.transport.producerState == "paused"
    # ... and reads again once it drains.
    echo.resumeProducing()
    assert server.transport.producerState == "producing"


def test_halfCloseFinishesWritingThenCloses() -> None:
    server, _ = standardServer()
    server.send(ECHO_REQ + b"last words")
    echo = server.transport.producer
    echo.readConnectionLost()
    assert server.closed
    # The echo is written before the close, and the close lets it be sent
    # (loseConnection, not an abort); nothing is written after it.
    calls = server.transport.calls
    assert calls[1:] == [("write", b"last words"), ("loseConnection", b"")]
    assert server.transport.producer is None  # unregistered, or TLS would not close
