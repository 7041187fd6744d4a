from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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


# The test being run, so that requirePeer can check that it is marked.
_running: list[pytest.Item] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def requirePeer(program: str) -> str:
    """
    The path of an external program a test needs. Missing, it skips the test,
    unless UPGRADABLE_REQUIRE_PEERS=1 (as in CI), where it fails it.

    Call it from the test or from a plain (not async) fixture: pytest-twisted
    reports a skip raised inside an async fixture as an error. The test must
    be marked ``@pytest.mark.peers``, so that ``-m peers`` selects every test
    that needs a program (tests/test_peers.py runs them without any).
    """
    if _running and _running[-1].get_closest_marker("peers") is None:
        pytest.fail(f"{_running[-1].nodeid} needs {program}: mark it @pytest.mark.peers")
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed"
        if os.environ.get("UPGRADABLE_REQUIRE_PEERS") == "1":
            pytest.fail(message + " and UPGRADABLE_REQUIRE_PEERS=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate and key for 127.0.0.1, in one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("tls") / "server.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path
