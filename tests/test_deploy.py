"""
The deployment configs in ``docs/deploy/`` run for real: HAProxy and nginx in
front of two ``twistd -n upgradable`` backends, with real clients through
each (the ``irc`` library, the ``websockets`` library, curl, nghttp, raw
sockets), and one backend killed to show that new connections still succeed.

Each proxy's config is the docs file with only its addresses rewritten, so
what is documented is what is tested.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import requirePeer
from .ircchat import EXPECTED, chat
from .test_tunnel import freePort, ngircd

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
HOST = "127.0.0.1"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
# The addresses in the docs files: the proxy's, then the two backends'.
FRONT, APP1, APP2 = "127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"


class Process:
    """A program started by a test, and everything it printed."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def log(self) -> str:
        return "".join(self.output)

    def waitFor(self, pattern: str, count: int = 1, seconds: float = 20) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the output, once there."""
        deadline = time.monotonic() + seconds
        while True:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[:count]
            assert self.process.poll() is None, f"{self.args[0]} exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log()}"
            time.sleep(0.05)

    def waitForPort(self, port: int, seconds: float = 10) -> None:
        """Once ``port`` accepts connections (it is this program's)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, f"{self.args[0]} exited:\n{self.log()}"
                assert time.monotonic() < deadline, f"nothing on {port}:\n{self.log()}"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@dataclass
class Backend:
    """One ``twistd -n upgradable``: a plain port for nginx, a PROXY one for HAProxy."""

    process: Process
    plainPort: int
    proxyPort: int

    def log(self) -> str:
        return self.process.log()


@contextmanager
def backends(*args: str) -> Iterator[list[Backend]]:
    """Two backends on free loopback ports (tcp:0, read back from their logs)."""
    with ExitStack() as stack:
        processes = []
        for _ in range(2):  # both start before either is waited for
            process = Process([
                *TWISTD, "--pidfile=", "-n", "upgradable",
                "--listen", f"tcp:0:interface={HOST}",
                "--listen", f"haproxy:tcp:0:interface={HOST}",
                *args,
            ])  # fmt: skip
            stack.callback(process.stop)
            processes.append(process)
        started = []
        for process in processes:
            ports = {
                match.group(2): int(match.group(1))
                for match in process.waitFor(
                    r"upgradable listening on IPv4Address\(.*port=(\d+)\) \((\w+):", count=2
                )
            }
            started.append(Backend(process, ports["tcp"], ports["haproxy"]))
        yield started


# What an operator adds to each docs file: a rule by path at the proxy.
DENY_ADMIN = {
    "haproxy.cfg": ("    default_backend be_upgradable\n",
                    "    http-request deny if { path_beg /admin }\n"),
    "nginx.conf": ("    location / {\n", "    location /admin { return 403; }\n"),
}  # fmt: skip
# The line of each docs file that keeps h2c from passing through the proxy.
STRIP_H2C = {
    "haproxy.cfg": "    http-request del-header upgrade if { req.hdr(upgrade) -i h2c }\n",
    "nginx.conf": '    "~*(^|,)[ \\t]*h2c[ \\t]*(,|$)"    "";\n',
}


def fromDocs(name: str, addresses: dict[str, str], denyAdmin: bool = False,
             stripH2c: bool = True) -> str:  # fmt: skip
    """The docs file with each of its addresses replaced, each found exactly
    once; with the operator's ``deny /admin`` rule added, and (to show what
    it is for) without the line that strips h2c, if asked."""
    text = (DEPLOY / name).read_text()
    for old, new in addresses.items():
        pattern = re.escape(old) + r"\b"
        assert len(re.findall(pattern, text)) == 1, f"{old} is not in {name} exactly once"
        text = re.sub(pattern, new, text)
    edits = []
    if denyAdmin:
        before, rule = DENY_ADMIN[name]
        edits.append((before, rule + before))
    if not stripH2c:
        edits.append((STRIP_H2C[name], ""))
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} is not in {name} exactly once"
        text = text.replace(old, new)
    return text


@dataclass
class Proxy:
    name: str
    process: Process
    port: int
    backends: list[Backend]


