"""The slot transition table and the one function that applies it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hal0proxy.slots.state import (
    FORCED_TRANSITIONS,
    LEGAL_TRANSITIONS,
    IllegalTransition,
    SlotState,
    apply_transition,
    is_dispatchable,
    is_transition_legal,
)

HAL0 = Path(__file__).resolve().parents[1] / "fixtures" / "hal0" / "slot_states.md"
ALL = list(SlotState)


def _hal0_table() -> dict[SlotState, frozenset[SlotState]]:
    # The "from | to" table of hal0's state module (tests/fixtures/hal0) (hal0's code, which wins over its docs).
    text = HAL0.read_text(encoding="utf-8")
    section = text[text.index("**LEGAL_TRANSITIONS**") :]
    table: dict[SlotState, frozenset[SlotState]] = {}
    for m in re.finditer(r"^\s*\|\s*([a-z]+)\s*\|\s*([a-z, ]+?)\s*\|\s*$", section, re.M):
        if m.group(1) == "from":
            continue
        table[SlotState(m.group(1))] = frozenset(SlotState(s.strip()) for s in m.group(2).split(","))
        if len(table) == len(ALL):
            break
    return table


def test_nine_states_with_wire_names() -> None:
    assert [s.value for s in ALL] == [
        "offline", "pulling", "starting", "warming", "ready", "serving", "idle", "unloading", "error",
    ]  # fmt: skip
    assert SlotState("serving") is SlotState.SERVING
    assert f"{SlotState.IDLE}" == "idle"


def test_table_is_hal0s_code_table() -> None:
    assert dict(LEGAL_TRANSITIONS) == _hal0_table()


def test_forced_transitions_are_only_the_documented_jumps() -> None:
    for current, targets in FORCED_TRANSITIONS.items():
        # A forced entry that is also legal would be noise; one leading to a live state would
        # let lemond's events fake a load.
        assert not targets & LEGAL_TRANSITIONS[current]
        assert targets <= {SlotState.OFFLINE, SlotState.ERROR, SlotState.UNLOADING}


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("target", ALL)
def test_apply_transition(current: SlotState, target: SlotState) -> None:
    legal = current is target or target in LEGAL_TRANSITIONS[current]
    forced_ok = legal or target in FORCED_TRANSITIONS.get(current, frozenset())
    assert is_transition_legal(current, target) is legal
    assert is_transition_legal(current, target, forced=True) is forced_ok
    if legal:
        assert apply_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition) as info:
            apply_transition(current, target)
        assert (info.value.current, info.value.target) == (current, target)
        assert current.value in str(info.value) and target.value in str(info.value)
    if forced_ok:
        assert apply_transition(current, target, forced=True) is target
    else:
        with pytest.raises(IllegalTransition):
            apply_transition(current, target, forced=True)


def test_same_state_is_a_noop_everywhere() -> None:
    for state in ALL:
        assert apply_transition(state, state) is state


def test_examples_from_the_lifecycle() -> None:
    with pytest.raises(IllegalTransition):
        apply_transition(SlotState.OFFLINE, SlotState.READY)  # a load must pass starting/warming
    with pytest.raises(IllegalTransition):
        apply_transition(SlotState.SERVING, SlotState.OFFLINE)  # only as a forced jump
    assert apply_transition(SlotState.SERVING, SlotState.OFFLINE, forced=True) is SlotState.OFFLINE
    with pytest.raises(IllegalTransition):
        apply_transition(SlotState.OFFLINE, SlotState.SERVING, forced=True)


def test_dispatchable_set() -> None:
    assert {s for s in ALL if is_dispatchable(s)} == {SlotState.READY, SlotState.SERVING, SlotState.IDLE}
