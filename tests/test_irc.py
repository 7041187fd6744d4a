"""The irc sample over in-memory connections."""

from __future__ import annotations

import gc
import re
import select
import socket
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.words import service

from upgradable import UpgradeRegistry
from upgradable._auth import BasicAuthHandler
from upgradable.protocols.irc import _COMMANDS as COMMANDS
from upgradable.protocols.irc import IRCHandler

from .conftest import LogCapture
from .helpers import IRC_REQ, Server, parseResponses
from .test_twistd import HOST, readAll, twistd, upgradedSocket


class Client:
    def __init__(self, registry: UpgradeRegistry, extra: bytes = b"", lines: bytes = b"") -> None:
        self.server = Server(registry=registry)
        request = IRC_REQ[:-2] + extra + b"\r\n"
        self.server.send(request + lines)
        responses, self.buffer = parseResponses(self.server.clear())
        self.code = responses[0].code

    def send(self, line: str) -> None:
        self.server.send(line.encode() + b"\r\n")

    def sendRaw(self, *chunks: bytes) -> None:
        self.server.send(*chunks)

    @property
    def irc(self) -> Any:
        """The IRC protocol: its transport's producer since the hand-over."""
        return self.server.transport.producer

    def lines(self) -> list[str]:
        data = self.buffer + self.server.clear()
        self.buffer = b""
        # Split at CR LF only: str.splitlines would break at VT, NEL...
        return data.decode().split("\r\n")[:-1]


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


# Malformed input: every command twisted.words' IRCUser handles, without its
# parameters or with bad ones, and lines that are not IRC or not UTF-8. Each
# gets the RFC 2812 answer (or none, where the RFC says so), never a
# traceback, and the connection stays.


def registeredPair(registry: UpgradeRegistry | None = None) -> tuple[Client, Client]:
    """alice and bob, registered, both in #lobby, their output read."""
    registry = registry or openRegistry()
    alice = Client(registry, lines=b"NICK alice\r\nUSER a 0 * :A\r\nJOIN #lobby\r\n")
    bob = Client(registry, lines=b"NICK bob\r\nUSER b 0 * :B\r\nJOIN #lobby\r\n")
    alice.lines()
    bob.lines()
    return alice, bob


def assertNoFailureLogged(logged: LogCapture, collect: bool = True) -> None:
    # A Deferred's unhandled failure is logged when the Deferred is freed:
    # at once by reference counting, or, in a cycle, by the collector (a
    # tenth of a second each time, too slow for the largest matrix).
    if collect:
        gc.collect()
    failures = [e for e in logged.events if "log_failure" in e]
    assert failures == []


