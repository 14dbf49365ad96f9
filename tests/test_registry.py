"""The slot registry maps lemond events onto slots; stale health snapshots never undo newer news."""

from __future__ import annotations

from hal0proxy.config import SlotConfig
from hal0proxy.control.registry import SlotRegistry
from hal0proxy.lemond.events import LoadedModel, ModelEvicted, ModelLoaded, PortChanged, Resynced
from hal0proxy.slots.state import SlotState


def registry() -> tuple[SlotRegistry, list[tuple[str, SlotState, SlotState]]]:
    changes: list[tuple[str, SlotState, SlotState]] = []
    reg = SlotRegistry(
        [SlotConfig(name="primary", model="A"), SlotConfig(name="embed", model="E", type="embedding")],
        on_change=lambda slot, before: changes.append((slot.name, before, slot.status.state)),
    )
    return reg, changes


def test_a_health_snapshot_older_than_a_log_event_is_ignored_for_that_model() -> None:
    reg, changes = registry()
    reg.apply_event(ModelLoaded(model="E", port=8002, pid=2, seq=10, observed_at=5.0))
    # Health was requested at t=4 (before E finished loading) and answered afterwards.
    reg.apply_event(Resynced(loaded=(), observed_at=4.0))
    embed = reg.get("embed")
    assert embed is not None and embed.status.state is SlotState.READY and embed.status.port == 8002
    assert all(before is not SlotState.READY for name, before, _ in changes if name == "embed")


def test_a_newer_snapshot_is_authoritative() -> None:
    reg, _ = registry()
    reg.apply_event(ModelLoaded(model="E", port=8002, pid=2, seq=10, observed_at=5.0))
    reg.apply_event(Resynced(loaded=(), observed_at=6.0))  # lemond no longer has it
    embed = reg.get("embed")
    assert embed is not None and embed.status.state is SlotState.OFFLINE
    reg.apply_event(Resynced(loaded=(LoadedModel(model="A", port=8001, pid=1),), observed_at=7.0))
    primary = reg.get("primary")
    assert primary is not None and primary.status.state is SlotState.READY and primary.status.port == 8001


def test_unknown_loaded_models_are_adopted_and_evictions_go_offline() -> None:
    reg, _ = registry()
    reg.apply_event(Resynced(loaded=(LoadedModel(model="X", port=8005, pid=9, type="reranking"),), observed_at=1.0))
    adopted = reg.get("X")
    assert adopted is not None and adopted.adopted and adopted.type == "reranking"
    assert adopted.status.state is SlotState.READY
    reg.apply_event(ModelEvicted(model="X", observed_at=2.0))
    assert adopted.status.state is SlotState.OFFLINE
    assert "evicted" in adopted.status.message


def test_a_port_change_keeps_the_pid_of_the_child_just_loaded_there() -> None:
    reg, _ = registry()
    reg.apply_event(ModelLoaded(model="A", port=8001, pid=1, seq=10, observed_at=5.0))
    # A respawn on another port: the new child's ModelLoaded, then the PortChanged that
    # follows it (which names no PID).
    reg.apply_event(ModelLoaded(model="A", port=8003, pid=7, seq=20, observed_at=6.0))
    reg.apply_event(PortChanged(model="A", old_port=8001, new_port=8003, seq=20, observed_at=6.0))
    primary = reg.get("primary")
    assert primary is not None and (primary.status.port, primary.status.pid) == (8003, 7)
    # A port change on its own (no child seen on the new port) cannot vouch for the old PID.
    reg.apply_event(PortChanged(model="A", old_port=8003, new_port=8004, seq=30, observed_at=7.0))
    assert (primary.status.port, primary.status.pid) == (8004, None)
