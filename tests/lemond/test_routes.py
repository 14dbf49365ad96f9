"""RouteTable.apply: one test per event kind, plus the resync race and timing records."""

from __future__ import annotations

from hal0proxy.lemond.events import (
    LemondRestarted,
    LoadedModel,
    LoadFailed,
    LoadStarted,
    ModelEvicted,
    ModelLoaded,
    PortChanged,
    ProcessCrashed,
    Resynced,
)
from hal0proxy.lemond.routes import RouteTable, StableTiming


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def table() -> tuple[RouteTable, FakeClock, list[StableTiming]]:
    clock = FakeClock()
    seen: list[StableTiming] = []
    return RouteTable(clock=clock, on_stable=seen.append), clock, seen


def test_loaded_creates_alive_unproven_route() -> None:
    rt, _, _ = table()
    route = rt.apply(ModelLoaded(model="a", port=8001, pid=10, seq=5, observed_at=99.0))
    assert route is not None
    assert (route.model, route.port, route.pid, route.alive, route.proven) == ("a", 8001, 10, True, False)
    assert route.since == 99.0
    assert rt.get("a") == route
    assert rt.get("b") is None


def test_repeated_announcement_keeps_proven_and_since() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=None, observed_at=1.0))
    rt.mark_proven("a", 8001)
    again = rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=2.0))
    assert again is not None and again.proven and again.since == 1.0 and again.pid == 10


def test_new_pid_on_same_port_resets_proven() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.mark_proven("a", 8001)
    route = rt.apply(ModelLoaded(model="a", port=8001, pid=11, observed_at=2.0))
    assert route is not None and not route.proven and route.pid == 11 and route.since == 2.0


def test_mark_proven_ignores_wrong_port_and_dead_routes() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.mark_proven("a", 8002)
    assert not rt.get("a").proven  # type: ignore[union-attr]
    rt.apply(ProcessCrashed(model="a", pid=10, exit_code=137, observed_at=2.0))
    rt.mark_proven("a", 8001)
    assert not rt.get("a").proven  # type: ignore[union-attr]
    rt.mark_proven("zzz", 1)  # unknown model: no error


def test_port_changed_moves_route_and_keeps_pid() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.mark_proven("a", 8001)
    route = rt.apply(PortChanged(model="a", old_port=8001, new_port=8003, observed_at=2.0))
    assert route is not None and route.port == 8003 and route.pid == 10 and not route.proven
    assert route.alive


def test_port_changed_for_unknown_model_creates_route() -> None:
    rt, _, _ = table()
    route = rt.apply(PortChanged(model="x", old_port=8001, new_port=8002, observed_at=2.0))
    assert route is not None and route.port == 8002 and route.pid is None


def test_evicted_removes_route() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    assert rt.apply(ModelEvicted(model="a", observed_at=2.0)) is None
    assert rt.get("a") is None
    assert rt.apply(ModelEvicted(model="a", observed_at=3.0)) is None  # idempotent


def test_crash_by_model_marks_dead() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    dead = rt.apply(ProcessCrashed(model="a", pid=10, exit_code=137, observed_at=5.0))
    assert dead is not None and not dead.alive and dead.since == 5.0
    assert rt.get("a") == dead


def test_crash_by_pid_only_finds_model() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.apply(ModelLoaded(model="b", port=8002, pid=20, observed_at=1.0))
    rt.apply(ProcessCrashed(model=None, pid=20, exit_code=1, observed_at=2.0))
    assert rt.get("a").alive  # type: ignore[union-attr]
    assert not rt.get("b").alive  # type: ignore[union-attr]


def test_crash_of_older_pid_does_not_kill_newer_child() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=11, observed_at=1.0))
    rt.apply(ProcessCrashed(model="a", pid=10, exit_code=1, observed_at=2.0))
    assert rt.get("a").alive  # type: ignore[union-attr]


def test_reload_after_crash_revives_route() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.apply(ProcessCrashed(model="a", pid=10, observed_at=2.0))
    route = rt.apply(ModelLoaded(model="a", port=8001, pid=12, observed_at=3.0))
    assert route is not None and route.alive and route.pid == 12


def test_non_route_events_change_nothing() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    v = rt.version
    rt.apply(LoadStarted(model="b", observed_at=2.0))
    rt.apply(LoadFailed(model="b", reason="boom", observed_at=3.0))
    assert rt.version == v and set(rt.snapshot()) == {"a"}


def test_restart_clears_everything() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.apply(ModelLoaded(model="b", port=8002, pid=20, observed_at=1.0))
    rt.apply(LemondRestarted(observed_at=2.0))
    assert rt.snapshot() == {} and len(rt) == 0


def lm(model: str, port: int, pid: int | None) -> LoadedModel:
    return LoadedModel(model=model, port=port, pid=pid, backend_url=f"http://127.0.0.1:{port}/v1")


def test_resync_adopts_moves_and_drops() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="keep", port=8001, pid=10, observed_at=1.0))
    rt.mark_proven("keep", 8001)
    rt.apply(ModelLoaded(model="moved", port=8002, pid=20, observed_at=1.0))
    rt.apply(ModelLoaded(model="gone", port=8003, pid=30, observed_at=1.0))
    rt.apply(
        Resynced(
            observed_at=10.0,
            loaded=(lm("keep", 8001, 10), lm("moved", 8005, 21), lm("new", 8004, 40)),
        )
    )
    snap = rt.snapshot()
    assert set(snap) == {"keep", "moved", "new"}
    assert snap["keep"].proven and snap["keep"].since == 1.0  # untouched
    assert snap["moved"].port == 8005 and snap["moved"].pid == 21 and not snap["moved"].proven
    assert snap["new"].port == 8004 and snap["new"].alive


def test_resync_does_not_override_newer_events() -> None:
    """An event observed after the health request was sent wins over the answer."""
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="fresh", port=8002, pid=20, observed_at=10.5))
    rt.apply(ModelLoaded(model="old", port=8001, pid=10, observed_at=1.0))
    rt.apply(Resynced(observed_at=10.0, loaded=(lm("old", 8009, 11),)))
    assert rt.get("fresh") is not None and rt.get("fresh").port == 8002  # type: ignore[union-attr]
    assert rt.get("old").port == 8009  # type: ignore[union-attr]


def test_resync_keeps_dead_child_that_legacy_lemond_still_lists() -> None:
    rt, _, _ = table()
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.apply(ProcessCrashed(model="a", pid=10, observed_at=2.0))
    rt.apply(Resynced(observed_at=5.0, loaded=(lm("a", 8001, 10),)))
    assert not rt.get("a").alive  # type: ignore[union-attr]
    rt.apply(Resynced(observed_at=6.0, loaded=(lm("a", 8001, 12),)))
    assert rt.get("a").alive  # type: ignore[union-attr]


def test_stable_timing_recorded_from_observed_to_applied() -> None:
    rt, clock, seen = table()
    clock.now = 50.030
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=50.0))
    rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=50.0))  # no change, no record
    assert len(seen) == 1 and seen[0].model == "a" and seen[0].port == 8001
    assert abs(seen[0].seconds - 0.030) < 1e-9 and seen[0].cause == "ModelLoaded"
    assert list(rt.timings) == seen


def test_routes_are_replaced_not_mutated() -> None:
    rt, _, _ = table()
    first = rt.apply(ModelLoaded(model="a", port=8001, pid=10, observed_at=1.0))
    rt.apply(PortChanged(model="a", old_port=8001, new_port=8002, observed_at=2.0))
    assert first is not None and first.port == 8001