@contextmanager
def haproxy(tmp: Path, apps: list[Backend], **edits: bool) -> Iterator[Proxy]:
    program = requirePeer("haproxy")
    port = freePort()
    config = tmp / "haproxy.cfg"
    config.write_text(
        fromDocs(
            "haproxy.cfg",
            {
                FRONT: f"{HOST}:{port}",
                APP1: f"{HOST}:{apps[0].proxyPort}",
                APP2: f"{HOST}:{apps[1].proxyPort}",
            },
            **edits,
        )
    )
    process = Process([program, "-f", str(config), "-db"])
    try:
        process.waitForPort(port)
        # Both backends answered HAProxy's health checks, which came through
        # the PROXY port (rise 2: two good ones each).
        for app in apps:
            app.process.waitFor(r'"GET /healthz HTTP/1\.[01]" 200 ', count=2, seconds=10)
        yield Proxy("haproxy", process, port, apps)
    finally:
        process.stop()


@contextmanager
def nginxIn(tmp: Path, upstreams: list[int], **edits: bool) -> Iterator[tuple[Process, int]]:
    """nginx with the docs snippet, its two upstream servers on these ports."""
    program = requirePeer("nginx")
    port = freePort()
    prefix = tmp / "nginx"
    prefix.mkdir()
    snippet = prefix / "upgradable.conf"
    snippet.write_text(
        fromDocs(
            "nginx.conf",
            {
                FRONT: f"{HOST}:{port}",
                APP1: f"{HOST}:{upstreams[0]}",
                APP2: f"{HOST}:{upstreams[1]}",
            },
            **edits,
        )
    )
    # The main config a distribution would provide, with every path under
    # tmp. Run as root, workers would become nobody, who cannot enter tmp.
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = prefix / "main.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 2;\npid {prefix}/nginx.pid;\n"
        f"error_log stderr notice;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n{temps}\n    access_log {prefix}/access.log;\n"
        f"    include {snippet};\n}}\n"
    )
    process = Process([program, "-e", "stderr", "-p", str(prefix), "-c", str(main)])
    try:
        process.waitForPort(port)
        yield process, port
    finally:
        process.stop()


@contextmanager
def nginx(tmp: Path, apps: list[Backend], **edits: bool) -> Iterator[Proxy]:
    with nginxIn(tmp, [app.plainPort for app in apps], **edits) as (process, port):
        # No active health checks in nginx: ready once it answers.
        assert plainGet(port, "/").startswith(b"HTTP/1.1 200 ")
        yield Proxy("nginx", process, port, apps)


def plainGet(port: int, path: str) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        return readUntilClosed(sock)


