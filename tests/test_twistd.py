"""
A real ``twistd -n upgradable`` process, driven by real clients: the ``irc``
library from PyPI, curl, and plain sockets.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from twisted import version as twistedVersion

from .conftest import requirePeer
from .ircchat import EXPECTED, chat

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# twistd as this interpreter runs it, wherever its script was installed.
TWISTED = (twistedVersion.major, twistedVersion.minor)
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


@dataclass
class Twistd:
    process: subprocess.Popen[str]
    port: int
    output: list[str]

    def log(self) -> str:
        return "".join(self.output)


@contextmanager
def twistd(
    *args: str,
    env: dict[str, str] | None = None,
    command: str = "upgradable",
    session: bool = False,
    asDocumented: bool = False,
    cwd: Path | None = None,
) -> Iterator[Twistd]:
    """
    A twistd process; ``session``: in a process group of its own;
    ``asDocumented``: without the ``--pidfile=`` the tests add elsewhere.
    """
    process = subprocess.Popen(
        [*TWISTD, *([] if asDocumented else ["--pidfile="]), "-n", command,
         "--listen", f"tcp:0:interface={HOST}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=session,
        cwd=cwd,
    )  # fmt: skip
    output: list[str] = []
    found = threading.Event()
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            match = re.search(r"upgradable(?:-tunnel)? listening on .*port=(\d+)", line)
            if match and not port:
                port.append(int(match.group(1)))
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert found.wait(30) and port, "twistd did not start:\n" + "".join(output)
        yield Twistd(process, port[0], output)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        reader.join(5)
        assert process.stdout is not None
        process.stdout.close()


def upgradedSocket(
    port: int, token: bytes, extra: bytes = b"", path: bytes = b"/"
) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(
        b"GET " + path + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
        b"Connection: Upgrade\r\nUpgrade: " + token + b"\r\n" + extra + b"\r\n"
    )
    return read101(sock)


def read101(sock: socket.socket) -> socket.socket:
    """Read a ``101`` head one byte at a time, so nothing after it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def test_startUpLogsNameAddressesAndProtocols() -> None:
    with twistd("--listen", f"tcp:0:interface={HOST}") as server:
        time.sleep(0.5)
        log = server.log()
        assert len(re.findall(r"upgradable listening on IPv4Address", log)) == 2
        assert "Protocol irc enabled: Upgrade: IRC/6.9" in log
        assert "Protocol http2-echo enabled: Upgrade: HTTP/2.0" in log
        assert "Starting factory" not in log and " object at 0x" not in log


def test_twoIRCClientsFromPyPIChatThroughTheUpgrade() -> None:
    with twistd() as server:

        def connectFactory(address: tuple[str, int]) -> socket.socket:
            return upgradedSocket(address[1], b"IRC/6.9")

        assert chat(HOST, server.port, connectFactory) == EXPECTED


def test_echoReturnsTenMegabytesByteExact() -> None:
    payload = os.urandom(10 * 1024 * 1024)
    with twistd("--protocol", "http2-echo") as server:
        sock = upgradedSocket(server.port, b"HTTP/2.0")
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            chunk = sock.recv(1 << 20)
            assert chunk
            received += chunk
        sender.join()
        sock.close()
        assert received == payload


@pytest.mark.peers
def test_plainGetGetsTheBuiltInPage() -> None:
    curl = requirePeer("curl")
    with twistd() as server:
        out = subprocess.run(
            [curl, "-si", f"http://{HOST}:{server.port}/"], capture_output=True, check=True
        ).stdout
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"Upgrade: h2c, HTTP/2.0, IRC/6.9" in out
    assert b"<code>Upgrade: IRC/6.9</code>" in out
    assert f"TCP:{HOST}:{server.port}".encode() in out


@pytest.mark.peers
def test_pathServesTheDirectory(tmp_path: Path) -> None:
    curl = requirePeer("curl")
    (tmp_path / "hello.txt").write_text("static hello\n")
    with twistd("--path", str(tmp_path)) as server:
        out = subprocess.run(
            [curl, "-s", f"http://{HOST}:{server.port}/hello.txt"], capture_output=True, check=True
        ).stdout
    assert out == b"static hello\n"


