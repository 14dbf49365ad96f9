"""Router behaviour over real sockets and real child processes: LRU, nuclear retry, crashes,
port choice and the fault API."""

from __future__ import annotations

import re
import socket
import time

from tests.support.emulator import EmulatorProcess, fixture, pid_alive, start_emulator, wait_until

SMALL, BIG = "Qwen3-0.6B-GGUF", "Qwen3-4B-GGUF"
EMBED, RERANK = "nomic-embed-text-v1-GGUF", "bge-reranker-v2-m3-GGUF"


def lines_after(emu: EmulatorProcess, marker: str) -> list[str]:
    text = emu.log_text()
    idx = text.rfind(marker)
    assert idx >= 0, f"{marker!r} not in log"
    return [re.sub(r"^\S+ \S+ ", "", line) for line in text[idx:].splitlines()]


def load(emu: EmulatorProcess, name: str, **options: object) -> dict:
    status, body = emu.post("/v1/load", {"model_name": name, **options})
    assert status == 200, body
    return emu.loaded()[name]


def test_per_type_lru_evicts_exactly_one(fresh: EmulatorProcess) -> None:
    load(fresh, SMALL)
    load(fresh, EMBED)
    load(fresh, RERANK)
    assert set(fresh.loaded()) == {SMALL, EMBED, RERANK}, "one slot per type"
    load(fresh, BIG)
    assert set(fresh.loaded()) == {BIG, EMBED, RERANK}
    tail = lines_after(fresh, f"Ensuring model loaded: {BIG}")
    assert f"[Info] (Router) Slot limit reached for pool standard/llm, evicting LRU: {SMALL}" in tail
    assert f"[Info] (Router) Evicting model: {SMALL}" in tail
    assert f"[Info] (Router) Evicted model: {SMALL}" in tail
    assert "[Info] (Router) Model loaded successfully. Total loaded: 3" in tail


def test_lru_picks_least_recently_used_with_two_slots() -> None:
    with start_emulator(max_loaded_models=2) as emu:
        load(emu, SMALL)
        load(emu, BIG)
        first_pid = emu.loaded()[SMALL]["pid"]
        load(emu, SMALL)  # a no-op that refreshes SMALL's access time
        assert emu.loaded()[SMALL]["pid"] == first_pid
        assert emu.health()["max_models"]["llm"] == 2
        emu.post("/v1/pull", {"model_name": "user.Extra-GGUF", "checkpoint": "x/Extra-GGUF:Q4_0", "recipe": "llamacpp"})
        load(emu, "user.Extra-GGUF")
        assert set(emu.loaded()) == {SMALL, "user.Extra-GGUF"}, "BIG was the LRU"


def test_same_options_is_noop_and_changed_options_respawn(fresh: EmulatorProcess) -> None:
    entry = load(fresh, SMALL)
    again = load(fresh, SMALL)
    assert again["pid"] == entry["pid"] and again["backend_url"] == entry["backend_url"]
    assert "[Debug] (Router) Model already loaded, updating access time and pinned status" in fresh.log_text()
    assert fresh.state()["spawns_by_model"][SMALL] == 1
    changed = load(fresh, SMALL, ctx_size=1024)
    assert changed["pid"] != entry["pid"]
    assert f"[Info] (Router) Options changed, reloading model: {SMALL}" in fresh.log_text()
    assert not pid_alive(entry["pid"])


def test_nuclear_evict_all_and_retry_on_new_port(fresh: EmulatorProcess) -> None:
    embed = load(fresh, EMBED)
    assert fresh.post("/_emu/fail_next_load", {"model_name": BIG, "kind": "other"})[0] == 200
    big = load(fresh, BIG)
    assert set(fresh.loaded()) == {BIG}, "every model is evicted, whatever its type"
    assert not pid_alive(embed["pid"])
    tail = lines_after(fresh, f"Ensuring model loaded: {BIG}")
    expected_order = [
        "[Error] (WrappedServer) llama-server process has terminated with exit code: 1",
        "[Error] (Router) Backend load failed: llama-server failed to start",
        "[Warn] (Router) Load failed with non-file-not-found error, evicting all models and retrying...",
        "[Info] (Router) Evicting all models (1 total)",
        f"[Info] (Router) Evicting model: {EMBED}",
        "[Info] (Router) Evict all completed. Remaining tombstoned models: 0",
        "[Debug] (Router) Retrying backend load...",
    ]
    positions = [tail.index(line) for line in expected_order]
    assert positions == sorted(positions)
    assert any(line.startswith("[Debug] (Router) Retry successful in ") for line in tail)
    assert not any("Model loaded successfully. Total loaded" in line for line in tail), "Debug-only on retry"
    assert any("(Process) llama_model_load: error loading model" in line and "[Error]" in line for line in tail)
    assert big["backend_url"].startswith("http://127.0.0.1:")


def test_retry_failure_is_500(fresh: EmulatorProcess) -> None:
    fresh.post("/_emu/fail_next_load", {"model_name": BIG, "kind": "other", "count": 2})
    status, body = fresh.post("/v1/load", {"model_name": BIG})
    assert status == 500
    assert body["error"]["code"] == "model_load_error"
    assert body["error"]["message"] == f"Failed to load model '{BIG}': llama-server failed to start"
    text = fresh.log_text()
    assert "[Error] (Router) Retry also failed: llama-server failed to start" in text
    assert "[Error] (Server) Error 500: POST /v1/load" in text


