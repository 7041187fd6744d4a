"""
Soak: a real ``twistd upgradable`` holding many upgraded echo connections
while new ones keep arriving at a steady rate, for a bounded time.

    python bench/soak.py                          # 2,000 held + 100 handshakes/s, 10 min
    python bench/soak.py --held 500 --seconds 60  # shorter

Loopback only; it stops by itself. Every ``--every`` seconds it prints the
server's RSS and the handshakes of that slice (count, errors, p99), then a
summary: total errors (goal: zero), the worst p99, and how RSS moved (goal:
flat once the held connections are open).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
REQUEST = (
    b"GET /soak HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: HTTP/2.0\r\n\r\n"
)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--held", type=int, default=2000, help="upgraded connections kept open")
    parser.add_argument("--rate", type=float, default=100, help="new handshakes a second")
    parser.add_argument("--seconds", type=float, default=600, help="how long (bounded)")
    parser.add_argument("--every", type=float, default=30, help="seconds per reported slice")
    parser.add_argument("--json", type=Path, help="write the slices here")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="upgradable-soak-"))
    loadgen = str(work / "loadgen")
    cc = shutil.which("cc") or "gcc"
    subprocess.run([cc, "-O2", "-o", loadgen, str(HERE / "loadgen.c")], check=True)
    (work / "request").write_bytes(REQUEST)
    (work / "payload").write_bytes(b"x" * 32)
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--pidfile=",
            "-n",
            "upgradable",
            "--listen",
            f"tcp:0:interface={HOST}:backlog=1024",
            "--protocol",
            "http2-echo",
            "--max-upgraded",
            str(options.held * 2),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    port = 0
    for line in server.stdout:
        match = re.search(r"listening on .*port=(\d+)", line)
        if match:
            port = int(match.group(1))
            break
    log = open(work / "server.log", "w")
    logger = subprocess.Popen(["cat"], stdin=server.stdout, stdout=log)
    slices = []
    try:
        baseline = rss(server.pid)
        holder = subprocess.Popen(
            [
                loadgen,
                "idle",
                HOST,
                str(port),
                "--connections",
                str(options.held),
                "--request",
                str(work / "request"),
                "--payload",
                str(work / "payload"),
                "--reply",
                "32",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdin is not None
        held = json.loads(holder.stdout.readline())
        print(
            f"held {held['open']} upgraded connections ({held['errors']} errors); "
            f"RSS {baseline / 2**20:.1f} -> {rss(server.pid) / 2**20:.1f} MiB",
            flush=True,
        )
        deadline = time.monotonic() + options.seconds
        while time.monotonic() < deadline:
            length = min(options.every, deadline - time.monotonic())
            done = subprocess.run(
                [
                    loadgen,
                    "handshake",
                    HOST,
                    str(port),
                    "--concurrency",
                    "8",
                    "--rate",
                    str(options.rate),
                    "--seconds",
                    str(length),
                    "--request",
                    str(work / "request"),
                    "--expect-101",
                    "--payload",
                    str(work / "payload"),
                    "--reply",
                    "32",
                ],
                capture_output=True,
                text=True,
                timeout=length + 60,
            )
            result = json.loads(done.stdout.splitlines()[-1])
            result["rss"] = rss(server.pid)
            slices.append(result)
            print(
                f"  +{len(slices) * options.every:5.0f}s  {result['count']:6d} handshakes  "
                f"errors {result['errors']}  p99 {result['p99_us'] / 1000:.1f} ms  "
                f"RSS {result['rss'] / 2**20:.1f} MiB",
                flush=True,
            )
        holder.stdin.close()
        holder.wait(60)
        holder.stdout.close()
    finally:
        server.terminate()
        server.wait(30)
        logger.wait(10)
        log.close()
    errors = sum(s["errors"] for s in slices)
    rssValues = [s["rss"] for s in slices]
    summary = {
        "held": held["open"],
        "held_errors": held["errors"],
        "handshakes": sum(s["count"] for s in slices),
        "errors": errors,
        "worst_p99_ms": max(s["p99_us"] for s in slices) / 1000,
        "rss_first_mib": rssValues[0] / 2**20,
        "rss_last_mib": rssValues[-1] / 2**20,
        "rss_max_mib": max(rssValues) / 2**20,
    }
    print(json.dumps(summary))
    if options.json:
        options.json.write_text(json.dumps({"summary": summary, "slices": slices}, indent=1))
    tracebacks = (work / "server.log").read_text().count("Traceback")
    print(f"tracebacks in the server log: {tracebacks}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors or held["errors"] or tracebacks else 0)


if __name__ == "__main__":
    main()