MALFORMED_REGISTERED = [
    (b"FOO", [":upgradable 421 alice FOO :Unknown command"]),
    (b"KICK", [":upgradable 421 alice KICK :Unknown command"]),
    (b"KICK #lobby bob", [":upgradable 421 alice KICK :Unknown command"]),
    (b"NICKSERV_PRIVMSG x", [":upgradable 421 alice NICKSERV_PRIVMSG :Unknown command"]),
    (b"UNKNOWN a b", [":upgradable 421 alice UNKNOWN :Unknown command"]),
    # A dotless i upper-cases to I: a command is ASCII letters, compared as such.
    ("pr\u0131vmsg bob :hi".encode(), [":upgradable 421 alice pr\u0131vmsg :Unknown command"]),
    (b"PRIVMSG", [":upgradable 411 alice :No recipient given (PRIVMSG)"]),
    (b"privmsg", [":upgradable 411 alice :No recipient given (PRIVMSG)"]),
    (b"PRIVMSG bob", [":upgradable 412 alice :No text to send"]),
    (b"PRIVMSG bob :", [":upgradable 412 alice :No text to send"]),
    (b"PRIVMSG nobody :hi", [":upgradable 401 alice nobody :No such nick/channel."]),
    (b"PRIVMSG #nowhere :hi", [":upgradable 401 alice #nowhere :No such nick/channel."]),
    (b"PRIVMSG \xff :hi", [":upgradable 401 alice \ufffd :No such nick/channel."]),
    (b"NOTICE", []),
    (b"NOTICE bob", []),
    (b"NOTICE nobody :hi", []),
    (b"NOTICE #nowhere :hi", []),
    (b"JOIN", [":upgradable 461 alice JOIN :Not enough parameters"]),
    (b"JOIN :", [":upgradable 403 alice * :No such channel"]),
    (b"JOIN lobby", [":upgradable 403 alice lobby :No such channel"]),
    (b"JOIN #", [":upgradable 403 alice # :No such channel"]),
    (b"JOIN #a:b", [":upgradable 403 alice #a:b :No such channel"]),
    (b"JOIN #\x07", [":upgradable 403 alice #\x07 :No such channel"]),
    (b"JOIN #" + b"x" * 50, [":upgradable 403 alice #" + "x" * 50 + " :No such channel"]),
    (b"JOIN #lobby", []),
    (b"PART", [":upgradable 461 alice PART :Not enough parameters"]),
    (b"PART #nowhere", [":upgradable 403 alice #nowhere :No such channel"]),
    (b"PART nowhere", [":upgradable 403 alice nowhere :No such channel"]),
    (b"PART #\xff", [":upgradable 403 alice #\ufffd :No such channel"]),
    (b"MODE", [":upgradable 461 alice MODE :Not enough parameters"]),
    (b"MODE #nowhere", [":upgradable 403 alice #nowhere :That channel doesn't exist."]),
    (b"MODE nobody", [":upgradable 401 alice :No such nickname."]),
    (b"TOPIC", [":upgradable 461 alice TOPIC :Not enough parameters"]),
    (b"TOPIC #nowhere", [":upgradable 403 alice = nowhere :That channel doesn't exist."]),
    (b"WHOIS", [":upgradable 431 alice :No nickname given"]),
    (b"WHOIS nobody", [":upgradable 401 alice nobody :No such nick/channel"]),
    (b"WHOIS \xff\xfe", [":upgradable 401 alice \ufffd\ufffd :No such nick/channel"]),
    (b"NAMES", [":upgradable 366 alice * :End of /NAMES list"]),
    (b"NAMES #nowhere", [":upgradable 366 alice #nowhere :End of /NAMES list"]),
    (b"WHO #nowhere", [":upgradable 315 alice #nowhere :End of /WHO list."]),
    (b"LIST #nowhere", [":upgradable 323 alice :End of /LIST"]),
    (b"USER", [":upgradable 462 alice :Unauthorized command (already registered)"]),
    (b"USER a 0 * :A", [":upgradable 462 alice :Unauthorized command (already registered)"]),
    (b"PASS", [":upgradable 462 alice :Unauthorized command (already registered)"]),
    (b"NICK", [":upgradable 431 alice :No nickname given"]),
    (b"NICK \xff", [":upgradable 432 alice \ufffd :Changing nicknames is not supported"]),
    (b"OPER", [":upgradable 461 alice OPER :Not enough parameters"]),
    (b"OPER a", [":upgradable 461 alice OPER :Not enough parameters"]),
    (b"USERHOST", [":upgradable 461 alice USERHOST :Not enough parameters"]),
    (b"PING", [":upgradable 409 alice :No origin specified"]),
    (b"PONG", []),
    (b"PONG :x", []),
    (b":", []),
    (b":alice", []),
    (b":alice ", []),
    (b"   ", []),
    (b"", []),
    (b" :", []),
    (b"\xff\xfe", [":upgradable 421 alice \ufffd\ufffd :Unknown command"]),
    # RFC 2812 §2.3.1: NUL is in no message; it is removed from the line.
    (b"\x00", []),
    (b"PI\x00NG :a\x00b", [":upgradable PONG upgradable :ab"]),
    # A bare CR ends a line, as LF does; nothing else does.
    (b"PING :a\rb", [":upgradable PONG upgradable :a", ":upgradable 421 alice b :Unknown command"]),
    (b"PING :a\x0bb\x0c\x85", [":upgradable PONG upgradable :a\x0bb\x0c\ufffd"]),
    # RFC 2812 §2.3: a reply fits 512 bytes, what it echoes is cut.
    (b"X" * 510, [":upgradable 421 alice " + "X" * (510 - 39) + " :Unknown command"]),
    (b"PRIVMSG\tbob :hi", [":upgradable 421 alice PRIVMSG\tbob :Unknown command"]),
]


@pytest.mark.parametrize(("line", "replies"), MALFORMED_REGISTERED, ids=repr)
def test_malformedCommandsOfARegisteredClientGetTheirNumericAndTheConnectionStays(
    line: bytes, replies: list[str], logged: LogCapture
) -> None:
    """
    Each malformed line gets its RFC 2812 reply (none for NOTICE and empty
    messages), bob hears nothing of it, and alice can go on.
    """
    alice, bob = registeredPair()
    alice.sendRaw(line + b"\r\n")
    assert alice.lines() == replies
    assert bob.lines() == []
    alice.send("PING :still")
    assert alice.lines() == [":upgradable PONG upgradable :still"]
    assert not alice.server.closed
    assertNoFailureLogged(logged)


