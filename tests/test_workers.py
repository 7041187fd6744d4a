"""
``twistd -n upgradable --workers N``: one master binds the sockets, N worker
processes accept on them; real processes, real sockets.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import requirePeer
from .test_twistd import HOST, Twistd, readAll, sigtermWithIRC, twistd, upgradedSocket

ECHO = b"HTTP/2.0"


def waitFor(condition: Callable[[], object], seconds: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def workerPids(server: Twistd) -> dict[int, list[int]]:
    """Every pid each worker number had, in order."""
    pids: dict[int, list[int]] = {}
    for number, pid in re.findall(r"Worker (\d+) started \(pid (\d+)\)", server.log()):
        pids.setdefault(int(number), []).append(int(pid))
    return pids


def echoOnce(port: int, payload: bytes = b"ping") -> None:
    sock = upgradedSocket(port, ECHO)
    sock.settimeout(10)
    sock.sendall(payload)
    data = b""
    while len(data) < len(payload):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data == payload
    sock.close()


def test_workersShareThePortAndEachServesConnections() -> None:
    # --access-log twistd: the workers' access lines come through the
    # master's log, each with the worker's number.
    with twistd("--workers", "2", "--access-log", "twistd") as server:
        waitFor(lambda: server.log().count("[worker") and len(workerPids(server)) == 2, what="2")
        assert "shared by 2 workers" in server.log()
        # Twisted's own line for the master's socket names what it is for.
        assert re.search(
            r"\] upgradable master \(for its workers\) starting on \d+\n", server.log()
        )
        assert "_NeverAccepts" not in server.log()
        served: set[str] = set()
        for _ in range(20):  # bounded: rounds of concurrent connections
            sockets = [upgradedSocket(server.port, ECHO) for _ in range(20)]
            for sock in sockets:
                sock.settimeout(10)
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
                sock.close()
            served = set(re.findall(r'\[(worker \d)\] ".*" 101 .*"HTTP/2\.0"\n', server.log()))
            if served == {"worker 1", "worker 2"}:
                break
        assert served == {"worker 1", "worker 2"}
        pids = workerPids(server)
        assert all(len(p) == 1 for p in pids.values())
        assert server.process.pid not in {p[0] for p in pids.values()}
    assert "Traceback" not in server.log()


def test_aKilledWorkerIsReplacedAndNoConnectionIsRefusedMeanwhile() -> None:
    with twistd("--workers", "2") as server:
        waitFor(lambda: "[worker 2] upgradable listening" in server.log()
                and "[worker 1] upgradable listening" in server.log(), what="workers")  # fmt: skip
        victim = workerPids(server)[1][0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(30):  # at once, while worker 1 is gone and being replaced
            echoOnce(server.port)
        waitFor(lambda: len(workerPids(server).get(1, [])) == 2, what="a new worker 1")
        assert f"Worker 1 (pid {victim}) ended by itself" in server.log()
        waitFor(lambda: server.log().count("[worker 1] upgradable listening") == 2, what="ready")
        echoOnce(server.port)
    assert "Traceback" not in server.log()


def test_sigtermDrainsEveryWorkerThenTheMasterExits() -> None:
    with twistd("--workers", "2", "--grace-period", "1", "--protocol", "irc") as server:
        waitFor(lambda: server.log().count("upgradable listening") == 3, what="workers")
        code, elapsed, rest = sigtermWithIRC(server, 15)
        pids = [p[0] for p in workerPids(server).values()]
    assert code == -signal.SIGTERM
    assert 1 <= elapsed < 8
    assert rest == b"ERROR :Closing Link: server shutting down\r\n"
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    log = server.log()
    assert log.count("stopped: exited") == 2
    # The master says once what a second signal does; the workers do not.
    assert (
        log.count(
            "Asked 2 workers to stop; each lets its connections go on for up to 1 s, "
            "and Ctrl-C or SIGTERM again closes them now"
        )
        == 1
    )
    assert "Waiting up to" not in log
    assert "Traceback" not in log


def test_workersStopWhenTheMasterDies() -> None:
    with twistd("--workers", "2") as server:
        waitFor(lambda: server.log().count("upgradable listening") == 3, what="workers")
        pids = [p[0] for p in workerPids(server).values()]
        server.process.kill()
        server.process.wait(10)

        def gone() -> bool:
            for pid in pids:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
                if "zombie" not in status.lower():
                    return False
            return True

        waitFor(gone, what="the workers to stop")


@pytest.mark.peers
def test_theProxyProtocolAndTLSWorkInWorkers(certificate: Path) -> None:
    curl = requirePeer("curl")
    key = certificate
    with twistd(
        "--workers", "2",
        "--listen", f"haproxy:tcp:0:interface={HOST}",
        "--listen", f"ssl:0:interface={HOST}:privateKey={key}",
    ) as server:  # fmt: skip
        waitFor(lambda: server.log().count("upgradable listening") == 9, what="workers")
        ports = [int(p) for p in re.findall(r"port=(\d+)\) \([^)]*\), shared by", server.log())]
        plain, proxied, tls = ports
        sock = socket.create_connection((HOST, proxied), timeout=10)
        sock.sendall(
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 80\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\nhi"
        )
        data = b""
        while not data.endswith(b"hi"):
            data += sock.recv(4096)
        sock.close()
        # The workers write their access lines to the master's standard
        # output (--access-log's default under -n).
        waitFor(lambda: '"192.0.2.7" - - ' in server.log(), what="the client address")
        result = subprocess.run(
            [curl, "-sk", f"https://{HOST}:{tls}/healthz"], capture_output=True, timeout=30
        )
        assert result.stdout == b"ok\n"
        echoOnce(plain)
    assert "Traceback" not in server.log()


def test_aPortInUseStopsTheMasterBeforeAnyWorkerStarts() -> None:
    from .test_twistd import TWISTD

    taken = socket.socket()
    taken.bind((HOST, 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [*TWISTD, "--pidfile=", "-n", "upgradable", "--workers", "2",
             "--listen", f"tcp:{port}:interface={HOST}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Address already in use" in output
    assert "Worker 1 started" not in output


def test_aWorkersEventsReachTheMastersObserversAsText() -> None:
    import io

    from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher

    from upgradable.app._worker import relayTo
    from upgradable.app._workers import WorkerPool, _Worker

    out = io.StringIO()
    log = Logger(observer=relayTo(out), namespace="some.module")
    log.info("Upgraded {peer} to {product}", peer="p{1}", product="IRC/6.9")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("It broke")
    out.write("not json from a print()\n")
    seen: list[dict[str, object]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        worker = _Worker(WorkerPool([], [], 1, 0), 3)
        worker.outReceived(out.getvalue().encode()[:10])  # lines may arrive in pieces
        worker.outReceived(out.getvalue().encode()[10:])
    finally:
        globalLogPublisher.removeObserver(seen.append)
    texts = [(e["log_level"], e.get("log_system"), formatEvent(e)) for e in seen]
    assert texts[0] == (LogLevel.info, "worker 3", "Upgraded p{1} to IRC/6.9")
    assert seen[0]["log_namespace"] == "some.module"
    assert texts[1][0] == LogLevel.critical and texts[1][2].startswith("It broke\n")
    assert "ZeroDivisionError" in texts[1][2] and "Traceback" in texts[1][2]
    assert "not json from a print()" in texts[2][2]


def test_aSigtermToTheWholeProcessGroupStillGivesTheGracePeriod() -> None:
    """systemd's default KillMode signals every process: the workers must
    take it as their first stop signal, not the master's second."""
    with twistd("--workers", "2", "--grace-period", "3", "--protocol", "irc",
                session=True) as server:  # fmt: skip
        waitFor(lambda: server.log().count("upgradable listening") == 3, what="workers")
        sockets = []
        for number in range(6):
            sock = upgradedSocket(server.port, b"IRC/6.9")
            sock.sendall(b"NICK u%d\r\nUSER u 0 * :U\r\n" % number)
            sock.settimeout(10)
            assert b" 001 u%d " % number in sock.recv(4096)
            sockets.append(sock)
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        time.sleep(1)
        for sock in sockets:  # within the grace period: every session still answers
            sock.sendall(b"PING :still\r\n")
            assert b"PONG" in sock.recv(4096)
        ended = [readAll(sock) for sock in sockets]
        elapsed = time.monotonic() - started
        for sock in sockets:
            sock.close()
        server.process.wait(15)
    assert all(rest.endswith(b"ERROR :Closing Link: server shutting down\r\n") for rest in ended)
    assert 3 <= elapsed < 9
    assert "closing every connection now" not in server.log()
    assert "Traceback" not in server.log()


def test_aWorkerOnAUnixSocketCanBeReplacedWithoutLosingThePath(tmp_path: Path) -> None:
    path = tmp_path / "upgradable.sock"
    with twistd("--workers", "2", "--listen", f"unix:{path}:mode=600") as server:
        waitFor(lambda: server.log().count("upgradable listening") == 6, what="workers")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        victim = workerPids(server)[1][0]
        os.kill(victim, signal.SIGTERM)  # a worker stops cleanly, and is replaced
        waitFor(lambda: len(workerPids(server).get(1, [])) == 2, what="a new worker 1")
        waitFor(lambda: server.log().count("[worker 1] upgradable listening") == 4, what="ready")
        assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
        for _ in range(10):
            client = socket.socket(socket.AF_UNIX)
            client.settimeout(10)
            client.connect(str(path))
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                           b"Upgrade: HTTP/2.0\r\n\r\nunix")  # fmt: skip
            data = b""
            while not data.endswith(b"unix"):
                chunk = client.recv(4096)
                assert chunk, data
                data += chunk
            client.close()
    assert "Traceback" not in server.log()
