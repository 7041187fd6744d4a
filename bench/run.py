"""
Run every benchmark scenario against every server, in one run, and print
one table of medians with ratios to a baseline measured in the same run.

    python bench/run.py                 # the full run (a few minutes)
    python bench/run.py --smoke         # every server and scenario, briefly
    python bench/run.py --markdown docs/performance.md

Each server runs in its own process pinned to CPU 0 (taskset), the load
generator (bench/loadgen.c, compiled here with cc) pinned to CPU 1. Loopback
only; every loop is bounded in time. Server CPU per handshake comes from
/proc/PID/schedstat (time on CPU), which is far less noisy than wall-clock
rates on a shared machine.

The rows named "twistd upgradable" measure the product as the README starts
it: `twistd -n --pidfile= --logfile DIR/twistd.log upgradable --listen
tcp:PORT:interface=127.0.0.1`, every other option its default (the access
log and the Upgraded event written to that file, limits, the handshake
deadline, advertising, /healthz, the samples). "stock site + access log" is
the GET baseline the same way: `twistd web` serving bench/servers.py's page,
its access log in twistd's log file. Both are pinned to CPU 0 like the rest.

The scaleout group is the exception: `twistd upgradable --workers N` (N = 1,
then 2) behind HAProxy configured by docs/deploy/haproxy.cfg, with nothing
pinned, so that the workers, HAProxy and the load generator share every CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent / "docs" / "deploy"
HOST = "127.0.0.1"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
# The product as the README starts it (`twistd -n upgradable`), changed only
# where a benchmark must: a free loopback port, and the log in a file of the
# server's own directory (twistd's --logfile), so that its lines are paid as
# an operator pays them. {port} and {dir} are filled in at each start.
TWISTD_LOG = ["-n", "--pidfile=", "--logfile", "{dir}/twistd.log"]
TWISTD_LISTEN = f"tcp:{{port}}:interface={HOST}"
TWISTD_UPGRADABLE = [*TWISTD, *TWISTD_LOG, "upgradable", "--listen", TWISTD_LISTEN]
# What `twistd web` does with bench/servers.py's page: a stock Site whose
# access log goes to twistd's log file (twistd web's default without its own
# --logfile). servers.py must be importable: see Server.pythonPath.
TWISTD_WEB = [*TWISTD, *TWISTD_LOG, "web", "--listen", TWISTD_LISTEN, "--class", "servers.page"]


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu), *argv] if taskset and (os.cpu_count() or 1) > 1 else argv


@dataclass
class Server:
    """
    A server the bench starts: ``argv`` with ``{port}`` (a free port) and
    ``{dir}`` (a fresh directory, its working directory, removed when it
    stops) filled in. It is ready when it prints ``ready`` (bench/servers.py),
    or, with ``answers``, once it answers an HTTP request on the port (twistd,
    which prints nothing).
    """

    name: str
    argv: list[str]
    answers: bool = False
    #: Put first on the server's PYTHONPATH (twistd web's --class servers.page).
    pythonPath: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    port: int = 0
    directory: Path | None = None

    def cpuSeconds(self) -> float:
        assert self.process is not None
        return int(Path(f"/proc/{self.process.pid}/schedstat").read_text().split()[0]) / 1e9

    def rss(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def filledIn(argv: list[str], port: int, directory: Path) -> list[str]:
    return [a.replace("{port}", str(port)).replace("{dir}", str(directory)) for a in argv]


def serverEnvironment(pythonPath: list[str]) -> dict[str, str] | None:
    if not pythonPath:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*pythonPath, env.get("PYTHONPATH")]))
    return env


def answersHTTP(port: int) -> bool:
    """Whether a ``GET /`` on ``port`` gets an HTTP response (its reactor runs)."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