def readUntilClosed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def upgradedSocket(
    port: int, token: bytes, path: bytes = b"/", source: str | None = None
) -> socket.socket:
    """A connection through the proxy, upgraded; nothing after the 101 read;
    ``source``: from this loopback address."""
    sock = socket.create_connection(
        (HOST, port), timeout=10, source_address=None if source is None else (source, 0)
    )
    sock.sendall(
        b"GET " + path + b" HTTP/1.1\r\nHost: " + f"{HOST}:{port}".encode() + b"\r\n"
        b"Connection: Upgrade\r\nUpgrade: " + token + b"\r\n\r\n"
    )
    head = readHead(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def readHead(sock: socket.socket) -> bytes:
    """A response head, read a byte at a time: nothing after it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    return head


def echoes(sock: socket.socket, payload: bytes) -> bool:
    """Whether the HTTP/2.0 echo sends ``payload`` back, byte for byte
    (False if the connection closes first)."""

    def send() -> None:
        try:
            sock.sendall(payload)
        except OSError:  # closed under us: the reading side says so
            pass

    sender = threading.Thread(target=send)
    sender.start()
    received = bytearray()
    try:
        while len(received) < len(payload):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    sender.join(10)
    assert not sender.is_alive()
    return received == payload


def settled(app: Backend) -> None:
    """Once every access line of what the backend served so far is in its
    log: they are written in order, at most a second late (and come through
    a pipe), so a request of our own is logged after them."""
    marker = f"/settled-{next(_markers)}"
    plainGet(app.plainPort, marker)
    app.process.waitFor(f'"GET {marker} HTTP/1.1" ', seconds=10)


_markers = itertools.count()


def upgrades(app: Backend, token: str, atLeast: int = 0) -> int:
    """How many upgrades to ``token`` the backend logged, once it has logged
    ``atLeast``; with ``atLeast`` 0, once everything served so far is logged."""
    if not atLeast:
        settled(app)
    # The access line of a 101 ends with the product switched to.
    pattern = r'(?m)" 101 .*"' + re.escape(token) + r'"$'
    app.process.waitFor(pattern, count=atLeast, seconds=5)
    return len(re.findall(pattern, app.log()))


@pytest.fixture(scope="module")
def ircPort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int | None]:
    """One IRC server for every backend (None without ngircd)."""
    if shutil.which("ngircd") is None:
        yield None
        return
    with ngircd(tmp_path_factory.mktemp("ircd")) as port:
        yield port


@pytest.fixture(scope="module")
def apps(ircPort: int | None) -> Iterator[list[Backend]]:
    # IRC clients sent to different backends must still meet: every backend
    # relays IRC/6.9 to the one IRC server, as the docs files advise.
    relay = ["--relay", f"IRC/6.9=tcp:{HOST}:{ircPort}"] if ircPort else []
    with backends(*relay) as started:
        yield started


@pytest.fixture(scope="module")
def haproxyFront(tmp_path_factory: pytest.TempPathFactory, apps: list[Backend]) -> Iterator[Proxy]:
    with haproxy(tmp_path_factory.mktemp("haproxy"), apps) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def nginxFront(tmp_path_factory: pytest.TempPathFactory, apps: list[Backend]) -> Iterator[Proxy]:
    with nginx(tmp_path_factory.mktemp("nginx"), apps) as proxy:
        yield proxy


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def proxy(request: pytest.FixtureRequest) -> Proxy:
    front: Proxy = request.getfixturevalue(f"{request.param}Front")
    return front


def test_twoIRCClientsChatThroughTheProxyAndEitherBackend(proxy: Proxy) -> None:
    """The ``irc`` library's clients land on different backends (least
    connections) and still chat: both backends relay to one IRC server."""
    requirePeer("ngircd")

    def connectFactory(address: tuple[str, int]) -> socket.socket:
        return upgradedSocket(address[1], b"IRC/6.9")

    before = [upgrades(app, "IRC/6.9") for app in proxy.backends]
    assert chat(HOST, proxy.port, connectFactory) == EXPECTED
    for app, count in zip(proxy.backends, before, strict=True):
        assert upgrades(app, "IRC/6.9", count + 1) == count + 1


def test_echoReturnsOneMebibyteByteExact(proxy: Proxy) -> None:
    with upgradedSocket(proxy.port, b"HTTP/2.0") as sock:
        assert echoes(sock, b"ping")
        assert echoes(sock, os.urandom(1 << 20))


def test_curlsH2cUpgradeIsAnsweredInHTTP11(proxy: Proxy) -> None:
    """The proxy does not pass h2c on (the backend's HTTP/2 streams would
    escape its rules): curl's ``--http2`` request gets the welcome page in
    HTTP/1.1, with no 101, and no backend switched to h2c."""
    curl = requirePeer("curl")
    before = [upgrades(app, "h2c") for app in proxy.backends]
    out = subprocess.run(
        [curl, "-si", "--http2", f"http://{HOST}:{proxy.port}/"],
        capture_output=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    assert b"\r\n\r\nHTTP/2 " not in out  # no second head, as after a switch
    assert b"IRC/6.9" in out  # the welcome page
    assert [upgrades(app, "h2c") for app in proxy.backends] == before


def test_nghttpsH2cUpgradeFailsAndIsAnsweredInHTTP11(proxy: Proxy) -> None:
    """nghttp's h2c upgrade through the proxy fails (no 101), and the page
    comes back in HTTP/1.1 instead."""
    nghttp = requirePeer("nghttp")
    done = subprocess.run(
        [nghttp, "-uv", f"http://{HOST}:{proxy.port}/"],
        capture_output=True, timeout=30, text=True,
    )  # fmt: skip
    assert "HTTP Upgrade success" not in done.stdout, done.stdout
    assert "HTTP Upgrade failed" in done.stderr, done.stdout + done.stderr
    assert "IRC/6.9" in done.stdout  # the welcome page


def test_websocketsLibraryEchoesTextAndBinary(proxy: Proxy) -> None:
    from websockets.sync.client import connect

    with connect(f"ws://{HOST}:{proxy.port}/chat", open_timeout=10) as ws:
        ws.send("hello through " + proxy.name)
        assert ws.recv(timeout=10) == "hello through " + proxy.name
        ws.send(bytes(range(256)) * 256)
        assert ws.recv(timeout=10) == bytes(range(256)) * 256


def test_plainRequestsShareAConnectionDespiteTheAdvertisedUpgrade(proxy: Proxy) -> None:
    """The backend's ordinary answers carry ``Connection: Upgrade`` and
    ``Upgrade: h2c, ...`` (advertising, RFC 9110 §7.8): neither proxy takes
    that for a switch, and a second request on the connection is answered."""
    with socket.create_connection((HOST, proxy.port), timeout=10) as sock:
        request = f"GET /x HTTP/1.1\r\nHost: {HOST}:{proxy.port}\r\n\r\n".encode()
        for _ in range(2):
            sock.sendall(request)
            head = readHead(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head
            [length] = re.findall(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = b""
            while len(body) < int(length):
                chunk = sock.recv(int(length) - len(body))
                assert chunk
                body += chunk


def test_haproxyBackendsLogTheRealClientAddress(haproxyFront: Proxy) -> None:
    """The PROXY header carries the client's own address: the client's, not
    HAProxy's, is the one the backend logs for the upgrade. The client
    connects from another loopback address than HAProxy's."""
    client = "127.0.0.2"
    with upgradedSocket(haproxyFront.port, b"HTTP/2.0", source=client) as sock:
        assert echoes(sock, b"who am i")
        assert sock.getsockname()[0] == client
    line = rf'(?m)^"{re.escape(client)}" - - .* 101 .*"HTTP/2\.0"$'
    deadline = time.monotonic() + 10
    while not any(re.search(line, app.log()) for app in haproxyFront.backends):
        assert time.monotonic() < deadline, "no backend logged " + line
        time.sleep(0.05)


