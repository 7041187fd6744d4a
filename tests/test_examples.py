"""
The examples in docs/ run as documented: each starts, listens, and upgrades.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
REQUEST = b"GET /demo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n"


@contextmanager
def example(name: str) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), "tcp:0:interface=127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"port=(\d+)", line)
        assert match, line + process.stderr.read() if process.stderr else line
        yield int(match.group(1))
    finally:
        process.terminate()
        process.communicate(timeout=10)


def exchange(port: int, data: bytes, expect: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while len(out) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def test_minimalServerUpgradesToTheEcho() -> None:
    with example("minimal_server.py") as port:
        switch = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\n"
        )
        out = exchange(port, REQUEST + b"\r\nhello", len(switch) + 5)
        assert out == switch + b"hello"


def test_handlerExampleRejectsWithoutTokenAndAcceptsWithIt() -> None:
    with example("handler.py") as port:
        closing = REQUEST.replace(b"Connection: Upgrade", b"Connection: Upgrade, close")
        refused = exchange(port, closing + b"\r\n", 10000)
        assert refused.startswith(b"HTTP/1.1 403 ")
        assert refused.endswith(b"wrong or missing X-Token\n")
        switch = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n"
            b"X-Welcome: /demo\r\n\r\n"
        )
        out = exchange(port, REQUEST + b"X-Token: letmein\r\n\r\nhello", len(switch) + 5)
        assert out == switch + b"hello"


def shoutWithWebsockets(port: int) -> list[object]:
    """What the websockets client sees of the WebSocket example."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/shout"
    seen: list[object] = []
    with connect(url, subprotocols=["shout.v1"], origin="https://example.com") as ws:
        seen.append(ws.subprotocol)
        seen.append(ws.recv(timeout=10))
        ws.send("hi there")
        seen.append(ws.recv(timeout=10))
        ws.send(b"bytes too")
        seen.append(ws.recv(timeout=10))
    try:
        connect(url, origin="https://elsewhere.example", open_timeout=10)
    except InvalidStatus as refused:
        seen.append(refused.response.status_code)
    return seen


def test_websocketExampleShoutsBackAndKeepsItsOrigins() -> None:
    """docs/websocket.rst's Shout, run as written, with a real client."""
    with example("websocket_shout.py") as port:
        seen = shoutWithWebsockets(port)
    assert seen == ["shout.v1", "hello /shout", "HI THERE", b"BYTES TOO", 403]
