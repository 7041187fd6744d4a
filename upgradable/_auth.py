# HTTP Basic authentication in front of upgrade handlers (RFC 7617).
#
# The credentials are checked before the protected handler is asked, so a
# client without valid ones never gets a 101: it gets 401 with a challenge
# (RFC 9110 §11.6.1). Checking may be asynchronous; the channel keeps the
# connection's bytes meanwhile.
from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ._decisions import Decision, Reject, UpgradeRequest
from .interfaces import IUpgradeHandler

__all__ = ["BasicAuthHandler", "EitherEncoding", "parseBasic"]

_log = Logger()


def parseBasic(values: Sequence[bytes] | None) -> tuple[bytes, bytes] | None:
    """
    The user name and password of a single ``Authorization: Basic`` field,
    or None if there is none or it is malformed.
    """
    if not values or len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


@implementer(ICredentialsChecker)
class EitherEncoding:
    """
    One user name and password checker made of several: each is tried in
    turn, with the credentials as bytes and then as UTF-8 text.

    A ``Portal`` keeps one checker per credentials interface, so several
    ``--auth`` options must be folded into one. And Twisted's own checkers
    disagree on types: ``file:`` compares bytes, ``memory:`` the text it was
    given on the command line.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, checkers: Sequence[ICredentialsChecker]) -> None:
        self.checkers = [c for c in checkers if IUsernamePassword in c.credentialInterfaces]
        if not self.checkers:
            raise ValueError("no credentials checker accepts user names and passwords")

    async def _check(self, creds: Any) -> Any:
        username, password = creds.username, creds.password
        attempts = [(username, password)]
        try:
            if isinstance(username, bytes):
                attempts.append((username.decode("utf-8"), password.decode("utf-8")))
            else:
                attempts.append((username.encode("utf-8"), password.encode("utf-8")))
        except (UnicodeDecodeError, UnicodeEncodeError):
            pass
        for checker in self.checkers:
            for user, secret in attempts:
                try:
                    return await defer.maybeDeferred(
                        checker.requestAvatarId, UsernamePassword(user, secret)
                    )
                except (error.UnauthorizedLogin, error.UnhandledCredentials, TypeError):
                    continue
        raise error.UnauthorizedLogin()

    def requestAvatarId(self, credentials: Any) -> Any:
        return defer.ensureDeferred(self._check(credentials))


@implementer(IUpgradeHandler)
class BasicAuthHandler:
    """
    Ask ``inner`` only for clients whose HTTP Basic credentials one of
    ``checkers`` accepts; answer the others ``401``.

    The inner handler sees the request with ``avatarId`` set.
    """

    def __init__(
        self, inner: IUpgradeHandler, checkers: Sequence[ICredentialsChecker], realm: str
    ) -> None:
        self.inner = inner
        self.checker = EitherEncoding(checkers)
        challenge = b'Basic realm="%s", charset="UTF-8"' % realm.replace('"', "").encode()
        self.refusal = Reject(
            401,
            [(b"WWW-Authenticate", challenge)],
            b"Authentication required\n",
        )

    async def upgrade(self, request: UpgradeRequest, product: bytes) -> Decision:
        parsed = parseBasic(request.headers.getRawHeaders(b"authorization"))
        if parsed is None:
            return self.refusal
        try:
            avatarId = await self.checker.requestAvatarId(UsernamePassword(*parsed))
        except error.UnauthorizedLogin:
            avatarId = None
        if avatarId is not None:
            authenticated = replace(request, avatarId=avatarId or None)
            result: Any = self.inner.upgrade(authenticated, product)
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                result = await result
            return result  # type: ignore[no-any-return]
        _log.info(
            "Refused credentials of {user!r} from {peer} for {product}",
            user=parsed[0].decode("utf-8", "replace"),
            peer=str(request.peer),
            product=product.decode("ascii"),
        )
        return self.refusal