def test_haproxyHealthCheckIsAPlainRequestAnswered200(haproxyFront: Proxy) -> None:
    """HAProxy's ``GET /healthz`` checks get 200 and never upgrade; so does
    the same request from a client, whose body is ``ok``."""
    for app in haproxyFront.backends:
        checks = re.findall(r'"GET /healthz HTTP/1\.[01]" (\d+) ', app.log())
        assert len(checks) >= 2 and set(checks) == {"200"}, checks
        assert not re.search(r'"GET /healthz HTTP/1\.[01]" 101 ', app.log())
    response = plainGet(haproxyFront.port, "/healthz")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert body.strip() == b"ok"


@contextmanager
def recorder() -> Iterator[tuple[int, list[bytes]]]:
    """A stand-in backend: records each request head, answers 200 and
    keeps the connection open for the next request."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.1)
    heads: list[bytes] = []
    stopping = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while not stopping.is_set():
                head, found, buffer = buffer.partition(b"\r\n\r\n")
                if not found:
                    buffer = head
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                heads.append(head)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1], heads
    finally:
        stopping.set()
        acceptor.join(5)
        listener.close()


def fields(head: bytes) -> dict[str, str]:
    """A request head's fields, names lower-cased (each assumed once)."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {
        name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
    }


H2C_OFFERS = ["h2c", "H2C", "foo/1 ,h2c , bar"]


