"""``Room`` on its own: the unloads it chooses and issues, against a stand-in adapter.

The choices are ``slots.policy``'s (tested there); these tests check that ``Room`` carries
them out: which model it unloads, what it journals and counts, when it refuses, and that
the idle policy leaves a model alone while it is loading.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hal0proxy.config import SlotConfig
from hal0proxy.control.attribution import UnloadLedger
from hal0proxy.control.journal import Journal
from hal0proxy.control.recovery import LoadFailure
from hal0proxy.control.room import Room
from hal0proxy.control.shared import ControlShared
from hal0proxy.slots.signals import RequestFinished, RequestStarted
from hal0proxy.slots.state import SlotState

from .fakes import Clock, FakeAdapter, mark_loaded, slots

A, B, C = "Model-A-GGUF", "Model-B-GGUF", "Model-C-GGUF"


def room(max_models: int, *specs: SlotConfig, loading: set[str] | None = None) -> tuple[Any, ...]:
    cfg, registry = slots(*specs)
    adapter = FakeAdapter(registry, {"llm": max_models})
    journal, clock, ledger = Journal(), Clock(), UnloadLedger()
    told: list[str] = []
    busy = loading or set()
    shared = ControlShared(adapter, registry, journal, lambda: cfg, clock)  # type: ignore[arg-type]
    obj = Room(shared, ledger, is_loading=lambda model: model in busy, on_unload=told.append)
    return obj, registry, adapter, journal, clock, ledger, told


async def test_a_full_pool_loses_its_least_recently_used_quiet_model() -> None:
    obj, registry, adapter, journal, clock, ledger, told = room(
        2, SlotConfig(name="a", model=A), SlotConfig(name="b", model=B), SlotConfig(name="c", model=C)
    )
    mark_loaded(registry, A, 8001, at=clock.now - 20)  # quiet longest: the victim
    mark_loaded(registry, B, 8002, at=clock.now - 10)
    target = registry.get("c")
    assert target is not None
    await obj.make_room(target, "llm")
    assert adapter.client.unloaded == [A]
    assert obj.unloads_issued == {"room": 1} and told == ["room"]
    assert A in ledger  # lemond's eviction line for A will be the proxy's doing
    assert [e["victim"] for e in journal.recent if e["type"] == "slot.unloaded_for_room"] == ["a"]
    assert adapter.refreshes >= 1  # the route is refreshed, not left to the log line


async def test_a_pool_with_room_unloads_nothing() -> None:
    obj, registry, adapter, *_ = room(2, SlotConfig(name="a", model=A), SlotConfig(name="c", model=C))
    mark_loaded(registry, A, 8001, at=900.0)
    target = registry.get("c")
    assert target is not None
    await obj.make_room(target, "llm")
    assert adapter.client.unloaded == [] and obj.unloads_issued == {}


async def test_when_every_occupant_serves_the_wait_ends_in_load_failure_not_an_unload() -> None:
    obj, registry, adapter, _journal, clock, *_ = room(
        1, SlotConfig(name="a", model=A), SlotConfig(name="c", model=C, max_wait_s=0.0)
    )
    mark_loaded(registry, A, 8001, at=clock.now - 5)
    serving = registry.get("a")
    assert serving is not None
    registry.signal(serving, RequestStarted(), clock.now)
    assert serving.status.state is SlotState.SERVING
    target = registry.get("c")
    assert target is not None
    with pytest.raises(LoadFailure, match="every llm slot is serving"):
        await obj.make_room(target, "llm")
    assert adapter.client.unloaded == []  # a serving child is never unloaded for room


async def test_an_unload_lemond_answers_404_is_withdrawn_from_the_ledger() -> None:
    obj, registry, adapter, _journal, _clock, ledger, told = room(1, SlotConfig(name="a", model=A))
    mark_loaded(registry, A, 8001, at=900.0)
    adapter.client.not_loaded.add(A)
    await obj.unload(A, "manual")
    assert adapter.client.unloaded == [A] and told == ["manual"]
    assert A not in ledger  # no eviction line follows a 404, so nothing to claim
    slot = registry.get("a")
    assert slot is not None and slot.status.state is SlotState.UNLOADING


async def test_the_idle_pass_unloads_slots_quiet_past_their_timeout() -> None:
    obj, registry, adapter, journal, clock, _ledger, told = room(
        4, SlotConfig(name="a", model=A, idle_timeout_s=30), SlotConfig(name="b", model=B, idle_timeout_s=300)
    )
    mark_loaded(registry, A, 8001, at=clock.now)
    mark_loaded(registry, B, 8002, at=clock.now)
    for slot in registry.all():  # used once: the quiet period runs from the request's end
        registry.signal(slot, RequestStarted(), clock.now)
        registry.signal(slot, RequestFinished(), clock.now)
    await obj.idle_pass()
    assert adapter.client.unloaded == []  # nobody is idle yet
    clock.now += 31
    await obj.idle_pass()
    assert adapter.client.unloaded == [A] and told == ["idle"]
    [entry] = [e for e in journal.recent if e["type"] == "slot.evicted_by_idle_policy"]
    assert (entry["slot"], entry["idle_s"]) == ("a", 31.0)
    clock.now += 300
    await obj.idle_pass()
    assert adapter.client.unloaded == [A, B]


async def test_the_idle_pass_leaves_a_loading_model_alone() -> None:
    obj, registry, adapter, _journal, clock, *_ = room(4, SlotConfig(name="a", model=A, idle_timeout_s=30), loading={A})
    mark_loaded(registry, A, 8001, at=clock.now)
    clock.now += 60
    await obj.idle_pass()
    assert adapter.client.unloaded == []


async def test_note_quiet_wakes_an_unload_waiting_for_its_requests() -> None:
    obj, registry, adapter, _journal, clock, *_ = room(1, SlotConfig(name="a", model=A))
    mark_loaded(registry, A, 8001, at=clock.now)
    slot = registry.get("a")
    assert slot is not None
    registry.signal(slot, RequestStarted(), clock.now)
    unload = asyncio.get_running_loop().create_task(obj.unload(A, "manual"))
    await asyncio.sleep(0.01)
    assert not unload.done() and adapter.client.unloaded == []  # waits for the request in flight
    registry.signal(slot, RequestFinished(), clock.now)
    obj.note_quiet()
    await asyncio.wait_for(unload, 0.5)  # woken by the pulse, well before the 1 s recheck
    assert adapter.client.unloaded == [A]
