"""
End to end with real software: an unmodified IRC client library reaches a
real IRC server (ngircd) through ``upgradable-tunnel`` -> HTTP Upgrade ->
``twistd upgradable --relay``; and 200 MB each way through tunnel and relay
with a slow reader, byte-exact, with every process's peak memory bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import requirePeer
from .ircchat import EXPECTED, chat
from .test_twistd import HOST, twistd


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def waitForPort(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@contextmanager
def ngircd(tmp: Path) -> Iterator[int]:
    program = requirePeer("ngircd")
    port = freePort()
    run = tmp / "run"
    run.mkdir()
    run.chmod(0o777)  # ngircd drops to nobody
    (tmp / "conf.d").mkdir()
    config = tmp / "ngircd.conf"
    config.write_text(
        f"""[Global]
\tName = irc.test.local
\tInfo = upgradable test ircd
\tListen = {HOST}
\tPorts = {port}
\tPidFile = {run}/ngircd.pid
\tServerUID = 65534
\tServerGID = 65534
[Limits]
\tMaxConnections = 100
\tPingTimeout = 120
[Options]
\tIncludeDir = {tmp}/conf.d
\tDNS = no
\tIdent = no
\tPAM = no
"""
    )
    process = subprocess.Popen(
        [program, "-n", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        waitForPort(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.peers
def test_unmodifiedIRCClientsReachNgircdThroughTunnelAndRelay(tmp_path: Path) -> None:
    with (
        ngircd(tmp_path) as ircPort,
        twistd("--relay", f"IRC/6.9=tcp:{HOST}:{ircPort}") as server,
        twistd("--url", f"http://{HOST}:{server.port}/", "--protocol", "IRC/6.9",
               command="upgradable-tunnel") as tunnel,
    ):  # fmt: skip
        assert "Relay for IRC/6.9 takes it over from protocol irc" in server.log()
        # Plain connections to the tunnel's port: the clients know nothing of HTTP.
        assert chat(HOST, tunnel.port) == EXPECTED
        assert "upgraded to IRC/6.9" in tunnel.log()


def peakMemory(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.peers
def test_twoHundredMegabytesEachWayWithASlowReader() -> None:
    socat = requirePeer("socat")
    size = 200 * 1024 * 1024
    backendPort = freePort()
    backend = subprocess.Popen(
        [socat, f"TCP-LISTEN:{backendPort},bind={HOST},reuseaddr,fork", "EXEC:cat"]
    )
    try:
        waitForPort(backendPort)
        with (
            twistd("--relay", f"BULK/1=tcp:{HOST}:{backendPort}", "--protocol", "http2-echo")
            as server,
            twistd("--url", f"http://{HOST}:{server.port}/", "--protocol", "BULK/1",
                   command="upgradable-tunnel") as tunnel,
        ):  # fmt: skip
            block = os.urandom(1 << 20)
            sock = socket.create_connection((HOST, tunnel.port), timeout=30)

            def send() -> None:
                for _ in range(size // len(block)):
                    sock.sendall(block)
                sock.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            started = time.monotonic()
            sender.start()
            received = 0
            mismatch = None
            view = memoryview(block)
            offset = 0
            while received < size:
                # The first 40 MB are read slowly: 16 KiB a millisecond at most.
                slow = received < 40 * 1024 * 1024
                chunk = sock.recv(16384 if slow else 1 << 20)
                if not chunk:
                    break
                n = len(chunk)
                expected = (
                    bytes(view[offset : offset + n])
                    if offset + n <= len(block)
                    else (bytes(view[offset:]) + bytes(view[: (offset + n) % len(block)]))
                )
                if chunk != expected and mismatch is None:
                    mismatch = received
                received += n
                offset = (offset + n) % len(block)
                if slow:
                    time.sleep(0.001)
            sender.join()
            tail = sock.recv(1)  # the half-close travelled back: EOF
            sock.close()
            elapsed = time.monotonic() - started
            peaks = {
                "server": peakMemory(server.process.pid),
                "tunnel": peakMemory(tunnel.process.pid),
            }
        assert received == size
        assert mismatch is None, f"bytes differ from offset {mismatch}"
        assert tail == b""
        figures = ", ".join(f"{name} {peak / 2**20:.0f} MiB" for name, peak in peaks.items())
        print(f"\n200 MiB each way in {elapsed:.1f} s; peak RSS: {figures}")
        for name, peak in peaks.items():
            assert peak < 150 * 2**20, f"{name} peaked at {peak / 2**20:.0f} MiB"
    finally:
        backend.terminate()
        backend.wait(10)