MALFORMED_UNREGISTERED = [
    (b"FOO", [":upgradable 421 * FOO :Unknown command"]),
    (b"JOIN #lobby", [":upgradable 451 * :You have not registered"]),
    (b"JOIN", [":upgradable 451 * :You have not registered"]),
    (b"PRIVMSG alice :hi", [":upgradable 451 * :You have not registered"]),
    (b"PRIVMSG", [":upgradable 451 * :You have not registered"]),
    (b"NOTICE alice :hi", [":upgradable 451 * :You have not registered"]),
    (b"MODE alice", [":upgradable 451 * :You have not registered"]),
    (b"PART #lobby", [":upgradable 451 * :You have not registered"]),
    (b"TOPIC #lobby", [":upgradable 451 * :You have not registered"]),
    (b"WHOIS alice", [":upgradable 451 * :You have not registered"]),
    (b"NAMES", [":upgradable 451 * :You have not registered"]),
    (b"LIST", [":upgradable 451 * :You have not registered"]),
    (b"WHO", [":upgradable 451 * :You have not registered"]),
    (b"USERHOST alice", [":upgradable 451 * :You have not registered"]),
    (b"OPER a b", [":upgradable 451 * :You have not registered"]),
    (b"USER", [":upgradable 461 * USER :Not enough parameters"]),
    (b"USER a 0 *", [":upgradable 461 * USER :Not enough parameters"]),
    (b"PASS", [":upgradable 461 * PASS :Not enough parameters"]),
    (b"NICK", [":upgradable 431 * :No nickname given"]),
    (b"NICK :", [":upgradable 431 * :No nickname given"]),
    (b"NICK \xff\xfe", [":upgradable 432 * \ufffd\ufffd :Erroneous nickname"]),
    (b"NICK caf\xe9", [":upgradable 432 * caf\ufffd :Erroneous nickname"]),
    (b"PING", [":upgradable 409 * :No origin specified"]),
    (b"PING :early", [":upgradable PONG upgradable :early"]),
    (b":", []),
    (b"\xff", [":upgradable 421 * \ufffd :Unknown command"]),
]


@pytest.mark.parametrize(("line", "replies"), MALFORMED_UNREGISTERED, ids=repr)
def test_malformedOrEarlyCommandsBeforeRegistrationGetTheirNumericAndRegistrationStillWorks(
    line: bytes, replies: list[str], logged: LogCapture
) -> None:
    """Before NICK, a command that needs registration gets 451, and so on."""
    registry = openRegistry()
    Client(registry, lines=b"NICK alice\r\nUSER a 0 * :A\r\nJOIN #lobby\r\n")
    client = Client(registry)
    client.sendRaw(line + b"\r\n")
    assert client.lines() == replies
    client.send("NICK carol")
    assert client.lines()[0] == ":upgradable 001 carol :connected to Twisted IRC"
    assertNoFailureLogged(logged)


def test_theGateKnowsEveryCommandTwistedWordsHandles() -> None:
    """
    Every ``irc_*`` handler of twisted.words' IRCUser is in the table the
    gate checks (but its NickServ stand-in, reached by no command).
    """
    handled = {name[4:] for name in dir(service.IRCUser) if name.startswith("irc_")}
    assert handled - {"NICKSERV_PRIVMSG", "unknown"} <= set(COMMANDS)
    assert set(COMMANDS) - handled == {"PONG", "NOTICE"}


PARAMETER_SHAPES = [
    [],
    [""],
    ["bob"],
    ["alice"],
    ["#lobby"],
    ["#nowhere"],
    ["nobody"],
    ["#lobby", "bob"],
    ["alice", "+i"],
    ["alice", "+i", "extra"],
    ["#lobby", "+o", "bob"],
    ["#lobby", "-w", "bob", "more", "and more"],
    ["bob", ":text with spaces"],
    ["#lobby,#other,,#", ":text"],
    ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"],
    ["\ufffd", "\x00", "\x01ACTION\x01"],
]


@pytest.mark.parametrize("shape", PARAMETER_SHAPES, ids=repr)
@pytest.mark.parametrize("command", [*COMMANDS, "KICK", "CAP", "INVITE", "UNKNOWN"])
def test_everyCommandWithAnyParametersNeverLogsAFailureAndTheConnectionStays(
    command: str, shape: list[str], logged: LogCapture
) -> None:
    """
    Every command the server knows (and a few it does not), with none, too
    few, odd or too many parameters, before and after registration: no
    failure is logged, and both clients can go on.
    """
    line = " ".join([command, *shape]).encode()
    alice, bob = registeredPair()
    early = Client(alice.server.registry)
    for client in (early, alice):
        client.sendRaw(line + b"\r\n")
        client.lines()
    if command != "QUIT":
        alice.send("PING :still")
        assert alice.lines()[-1] == ":upgradable PONG upgradable :still"
    bob.send("PING :bob")
    assert bob.lines()[-1] == ":upgradable PONG upgradable :bob"
    assertNoFailureLogged(logged, collect=False)


