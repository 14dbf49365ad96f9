"""The dispatch decision as a table: every slot state by route by cold-start policy, in-process."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hal0proxy.slots.dispatch import (
    ColdStart,
    DispatchPolicy,
    DispatchSlot,
    Forward,
    Reject,
    Unresolved,
    Wait,
    decide,
    refuse_unresolved,
)
from hal0proxy.slots.state import SlotState

S = SlotState
WAIT = DispatchPolicy(ColdStart.WAIT, max_wait_s=30.0)
REJECT = DispatchPolicy(ColdStart.REJECT, max_wait_s=30.0)
NO_WAIT = DispatchPolicy(ColdStart.WAIT, max_wait_s=0.0)
NOW = 1000.0


@dataclass(frozen=True)
class R:
    port: int = 8001
    alive: bool = True
    proven: bool = True


def slot(state: SlotState, in_flight: int = 0, pinned: bool = False, retry: int = 7) -> DispatchSlot:
    return DispatchSlot("primary", "Qwen3-0.6B-GGUF", state, in_flight, pinned, retry)


def loading(state: SlotState, retry: int = 7) -> Reject:
    state = S.STARTING if state is S.OFFLINE else state  # the answer itself starts the load
    return Reject(
        503,
        "slot.loading",
        f"slot 'primary' is {state}, not ready to serve yet",
        retry,
        {
            "slot": "primary",
            "state": str(state),
            "retry_after_s": retry,
            "progress": {"phase": str(state), "requested_model": "Qwen3-0.6B-GGUF"},
        },
        start_load=True,
    )


FORWARDING_STATES = [s for s in SlotState if s is not S.UNLOADING]


@pytest.mark.parametrize("state", FORWARDING_STATES)
@pytest.mark.parametrize("policy", [WAIT, REJECT, NO_WAIT], ids=["wait", "reject", "max_wait_0"])
def test_a_live_proven_route_is_forwarded_in_every_state_but_unloading(
    state: SlotState, policy: DispatchPolicy
) -> None:
    assert decide(slot(state), R(), policy, NOW) == Forward(8001, hold_in_lemond=True)


@pytest.mark.parametrize("policy", [WAIT, REJECT], ids=["wait", "reject"])
def test_unloading_is_never_forwarded_even_with_a_live_route(policy: DispatchPolicy) -> None:
    decision = decide(slot(S.UNLOADING), R(), policy, NOW)
    assert decision == (Wait(NOW + 30.0) if policy is WAIT else loading(S.UNLOADING))


NO_ROUTES = [None, R(alive=False), R(proven=False), R(alive=False, proven=False)]


@pytest.mark.parametrize("state", list(SlotState))
@pytest.mark.parametrize("route", NO_ROUTES, ids=["none", "dead", "unproven", "dead-unproven"])
def test_without_a_usable_route_wait_mode_waits_until_arrival_plus_max_wait(state: SlotState, route: R | None) -> None:
    assert decide(slot(state), route, WAIT, NOW) == Wait(NOW + 30.0)
    # Deciding again later keeps the deadline of the request's arrival, not of this call.
    assert decide(slot(state), route, WAIT, NOW + 10.0, arrived=NOW) == Wait(NOW + 30.0)


@pytest.mark.parametrize("state", list(SlotState))
@pytest.mark.parametrize("route", NO_ROUTES, ids=["none", "dead", "unproven", "dead-unproven"])
def test_without_a_usable_route_reject_mode_answers_503_loading_and_still_loads(
    state: SlotState, route: R | None
) -> None:
    assert decide(slot(state), route, REJECT, NOW) == loading(state)


@pytest.mark.parametrize("state", [S.OFFLINE, S.STARTING, S.WARMING, S.ERROR])
def test_the_wait_ends_at_the_deadline_with_503_loading(state: SlotState) -> None:
    assert decide(slot(state), None, WAIT, NOW + 29.999, arrived=NOW) == Wait(NOW + 30.0)
    assert decide(slot(state), None, WAIT, NOW + 30.0, arrived=NOW) == loading(state)
    assert decide(slot(state), None, WAIT, NOW + 500.0, arrived=NOW) == loading(state)
    assert decide(slot(state), None, NO_WAIT, NOW) == loading(state)


def test_a_route_that_appears_during_the_wait_is_forwarded_even_past_the_deadline() -> None:
    assert decide(slot(S.READY), R(port=8003), WAIT, NOW + 31.0, arrived=NOW) == Forward(8003, True)


def test_retry_after_is_the_slots_estimate() -> None:
    decision = decide(slot(S.STARTING, retry=42), None, REJECT, NOW)
    assert isinstance(decision, Reject) and decision.retry_after_s == 42 and decision.details["retry_after_s"] == 42


@pytest.mark.parametrize(
    ("in_flight", "pinned", "hold"),
    [(0, False, True), (3, False, False), (0, True, False), (2, True, False)],
)
def test_only_the_first_request_on_an_unpinned_slot_asks_lemond_to_hold_the_model(
    in_flight: int, pinned: bool, hold: bool
) -> None:
    assert decide(slot(S.SERVING, in_flight, pinned), R(), WAIT, NOW) == Forward(8001, hold_in_lemond=hold)


@pytest.mark.parametrize("pinned", [False, True])
def test_pinning_does_not_change_whether_a_request_waits_or_is_rejected(pinned: bool) -> None:
    assert decide(slot(S.OFFLINE, pinned=pinned), None, WAIT, NOW) == Wait(NOW + 30.0)
    assert decide(slot(S.OFFLINE, pinned=pinned), None, REJECT, NOW) == loading(S.OFFLINE)


@pytest.mark.parametrize("route", [None, R()])
@pytest.mark.parametrize("policy", [WAIT, REJECT], ids=["wait", "reject"])
def test_unresolved_requests(route: R | None, policy: DispatchPolicy) -> None:
    missing = decide(Unresolved(None), route, policy, NOW)
    assert missing == Reject(400, "request.missing_model", "request has no 'model' and no default slot applies")
    unknown = decide(Unresolved("nope"), route, policy, NOW)
    assert unknown == Reject(404, "dispatch.no_route", "no slot or lemond model named 'nope'", None, {"model": "nope"})
    down = decide(Unresolved("nope", lemond_reachable=False, lemond_retry_after_s=4), route, policy, NOW)
    assert isinstance(down, Reject)
    assert (down.status, down.code, down.retry_after_s, down.start_load) == (503, "lemond.unavailable", 4, False)
    assert not unknown.start_load and not missing.start_load
    assert refuse_unresolved(Unresolved("nope")) == unknown


def test_decide_reads_no_clock() -> None:
    """The same facts give the same answer, whatever the wall or monotonic clock says."""
    facts = slot(S.STARTING)
    assert decide(facts, None, WAIT, 5.0) == decide(facts, None, WAIT, 5.0) == Wait(35.0)
