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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
HOST = "127.0.0.1"
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return (
        [taskset, "-c", str(cpu), *argv]
        if taskset and os.cpu_count() and os.cpu_count() > 1
        else argv
    )  # type: ignore[operator]


@dataclass
class Server:
    name: str
    argv: list[str]
    process: subprocess.Popen[str] | None = None
    port: int = 0

    def cpuSeconds(self) -> float:
        assert self.process is not None
        return int(Path(f"/proc/{self.process.pid}/schedstat").read_text().split()[0]) / 1e9

    def rss(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.port = freePort()
    argv = [a.replace("{port}", str(server.port)) for a in server.argv]
    # stderr to a file: a pipe nobody drains fills up and blocks a chatty server.
    errors = tempfile.TemporaryFile(mode="w+")
    server.process = subprocess.Popen(
        pinned(0, argv), stdout=subprocess.PIPE, stderr=errors, text=True
    )
    try:
        assert server.process.stdout is not None
        line = server.process.stdout.readline()
        if "ready" not in line:
            errors.seek(0)
            raise RuntimeError(f"{server.name} did not start: {line}{errors.read()[-2000:]}")
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
        if server.process.stdout is not None:
            server.process.stdout.close()
        errors.close()


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

    def loadgen(self, *args: str) -> dict[str, float]:
        done = subprocess.run(
            pinned(1, [self.loadgenPath, *args]),
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
        print(f"  {scenario:<22} {server:<22} {value:>12.1f} {unit:<10} {detail}", flush=True)


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
        default="handshake,ws,stream,idle,get,h2",
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
    if node:
        servers["node"] = Server("node", [node, str(HERE / "node_upgrade.js"), "{port}"])
    else:
        print("node not found: the Node.js peer is skipped", file=sys.stderr)
    echo32 = b"0123456789abcdef0123456789abcdef"
    groups = set(options.only.split(","))
    print(
        f"loadgen on CPU 1, servers on CPU 0; {bench.seconds} s x {bench.repeats} per cell",
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

    # 6a. WebSocket handshakes (with one 32-byte text message echoed).
    frame = wsFrame(echo32)
    wsServers = ("upgradable", "autobahn", "twisted.web.websocket", "websockets")
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

    # 4. plain GET: UpgradableSite vs stock Site, keep-alive.
    get = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for name in ("stock site", "upgradable") if "get" in groups else ():
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
            bench.add(
                "plain GET c=50",
                name,
                bench.median(runs, "rate"),
                "req/s",
                cpu_us=round(bench.median(runs, "cpu_us"), 1),
                errors=int(bench.median(runs, "errors")),
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
}


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
        f"{'scenario':<22} {'server':<22} {'median':>12} {'unit':<7} {'ratio':>6}  detail",
        "-" * 100,
    ]
    for row, ratio in ratios(rows):
        detail = " ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("scenario", "server", "value", "unit")
        )
        lines.append(
            f"{row['scenario']:<22} {row['server']:<22} {float(row['value']):>12.1f} "  # type: ignore[arg-type]
            f"{row['unit']:<7} {ratio:>6}  {detail}"
        )
    lines.append(
        "ratio: to the baseline of the scenario measured in this run (raw twisted; "
        "stock site for GET; autobahn for WebSocket)"
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
    now = datetime.datetime.now(datetime.UTC)
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
