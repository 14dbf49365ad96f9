"""Ordering, de-duplication and resume checks for lemond log entries (pure, no I/O).

lemond numbers every log entry with a ``seq`` that starts at 1 per process
(SPEC.md §5.2). Three things make a naive "print what arrives" client wrong:

* a live ``logs.entry`` can arrive *before* the ``logs.snapshot`` of the same
  subscription, and may also be inside it;
* after a reconnect the client must resume where it stopped, and must tell a normal
  resume from a lemond restart (seq starts again) and from a lost stretch (the
  5000-entry ring rolled over while the client was away);
* a second subscription on one socket duplicates every live entry.

Resume overlaps by one: the client subscribes with ``after_seq = last - 1``, so the
snapshot must start with the entry it already has. Inside one lemond process that
entry is either still in the ring (the snapshot contains it, with the same line) or
rolled out (the snapshot starts later: a gap). Any other answer — no entries at all,
or a different line under that seq — can only come from a new process: a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Delivery", "Outcome", "Sequencer"]

# How many recent (seq, line) pairs are kept to recognise duplicates. Duplicates come
# only from the overlap-by-one resume and the entry-before-snapshot race, so they are
# always close to the newest seq; anything further back means seq went backwards.
DEFAULT_WINDOW = 512


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    line: str
    observed_at: float


@dataclass(slots=True)
class Outcome:
    deliver: list[Delivery] = field(default_factory=list)
    # (first missing seq, first seq received after the hole)
    gap: tuple[int, int] | None = None
    restart: bool = False


class Sequencer:
    """Feed snapshot and live entries; get back what to deliver, in seq order, once."""

    def __init__(self, *, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._recent: OrderedDict[int, str] = OrderedDict()
        self.last = 0  # highest seq delivered; 0 before the first
        self._pending: list[Delivery] = []
        self._in_snapshot_wait = False
        self._resume_from = 0  # `last` when the current subscription was sent

    def reset(self) -> None:
        """Forget everything (after a lemond restart)."""
        self._recent.clear()
        self.last = 0
        self._pending.clear()
        self._in_snapshot_wait = False
        self._resume_from = 0

    def begin(self) -> int | None:
        """Start a subscription; returns the ``after_seq`` to send."""
        self._pending.clear()
        self._in_snapshot_wait = True
        self._resume_from = self.last
        return self.last - 1 if self.last > 0 else None

    @property
    def awaiting_snapshot(self) -> bool:
        return self._in_snapshot_wait

    # -- input ------------------------------------------------------------------------

    def on_snapshot(self, entries: Iterable[tuple[int, str]], observed_at: float) -> Outcome:
        merged: dict[int, Delivery] = {}
        for seq, line in entries:
            merged[seq] = Delivery(seq, line, observed_at)
        for d in self._pending:
            merged.setdefault(d.seq, d)  # the snapshot copy has the same content
        self._pending.clear()
        self._in_snapshot_wait = False
        ordered = [merged[s] for s in sorted(merged)]
        out = Outcome()
        last = self._resume_from
        if last > 0:
            if not ordered:
                out.restart = True
                return out
            same = merged.get(last)
            if same is not None and same.line != self._recent.get(last, same.line):
                out.restart = True
                return out
            if same is None and ordered[0].seq < last:
                out.restart = True
                return out
        for d in ordered:
            self._accept(d, out)
            if out.restart:
                return out
        return out

    def on_entry(self, seq: int, line: str, observed_at: float) -> Outcome:
        d = Delivery(seq, line, observed_at)
        if self._in_snapshot_wait:
            self._pending.append(d)
            return Outcome()
        out = Outcome()
        self._accept(d, out)
        return out

    # -- core -------------------------------------------------------------------------

    def _accept(self, d: Delivery, out: Outcome) -> None:
        if d.seq <= self.last:
            known = self._recent.get(d.seq)
            if known is None:
                # Far behind what was delivered (outside the duplicate window): a new process.
                if d.seq <= self.last - self._window or not self._recent:
                    out.restart = True
            elif known != d.line:
                out.restart = True
            return
        if self.last > 0 and d.seq > self.last + 1 and out.gap is None:
            out.gap = (self.last + 1, d.seq)
        self.last = d.seq
        self._recent[d.seq] = d.line
        if len(self._recent) > self._window:
            self._recent.popitem(last=False)
        out.deliver.append(d)