def test_file_not_found_does_not_evict(fresh: EmulatorProcess) -> None:
    embed = load(fresh, EMBED)
    fresh.post("/_emu/fail_next_load", {"model_name": BIG, "kind": "file_not_found"})
    status, body = fresh.post("/v1/load", {"model_name": BIG})
    assert status == 500 and body["error"]["code"] == "model_load_error"
    assert fresh.loaded()[EMBED]["pid"] == embed["pid"]
    assert "[Error] (Router) File not found error, NOT evicting other models" in fresh.log_text()


def test_crash_vanishes_at_once_reaped_within_5s_and_reload_has_new_pid(fresh: EmulatorProcess) -> None:
    entry = load(fresh, SMALL)
    status, body = fresh.post("/_emu/crash", {"model_name": SMALL})
    assert status == 200 and body["pid"] == entry["pid"]
    assert SMALL not in fresh.loaded(), "a dead child vanishes from /health at once"
    line = (
        f"[Error] (BackendWatchdog) llama-server backend marked unavailable: backend process exited while "
        f"watchdog was active; reaped exited backend process PID {entry['pid']} (exit_code=137)"
    )
    started = time.monotonic()
    assert wait_until(lambda: line in fresh.log_text(), 5.0)
    assert time.monotonic() - started < 5.0
    again = load(fresh, SMALL)
    assert again["pid"] != entry["pid"]
    assert f"[Warn] (Router) Pruning unavailable backend for model: {SMALL} (state=watchdog_reset)" in (
        fresh.log_text()
    )


def test_port_is_rechosen_at_every_spawn(fresh: EmulatorProcess) -> None:
    base = fresh.child_port_base
    first = load(fresh, SMALL)
    assert first["backend_url"] == f"http://127.0.0.1:{base}/v1"
    fresh.post("/v1/unload", {"model_name": SMALL})
    with socket.socket() as blocker:  # someone else grabs the lowest port meanwhile
        blocker.bind(("127.0.0.1", base))
        second = load(fresh, SMALL)
        assert second["backend_url"] == f"http://127.0.0.1:{base + 1}/v1"
    fresh.post("/v1/unload", {"model_name": SMALL})
    third = load(fresh, SMALL)
    assert third["backend_url"] == f"http://127.0.0.1:{base}/v1", "the freed low port is taken again"


def test_respawn_moves_port(fresh: EmulatorProcess) -> None:
    entry = load(fresh, SMALL)
    status, body = fresh.post("/_emu/respawn", {"model_name": SMALL})
    assert status == 200
    assert body["port"] != body["old_port"] and body["pid"] != entry["pid"]
    assert fresh.loaded()[SMALL]["backend_url"] == f"http://127.0.0.1:{body['port']}/v1"
    target = fresh.child_port_base + 7
    status, body = fresh.post("/_emu/respawn", {"model_name": SMALL, "port": target})
    assert status == 200 and body["port"] == target
    assert fresh.loaded()[SMALL]["backend_url"] == f"http://127.0.0.1:{target}/v1"


def test_evict_fault_uses_lru_lines(fresh: EmulatorProcess) -> None:
    entry = load(fresh, SMALL)
    status, _ = fresh.post("/_emu/evict", {"model_name": SMALL})
    assert status == 200
    assert fresh.loaded() == {}
    assert not pid_alive(entry["pid"])
    tail = lines_after(fresh, f"evicting LRU: {SMALL}")
    assert f"[Info] (Router) Evicted model: {SMALL}" in tail
    assert fresh.post("/_emu/evict", {"model_name": SMALL})[0] == 404


def test_slow_load_blocks_load_until_ready(fresh: EmulatorProcess) -> None:
    fresh.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 1.5})
    started = time.monotonic()
    load(fresh, SMALL)
    assert time.monotonic() - started >= 1.5


def test_slow_load_without_a_model_clears_every_slow_load(fresh: EmulatorProcess) -> None:
    fresh.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 30})
    fresh.post("/_emu/slow_load", {"seconds": 30})
    assert fresh.post("/_emu/slow_load", {"seconds": None})[0] == 200
    started = time.monotonic()
    load(fresh, SMALL)
    assert time.monotonic() - started < 10.0, "a slow load was left behind"


def test_unload_pauses_like_lemond() -> None:
    with start_emulator(unload_pause_seconds=0.8) as emu:
        load(emu, SMALL)
        started = time.monotonic()
        assert emu.post("/v1/unload", {"model_name": SMALL})[0] == 200
        assert time.monotonic() - started >= 0.8


def test_all_pinned_is_409(fresh: EmulatorProcess) -> None:
    entry = load(fresh, SMALL, pinned=True)
    assert entry["pinned"] is True and entry["recipe_options"]["pinned"] is True
    assert fresh.health()["pinned_models"]["llm"] == 1
    status, body = fresh.post("/v1/load", {"model_name": BIG})
    assert status == 409
    assert body == fixture("load_error_slots_pinned.json") | {
        "error": fixture("load_error_slots_pinned.json")["error"] | {"requested_model": BIG}
    }


def test_restart_kills_children_and_resets(fresh: EmulatorProcess) -> None:
    entry = load(fresh, SMALL)
    assert fresh.post("/_emu/restart", {})[0] == 200
    assert fresh.loaded() == {}
    assert wait_until(lambda: not pid_alive(entry["pid"]), 5.0)
    state = fresh.state()
    assert state["children"] == []
    assert state["log_seq"] < 40, "seq fresh with the banner"
