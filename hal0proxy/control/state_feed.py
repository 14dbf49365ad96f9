"""``slot.state`` events for the journal: every state change, a slot's request flips coalesced.

A slot flips ``ready → serving → ready`` around every request that finds it quiet, so one
client sending requests one after another made two events per request. Each event costs the
proxy tens of µs per subscriber (the status page is one), and a person watching cannot see a
state that lasted 300 µs anyway. So the flips of one slot (``ready ↔ serving``) are published
at most once per ``FLIP_INTERVAL_S``: the first at once, the state the slot ends the interval
in after it (trailing edge). Every other change is published at once, after the flip it
overtook, so a subscriber always ends on the slot's true state, and every event's
``previous`` is the state that subscriber was last told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from hal0proxy.control.journal import Journal
from hal0proxy.control.registry import Slot
from hal0proxy.slots.state import SlotState

__all__ = ["FLIP_INTERVAL_S", "SlotStateFeed"]

FLIP_INTERVAL_S = 0.25
_FLIPS = frozenset({(SlotState.READY, SlotState.SERVING), (SlotState.SERVING, SlotState.READY)})


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# (delay in seconds, callback) -> a handle; None when there is no running loop (publish at once)
Scheduler = Callable[[float, Callable[[], None]], Cancellable | None]


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay, callback)


class SlotStateFeed:
    def __init__(self, journal: Journal, clock: Callable[[], float], later: Scheduler = _call_later) -> None:
        self._journal = journal
        self._clock = clock
        self._later = later
        self._shown: dict[str, SlotState] = {}  # slot -> the state subscribers were last told
        self._flipped_at: dict[str, float] = {}  # slot -> when a flip was last published
        self._pending: dict[str, Cancellable] = {}  # slot -> the trailing publish of its flips

    def changed(self, slot: Slot, before: SlotState) -> None:
        """``slot`` changed state from ``before`` (its status holds the new one)."""
        name = slot.name
        if (before, slot.status.state) not in _FLIPS:
            self._catch_up(slot, before)
            self._publish(slot, before)
            return
        if name in self._pending:
            return  # the trailing publish tells the state the slot is in by then
        now = self._clock()
        last = self._flipped_at.get(name)
        if last is None or now - last >= FLIP_INTERVAL_S:
            self._flipped_at[name] = now
            self._publish(slot, before)
            return
        handle = self._later(last + FLIP_INTERVAL_S - now, lambda: self._flush(slot))
        if handle is None:
            self._publish(slot, before)
        else:
            self._pending[name] = handle

    def _flush(self, slot: Slot) -> None:
        self._pending.pop(slot.name, None)
        shown = self._shown.get(slot.name)
        if shown is not None and shown is not slot.status.state:
            self._flipped_at[slot.name] = self._clock()
            self._publish(slot, shown)

    def _catch_up(self, slot: Slot, before: SlotState) -> None:
        """A change that is not a flip: first tell subscribers the state it leaves (a flip still
        waiting for its interval), so ``previous`` is what they last saw."""
        handle = self._pending.pop(slot.name, None)
        if handle is None:
            return
        handle.cancel()
        shown = self._shown.get(slot.name)
        if shown is not None and shown is not before:
            self._tell(slot, shown, before)

    def _publish(self, slot: Slot, previous: SlotState) -> None:
        self._tell(slot, previous, slot.status.state)

    def _tell(self, slot: Slot, previous: SlotState, state: SlotState) -> None:
        status = slot.status
        self._journal.publish(
            "slot.state",
            slot=slot.name,
            model=slot.model,
            previous=str(previous),
            state=str(state),
            port=status.port,
            message=status.message,
        )
        self._shown[slot.name] = state