@pytest.mark.peers
def test_authRefusesAWrongPasswordWith401AndAcceptsTheRightOne() -> None:
    curl = requirePeer("curl")
    with twistd("--auth", "memory:alice:secret") as server:
        refused = subprocess.run(
            [curl, "-si", "-u", "alice:wrong", "-H", "Connection: Upgrade",
             "-H", "Upgrade: HTTP/2.0", f"http://{HOST}:{server.port}/"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert refused.startswith(b"HTTP/1.1 401 Unauthorized")
        assert b'WWW-Authenticate: Basic realm="upgradable"' in refused
        from base64 import b64encode

        good = b"Authorization: Basic " + b64encode(b"alice:secret") + b"\r\n"
        sock = upgradedSocket(server.port, b"HTTP/2.0", good)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        sock.close()


def readAll(sock: socket.socket) -> bytes:
    rest = b""
    while chunk := sock.recv(4096):
        rest += chunk
    return rest


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def sigtermWithIRC(server: Twistd, wait: float) -> tuple[int, float, bytes]:
    """
    Register an IRC client, SIGTERM the server: its exit status, how long it
    took to exit, and what the client got after the signal.
    """
    sock = upgradedSocket(server.port, b"IRC/6.9")
    sock.sendall(b"NICK alice\r\nUSER a 0 * :A\r\n")
    sock.settimeout(10)
    assert b" 001 alice " in sock.recv(4096)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(wait)
    elapsed = time.monotonic() - started
    rest = readAll(sock)
    sock.close()
    return code, elapsed, rest


def test_sigtermEndsIRCWithAnErrorAfterTheGracePeriodAndExitsCleanly() -> None:
    with twistd("--grace-period", "1") as server:
        code, elapsed, rest = sigtermWithIRC(server, 10)
    # twistd's usual status after SIGTERM: it shuts down, then ends itself
    # with the same signal so that its parent sees why it stopped.
    assert code == -signal.SIGTERM
    assert 1 <= elapsed < 5
    assert rest == b"ERROR :Closing Link: server shutting down\r\n"
    assert "Server Shut Down." in server.log()
    assert "Traceback" not in server.log()


def test_sigtermStopsAcceptingButUpgradedConnectionsGoOnUntilTheyEnd() -> None:
    with twistd("--protocol", "http2-echo", "--grace-period", "60") as server:
        sock = upgradedSocket(server.port, b"HTTP/2.0")
        sock.settimeout(10)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refused(server.port):
            assert time.monotonic() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
        for _ in range(3):  # the upgraded connection still echoes
            sock.sendall(b"still here")
            assert sock.recv(100) == b"still here"
        assert server.process.poll() is None
        started = time.monotonic()
        sock.close()  # the last connection ends: the process stops at once
        code = server.process.wait(10)
        assert time.monotonic() - started < 3
    assert code == -signal.SIGTERM
    # The probes above that connect until the port refuses may have had one
    # accepted just before it closed: it is an HTTP connection of the drain.
    draining = re.search(r"Draining (\d+) HTTP and (\d+) upgraded connections? "
                         r"\(grace period: 60 s\)", server.log())  # fmt: skip
    assert draining is not None, server.log()
    assert draining.group(2) == "1", server.log()
    assert "Traceback" not in server.log()


def test_aSecondSigtermClosesEveryConnectionAtOnce() -> None:
    with twistd("--grace-period", "60") as server:
        ws = upgradedSocket(
            server.port,
            b"websocket",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        )
        ws.settimeout(10)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "Draining" not in server.log():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        # A close frame with 1001 (going away); the test does not answer it,
        # so the server drops the connection after its 5 s wait.
        frame = ws.recv(2)
        assert frame[0] == 0x88
        payload = ws.recv(frame[1] & 0x7F)
        assert payload[:2] == (1001).to_bytes(2, "big")
        code = server.process.wait(15)
        ws.close()
    assert code == -signal.SIGTERM
    assert "Stop signal again: closing every connection now" in server.log()
    assert "Traceback" not in server.log()


def test_aThirdPartyPluginIsFoundAndServed() -> None:
    """docs/examples/plugin is a throwaway package with its own plugin file."""
    env = {"PYTHONPATH": str(ROOT / "docs" / "examples" / "plugin")}
    listed = subprocess.run(
        [*TWISTD, "upgradable", "--list-protocols"],
        capture_output=True, text=True, env={**os.environ, **env}, check=True,
    ).stdout  # fmt: skip
    [line] = [line for line in listed.splitlines() if line.startswith("rot13 ")]
    assert "ROT13/1" in line and "[rot13proto]" in line
    assert "(default)" not in line
    with twistd("--protocol", "rot13", env=env) as server:
        sock = upgradedSocket(server.port, b"ROT13/1", path=b"/demo")
        sock.sendall(b"Hello\r\n")
        sock.settimeout(10)
        received = b""
        while received.count(b"\r\n") < 2:
            received += sock.recv(100)
        sock.close()
    assert received == b"ROT13 ready for /demo\r\nUryyb\r\n"


@pytest.mark.peers
def test_h2cIsOnByDefaultAndWithoutH2cTurnsItOff() -> None:
    curl = requirePeer("curl")
    with twistd() as server:
        on = subprocess.run(
            [curl, "-si", "--http2", f"http://{HOST}:{server.port}/"], capture_output=True
        ).stdout
    assert on.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert b"\r\n\r\nHTTP/2 200" in on
    with twistd("--without", "h2c") as server:
        off = subprocess.run(
            [curl, "-si", "--http2", f"http://{HOST}:{server.port}/"], capture_output=True
        ).stdout
    assert off.startswith(b"HTTP/1.1 200 OK")
    assert b"h2c" not in off.split(b"\r\n\r\n")[0]


def h2OverTLS(server: Twistd, certificate: Path) -> tuple[int, ssl.SSLSocket]:
    """The server's ssl: port, and a TLS connection to it that chose h2 by ALPN."""
    deadline = time.monotonic() + 10
    while not (found := re.findall(r"port=(\d+)\) \(ssl:", server.log())):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tls = int(found[0])
    context = ssl.create_default_context(cafile=str(certificate))
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(socket.create_connection((HOST, tls), timeout=10),
                               server_hostname=HOST)  # fmt: skip
    return tls, sock


def test_anHTTP2ConnectionOverTLSIsDrainedToo(certificate: Path) -> None:
    """ALPN h2 connections are HTTP/2 from the start; the drain waits for them, then closes."""

    import h2.connection

    with twistd(
        "--grace-period", "1", "--listen", f"ssl:0:interface={HOST}:privateKey={certificate}"
    ) as server:  # fmt: skip
        _, sock = h2OverTLS(server, certificate)
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/healthz"), (":scheme", "https"),
                              (":authority", HOST)], end_stream=True)  # fmt: skip
        sock.sendall(conn.data_to_send())
        events: list[object] = []
        while not any(type(e).__name__ == "StreamEnded" for e in events):
            events += conn.receive_data(sock.recv(65536))
            sock.sendall(conn.data_to_send())
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        while chunk := sock.recv(65536):  # until the server closes, after the grace period
            events += conn.receive_data(chunk)
        sock.close()
        code = server.process.wait(10)
        elapsed = time.monotonic() - started
    assert code == -signal.SIGTERM
    assert 1 <= elapsed < 4
    assert [type(e).__name__ for e in events][-1] == "ConnectionTerminated"  # GOAWAY
    assert "Draining 1 HTTP and 0 upgraded connection (grace period: 1 s)" in server.log()
    assert "Traceback" not in server.log()