def test_nginxPassesTheClientsConnectionListOnlyWhenUpgrading(tmp_path: Path) -> None:
    """What the backend receives from nginx: a browser's ``Connection:
    keep-alive, Upgrade`` intact (nginx alone would send ``upgrade``), an
    IRC/6.9 offer likewise, and a plain request with no Connection field at
    all (keep-alive upstream), whatever the client asked of nginx. Every one
    is HTTP/1.1 with the client's Host and address. A request that offers
    h2c, in any case or place in the list, arrives with neither Upgrade nor
    Connection: as a plain request."""
    requests = {
        "firefox": "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "irc": "Connection: Upgrade\r\nUpgrade: IRC/6.9\r\n",
        "plain": "Connection: close\r\n",
    }
    for index, offer in enumerate(H2C_OFFERS):
        requests[f"h2c {index}"] = (
            f"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: {offer}\r\n"
            "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
        )
    with recorder() as (upstream, heads), nginxIn(tmp_path, [upstream, upstream]) as (_, port):
        for extra in requests.values():
            with socket.create_connection((HOST, port), timeout=10) as sock:
                sock.sendall(f"GET /x HTTP/1.1\r\nHost: {HOST}:{port}\r\n{extra}\r\n".encode())
                sock.settimeout(10)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 10
        while len(heads) < len(requests):
            assert time.monotonic() < deadline, heads
            time.sleep(0.05)
    firefox, irc, plain, *h2c = (fields(head) for head in heads)
    assert all(head.startswith(b"GET /x HTTP/1.1\r\n") for head in heads)
    for received in (firefox, irc, plain, *h2c):
        assert received["host"] == f"{HOST}:{port}"
        assert received["x-forwarded-for"] == received["x-real-ip"] == HOST
    assert firefox["connection"] == "keep-alive, Upgrade"
    assert firefox["upgrade"] == "websocket"
    assert irc["connection"] == "Upgrade"
    assert irc["upgrade"] == "IRC/6.9"
    assert "connection" not in plain and "upgrade" not in plain
    for received in h2c:
        assert "connection" not in received and "upgrade" not in received, received


@pytest.mark.parametrize("start", [haproxy, nginx], ids=["haproxy", "nginx"])
def test_killedBackendCostsNoNewConnection(
    start: Callable[[Path, list[Backend]], AbstractContextManager[Proxy]], tmp_path: Path
) -> None:
    """SIGKILL one backend: its tunnel closes, the other backend's stays, and
    every new connection through the proxy succeeds, on the survivor."""
    with backends() as apps, start(tmp_path, apps) as proxy:
        # Least connections: one tunnel on each backend.
        tunnels = [upgradedSocket(proxy.port, b"HTTP/2.0") for _ in apps]
        try:
            assert all(echoes(sock, b"before") for sock in tunnels)
            assert [upgrades(app, "HTTP/2.0", 1) for app in apps] == [1, 1]
            dead, survivor = apps
            dead.process.process.kill()
            dead.process.process.wait(10)
            assert sorted(echoes(sock, b"after") for sock in tunnels) == [False, True]
        finally:
            for sock in tunnels:
                sock.close()

        started = time.monotonic()
        for attempt in range(8):
            with upgradedSocket(proxy.port, b"HTTP/2.0") as sock:
                assert echoes(sock, b"new %d" % attempt)
            assert plainGet(proxy.port, "/").startswith(b"HTTP/1.1 200 ")
        elapsed = time.monotonic() - started
        assert upgrades(survivor, "HTTP/2.0", 1 + 8) == 1 + 8
        # No retry waited for the dead backend: a refused connect goes to
        # the other one at once.
        assert elapsed < 5, elapsed
        if proxy.name == "haproxy":
            # Then the health checks take it out (fall 2, inter 1s).
            proxy.process.waitFor(r"Server be_upgradable/app1 is DOWN", seconds=10)
            with upgradedSocket(proxy.port, b"HTTP/2.0") as sock:
                assert echoes(sock, b"after the checks")


