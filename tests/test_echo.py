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
    assert server.output().endswith(b"last words")
