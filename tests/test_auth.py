"""HTTP Basic in front of upgrades: never a 101 without valid credentials."""

from __future__ import annotations

from base64 import b64encode

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

from upgradable import Accept, UpgradeRegistry
from upgradable._auth import BasicAuthHandler, parseBasic

from .helpers import RecordingProtocol, ScriptedHandler, Server, parseResponses


def basic(user: bytes, password: bytes) -> bytes:
    return b"Basic " + b64encode(user + b":" + password)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([basic(b"alice", b"se:cret")], (b"alice", b"se:cret")),
        ([b"basic " + b64encode(b"a:b")], (b"a", b"b")),
        ([b"Bearer abc"], None),
        ([b"Basic !!!"], None),
        ([b"Basic " + b64encode(b"nocolon")], None),
        ([basic(b"a", b"b"), basic(b"c", b"d")], None),
        (None, None),
    ],
)
def test_parseBasic(values: list[bytes] | None, expected: tuple[bytes, bytes] | None) -> None:
    assert parseBasic(values) == expected


def makeServer() -> tuple[Server, ScriptedHandler]:
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    inner = ScriptedHandler(lambda request, product: Accept(RecordingProtocol()))
    registry = UpgradeRegistry()
    registry.register(b"x", BasicAuthHandler(inner, [checker], "upgradable"))
    return Server(registry=registry), inner


def upgrade(authorization: bytes | None) -> bytes:
    line = b"Authorization: " + authorization + b"\r\n" if authorization else b""
    return b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n" + line + b"\r\n"


@pytest.mark.parametrize(
    "authorization",
    [None, basic(b"alice", b"wrong"), basic(b"mallory", b"secret"), b"Basic %%%"],
    ids=["missing", "wrong-password", "unknown-user", "malformed"],
)
def test_badCredentialsGet401WithAChallenge(authorization: bytes | None) -> None:
    server, inner = makeServer()
    server.send(upgrade(authorization), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    responses, _rest = parseResponses(server.output())
    assert [r.code for r in responses] == [401, 200]
    assert responses[0].header(b"www-authenticate") == [
        b'Basic realm="upgradable", charset="UTF-8"'
    ]
    assert inner.requests == []


def test_goodCredentialsSwitchAndNameTheUser() -> None:
    server, inner = makeServer()
    server.send(upgrade(basic(b"alice", b"secret")) + b"after")
    responses, _rest = parseResponses(server.output())
    assert [r.code for r in responses] == [101]
    [(request, _)] = inner.requests
    assert request.avatarId == b"alice"


def test_aCheckerForOtherCredentialsIsRefused() -> None:
    from twisted.cred.checkers import AllowAnonymousAccess

    with pytest.raises(ValueError):
        BasicAuthHandler(ScriptedHandler(None), [AllowAnonymousAccess()], "r")