@pytest.mark.parametrize("start", [haproxy, nginx], ids=["haproxy", "nginx"])
def test_aRollingRestartKeepsTunnelsForTheGracePeriodAndRefusesNoClient(
    start: Callable[[Path, list[Backend]], AbstractContextManager[Proxy]], tmp_path: Path
) -> None:
    """SIGTERM one backend, as a rolling restart does: it stops accepting at
    once, the proxy sends every new connection to the other, its tunnel goes
    on through the grace period and is closed after it."""
    grace = 3.0
    with backends("--grace-period", str(grace)) as apps, start(tmp_path, apps) as proxy:
        tunnels = [upgradedSocket(proxy.port, b"HTTP/2.0") for _ in apps]
        try:
            assert all(echoes(sock, b"before") for sock in tunnels)
            assert [upgrades(app, "HTTP/2.0", 1) for app in apps] == [1, 1]
            stopping, other = apps
            started = time.monotonic()
            stopping.process.process.send_signal(signal.SIGTERM)
            stopping.process.waitFor(r"Draining \d+ HTTP and 1 upgraded connections?")
            for attempt in range(8):
                with upgradedSocket(proxy.port, b"HTTP/2.0") as sock:
                    assert echoes(sock, b"new %d" % attempt)
                assert plainGet(proxy.port, "/").startswith(b"HTTP/1.1 200 ")
            assert upgrades(other, "HTTP/2.0", 1 + 8) == 1 + 8
            # Still within the grace period: both tunnels work.
            assert time.monotonic() - started < grace
            assert all(echoes(sock, b"during") for sock in tunnels)
            code = stopping.process.process.wait(grace + 10)
            assert time.monotonic() - started >= grace
            assert code == -signal.SIGTERM
            assert sorted(echoes(sock, b"after") for sock in tunnels) == [False, True]
        finally:
            for sock in tunnels:
                sock.close()
        assert "Traceback" not in stopping.log()


@pytest.mark.parametrize("start", [haproxy, nginx], ids=["haproxy", "nginx"])
def test_theBuiltInIRCServerThroughTheProxy(
    start: Callable[[Path, list[Backend]], AbstractContextManager[Proxy]], tmp_path: Path
) -> None:
    """Without --relay each backend serves IRC/6.9 itself (twisted.words):
    a client registers, joins and is answered through the proxy."""
    with backends() as apps, start(tmp_path, apps) as proxy:
        with upgradedSocket(proxy.port, b"IRC/6.9") as sock:
            sock.sendall(b"NICK alice\r\nUSER alice 0 * :Alice\r\n")
            received = b""
            while b" 001 alice " not in received:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
            sock.sendall(b"JOIN #deploy\r\nPING :token-42\r\n")
            while b"PONG" not in received or b"JOIN" not in received.split(b" 001 ", 1)[1]:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
        assert b":token-42" in received
        assert sum(upgrades(app, "IRC/6.9") for app in apps) == 1


# -- h2c smuggling ------------------------------------------------------------
#
# An operator denies /admin at the proxy. A client that could switch a
# connection to h2c would send its next requests as HTTP/2 streams, which the
# proxy relays as opaque tunnel bytes: /admin/secret on stream 3 would reach
# the backend unchecked. Two layers stop it: the docs configs strip h2c, and
# the backend refuses h2c from a proxy (PROXY protocol, X-Forwarded-For)
# unless run with --h2c-behind-proxy. Each layer alone is enough; with
# neither, the attack works (the last test shows it, so that the others
# cannot pass for want of a working attack).

SECRET = b"the backend's /admin/secret, which the proxy denies"
PROXIES = {"haproxy": haproxy, "nginx": nginx}


