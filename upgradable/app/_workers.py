# twistd upgradable --workers N: a master process that binds the listening
# sockets and keeps N worker processes accepting on them.
#
# - Start: the sockets are bound in privilegedStartService (before twistd
#   drops privileges), then the workers are spawned, each running
#   `python -m upgradable.app._worker` with the same command line and the
#   sockets as inherited descriptors 3, 4, ...
# - Logs: a worker writes each log event, formatted, as a JSON line on its
#   stdout; the master publishes them as its own, with system "worker N", so
#   that twistd's --logfile, --syslog or the terminal get every process's
#   events (as text: their fields stay in the worker).
#   A worker's stderr is logged line by line.
# - A worker that ends on its own is replaced, after a pause that grows while
#   workers keep dying young. The others accept meanwhile.
# - Stop: the master closes its copies of the sockets, closes every worker's
#   stdin, which asks it to stop (each drains: see UpgradableSite.drain), and
#   stops once they all have; a second signal is passed on as SIGTERM, which
#   makes the workers close every connection at once. A SIGTERM sent to the
#   whole process group (systemd's default KillMode) reaches the workers as
#   their first stop signal, so it drains too. A worker whose master dies
#   sees its stdin close and stops the same way.
from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from .._drain import plural
from ._sockets import SharedSocket, bindShared
from ._tap import CannotListen, onSecondSignal

__all__ = ["WorkerPool"]

_log = Logger()

# Descriptor of the first inherited socket in a worker.
FIRST_SOCKET = 3