def waitUntilAnswering(
    port: int, process: subprocess.Popen[str], seconds: float, what: str
) -> None:
    """Poll ``port`` until the server answers HTTP there; at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not answersHTTP(port):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer on port {port} in {seconds:g} s")
        time.sleep(0.05)  # between attempts of the poll, not a wait for readiness


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.port = freePort()
    server.directory = Path(tempfile.mkdtemp(prefix="server-"))
    argv = filledIn(server.argv, server.port, server.directory)
    # Output to a file: a pipe nobody drains fills up and blocks a chatty server.
    errors = tempfile.TemporaryFile(mode="w+")
    server.process = subprocess.Popen(
        pinned(0, argv),
        stdin=subprocess.DEVNULL,
        stdout=errors if server.answers else subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=server.directory,
        env=serverEnvironment(server.pythonPath),
    )
    try:
        try:
            if server.answers:
                waitUntilAnswering(server.port, server.process, 60, server.name)
            else:
                assert server.process.stdout is not None
                line = server.process.stdout.readline()
                if "ready" not in line:
                    raise RuntimeError(f"{server.name} did not start: {line}")
        except RuntimeError as error:
            errors.seek(0)
            log = server.directory / "twistd.log"
            logged = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{error}\n{errors.read()[-2000:]}{logged}") from None
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
        if server.process.stdout is not None:
            server.process.stdout.close()
        errors.close()
        shutil.rmtree(server.directory, ignore_errors=True)


@dataclass
class Bench:
    loadgenPath: str
    files: Path
    seconds: float
    repeats: int
    idleConnections: int
    streamBytes: int
    rows: list[dict[str, object]] = field(default_factory=list)

    def file(self, name: str, data: bytes) -> str:
        path = self.files / name
        path.write_bytes(data)
        return str(path)

    def loadgen(self, *args: str, cpu: int | None = 1) -> dict[str, float]:
        """One loadgen run, pinned to ``cpu`` (None: not pinned)."""
        argv = [self.loadgenPath, *args]
        done = subprocess.run(
            argv if cpu is None else pinned(cpu, argv),
            capture_output=True,
            text=True,
            timeout=self.seconds * 4 + 120,
        )
        if done.returncode:
            raise RuntimeError(f"loadgen {args}: {done.stderr}")
        return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]

    def measured(self, server: Server, *args: str) -> dict[str, float]:
        """One loadgen run, with the server's CPU time per counted operation."""
        before = server.cpuSeconds()
        run = self.loadgen(*args)
        run["cpu_us"] = (server.cpuSeconds() - before) / max(run.get("count", 0), 1) * 1e6
        return run

    def median(self, runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def add(self, scenario: str, server: str, value: float, unit: str, **extra: object) -> None:
        self.rows.append(
            {"scenario": scenario, "server": server, "value": value, "unit": unit, **extra}
        )
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"  {scenario:<22} {server:<24} {value:>12.1f} {unit:<10} {detail}", flush=True)


def upgradeRequest(token: bytes) -> bytes:
    return (
        b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: "
        + token
        + b"\r\n\r\n"
    )


