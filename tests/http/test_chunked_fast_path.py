"""``ChunkedScanner.feed``'s whole-chunk fast path against the full state machine.

With ``collect_payload`` the scanner never takes the fast path, so the same reads fed to a
collecting and a plain scanner must give the same answers: bytes used, chunk counts,
boundaries, and the same ``FramingError`` (message and ``valid_bytes``) at the same read.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.http.framing import ChunkedScanner, FramingError

EVENT = b'data: {"choices":[{"delta":{"content":" fox"}}],"emu_t_ns":123}\n\n'


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _run(scanner: ChunkedScanner, reads: list[bytes]) -> list[object]:
    out: list[object] = []
    for data in reads:
        try:
            out.append(("used", scanner.feed(data), scanner.chunks, scanner.done, scanner.at_boundary))
        except FramingError as exc:
            out.append(("error", exc.message, exc.valid_bytes))
            break
    return out


def _same(reads: list[bytes]) -> list[object]:
    fast = _run(ChunkedScanner(), reads)
    assert fast == _run(ChunkedScanner(collect_payload=True), reads)
    return fast


def test_events_one_per_read_and_many_per_read() -> None:
    events = [_chunk(EVENT) for _ in range(5)]
    assert _same(events) == [("used", len(events[0]), n + 1, False, True) for n in range(5)]
    burst = b"".join(events) + b"0\r\n\r\nNEXT"
    assert _same([burst]) == [("used", len(burst) - 4, 5, True, False)]  # done: no longer between chunks


def test_a_fault_after_good_chunks_reports_the_boundary() -> None:
    good = _chunk(EVENT) * 2
    assert _same([good + b"5\r\nhelloXX"]) == [("error", "chunk data not followed by CRLF", len(good))]
    assert _same([good + b"0x5\r\nhello\r\n"])[0][0:2] == ("error", "invalid chunk size b'0x5'")
    assert _same([good + b"\r\n"]) == [("error", "invalid chunk size b''", len(good))]
    assert _same([good + b"1" * 17 + b"\r\n"])[0][0] == "error"


_PIECES = st.sampled_from(
    [
        _chunk(EVENT),
        _chunk(b"x"),
        b"A\r\n0123456789\r\n",
        b"a;ext=1\r\n0123456789\r\n",
        b"00000005\r\nhello\r\n",
        b"5\r\nhello",  # no CRLF after the data
        b"5 \r\nhello\r\n",
        b"5\nhello\r\n",
        b"-5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"0\r\nTrailer: x\r\n\r\n",
        b"\r\n",
        b"garbage",
    ]
)


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_PIECES, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_stream_cut_anywhere_scans_like_the_state_machine(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    bounds = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    reads = [data[a:b] for a, b in itertools.pairwise(bounds)]
    _same(reads)