def openTemporaryFiles(pid: int, directory: Path) -> list[str]:
    """The files in ``directory`` that process ``pid`` has open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{directory}/"):
            found.append(target)
    return found


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_aStreamedChunkedUpgradeBodyGets413PromptlyWithoutADeadline(tmp_path: Path) -> None:
    """
    A client streams a chunked body to an upgrade request, with no handshake
    deadline to stop it: it gets 413 once the decoded body passes
    --max-upgrade-body, while the server holds it in memory (no temporary
    file) and its RSS stays put.
    """
    limit = 65536
    env = {"TMPDIR": str(tmp_path)}
    args = ("--handshake-timeout", "0", "--max-upgrade-body", str(limit))
    with twistd(*args, env=env) as server:
        pid = server.process.pid
        sock = socket.create_connection((HOST, server.port), timeout=10)
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        before = rssKiB(pid)
        started = time.monotonic()
        piece = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
        sent = 0
        answer = b""
        spooled: list[str] = []
        while sent < 64 * 1024 * 1024 and b"\r\n\r\n" not in answer:
            spooled += openTemporaryFiles(pid, tmp_path)
            assert not spooled, "the body went to a temporary file"
            try:
                sock.sendall(piece)
                sent += 0x4000
            except OSError:
                closed = True  # closed after the 413, which waits to be read
            else:
                closed = False
            if closed or select.select([sock], [], [], 0)[0]:
                try:
                    data = sock.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                answer += data
        elapsed = time.monotonic() - started
        grown = rssKiB(pid) - before
        sock.close()
    print(f"sent {sent} bytes, 413 after {elapsed:.3f} s, RSS grew {grown} KiB")
    assert answer.startswith(b"HTTP/1.1 413 "), (sent, answer)
    # Sent before the answer: the limit, plus what was in flight in the
    # socket buffers of both ends.
    assert sent < 16 * 1024 * 1024, sent
    assert elapsed < 5, elapsed
    assert grown < 16 * 1024, grown
    assert "Upgrade request body from" in server.log()
    assert "Traceback" not in server.log()


def test_anIdleWebSocketIsClosedWith1001NotDropped() -> None:
    """
    The idle timeout ends a WebSocket with a close frame (1001, going away),
    as a graceful stop does: the ``websockets`` client sees a clean close,
    where a dropped connection would show 1006.
    """
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with twistd("--idle-timeout", "websocket-echo=1") as server:
        with connect(f"ws://{HOST}:{server.port}/", open_timeout=10, close_timeout=10) as ws:
            ws.send("still here")
            assert ws.recv(timeout=10) == "still here"
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None, "closed without a close frame (1006)"
    assert closed.value.rcvd.code == 1001
    assert 0.9 <= elapsed < 5
    assert "idle for 1.0 s after the upgrade" in server.log()
    assert "Traceback" not in server.log()


def test_anIdleIRCClientReadsAnErrorBeforeTheClose() -> None:
    with twistd("--idle-timeout", "irc=1") as server:
        sock = upgradedSocket(server.port, b"IRC/6.9")
        sock.sendall(b"NICK alice\r\nUSER a 0 * :A\r\n")
        sock.settimeout(10)
        welcome = b""
        while b" 001 alice " not in welcome:
            welcome += sock.recv(4096)
        rest = readAll(sock)
        sock.close()
    assert (welcome + rest).endswith(b"ERROR :Closing Link: server shutting down\r\n")
    assert "Traceback" not in server.log()


def test_anIdleH2cConnectionGetsAGoaway() -> None:
    """The ``h2`` library, over a socket, sees GOAWAY(NO_ERROR) then the close."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection()
    with twistd("--idle-timeout", "h2c=1") as server:
        sock = upgradedSocket(
            server.port,
            b"h2c",
            b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: " + settings + b"\r\n",
        )
        sock.settimeout(10)
        sock.sendall(conn.data_to_send())
        events = []
        while data := sock.recv(65536):
            events += conn.receive_data(data)
            sock.sendall(conn.data_to_send())  # SETTINGS ack, WINDOW_UPDATE
        sock.close()
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in ended] == [0]  # NO_ERROR
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events)
    assert "Traceback" not in server.log()


