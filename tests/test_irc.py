"""The irc sample over in-memory connections."""

from __future__ import annotations

from base64 import b64encode

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from upgradable import UpgradeRegistry
from upgradable._auth import BasicAuthHandler
from upgradable.protocols.irc import IRCHandler

from .helpers import IRC_REQ, Server, parseResponses


class Client:
    def __init__(self, registry: UpgradeRegistry, extra: bytes = b"", lines: bytes = b"") -> None:
        self.server = Server(registry=registry)
        request = IRC_REQ[:-2] + extra + b"\r\n"
        self.server.send(request + lines)
        responses, self.buffer = parseResponses(self.server.clear())
        self.code = responses[0].code

    def send(self, line: str) -> None:
        self.server.send(line.encode() + b"\r\n")

    def lines(self) -> list[str]:
        data = self.buffer + self.server.clear()
        self.buffer = b""
        return data.decode().splitlines()


def openRegistry() -> UpgradeRegistry:
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", IRCHandler([]))
    return registry


def test_registrationWithoutPasswordAndLinesFromTheUpgradePacket() -> None:
    alice = Client(openRegistry(), lines=b"NICK alice\r\nUSER alice 0 * :Alice\r\n")
    assert alice.code == 101
    lines = alice.lines()
    assert lines[0] == ":upgradable 001 alice :connected to Twisted IRC"
    assert any(" 376 alice " in line for line in lines)


def test_channelsAndPrivateMessages() -> None:
    registry = openRegistry()
    alice = Client(registry, lines=b"NICK alice\r\nUSER a 0 * :A\r\nJOIN #lobby\r\n")
    bob = Client(registry, lines=b"NICK bob\r\nUSER b 0 * :B\r\nJOIN #lobby\r\n")
    alice.lines()
    bob.lines()
    bob.send("PRIVMSG #lobby :hello lobby")
    bob.send("PRIVMSG alice :hello alice")
    assert alice.lines() == [
        ":bob!bob@upgradable PRIVMSG #lobby :hello lobby",
        ":bob!bob@upgradable PRIVMSG alice :hello alice",
    ]
    alice.send("PRIVMSG bob :hi bob")
    assert bob.lines() == [":alice!alice@upgradable PRIVMSG bob :hi bob"]


def test_pingGetsPongWithTheToken() -> None:
    alice = Client(openRegistry(), lines=b"NICK alice\r\nUSER a 0 * :A\r\n")
    alice.lines()
    alice.send("PING :lag-42")
    assert alice.lines() == [":upgradable PONG upgradable :lag-42"]


def test_nickCollisionIsAnsweredWith433AndAnotherNickWorks() -> None:
    registry = openRegistry()
    Client(registry, lines=b"NICK alice\r\nUSER a 0 * :A\r\n")
    second = Client(registry, lines=b"NICK alice\r\n")
    assert second.lines() == [":upgradable 433 * alice :Nickname is already in use"]
    assert not second.server.closed
    second.send("NICK carol")
    assert second.lines()[0] == ":upgradable 001 carol :connected to Twisted IRC"


def test_quitCloses() -> None:
    alice = Client(openRegistry(), lines=b"NICK alice\r\nUSER a 0 * :A\r\nQUIT :bye\r\n")
    assert alice.server.closed


def test_nickIsFreeAgainAfterDisconnect() -> None:
    registry = openRegistry()
    alice = Client(registry, lines=b"NICK alice\r\nUSER a 0 * :A\r\n")
    alice.server.protocol.connectionLost(Failure(ConnectionDone()))
    again = Client(registry, lines=b"NICK alice\r\n")
    assert again.lines()[0].startswith(":upgradable 001 alice ")


def authRegistry() -> UpgradeRegistry:
    # Text, as `--auth memory:alice:secret:bob:hunter2` stores them.
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser("alice", "secret")
    checker.addUser("bob", "hunter2")
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", BasicAuthHandler(IRCHandler([checker]), [checker], "irc"))
    return registry


def authorization(user: bytes, password: bytes) -> bytes:
    return b"Authorization: Basic " + b64encode(user + b":" + password) + b"\r\n"


def test_withAuthTheHTTPUserIsLoggedInByNick() -> None:
    alice = Client(authRegistry(), authorization(b"alice", b"secret"), b"NICK alice\r\n")
    assert alice.code == 101
    assert alice.lines()[0].startswith(":upgradable 001 alice ")


def test_withAuthAnotherNickNeedsItsPass() -> None:
    registry = authRegistry()
    good = Client(registry, authorization(b"alice", b"secret"), b"PASS hunter2\r\nNICK bob\r\n")
    assert good.lines()[0].startswith(":upgradable 001 bob ")
    bad = Client(registry, authorization(b"alice", b"secret"), b"PASS nope\r\nNICK carol\r\n")
    assert bad.lines() == [":upgradable 464 * :Password incorrect"]
    assert bad.server.closed


def test_withAuthNoCredentialsNoUpgrade() -> None:
    client = Client(authRegistry(), b"", b"NICK alice\r\n")
    assert client.code == 401


def test_nicknamesFollowTheGrammarAndReservedOnesAreRefused() -> None:
    registry = openRegistry()
    for bad in ("NickServ", "nickserv", "#lobby", "1abc", "upgradable"):
        client = Client(registry, lines=f"NICK {bad}\r\n".encode())
        assert client.lines() == [f":upgradable 432 * {bad} :Erroneous nickname"]
        assert not client.server.closed


def test_withSeveralCheckersEveryOneIsTried() -> None:
    first = InMemoryUsernamePasswordDatabaseDontUse()
    first.addUser("alice", "a1")
    second = InMemoryUsernamePasswordDatabaseDontUse()
    second.addUser("bob", "b2")
    registry = UpgradeRegistry()
    registry.register(
        b"IRC/6.9", BasicAuthHandler(IRCHandler([first, second]), [first, second], "irc")
    )
    viaBob = Client(registry, authorization(b"bob", b"b2"), b"PASS a1\r\nNICK alice\r\n")
    assert viaBob.code == 101
    assert viaBob.lines()[0].startswith(":upgradable 001 alice ")
    viaAlice = Client(registry, authorization(b"alice", b"a1"), b"NICK bob\r\n")
    assert viaAlice.lines() == [":upgradable 464 * :Password required for this nickname"]
    assert viaAlice.server.closed