def test_textThatIsNotUTF8IsRelayedWithReplacementCharacters(logged: LogCapture) -> None:
    """Bytes that are not UTF-8 reach others as U+FFFD, not as an error."""
    alice, bob = registeredPair()
    alice.sendRaw(b"PRIVMSG bob :caf\xe9 \xff\r\nPRIVMSG #lobby :\xc3\r\n")
    assert bob.lines() == [
        ":alice!alice@upgradable PRIVMSG bob :caf\ufffd \ufffd",
        ":alice!alice@upgradable PRIVMSG #lobby :\ufffd",
    ]
    assert alice.lines() == []
    assertNoFailureLogged(logged)


def test_aCharacterSplitAcrossReadsArrivesWhole() -> None:
    """UTF-8 is decoded per line, so a character may span two reads."""
    alice, bob = registeredPair()
    line = "PRIVMSG bob :café ☕\r\n".encode()
    alice.server.sendBytewise(line)
    assert bob.lines() == [":alice!alice@upgradable PRIVMSG bob :café ☕"]


def test_aLineOf512BytesIsTakenAndALongerOneGets417AndIsSkippedToItsEnd() -> None:
    """
    RFC 2812 §2.3: 512 bytes with the CR LF. A longer line gets 417, none
    of it is taken as a command (not even its tail after a later read), and
    the next line is read as usual.
    """
    alice, bob = registeredPair()
    head = b"PRIVMSG bob :"
    exactly = head + b"x" * (510 - len(head))
    alice.sendRaw(exactly + b"\r\n")
    # Relayed with its prefix, it is cut to 512 bytes with the CR LF.
    relayed = ":alice!alice@upgradable PRIVMSG bob :" + "x" * (510 - len(head))
    assert bob.lines() == [relayed[:510]]
    alice.sendRaw(exactly + b"y\r\n")
    assert alice.lines() == [":upgradable 417 alice :Input line was too long"]
    # Unterminated and over the limit, then its tail in later reads.
    alice.sendRaw(head + b"x" * 600, b"z" * 600, b"QUIT :tail\r\nPING :after\r\n")
    assert alice.lines() == [
        ":upgradable 417 alice :Input line was too long",
        ":upgradable PONG upgradable :after",
    ]
    assert bob.lines() == []
    assert not alice.server.closed
    # Several lines in one read, the long one in the middle.
    alice.sendRaw(b"PING :1\r\n" + b"x" * 511 + b"\nPING :2\n")
    assert alice.lines() == [
        ":upgradable PONG upgradable :1",
        ":upgradable 417 alice :Input line was too long",
        ":upgradable PONG upgradable :2",
    ]


