# RFC 6455 framing for the server side, with RFC 7692 permessage-deflate, and
# no I/O: bytes from the client go in, messages and control events come out;
# messages and control payloads go in, frames for the client come out.
#
# The rules kept here:
# * A client frame is masked (§5.1), uses the shortest length encoding
#   (§5.2), sets no RSV bit except RSV1 on the first frame of a compressed
#   message (RFC 7692 §6.1), and uses a defined opcode. Control frames are
#   final and carry at most 125 bytes (§5.5).
# * Fragments continue exactly one message at a time (§5.4); control frames
#   may come between them.
# * A text message is valid UTF-8, checked as its fragments arrive (§8.1), so
#   that an invalid one fails at the first bad fragment.
# * No message grows past ``maxMessageSize``: a frame's declared length is
#   checked before any of its payload is buffered, and inflating is bounded
#   by the room left, so a small compressed frame cannot inflate to gigabytes.
# * A close frame's code is one an endpoint may send (§7.4), its reason UTF-8.
# * One call returns about ``budget`` bytes of payload at most (plus the
#   message that crosses it): the rest of the input waits, unparsed, for the
#   next call (``backlog``). So a read of small compressed frames cannot
#   inflate into hundreds of megabytes at once, and a connection whose peer
#   stops reading can stop parsing between two calls.
# Whatever breaks a rule ends the input with a FAIL event that carries the
# close code to answer with (§7.4.1: 1002, 1007, 1009). After FAIL or CLOSE
# the parser ignores everything.
#
# This replaces wsproto on the server side: an idle wsproto Connection holds
# much more state, and its per-frame generators cost time on every frame; the
# state here is one small object with slots, and a whole frame in one read is
# parsed with a few slices. tests/test_wsframes.py checks it against wsproto
# on random and broken frame streams.
from __future__ import annotations

import zlib
from binascii import b2a_base64
from codecs import getincrementaldecoder
from collections.abc import Sequence
from hashlib import sha1
from typing import Any

from .._core import splitList

__all__ = [
    "BINARY",
    "CLOSE",
    "FAIL",
    "PING",
    "PONG",
    "TEXT",
    "Deflate",
    "FrameParser",
    "acceptToken",
    "closePayload",
    "frame",
    "negotiateDeflate",
    "sendableCloseCode",
]

# Opcodes (§5.2), which are also the kinds of event the parser gives.
CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
FAIL = -1  # not an opcode: the input broke a rule, the value is (code, reason)

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009

# §7.4.1 and IANA's registry, as wsproto reads them: the codes a peer may
# send in a close frame. 1004 is reserved, 1005, 1006 and 1015 are only ever
# reported locally; 3000 to 4999 belong to libraries and applications.
_SENDABLE_CLOSE_CODES = frozenset(
    [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]
)

# §1.3: the GUID the accept token is derived with.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 7692 §7.2.1: the tail a sender strips from each compressed message.
_TAIL = b"\x00\x00\xff\xff"
_BFINAL_PAD = b"\x00" + _TAIL

_Utf8Decoder = getincrementaldecoder("utf-8")


