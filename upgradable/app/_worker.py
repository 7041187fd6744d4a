# One worker process of `twistd upgradable --workers N`, started by the
# master (upgradable.app._workers) as `python -m upgradable.app._worker SPEC`, where
# SPEC is JSON: the command line, the inherited sockets, the worker's number.
#
# It serves exactly as a single `twistd upgradable` process would, on the
# inherited sockets; it logs JSON lines on its stdout for the master to
# publish. Its stdin closing (the master asks it to stop, or is gone) drains
# and stops it, and so does SIGTERM; a SIGTERM after that closes every
# connection at once. The master stops workers by closing their stdin, not
# with a signal, so that a SIGTERM sent to the whole process group (systemd's
# default) is a worker's first stop signal, not its second. SIGINT is the
# master's to handle: a terminal's Ctrl-C reaches the whole process group.
from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger, eventAsText, globalLogBeginner
from zope.interface import implementer

_log = Logger()


@implementer(IReadDescriptor)
class _MasterWatch:
    """Reads the master's end of stdin; when it closes, the worker stops."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def fileno(self) -> int:
        return 0

    def logPrefix(self) -> str:
        return "master"

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError as error:
            return error
        if not data:
            from twisted.internet.main import CONNECTION_DONE

            return CONNECTION_DONE
        return None

    def connectionLost(self, reason: Any) -> None:
        self.reactor.removeReader(self)
        _stop(self.reactor, "asked by the master (or it went away)")


_stopping = False


def _stop(reactor: Any, why: str) -> None:
    """
    Stop the reactor, once: the master closing stdin and a SIGTERM to the
    process group often arrive in the same reactor turn.
    """
    global _stopping
    if not _stopping:
        _stopping = True
        _log.info("Stopping: {why}", why=why)
        reactor.stop()


def _onSigterm(number: int, frame: Any) -> None:
    from twisted.internet import reactor

    reactor.callFromThread(_stop, reactor, "received SIGTERM")  # type: ignore[attr-defined]


def relayTo(out: Any) -> Any:
    """
    A log observer that writes each event for the master as one JSON line,
    ``[time, level, namespace, text]``, its text formatted here (traceback
    included): decoding a whole event and republishing it would cost the
    master far more, and the master handles the events of every worker.
    """

    def observe(event: Any) -> None:
        text = eventAsText(
            event, includeTraceback=True, includeTimestamp=False, includeSystem=False
        )
        level = event.get("log_level")
        record = [
            event.get("log_time"),
            level.name if level is not None else "info",
            event.get("log_namespace", "-"),
            text,
        ]
        out.write(json.dumps(record) + "\n")
        out.flush()

    return observe


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Twisted then leaves it alone
    spec = json.loads(argv[1])
    # Events go to the master as JSON lines on the real stdout; anything
    # printed goes to stderr, which the master logs as text.
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    if "stdout" in spec:
        # The master's standard output, for --access-log -.
        os.dup2(spec["stdout"], 1)
        os.close(spec["stdout"])
    globalLogBeginner.beginLoggingTo([relayTo(events)], redirectStandardIO=False)

    from twisted.internet import reactor

    from .._handover import raiseWhenListeningFails
    from .tap import Options, makeService

    options = Options()
    options.parseOptions([*spec["argv"], "--workers", "1"])
    service = makeService(options, inherited=[tuple(s) for s in spec["sockets"]])
    for child in service:
        # A socket it cannot adopt ends the worker (the master starts
        # another, after a pause) instead of leaving it running deaf.
        raiseWhenListeningFails(child)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    os.set_blocking(0, False)
    reactor.addReader(_MasterWatch(reactor))
    # Twisted's own SIGTERM handler would stop the reactor a second time
    # when stdin closed in the same turn (ReactorNotRunning in the log).
    # Stopping replaces this handler with the "second signal" one.
    signal.signal(signal.SIGTERM, _onSigterm)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]


if __name__ == "__main__":
    main(sys.argv)