def test_aBareCREndsALineSoNoForgedLineReachesOthers() -> None:
    """
    A CR inside a line ends it, as LF does: what follows is alice's next
    command, never text that bob's client would show as a line of its own.
    """
    alice, bob = registeredPair()
    alice.sendRaw(b"PART #lobby :bye\r:evil!e@h PRIVMSG bob :spoof2\r\n")
    raw = bob.server.clear()
    assert raw == (
        b":alice!alice@upgradable PART #lobby :bye\r\n"
        b":alice!alice@upgradable PRIVMSG bob :spoof2\r\n"
    )
    alice.sendRaw(b"PRIVMSG bob :a\x00b\rc\r\n")
    assert bob.server.clear() == b":alice!alice@upgradable PRIVMSG bob :ab\r\n"
    assert alice.lines() == [
        ":alice!alice@upgradable PART #lobby :bye",
        ":upgradable 421 alice c :Unknown command",
    ]


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"])
def test_aLineOfCharactersThatStrSplitlinesBreaksAtIsRelayedAsOneLine(char: str) -> None:
    """
    Only CR and LF end a line: a message full of VT, FF, NEL, U+2028...
    reaches bob and the channel as one line each, not one per character.
    """
    alice, bob = registeredPair()
    text = char * ((497 - 30) // len(char.encode()))
    alice.sendRaw(f"PRIVMSG #lobby :{text}\r\nNOTICE bob :{text}\r\n".encode())
    assert bob.lines() == [
        f":alice!alice@upgradable PRIVMSG #lobby :{text}",
        f":alice!alice@upgradable NOTICE bob :{text}",
    ]


def test_theUSERAfterANickThatRegisteredIsTakenQuietlyOnceAndASecondGets462() -> None:
    """
    NICK alone registers, so the USER every client sends right after it
    gets no reply and sets the real name; only another USER is 462.
    """
    alice = Client(openRegistry(), lines=b"NICK alice\r\n")
    assert alice.lines()[0] == ":upgradable 001 alice :connected to Twisted IRC"
    alice.send("USER alice 0 * :Alice Liddell")
    assert alice.lines() == []
    assert alice.irc.realname == "Alice Liddell"
    alice.send("USER alice 0 * :Again")
    assert alice.lines() == [":upgradable 462 alice :Unauthorized command (already registered)"]
    assert alice.irc.realname == "Alice Liddell"


def test_theIrcPackageClientRegistersWithoutA462() -> None:
    """
    The ``irc`` package's client sends NICK then USER: after its welcome and
    a PING round trip it has seen no ``alreadyregistered`` (462) event.
    """
    import irc.client

    with twistd() as server:
        reactor = irc.client.Reactor()
        seen: list[str] = []
        reactor.add_global_handler("all_events", lambda c, e: seen.append(e.type), -10)
        connection = reactor.server().connect(
            HOST, server.port, "alice", ircname="Alice Liddell",
            connect_factory=lambda address: upgradedSocket(address[1], b"IRC/6.9"),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while "endofmotd" not in seen and time.monotonic() < deadline:
            reactor.process_once(0.1)
        connection.ping("after-user")
        while "pong" not in seen and time.monotonic() < deadline:
            reactor.process_once(0.1)
        connection.disconnect()
        assert "welcome" in seen and "pong" in seen, seen
        assert "alreadyregistered" not in seen
    assert "Traceback" not in server.log()


def test_noticesAreRelayedAsNotices() -> None:
    """NOTICE goes to a user or a channel as NOTICE (RFC 2812 §3.3.2)."""
    alice, bob = registeredPair()
    alice.send("NOTICE bob :psst")
    alice.send("NOTICE #lobby :all")
    assert bob.lines() == [
        ":alice!alice@upgradable NOTICE bob :psst",
        ":alice!alice@upgradable NOTICE #lobby :all",
    ]
    assert alice.lines() == []


def test_partingAChannelOfOthersIs442AndAJoinListJoinsEach() -> None:
    """PART of a channel one is not in gets 442; JOIN takes a list."""
    _, bob = registeredPair()
    bob.send("PART #lobby")
    bob.send("PART #lobby")
    assert bob.lines()[-1] == ":upgradable 442 bob #lobby :You're not on that channel"
    bob.send("JOIN #a,#b")
    assert [line for line in bob.lines() if " JOIN " in line] == [
        ":bob!bob@upgradable JOIN #a",
        ":bob!bob@upgradable JOIN #b",
    ]


# Flow control and the per-client queue, in memory.


def test_whileItsTransportIsFullAClientIsNotReadAndItsLinesWait() -> None:
    """
    When the transport asks the IRC protocol to pause, the protocol pauses
    the transport's reading and handles none of the lines it has; they are
    handled, in order, when the transport resumes.
    """
    alice, bob = registeredPair()
    alice.irc.pauseProducing()
    assert alice.server.transport.producerState == "paused"
    alice.send("PING :1")
    alice.send("PRIVMSG bob :while paused")
    assert alice.lines() == []
    assert bob.lines() == []
    alice.irc.resumeProducing()
    assert alice.server.transport.producerState == "producing"
    assert alice.lines() == [":upgradable PONG upgradable :1"]
    assert bob.lines() == [":alice!alice@upgradable PRIVMSG bob :while paused"]


def test_aSenderWaitsWhileARecipientIsFullAndGoesOnWhenItResumes() -> None:
    """
    A line of alice's that reaches bob while bob's transport is full is
    sent (counted against bob's queue), then alice's next lines wait and
    alice is not read until bob's transport drains; then they go, in order.
    """
    alice, bob = registeredPair()
    bob.irc.pauseProducing()
    alice.sendRaw(b"PRIVMSG #lobby :1\r\nPRIVMSG #lobby :2\r\nPING :3\r\n")
    assert bob.lines() == [":alice!alice@upgradable PRIVMSG #lobby :1"]
    assert alice.lines() == []
    assert alice.server.transport.producerState == "paused"
    bob.irc.resumeProducing()
    assert bob.lines() == [":alice!alice@upgradable PRIVMSG #lobby :2"]
    assert alice.lines() == [":upgradable PONG upgradable :3"]
    assert alice.server.transport.producerState == "producing"
    assert not bob.server.closed


def stalledPair(logged: LogCapture, **limits: Any) -> tuple[Client, Client, Clock]:
    clock = Clock()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", IRCHandler([], clock=clock, **limits))
    alice, bob = registeredPair(registry)
    return alice, bob, clock


def test_aRecipientThatStaysFullWhileOthersWaitIsDroppedAfterMaxStall(
    logged: LogCapture,
) -> None:
    """
    bob's transport stays full while alice waits on him: after maxStall
    seconds bob is aborted, the reason logged, and alice goes on.
    """
    alice, bob, clock = stalledPair(logged, maxStall=5)
    bob.irc.pauseProducing()
    alice.sendRaw(b"PRIVMSG #lobby :1\r\nPING :on\r\n")
    clock.advance(4.9)
    assert not bob.server.closed
    assert alice.lines() == []
    clock.advance(0.1)
    assert bob.server.closed and bob.server.transport.disconnected  # aborted
    assert bob.irc is None  # its producer unregistered
    [event] = [e for e in logged.events if "dropping" in e.get("log_format", "")]
    assert event["nickname"] == "bob"
    assert event["seconds"] == 5
    assert alice.lines() == [":upgradable PONG upgradable :on"]
    assert alice.server.transport.producerState == "producing"


def test_aRecipientThatIsNotWaitedOnIsNotDroppedForBeingFull(logged: LogCapture) -> None:
    """The stall bound counts only while a sender waits: a full transport alone is fine."""
    alice, bob, clock = stalledPair(logged, maxStall=5)
    bob.irc.pauseProducing()
    alice.sendRaw(b"PRIVMSG #lobby :1\r\n")
    bob.irc.resumeProducing()
    bob.irc.pauseProducing()
    clock.advance(60)
    assert not bob.server.closed
    assert clock.getDelayedCalls() == []


def test_aClientIsDroppedOnceMoreThanMaxSendQueueWaitsFromManySenders(
    logged: LogCapture,
) -> None:
    """
    Each sender adds at most a line to a full recipient before it waits;
    many senders together still meet the hard cap: past maxSendQueue bob
    is aborted with the reason logged, and every sender goes on. Once
    bob's transport drained, the count starts again.
    """
    clock = Clock()
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", IRCHandler([], maxSendQueue=2000, clock=clock))
    alice, bob = registeredPair(registry)
    message = "PRIVMSG #lobby :" + "x" * 100
    senders = []
    for i in range(2 * 2000 // 120 + 1):
        sender = Client(registry, lines=f"NICK s{i}\r\nJOIN #lobby\r\n".encode())
        senders.append(sender)
    relayed = len(":s00!s00@upgradable " + message + "\r\n")
    bob.irc.pauseProducing()
    for sender in senders[: 2000 // relayed]:
        sender.send(message)
    bob.irc.resumeProducing()
    bob.irc.pauseProducing()
    for sender in senders[2000 // relayed : 2 * (2000 // relayed)]:
        sender.send(message)
    assert not bob.server.closed
    senders[-1].send(message)
    assert bob.server.closed and bob.server.transport.disconnected
    [event] = [e for e in logged.events if "Max SendQ exceeded" in e.get("log_format", "")]
    assert event["nickname"] == "bob"
    assert event["limit"] == 2000
    for sender in senders:
        sender.send("PING :on")
        assert sender.lines()[-1] == ":upgradable PONG upgradable :on"
    alice.send("PING :on")
    assert alice.lines()[-1] == ":upgradable PONG upgradable :on"


def test_quitUnregistersTheProducerBeforeClosing() -> None:
    """A registered producer would keep a TLS connection from closing."""
    alice, _ = registeredPair()
    assert alice.irc is not None
    alice.send("QUIT :bye")
    assert alice.server.closed
    assert alice.irc is None


# Channels and users leave the realm when they are no longer in use.


def test_aChannelIsFreedWhenItsLastMemberLeavesAndAUserWhenItGoes() -> None:
    """PART of the last member, or its disconnection, frees the channel."""
    handler = IRCHandler([])
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", handler)
    alice, bob = registeredPair(registry)
    alice.send("JOIN #quiet")
    alice.send("PART #quiet")
    assert sorted(handler.realm.groups) == ["lobby"]
    alice.send("TOPIC #lobby :kept while bob stays")
    alice.server.protocol.connectionLost(Failure(ConnectionDone()))
    assert sorted(handler.realm.groups) == ["lobby"]
    assert sorted(handler.realm.users) == ["bob"]
    bob.send("QUIT")
    bob.server.protocol.connectionLost(Failure(ConnectionDone()))
    assert handler.realm.groups == {}
    assert handler.realm.users == {}


def test_aClientJoinsAtMostMaxChannelsAndThenGets405() -> None:
    """RFC 2812 §3.2.1: past the limit, 405; a channel left makes room."""
    registry = UpgradeRegistry()
    registry.register(b"IRC/6.9", IRCHandler([], maxChannels=2))
    alice, _ = registeredPair(registry)
    alice.send("JOIN #lobby,#two,#three")
    assert alice.lines()[-1] == ":upgradable 405 alice #three :You have joined too many channels"
    alice.send("PART #two")
    alice.send("JOIN #three")
    assert ":alice!alice@upgradable JOIN #three" in alice.lines()


def test_theDefaultLimitsAreDocumentedValues() -> None:
    """ngIRCd's MaxJoins (10), 64 KiB beyond the transport's buffer, 10 s."""
    assert IRCHandler.maxChannels == 10
    assert IRCHandler.maxSendQueue == 64 * 1024
    assert IRCHandler.maxStall == 10
    with pytest.raises(ValueError, match="at least 1"):
        IRCHandler([], maxChannels=0)


# Over real sockets, against a real `twistd -n upgradable`: what a hostile
# client can make the server hold, measured in the server's own RSS.


def rssBytes(pid: int) -> int:
    """The resident set size of process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def readUntil(sock: socket.socket, marker: bytes, limit: int = 1 << 26) -> bytes:
    """Read until ``marker`` has arrived (or the peer closed): what was read."""
    data = b""
    while marker not in data:
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed before {marker!r}: {data[-500:]!r}"
        data += chunk
        assert len(data) < limit, f"no {marker!r} in {limit} bytes"
    return data


def registered(port: int, nick: str, receiveBuffer: int = 0) -> socket.socket:
    """A client upgraded to IRC and registered as ``nick``."""
    sock = upgradedSocket(port, b"IRC/6.9")
    if receiveBuffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    readUntil(sock, f" 376 {nick} ".encode())
    return sock


def sendWithoutReading(sock: socket.socket, data: bytes, seconds: float, most: int) -> int:
    """
    Send ``data`` again and again for up to ``seconds``, never reading; stop
    early once ``most`` bytes are out or the peer has taken nothing for a
    second (it stopped reading). How many bytes went out.
    """
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    stalled = time.monotonic()
    while sent < most and time.monotonic() < deadline:
        try:
            sent += sock.send(data)
            stalled = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - stalled > 1:
                break
            select.select([], [sock], [], 0.1)
    sock.setblocking(True)
    return sent


def test_aClientThatFloodsPingsWithoutReadingIsNoLongerReadFrom() -> None:
    """
    The server stops reading from a client whose PONGs it cannot deliver:
    the client cannot push more than the sockets' buffers hold, the server's
    memory stays flat, and once the client reads, it gets its PONGs.
    """
    with twistd() as server:
        sock = registered(server.port, "flood")
        before = rssBytes(server.process.pid)
        sent = sendWithoutReading(sock, b"PING x\r\n" * 8192, seconds=6, most=1 << 29)
        grown = rssBytes(server.process.pid) - before
        print(f"PING flood: sent {sent} bytes, server RSS grew {grown} bytes")
        assert sent < 64 << 20
        assert grown < 32 << 20
        sock.settimeout(10)
        assert readUntil(sock, b"\r\n").startswith(b":upgradable PONG upgradable :x\r\n")
        sock.close()
    assert "Traceback" not in server.log()


def test_aChannelMemberThatNeverReadsIsDroppedOnceItsQueuePassesTheCap() -> None:
    """
    A member that never reads holds up who writes to it (the talker is not
    read meanwhile) only for the stall bound, and what waits for it stays
    under the cap; then it is dropped with a logged reason, and the talker
    goes on.
    """
    with twistd() as server:
        sleeper = registered(server.port, "sleeper", receiveBuffer=4096)
        sleeper.sendall(b"JOIN #flood\r\n")
        readUntil(sleeper, b" 366 sleeper #flood ")
        talker = registered(server.port, "talker")
        talker.settimeout(IRCHandler.maxStall + 20)  # it waits for the sleeper
        talker.sendall(b"JOIN #flood\r\n")
        readUntil(talker, b" 366 talker #flood ")
        before = rssBytes(server.process.pid)
        line = b"PRIVMSG #flood :" + b"x" * 400 + b"\r\n"
        batch = line * 160
        sent = 0
        deadline = time.monotonic() + 30
        while "dropping IRC client sleeper" not in server.log() and sent < 128 << 20:
            assert time.monotonic() < deadline
            talker.sendall(batch + b"PING :mark\r\n")
            readUntil(talker, b"PONG upgradable :mark\r\n")
            sent += len(batch)
        grown = rssBytes(server.process.pid) - before
        print(f"fan-out: sent {sent} bytes to #flood, server RSS grew {grown} bytes")
        assert "dropping IRC client sleeper" in server.log()
        assert grown < 32 << 20
        talker.sendall(b"PING :still\r\n")
        readUntil(talker, b"PONG upgradable :still\r\n")
        talker.close()
        sleeper.close()
    assert "Traceback" not in server.log()


def test_aMemberThatReadsIsNotDroppedWhenAnotherFloodsTheChannel() -> None:
    """
    alice sends about 420 KB to #a in bursts far faster than bob's socket
    takes it, while bob reads all the time: alice is slowed down instead,
    nobody is dropped, and bob gets every message, in order.
    """
    count = 1000
    with twistd() as server:
        bob = registered(server.port, "bob")
        bob.sendall(b"JOIN #a\r\n")
        readUntil(bob, b" 366 bob #a ")
        alice = registered(server.port, "alice")
        alice.sendall(b"JOIN #a\r\n")
        readUntil(alice, b" 366 alice #a ")
        burst = b"".join(b"PRIVMSG #a :%06d " % i + b"x" * 400 + b"\r\n" for i in range(count))
        burst += b"PING :done\r\n"
        alice.setblocking(False)
        bob.setblocking(False)
        received = b""
        heard = b""
        deadline = time.monotonic() + 60
        while received.count(b"\r\n") < count or b"PONG" not in heard:
            assert time.monotonic() < deadline, (received.count(b"\r\n"), heard[-200:])
            readable, writable, _ = select.select([bob, alice], [alice] if burst else [], [], 1)
            if alice in writable:
                burst = burst[alice.send(burst[: 1 << 20]) :]
            if bob in readable:
                chunk = bob.recv(1 << 16)
                assert chunk, "bob was dropped"
                received += chunk
            if alice in readable:
                chunk = alice.recv(1 << 16)
                assert chunk, "alice was dropped"
                heard += chunk
        lines = [line for line in received.split(b"\r\n") if b" PRIVMSG " in line]
        prefix = b":alice!alice@upgradable PRIVMSG #a :"
        assert lines == [prefix + b"%06d " % i + b"x" * 400 for i in range(count)]
        assert "Max SendQ exceeded" not in server.log()
        assert "dropping" not in server.log()
        alice.close()
        bob.close()
    assert "Traceback" not in server.log()


def test_everyMalformedLineOverARealSocketLeavesTheConnectionAndNoTraceback() -> None:
    """
    All the malformed lines above, long lines and bytes that are not UTF-8,
    sent in one go to a real server: the client still gets its PONG at the
    end, and the server logs no traceback.
    """
    with twistd() as server:
        sock = registered(server.port, "alice")
        lines = [line for line, _ in MALFORMED_REGISTERED + MALFORMED_UNREGISTERED]
        lines += [b"PRIVMSG alice :" + b"x" * 2000, b"\xff" * 511, b"PRIVMSG alice :\xc3"]
        sock.sendall(b"".join(line + b"\r\n" for line in lines) + b"PING :end\r\n")
        replies = readUntil(sock, b"PONG upgradable :end\r\n")
        assert replies.count(b" 417 alice ") == 2
        sock.close()
    assert "Traceback" not in server.log()


def test_quitOverTLSClosesTheConnection(certificate: Path) -> None:
    """
    The IRC protocol is its transport's producer; over TLS a registered
    producer would keep the connection open after QUIT, so it unregisters
    first, and the server closes.
    """
    import ssl

    with twistd("--listen", f"ssl:0:interface=127.0.0.1:privateKey={certificate}") as server:
        deadline = time.monotonic() + 10
        while not (found := re.findall(r"port=(\d+)\) \(ssl:", server.log())):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(certificate))
        raw = socket.create_connection(("127.0.0.1", int(found[0])), timeout=10)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(IRC_REQ + b"NICK alice\r\nUSER a 0 * :A\r\n")
        readUntil(sock, b" 376 alice ")
        sock.sendall(b"QUIT :bye\r\n")
        assert readAll(sock) == b""
        sock.close()
    assert "Traceback" not in server.log()


def converse(sock: socket.socket, lines: list[bytes], batch: int = 500) -> bytes:
    """Send ``lines`` in batches, reading every reply to each batch."""
    replies = []
    for start in range(0, len(lines), batch):
        token = b"batch%d" % start
        sock.sendall(b"".join(lines[start : start + batch]) + b"PING :" + token + b"\r\n")
        replies.append(readUntil(sock, b"PONG upgradable :" + token + b"\r\n"))
    return b"".join(replies)


def test_channelsAreFreedWhenTheirLastMemberLeavesAndJoinsAreBounded() -> None:
    """
    40,000 channels joined and left leave nothing behind; a client that
    keeps joining gets 405 past the limit; LIST then shows no channel.
    """
    with twistd() as server:
        hopper = registered(server.port, "hopper")
        before = rssBytes(server.process.pid)
        converse(hopper, [b"JOIN #c%d\r\nPART #c%d\r\n" % (i, i) for i in range(40_000)])
        cycled = rssBytes(server.process.pid) - before
        replies = converse(hopper, [b"JOIN #h%d\r\n" % i for i in range(40_000)])
        hopper.sendall(b"QUIT\r\n")
        readAll(hopper)
        hopper.close()
        left = rssBytes(server.process.pid) - before
        print(f"40,000 JOIN/PART: RSS grew {cycled} bytes; 40,000 JOINs then QUIT: {left}")
        assert replies.count(b" 405 hopper ") == 40_000 - IRCHandler.maxChannels
        watcher = registered(server.port, "watcher")
        watcher.sendall(b"LIST\r\n")
        listed = readUntil(watcher, b" 323 watcher ")
        assert b" 322 " not in listed
        assert cycled < 8 << 20
        assert left < 8 << 20
        watcher.close()
    assert "Traceback" not in server.log()
