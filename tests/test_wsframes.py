"""
The WebSocket frame codec (upgradable.protocols._wsframes): every rule of
RFC 6455 §5 and RFC 7692 it keeps, reads cut at every point, and wsproto as
an oracle: on random frame streams, valid or broken, both must give the same
messages and fail with the same close code.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from upgradable.protocols._wsframes import (
    BINARY,
    CLOSE,
    FAIL,
    PING,
    TEXT,
    Deflate,
    FrameParser,
    _Fail,
    acceptToken,
    closePayload,
    frame,
    negotiateDeflate,
)

from .helpers import chunks

KEY = b"\x37\xfa\x21\x3d"


def clientFrame(
    payload: bytes,
    opcode: int = TEXT,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    lengthBytes: int | None = None,
) -> bytes:
    """A client's frame, with any header the tests need, valid or not."""
    length = len(payload)
    shortest = 0 if length < 126 else 2 if length < 0x10000 else 8
    lengthBytes = shortest if lengthBytes is None else max(lengthBytes, shortest)
    maskBit = 0x80 if masked else 0
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if lengthBytes == 0:
        head += bytes([maskBit | length])
    elif lengthBytes == 2:
        head += bytes([maskBit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([maskBit | 127]) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def parse(*reads: bytes, maxMessageSize: int = 1 << 20, deflate: Deflate | None = None) -> Any:
    parser = FrameParser(maxMessageSize, deflate)
    events = []
    for data in reads:
        events += parser.receive(data)
    while parser.backlog:
        events += parser.receive(b"")
    return events


def failCode(events: list[tuple[int, Any]]) -> int | None:
    return events[-1][1][0] if events and events[-1][0] == FAIL else None


# -- sending -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "head"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_framesUseTheShortestLengthAndNoMask(length: int, head: bytes) -> None:
    assert frame(TEXT, b"x" * length) == head + b"x" * length


def test_compressedFramesSetRsv1() -> None:
    assert frame(BINARY, b"ab", compressed=True) == b"\xc2\x02ab"


def test_rfcAcceptToken() -> None:
    """RFC 6455 §1.3."""
    assert acceptToken(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_closeReasonsAreCutToFitAControlFrameOnACharacterBoundary() -> None:
    assert closePayload(None) == b""
    assert closePayload(1000) == b"\x03\xe8"
    payload = closePayload(4000, "é" * 100)  # 200 bytes of UTF-8
    assert len(payload) == 2 + 122
    assert payload[2:].decode("utf-8") == "é" * 61


# -- negotiation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        ([b"permessage-deflate"], b"permessage-deflate"),
        ([b"permessage-deflate; client_max_window_bits"], b"permessage-deflate"),
        (
            [b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        ([b'permessage-deflate; server_max_window_bits="10"'],
         b"permessage-deflate; server_max_window_bits=10"),
        # An unacceptable first offer falls back to the next one (RFC 7692 §5).
        ([b"permessage-deflate; server_max_window_bits=8, permessage-deflate"],
         b"permessage-deflate"),
        ([b"x-webkit-deflate-frame", b"permessage-deflate"], b"permessage-deflate"),
        ([b"permessage-deflate; unknown=1"], None),
        ([b"permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None),
        ([b"permessage-deflate; server_no_context_takeover=1"], None),
        ([b"permessage-deflate; server_max_window_bits"], None),
        ([b"permessage-deflate; client_max_window_bits=16"], None),
        ([b"x-webkit-deflate-frame"], None),
    ],
)  # fmt: skip
def test_deflateOffers(offers: list[bytes], answer: bytes | None) -> None:
    accepted = negotiateDeflate(offers)
    assert (accepted and accepted[1]) == answer


def test_noContextTakeoverResetsTheCompressorEveryMessage() -> None:
    kept, reset = Deflate(), Deflate(serverNoContext=True)
    first = kept.compress(b"hello hello hello")
    assert reset.compress(b"hello hello hello") == first
    assert reset.compress(b"hello hello hello") == first
    assert len(kept.compress(b"hello hello hello")) < len(first)


def test_anEmptyMessageCompressesToOneEmptyBlock() -> None:
    """RFC 7692 §7.2.3.6."""
    assert Deflate().compress(b"") == b"\x00"
    events = parse(clientFrame(b"\x00", rsv=0x40), deflate=Deflate())
    assert events == [(TEXT, "")]


# -- parsing ----------------------------------------------------------------------


def test_rfcMaskedHelloAndClose() -> None:
    """RFC 6455 §5.7."""
    hello = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    close = b"\x88\x82\x37\xfa\x21\x3d\x34\x12"
    assert parse(hello + close) == [(TEXT, "Hello"), (CLOSE, (1000, ""))]


def test_nothingIsReadAfterTheClose() -> None:
    assert parse(clientFrame(b"", CLOSE) + clientFrame(b"late"), clientFrame(b"later")) == [
        (CLOSE, (None, ""))
    ]


def test_fragmentsWithAControlFrameBetween() -> None:
    events = parse(
        clientFrame(b"frag", TEXT, fin=False),
        clientFrame(b"ping", PING),
        clientFrame(b"ment", 0, fin=False) + clientFrame(b"ed", 0),
    )
    assert events == [(PING, b"ping"), (TEXT, "fragmented")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (clientFrame(b"hi", masked=False), 1002),
        (clientFrame(b"", 0x3), 1002),
        (clientFrame(b"", 0xB), 1002),
        (clientFrame(b"", PING, fin=False), 1002),
        (clientFrame(b"x" * 126, PING), 1002),
        (clientFrame(b"", PING, rsv=0x40), 1002),
        (clientFrame(b"hi", rsv=0x40), 1002),  # no extension negotiated
        (clientFrame(b"hi", rsv=0x20), 1002),
        (clientFrame(b"hi", 0), 1002),  # continuation without a message
        (clientFrame(b"a", fin=False) + clientFrame(b"b"), 1002),
        (clientFrame(b"hi", lengthBytes=2), 1002),
        (clientFrame(b"hi" * 100, lengthBytes=8), 1002),
        (b"\x81\xff\x80" + bytes(7) + KEY, 1002),  # 64-bit length with its top bit set
        (clientFrame(b"\x03", CLOSE), 1002),
        (clientFrame(b"\x03\xed", CLOSE), 1002),  # 1005 is never sent
        (clientFrame(b"\x03\xee", CLOSE), 1002),  # nor 1006
        (clientFrame(b"\x03\xec", CLOSE), 1002),  # 1004 is reserved
        (clientFrame(b"\x07\xd0", CLOSE), 1002),  # 2000 is unassigned
        (clientFrame(b"\x13\x88", CLOSE), 1002),  # 5000 is out of range
        (clientFrame(b"\x03\xe8\xff", CLOSE), 1007),
        (clientFrame(b"\xff"), 1007),
        (clientFrame(b"\xce", fin=False) + clientFrame(b"\xba", 0), None),  # split κ is fine
    ],
)
def test_brokenFramesFailWithTheirCloseCode(data: bytes, code: int | None) -> None:
    assert failCode(parse(data)) == code


def test_invalidUtf8FailsAtTheFirstBadFragment() -> None:
    events = parse(clientFrame(b"ok", fin=False), clientFrame(b"\xc0\xaf", 0, fin=False))
    assert failCode(events) == 1007


def test_anOversizedFrameFailsOnItsHeaderAlone() -> None:
    """Nothing of a frame that would be too big is buffered."""
    header = clientFrame(b"x" * 70_000)[:14]
    assert failCode(parse(header, maxMessageSize=65_536)) == 1009


def test_fragmentsAddUpToTheLimit() -> None:
    data = clientFrame(b"x" * 60, BINARY, fin=False) + clientFrame(b"y" * 40, 0)
    assert parse(data, maxMessageSize=100) == [(BINARY, b"x" * 60 + b"y" * 40)]
    data = clientFrame(b"x" * 60, BINARY, fin=False) + clientFrame(b"y" * 41, 0)
    assert failCode(parse(data, maxMessageSize=100)) == 1009


def test_aCompressionBombFailsWithoutInflatingIt() -> None:
    compressor = zlib.compressobj(wbits=-15)
    bomb = compressor.compress(b"\0" * 10_000_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    events = parse(clientFrame(bomb[:-4], BINARY, rsv=0x40), maxMessageSize=1000, deflate=Deflate())
    assert failCode(events) == 1009


def test_garbageUnderRsv1FailsWith1007() -> None:
    events = parse(clientFrame(b"\xff\xff\xff", rsv=0x40), deflate=Deflate())
    assert failCode(events) == 1007


def test_compressedMessagesKeepTheirContextUnlessToldNotTo() -> None:
    for clientNoContext in (False, True):
        compressor = zlib.compressobj(wbits=-15)
        parser = FrameParser(1 << 20, Deflate(clientNoContext=clientNoContext))
        events = []
        for _ in range(3):
            if clientNoContext:
                compressor = zlib.compressobj(wbits=-15)
            data = compressor.compress(b"again " * 10) + compressor.flush(zlib.Z_SYNC_FLUSH)
            events += parser.receive(clientFrame(data[:-4], rsv=0x40))
        assert events == [(TEXT, "again " * 10)] * 3


# -- any split, and wsproto as the oracle -----------------------------------------

PAYLOADS = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda text: text.encode("utf-8")),
    st.sampled_from([b"\xce", b"\xba", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]),
    st.integers(min_value=120, max_value=70_000).map(lambda n: b"z" * n),
)
CLOSE_PAYLOADS = st.one_of(
    st.just(b""),
    st.binary(max_size=1),
    st.tuples(
        st.integers(min_value=0, max_value=0xFFFF)
        | st.integers(min_value=990, max_value=1020)
        | st.sampled_from([2999, 3000, 4999, 5000]),
        st.sampled_from([b"", b"bye", b"\xff", "é".encode() * 70]),
    ).map(lambda t: t[0].to_bytes(2, "big") + t[1]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One client frame, mostly valid, sometimes broken in one way."""
    opcode = draw(
        st.sampled_from([0, 0, 0, TEXT, TEXT, BINARY, BINARY, CLOSE, PING, 0xA, 0x3, 0xB])
    )
    payload = draw(CLOSE_PAYLOADS if opcode == CLOSE else PAYLOADS)
    return clientFrame(
        payload,
        opcode,
        fin=draw(st.booleans()),
        rsv=draw(st.sampled_from([0, 0, 0, 0, 0x40, 0x40, 0x20, 0x10])),
        masked=draw(st.sampled_from([True] * 15 + [False])),
        lengthBytes=draw(st.sampled_from([None] * 6 + [0, 2, 8])),
    )


def negotiated(deflate: bool) -> list[PerMessageDeflate]:
    """wsproto's permessage-deflate as if negotiated with no parameters."""
    if not deflate:
        return []
    extension = PerMessageDeflate()
    extension.finalize("permessage-deflate")
    return [extension]


def wsprotoOutcome(data: bytes, deflate: bool) -> list[tuple[int, Any]]:
    """What wsproto's server makes of ``data``, in the parser's events."""
    server = Connection(ConnectionType.SERVER, extensions=negotiated(deflate))
    events: list[tuple[int, Any]] = []
    parts: list[Any] = []
    server.receive_data(data)
    for event in server.events():
        if isinstance(event, Message):
            parts.append(event.data)
            if event.message_finished:
                kind = TEXT if isinstance(event, TextMessage) else BINARY
                joined = "".join(parts) if kind == TEXT else b"".join(parts)
                events.append((kind, joined))
                parts = []
        elif isinstance(event, Ping):
            events.append((PING, event.payload))
        elif isinstance(event, CloseConnection):
            events.append((CLOSE, event.code))
            break
    return events


HEADER_FIRST = "1002, header first"


class EndedStreamsFail(Deflate):
    """
    Deflate with wsproto's answer to a message after one that ended its
    deflate stream, the one place where the two differ on purpose: wsproto
    fails it with 1007, ours inflates it with a new inflater (tested above).
    """

    __slots__ = ()

    def inflate(self, payload: bytes, first: bool, final: bool, room: int) -> bytes:
        ended = self._decompressor is not None and self._decompressor.eof
        if first and ended:
            raise _Fail(1007, "compressed data after the end of the deflate stream")
        return super().inflate(payload, first, final, room)


def ourOutcome(reads: list[bytes], deflate: bool) -> list[tuple[int, Any]]:
    events = parse(*reads, maxMessageSize=1 << 30, deflate=EndedStreamsFail() if deflate else None)
    # wsproto reports a failure as the close it sends, and no code as 1005.
    outcome = [
        (CLOSE, 1005 if value[0] is None else value[0]) if kind in (CLOSE, FAIL) else (kind, value)
        for kind, value in events
    ]
    if events and events[-1] == (FAIL, (1002, "new message inside a fragmented one")):
        outcome[-1] = (CLOSE, HEADER_FIRST)
    return outcome


def sameOutcome(ours: list[tuple[int, Any]], wsprotos: list[tuple[int, Any]]) -> bool:
    """
    Equal, but for the one place the two differ by design: wsproto runs a
    frame's payload through an unfinished compressed message's inflater
    before it notices that the frame starts a new message, so bad data there
    gives 1007; here the header fails first (RFC 6455 §5.4, 1002) and the
    payload is never read.
    """
    if ours[-1:] == [(CLOSE, HEADER_FIRST)]:
        return ours[:-1] == wsprotos[:-1] and wsprotos[-1:] in ([(CLOSE, 1002)], [(CLOSE, 1007)])
    return ours == wsprotos


@settings(max_examples=1500, deadline=None)
@example(  # an empty final block, then a message: where wsproto and ours differ
    frames=[clientFrame(b"\x03\x00", rsv=0x40), clientFrame(b"\x00", rsv=0x40)],
    deflate=True,
    cuts=[3],
)
@given(
    frames=st.lists(frames(), min_size=1, max_size=8),
    deflate=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_sameOutcomeAsWsprotoHoweverTheBytesAreCut(
    frames: list[bytes], deflate: bool, cuts: list[int]
) -> None:
    data = b"".join(frames)
    expected = wsprotoOutcome(data, deflate)
    assert sameOutcome(ourOutcome([data], deflate), expected)
    cut = list(chunks(data, (c for c in cuts if c < len(data))))
    assert ourOutcome(cut, deflate) == ourOutcome([data], deflate)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.text(max_size=50) | st.binary(max_size=300), st.integers(1, 3)),
        min_size=1,
        max_size=5,
    ),
    deflate=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_messagesWsprotosClientSendsArriveWhole(
    messages: list[tuple[str | bytes, int]], deflate: bool, cuts: list[int]
) -> None:
    client = Connection(ConnectionType.CLIENT, extensions=negotiated(deflate))
    data = b""
    for message, pieces in messages:
        step = max(1, len(message) // pieces)
        for start in range(0, max(len(message), 1), step):
            piece = message[start : start + step]
            last = start + step >= len(message)
            event = TextMessage(piece, message_finished=last) if isinstance(message, str) else (
                BytesMessage(piece, message_finished=last))  # fmt: skip
            data += client.send(event)
    reads = list(chunks(data, (c for c in cuts if c < len(data))))
    events = parse(*reads, deflate=Deflate() if deflate else None)
    assert events == [(TEXT if isinstance(m, str) else BINARY, m) for m, _ in messages]


# How a client may end a compressed message: a sync flush with its tail taken
# off (RFC 7692 §7.2.1), or a final block (§7.2.3.4), which ends the stream:
# in the same frame, in a frame of its own, as a stored block (§7.2.3.3), or
# followed by the one 0x00 octet of the RFC's example.
FINAL_ENDINGS = ["final", "final-own-frame", "stored-final", "rfc-pad"]


def storedFinalBlock(data: bytes) -> bytes:
    """A final stored block (RFC 1951 §3.2.4), valid where a stream is byte-aligned."""
    return (
        b"\x01"
        + len(data).to_bytes(2, "little")
        + (~len(data) & 0xFFFF).to_bytes(2, "little")
        + data
    )


class DeflatingClient:
    """
    A client's side of permessage-deflate built on zlib: one raw deflate
    stream kept from message to message (context takeover) unless
    ``noContext``, and a new one after any message that ended its stream.
    """

    def __init__(self, noContext: bool = False) -> None:
        self.noContext = noContext
        self.compressor: Any = None

    def payloads(self, data: bytes, ending: str) -> list[bytes]:
        """One message's compressed payload, in the pieces that go in frames of their own."""
        if self.compressor is None or self.noContext:
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        compressor = self.compressor
        if ending == "sync":
            out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            return [out.removesuffix(b"\x00\x00\xff\xff") or b"\x00"]
        self.compressor = None  # the final block ends the stream
        if ending == "final":
            return [compressor.compress(data) + compressor.flush(zlib.Z_FINISH)]
        if ending == "final-own-frame":
            synced = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            return [synced, compressor.flush(zlib.Z_FINISH)]
        if ending == "stored-final":
            # After a sync flush (or at the start) the stream is byte-aligned.
            return [compressor.flush(zlib.Z_SYNC_FLUSH) + storedFinalBlock(data)]
        assert ending == "rfc-pad"
        return [compressor.compress(data) + compressor.flush(zlib.Z_FINISH) + b"\x00"]

    def message(self, text: str, ending: str, fragmented: bool = False, mask: Any = None) -> bytes:
        """One text message's frames; ``fragmented`` cuts each piece in two."""
        pieces = self.payloads(text.encode("utf-8"), ending)
        if fragmented:
            pieces = [
                half
                for piece in pieces
                for half in (piece[: len(piece) // 2], piece[len(piece) // 2 :])
            ]
        build = mask or clientFrame
        out = b""
        for index, piece in enumerate(pieces):
            first, last = index == 0, index == len(pieces) - 1
            out += build(piece, TEXT if first else 0, fin=last, rsv=0x40 if first else 0)
        return out


def afterFinalBlocks(ending: str) -> list[tuple[str, str]]:
    """Messages with final blocks among them: an empty one after one, a
    message that refers back into the new stream, an empty final one."""
    return [
        ("first words", ending),
        ("", "sync"),
        ("again and again", "sync"),
        ("again and again", "sync"),
        ("last of a stream", ending),
        ("", ending),
        ("a new stream once more", "sync"),
    ]


@pytest.mark.parametrize("noContext", [False, True], ids=["takeover", "no-takeover"])
@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
@pytest.mark.parametrize("ending", FINAL_ENDINGS)
def test_theMessageAfterOneThatEndsItsDeflateStreamInflates(
    ending: str, fragmented: bool, noContext: bool
) -> None:
    """RFC 7692 §7.2.3.4: a final block ends the stream; the next message starts another."""
    client = DeflatingClient(noContext)
    sent = afterFinalBlocks(ending)
    data = b"".join(client.message(text, how, fragmented) for text, how in sent)
    deflate = Deflate(clientNoContext=noContext)
    assert parse(data, deflate=deflate) == [(TEXT, text) for text, _ in sent]
    deflate = Deflate(clientNoContext=noContext)
    assert parse(*chunks(data, range(0, len(data), 3)), deflate=deflate) == [
        (TEXT, text) for text, _ in sent
    ]


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("f348cdc9c90700" + "00"),  # RFC 7692 §7.2.3.4, with its 0x00 octet
        bytes.fromhex("f348cdc9c90700"),  # the same final block alone
        bytes.fromhex("f248cdc9c90700" + "0000ffff" + "0300"),  # "Hello", sync, empty final block
    ],
    ids=["rfc-example", "final-block", "empty-final-block"],
)
def test_aMessageEndingItsStreamInflatesHoweverItIsCutIntoFrames(payload: bytes) -> None:
    """A message is its frames' payloads joined (RFC 7692 §6.2), wherever they are cut."""
    follow = clientFrame(b"\x00", rsv=0x40)  # an empty message on the next stream
    for cut in range(len(payload) + 1):
        frames = clientFrame(payload[:cut], rsv=0x40, fin=False) + clientFrame(payload[cut:], 0)
        events = parse(frames + follow, deflate=Deflate())
        assert events == [(TEXT, "Hello"), (TEXT, "")], cut


def test_bytesAfterTheFinalBlockInALaterFrameFail() -> None:
    """What follows the final block may be the RFC's 0x00 octet, and nothing else."""
    ended = bytes.fromhex("f348cdc9c90700")
    for after in [b"\x00\x00", b"\x01", b"\x00\x00\x00\xff\xff", b"x" * 1000]:
        frames = clientFrame(ended, rsv=0x40, fin=False) + clientFrame(after, 0, fin=False)
        assert failCode(parse(frames, deflate=Deflate())) == 1007, after


def test_aNewStreamCannotReachBackIntoTheEndedOne() -> None:
    """
    The inflater for a stream begun after a final block starts with an empty
    window (RFC 1951 §3.2: no distance refers past the start of a stream),
    so a message that refers back into the ended stream fails with 1007.
    """
    text = b"a sentence long enough to be referred back to"
    first = zlib.compressobj(wbits=-15)
    ended = first.compress(text) + first.flush(zlib.Z_FINISH)
    reaching = zlib.compressobj(wbits=-15, zdict=text)
    back = (reaching.compress(text) + reaching.flush(zlib.Z_SYNC_FLUSH))[:-4]
    events = parse(clientFrame(ended, rsv=0x40) + clientFrame(back, rsv=0x40), deflate=Deflate())
    assert events[0] == (TEXT, text.decode())
    assert failCode(events) == 1007


def test_bytesAfterTheFinalBlockFailRatherThanVanish() -> None:
    compressor = zlib.compressobj(wbits=-15)
    ended = compressor.compress(b"last words") + compressor.flush(zlib.Z_FINISH)
    events = parse(clientFrame(ended + b"more", rsv=0x40), deflate=Deflate())
    assert failCode(events) == 1007


def test_aStreamMayEndInAFragmentBeforeEmptyOnes() -> None:
    compressor = zlib.compressobj(wbits=-15)
    ended = compressor.compress(b"done") + compressor.flush(zlib.Z_FINISH)
    events = parse(clientFrame(ended, rsv=0x40, fin=False), clientFrame(b"", 0), deflate=Deflate())
    assert events == [(TEXT, "done")]
    events = parse(clientFrame(ended, rsv=0x40, fin=False), clientFrame(b"x", 0), deflate=Deflate())
    assert failCode(events) == 1007


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_oneWholeFramePastTheLimitFails(opcode: int) -> None:
    """The single-frame shortcut keeps the limit too."""
    assert parse(clientFrame(b"x" * 100, opcode), maxMessageSize=100) == [
        (opcode, "x" * 100 if opcode == TEXT else b"x" * 100)
    ]
    assert failCode(parse(clientFrame(b"x" * 101, opcode), maxMessageSize=100)) == 1009


def test_theRfcExampleOfAFinalBlockFollowedByAnEmptyOne() -> None:
    """RFC 7692 §7.2.3.4: a BFINAL block, then one 0x00 octet."""
    payload = bytes.fromhex("f348cdc9c90700" + "00")
    events = parse(clientFrame(payload, rsv=0x40), deflate=Deflate())
    assert events == [(TEXT, "Hello")]


def test_aFrameInManySmallReadsCostsItsOwnSize() -> None:
    """An incomplete frame is one growing buffer, not an object per read."""
    import tracemalloc

    data = clientFrame(b"x" * 256 * 1024, BINARY)
    parser = FrameParser(1 << 20)
    tracemalloc.start()
    try:
        for start in range(0, len(data) - 1, 4):
            assert parser.receive(data[start : min(start + 4, len(data) - 1)]) == []
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 400 * 1024, f"{held} bytes held for a 256 KiB frame"
    assert parser.receive(data[-1:]) == [(BINARY, b"x" * 256 * 1024)]


def deflatedFrame(payload: bytes) -> bytes:
    """A compressed binary message, compressed alone (no context takeover)."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return clientFrame(data[:-4], BINARY, rsv=0x40)


def test_oneCallInflatesAboutABudgetAndLeavesTheRestAsBacklog() -> None:
    """
    A read of small compressed frames that inflate to 256 KiB each gives one
    message per call (the budget is 64 KiB), not all of them at once; the
    rest waits unparsed and comes out, in order, call by call.
    """
    messages = [bytes([n]) * (256 * 1024) for n in range(10)]
    data = b"".join(deflatedFrame(m) for m in messages)
    assert len(data) < 10 * 1024  # kilobytes in, megabytes out
    parser = FrameParser(1 << 20, Deflate(clientNoContext=True))
    calls = [parser.receive(data)]
    while parser.backlog:
        calls.append(parser.receive(b""))
    assert [len(events) for events in calls] == [1] * 10
    assert [event for events in calls for event in events] == [(BINARY, m) for m in messages]


def test_theBacklogIsParsedBeforeNewData() -> None:
    """Data that arrives while a backlog waits is parsed after it."""
    big, small = bytes(200 * 1024), b"after"
    parser = FrameParser(1 << 20, Deflate(clientNoContext=True))
    assert parser.receive(deflatedFrame(big) + deflatedFrame(big)) == [(BINARY, big)]
    assert parser.backlog
    assert parser.receive(clientFrame(small, BINARY)) == [(BINARY, big)]
    assert parser.receive(b"") == [(BINARY, small)]
    assert not parser.backlog


def test_aBudgetOfSmallFramesStopsBetweenFrames() -> None:
    """Uncompressed frames too: a call stops once the budget is reached."""
    parser = FrameParser(1 << 20)
    parser.budget = 1000
    data = b"".join(clientFrame(b"x" * 100, BINARY) for _ in range(25))
    assert len(parser.receive(data)) == 10
    assert parser.backlog
    assert len(parser.receive(b"")) == 10
    assert len(parser.receive(b"")) == 5
    assert not parser.backlog
