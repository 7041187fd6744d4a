"""
The ``irc`` sample: a real IRC server from :mod:`twisted.words` behind the
``IRC/6.9`` token.

Without ``--auth`` anybody registers with ``NICK``/``USER`` and no password
(``NICK`` alone registers; the ``USER`` clients send after it is taken
quietly, and only a second one gets ``462``).
With ``--auth`` the upgrade itself needs HTTP Basic credentials; the IRC
session then logs in as that HTTP user when the nickname is the user name,
and any other nickname needs a ``PASS`` that the same checkers accept.
Channels are created on ``JOIN`` and freed when their last member leaves; a
nickname that is in use is answered with ``433 ERR_NICKNAMEINUSE`` and the
client may try another.

Limits, each an argument of :class:`IRCHandler`:

* a line is at most 512 bytes with its CR LF (RFC 2812 §2.3); a longer one is
  answered with ``417`` and skipped up to its end, the connection stays. A
  line ends at CR, LF or both (as in ircd-ratbox and Solanum), and at
  nothing else; a NUL is removed. What the server writes holds no CR, LF or
  NUL inside a line, one message is one line, and every line is cut to 512
  bytes (a numeric shortens what it echoes);
* a client is a member of at most ``maxChannels`` channels (default 10, as
  ngIRCd's ``MaxJoins``); one more ``JOIN`` gets ``405`` (RFC 2812 §3.2.1);
* a client that does not read is no longer read from once its transport's
  buffer is full (what it sends waits in the kernel);
* a client that writes to one whose transport's buffer is full (a channel
  message, a private message) waits: its next lines are not handled, and it
  is not read, until that recipient has drained its buffer. So a sender is
  slowed to the pace of its readers, and a member that reads is never
  dropped for another's flood;
* only a client that does not read is dropped, with the reason logged: one
  whose buffer stays full ``maxStall`` seconds (default 10) while others
  wait on it, or one for whom more than ``maxSendQueue`` bytes wait beyond
  its transport's own buffer (default 64 KiB, ``Max SendQ exceeded``; ngIRCd
  allows a client 32 KiB in all), the memory bound when many write to it at
  once, each adding a line before it waits.
"""

# What the protocol keeps:
# - Peer input never raises. Bytes become lines here: not in Twisted's
#   IRC.dataReceived, which decodes each read as a whole (and raises on a read
#   that is not UTF-8 or that splits a character), nor with LineReceiver,
#   which copies its buffer once per line; both, after a line too long, go on
#   reading in the middle of it. Each line is decoded on its own, bytes that
#   are not UTF-8 becoming U+FFFD, which no nickname or command matches. The
#   limit is IRC.MAX_LENGTH and the answer IRC.lineLengthExceeded, as in
#   Twisted, but the rest of a long line is skipped, not read as a command.
#   A line's parse never raises (_parseMessage).
# - Every command reaches its handler through one gate (handleCommand): the
#   command must be one of _COMMANDS (else 421), registered first where it
#   needs to be (451), and have its parameters (461, or the RFC's own numeric
#   for that command). Handlers then index their parameters freely.
# - Reading follows writing: the protocol is its transport's streaming
#   producer; while the transport's buffer is full it reads nothing more and
#   handles no more of the lines it has, so a client that never reads its
#   replies holds at most one read of lines and one buffer of replies.
# - Reading a sender follows the writing of its recipients too. The realm
#   knows who is speaking (whose line is being handled); a write to a client
#   whose transport is paused makes the speaker wait on it (_wait). A
#   waiting client handles no more lines and is not read (_updateReading)
#   until every client it waits on resumed, was dropped or left (_release).
#   A wait is never on oneself, and nobody waits on a reader for long: it
#   resumes as soon as its socket takes the buffer. Nothing waits forever:
#   the recipient's stall timer (maxStall) drops it, and a client that goes
#   forgets both who waits on it and whom it waits on (_forget).
# - Every close unregisters the producer first (closeTransport): a registered
#   producer keeps a TLS connection from closing.
# - The realm holds only what is in use: a channel goes with its last member,
#   a user's record with its logout.

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words import ewords, iwords, service
from twisted.words.protocols import irc
from zope.interface import Interface, implementer

