# Listening sockets shared by several processes (twistd upgradable --workers).
#
# The master process binds every --listen endpoint but never accepts; each
# worker inherits the sockets and accepts on them, so the kernel hands every
# new connection to whichever worker is ready. A worker that stops (or dies)
# leaves the socket open in the others: no connection is refused meanwhile.
#
# Both sides parse the very same endpoint strings with serverFromString, each
# with a stand-in reactor: the master's binds and stops reading, a worker's
# adopts the inherited descriptor instead of binding. Every endpoint that
# ends in listenTCP, listenSSL or listenUNIX works this way, wrappers such as
# haproxy: included (TLS is set up in the worker, from the same string).
from __future__ import annotations

import functools
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

from twisted.internet import tcp
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from .._handover import adoptUNIXPort, keepSharedSocketOpen

__all__ = ["SharedSocket", "adoptingReactor", "bindShared"]


@dataclass(frozen=True)
class SharedSocket:
    """A listening socket a master holds for its workers."""

    description: str
    port: IListeningPort
    family: int

    @property
    def fileno(self) -> int:
        return self.port.fileno()  # type: ignore[attr-defined,no-any-return]


class _Binding:
    """A reactor that binds and listens, and never accepts."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.bound: list[tuple[IListeningPort, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _hold(self, port: Any, family: int) -> IListeningPort:
        # startListening started reading; nothing ran since, so nothing
        # was accepted, and from now on nothing will be.
        port.stopReading()
        # Closing our copy must not shut the socket down for the workers.
        keepSharedSocketOpen(port)
        self.bound.append((port, family))
        return port  # type: ignore[no-any-return]

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        listening = self._reactor.listenTCP(port, factory, backlog, interface)
        return self._hold(listening, listening.addressFamily)

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        return self.listenTCP(port, factory, backlog, interface)  # TLS is the workers' business

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> IListeningPort:
        listening = self._reactor.listenUNIX(address, factory, backlog, mode, wantPID)
        return self._hold(listening, socket.AF_UNIX)


class _NeverAccepts(Factory):
    noisy = False
    protocol = Protocol

    def logPrefix(self) -> str:
        # Twisted logs "<this> starting on <port>" when the master binds.
        return "upgradable master (for its workers)"


def bindShared(reactor: Any, description: str) -> SharedSocket:
    """
    Bind the endpoint ``description`` for workers to accept on.

    :raises Exception: whatever listening raised (an address in use, say),
        or ValueError for an endpoint that does not listen on one socket.
    """
    binding = _Binding(reactor)
    endpoint = serverFromString(binding, description)
    result: list[Any] = []
    endpoint.listen(_NeverAccepts()).addBoth(result.append)
    if not result:
        raise ValueError(f"--listen {description}: cannot be shared by workers (not immediate)")
    if isinstance(result[0], Failure):
        result[0].raiseException()
    if len(binding.bound) != 1:
        for port, _ in binding.bound:
            port.stopListening()
        raise ValueError(f"--listen {description}: cannot be shared by workers (not one socket)")
    port, family = binding.bound[0]
    return SharedSocket(description, port, family)


class _Adopting:
    """A reactor whose listen* adopt one inherited listening socket."""

    def __init__(self, reactor: Any, fileno: int, family: int) -> None:
        self._reactor = reactor
        self._fileno = fileno
        self._family = family

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _adopt(self, factory: Any) -> IListeningPort:
        if self._fileno < 0:
            raise ValueError("this endpoint listened twice; a worker has one socket for it")
        fileno, self._fileno = self._fileno, -1
        try:
            if self._family == socket.AF_UNIX:
                return _adoptUNIX(self._reactor, fileno, factory)
            return self._reactor.adoptStreamPort(fileno, self._family, factory)  # type: ignore[no-any-return]
        finally:
            os.close(fileno)  # the port holds its own duplicate

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        return self._adopt(factory)

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        # What the reactor's own listenSSL wraps around a TCP port.
        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> IListeningPort:
        return self._adopt(factory)


def _adoptUNIX(reactor: Any, fileno: int, factory: Any) -> IListeningPort:
    """
    Adopt a UNIX socket the master bound. Twisted's own adoption would set
    the file's mode to 0666 and, when the worker stops, shut the socket down
    and delete the path that the master and the other workers still serve.
    """
    # The socket's own name, rather than the port's (a private attribute,
    # renamed in Twisted 26.10): the file whose mode the master set.
    with socket.fromfd(fileno, socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        path = listening.getsockname()
    port = adoptUNIXPort(reactor, fileno, factory)
    try:
        port.mode = stat.S_IMODE(os.stat(path).st_mode)
    except (OSError, ValueError, TypeError):
        pass  # an abstract-namespace socket has no file
    port.connectionLost = functools.partial(tcp.Port.connectionLost, port)
    port.startListening()
    # Nor shut it down for everyone when this worker stops (Twisted does
    # this for adopted TCP ports, not for UNIX ones).
    keepSharedSocketOpen(port)
    return port  # type: ignore[no-any-return]


def adoptingReactor(reactor: Any, fileno: int, family: int) -> Any:
    """A stand-in for ``reactor`` to parse an endpoint string with, in a worker."""
    return _Adopting(reactor, fileno, family)