def wsRequest(path: bytes = b"/bench") -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def wsFrame(payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


def handshakeScenario(
    bench: Bench,
    server: Server,
    request: bytes | None,
    concurrency: int,
    payload: bytes,
    reply: int,
    label: str,
) -> dict[str, float]:
    args = [
        "handshake",
        HOST,
        str(server.port),
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(bench.seconds),
        "--payload",
        bench.file("payload", payload),
        "--reply",
        str(reply),
    ]
    if request is not None:
        args += ["--request", bench.file(f"req-{server.name}", request), "--expect-101"]
    runs = []
    for _ in range(bench.repeats):
        before = server.cpuSeconds()
        run = bench.loadgen(*args)
        after = server.cpuSeconds()
        run["cpu_us"] = (after - before) / max(run["count"], 1) * 1e6
        runs.append(run)
    result = {
        key: bench.median(runs, key) for key in ("rate", "p50_us", "p99_us", "cpu_us", "errors")
    }
    bench.add(
        label,
        server.name,
        result["rate"],
        "conn/s",
        p50_us=round(result["p50_us"]),
        p99_us=round(result["p99_us"]),
        cpu_us=round(result["cpu_us"], 1),
        errors=int(result["errors"]),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="every server and scenario, briefly")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell (median)")
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")
    parser.add_argument("--json", type=Path, help="also write the raw rows as JSON here")
    parser.add_argument(
        "--only",
        default="handshake,ws,stream,idle,get,h2,scaleout",
        help="comma-separated scenario groups (default: all)",
    )
    options = parser.parse_args()
    files = Path(tempfile.mkdtemp(prefix="upgradable-bench-"))
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("a C compiler (cc) is needed to build bench/loadgen.c")
    loadgen = str(files / "loadgen")
    subprocess.run([cc, "-O2", "-o", loadgen, str(HERE / "loadgen.c")], check=True)
    bench = Bench(
        loadgenPath=loadgen,
        files=files,
        seconds=0.5 if options.smoke else options.seconds,
        repeats=1 if options.smoke else options.repeats,
        idleConnections=200 if options.smoke else 5000,
        streamBytes=(16 << 20) if options.smoke else (1 << 30),
    )
    certificate = makeCertificate(files)
    py = [sys.executable, str(HERE / "servers.py")]
    node = shutil.which("node")
    servers = {
        "raw twisted": Server("raw twisted", [*py, "raw", "{port}"]),
        "upgradable": Server("upgradable", [*py, "upgradable", "{port}"]),
        "stock site": Server("stock site", [*py, "site", "{port}"]),
        "twisted h2 (tls)": Server("twisted h2 (tls)", [*py, "h2tls", "{port}", certificate]),
        "autobahn": Server("autobahn", [*py, "autobahn", "{port}"]),
        "twisted.web.websocket": Server("twisted.web.websocket", [*py, "twistedws", "{port}"]),
        "websockets": Server("websockets", [*py, "websockets", "{port}"]),
    }
    servers[PRODUCT] = Server(PRODUCT, TWISTD_UPGRADABLE, answers=True)
    servers[LOGGED_SITE] = Server(LOGGED_SITE, TWISTD_WEB, answers=True, pythonPath=[str(HERE)])
    if node:
        servers["node"] = Server("node", [node, str(HERE / "node_upgrade.js"), "{port}"])
    else:
        print("node not found: the Node.js peer is skipped", file=sys.stderr)
    echo32 = b"0123456789abcdef0123456789abcdef"
    groups = set(options.only.split(","))
    print(
        f"loadgen on CPU 1, servers on CPU 0 (scaleout: nothing pinned); "
        f"{bench.seconds} s x {bench.repeats} per cell",
        flush=True,
    )

    # 1. handshake: connect, upgrade, 32-byte echo, close.
    for concurrency in (1, 50) if "handshake" in groups else ():
        label = f"handshake c={concurrency}"
        with running(servers["raw twisted"]) as s:
            handshakeScenario(bench, s, None, concurrency, echo32, 32, label)
        with running(servers["upgradable"]) as s:
            handshakeScenario(bench, s, upgradeRequest(b"bench/1"), concurrency, echo32, 32, label)
        if node:
            with running(servers["node"]) as s:
                handshakeScenario(
                    bench, s, upgradeRequest(b"bench/1"), concurrency, echo32, 32, label
                )
        # The product's byte echo is the http2-echo sample, enabled by default.
        with running(servers[PRODUCT]) as s:
            handshakeScenario(bench, s, upgradeRequest(b"HTTP/2.0"), concurrency, echo32, 32, label)

    # 6a. WebSocket handshakes (with one 32-byte text message echoed).
    frame = wsFrame(echo32)
    # The product's websocket-echo sample is enabled by default; it accepts
    # permessage-deflate only when offered, and the load generator offers none.
    wsServers = ("upgradable", "autobahn", "twisted.web.websocket", "websockets", PRODUCT)
    for name in wsServers if "ws" in groups else ():
        with running(servers[name]) as s:
            handshakeScenario(bench, s, wsRequest(), 50, frame, 34, "ws handshake c=50")

    # 6b. WebSocket echo messages over 50 open connections.
    for name in wsServers if "ws" in groups else ():
        with running(servers[name]) as s:
            runs = [
                bench.measured(
                    s,
                    "pingpong",
                    HOST,
                    str(s.port),
                    "--concurrency",
                    "50",
                    "--seconds",
                    str(bench.seconds),
                    "--request",
                    bench.file("wsreq", wsRequest()),
                    "--expect-101",
                    "--payload",
                    bench.file("frame", frame),
                    "--reply",
                    "34",
                )
                for _ in range(bench.repeats)
            ]
            bench.add(
                "ws messages c=50",
                name,
                bench.median(runs, "rate"),
                "msg/s",
                cpu_us=round(bench.median(runs, "cpu_us"), 1),
                errors=int(bench.median(runs, "errors")),
            )

    # 2. stream: 1 GiB through the echo, 64 KiB writes.
    streams = (("raw twisted", None), ("upgradable", upgradeRequest(b"bench/1")))
    for name, request in streams if "stream" in groups else ():
        with running(servers[name]) as s:
            args = ["stream", HOST, str(s.port), "--bytes", str(bench.streamBytes)]
            if request:
                args += ["--request", bench.file("sreq", request), "--expect-101"]
            runs = [bench.loadgen(*args) for _ in range(bench.repeats)]
            bench.add("stream 64KiB writes", name, bench.median(runs, "mbps"), "MB/s")

    # 3. idle: memory per open upgraded connection.
    if "idle" in groups:
        idle(bench, servers["raw twisted"], None, b"", 0)
        idle(bench, servers["upgradable"], upgradeRequest(b"bench/1"), b"", 0)
        if node:
            idle(bench, servers["node"], upgradeRequest(b"bench/1"), b"", 0)
        idle(bench, servers["upgradable"], wsRequest(), frame, 34, label="idle websocket")
        idle(bench, servers["autobahn"], wsRequest(), frame, 34, label="idle websocket")

    # 4. plain GET: UpgradableSite vs stock Site, keep-alive; then the product
    # (its default page at /) and its baseline, a Site with its access log.
    get = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    getRates: dict[str, float] = {}
    for name in ("stock site", "upgradable", LOGGED_SITE, PRODUCT) if "get" in groups else ():
        with running(servers[name]) as s:
            runs = [
                bench.measured(
                    s,
                    "get",
                    HOST,
                    str(s.port),
                    "--concurrency",
                    "50",
                    "--seconds",
                    str(bench.seconds),
                    "--request",
                    bench.file("get", get),
                )
                for _ in range(bench.repeats)
            ]
            getRates[name] = bench.median(runs, "rate")
            extra = {}
            if name == PRODUCT and getRates.get(LOGGED_SITE):
                extra["to_logged_site"] = f"{getRates[name] / getRates[LOGGED_SITE]:.2f}"
            bench.add(
                "plain GET c=50",
                name,
                getRates[name],
                "req/s",
                cpu_us=round(bench.median(runs, "cpu_us"), 1),
                errors=int(bench.median(runs, "errors")),
                **extra,
            )

    # 5. h2c over one upgraded connection vs Twisted's h2 over TLS (ALPN).
    h2 = (("upgradable", "h2c"), ("twisted h2 (tls)", "tls"))
    for name, kind in h2 if "h2" in groups else ():
        with running(servers[name]) as s:
            runs = []
            for _ in range(bench.repeats):
                done = subprocess.run(
                    pinned(
                        1,
                        [
                            sys.executable,
                            str(HERE / "h2bench.py"),
                            kind,
                            str(s.port),
                            str(bench.seconds),
                        ],
                    ),
                    capture_output=True,
                    text=True,
                    timeout=bench.seconds * 4 + 60,
                )
                if done.returncode:
                    raise RuntimeError(done.stderr)
                runs.append(json.loads(done.stdout.splitlines()[-1]))
            bench.add(f"h2 requests ({kind})", name, bench.median(runs, "rate"), "req/s")

    # 7. scaleout: --workers 1 and 2 behind HAProxy (docs/deploy/haproxy.cfg).
    if "scaleout" in groups:
        scaleout(bench, echo32)

    table = render(bench.rows)
    print()
    print(table)
    if options.markdown:
        options.markdown.write_text(markdown(bench, table, options))
    if options.json:
        options.json.write_text(json.dumps(bench.rows, indent=1))
    shutil.rmtree(files, ignore_errors=True)


def idle(
    bench: Bench,
    server: Server,
    request: bytes | None,
    payload: bytes,
    reply: int,
    label: str = "idle upgraded",
) -> None:
    samples = []
    for _ in range(bench.repeats):
        with running(server) as s:
            time.sleep(0.2)
            before = s.rss()
            args = ["idle", HOST, str(s.port), "--connections", str(bench.idleConnections)]
            if request is not None:
                args += ["--request", bench.file("ireq", request)]
            if payload:
                args += ["--payload", bench.file("ipay", payload), "--reply", str(reply)]
            holder = subprocess.Popen(
                pinned(1, [bench.loadgenPath, *args]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None and holder.stdin is not None
            status = json.loads(holder.stdout.readline())
            time.sleep(0.5)
            after = s.rss()
            holder.stdin.close()
            holder.wait(30)
            holder.stdout.close()
            samples.append((after - before) / max(status["open"], 1))
    label = label if request is not None or label != "idle upgraded" else "idle upgraded"
    bench.add(label, server.name, statistics.median(samples), "B/conn", open=bench.idleConnections)


# The product, and the GET baseline kept as `twistd web` keeps it.
PRODUCT = "twistd upgradable"
LOGGED_SITE = "stock site + access log"

# 7. scaleout: --workers 1 and 2 behind HAProxy.
SCALEOUT_CONNECTIONS = 16  # upgraded connections streaming at once
SCALEOUT_HANDSHAKE = "haproxy handshake c=50"
SCALEOUT_ECHO = f"haproxy echo c={SCALEOUT_CONNECTIONS}"
SCALEOUT = (SCALEOUT_HANDSHAKE, SCALEOUT_ECHO)


def haproxyConfig(front: int, backend: int) -> str:
    """docs/deploy/haproxy.cfg, its frontend on ``front`` and one server (app1)
    on ``backend``: app2's line is removed, everything else is as documented."""
    text = (DEPLOY / "haproxy.cfg").read_text()
    edits = (
        (r"\b127\.0\.0\.1:8080\b", f"{HOST}:{front}"),
        (r"(?m)^(\s*server app1 )127\.0\.0\.1:8081\b", rf"\g<1>{HOST}:{backend}"),
        (r"(?m)^\s*server app2 127\.0\.0\.1:8082\b.*\n", ""),
    )
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise RuntimeError(f"docs/deploy/haproxy.cfg: {pattern!r} matched {count} times")
    return text


def cpuSeconds(pid: int) -> float:
    """Time on CPU of every thread of process ``pid`` (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():  # raises once the process is gone
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that just ended
    return total / 1e9


def cpuTimes() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs together, from /proc/stat."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    ticks = [int(value) for value in first[1:9]]  # user .. steal (guest is within user)
    return ticks[3] + ticks[4], sum(ticks)


def childrenCpu() -> float:
    """CPU seconds of every child waited for so far (the load generator's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def waitForLog(
    log: Path, process: subprocess.Popen[bytes], pattern: str, count: int = 1, seconds: float = 30
) -> list[re.Match[str]]:
    """The first ``count`` matches of ``pattern`` in ``log``, once there."""
    deadline = time.monotonic() + seconds
    while True:
        text = log.read_text(errors="replace")
        found = list(re.finditer(pattern, text))
        if len(found) >= count:
            return found[:count]
        if process.poll() is not None or time.monotonic() > deadline:
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            raise RuntimeError(f"no {pattern!r} in {log.name} ({state}):\n{text[-3000:]}")
        time.sleep(0.05)


def stopProcess(process: subprocess.Popen[bytes], seconds: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def stopOrphan(pid: int, seconds: float = 10) -> None:
    """Wait for a worker whose master has stopped (it stops when its stdin
    closes), and kill it if it is still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if b"upgradable.app._worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return  # gone (its number reused by now)
        except OSError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, 9)
    except OSError:
        pass


@dataclass
class Stack:
    """A ``twistd upgradable --workers N`` backend with HAProxy in front."""

    workers: int
    port: int  # HAProxy's frontend
    servers: dict[str, int]  # "worker K" (and "master") -> pid
    haproxyPid: int

    @property
    def name(self) -> str:
        return f"upgradable {self.workers} worker" + ("s" if self.workers > 1 else "")

    def cpu(self) -> dict[str, float]:
        try:
            used = {name: cpuSeconds(pid) for name, pid in self.servers.items()}
            used["haproxy"] = cpuSeconds(self.haproxyPid)
        except FileNotFoundError as error:
            raise RuntimeError(f"{self.name}: a process ended during the benchmark") from error
        return used


def spawnLogging(argv: list[str], log: Path, directory: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``directory``, its output (both streams) to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=directory
        )


@contextmanager
def haproxyStack(bench: Bench, program: str, workers: int) -> Iterator[Stack]:
    directory = Path(tempfile.mkdtemp(prefix=f"scaleout{workers}-", dir=bench.files))
    backendPort = freePort()
    front = freePort()
    while front == backendPort:
        front = freePort()
    listen = f"haproxy:tcp:{backendPort}:interface={HOST}"
    twistd = [
        *TWISTD, "-n", "--pidfile=", "upgradable", "--protocol", "http2-echo",
        "--listen", listen, "--workers", str(workers), "--grace-period", "1",
    ]  # fmt: skip
    backendLog = directory / "twistd.log"
    haproxyLog = directory / "haproxy.log"
    processes: list[subprocess.Popen[bytes]] = []
    workerPids: list[int] = []
    try:
        backend = spawnLogging(twistd, backendLog, directory)
        processes.append(backend)
        if workers > 1:
            shared = rf"upgradable listening on .*port={backendPort}\).*shared by {workers} "
            waitForLog(backendLog, backend, shared)
            started = waitForLog(
                backendLog, backend, r"Worker (\d+) started \(pid (\d+)\)", count=workers
            )
            servers = {f"worker {m.group(1)}": int(m.group(2)) for m in started}
            workerPids = list(servers.values())
            for number in range(1, workers + 1):
                waitForLog(backendLog, backend, rf"\[worker {number}\] upgradable listening on ")
            servers["master"] = backend.pid
        else:
            single = rf"upgradable listening on .*port={backendPort}\) \(haproxy:"
            waitForLog(backendLog, backend, single)
            servers = {"worker 1": backend.pid}
        config = directory / "haproxy.cfg"
        config.write_text(haproxyConfig(front, backendPort))
        proxy = spawnLogging([program, "-f", str(config), "-db"], haproxyLog, directory)
        processes.append(proxy)
        # HAProxy's health check came through the PROXY port and was answered...
        waitForLog(backendLog, backend, r'"GET /healthz HTTP/1\.[01]" 200 ', seconds=15)
        # ...and a client upgrades through HAProxy and gets its bytes back.
        deadline = time.monotonic() + 15
        while not echoesThrough(front):
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no upgrade through HAProxy:\n{haproxyLog.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Stack(workers, front, servers, proxy.pid)
    finally:
        for process in reversed(processes):  # HAProxy first, then the master
            stopProcess(process)
        for pid in workerPids:
            stopOrphan(pid)
        shutil.rmtree(directory, ignore_errors=True)


def echoesThrough(port: int) -> bool:
    """Whether an HTTP/2.0 upgrade through ``port`` gets a 101 and an echo."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(upgradeRequest(b"HTTP/2.0"))
            received = b""
            while b"\r\n\r\n" not in received or not received.endswith(b"ping"):
                if received.endswith(b"\r\n\r\n"):
                    if not received.startswith(b"HTTP/1.1 101 "):
                        return False
                    sock.sendall(b"ping")
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                received += chunk
            return True
    except OSError:
        return False


def scaleoutRun(bench: Bench, stack: Stack, *args: str) -> dict[str, float]:
    """One unpinned loadgen run through HAProxy, with where the CPU went:
    ``cpu_us`` per counted operation (master and workers), and the cores
    (CPU seconds / wall seconds) of each worker, the master, HAProxy and
    the load generator, and how idle the whole machine was."""
    before, (idle0, total0), children0 = stack.cpu(), cpuTimes(), childrenCpu()
    started = time.monotonic()
    run = bench.loadgen(*args, cpu=None)
    wall = time.monotonic() - started
    after, (idle1, total1), children1 = stack.cpu(), cpuTimes(), childrenCpu()
    used = {name: after[name] - before[name] for name in before}
    server = sum(value for name, value in used.items() if name != "haproxy")
    run["cpu_us"] = server / max(run.get("count", 0), 1) * 1e6
    for name, seconds in used.items():
        run[f"cores {name}"] = seconds / wall
    run["cores loadgen"] = (children1 - children0) / wall
    run["idle_pct"] = 100 * (idle1 - idle0) / max(total1 - total0, 1)
    return run


def scaleoutDetail(
    bench: Bench, runs: list[dict[str, float]], key: str, workers: int
) -> dict[str, object]:
    """The range of ``key`` over ``runs`` (the median is the row's value),
    and the medians of where the CPU went (see scaleoutRun)."""

    def median(key: str) -> float:
        return bench.median(runs, key)

    values = [run[key] for run in runs]
    detail: dict[str, object] = {"range": f"{min(values):.0f}-{max(values):.0f}"}
    perWorker = (median(f"cores worker {k}") for k in range(1, workers + 1))
    detail["cores_workers"] = "+".join(f"{c:.2f}" for c in perWorker)
    if workers > 1:
        detail["cores_master"] = round(median("cores master"), 2)
    detail["cores_haproxy"] = round(median("cores haproxy"), 2)
    detail["cores_loadgen"] = round(median("cores loadgen"), 2)
    detail["idle_pct"] = round(median("idle_pct"))
    detail["errors"] = int(median("errors"))
    return detail


def scaleout(bench: Bench, payload: bytes) -> None:
    """Handshakes and echo throughput through HAProxy to 1, then 2 workers."""
    program = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if program is None:
        print("haproxy not found: the scaleout group is skipped", file=sys.stderr)
        return
    request = bench.file("scaleout-request", upgradeRequest(b"HTTP/2.0"))
    for workers in (1, 2):
        with haproxyStack(bench, program, workers) as stack:
            port = str(stack.port)
            handshake = [
                "handshake", HOST, port, "--concurrency", "50", "--seconds", str(bench.seconds),
                "--request", request, "--expect-101",
                "--payload", bench.file("scaleout-payload", payload), "--reply", str(len(payload)),
            ]  # fmt: skip
            runs = [scaleoutRun(bench, stack, *handshake) for _ in range(bench.repeats)]
            bench.add(
                SCALEOUT_HANDSHAKE,
                stack.name,
                bench.median(runs, "rate"),
                "conn/s",
                p50_us=round(bench.median(runs, "p50_us")),
                p99_us=round(bench.median(runs, "p99_us")),
                cpu_us=round(bench.median(runs, "cpu_us"), 1),
                **scaleoutDetail(bench, runs, "rate", workers),
            )
            echo = [
                "streams", HOST, port, "--concurrency", str(SCALEOUT_CONNECTIONS),
                "--seconds", str(bench.seconds), "--request", request, "--expect-101",
            ]  # fmt: skip
            runs = [scaleoutRun(bench, stack, *echo) for _ in range(bench.repeats)]
            bench.add(
                SCALEOUT_ECHO,
                stack.name,
                bench.median(runs, "mbps"),
                "MB/s",
                slowest_mbps=round(bench.median(runs, "min_mbps"), 1),
                **scaleoutDetail(bench, runs, "mbps", workers),
            )


BASELINES = {
    "handshake c=1": "raw twisted",
    "handshake c=50": "raw twisted",
    "ws handshake c=50": "autobahn",
    "ws messages c=50": "autobahn",
    "stream 64KiB writes": "raw twisted",
    "idle upgraded": "raw twisted",
    "idle websocket": "autobahn",
    "plain GET c=50": "stock site",
    "h2 requests (h2c)": None,
    "h2 requests (tls)": None,
    SCALEOUT_HANDSHAKE: "upgradable 1 worker",
    SCALEOUT_ECHO: "upgradable 1 worker",
}
SCALEOUT_NOTE = (
    "scaleout: twistd upgradable --workers N behind HAProxy (docs/deploy/haproxy.cfg, one "
    "server; HAProxy's default threads, one per CPU), nothing pinned: the workers, HAProxy "
    "and loadgen share all CPUs\n"
    "scaleout detail: range = lowest-highest of the repeats; cores_* = CPU seconds / wall "
    "seconds; idle_pct = all CPUs idle; slowest_mbps = the slowest connection"
)


def ratios(rows: list[dict[str, object]]) -> list[tuple[dict[str, object], str]]:
    out = []
    base = {}
    for row in rows:
        if BASELINES.get(str(row["scenario"])) == row["server"]:
            base[row["scenario"]] = row["value"]
    raw = {r["scenario"]: r["value"] for r in rows if r["server"] == "raw twisted"}
    for row in rows:
        reference = base.get(row["scenario"]) or raw.get(row["scenario"])
        ratio = f"{float(row['value']) / float(reference):.2f}" if reference else ""  # type: ignore[arg-type]
        out.append((row, ratio))
    return out


def render(rows: list[dict[str, object]]) -> str:
    lines = [
        f"{'scenario':<22} {'server':<24} {'median':>12} {'unit':<7} {'ratio':>6}  detail",
        "-" * 102,
    ]
    for row, ratio in ratios(rows):
        detail = " ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("scenario", "server", "value", "unit")
        )
        lines.append(
            f"{row['scenario']:<22} {row['server']:<24} {float(row['value']):>12.1f} "  # type: ignore[arg-type]
            f"{row['unit']:<7} {ratio:>6}  {detail}"
        )
    if any(row["scenario"] in SCALEOUT for row in rows):
        lines.append(SCALEOUT_NOTE)
    lines.append(
        "ratio: to the baseline of the scenario measured in this run (raw twisted; "
        "stock site for GET; autobahn for WebSocket; 1 worker for scaleout)"
    )
    return "\n".join(lines)


def markdown(bench: Bench, table: str, options: argparse.Namespace) -> str:
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (StopIteration, OSError):
        model = "unknown CPU"
    when = time.strftime("%Y-%m-%d")
    return (
        f"Measured by `python bench/run.py` on {when}: {model}; {machine}.\n"
        f"{bench.seconds} s x {bench.repeats} per cell, medians.\n\n```\n{table}\n```\n"
    )


def makeCertificate(directory: Path) -> str:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / "server.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return str(path)


if __name__ == "__main__":
    main()