from .._auth import EitherEncoding
from .._decisions import Accept, Decision, Decline, UpgradeRequest
from .._transport import closeTransport
from ..interfaces import IGoingAway, IUpgradeHandler

__all__ = ["IRCHandler", "makeHandler"]


_log = Logger()
_DONE = Failure(ConnectionDone())

# RFC 2812 §2.3.1, without its 9-character limit (servers allow more today).
_NICKNAME = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,29}")
# RFC 2812 §2.3.1 and §1.3: "#" and up to 49 characters other than NUL, BELL,
# CR, LF, space, comma and colon (the only channel prefix twisted.words has).
_CHANNEL = re.compile(r"#[^\x00\x07\r\n ,:]{1,49}")
# RFC 2812 §2.3.1: a command is letters or a three-digit numeric.
_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}", re.ASCII)
# RFC 2812 §2.3: a message ends with CR LF. A bare CR or a bare LF ends a line
# too, as in ircd-ratbox and its heirs (Charybdis, Solanum: rb_linebuf_parse
# in linebuf.c), so a
# CR inside a line can never reach a client that ends lines at CR. Nothing
# else does: not VT, FF, FS..RS, NEL, U+2028 or U+2029 (str.splitlines).
_LINE_END = re.compile(rb"[\r\n]")
# RFC 2812 §2.3.1: NUL, CR and LF are in no parameter; what the server writes
# never holds one (a NUL a client sends is removed from its line).
_UNSAFE = re.compile("[\x00\r\n]")

# Numerics twisted.words.protocols.irc does not name.
_ERR_INPUTTOOLONG = "417"  # not in RFC 2812; as ircds and the IRCv3 registry
_ERR_NOTREGISTERED = "451"  # RFC 2812 §5.2
_ERR_ALREADYREGISTRED = "462"  # RFC 2812 §5.2, spelt as there


class _Command:
    """
    What a command needs before its handler runs.

    :param least: how many parameters it must have.
    :param missing: the reply (numeric, then parameters) to a command with
        fewer; by default ``461 <command> :Not enough parameters`` (RFC 2812
        §5.2); ``None``: no reply at all.
    :param registered: ``True``: only once registered (else ``451``);
        ``False``: only before (else ``462``); ``None``: either.
    """

    def __init__(
        self,
        least: int = 0,
        missing: Callable[[list[str]], tuple[str, ...] | None] | None = None,
        registered: bool | None = True,
    ) -> None:
        self.least = least
        self.missing = missing
        self.registered = registered

    def reply(self, command: str, params: list[str]) -> tuple[str, ...] | None:
        if self.missing is None:
            return (irc.ERR_NEEDMOREPARAMS, command, ":Not enough parameters")
        return self.missing(params)


def _noReply(params: list[str]) -> None:
    return None


def _privmsgMissing(params: list[str]) -> tuple[str, ...]:
    # RFC 2812 §3.3.1.
    if not params:
        return (irc.ERR_NORECIPIENT, ":No recipient given (PRIVMSG)")
    return (irc.ERR_NOTEXTTOSEND, ":No text to send")


# Every command twisted.words' IRCUser handles, plus PONG and NOTICE; any
# other gets 421. Missing parameters get the numeric RFC 2812 §3 gives.
_COMMANDS = {
    "PASS": _Command(1, registered=False),
    "NICK": _Command(1, lambda p: (irc.ERR_NONICKNAMEGIVEN, ":No nickname given"), None),
    "USER": _Command(4, registered=False),
    "QUIT": _Command(registered=None),
    "PING": _Command(1, lambda p: (irc.ERR_NOORIGIN, ":No origin specified"), None),
    "PONG": _Command(registered=None),
    "MODE": _Command(1),
    "USERHOST": _Command(1),
    "PRIVMSG": _Command(2, _privmsgMissing),
    # RFC 2812 §3.3.2: never an error reply to a NOTICE, not even this one.
    "NOTICE": _Command(2, _noReply),
    "JOIN": _Command(1),
    "PART": _Command(1),
    "NAMES": _Command(),
    "TOPIC": _Command(1),
    "LIST": _Command(),
    "WHO": _Command(),
    "WHOIS": _Command(1, lambda p: (irc.ERR_NONICKNAMEGIVEN, ":No nickname given")),
    "OPER": _Command(2),
}


