"""
Tests whose third-party program is missing skip, always: the README's test
command must pass on a machine with none of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_peerTestsSkipWithoutTheirPrograms(tmp_path: Path) -> None:
    """
    With nothing but this Python on PATH and UPGRADABLE_REQUIRE_PEERS unset,
    every test marked ``peers`` skips or passes: none errors or fails (a skip
    raised inside an async fixture used to be an error).
    """
    bin = tmp_path / "bin"
    bin.mkdir()
    for name in ("python", "python3", "twistd"):
        installed = Path(sys.executable).parent / name
        if installed.exists():
            (bin / name).symlink_to(installed)
    env = {k: v for k, v in os.environ.items() if k != "UPGRADABLE_REQUIRE_PEERS"}
    env["PATH"] = str(bin)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "peers",
         "-o", "addopts=", "-rs", "tests"],
        cwd=TOP, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "skipped" in summary, summary
    for word in ("error", "failed"):
        assert word not in summary, summary
