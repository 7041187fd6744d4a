# The access log: a line per request, cheap enough to keep on.
#
# Twisted's Site formats each line with combinedLogFormatter (six repr()
# calls and a %-format) and writes it to a line-buffered file, or, without a
# logPath, to Twisted's log as one event, which every observer then formats
# again (a timestamp per event, a write per line). Here:
#
# - combinedLine() makes exactly the line combinedLogFormatter makes (a test
#   compares them on random requests), but copies the fields that need no
#   escaping as they are, which is nearly all of them; only a field with a
#   byte outside printable ASCII, a quote or a backslash goes through the
#   escaping. The timestamp is Site's own, formatted once a second. A
#   request that switched protocols gets one more quoted field, the product
#   it switched to: the 101 line is the one record of the upgrade.
# - AccessLogFile buffers lines and writes them at most a second later (one
#   timer, armed by the first line after a write, none while nothing is
#   logged) or as soon as 64 KiB are waiting, in one write() of whole lines:
#   several processes (twistd upgradable --workers) can append to one file
#   without tearing a line. The file is opened O_APPEND, and reopened when
#   its path names another file (logrotate's move-and-create), checked at
#   each write, so at most once a second. Lines that cannot be written (a
#   full disk, a closed pipe) are dropped and said once in Twisted's log,
#   never kept without bound.
from __future__ import annotations

import os
import stat
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger

from ._records import SwitchedRequest

__all__ = ["AccessLogFile", "combinedLine"]

_log = Logger()

# The bytes that repr() and Twisted's _escape leave as they are inside the
# double quotes of a combined log line: printable ASCII but " and \.
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def _escaped(value: bytes) -> str:
    """
    ``value`` as Twisted's combined log escapes it: Python's repr of the
    bytes, inside double quotes (``"`` as ``\\"``).
    """
    if not value.translate(None, _PLAIN):
        return value.decode("ascii")
    text = repr(value)[1:]
    if text.startswith("'"):
        return text[1:-1].replace('"', '\\"').replace("\\'", "'")
    return text[1:-1]


def combinedLine(timestamp: str | None, request: Any) -> str:
    """
    The combined-log line for ``request`` (without its newline): what
    :func:`twisted.web.http.combinedLogFormatter` makes of it, and for a
    :class:`~upgradable.SwitchedRequest` one more quoted field, the product
    switched to.

    :param timestamp: the time, as Site keeps it (``[03/Dec/2026:10:00:00 +0000]``).
    :param request: a :class:`~twisted.web.http.Request`, or a record with
        the same attributes (``method``, ``uri``, ``clientproto``, ``code``,
        ``sentLength``, ``getClientAddress``, ``getHeader``).
    """
    address = request.getClientAddress()
    if isinstance(address, (IPv4Address, IPv6Address)):
        ip = _escaped(address.host.encode("ascii"))
    else:
        ip = "-"
    line = (
        f'"{ip}" - - {timestamp} "{_escaped(request.method)} {_escaped(request.uri)} '
        f'{_escaped(request.clientproto)}" {request.code:d} {request.sentLength or "-"} '
        f'"{_escaped(request.getHeader(b"referer") or b"-")}" '
        f'"{_escaped(request.getHeader(b"user-agent") or b"-")}"'
    )
    if type(request) is SwitchedRequest:
        line += f' "{_escaped(request.product)}"'
    return line


class AccessLogFile:
    """
    Where a site writes its access log: a file, appended to, or an open
    descriptor (standard output), its lines buffered for at most
    ``flushAfter`` seconds or ``bufferSize`` bytes.

    :param reactor: for the flush timer.
    :param path: the file; None: write to ``fd``.
    :param fd: a descriptor to write to (not closed by :meth:`close`), when
        ``path`` is None.
    """

    flushAfter = 1.0
    bufferSize = 64 * 1024

    def __init__(self, reactor: Any, path: str | None = None, fd: int | None = None) -> None:
        if (path is None) == (fd is None):
            raise ValueError("give a path or a descriptor")
        self._reactor = reactor
        self.path = path
        self._lines: list[str] = []
        self._size = 0
        self._timer: Any = None
        self._failing = False
        self.closed = False
        if path is None:
            assert fd is not None
            self._fd = fd
            self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
        else:
            self._fd = self._open(path)
            self._regular = True

    @staticmethod
    def _open(path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, line: str) -> None:
        """Add ``line`` (whole lines, newline included) to what is written next."""
        if self.closed:
            return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.bufferSize:
            self.flush()
        elif self._timer is None:
            self._timer = self._reactor.callLater(self.flushAfter, self.flush)

    def flush(self) -> None:
        """Write every line waiting, now."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "replace")
        self._lines = []
        self._size = 0
        try:
            if self.path is not None:
                self._reopenIfMoved(self.path)
            self._writeAll(data)
        except OSError as error:
            if not self._failing:
                self._failing = True
                _log.error(
                    "The access log could not be written to {where}: {error}; "
                    "its lines are dropped until a write succeeds",
                    where=self.path or f"descriptor {self._fd}",
                    error=error,
                )
            return
        if self._failing:
            self._failing = False
            _log.info("The access log is written to {where} again",
                      where=self.path or f"descriptor {self._fd}")  # fmt: skip

    def _reopenIfMoved(self, path: str) -> None:
        mine = os.fstat(self._fd)
        try:
            there = os.stat(path)
        except FileNotFoundError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            fd = self._open(path)
            os.close(self._fd)
            self._fd = fd

    def _writeAll(self, data: bytes) -> None:
        # One write() of whole lines appends them whole to a regular file
        # (O_APPEND). A pipe or terminal keeps writes of PIPE_BUF bytes or
        # fewer whole, so there the lines go in pieces of at most that size.
        view = memoryview(data)
        limit = len(data) if self._regular else _PIPE_BUF
        while view:
            piece = view[:limit]
            if not self._regular and len(view) > limit:
                end = bytes(piece).rfind(b"\n") + 1
                if end > 0:
                    piece = view[:end]
            written = os.write(self._fd, piece)
            view = view[written:]

    def close(self) -> None:
        """Write what is waiting and close the file (a descriptor given stays open)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.path is not None:
            os.close(self._fd)


_PIPE_BUF = 4096