def test_versionOfTheCommandNamesUpgradableAndTwisted(tmp_path: Path) -> None:
    import upgradable

    done = subprocess.run(
        [*TWISTD, "upgradable", "--version"], capture_output=True, text=True, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [ours, twisted] = done.stdout.splitlines()
    assert ours == f"upgradable {upgradable.__version__}"
    assert re.fullmatch(r"Twisted \d+\.\d+\.\d+\S*", twisted), twisted
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no pid file, no log


@pytest.mark.parametrize("command", ["upgradable", "upgradable-tunnel"])
def test_aBadListenExitsWithAUsageMessageAndNoTraceback(command: str, tmp_path: Path) -> None:
    tunnel = ["--url", f"http://{HOST}:1/", "--protocol", "IRC/6.9"]
    done = subprocess.run(
        [*TWISTD, "-n", command, *(tunnel if command != "upgradable" else []),
         "--listen", "tcp:8080:interface=[::1]"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    # twistd's own exit status for a usage error: 0 before Twisted 26.10.
    assert done.returncode == (1 if TWISTED >= (26, 10) else 0)
    assert "Traceback" not in done.stdout + done.stderr
    # twistd prints the usage, then the command line and the error, on stdout.
    assert done.stdout.startswith("Usage: twistd ")
    error = done.stdout.splitlines()[-1]
    assert error.endswith(
        ": --listen tcp:8080:interface=[::1]: got multiple values for argument 'interface' "
        r"(a colon inside a value is written \:, e.g. interface=\:\:1; see "
        "https://docs.twisted.org/en/stable/core/howto/endpoints.html#servers)"
    ), error
    assert list(tmp_path.iterdir()) == []


def test_anIPv6InterfaceTypedWithBareColonsIsListenedOn() -> None:
    """The docs' ``--listen tcp:8081:interface=::1``, on a free port."""
    with twistd("--listen", "tcp:0:interface=::1") as server:
        deadline = time.monotonic() + 10
        pattern = r"host='::1', port=(\d+).*\(tcp:0:interface="
        while not (found := re.findall(pattern, server.log())):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        with socket.create_connection(("::1", int(found[0])), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert readAll(sock).endswith(b"\r\n\r\nok\n")


def test_theReadmesRelayAndTunnelRunSideBySideFromOneDirectory(tmp_path: Path) -> None:
    """
    The README's server (``--relay``) and tunnel commands, typed without
    ``--pidfile``, start from one directory, write no pid file, and carry
    bytes from a plain TCP client through the upgrade to the backend.
    """
    import socketserver

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(4096):
                self.request.sendall(data)

    with socketserver.ThreadingTCPServer((HOST, 0), Echo) as backend:
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        relay = f"IRC/6.9=tcp:{HOST}:{backend.server_address[1]}"
        try:
            with twistd("--relay", relay, asDocumented=True, cwd=tmp_path) as server, twistd(
                "--url", f"http://{HOST}:{server.port}/", "--protocol", "IRC/6.9",
                command="upgradable-tunnel", asDocumented=True, cwd=tmp_path,
            ) as tunnel:  # fmt: skip
                with socket.create_connection((HOST, tunnel.port), timeout=10) as client:
                    client.sendall(b"NICK alice\r\n")
                    received = b""
                    while len(received) < len(b"NICK alice\r\n"):
                        chunk = client.recv(100)
                        assert chunk, received
                        received += chunk
                assert received == b"NICK alice\r\n"
                assert server.process.poll() is None and tunnel.process.poll() is None
                assert list(tmp_path.iterdir()) == []
        finally:
            backend.shutdown()
    assert "Another twistd server is running" not in server.log() + tunnel.log()
    # The tunnel's log says it is the tunnel, not which class listens.
    assert re.search(r"\] upgradable-tunnel starting on \d+\n", tunnel.log())
    assert re.search(r"\] upgradable-tunnel listening on IPv4Address", tunnel.log())
    assert "TunnelFactory" not in tunnel.log() and " object at 0x" not in tunnel.log()


def test_ctrlCWaitsTheGracePeriodSayingSoAndASecondCtrlCEndsItAtOnce() -> None:
    with twistd("--grace-period", "60") as server:
        sock = upgradedSocket(server.port, b"IRC/6.9")
        sock.sendall(b"NICK alice\r\nUSER a 0 * :A\r\n")
        sock.settimeout(10)
        assert b" 001 alice " in sock.recv(4096)
        server.process.send_signal(signal.SIGINT)
        hint = "Waiting up to 60 s for 1 connection to end; Ctrl-C or SIGTERM again closes it now"
        deadline = time.monotonic() + 10
        while hint not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        assert server.process.poll() is None
        started = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        rest = readAll(sock)
        code = server.process.wait(10)
        elapsed = time.monotonic() - started
        sock.close()
    assert rest == b"ERROR :Closing Link: server shutting down\r\n"
    assert elapsed < 3
    assert code == -signal.SIGINT
    assert "Stop signal again: closing every connection now" in server.log()
    assert "Traceback" not in server.log()


def test_duringAStopTheHealthCheckIsRefusedOnTheClosedPortAnd503OnAnOpenConnection(
    certificate: Path,
) -> None:
    """
    What a load balancer sees of a stopping server, as docs/twistd.rst
    says: a new connection (a new health check) is refused at once, and a
    health check on a connection that stays open (HTTP/2) gets 503.
    """

    import h2.connection
    import h2.events

    with twistd(
        "--grace-period", "60", "--listen", f"ssl:0:interface={HOST}:privateKey={certificate}"
    ) as server:  # fmt: skip
        tls, sock = h2OverTLS(server, certificate)
        conn = h2.connection.H2Connection()
        conn.initiate_connection()

        def healthCheck(stream: int) -> tuple[bytes, bytes]:
            conn.send_headers(stream, [(":method", "GET"), (":path", "/healthz"),
                                       (":scheme", "https"), (":authority", HOST)],
                              end_stream=True)  # fmt: skip
            sock.sendall(conn.data_to_send())
            status, body, ended = b"", b"", False
            while not ended:
                chunk = sock.recv(65536)
                assert chunk
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                    ended = ended or isinstance(event, h2.events.StreamEnded)
                sock.sendall(conn.data_to_send())
            return status, body

        assert healthCheck(1) == (b"200", b"ok\n")
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "Draining" not in server.log():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert refused(tls) and refused(server.port)
        assert healthCheck(3) == (b"503", b"draining\n")
        sock.close()
        assert server.process.wait(10) == -signal.SIGTERM
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_aPortInUseStopsStartUpWithOneLineAndNoTraceback(workers: str, tmp_path: Path) -> None:
    """Not a process that logs a traceback and goes on serving nothing."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*TWISTD, "-n", "upgradable", "--workers", workers,
             "--listen", f"tcp:{port}:interface={HOST}"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    message = (
        f"--listen tcp:{port}:interface={HOST}: Couldn't listen on {HOST}:{port}: "
        "[Errno 98] Address already in use."
    )
    assert output.count(message) == 1, output
    assert "Traceback" not in output
    assert "Worker 1 started" not in output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_aDaemonWhosePortIsInUseExitsSayingSoAndLeavesNoPidFile(
    workers: str, tmp_path: Path
) -> None:
    """
    As a daemon (no ``-n``), the command that started it returns at once
    with status 1 and the ``--listen`` value in its message, and no
    ``twistd.pid`` is left behind (it used to wait forever).
    """
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*TWISTD, "--logfile", str(tmp_path / "twistd.log"), "upgradable",
             "--workers", workers, "--listen", f"tcp:{port}:interface={HOST}"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"--listen tcp:{port}:interface={HOST}" in output, output
    assert "Traceback" not in output
    # twistd's daemon tells the command its status, then removes its pid
    # file, then exits: the file goes once the daemon has ended.
    from .test_workers import waitFor  # which imports this module

    pidfile = tmp_path / "twistd.pid"
    waitFor(lambda: not pidfile.exists(), what="the daemon to remove twistd.pid")
