"""
Fuzzing the channel: arbitrary byte streams, cut into arbitrary reads, built
from pieces of valid and invalid requests plus random bytes.

    python -m tests.fuzz_channel --seconds 300      # a long run; prints the count
    pytest tests/test_fuzz.py                       # the short deterministic run CI does

Invariants checked on every input:

1. no exception escapes ``dataReceived`` and none is logged;
2. a 101 appears only after a request that offered a registered product
   with the ``upgrade`` connection option on HTTP/1.1, at most once, and it
   is the last thing HTTP writes (nothing follows its head);
3. after a 101 the upgraded protocol, connected once, received exactly the
   bytes that followed that request, once, in order: all of the input from
   a point inside the read that completed the request (the 101 was written
   while that read was handled), to the end;
4. at most one final response per request that was sent.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from upgradable import UpgradeRequest
from upgradable._registry import FactoryHandler

from .helpers import RecordingFactory, Server, parseResponses

PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"POST /p HTTP/1.1\r\n",
    b"HEAD / HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"CONNECT x:1 HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"Host: x\r\n",
    b"Host: y\r\n",
    b"Connection: Upgrade\r\n",
    b"Connection: keep-alive, upgrade\r\n",
    b"Connection: close\r\n",
    b"Upgrade: IRC/6.9\r\n",
    b"Upgrade: irc/6.9, foo\r\n",
    b"Upgrade: IRC/6.8\r\n",
    b"Upgrade: \r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: x\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b" folded\r\n",
    b"NoColon\r\n",
    b"\r\n",
    b"3\r\nabc\r\n0\r\n\r\n",
    b"abc",
    b"NICK a\r\n",
    b"\x16\x03\x01\x00",
    b"\x00\xff",
]

noise = st.lists(
    st.one_of(st.sampled_from(PIECES), st.binary(max_size=20)), min_size=1, max_size=25
).map(b"".join)

REQUEST_LINES = [p for p in PIECES if p.endswith(b" HTTP/1.1\r\n") or p.endswith(b"1.0\r\n")]
HEADER_LINES = [p for p in PIECES if b": " in p or p in (b" folded\r\n", b"NoColon\r\n")]


@st.composite
def requests(draw: Any) -> bytes:
    """Mostly well-formed requests, often asking to upgrade, then anything."""
    line = draw(st.sampled_from(REQUEST_LINES))
    headers = draw(st.lists(st.sampled_from(HEADER_LINES), max_size=6))
    if draw(st.booleans()):  # make a valid upgrade request likely
        headers = [b"Host: x\r\n", b"Connection: Upgrade\r\n", b"Upgrade: IRC/6.9\r\n", *headers]
        headers = draw(st.permutations(headers))
    body = draw(st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n"]))
    return line + b"".join(headers) + b"\r\n" + body


streams = st.lists(st.one_of(requests(), noise), min_size=1, max_size=4).map(b"".join)


@st.composite
def chunked(draw: Any) -> list[bytes]:
    data = draw(streams)
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(data) - 1, 0)), max_size=8))))
    out, last = [], 0
    for cut in cuts:
        out.append(data[last:cut])
        last = cut
    out.append(data[last:])
    return [c for c in out if c]


SEEN = {"switched": 0, "refused": 0}
SWITCHED = b" 101 Switching Protocols\r\n"

_UPGRADE_REQUEST = re.compile(
    rb"(?i:[!#$%&'*+.^_`|~0-9a-z-]+) \S+ HTTP/1\.1\r\n"  # a request line
    rb"(?:[^\r\n]*\r\n)*?"
    rb"(?i:upgrade:)[^\r\n]*(?i:irc/6\.9)",
)


def check(chunks: list[bytes]) -> None:
    """Feed ``chunks`` to a fresh server and check the invariants."""
    irc = RecordingFactory()
    server = Server()
    handler = _AskedFactoryHandler(irc)
    server.registry.register(b"IRC/6.9", handler)
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            errors.append(event)

    # Where the read that made the server write its 101 starts and ends.
    switchedIn: tuple[int, int] | None = None
    offset = 0
    globalLogPublisher.addObserver(observe)
    try:
        for chunk in chunks:
            server.send(chunk)  # (1) must not raise
            if switchedIn is None and SWITCHED in server.output():
                switchedIn = (offset, offset + len(chunk))
            offset += len(chunk)
        # Every connection ends; that must not raise either (and it closes
        # any body spooled to a temporary file).
        server.protocol.connectionLost(Failure(ConnectionDone()))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not errors, errors[0]["log_failure"].getTraceback()
    data = b"".join(chunks)
    output = server.output()
    switches = output.count(SWITCHED)
    assert switches <= 1
    SEEN["switched"] += switches
    SEEN["refused"] += bool(re.search(rb"HTTP/1\.1 4\d\d ", output))
    if switches:
        assert switchedIn is not None
        # (2) nothing follows the 101's head (the recording protocol writes
        # none), and a plausible upgrade request came before the hand-over
        assert output[output.index(SWITCHED) :].partition(b"\r\n\r\n")[2] == b"", output[-200:]
        assert len(irc.built) == 1
        protocol = irc.built[0]
        assert protocol.made == 1
        # (3) the protocol got the input from its hand-over point to the end:
        # every byte of the later reads, none twice, none of the request's
        received = protocol.data
        start = len(data) - len(received)
        assert data[start:] == received, (data, received)
        assert switchedIn[0] <= start <= switchedIn[1], (switchedIn, start)
        assert _UPGRADE_REQUEST.search(data[:start]), data
        # ... and the hand-over point is the end of the request switched:
        # its head's empty line, then its Content-Length body (a chunked
        # body ends with an empty line too)
        switched = handler.asked[-1]
        chunked = switched.headers.hasHeader(b"transfer-encoding")
        ending = b"\r\n\r\n" + (b"" if chunked else switched.body)
        assert data[:start].endswith(ending), (data[:start][-100:], ending)
    else:
        assert irc.built == []
    # (4) at most one final response per request line sent
    # (a garbage stream gets one 400, hence the + 1)
    requests = len(re.findall(rb" HTTP/1\.[01]\r\n", data)) + 1
    finals = sum(1 for r in _responses(output) if r >= 200)
    assert finals <= requests


class _AskedFactoryHandler(FactoryHandler):
    """The handler a plain factory gets, recording the requests it is asked about."""

    def __init__(self, factory: RecordingFactory) -> None:
        super().__init__(factory)
        self.asked: list[UpgradeRequest] = []

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Any:
        self.asked.append(request)
        return super().upgrade(request, product)


def _responses(output: bytes) -> list[int]:
    try:
        return [r.code for r in parseResponses(output)[0]]
    except (AssertionError, ValueError):
        # A response framed by the close, or cut short: count status lines.
        return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", output)]


def fuzzer(examples: int, derandomize: bool) -> Any:
    return settings(
        max_examples=examples,
        derandomize=derandomize,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(chunked())(check))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch", type=int, default=2000)
    options = parser.parse_args()
    started = time.monotonic()
    tried = 0
    while time.monotonic() - started < options.seconds:
        fuzzer(options.batch, derandomize=False)()
        tried += options.batch
        print(
            f"{tried} inputs, {time.monotonic() - started:.0f} s, no invariant broken", flush=True
        )
    elapsed = time.monotonic() - started
    print(
        f"fuzzed {tried} inputs in {elapsed:.0f} s ({SEEN['switched']} switched protocols, "
        f"{SEEN['refused']} got a 4xx): every invariant held"
    )


if __name__ == "__main__":
    main()