@pytest.fixture(scope="module")
def siteWithAdmin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --path directory: / is public, /admin/secret holds SECRET."""
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_bytes(b"public\n")
    (root / "admin").mkdir()
    (root / "admin" / "secret").write_bytes(SECRET)
    return root


def smuggle(port: int, offer: bytes = b"h2c") -> tuple[bytes, bytes | None]:
    """
    Through the proxy: offer h2c on ``GET /`` (with the ``h2`` library's
    HTTP2-Settings) and, if the connection switches, request
    ``/admin/secret`` on stream 3. The head of the answer to ``GET /``, and
    stream 3's status and body (None when there was no switch).
    """
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection()
    authority = f"{HOST}:{port}".encode()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: " + authority + b"\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: " + offer + b"\r\n"
            b"HTTP2-Settings: " + settings + b"\r\n\r\n"
        )
        head = readHead(sock)
        if not head.startswith(b"HTTP/1.1 101 "):
            return head, None
        request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
                   (b":path", b"/admin/secret")]  # fmt: skip
        conn.send_headers(3, request, end_stream=True)
        status, body = b"", b""
        while True:
            sock.sendall(conn.data_to_send())
            data = sock.recv(65536)
            if not data:
                return head, b"closed " + status + b" " + body
            for event in conn.receive_data(data):
                if getattr(event, "stream_id", None) != 3:
                    if isinstance(event, h2.events.ConnectionTerminated):
                        return head, b"GOAWAY " + status + b" " + body
                elif isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 3)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return head, status + b" " + body


def curlTwoURLs(port: int) -> bytes:
    """``curl --http2`` fetching / and then /admin/secret on one connection
    (after a switch, the second goes as an HTTP/2 stream)."""
    curl = requirePeer("curl")
    base = f"http://{HOST}:{port}"
    return subprocess.run(
        [curl, "-si", "--http2", f"{base}/", f"{base}/admin/secret"],
        capture_output=True, timeout=30, check=True,
    ).stdout  # fmt: skip


@contextmanager
def guarded(kind: str, tmp: Path, site: Path, stripH2c: bool, backendRefuses: bool
            ) -> Iterator[Proxy]:  # fmt: skip
    """The docs config of ``kind`` with ``deny /admin`` added, in front of
    two backends that serve ``site``."""
    extra = [] if backendRefuses else ["--h2c-behind-proxy"]
    with (
        backends("--path", str(site), *extra) as apps,
        PROXIES[kind](tmp, apps, denyAdmin=True, stripH2c=stripH2c) as proxy,
    ):
        yield proxy


@pytest.mark.parametrize("kind", sorted(PROXIES))
@pytest.mark.parametrize(
    ("stripH2c", "backendRefuses"),
    [(True, True), (True, False), (False, True)],
    ids=["as-shipped", "proxy-layer-only", "backend-layer-only"],
)
def test_h2cCannotSmuggleARequestPastTheProxysDenyRule(
    kind: str, stripH2c: bool, backendRefuses: bool, tmp_path: Path, siteWithAdmin: Path
) -> None:
    """With ``deny /admin`` at the proxy, an h2c upgrade of ``/`` is answered
    in HTTP/1.1 (no 101), whatever the spelling of the offer, so no stream 3
    ever asks the backend for /admin/secret; curl's second URL gets the
    proxy's 403; so does a plain GET /admin/secret. Either layer alone (the
    config's stripping, the backend's refusal) is enough."""
    with guarded(kind, tmp_path, siteWithAdmin, stripH2c, backendRefuses) as proxy:
        for offer in H2C_OFFERS:
            head, stream3 = smuggle(proxy.port, offer.encode())
            assert head.startswith(b"HTTP/1.1 200 "), (offer, head)
            assert stream3 is None
        out = curlTwoURLs(proxy.port)
        assert SECRET not in out
        assert out.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\nHTTP/2" not in out, out[:300]
        assert re.search(rb"\nHTTP/1\.1 403 ", out), out
        assert plainGet(proxy.port, "/admin/secret").startswith(b"HTTP/1.1 403 ")
        for app in proxy.backends:
            assert "/admin" not in app.log()
            assert upgrades(app, "h2c") == 0
        if not stripH2c:  # the backends saw the offers, and said why they declined
            expected = len(H2C_OFFERS) + 1  # the h2 client's, and curl's
            deadline = time.monotonic() + 10
            while (declined := sum(app.log().count("Declined h2c from")
                                   for app in proxy.backends)) < expected:  # fmt: skip
                assert time.monotonic() < deadline, declined
                time.sleep(0.05)
            assert declined == expected


@pytest.mark.parametrize("kind", sorted(PROXIES))
def test_withNeitherLayerH2cSmugglesARequestPastTheDenyRule(
    kind: str, tmp_path: Path, siteWithAdmin: Path
) -> None:
    """The attack is real: with the stripping line taken out of the config
    and the backend run with --h2c-behind-proxy, stream 3 gets /admin/secret
    straight from the backend, past the proxy's rule (which still answers
    403 to the same request in HTTP/1.1)."""
    with guarded(kind, tmp_path, siteWithAdmin, stripH2c=False, backendRefuses=False) as proxy:
        head, stream3 = smuggle(proxy.port)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert stream3 == b"200 " + SECRET
        assert SECRET in curlTwoURLs(proxy.port)
        assert plainGet(proxy.port, "/admin/secret").startswith(b"HTTP/1.1 403 ")
