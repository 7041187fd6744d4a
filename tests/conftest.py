from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher


class LogCapture:
    """The twisted.logger events emitted during one test."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def failures(self, kind: type[BaseException]) -> list[Any]:
        return [
            e["log_failure"]
            for e in self.events
            if "log_failure" in e and e["log_failure"].check(kind)
        ]


@pytest.fixture
def logged() -> Iterator[LogCapture]:
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


def requirePeer(program: str) -> str:
    """
    The path of an external program a test needs. Missing, it skips the test,
    unless UPGRADABLE_REQUIRE_PEERS=1 (as in CI), where it fails it.
    """
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed"
        if os.environ.get("UPGRADABLE_REQUIRE_PEERS") == "1":
            pytest.fail(message + " and UPGRADABLE_REQUIRE_PEERS=1")
        pytest.skip(message)
    return path
