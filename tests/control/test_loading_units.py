"""``Loading`` on its own: one ``/v1/load`` per model however many ask, and a refusal
mapped to the code a waiting request is answered with.

The ``Recovery`` and ``Room`` it drives are the real objects; lemond is an address nothing
listens on (port 1) or, for the 404 case, a loopback server answering every request 404
the way lemond answers a load of a model it does not know.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hal0proxy.config import Config, SlotConfig
from hal0proxy.control.attribution import UnloadLedger
from hal0proxy.control.journal import Journal
from hal0proxy.control.loading import Loading
from hal0proxy.control.recovery import LoadFailure, Recovery
from hal0proxy.control.registry import Slot, SlotRegistry
from hal0proxy.control.room import Room
from hal0proxy.control.shared import ControlShared
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.slots.state import SlotState
from tests.control.fakes import answer_json

M = "Qwen3-0.6B-GGUF"
DOWN = "http://127.0.0.1:1"


def loading(url: str = DOWN) -> tuple[Loading, SlotRegistry, Journal, list[tuple[str, float]]]:
    cfg = Config(slots=(SlotConfig(name="primary", model=M),))
    adapter = LemondAdapter(url, api_key=None)
    registry = SlotRegistry(cfg.slots)
    journal, ledger, clock = Journal(), UnloadLedger(), time.monotonic
    shared = ControlShared(adapter, registry, journal, lambda: cfg, clock)
    recovery = Recovery(shared, ledger)
    room = Room(shared, ledger)
    measured: list[tuple[str, float]] = []
    obj = Loading(shared, recovery, room, on_measured=lambda model, s: measured.append((model, s)))
    return obj, registry, journal, measured


async def test_concurrent_callers_share_one_load_and_one_lemond_call() -> None:
    obj, registry, journal, measured = loading()
    slot = registry.get("primary")
    assert slot is not None
    tasks = [obj.ensure_loading(slot) for _ in range(20)]
    assert all(t is tasks[0] for t in tasks)
    assert obj.in_progress(M) and obj.tasks() == [tasks[0]]
    with pytest.raises(LoadFailure) as err:
        await tasks[0]
    assert (err.value.status, err.value.code) == (503, "lemond.unavailable")
    assert obj.loads_issued == 1
    assert [e["model"] for e in journal.recent if e["type"] == "slot.load_requested"] == [M]
    await asyncio.sleep(0)  # the done callback runs
    assert not obj.in_progress(M) and obj.tasks() == []
    assert slot.status.state is SlotState.ERROR  # a refused load does not hold its place as "starting"
    assert measured == []  # nothing was loaded, so nothing measured


async def test_a_load_after_the_last_one_ended_is_a_new_one() -> None:
    obj, registry, *_ = loading()
    slot = registry.get("primary")
    assert slot is not None
    first = obj.ensure_loading(slot)
    with pytest.raises(LoadFailure):
        await first
    second = obj.ensure_loading(slot)
    assert second is not first
    with pytest.raises(LoadFailure):
        await second
    assert obj.loads_issued == 2


async def _answer_404(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    if length:
        await reader.readexactly(length)
    body = b'{"error":{"message":"model not found","code":"model_not_found","type":"not_found"}}'
    await answer_json(writer, b"404 Not Found", body)


async def test_a_model_lemond_does_not_know_fails_the_load_with_404_slot_not_found() -> None:
    server = await asyncio.start_server(_answer_404, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        obj, registry, *_ = loading(f"http://127.0.0.1:{port}")
        slot = registry.get("primary")
        assert slot is not None
        with pytest.raises(LoadFailure) as err:
            await obj.ensure_loading(slot)
        assert (err.value.status, err.value.code) == (404, "slot.not_found")
    finally:
        server.close()
        await server.wait_closed()


async def test_retry_after_is_a_whole_positive_number_of_seconds() -> None:
    obj, registry, *_ = loading()
    slot = registry.get("primary")
    assert slot is not None
    assert obj.retry_after(slot) >= 1


class NoRoom:
    """A ``LoadRoom`` whose pool stays full: every occupant is serving."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def make_room(self, slot: Slot, mtype: str) -> None:
        self.asked.append((slot.model, mtype))
        raise LoadFailure(f"every {mtype} slot is serving; no room to load {slot.model}")


async def test_no_room_in_the_pool_fails_the_load_before_lemond_is_asked() -> None:
    cfg = Config(slots=(SlotConfig(name="primary", model=M),))
    adapter = LemondAdapter(DOWN, api_key=None)
    registry, journal, clock = SlotRegistry(cfg.slots), Journal(), time.monotonic
    shared = ControlShared(adapter, registry, journal, lambda: cfg, clock)
    recovery = Recovery(shared, UnloadLedger())
    room = NoRoom()
    obj = Loading(shared, recovery, room)
    slot = registry.get("primary")
    assert slot is not None
    with pytest.raises(LoadFailure, match="no room"):
        await obj.ensure_loading(slot)
    assert room.asked == [(M, "llm")]
    assert obj.loads_issued == 0  # no /v1/load that lemond would answer by evicting a serving child