class _Worker(ProcessProtocol):
    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.system = f"worker {number}"
        self.pid: int | None = None
        self.started = pool.reactor.seconds()
        self.ended: Deferred[None] = Deferred()
        self._out = b""
        self._err = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        _log.info("Worker {number} started (pid {pid})", number=self.number, pid=self.pid)

    def outReceived(self, data: bytes) -> None:
        self._out, lines = _lines(self._out, data)
        for line in lines:
            self._event(line)

    def errReceived(self, data: bytes) -> None:
        self._err, lines = _lines(self._err, data)
        for line in lines:
            self._stderr(line)

    def _event(self, line: bytes) -> None:
        # [time, level, namespace, text]: see upgradable.app._worker.relayTo.
        try:
            when, level, namespace, text = json.loads(line)
            logLevel = LogLevel.levelWithName(level)
        except (ValueError, TypeError, InvalidLogLevelError):
            self._stderr(line)
            return
        globalLogPublisher(
            {
                "log_format": "{log_text}",
                "log_text": text,
                "log_level": logLevel,
                "log_namespace": namespace,
                "log_time": when,
                "log_system": self.system,
                "worker": self.number,
            }
        )

    def _stderr(self, line: bytes) -> None:
        if line.strip():
            _log.warn("{system} (pid {pid}): {line}", system=self.system, pid=self.pid,
                      line=line.decode("utf-8", "replace").rstrip())  # fmt: skip

    def processEnded(self, reason: Failure) -> None:
        for rest in (self._out, self._err):
            if rest:
                self._stderr(rest)
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """
    The master of ``twistd upgradable --workers N``: binds the ``--listen``
    endpoints and keeps ``count`` workers accepting on them.

    :param argv: the ``twistd upgradable`` options, as given.
    :param listen: the ``--listen`` endpoint strings.
    :param count: how many workers.
    :param grace: the workers' ``--grace-period``: how long stopping may take,
        before the master ends the workers with SIGKILL (plus a margin).
    :param accessLog: where the workers write the access log, as
        ``--access-log`` resolved it in the master: a path (each worker
        appends whole lines to the file), ``-`` (the master's standard
        output, passed to each worker), ``twistd`` (the master's log, as
        events) or ``none``.
    """

    # A worker that lives less than this long is counted as dying young.
    young = 10.0
    maxPause = 30.0

    def __init__(
        self,
        argv: list[str],
        listen: list[str],
        count: int,
        grace: float,
        reactor: Any = None,
        accessLog: str = "twistd",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        self.argv = argv
        self.listen = listen
        self.count = count
        self.grace = grace
        self.accessLog = accessLog
        self.reactor = reactor
        self.sockets: list[SharedSocket] = []
        self.workers: dict[int, _Worker] = {}
        self._pause = 0.0
        self._restarts: dict[int, Any] = {}

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        for description in self.listen:
            try:
                shared = bindShared(self.reactor, description)
            except Exception as error:
                # As a single process does (LoggingEndpointService): one line.
                raise CannotListen(f"--listen {description}: {error}") from None
            self.sockets.append(shared)
            _log.info(
                "upgradable listening on {address} ({description}), shared by {count} workers",
                address=str(shared.port.getHost()),
                description=description,
                count=self.count,
            )

    def startService(self) -> None:
        super().startService()
        for number in range(1, self.count + 1):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        self._restarts.pop(number, None)
        worker = _Worker(self, number)
        self.workers[number] = worker
        spec: dict[str, Any] = {
            # The master resolved where the access log goes (a worker's
            # twistd options are not the master's): the last value wins.
            "argv": [*self.argv, "--access-log", self.accessLog],
            "sockets": [
                [FIRST_SOCKET + index, shared.family] for index, shared in enumerate(self.sockets)
            ],
            "worker": number,
        }
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for index, shared in enumerate(self.sockets):
            childFDs[FIRST_SOCKET + index] = shared.fileno
        if self.accessLog == "-":
            # The worker's stdout carries its events; the access log goes
            # to the master's own standard output, given as one more
            # descriptor.
            spec["stdout"] = FIRST_SOCKET + len(self.sockets)
            childFDs[spec["stdout"]] = 1
        executable = sys.executable
        self.reactor.spawnProcess(
            worker,
            executable,
            [executable, "-m", "upgradable.app._worker", json.dumps(spec)],
            env=dict(os.environ),
            childFDs=childFDs,
        )

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
        status = "exited" if reason.check(ProcessDone) else str(reason.value)
        if not self.running:
            _log.info("Worker {number} (pid {pid}) stopped: {status}",
                      number=worker.number, pid=worker.pid, status=status)  # fmt: skip
            return
        lived = self.reactor.seconds() - worker.started
        self._pause = 0.0 if lived >= self.young else min(max(1.0, 2 * self._pause), self.maxPause)
        _log.error(
            "Worker {number} (pid {pid}) ended by itself ({status}); starting another in {pause} s",
            number=worker.number,
            pid=worker.pid,
            status=status,
            pause=self._pause,
        )
        self._restarts[worker.number] = self.reactor.callLater(
            self._pause, self._spawn, worker.number
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        # Close our copies first: once the workers have closed theirs, the
        # port refuses connections (and a proxy in front sends them elsewhere).
        closed: list[Deferred[Any]] = [
            maybeDeferred(shared.port.stopListening) for shared in self.sockets
        ]
        workers = list(self.workers.values())
        for worker in workers:
            # Their stdin closing asks them to stop: not a signal, so that a
            # SIGTERM to the whole process group is still their first.
            worker.transport.closeStdin()  # type: ignore[union-attr]
        signals = onSecondSignal(lambda: self._signal(list(self.workers.values()), "TERM"))
        if workers and signals:
            _log.info(
                "Asked {count} {workers} to stop; each lets its connections go on for up to "
                "{grace:g} s, and {signals} again closes them now",
                count=len(workers),
                workers=plural(len(workers), "worker"),
                grace=self.grace,
                signals=" or ".join(signals),
            )
        margin = self.reactor.callLater(self.grace + 30, self._signal, workers, "KILL")
        waited: list[Deferred[Any]] = [w.ended for w in workers]
        ended = DeferredList(waited + closed, consumeErrors=True)

        def done(result: object) -> object:
            if margin.active():
                margin.cancel()
            return result

        return ended.addBoth(done)

    def _signal(self, workers: list[_Worker], name: str) -> None:
        for worker in workers:
            try:
                worker.transport.signalProcess(name)  # type: ignore[union-attr]
            except (ProcessExitedAlready, OSError):
                pass


def _lines(pending: bytes, data: bytes) -> tuple[bytes, list[bytes]]:
    """The whole lines of ``pending + data``, and what is left of a line."""
    lines = (pending + data).split(b"\n")
    return lines.pop(), lines
