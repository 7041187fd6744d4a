"""The short, deterministic run of the channel fuzzer (tests/fuzz_channel.py)."""

from __future__ import annotations

from .fuzz_channel import fuzzer


def test_channelInvariantsHoldForFuzzedStreams() -> None:
    fuzzer(examples=400, derandomize=True)()
