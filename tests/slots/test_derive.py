"""The slot reducer: rules one by one, then random histories against a reference model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.slots import state as state_mod
from hal0proxy.slots.derive import MSG_CRASHED, MSG_EVICTED, SlotStatus, reduce
from hal0proxy.slots.policy import SlotView, UnloadAction, idle_unload_candidates
from hal0proxy.slots.signals import (
    ChildGone,
    ChildUp,
    IdleTick,
    LoadBegan,
    LoadError,
    LoadRequested,
    PullBegan,
    RequestFinished,
    RequestStarted,
    Resync,
    Signal,
    UnloadRequested,
)
from hal0proxy.slots.state import SlotState

S = SlotState


def fold(signals: list[tuple[Signal, float]], status: SlotStatus | None = None) -> SlotStatus:
    status = status or SlotStatus(model="m")
    for signal, now in signals:
        status = reduce(status, signal, now)
    return status


def ready(now: float = 10.0) -> SlotStatus:
    return fold([(LoadRequested(), 1.0), (LoadBegan(), 2.0), (ChildUp(8001, 42), now)])


# -- rules ---------------------------------------------------------------------------


def test_load_goes_starting_warming_ready() -> None:
    s = SlotStatus(model="m")
    s = reduce(s, LoadRequested(), 1.0)
    assert s.state is S.STARTING and s.updated_at == 1.0
    s = reduce(s, LoadBegan(), 2.0)
    assert s.state is S.WARMING
    s = reduce(s, ChildUp(8001, 42), 3.0)
    assert (s.state, s.port, s.pid, s.updated_at) == (S.READY, 8001, 42, 3.0)


def test_child_up_from_offline_walks_the_chain() -> None:
    # lemond auto-loaded the model on its own: the slot follows.
    s = reduce(SlotStatus(), ChildUp(8002), 1.0)
    assert (s.state, s.port) == (S.READY, 8002)


def test_first_request_serves_last_finish_readies() -> None:
    s = ready()
    s = reduce(s, RequestStarted(), 11.0)
    s = reduce(s, RequestStarted(), 12.0)
    assert (s.state, s.in_flight, s.last_used) == (S.SERVING, 2, 12.0)
    s = reduce(s, RequestFinished(), 13.0)
    assert (s.state, s.in_flight) == (S.SERVING, 1)
    s = reduce(s, RequestFinished(), 14.0)
    assert (s.state, s.in_flight, s.last_used) == (S.READY, 0, 14.0)
    s = reduce(s, RequestFinished(), 15.0)  # a stray finish never goes negative
    assert s.in_flight == 0


def test_idle_after_timeout_and_back() -> None:
    s = reduce(ready(10.0), RequestFinished(), 20.0)
    assert reduce(s, IdleTick(30), 49.0).state is S.READY
    assert reduce(s, IdleTick(0), 10_000.0).state is S.READY  # 0 = never
    s = reduce(s, IdleTick(30), 50.0)
    assert s.state is S.IDLE
    s = reduce(s, RequestStarted(), 51.0)
    assert s.state is S.SERVING


def test_idle_timer_of_a_never_used_slot_starts_when_it_became_ready() -> None:
    s = ready(10.0)
    assert reduce(s, IdleTick(5), 14.0).state is S.READY
    assert reduce(s, IdleTick(5), 15.0).state is S.IDLE


def test_a_never_used_slot_is_due_for_idle_unload_one_timeout_after_it_became_ready() -> None:
    # Going idle must not restart the quiet period: the unload is due at ready + timeout, not
    # at ready + twice the timeout.
    s = reduce(ready(10.0), IdleTick(5), 15.0)
    assert (s.state, s.quiet_since()) == (S.IDLE, 10.0)
    view = SlotView(name="a", status=s, idle_timeout_s=5)
    assert idle_unload_candidates([view], now=15.0) == [UnloadAction("a", s.model, "idle")]


def test_a_new_child_starts_a_new_quiet_period() -> None:
    # A child that served at 11 and died is replaced at 50: the replacement is not idle at 60
    # because of the old child's last request.
    s = reduce(reduce(ready(10.0), RequestStarted(), 11.0), RequestFinished(), 11.0)
    s = reduce(reduce(s, ChildGone("crash", True), 20.0), LoadBegan(), 40.0)
    s = reduce(s, ChildUp(8002, 7), 50.0)
    assert (s.state, s.quiet_since()) == (S.READY, 50.0)
    assert reduce(s, IdleTick(30), 60.0).state is S.READY
    assert reduce(s, IdleTick(30), 80.0).state is S.IDLE
    # The same after a slot went idle without serving and its load failed and was retried.
    s = reduce(ready(0.0), IdleTick(5), 5.0)
    s = reduce(reduce(s, LoadError("boom"), 5.0), ChildUp(8001, None), 5.0)
    assert reduce(s, IdleTick(5), 5.0).state is S.READY


def test_eviction_is_offline_not_error() -> None:
    s = reduce(ready(), RequestStarted(), 11.0)
    s = reduce(s, ChildGone("lru"), 12.0)
    assert (s.state, s.port, s.pid, s.message, s.error) == (S.OFFLINE, None, None, MSG_EVICTED, None)
    assert s.in_flight == 1  # the request is still accounted until it finishes
    s = reduce(s, RequestFinished(), 13.0)
    assert (s.state, s.in_flight) == (S.OFFLINE, 0)


def test_crash_is_offline_with_its_own_message() -> None:
    s = reduce(ready(), ChildGone("crash", crashed=True), 12.0)
    assert (s.state, s.message) == (S.OFFLINE, MSG_CRASHED)


def test_failed_load_is_error_then_recovers() -> None:
    s = reduce(reduce(SlotStatus(), LoadRequested(), 1.0), LoadError("boom"), 2.0)
    assert (s.state, s.error, s.message) == (S.ERROR, "boom", "boom")
    s = reduce(s, LoadRequested(), 3.0)
    assert s.state is S.STARTING
    s = reduce(s, ChildUp(8001), 4.0)
    assert (s.state, s.error) == (S.READY, None)


def test_unload_goes_through_unloading() -> None:
    s = reduce(ready(), UnloadRequested(), 11.0)
    assert s.state is S.UNLOADING
    s = reduce(s, ChildGone("manual"), 12.0)
    assert s.state is S.OFFLINE


def test_old_child_loss_does_not_interrupt_a_load() -> None:
    s = reduce(SlotStatus(), LoadRequested(), 1.0)
    s = reduce(s, ChildGone("manual"), 2.0)  # options changed: the old child is evicted first
    assert s.state is S.STARTING


def test_resync() -> None:
    assert reduce(SlotStatus(), Resync(True, 8005, 7), 1.0).state is S.READY
    s = reduce(ready(), Resync(True, 8009, 9), 11.0)
    assert (s.state, s.port, s.pid) == (S.READY, 8009, 9)
    s = reduce(s, Resync(False), 12.0)
    assert (s.state, s.message) == (S.OFFLINE, MSG_EVICTED)
    loading = reduce(SlotStatus(), LoadBegan(), 1.0)
    assert reduce(loading, Resync(False), 2.0) is loading  # not in /v1/health yet


def test_noop_returns_the_same_object() -> None:
    s = SlotStatus()
    assert reduce(s, RequestFinished(), 1.0) == SlotStatus(last_used=1.0)
    assert reduce(s, UnloadRequested(), 1.0) is s
    assert reduce(s, IdleTick(5), 1.0) is s


# -- property: random histories vs an independent reference model ------------------


@dataclass
class Ref:
    """The rules restated as plain tables, independently of ``derive``."""

    state: S = S.OFFLINE
    in_flight: int = 0
    port: int | None = None
    last_used: float | None = None
    changed_at: float = 0.0

    NOT_LOADED = frozenset({S.OFFLINE, S.ERROR, S.PULLING, S.STARTING, S.WARMING})
    LIVE = frozenset({S.READY, S.SERVING, S.IDLE, S.UNLOADING})

    def go(self, target: S, now: float) -> None:
        if target is not self.state:
            self.state, self.changed_at = target, now

    def step(self, sig: Signal, now: float) -> None:
        st_ = self.state
        if isinstance(sig, PullBegan):
            if st_ in (S.OFFLINE, S.ERROR):
                self.go(S.PULLING, now)
        elif isinstance(sig, LoadRequested):
            if st_ in (S.OFFLINE, S.ERROR, S.PULLING):
                self.go(S.STARTING, now)
        elif isinstance(sig, LoadBegan):
            if st_ in (S.OFFLINE, S.ERROR, S.PULLING, S.STARTING):
                self.go(S.WARMING, now)
        elif isinstance(sig, ChildUp) or (isinstance(sig, Resync) and sig.present):
            if sig.port is not None:
                self.port = sig.port
            if st_ in self.NOT_LOADED:
                self.last_used = None  # a new child: its quiet period starts now
                self.go(S.SERVING if self.in_flight else S.READY, now)
        elif isinstance(sig, ChildGone):
            self.port = None
            if st_ in self.LIVE:
                self.go(S.OFFLINE, now)
        elif isinstance(sig, Resync):  # absent
            if st_ in self.LIVE:
                self.port = None
                self.go(S.OFFLINE, now)
        elif isinstance(sig, LoadError):
            self.port = None
            self.go(S.ERROR, now)
        elif isinstance(sig, UnloadRequested):
            if st_ in (S.READY, S.IDLE, S.SERVING):
                self.go(S.UNLOADING, now)
        elif isinstance(sig, RequestStarted):
            self.in_flight += 1
            self.last_used = now
            if st_ in (S.READY, S.IDLE):
                self.go(S.SERVING, now)
        elif isinstance(sig, RequestFinished):
            self.in_flight = max(0, self.in_flight - 1)
            self.last_used = now
            if st_ is S.SERVING and self.in_flight == 0:
                self.go(S.READY, now)
        elif isinstance(sig, IdleTick):
            quiet_since = self.last_used if self.last_used is not None else self.changed_at
            if st_ is S.READY and self.in_flight == 0 and sig.idle_timeout_s > 0:
                if now - quiet_since >= sig.idle_timeout_s:
                    self.last_used = quiet_since  # going idle does not restart the quiet period
                    self.go(S.IDLE, now)


PORTS = st.integers(8001, 8004)
SIGNALS = st.one_of(
    st.just(PullBegan()),
    st.just(LoadRequested()),
    st.just(LoadBegan()),
    st.builds(ChildUp, PORTS, st.one_of(st.none(), st.integers(1, 5))),
    st.builds(ChildGone, st.sampled_from(["lru", "idle", "manual", "nuclear", "crash"]), st.booleans()),
    st.builds(LoadError, st.sampled_from(["boom", "file not found"])),
    st.just(UnloadRequested()),
    st.just(RequestStarted()),
    st.just(RequestFinished()),
    st.builds(IdleTick, st.sampled_from([0.0, 5.0, 30.0])),
    st.builds(Resync, st.booleans(), st.one_of(st.none(), PORTS), st.none()),
)
HISTORY = st.lists(st.tuples(SIGNALS, st.floats(0, 40, allow_nan=False)), max_size=60)


@contextmanager
def recorded_transitions() -> Iterator[list[tuple[S, S, bool]]]:
    calls: list[tuple[S, S, bool]] = []
    real = state_mod.apply_transition

    def spy(current: S, target: S, *, forced: bool = False) -> S:
        calls.append((current, target, forced))
        return real(current, target, forced=forced)

    with mock.patch.object(state_mod, "apply_transition", spy):
        yield calls


@settings(max_examples=300, deadline=None)
@given(HISTORY)
def test_random_histories_match_the_reference_and_stay_legal(history: list[tuple[Signal, float]]) -> None:
    status, ref, now = SlotStatus(model="m"), Ref(), 0.0
    with recorded_transitions() as calls:
        for signal, dt in history:
            now += dt
            before = status.state
            calls.clear()
            status = reduce(status, signal, now)
            ref.step(signal, now)
            assert (status.state, status.in_flight, status.port) == (ref.state, ref.in_flight, ref.port), signal
            ref_quiet = ref.last_used if ref.last_used is not None else ref.changed_at
            assert status.quiet_since() == ref_quiet, signal
            # Every step was checked by the table, and only the documented jumps were forced.
            for current, target, forced in calls:
                assert state_mod.is_transition_legal(current, target, forced=forced)
                if forced and not state_mod.is_transition_legal(current, target):
                    assert target in state_mod.FORCED_TRANSITIONS[current]
            # A state change happened only through those checked steps, as one chain.
            if status.state is not before:
                assert calls, f"{before} -> {status.state} bypassed apply_transition"
                assert calls[0][0] is before and calls[-1][1] is status.state
                assert all(a[1] is b[0] for a, b in itertools.pairwise(calls))
                assert status.updated_at == now
            assert status.dispatchable is state_mod.is_dispatchable(status.state)
            assert status.port is None or status.state is not S.ERROR


def test_request_counting_keeps_every_other_field() -> None:
    """The hot path's direct constructor call must match ``_replace`` field for field."""
    from hal0proxy.slots.derive import _counted

    status = SlotStatus(
        state=SlotState.SERVING,
        model="m",
        port=8001,
        pid=7,
        message="msg",
        in_flight=3,
        last_used=1.5,
        updated_at=2.5,
        error="e",
    )
    assert set(SlotStatus._fields) == {
        "state",
        "model",
        "port",
        "pid",
        "message",
        "in_flight",
        "last_used",
        "updated_at",
        "error",
    }, "a new SlotStatus field must be carried by _counted"
    assert _counted(status, 4, 9.0) == status._replace(in_flight=4, last_used=9.0)
    moved = _counted(status, 0, 9.0, SlotState.READY)
    assert moved == status._replace(state=SlotState.READY, in_flight=0, last_used=9.0, updated_at=9.0)