def acceptToken(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (§4.2.2)."""
    return b2a_base64(sha1(key + _GUID).digest(), newline=False)


def sendableCloseCode(code: int) -> bool:
    """Whether an endpoint may put ``code`` in a close frame (§7.4)."""
    return code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


def frame(opcode: int, payload: bytes, compressed: bool = False) -> bytes:
    """One final, unmasked frame (a server's frames are never masked, §5.1)."""
    first = (0xC0 if compressed else 0x80) | opcode
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 0x10000:
        return bytes((first, 126)) + length.to_bytes(2, "big") + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload


def closePayload(code: int | None, reason: str = "") -> bytes:
    """A close frame's payload: no code at all, or the code and a reason
    cut to fit the 125 bytes of a control frame."""
    if code is None:
        return b""
    encoded = reason.encode("utf-8")
    if len(encoded) > 123:
        encoded = encoded[:123].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + encoded


def _unmask(key: bytes, payload: bytes) -> bytes:
    length = len(payload)
    if not length:
        return b""
    stream = (key * ((length >> 2) + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(length, "big")


class _Fail(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Deflate:
    """
    permessage-deflate as negotiated for one connection (RFC 7692 §7): the
    compressor for what the server sends and the decompressor for what the
    client sends, each made when first needed and dropped after every
    message when the negotiation says no context is kept.
    """

    __slots__ = ("_compressor", "_decompressor", "clientNoContext", "serverBits", "serverNoContext")

    def __init__(
        self, serverNoContext: bool = False, clientNoContext: bool = False, serverBits: int = 15
    ) -> None:
        self.serverNoContext = serverNoContext
        self.clientNoContext = clientNoContext
        self.serverBits = serverBits
        self._compressor: Any = None
        self._decompressor: Any = None

    def compress(self, data: bytes) -> bytes:
        """One message's compressed payload, without the tail (§7.2.1)."""
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.serverBits
            )
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = None if self.serverNoContext else compressor
        if out.endswith(_TAIL):
            out = out[:-4]
        return out or b"\x00"  # §7.2.3.6: an empty message is one empty block

    def inflate(self, payload: bytes, first: bool, final: bool, room: int) -> bytes:
        """
        One frame's payload inflated, at most ``room`` bytes of it; raises
        _Fail with 1009 past that, or 1007 when the data is not deflate.

        A client may end a message with a final block (BFINAL, RFC 7692
        §7.2.3.4), which ends its deflate stream: the next message starts a
        new stream, read by a new inflater, with or without context
        takeover (no distance refers past the start of a stream, RFC 1951
        §3.2; wsproto fails such a message with 1007, websockets returns it
        empty). Bytes after the final block inside one message, in whichever
        frame, fail with 1007 rather than being dropped.
        """
        decompressor = self._decompressor
        if decompressor is None or (first and decompressor.eof):
            decompressor = self._decompressor = zlib.decompressobj(-15)
        if final:
            payload += _TAIL
        try:
            out: bytes = decompressor.decompress(payload, room + 1)
        except zlib.error:
            raise _Fail(INVALID_PAYLOAD, "invalid compressed data") from None
        if len(out) > room or decompressor.unconsumed_tail:
            raise _Fail(MESSAGE_TOO_BIG, "message too big")
        # What follows the final block (zlib gathers it in unused_data, over
        # every later frame of the message, which are one payload, RFC 7692
        # §6.2) must be (part of) the appended tail (the block may end inside
        # the tail's first byte), or one 0x00 octet and the tail, as RFC 7692
        # §7.2.3.4's example sends it; before the last frame, that octet
        # alone (so that no more is ever kept).
        unused = decompressor.unused_data
        if unused and not (
            (_TAIL.endswith(unused) or unused == _BFINAL_PAD) if final else unused == b"\x00"
        ):
            raise _Fail(INVALID_PAYLOAD, "compressed data after the end of the deflate stream")
        if final and self.clientNoContext:
            self._decompressor = None
        return out


def negotiateDeflate(offers: Sequence[bytes]) -> tuple[Deflate, bytes] | None:
    """
    The first acceptable ``permessage-deflate`` offer among the client's
    ``Sec-WebSocket-Extensions`` values (RFC 7692 §5, §7.1), as the state to
    use and the value to answer with; None when no offer is acceptable.
    """
    for element in splitList(offers):
        name, _, rest = element.partition(b";")
        if name.strip().lower() != b"permessage-deflate":
            continue
        accepted = _acceptOffer(rest)
        if accepted is not None:
            return accepted
    return None


def _acceptOffer(parameters: bytes) -> tuple[Deflate, bytes] | None:
    seen: dict[bytes, bytes | None] = {}
    for parameter in parameters.split(b";"):
        if not parameter.strip():
            continue
        name, equals, text = parameter.partition(b"=")
        name = name.strip().lower()
        if name in seen:
            return None  # §7: a parameter given twice declines the offer
        seen[name] = text.strip().strip(b'"') if equals else None
    answer = [b"permessage-deflate"]
    serverNoContext = clientNoContext = False
    serverBits = 15
    for key, value in seen.items():
        if key == b"server_no_context_takeover" and value is None:
            serverNoContext = True
            answer.append(key)
        elif key == b"client_no_context_takeover" and value is None:
            clientNoContext = True
            answer.append(key)
        elif key == b"server_max_window_bits":
            # zlib cannot compress raw deflate with an 8-bit window.
            if value is None or not value.isdigit() or not 9 <= int(value) <= 15:
                return None
            serverBits = int(value)
            answer.append(key + b"=" + str(serverBits).encode())
        elif key == b"client_max_window_bits":
            # §7.1.2.2: the client may limit its own window; a 15-bit
            # decompressor reads any window, so no answer is needed.
            if value is not None and (not value.isdigit() or not 8 <= int(value) <= 15):
                return None
        else:
            return None  # unknown, or a value where none belongs
    return Deflate(serverNoContext, clientNoContext, serverBits), b"; ".join(answer)


class FrameParser:
    """
    Turns a client's bytes into events: ``(TEXT, str)``, ``(BINARY, bytes)``,
    ``(PING, payload)``, ``(CLOSE, (code or None, reason))``, and at most one
    ``(FAIL, (code, reason))``, after which, as after CLOSE, it reads nothing.

    :param maxMessageSize: larger messages fail with 1009.
    :param deflate: the negotiated permessage-deflate, if any.
    """

    __slots__ = (
        "_compressed",
        "_decoder",
        "_done",
        "_need",
        "_opcode",
        "_parts",
        "_pending",
        "_size",
        "budget",
        "deflate",
        "maxMessageSize",
    )

    def __init__(self, maxMessageSize: int, deflate: Deflate | None = None) -> None:
        self.maxMessageSize = maxMessageSize
        self.deflate = deflate
        self._pending: bytearray | None = None  # bytes of an incomplete frame
        self._need = 0
        self._opcode = 0  # of the message being reassembled, 0 between messages
        self._compressed = False
        self._parts: list[Any] | None = None
        self._size = 0
        self._decoder: Any = None
        self._done = False
        #: About how many bytes of payload one call returns at most.
        self.budget = 1 << 16

    @property
    def backlog(self) -> bool:
        """
        Whether input is left over from the last call's budget: ``receive(b"")``
        (or with more data, which is parsed after it) returns its events.
        """
        pending = self._pending
        return pending is not None and len(pending) >= self._need

    def receive(self, data: bytes) -> list[tuple[int, Any]]:
        """
        The events ``data`` (after any backlog) completes, in order, up to
        about ``budget`` bytes of payload.
        """
        if self._done:
            return []
        pending = self._pending
        if pending is None and not self._opcode:
            # The common case first: one whole, final, short text or binary
            # frame, masked and without RSV bits, between messages.
            length = len(data) - 6
            if 0 <= length < 126 and data[1] == 0x80 | length and length <= self.maxMessageSize:
                first = data[0]
                if first == 0x82:
                    return [(BINARY, _unmask(data[2:6], data[6:]))]
                if first == 0x81:
                    try:
                        return [(TEXT, _unmask(data[2:6], data[6:]).decode("utf-8"))]
                    except UnicodeDecodeError:
                        pass  # the general path fails it with its code
        if pending is not None:
            pending += data
            if len(pending) < self._need:
                return []
            data = bytes(pending)
            self._pending = None
        events: list[tuple[int, Any]] = []
        try:
            self._frames(data, events)
        except _Fail as failure:
            self._done = True
            self._pending = self._parts = self._decoder = None
            events.append((FAIL, (failure.code, failure.reason)))
        return events

    def _frames(self, data: bytes, events: list[tuple[int, Any]]) -> None:
        position = 0
        end = len(data)
        produced = 0
        while position < end:
            if produced >= self.budget:
                self._wait(data, position, 0)  # the backlog
                return
            available = end - position
            if available < 2:
                self._wait(data, position, 2)
                return
            first = data[position]
            second = data[position + 1]
            length = second & 0x7F
            if length < 126:
                start = position + 6
            elif length == 126:
                if available < 4:
                    self._wait(data, position, 4)
                    return
                length = int.from_bytes(data[position + 2 : position + 4], "big")
                if length < 126:
                    raise _Fail(PROTOCOL_ERROR, "length not minimally encoded")
                start = position + 8
            else:
                if available < 10:
                    self._wait(data, position, 10)
                    return
                length = int.from_bytes(data[position + 2 : position + 10], "big")
                if length < 0x10000 or length >> 63:
                    raise _Fail(PROTOCOL_ERROR, "length not minimally encoded")
                start = position + 14
            opcode = first & 0x0F
            self._check(first, second, opcode, length)
            stop = start + length
            if stop > end:
                self._wait(data, position, stop - position)
                return
            payload = _unmask(data[start - 4 : start], data[start:stop])
            position = stop
            if opcode < 8:
                produced += self._data(
                    opcode, bool(first & 0x80), bool(first & 0x40), payload, events
                )
            elif opcode == PING:
                events.append((PING, payload))
                produced += len(payload)
            elif opcode == CLOSE:
                events.append((CLOSE, _parseClose(payload)))
                self._done = True
                return

    def _wait(self, data: bytes, position: int, need: int) -> None:
        # One growing buffer: a frame that arrives in many small reads costs
        # its own size, not an object per read.
        self._pending = bytearray(memoryview(data)[position:])
        self._need = need

    def _check(self, first: int, second: int, opcode: int, length: int) -> None:
        """A frame header's rules, tested before its payload is read."""
        if not second & 0x80:
            raise _Fail(PROTOCOL_ERROR, "client frames must be masked")
        if opcode >= 8:
            if opcode > PONG:
                raise _Fail(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if not first & 0x80:
                raise _Fail(PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise _Fail(PROTOCOL_ERROR, "control frame longer than 125 bytes")
            if first & 0x70:
                raise _Fail(PROTOCOL_ERROR, "RSV bit set on a control frame")
            return
        if opcode > BINARY:
            raise _Fail(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        rsv = first & 0x70
        if opcode == CONTINUATION:
            if not self._opcode:
                raise _Fail(PROTOCOL_ERROR, "continuation frame without a message")
            if rsv:
                raise _Fail(PROTOCOL_ERROR, "RSV bit set on a continuation frame")
            compressed = self._compressed
        else:
            if self._opcode:
                raise _Fail(PROTOCOL_ERROR, "new message inside a fragmented one")
            if rsv and (rsv != 0x40 or self.deflate is None):
                raise _Fail(PROTOCOL_ERROR, "RSV bit set without an extension")
            compressed = bool(rsv)
        # A compressed frame may be a little longer than what it inflates to
        # (deflate's worst case adds 5 bytes per 16 KiB block).
        limit = self.maxMessageSize - self._size
        if length > (limit + (limit >> 10) + 64 if compressed else limit):
            raise _Fail(MESSAGE_TOO_BIG, "message too big")

    def _data(
        self, opcode: int, final: bool, rsv1: bool, payload: bytes, events: list[tuple[int, Any]]
    ) -> int:
        """Adds a frame's data to its message; returns its size, inflated."""
        first = opcode != CONTINUATION
        if first:
            self._opcode = opcode
            self._compressed = rsv1
        else:
            opcode = self._opcode
        if self._compressed:
            assert self.deflate is not None
            room = self.maxMessageSize - self._size
            payload = self.deflate.inflate(payload, first, final, room)
        parts = self._parts
        if final and parts is None:
            # The whole message is this frame (so nothing was counted yet).
            self._opcode = 0
            if opcode == TEXT:
                try:
                    events.append((TEXT, payload.decode("utf-8")))
                except UnicodeDecodeError:
                    raise _Fail(INVALID_PAYLOAD, "text message is not UTF-8") from None
            else:
                events.append((BINARY, payload))
            return len(payload)
        self._size += len(payload)
        if self._size > self.maxMessageSize:
            raise _Fail(MESSAGE_TOO_BIG, "message too big")
        if parts is None:
            parts = self._parts = []
        if opcode == TEXT:
            if self._decoder is None:
                self._decoder = _Utf8Decoder()
            try:
                parts.append(self._decoder.decode(payload, final))
            except UnicodeDecodeError:
                raise _Fail(INVALID_PAYLOAD, "text message is not UTF-8") from None
        else:
            parts.append(payload)
        if final:
            self._parts = self._decoder = None
            self._opcode = 0
            self._size = 0
            events.append((opcode, "".join(parts) if opcode == TEXT else b"".join(parts)))
        return len(payload)


def _parseClose(payload: bytes) -> tuple[int | None, str]:
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise _Fail(PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not sendableCloseCode(code):
        raise _Fail(PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail(INVALID_PAYLOAD, "close reason is not UTF-8") from None
