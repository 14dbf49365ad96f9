"""Pure parts of the emulator: pool decisions, the log hub, catalogs, release switches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hal0proxy.emulator.catalog import DEFAULT_CATALOG, load_catalog
from hal0proxy.emulator.config import Release
from hal0proxy.emulator.logs import LogEntry, LogHub
from hal0proxy.emulator.pool import AllPinnedError, Resident, choose_port, lru_victim


def r(name: str, kind: str, last: float, pinned: bool = False, alive: bool = True) -> Resident:
    return Resident(name, kind, last, pinned, alive)


def test_lru_victim_is_per_type_and_only_one() -> None:
    residents = [r("a", "llm", 3), r("b", "llm", 1), r("e", "embedding", 0)]
    assert lru_victim(residents, "llm", 2) == "b"
    assert lru_victim(residents, "llm", 3) is None
    assert lru_victim(residents, "embedding", 2) is None
    assert lru_victim(residents, "llm", 1) == "b", "over-full pools still lose exactly one"
    assert lru_victim(residents, "llm", -1) is None


def test_lru_skips_pinned_and_dead() -> None:
    assert lru_victim([r("a", "llm", 1, pinned=True), r("b", "llm", 2)], "llm", 2) == "b"
    assert lru_victim([r("a", "llm", 1, alive=False)], "llm", 1) is None
    with pytest.raises(AllPinnedError) as err:
        lru_victim([r("a", "llm", 1, pinned=True)], "llm", 1)
    assert err.value.pool == "standard/llm"


def test_choose_port_lowest_free_with_exclusions() -> None:
    taken = {8001, 8002}
    assert choose_port(8001, lambda p: p not in taken) == 8003
    assert choose_port(8001, lambda p: True, exclude=[8001]) == 8002
    with pytest.raises(OSError):
        choose_port(8001, lambda p: False, span=5)


def test_log_hub_format_seq_ring_and_fanout() -> None:
    hub = LogHub(capacity=3, level="info")
    got: list[LogEntry] = []
    token = hub.subscribe(got.append)
    hub.debug("Router", "hidden")
    hub.info("Router", "one\ntwo")
    hub.warn("Router", "three")
    hub.error("Server", "four")
    assert [e.seq for e in got] == [1, 2, 3, 4], "Debug is filtered before a seq is taken"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[Warn\] \(Router\) three", got[2].line)
    assert [e.seq for e in hub.snapshot(None)] == [2, 3, 4]
    assert [e.seq for e in hub.snapshot(3)] == [4]
    frame = json.loads(got[0].frame)
    assert frame == {"entry": got[0].as_json(), "type": "logs.entry"}
    assert list(json.loads(got[0].frame)["entry"]) == sorted(got[0].as_json())
    hub.unsubscribe(token)
    hub.reset()
    hub.info("main", "again")
    assert hub.last_seq == 1 and len(got) == 4


def test_catalog_files(tmp_path: Path) -> None:
    names = {m.name for m in DEFAULT_CATALOG}
    assert {"Qwen3-0.6B-GGUF", "Qwen3-4B-GGUF", "nomic-embed-text-v1-GGUF", "bge-reranker-v2-m3-GGUF"} <= names
    js = tmp_path / "c.json"
    js.write_text(
        json.dumps({"models": [{"name": "A", "type": "llm", "checkpoint": "o/A-GGUF:Q4_0", "load_seconds": 0.5}]})
    )
    (model,) = load_catalog(js)
    assert model.load_seconds == 0.5 and model.file_name == "A-Q4_0.gguf"
    toml = tmp_path / "c.toml"
    toml.write_text('[[models]]\nname = "E"\ntype = "embedding"\ncheckpoint = "o/E:Q8_0"\n')
    assert load_catalog(toml)[0].child_flag == "--embeddings"
    js.write_text(json.dumps([{"name": "A", "type": "llm", "checkpoint": "x", "typo": 1}]))
    with pytest.raises(ValueError):
        load_catalog(js)


def test_release_switches() -> None:
    new, mid, old = Release.parse("11.7"), Release.parse("10.8"), Release.parse("10.7")
    assert new.slot_limit_line("llm", "X") == "Slot limit reached for pool standard/llm, evicting LRU: X"
    assert mid.slot_limit_line("llm", "X") == "Slot limit reached for type llm, evicting LRU: X"
    assert (new.has_watchdog, mid.has_watchdog, old.has_watchdog) == (True, True, False)
    assert (new.ws_on_main_port, old.ws_on_main_port) == (True, False)
    assert "classification" in new.model_types and "classification" not in mid.model_types
    assert new.already_loaded_severity == "Debug" and mid.already_loaded_severity == "Info"