def _parseMessage(line: str) -> tuple[str, str, list[str]] | None:
    """
    RFC 2812 §2.3.1: ``[":" prefix SPACE] command *(SPACE middle) [SPACE ":"
    trailing]``, split on spaces only. ``None`` for an empty message, which
    is silently ignored.
    """
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    head, colon, trailing = line.partition(" :")
    params = [word for word in head.split(" ") if word]
    if not params:
        return None
    if colon:
        params.append(trailing)
    command = params.pop(0)
    return prefix, command, params


class _IPreAuthenticated(Interface):
    """Credentials of a user the HTTP layer has authenticated already."""


@implementer(_IPreAuthenticated)
class _PreAuthenticated:
    def __init__(self, username: str) -> None:
        self.username = username


@implementer(ICredentialsChecker)
class _TrustHTTP:
    """Accepts users the upgrade's HTTP authentication let through."""

    credentialInterfaces = (_IPreAuthenticated,)

    def requestAvatarId(self, creds: Any) -> defer.Deferred[Any]:
        return defer.succeed(creds.username)


@implementer(ICredentialsChecker)
class _AnyNick:
    """Without --auth: every nickname is welcome, with any password."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def requestAvatarId(self, creds: Any) -> defer.Deferred[Any]:
        return defer.succeed(creds.username)


class _Channel(service.Group):
    """A channel that leaves its realm when its last member leaves."""

    def __init__(self, name: str, realm: _Realm) -> None:
        super().__init__(name)
        self.realm = realm

    def remove(self, user: Any, reason: str | None = None) -> defer.Deferred[None]:
        d: defer.Deferred[None] = super().remove(user, reason)
        if not self.users and self.realm.groups.get(self.name) is self:
            del self.realm.groups[self.name]
        return d


class _Realm(service.InMemoryWordsRealm):
    """
    twisted.words' in-memory realm, keeping only channels with members and
    users that are logged in.
    """

    createGroupOnRequest = True
    #: The client whose line is being handled: what it makes others receive
    #: is its doing, and it waits for any of them that cannot take it.
    speaking: _UpgradedIRCUser | None = None

    def groupFactory(self, name: str) -> _Channel:
        return _Channel(name, self)

    def logoutFactory(self, avatar: Any, facet: Any) -> Callable[[], None]:
        logout = super().logoutFactory(avatar, facet)

        def logoutAndForget() -> None:
            logout()  # leaves every channel, which frees the empty ones
            name = avatar.name
            if self.users.get(name) is avatar:
                del self.users[name]

        return logoutAndForget


@implementer(IGoingAway, IPushProducer)
class _UpgradedIRCUser(service.IRCUser):
    """
    Twisted's IRC server protocol, registering without NickServ, and safe
    to face any peer.

    Twisted's ``IRCUser`` waits for a password to NickServ when ``NICK``
    comes without ``PASS``; here the nickname alone (open server) or the HTTP
    identity (``--auth``) is enough, and a nickname in use gets ``433``.
    """

    httpUser: str | None = None
    open = True
    transport: Any
    avatar: Any
    realm: Any
    #: RFC 2812 §2.3: 512 bytes with the CR LF; mIRC's bare LF is accepted.
    MAX_LENGTH = 510
    maxChannels = 10  # IRCHandler's
    maxSendQueue = 64 * 1024  # IRCHandler's
    maxStall = 10.0  # IRCHandler's
    clock: IReactorTime

    def connectionMade(self) -> None:
        super().connectionMade()
        self._lines: deque[bytes | None] = deque()
        self._partial = b""
        self._skipping = False  # inside a line that was too long
        self._paused = False  # our transport's buffer is full
        self._reading = True
        self._handling = False
        self._queued = 0  # bytes written since the transport asked to pause
        self._dropped = False
        # Senders wait on paused recipients: reading a sender follows the
        # writing of everyone its lines are for.
        self._waitingOn: set[_UpgradedIRCUser] = set()  # paused recipients
        self._waiters: set[_UpgradedIRCUser] = set()  # senders waiting on us
        self._stall: IDelayedCall | None = None
        self._userGiven = False  # USER came
        self.transport.registerProducer(self, True)

    # Bytes to lines, and lines to commands.

    def dataReceived(self, data: bytes) -> None:
        lines = _LINE_END.split(data)
        partial = lines.pop()
        if lines:
            if self._skipping:
                # The end of a line too long: skipped, answered already.
                self._skipping = False
                del lines[0]
            else:
                lines[0] = self._partial + lines[0]
            self._partial = partial
        elif not self._skipping:
            self._partial += partial
        self._lines.extend(lines)
        if len(self._partial) > self.MAX_LENGTH:
            self._partial = b""
            self._skipping = True
            self._lines.append(None)
        self._handleLines()

    def _handleLines(self) -> None:
        if self._handling:
            return  # resumed from inside our own line: the loop goes on
        lines = self._lines
        realm = self.factory.realm
        speaking, realm.speaking = realm.speaking, self
        self._handling = True
        try:
            while lines and not (
                self._paused or self._waitingOn or self._dropped or self.transport.disconnecting
            ):
                line = lines.popleft()
                if line is None or len(line) > self.MAX_LENGTH:
                    self.lineLengthExceeded((line or b"").decode("utf-8", "replace"))
                    continue
                parsed = _parseMessage(line.replace(b"\0", b"").decode("utf-8", "replace"))
                if parsed is not None:
                    prefix, command, params = parsed
                    self.handleCommand(command, prefix, params)
        finally:
            self._handling = False
            realm.speaking = speaking
        self._updateReading()

    def _updateReading(self) -> None:
        # Read while our replies and every recipient of our lines keep up.
        if self._dropped:
            return
        reading = not (self._paused or self._waitingOn)
        if reading != self._reading:
            self._reading = reading
            if reading:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def lineLengthExceeded(self, line: str) -> None:
        """A line over :attr:`MAX_LENGTH` is answered and skipped."""
        self._reply(_ERR_INPUTTOOLONG, ":Input line was too long")

    def handleCommand(self, command: str, prefix: str, params: list[str]) -> None:
        """
        Check a command before its handler runs: a known one (else ``421``),
        in the right state (``451``, ``462``), with its parameters.
        """
        rule = _COMMANDS.get(command.upper()) if _COMMAND.fullmatch(command) else None
        if rule is None:
            self._reply(irc.ERR_UNKNOWNCOMMAND, command, ":Unknown command")
            return
        command = command.upper()
        registered = self.avatar is not None
        if rule.registered is True and not registered:
            self._reply(_ERR_NOTREGISTERED, ":You have not registered")
            return
        if rule.registered is False and registered and not self._userPending(command):
            self._reply(_ERR_ALREADYREGISTRED, ":Unauthorized command (already registered)")
            return
        if len(params) < rule.least:
            reply = rule.reply(command, params)
            if reply is not None:
                self._reply(*reply)
            return
        super().handleCommand(command, prefix, params)

    def _userPending(self, command: str) -> bool:
        # NICK alone registers here, so the USER every client sends next is
        # still welcome (once); only another one gets 462 (RFC 2812 §3.1.3).
        return command == "USER" and not self._userGiven

    def irc_USER(self, prefix: str, params: list[str]) -> None:
        self._userGiven = True
        super().irc_USER(prefix, params)

    # Flow control: IPushProducer, for the transport.

    def pauseProducing(self) -> None:
        # A TCP transport asks again on every write while its buffer is full.
        if not self._paused:
            self._paused = True
            self._queued = 0
            self._updateReading()

    def resumeProducing(self) -> None:
        self._paused = False
        self._queued = 0
        self._release()
        self._handleLines()

    def stopProducing(self) -> None:
        # The connection is gone: nothing more is read, handled or written.
        self._paused = self._dropped = True
        self._forget()

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self._dropped = True
        self._forget()
        super().connectionLost(reason)

    def _forget(self) -> None:
        # Nothing waits on a client that is gone, and it waits on nobody.
        self._lines.clear()
        for recipient in self._waitingOn:
            recipient._waiters.discard(self)
        self._waitingOn.clear()
        self._release()

    def _release(self) -> None:
        """The senders waiting on this client go on (it resumed, or left)."""
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None
        waiters = list(self._waiters)
        self._waiters.clear()
        for sender in waiters:
            sender._waitingOn.discard(self)
            if not sender._waitingOn:
                sender._handleLines()

    def _wait(self, sender: _UpgradedIRCUser) -> None:
        # sender's line reached us while our transport is full: its next
        # lines wait (and it is not read) until we resume, or for maxStall.
        sender._waitingOn.add(self)
        self._waiters.add(sender)
        if self._stall is None:
            self._stall = self.clock.callLater(self.maxStall, self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        if self._waiters and self._paused and not self._dropped:
            self._drop(
                "took nothing for {seconds} s while others waited to write to it",
                seconds=self.maxStall,
            )

    def sendLine(self, line: str) -> None:
        """
        Write one line: without NUL, CR or LF inside (RFC 2812 §2.3.1), and
        cut to 512 bytes with its CR LF (§2.3), as ircd-ratbox's
        ``rb_linebuf_put`` cuts every line it sends at 510 bytes.
        """
        if self._dropped:
            return
        if _UNSAFE.search(line):
            line = _UNSAFE.sub("", line)
        data = line.encode("utf-8")
        if len(data) > self.MAX_LENGTH:
            data = data[: self.MAX_LENGTH].decode("utf-8", "ignore").encode("utf-8")
        data += b"\r\n"
        if self._paused:
            self._queued += len(data)
            if self._queued > self.maxSendQueue:
                # The memory bound, whoever writes: many senders may each
                # have added a line before waiting.
                self._drop(
                    "Max SendQ exceeded, more than {limit} bytes waiting "
                    "beyond the transport's buffer",
                    limit=self.maxSendQueue,
                )
                return
            speaking = self.factory.realm.speaking
            if speaking is not None and speaking is not self:
                self._wait(speaking)
        self.transport.write(data)

    def _drop(self, reason: str, **fields: Any) -> None:
        _log.info(
            "dropping IRC client {nickname} ({peer}): " + reason,
            nickname=self.name or "*",
            peer=self.transport.getPeer(),
            **fields,
        )
        self._dropped = True
        self._forget()
        self.transport.unregisterProducer()
        self.transport.abortConnection()

    # Registration.

    def irc_NICK(self, prefix: str, params: list[str]) -> None:
        if self.avatar is not None:
            self._reply(irc.ERR_ERRONEUSNICKNAME, params[0],
                        ":Changing nicknames is not supported")  # fmt: skip
            return
        nickname = params[0]
        if not nickname:
            self._reply(irc.ERR_NONICKNAMEGIVEN, ":No nickname given")
            return
        if not _NICKNAME.fullmatch(nickname) or nickname.lower() in (
            "nickserv",
            str(self.hostname).lower(),
        ):
            self._reply(irc.ERR_ERRONEUSNICKNAME, nickname, ":Erroneous nickname")
            return
        password = self.password
        if password is None:
            if self.open:
                password = b""
            elif self.httpUser is not None and nickname == self.httpUser:
                self._preAuthenticated = True
                password = b""
            else:
                # With --auth a nickname other than the HTTP user's needs
                # its own password, given with PASS before NICK.
                self._reply(irc.ERR_PASSWDMISMATCH, ":Password required for this nickname")
                closeTransport(self.transport)
                return
        self.password = None
        self.nickname = self.name = nickname
        self.logInAs(nickname, password)

    def logInAs(self, nickname: str, password: bytes | str) -> None:
        if getattr(self, "_preAuthenticated", False):
            self._preAuthenticated = False
            creds: Any = _PreAuthenticated(nickname)
        else:
            if isinstance(password, str):
                password = password.encode("utf-8")
            creds = credentials.UsernamePassword(nickname.encode("utf-8"), password)
        d = self.factory.portal.login(creds, self, iwords.IUser)
        d.addCallbacks(self._cbLogin, self._ebLogin, errbackArgs=(nickname,))

    def _cbLogin(self, result: Any) -> None:
        super()._cbLogin(result)
        for code, text in self._motdMessages:
            self.sendMessage(code, text % self.factory._serverInfo)

    def _ebLogin(self, failure: Failure, nickname: str) -> None:
        self.nickname = self.name = None
        if failure.check(ewords.AlreadyLoggedIn):
            # RFC 2812 §5.2: the client may choose another nickname.
            self._reply(irc.ERR_NICKNAMEINUSE, nickname, ":Nickname is already in use")
            return
        if failure.check(error.UnauthorizedLogin, error.UnhandledCredentials):
            self._reply(irc.ERR_PASSWDMISMATCH, ":Password incorrect")
        else:
            _log.failure("IRC login of {nickname} failed", failure, nickname=nickname)
            self.sendLine("ERROR :Closing Link: server error during login")
        closeTransport(self.transport)

    # Commands whose handlers in twisted.words need more, or are missing.

    def irc_QUIT(self, prefix: str, params: list[str]) -> None:
        closeTransport(self.transport)

    def irc_PING(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.7.3: PONG names this server and echoes the token, which
        # clients use to measure lag.
        self.sendLine(f":{self.hostname} PONG {self.hostname} :{params[-1]}")

    def irc_PONG(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.7.3: this server sends no PING, so a PONG is not news.
        pass

    def irc_PRIVMSG(self, prefix: str, params: list[str]) -> None:
        if not params[-1]:
            self._reply(irc.ERR_NOTEXTTOSEND, ":No text to send")
            return
        super().irc_PRIVMSG(prefix, params)

    def irc_NOTICE(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.3.2: as PRIVMSG, without any reply, errors included.
        name, text = params[0], params[-1]
        if name.startswith("#"):
            target = self.realm.lookupGroup(name[1:])
        else:
            target = self.realm.lookupUser(name).addCallback(lambda user: user.mind)

        def send(recipient: Any) -> None:
            if recipient is not None and text:
                self.avatar.send(recipient, {"text": text, "notice": True})

        target.addCallbacks(send, lambda f: f.trap(ewords.NoSuchGroup, ewords.NoSuchUser))

    def receive(self, sender: Any, recipient: Any, message: dict[str, Any]) -> None:
        # One message is one line: twisted.words splits the text with
        # str.splitlines, which breaks at VT, FF, NEL and more, so one line
        # of them would go out as hundreds. A line from a client holds no CR
        # or LF (dataReceived), and sendLine removes any that would.
        name = "#" + recipient.name if iwords.IGroup.providedBy(recipient) else recipient.name
        text = message.get("text", "")
        source = f"{sender.name}!{sender.name}@{self.hostname}"
        if message.get("notice"):
            self.notice(source, name, text)
        else:
            self.privmsg(source, name, text)

    def irc_JOIN(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.2.1: a comma-separated list; the keys are ignored, as
        # twisted.words has no channel keys.
        for name in params[0].split(","):
            if not _CHANNEL.fullmatch(name):
                self._reply(irc.ERR_NOSUCHCHANNEL, name or "*", ":No such channel")
            elif self._membership(name) is not None:
                pass  # already there: nothing to do, as other servers
            elif len(self.avatar.groups) >= self.maxChannels:
                self._reply(irc.ERR_TOOMANYCHANNELS, name, ":You have joined too many channels")
            else:
                super().irc_JOIN(prefix, [name])

    def irc_PART(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.2.2: a comma-separated list, then an optional message.
        for name in params[0].split(","):
            if self._membership(name) is not None:
                super().irc_PART(prefix, [name, *params[1:]])
            elif name.startswith("#") and name[1:].lower() in self.realm.groups:
                self._reply(irc.ERR_NOTONCHANNEL, name, ":You're not on that channel")
            else:
                self._reply(irc.ERR_NOSUCHCHANNEL, name or "*", ":No such channel")

    def irc_MODE(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.1.5: several mode strings may follow a nickname;
        # twisted.words takes one (and refuses any flag anyway).
        super().irc_MODE(prefix, params if params[0].startswith("#") else params[:2])

    def irc_NAMES(self, prefix: str, params: list[str]) -> None:
        if not params:
            # RFC 2812 §3.2.5 would list every channel; as most servers
            # today, only the end of the (empty) list.
            self._reply(irc.RPL_ENDOFNAMES, "*", ":End of /NAMES list")
            return
        super().irc_NAMES(prefix, params)

    def _membership(self, name: str) -> Any:
        """The channel ``name`` if this user is in it, else ``None``."""
        if not name.startswith("#"):
            return None
        key = name[1:].lower()
        for group in self.avatar.groups:
            if group.name == key:
                return group
        return None

    # Going away, and replies.

    def goingAway(self) -> None:
        # RFC 2812 §3.7.4: ERROR tells a client why its link is closing.
        self.sendLine("ERROR :Closing Link: server shutting down")
        closeTransport(self.transport)

    def _reply(self, code: str, *params: str) -> None:
        # Before registration the target of a numeric reply is "*".
        target = self.name if self.avatar is not None else "*"
        words = list(params)
        line = f":{self.hostname} {code} {target} {' '.join(words)}"
        excess = len(line.encode("utf-8")) - self.MAX_LENGTH
        echoed = [i for i, word in enumerate(words) if not word.startswith(":")]
        if excess > 0 and echoed:
            # RFC 2812 §2.3: 512 bytes with the CR LF. What is cut is the
            # longest word the client sent (a command, a name), so the
            # reply keeps its text.
            i = max(echoed, key=lambda i: len(words[i].encode("utf-8")))
            word = words[i].encode("utf-8")
            words[i] = word[: max(1, len(word) - excess)].decode("utf-8", "ignore")
            line = f":{self.hostname} {code} {target} {' '.join(words)}"
        self.sendLine(line)


class _Factory(service.IRCFactory):
    protocol = _UpgradedIRCUser


@implementer(IUpgradeHandler)
class IRCHandler:
    """
    Serves ``IRC/6.9`` upgrades from one shared IRC realm.

    :param checkers: the ``--auth`` credential checkers; none means an open
        server where any nickname registers without a password.
    :param name: the server name IRC clients see.
    :param maxChannels: how many channels a client may be in at once; one
        more ``JOIN`` gets ``405 ERR_TOOMANYCHANNELS`` (RFC 2812 §3.2.1).
        The default, 10, is ngIRCd's ``MaxJoins``.
    :param maxSendQueue: how many bytes may wait for a client that does not
        read, beyond what its transport buffers before it asks to pause
        (64 KiB for TCP); past that the client is dropped and the reason
        logged. While the transport is paused nothing more is read from the
        client, and each client that writes to it waits after one line, so
        only many writers at once can fill this queue. ngIRCd drops a client
        at 32 KiB in all.
    :param maxStall: how many seconds a client's transport may stay full
        while others wait to write to it; then it is dropped, the reason
        logged. A client that reads drains the buffer and frees its writers
        long before.
    :param clock: the clock of ``maxStall``; the reactor by default.
    """

    #: The defaults of ``maxChannels`` and ``maxSendQueue``.
    maxChannels = 10
    maxSendQueue = 64 * 1024
    maxStall = 10.0

    def __init__(
        self,
        checkers: list[ICredentialsChecker],
        name: str = "upgradable",
        maxChannels: int = maxChannels,
        maxSendQueue: int = maxSendQueue,
        maxStall: float = maxStall,
        clock: IReactorTime | None = None,
    ) -> None:
        if maxChannels < 1 or maxSendQueue < 1 or maxStall <= 0:
            raise ValueError("maxChannels, maxSendQueue and maxStall must be at least 1")
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.realm = _Realm(name)
        self.maxChannels = maxChannels
        self.maxSendQueue = maxSendQueue
        self.maxStall = maxStall
        self.clock: IReactorTime = clock
        checker: ICredentialsChecker = EitherEncoding(checkers) if checkers else _AnyNick()
        portal = Portal(self.realm, [_TrustHTTP(), checker])
        self.factory = _Factory(self.realm, portal)
        self.open = not checkers

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        if request.method == b"HEAD":
            return Decline()
        protocol: Any = self.factory.buildProtocol(request.peer)
        protocol.open = self.open
        protocol.maxChannels = self.maxChannels
        protocol.maxSendQueue = self.maxSendQueue
        protocol.maxStall = self.maxStall
        protocol.clock = self.clock
        avatarId = request.avatarId
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        protocol.httpUser = avatarId
        return Accept(protocol)


def makeHandler(options: Any) -> IRCHandler:
    """The ``irc`` plugin's handler, honouring ``--auth``."""
    return IRCHandler(list(options.get("credCheckers", [])))
