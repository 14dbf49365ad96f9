"""The controller in-process: the dispatch decision carried out, and its plain stats.

lemond is an address nothing listens on (a refused loopback connect), so every path that
asks lemond sees it down; routes come from events published to the adapter, as the log
stream would publish them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

import pytest

from hal0proxy.config import Config, SlotConfig
from hal0proxy.control.controller import ControlHooks, Controller
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError
from hal0proxy.lemond.events import ModelLoaded
from hal0proxy.metrics import DataPlaneStats, Metrics
from hal0proxy.routing.classify import Classified
from hal0proxy.slots.signals import UnloadRequested
from hal0proxy.slots.state import SlotState

MODEL = "Qwen3-0.6B-GGUF"
DOWN = "http://127.0.0.1:1"  # port 1: connections are refused at once


def controller(**slot: object) -> Controller:
    cfg = Config(slots=(SlotConfig(name="primary", model=MODEL, **slot),))  # type: ignore[arg-type]
    return Controller(cfg, LemondAdapter(DOWN, api_key=None))


def request(model: str | None, *defaults: str) -> Classified:
    return Classified(model, defaults, b"", False)


def loaded(ctl: Controller, port: int = 8001, proven: bool = True) -> None:
    ctl.adapter._publish(ModelLoaded(model=MODEL, port=port, pid=42, observed_at=ctl.clock()))
    if proven:
        ctl.adapter.routes.mark_proven(MODEL, port)


async def test_a_ready_slot_with_a_proven_route_is_leased_on_the_hot_path() -> None:
    ctl = controller()
    loaded(ctl)
    assert ctl.registry.get("primary") is not None
    lease = ctl.acquire_now(request("primary"))
    assert lease is not None and (lease.port, lease.slot) == (8001, "primary")
    slot = ctl.registry.get("primary")
    assert slot is not None and slot.status.state is SlotState.SERVING and slot.status.in_flight == 1
    by_model = ctl.acquire_now(request(MODEL))
    by_default = ctl.acquire_now(request(None, "chat", "primary"))
    assert by_model is not None and by_default is not None and slot.status.in_flight == 3
    for held in (lease, by_model, by_default):
        held.release()
    lease.release()  # a second release is a no-op
    assert slot.status.in_flight == 0 and slot.status.state is SlotState.READY


async def test_the_hot_path_defers_what_it_cannot_forward() -> None:
    ctl = controller()
    assert ctl.acquire_now(request("primary")) is None  # offline: no route
    assert ctl.acquire_now(request("unknown-model")) is None  # not a known slot
    assert ctl.acquire_now(request(None, "embed")) is None  # no default slot applies
    loaded(ctl, proven=False)
    assert ctl.acquire_now(request("primary")) is None  # unproven port: acquire probes it
    ctl.adapter.routes.mark_proven(MODEL, 8001)
    slot = ctl.registry.get("primary")
    assert slot is not None
    ctl.registry.signal(slot, UnloadRequested(), ctl.clock())
    assert slot.status.state is SlotState.UNLOADING
    assert ctl.acquire_now(request("primary")) is None  # being unloaded


async def test_a_request_without_a_model_is_400() -> None:
    with pytest.raises(ProxyError) as err:
        await controller().acquire(request(None, "embed"))
    assert (err.value.status, err.value.code) == (400, "request.missing_model")


async def test_an_unknown_model_while_lemond_is_down_is_503_lemond_unavailable() -> None:
    with pytest.raises(ProxyError) as err:
        await controller().acquire(request("no-such-model"))
    assert (err.value.status, err.value.code) == (503, "lemond.unavailable")
    assert err.value.retry_after_s is not None and err.value.retry_after_s >= 1


async def test_cold_start_reject_answers_503_slot_loading_and_starts_the_load() -> None:
    ctl = controller(cold_start="reject")
    with pytest.raises(ProxyError) as err:
        await ctl.acquire(request("primary"))
    assert (err.value.status, err.value.code) == (503, "slot.loading")
    assert err.value.details["slot"] == "primary" and err.value.retry_after_s == err.value.details["retry_after_s"]
    assert ctl.loading.in_progress(MODEL)  # the single-flight load began, so a retry finds it loading
    await ctl.stop()


async def test_a_failed_load_during_the_wait_is_reported_with_its_code() -> None:
    ctl = controller(cold_start="wait", max_wait_s=30.0)
    with pytest.raises(ProxyError) as err:
        await ctl.acquire(request("primary"))
    # lemond refuses the connection: the load fails at once, long before the deadline.
    assert (err.value.status, err.value.code) == (503, "lemond.unavailable")
    assert err.value.details == {"slot": "primary", "model": MODEL}
    await ctl.stop()


async def test_stats_snapshot_is_plain_data_that_metrics_export() -> None:
    ctl = controller()
    loaded(ctl)
    lease = ctl.acquire_now(request("primary"))
    assert lease is not None
    snap = ctl.stats_snapshot()
    assert [(s.name, s.state, s.in_flight) for s in snap.slots] == [("primary", SlotState.SERVING, 1)]
    assert (snap.websocket_connected, snap.loads_issued, snap.subscribers_dropped) == (False, 0, 0)
    metrics = Metrics()
    metrics.bind(ctl.stats_snapshot, DataPlaneStats(connections_open=2))
    text = metrics.render()[1].decode()
    assert 'hal0proxy_in_flight{slot="primary"} 1.0' in text
    assert 'hal0proxy_slot_state{slot="primary",state="serving"} 1.0' in text
    assert "hal0proxy_connections_open 2.0" in text
    lease.release()
    assert 'hal0proxy_in_flight{slot="primary"} 0.0' in metrics.render()[1].decode()  # read at scrape time


async def test_serving_port_follows_the_route_table() -> None:
    ctl = controller()
    slot = ctl.registry.get("primary")
    assert slot is not None and ctl.serving_port(slot) is None
    loaded(ctl, port=8007)
    assert ctl.serving_port(slot) == 8007


async def test_a_wait_that_outlasts_max_wait_s_ends_in_503_slot_loading() -> None:
    """lemond accepts the connection and never answers: the load hangs, the request does not."""
    silent_clients: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent_clients.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = Config(slots=(SlotConfig(name="primary", model=MODEL, max_wait_s=0.3),))
    ctl = Controller(cfg, LemondAdapter(f"http://127.0.0.1:{port}", api_key=None))
    started = time.monotonic()
    try:
        with pytest.raises(ProxyError) as err:
            await ctl.acquire(request("primary"))
        elapsed = time.monotonic() - started
        assert (err.value.status, err.value.code) == (503, "slot.loading")
        assert err.value.retry_after_s is not None and err.value.retry_after_s >= 1
        # Not before max_wait_s; the upper bound is wide only for a loaded machine.
        assert 0.3 <= elapsed < 10.0
        assert ctl.loading.in_progress(MODEL)  # the load goes on for the client's retry
    finally:
        await ctl.stop()
        for writer in silent_clients:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_hooks_and_a_reloaded_config_bound_after_construction_reach_the_parts() -> None:
    ctl = controller()
    loaded(ctl)
    seen: list[tuple[str, str]] = []
    ctl.hooks = ControlHooks(evicted=lambda reason, by: seen.append((reason, by)))
    lease = ctl.acquire_now(request("primary"))
    assert lease is not None  # in flight: an unload waits up to policy.max_wait_s (120 s) for it
    ctl.config = replace(ctl.config, policy=replace(ctl.config.policy, max_wait_s=0.0))
    slot = ctl.registry.get("primary")
    assert slot is not None
    with pytest.raises(LemondError):  # lemond is down: the unload itself is refused
        await asyncio.wait_for(ctl.unload_slot(slot), 5.0)  # the reloaded 0 s wait, not 120 s
    assert seen == [("manual", "proxy")] and ctl.room.unloads_issued == {"manual": 1}
    lease.release()


async def test_a_hung_child_starts_one_replacement_load_and_eviction_counts_the_proxys() -> None:
    ctl = controller()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = int(unused.getsockname()[1])  # closed again below: nothing listens there
    loaded(ctl, port=port)
    seen: list[tuple[str, str]] = []
    ctl.hooks = ControlHooks(evicted=lambda reason, by: seen.append((reason, by)))
    lease = ctl.acquire_now(request("primary"))
    assert lease is not None
    ctl.child_hung(lease)
    assert ctl.loading.in_progress(MODEL)
    [task] = ctl.loading.tasks()
    ctl.child_hung(lease)  # reported again: already dead, no second load
    assert ctl.loading.tasks() == [task]
    assert seen == [("hang", "proxy")]  # found by the proxy's own watch, not lemond's
    lease.release()
    await ctl.stop()
