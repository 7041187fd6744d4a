"""
A client that writes without ever reading, against a real ``twistd -n
upgradable`` process: every protocol must stop reading from a peer whose
replies it cannot deliver, so its memory stays flat and the client's sends
block.

Each attack upgrades one loopback connection whose receive buffer is small
(``SO_RCVBUF``), then for a few seconds writes as fast as the server takes
bytes, never reading, and compares the server's resident memory
(``/proc/PID/status``) before and after. A server that goes on reading and
queues its answers grows by hundreds of megabytes in that time; one that
pauses reading grows by its transport's buffer and some allocator noise.

To attack another protocol, add an :class:`Attack` to ``ATTACKS``: the
server's arguments, the upgrade request, and the bytes to flood with (and,
to check that the connection works again once the client reads, a probe
and its answer).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import chain, cycle
from pathlib import Path

import pytest
from hpack import Encoder

from .test_twistd import HOST, read101, twistd

#: How long each attack writes, in seconds.
SECONDS = 3.0
#: The most the server's memory may grow while it is attacked. A server that
#: stops reading holds its transport's buffer (64 KiB before it pauses, plus
#: what one read of 64 KiB makes it write) and allocator noise; one that
#: buffers without bound grows by tens of megabytes a second.
BOUND = 16 * 2**20
#: How long a paused connection may take to answer once the client reads:
#: the server first works through the megabytes the sockets' buffers hold.
PROBE_SECONDS = 30.0
#: The client's receive buffer: the server's answers fill it at once.
RCVBUF = 4096

Flood = Callable[[], Iterator[bytes]]


def repeated(data: bytes, size: int = 1 << 16) -> Flood:
    """A flood of ``data``, over and over, in chunks of about ``size`` bytes."""
    block = data * max(1, size // len(data))

    def flood() -> Iterator[bytes]:
        while True:
            yield block

    return flood


@dataclass
class Attack:
    """
    One way to make a server write to a client that never reads.

    :ivar args: ``twistd upgradable`` arguments; ``{backend}`` is replaced by
        the port of ``backend``'s server, if any.
    :ivar request: the upgrade request, sent first; the server must answer 101.
    :ivar flood: the bytes sent after the 101, as fast as the server reads them.
    :ivar backend: a context manager giving the port of a server the attack
        needs (a relay's backend).
    :ivar staysOpen: whether the server keeps the connection (it stops
        reading and waits for the client to read) rather than closing it,
        which it does only for a client that breaks the protocol's rules.
    """

    name: str
    args: tuple[str, ...]
    request: bytes
    flood: Flood
    backend: Callable[[], AbstractContextManager[int | None]] = field(
        default=lambda: nullcontext(None)
    )
    staysOpen: bool = True
    #: Sent when the client starts reading after the flood, with what the
    #: server must then answer: the paused connection works again.
    probe: tuple[bytes, bytes] | None = None


def upgradeRequest(token: bytes, *fields: bytes) -> bytes:
    head = [b"GET / HTTP/1.1", b"Host: " + HOST.encode(), b"Connection: Upgrade"]
    return b"\r\n".join([*head, b"Upgrade: " + token, *fields, b"", b""])


# HTTP/2 (RFC 9113 §4.1): length, type, flags, stream.
def h2frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2frame(0x4, 0, 0)
H2C_REQ = upgradeRequest(b"h2c", b"HTTP2-Settings: AAMAAABkAAQAAP__")


def h2c(frames: Flood) -> Flood:
    """The client preface, then ``frames``."""

    def flood() -> Iterator[bytes]:
        yield _PREFACE
        yield from frames()

    return flood


_PING = h2frame(0x6, 0, 0, b"12345678")
# RFC 9113 §6.7: the answer to a PING is a PING with the ACK flag, same payload.
H2C_PROBE = (h2frame(0x6, 0, 0, b"probe-ok"), h2frame(0x6, 0x1, 0, b"probe-ok"))


def h2Requests(count: int | None) -> Iterator[bytes]:
    """
    ``GET /`` on streams 3, 5, 7, ... (1 is the upgrade's): ``count`` of
    them, then PINGs; or requests without end when ``count`` is None.
    """
    encoder = Encoder()
    stream = 3
    while count is None or stream < 3 + 2 * count:
        block = []
        for _ in range(min(512, (3 + 2 * count - stream) // 2) if count else 512):
            headers = encoder.encode(
                [(":method", "GET"), (":scheme", "http"), (":authority", HOST), (":path", "/")]
            )
            block.append(h2frame(0x1, 0x5, stream, headers))  # END_STREAM | END_HEADERS
            stream += 2
        yield b"".join(block)
    yield from repeated(_PING)()


# WebSocket (RFC 6455 §5.2): client frames are masked.
def wsframe(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    mask = os.urandom(4)
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def deflated(payload: bytes) -> bytes:
    """``payload`` compressed alone (RFC 7692 §7.2.1, no context takeover)."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
_VERSION = b"Sec-WebSocket-Version: 13"
WS_REQ = upgradeRequest(b"websocket", _KEY, _VERSION)
# Neither side keeps its compression context, so that each of the server's
# echoes is as large as the random message it answers.
WS_DEFLATE_REQ = upgradeRequest(
    b"websocket",
    _KEY,
    _VERSION,
    b"Sec-WebSocket-Extensions: permessage-deflate; "
    b"client_no_context_takeover; server_no_context_takeover",
)
WS_CONTEXT_REQ = upgradeRequest(
    b"websocket",
    _KEY,
    _VERSION,
    b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover",
)
_MESSAGE = os.urandom(8192)
_MESSAGES = [os.urandom(8192) for _ in range(8)]
# RFC 6455 §5.5.3: a pong carries the ping's payload (unmasked from the server).
WS_PROBE = (wsframe(0x9, b"probe-ok"), b"\x8a\x08probe-ok")


@contextmanager
def backend(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback server that runs ``serve`` on each connection, in a thread."""
    listener = socket.create_server((HOST, 0))
    connections: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=guarded, args=(connection,), daemon=True).start()

    def guarded(connection: socket.socket) -> None:
        try:
            serve(connection)
        except OSError:
            pass  # closed at the end of the test

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        for connection in connections:
            connection.close()


def echoing(connection: socket.socket) -> None:
    while data := connection.recv(1 << 16):
        connection.sendall(data)


def stalled(connection: socket.socket) -> None:
    """Never read (the connection stays open until the test ends)."""


def flooding(connection: socket.socket) -> None:
    block = os.urandom(1 << 16)
    while True:
        connection.sendall(block)


def nothing() -> Iterator[bytes]:
    """No bytes from the client: the backend floods."""
    return iter(())


ATTACKS = [
    Attack("h2c-ping", (), H2C_REQ, h2c(repeated(_PING)), probe=H2C_PROBE),
    Attack("h2c-settings", (), H2C_REQ, h2c(repeated(h2frame(0x4, 0, 0))), probe=H2C_PROBE),
    # As many requests as the server allows at once (SETTINGS_MAX_CONCURRENT_STREAMS,
    # 100 with stream 1), their responses never read, then PINGs.
    Attack("h2c-requests", (), H2C_REQ, h2c(lambda: h2Requests(99)), probe=H2C_PROBE),
    # Beyond the limit: a protocol error (RFC 9113 §5.1.2), the server closes.
    Attack(
        "h2c-requests-beyond-limit",
        (),
        H2C_REQ,
        h2c(lambda: h2Requests(None)),
        staysOpen=False,
    ),
    Attack("websocket-ping", (), WS_REQ, repeated(wsframe(0x9, b"p" * 125)), probe=WS_PROBE),
    Attack("websocket-echo", (), WS_REQ, repeated(wsframe(0x2, _MESSAGE)), probe=WS_PROBE),
    Attack(
        "websocket-echo-deflate",
        (),
        WS_DEFLATE_REQ,
        repeated(wsframe(0x2, deflated(_MESSAGE), rsv1=True)),
        probe=WS_PROBE,
    ),
    # The server keeps its compression context: messages it has not seen in
    # its 32 KiB window, each as large compressed as it is.
    Attack(
        "websocket-echo-deflate-context",
        (),
        WS_CONTEXT_REQ,
        lambda: iter(cycle([b"".join(wsframe(0x2, deflated(m), rsv1=True) for m in _MESSAGES)])),
        probe=WS_PROBE,
    ),
    # 1 MiB of zeros in about 1 KiB, inflated, echoed and deflated again: a
    # read holds some sixty of them. (No probe: the megabytes the sockets
    # hold take the server a minute of inflating to work through.)
    Attack(
        "websocket-echo-deflate-inflating",
        (),
        WS_DEFLATE_REQ,
        repeated(wsframe(0x2, deflated(bytes(1 << 20)), rsv1=True)),
    ),
    Attack(
        "echo",
        (),
        upgradeRequest(b"HTTP/2.0"),
        repeated(os.urandom(1 << 16)),
        probe=(b"probe: echoed", b"probe: echoed"),
    ),
    Attack(
        "relay-echo",
        ("--relay", f"FLOOD/1=tcp:{HOST}:{{backend}}"),
        upgradeRequest(b"FLOOD/1"),
        repeated(os.urandom(1 << 16)),
        lambda: backend(echoing),
        probe=(b"probe: echoed", b"probe: echoed"),
    ),
    Attack(
        "relay-stalled-backend",
        ("--relay", f"FLOOD/1=tcp:{HOST}:{{backend}}"),
        upgradeRequest(b"FLOOD/1"),
        repeated(os.urandom(1 << 16)),
        lambda: backend(stalled),
    ),
    Attack(
        "relay-flood",
        ("--relay", f"FLOOD/1=tcp:{HOST}:{{backend}}"),
        upgradeRequest(b"FLOOD/1"),
        nothing,
        lambda: backend(flooding),
    ),
    # Every PING makes the IRC server write a PONG.
    Attack(
        "irc-ping",
        (),
        upgradeRequest(b"IRC/6.9"),
        lambda: chain([b"NICK flooder\r\nUSER flooder 0 * :f\r\n"], repeated(b"PING :x\r\n")()),
        probe=(b"PING :probe\r\n", b"probe"),
    ),
]


def residentMemory(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of ``/proc/PID/status`` (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@dataclass
class Outcome:
    """What an attack did to the server."""

    growth: int
    sent: int
    closed: bool
    unsent: bytes

    def __str__(self) -> str:
        how = "closed by the server" if self.closed else "still open"
        return f"RSS +{self.growth / 2**20:.1f} MiB, {self.sent / 2**20:.1f} MiB sent, {how}"


def upgraded(port: int, request: bytes) -> socket.socket:
    """A connection with a small receive buffer, upgraded by ``request``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before the handshake
    sock.settimeout(10)
    sock.connect((HOST, port))
    sock.sendall(request)
    return read101(sock)


def flood(pid: int, sock: socket.socket, data: Flood, seconds: float) -> Outcome:
    """
    Write ``data`` to ``sock`` for ``seconds``, never reading; measure the
    growth of ``pid``'s peak resident memory from before the first byte.
    """
    before = residentMemory(pid)
    sock.setblocking(False)
    chunks = data()
    pending = b""
    sent = 0
    closed = False
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not pending:
            pending = next(chunks, b"")
            if not pending:
                time.sleep(min(left, 0.05))  # nothing to send: the backend floods
                continue
        _, writable, _ = select.select([], [sock], [], min(left, 0.1))
        if not writable:
            continue
        try:
            n = sock.send(pending)
        except BlockingIOError:
            continue
        except OSError:
            closed = True
            break
        sent += n
        pending = pending[n:]
    growth = residentMemory(pid, "VmHWM") - before
    return Outcome(growth, sent, closed, pending)


def answered(sock: socket.socket, data: bytes, expected: bytes, seconds: float) -> bool:
    """
    Whether ``expected`` arrives within ``seconds`` once ``sock`` reads
    everything and sends ``data``.
    """
    seen = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, writable, _ = select.select([sock], [sock] if data else [], [], min(left, 0.1))
        if writable:
            try:
                data = data[sock.send(data) :]
            except BlockingIOError:
                pass
        if readable:
            try:
                chunk = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return False
            seen = seen[-len(expected) :] + chunk
            if expected in seen:
                return True
    return False


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_aClientThatNeverReadsCannotMakeTheServerBuffer(attack: Attack) -> None:
    """
    A client that writes for a few seconds and never reads grows the
    server's memory by less than ``BOUND``: the server stops reading once
    what it answers cannot be delivered, and keeps the connection (or, for a
    client that breaks the protocol's limits, closes it).
    """
    with attack.backend() as port:
        args = [arg.format(backend=port) for arg in attack.args]
        # Stopping aborts what is left at once: a relay's backend that never
        # reads would otherwise hold its connection for the grace period.
        with twistd("--grace-period", "0", *args) as server:
            sock = upgraded(server.port, attack.request)
            with sock:
                outcome = flood(server.process.pid, sock, attack.flood, SECONDS)
                print(f"\n{attack.name}: {outcome}")
                assert outcome.growth < BOUND, f"{attack.name}: {outcome}"
                assert outcome.closed is not attack.staysOpen, f"{attack.name}: {outcome}"
                if attack.probe is not None:
                    started = time.monotonic()
                    probe, expected = attack.probe
                    assert answered(sock, outcome.unsent + probe, expected, PROBE_SECONDS)
                    print(f"answered after {time.monotonic() - started:.1f} s of reading")
            assert server.process.poll() is None, server.log()
            assert "Traceback" not in server.log(), server.log()
