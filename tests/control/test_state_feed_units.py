"""``slot.state`` events: every change published, a slot's ready ↔ serving flips coalesced.

A fake clock and a scheduler the test runs by hand: no sleeps. Every test also checks what a
subscriber sees is consistent: each event's ``previous`` is the state the one before it told.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from hal0proxy.config import SlotConfig
from hal0proxy.control.journal import Journal
from hal0proxy.control.registry import SlotRegistry
from hal0proxy.control.state_feed import FLIP_INTERVAL_S, SlotStateFeed
from hal0proxy.lemond.events import ModelLoaded
from hal0proxy.slots.signals import RequestFinished, RequestStarted, UnloadRequested
from hal0proxy.slots.state import SlotState

S = SlotState


class Later:
    """call_later by hand: ``run()`` fires what is due by the fake clock."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.queue: list[tuple[float, Callable[[], None], Handle]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> Handle:
        handle = Handle()
        self.queue.append((self.clock[0] + delay, callback, handle))
        return handle

    def run(self) -> None:
        """Fire what is due by now, each at its own time (as the event loop would)."""
        now = self.clock[0]
        due = sorted((item for item in self.queue if item[0] <= now), key=lambda item: item[0])
        self.queue = [item for item in self.queue if item[0] > now]
        for when, callback, handle in due:
            if not handle.cancelled:
                self.clock[0] = when
                callback()
        self.clock[0] = now


class Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def setup() -> tuple[SlotRegistry, Journal, list[float], Later]:
    clock = [100.0]
    journal = Journal()
    later = Later(clock)
    feed = SlotStateFeed(journal, lambda: clock[0], later)
    registry = SlotRegistry((SlotConfig(name="primary", model="m"),), on_change=feed.changed)
    registry.apply_event(ModelLoaded(model="m", port=8001, pid=7, observed_at=clock[0]))
    return registry, journal, clock, later


def states(journal: Journal) -> list[tuple[str, str]]:
    return [(e["previous"], e["state"]) for e in journal.recent if e["type"] == "slot.state"]


def assert_consistent(seen: list[tuple[str, str]]) -> None:
    for (_, told), (previous, _) in itertools.pairwise(seen):
        assert previous == told, seen


def request(registry: SlotRegistry, clock: list[float], at: float) -> None:
    slot = registry.get("primary")
    assert slot is not None
    clock[0] = at
    registry.signal(slot, RequestStarted(), at)
    registry.signal(slot, RequestFinished(), at + 0.0003)


def test_back_to_back_requests_publish_one_flip_then_the_state_they_end_in() -> None:
    registry, journal, clock, later = setup()
    start = len(states(journal))
    for i in range(100):  # 100 requests in 0.1 s: 200 flips
        request(registry, clock, 100.0 + i * 0.001)
    seen = states(journal)[start:]
    assert seen == [("ready", "serving")]  # the first flip at once; the rest wait for the interval
    clock[0] = 100.0 + FLIP_INTERVAL_S
    later.run()
    seen = states(journal)[start:]
    assert seen == [("ready", "serving"), ("serving", "ready")]  # the state the slot ends in
    assert_consistent(states(journal))


def test_flips_further_apart_than_the_interval_are_each_published() -> None:
    registry, journal, clock, later = setup()
    start = len(states(journal))
    for i in range(3):
        clock[0] = 100.0 + i * (2 * FLIP_INTERVAL_S + 0.01)
        later.run()  # what falls due before this request (as the event loop would)
        request(registry, clock, clock[0])
    # each request: serving at once; ready one interval later (its flip came 0.3 ms after); the
    # next request comes more than an interval after that
    clock[0] += FLIP_INTERVAL_S
    later.run()
    seen = states(journal)[start:]
    assert seen == [("ready", "serving"), ("serving", "ready")] * 3
    assert_consistent(states(journal))


def test_a_slot_back_in_the_state_last_told_publishes_nothing_more() -> None:
    registry, journal, clock, later = setup()
    slot = registry.get("primary")
    assert slot is not None
    start = len(states(journal))
    registry.signal(slot, RequestStarted(), clock[0])  # told: serving
    registry.signal(slot, RequestFinished(), clock[0])  # waits
    registry.signal(slot, RequestStarted(), clock[0])  # serving again
    clock[0] += FLIP_INTERVAL_S
    later.run()
    assert states(journal)[start:] == [("ready", "serving")]
    assert slot.status.state is S.SERVING


def test_any_other_change_first_publishes_the_flip_it_overtakes() -> None:
    registry, journal, clock, later = setup()
    slot = registry.get("primary")
    assert slot is not None
    start = len(states(journal))
    registry.signal(slot, RequestStarted(), clock[0])  # told: serving
    registry.signal(slot, RequestFinished(), clock[0])  # ready, waiting for the interval
    registry.signal(slot, UnloadRequested(), clock[0])  # ready -> unloading: not a flip
    seen = states(journal)[start:]
    assert seen == [("ready", "serving"), ("serving", "ready"), ("ready", "unloading")]
    clock[0] += FLIP_INTERVAL_S
    later.run()  # the cancelled trailing publish adds nothing
    assert states(journal)[start:] == seen
    assert_consistent(states(journal))


def test_without_a_running_loop_every_flip_is_published() -> None:
    journal = Journal()
    feed = SlotStateFeed(journal, lambda: 1.0)  # the default scheduler needs a running loop
    registry = SlotRegistry((SlotConfig(name="primary", model="m"),), on_change=feed.changed)
    registry.apply_event(ModelLoaded(model="m", port=8001, pid=7, observed_at=1.0))
    slot = registry.get("primary")
    assert slot is not None
    for _ in range(3):
        registry.signal(slot, RequestStarted(), 1.0)
        registry.signal(slot, RequestFinished(), 1.0)
    flips: list[Any] = [s for s in states(journal) if "serving" in s]
    assert len(flips) == 6
    assert_consistent(states(journal))
