"""
The ``irc`` sample: a real IRC server from :mod:`twisted.words` behind the
``IRC/6.9`` token.

Without ``--auth`` anybody registers with ``NICK``/``USER`` and no password.
With ``--auth`` the upgrade itself needs HTTP Basic credentials; the IRC
session then logs in as that HTTP user when the nickname is the user name,
and any other nickname needs a ``PASS`` that the same checkers accept.
Channels are created on ``JOIN``; a nickname that is in use is answered with
``433 ERR_NICKNAMEINUSE`` and the client may try another.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words import ewords, iwords, service
from twisted.words.protocols import irc
from zope.interface import Interface, implementer

from .._auth import EitherEncoding
from .._decisions import Accept, Decision, Decline, UpgradeRequest
from .._transport import closeTransport
from ..interfaces import IGoingAway, IUpgradeHandler

__all__ = ["IRCHandler", "makeHandler"]


# RFC 2812 §2.3.1, without its 9-character limit (servers allow more today).
_NICKNAME = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,29}")


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


@implementer(IGoingAway)
class _UpgradedIRCUser(service.IRCUser):
    """
    Twisted's IRC server protocol, registering without NickServ.

    Twisted's ``IRCUser`` waits for a password to NickServ when ``NICK``
    comes without ``PASS``; here the nickname alone (open server) or the HTTP
    identity (``--auth``) is enough, and a nickname in use gets ``433``.
    """

    httpUser: str | None = None
    open = True
    transport: Any

    def irc_NICK(self, prefix: str, params: list[str]) -> None:
        if getattr(self, "avatar", None) is not None:
            self._reply(irc.ERR_ERRONEUSNICKNAME, params[0] if params else "*",
                        ":Changing nicknames is not supported")  # fmt: skip
            return
        if not params or not params[0]:
            self._reply(irc.ERR_NONICKNAMEGIVEN, ":No nickname given")
            return
        nickname = params[0]
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
                self.transport.loseConnection()
                return
        self.password = None
        self.nickname = self.name = nickname
        self.logInAs(nickname, password)

    def goingAway(self) -> None:
        # RFC 2812 §3.7.4: ERROR tells a client why its link is closing.
        self.sendLine("ERROR :Closing Link: server shutting down")
        closeTransport(self.transport)

    def irc_PING(self, prefix: str, params: list[str]) -> None:
        # RFC 2812 §3.7.3: PONG names this server and echoes the token, which
        # clients use to measure lag.
        token = params[-1] if params else self.hostname
        self.sendLine(f":{self.hostname} PONG {self.hostname} :{token}")

    def _reply(self, code: str, *params: str) -> None:
        # Before registration the target of a numeric reply is "*".
        target = self.name if getattr(self, "avatar", None) is not None else "*"
        self.sendLine(f":{self.hostname} {code} {target} {' '.join(params)}")

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
            self.transport.loseConnection()
            return
        super()._ebLogin(failure, nickname)


class _Factory(service.IRCFactory):
    protocol = _UpgradedIRCUser


@implementer(IUpgradeHandler)
class IRCHandler:
    """
    Serves ``IRC/6.9`` upgrades from one shared IRC realm.

    :param checkers: the ``--auth`` credential checkers; none means an open
        server where any nickname registers without a password.
    :param name: the server name IRC clients see.
    """

    def __init__(self, checkers: list[ICredentialsChecker], name: str = "upgradable") -> None:
        self.realm = service.InMemoryWordsRealm(name)
        self.realm.createGroupOnRequest = True
        checker: ICredentialsChecker = EitherEncoding(checkers) if checkers else _AnyNick()
        portal = Portal(self.realm, [_TrustHTTP(), checker])
        self.factory = _Factory(self.realm, portal)
        self.open = not checkers

    def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        if request.method == b"HEAD":
            return Decline()
        protocol: Any = self.factory.buildProtocol(request.peer)
        protocol.open = self.open
        avatarId = request.avatarId
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        protocol.httpUser = avatarId
        return Accept(protocol)


def makeHandler(options: Any) -> IRCHandler:
    """The ``irc`` plugin's handler, honouring ``--auth``."""
    return IRCHandler(list(options.get("credCheckers", [])))
