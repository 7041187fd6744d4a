"""
Instructions per operation, counted by valgrind's callgrind: a measure of
the server's own work that does not move with the load on a shared machine
(wall-clock and CPU-time figures do, by 10 to 20 % between runs here).

    python bench/instructions.py                    # this checkout
    python bench/instructions.py --tree ../before   # another checkout's package

Each server (bench/servers.py) runs under callgrind, unpinned, while the load
generator drives it for --seconds; the counters are zeroed once the server is
ready and dumped before it stops, so start-up is not counted. Instructions
are user space only (the kernel's share of a handshake, its system calls, is
not in them) and are divided by the operations the load generator completed
(a handshake, or a GET on a kept-alive connection). Under callgrind a server
runs about 50 times slower, so each figure covers a few thousand operations.
Ratios are to a baseline measured in the same run: raw Twisted for the
handshake, a stock twisted.web Site for the GET, Autobahn for the WebSocket
handshake (with one 32-byte message echoed).

--tree puts another checkout first on the servers' PYTHONPATH, so that its
``upgradable`` package is measured with this checkout's bench servers: the
way to compare code before and after a change.

--twistd also measures the product as bench/run.py starts it (``twistd -n
--pidfile= --logfile DIR/twistd.log upgradable --listen
tcp:PORT:interface=127.0.0.1``, under valgrind the same way, its echo the
``HTTP/2.0`` sample), beside the library's row of each scenario, and for the
GET its baseline ``stock site + access log`` (``twistd web --class
servers.page``). These are waited for by polling the port, as twistd prints
nothing; their log file's writes are in the counts (user space only: the
``write`` system calls themselves are not).

--keep DIR keeps each callgrind dump there (``callgrind.<server>.<scenario>``)
for ``callgrind_annotate --inclusive=yes``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402
    HOST,
    LOGGED_SITE,
    PRODUCT,
    TWISTD_UPGRADABLE,
    TWISTD_WEB,
    filledIn,
    freePort,
    upgradeRequest,
    waitUntilAnswering,
    wsFrame,
    wsRequest,
)

GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# Under valgrind, twistd takes a minute or more to import and scan its plugins.
TWISTD_START_SECONDS = 600


def servesPy(kind: str) -> list[str]:
    return [sys.executable, str(HERE / "servers.py"), kind, "{port}"]


def measure(
    label: str,
    argv: list[str],
    answers: bool,
    loadgen: list[str],
    files: Path,
    seconds: float,
    tree: str | None,
) -> tuple[float, int, Path]:
    """
    Instructions per operation of server ``label`` (``argv``, with ``{port}`` and
    ``{dir}`` to fill in; ready when it prints ``ready``, or, with
    ``answers``, when it answers HTTP) while ``loadgen`` (the program and
    its mode; options follow the address) drives it, how many operations
    that was, and the dump they come from.
    """
    port = freePort()
    directory = Path(tempfile.mkdtemp(prefix=f"server-{port}-", dir=files))
    out = directory / "callgrind"
    env = dict(os.environ)
    # bench/ for twistd web's --class servers.page; --tree's package first.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, str(HERE), env.get("PYTHONPATH")]))
    output = (directory / "output").open("w")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
         *filledIn(argv, port, directory)],
        stdin=subprocess.DEVNULL, stdout=output if answers else subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=env, cwd=directory,
    )  # fmt: skip
    control = shutil.which("callgrind_control") or "callgrind_control"
    try:
        if answers:
            waitUntilAnswering(port, server, TWISTD_START_SECONDS, label)
        else:
            assert server.stdout is not None
            if "ready" not in server.stdout.readline():
                raise RuntimeError(f"{label} did not start under valgrind")
        subprocess.run([control, "-z", str(server.pid)], check=True, capture_output=True)
        program, mode, *rest = loadgen
        done = subprocess.run(
            [program, mode, HOST, str(port), *rest, "--seconds", str(seconds)],
            check=True, capture_output=True, text=True, timeout=seconds * 4 + 60,
        )  # fmt: skip
        count = int(json.loads(done.stdout.splitlines()[-1])["count"])
        subprocess.run([control, "-d", str(server.pid)], check=True, capture_output=True)
        time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
        output.close()
    # The dump asked for above is numbered .1; the one written at exit is not used.
    dump = Path(f"{out}.{server.pid}.1")
    totals = [line for line in dump.read_text().splitlines() if line.startswith("summary:")]
    return int(totals[-1].split()[1]) / max(count, 1), count, dump


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="load per server")
    parser.add_argument("--tree", help="a checkout whose upgradable package is measured")
    parser.add_argument(
        "--only", default="handshake,get,ws", help="scenarios to run, of handshake,get,ws"
    )
    parser.add_argument(
        "--twistd",
        action="store_true",
        help="also measure twistd upgradable with its defaults (and, for GET, "
        "a stock Site with its access log, as twistd web keeps it)",
    )
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps in this directory")
    options = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("a C compiler (cc) is needed to build bench/loadgen.c")
    files = Path(tempfile.mkdtemp(prefix="upgradable-instructions-"))
    loadgen = str(files / "loadgen")
    subprocess.run([cc, "-O2", "-o", loadgen, str(HERE / "loadgen.c")], check=True)
    inputs = {
        "req": upgradeRequest(b"bench/1"),
        "productreq": upgradeRequest(b"HTTP/2.0"),  # the http2-echo sample's byte echo
        "get": GET,
        "pay": b"x" * 32,
        "wsreq": wsRequest(),
        "wspay": wsFrame(b"x" * 32),
    }
    for name, data in inputs.items():
        (files / name).write_bytes(data)
    handshake = [loadgen, "handshake", "--concurrency", "50",
                 "--payload", str(files / "pay"), "--reply", "32"]  # fmt: skip
    get = [loadgen, "get", "--concurrency", "50", "--request", str(files / "get")]
    ws = [loadgen, "handshake", "--concurrency", "50", "--payload", str(files / "wspay"),
          "--reply", "34", "--request", str(files / "wsreq"), "--expect-101"]  # fmt: skip
    productHandshake = [*handshake, "--request", str(files / "productreq"), "--expect-101"]
    product = options.twistd
    # (group, scenario, label, server argv, whether it is waited for by polling, load)
    cells = [
        ("handshake", "handshake c=50", "raw twisted", servesPy("raw"), False, handshake),
        ("handshake", "handshake c=50", "upgradable", servesPy("upgradable"), False,
         [*handshake, "--request", str(files / "req"), "--expect-101"]),
        *[("handshake", "handshake c=50", PRODUCT, TWISTD_UPGRADABLE, True, productHandshake)]
        * product,
        ("get", "plain GET c=50", "stock site", servesPy("site"), False, get),
        ("get", "plain GET c=50", "upgradable", servesPy("upgradable"), False, get),
        *[("get", "plain GET c=50", LOGGED_SITE, TWISTD_WEB, True, get),
          ("get", "plain GET c=50", PRODUCT, TWISTD_UPGRADABLE, True, get)] * product,
        ("ws", "ws handshake", "autobahn", servesPy("autobahn"), False, ws),
        ("ws", "ws handshake", "upgradable", servesPy("upgradable"), False, ws),
        *[("ws", "ws handshake", PRODUCT, TWISTD_UPGRADABLE, True, ws)] * product,
    ]  # fmt: skip
    print(f"callgrind, {options.seconds:g} s of load per server"
          + (f", upgradable from {options.tree}" if options.tree else ""))  # fmt: skip
    print(f"{'scenario':<16} {'server':<24} {'instructions/op':>16} {'ops':>6} {'ratio':>6}")
    baseline: dict[str, float] = {}
    groups = set(options.only.split(","))
    if options.keep:
        options.keep.mkdir(parents=True, exist_ok=True)
    for group, scenario, label, server, answers, args in cells:
        if group not in groups:
            continue
        perOp, count, dump = measure(
            label, server, answers, args, files, options.seconds, options.tree
        )
        if options.keep:
            name = f"callgrind.{label}.{scenario}".replace(" ", "_").replace("=", "")
            shutil.copyfile(dump, options.keep / name)
        baseline.setdefault(scenario, perOp)
        print(f"{scenario:<16} {label:<24} {perOp:>16,.0f} {count:>6} "
              f"{perOp / baseline[scenario]:>6.2f}", flush=True)  # fmt: skip
    shutil.rmtree(files, ignore_errors=True)


if __name__ == "__main__":
    main()
