"""``Recovery`` on its own, against a real ``LemondAdapter`` whose lemond is down.

lemond is an address nothing listens on (port 1: a refused loopback connect), as are the
"children" (an unused loopback port), so every answer here comes from the adapter's own
route table, its validator's real connect, and lemond's refusal.
"""

from __future__ import annotations

import socket
import time

import pytest

from hal0proxy.config import Config, SlotConfig
from hal0proxy.control.attribution import UnloadLedger
from hal0proxy.control.journal import Journal
from hal0proxy.control.recovery import LoadFailure, Recovery
from hal0proxy.control.registry import SlotRegistry
from hal0proxy.control.shared import ControlShared
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.events import LemondRestarted, ModelLoaded

M, W = "Qwen3-0.6B-GGUF", "Warm-Model-GGUF"
DOWN = "http://127.0.0.1:1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recovery() -> tuple[Recovery, LemondAdapter, SlotRegistry, Journal, UnloadLedger]:
    cfg = Config(slots=(SlotConfig(name="primary", model=M), SlotConfig(name="warm", model=W, warm=True)))
    adapter = LemondAdapter(DOWN, api_key=None)
    registry = SlotRegistry(cfg.slots)
    adapter.subscribe(registry.apply_event)
    journal, ledger = Journal(), UnloadLedger()
    shared = ControlShared(adapter, registry, journal, lambda: cfg, time.monotonic)
    return Recovery(shared, ledger), adapter, registry, journal, ledger


def loaded(adapter: LemondAdapter, model: str, port: int) -> None:
    adapter._publish(ModelLoaded(model=model, port=port, pid=42, observed_at=time.monotonic()))


async def test_a_hung_child_is_journaled_and_replaced_once() -> None:
    rec, adapter, registry, journal, _ = recovery()
    port = free_port()
    loaded(adapter, M, port)
    slot = registry.get("primary")
    assert slot is not None
    assert rec.child_hung(slot, port) is True  # the first report: the caller starts the load
    assert rec.child_hung(slot, port) is False  # already dead: no second replacement
    hung = [e for e in journal.recent if e["type"] == "slot.hang_detected"]
    assert [(e["slot"], e["port"]) for e in hung] == [("primary", port)] * 2
    route = adapter.routes.get(M)
    assert route is None or not route.alive


async def test_slots_to_warm_are_the_warm_slots_not_loaded() -> None:
    rec, adapter, *_ = recovery()
    assert [s.name for s in rec.slots_to_warm()] == ["warm"]
    loaded(adapter, W, free_port())
    assert rec.slots_to_warm() == []


async def test_a_lemond_restart_is_lemond_back_and_journaled() -> None:
    rec, _adapter, _registry, journal, _ = recovery()
    assert rec.lemond_back(ModelLoaded(model=M, port=8001)) is False
    assert rec.lemond_back(LemondRestarted()) is True
    assert [e["restarted"] for e in journal.recent if e["type"] == "lemond.back"] == [True]


async def test_relocate_with_lemond_and_the_child_down_is_503_lemond_unavailable() -> None:
    rec, adapter, registry, *_ = recovery()
    port = free_port()
    loaded(adapter, M, port)
    slot = registry.get("primary")
    assert slot is not None
    with pytest.raises(ProxyError) as err:
        await rec.relocate(slot, port)
    assert (err.value.status, err.value.code) == (503, "lemond.unavailable")
    assert err.value.retry_after_s == rec.lemond_retry_after() >= 1
    route = adapter.routes.get(M)
    assert route is None or not route.alive  # the dead child is marked dead


async def test_relocate_keeps_the_port_when_the_child_answers_though_lemond_is_down() -> None:
    rec, adapter, registry, *_ = recovery()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        loaded(adapter, M, port)
        slot = registry.get("primary")
        assert slot is not None
        assert await rec.relocate(slot, port) == port


async def test_clearing_a_dead_child_while_lemond_is_down_fails_the_load_with_503() -> None:
    rec, _adapter, registry, journal, ledger = recovery()
    slot = registry.get("primary")
    assert slot is not None
    with pytest.raises(LoadFailure) as err:
        await rec.unload_dead(slot)
    assert (err.value.status, err.value.code) == (503, "lemond.unavailable")
    assert rec.recoveries == 1
    assert [e["action"] for e in journal.recent if e["type"] == "slot.recovering"] == ["unload+load"]
    assert M in ledger  # asked: a late eviction line would be the proxy's doing


async def test_lemond_major_is_zero_while_unknown_and_no_adoption_warnings_then() -> None:
    rec, *_ = recovery()
    assert rec.lemond_major == 0
    assert rec.adoption_warnings() == []
