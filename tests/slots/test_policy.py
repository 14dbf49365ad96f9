"""Policy decisions: idle unload, making room, Retry-After, load-time history."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal0proxy.slots.derive import SlotStatus
from hal0proxy.slots.policy import (
    DEFAULT_LOAD_S,
    MAX_RETRY_AFTER_S,
    LoadTimes,
    SlotView,
    UnloadAction,
    WaitAction,
    choose_room_victim,
    idle_unload_candidates,
    retry_after_s,
)
from hal0proxy.slots.state import SlotState

S = SlotState


def view(
    name: str,
    state: S = S.READY,
    *,
    last_used: float | None = 0.0,
    in_flight: int = 0,
    idle_timeout_s: float = 0.0,
    pinned: bool = False,
    model: str | None = None,
    updated_at: float = 0.0,
) -> SlotView:
    status = SlotStatus(
        state=state, model=model or f"{name}-model", in_flight=in_flight, last_used=last_used, updated_at=updated_at
    )
    return SlotView(name=name, status=status, idle_timeout_s=idle_timeout_s, pinned=pinned)


# -- idle unload ----------------------------------------------------------------------


def test_idle_candidates() -> None:
    slots = [
        view("a", last_used=100.0, idle_timeout_s=60),  # quiet 100 s: due
        view("b", S.IDLE, last_used=50.0, idle_timeout_s=60),  # quiet 150 s: due, first
        view("c", last_used=190.0, idle_timeout_s=60),  # quiet 10 s
        view("d", last_used=0.0, idle_timeout_s=0),  # 0 = never
        view("e", S.SERVING, last_used=0.0, idle_timeout_s=60, in_flight=1),
        view("f", S.IDLE, last_used=0.0, idle_timeout_s=60, in_flight=1),  # idle flag but a request arrived
        view("g", S.WARMING, last_used=0.0, idle_timeout_s=60),
        view("h", last_used=0.0, idle_timeout_s=60, pinned=True),
        view("i", last_used=None, updated_at=10.0, idle_timeout_s=60),  # never used: since ready
    ]
    got = idle_unload_candidates(slots, now=200.0)
    assert got == [
        UnloadAction("i", "i-model", "idle"),
        UnloadAction("b", "b-model", "idle"),
        UnloadAction("a", "a-model", "idle"),
    ]


def test_idle_boundary_is_inclusive() -> None:
    slots = [view("a", last_used=100.0, idle_timeout_s=60)]
    assert idle_unload_candidates(slots, now=159.9) == []
    assert idle_unload_candidates(slots, now=160.0) == [UnloadAction("a", "a-model", "idle")]


# -- making room ----------------------------------------------------------------------


def test_room_available_or_unlimited() -> None:
    slots = [view("a"), view("b")]
    assert choose_room_victim(slots, 3, "new") is None
    assert choose_room_victim(slots, -1, "new") is None
    assert choose_room_victim([view("a", S.OFFLINE), view("b", S.ERROR)], 1, "new") is None


def test_model_already_resident_needs_no_room() -> None:
    slots = [view("a", model="new"), view("b")]
    assert choose_room_victim(slots, 1, "new") is None


def test_lru_quiet_slot_is_the_victim() -> None:
    slots = [
        view("a", last_used=30.0),
        view("b", S.IDLE, last_used=20.0),
        view("c", S.SERVING, last_used=1.0, in_flight=2),  # oldest but serving: never
        view("d", last_used=5.0, pinned=True),  # pinned: never
    ]
    assert choose_room_victim(slots, 4, "new") == UnloadAction("b", "b-model", "room")


def test_never_used_slot_goes_first_and_ties_break_by_name() -> None:
    slots = [view("z", last_used=None), view("y", last_used=None), view("x", last_used=1.0)]
    assert choose_room_victim(slots, 2, "new") == UnloadAction("y", "y-model", "room")


def test_all_candidates_busy_means_wait() -> None:
    slots = [
        view("a", S.SERVING, in_flight=1),
        view("b", S.READY, in_flight=1),  # request just dispatched
        view("c", S.WARMING),  # another load on its way
        view("d", S.UNLOADING),
    ]
    assert choose_room_victim(slots, 4, "new") == WaitAction(("a", "b", "c", "d"))


def test_unloading_slot_still_occupies_its_place() -> None:
    slots = [view("a", S.UNLOADING), view("b", S.SERVING, in_flight=1)]
    assert isinstance(choose_room_victim(slots, 2, "new"), WaitAction)
    assert choose_room_victim(slots, 3, "new") is None


# -- Retry-After ----------------------------------------------------------------------


def test_retry_after_default_before_any_measurement() -> None:
    assert retry_after_s([], None, 100.0) == DEFAULT_LOAD_S
    assert retry_after_s([], 98.0, 100.0) == 3


def test_retry_after_uses_the_median_and_elapsed_time() -> None:
    history = [10.0, 12.0, 100.0]  # one outlier
    assert retry_after_s(history, None, 0.0) == 12
    assert retry_after_s(history, 50.0, 54.5) == 8  # ceil(12 - 4.5)


def test_retry_after_bounds() -> None:
    assert retry_after_s([3.0], 0.0, 60.0) == 1  # overdue: at least 1
    assert retry_after_s([5000.0], None, 0.0) == MAX_RETRY_AFTER_S
    assert retry_after_s([float("nan"), -1.0], None, 0.0) == DEFAULT_LOAD_S  # garbage ignored


@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=10),
    st.one_of(st.none(), st.floats(-1e6, 1e6)),
    st.floats(-1e6, 1e6),
)
def test_retry_after_is_always_a_sane_int(history: list[float], started: float | None, now: float) -> None:
    value = retry_after_s(history, started, now)
    assert isinstance(value, int) and 1 <= value <= MAX_RETRY_AFTER_S


# -- LoadTimes ------------------------------------------------------------------------


def test_load_times_are_bounded_per_model_and_in_models() -> None:
    times = LoadTimes(per_model=3, max_models=2)
    for seconds in (1.0, 2.0, 3.0, 4.0):
        times.record("a", seconds)
    assert times.history("a") == (2.0, 3.0, 4.0)
    times.record("b", 9.0)
    times.record("a", 5.0)  # a is now the most recently recorded
    times.record("c", 7.0)  # evicts b
    assert times.history("b") == ()
    assert times.history("a") == (3.0, 4.0, 5.0)
    assert len(times) == 2
    times.record("c", float("inf"))  # ignored
    times.record("c", -3.0)  # ignored
    assert times.history("c") == (7.0,)
    assert times.retry_after_s("c", None, 0.0) == 7
    assert times.retry_after_s("unknown", None, 0.0) == DEFAULT_LOAD_S


def test_load_times_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        LoadTimes(per_model=0)
