# ruff: noqa: E501  (verbatim log lines are long; splitting them would hide what is tested)
"""Correlator: fixture sequences of lemond log lines -> model-level events."""

from __future__ import annotations

import re
from dataclasses import replace

from hal0proxy.lemond.correlate import Correlator, Residency
from hal0proxy.lemond.events import (
    EvictReason,
    LemondEvent,
    LemondRestarted,
    LoadedModel,
    LoadFailed,
    LoadStarted,
    ModelEvicted,
    ModelLoaded,
    PortChanged,
    ProcessCrashed,
)
from hal0proxy.lemond.parser import parse

Q4 = "Qwen3-4B-GGUF"
Q06 = "Qwen3-0.6B-GGUF"
NOMIC = "nomic-embed-text-v1-GGUF"


def log(text: str) -> list[str]:
    """Lines of a block; ``I``/``D``/``W``/``E`` + ``(Tag)`` shorthand gets lemond's prefix."""
    lines = []
    for raw in text.strip("\n").splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        m = re.match(r"([IDWE]) (\(.*)", raw)
        if m:
            level = {"I": "Info", "D": "Debug", "W": "Warn", "E": "Error"}[m.group(1)]
            raw = f"2026-08-22 14:05:21.331 [{level}] {m.group(2)}"
        lines.append(raw)
    return lines


def run(corr: Correlator, lines: list[str], first_seq: int = 100) -> list[tuple[int, LemondEvent]]:
    """Feed ``lines``; return ``(index of the line, event)`` pairs with seq/time checked."""
    out = []
    for i, line in enumerate(lines):
        fact = parse(line)
        if fact is None:
            continue
        for event in corr.feed(fact, first_seq + i, 1000.0 + i):
            assert event.seq == first_seq + i
            assert event.observed_at == 1000.0 + i
            out.append((i, event))
    return out


def events(corr: Correlator, lines: list[str]) -> list[LemondEvent]:
    # Events compare without seq/observed_at so expectations stay readable.
    return [_bare(e) for _, e in run(corr, lines)]


def _bare(event: LemondEvent) -> LemondEvent:
    return replace(event, seq=0, observed_at=0.0)


def resident(*models: tuple[str, int, int]) -> Correlator:
    corr = Correlator()
    corr.sync(LoadedModel(model=m, port=port, pid=pid) for m, port, pid in models)
    return corr


# Section 2 of the fixture at log_level=debug: explicit load with an LRU eviction first.
LOAD_WITH_LRU = log(f"""
D (Server) POST /v1/load
I (Server) Ensuring model loaded: {Q4}
D (Router) Loading model: {Q4} (checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0, recipe: llamacpp, type: llm, device: gpu, residency: standard)
I (Router) Slot limit reached for pool standard/llm, evicting LRU: {Q06}
I (Router) Evicting model: {Q06}
I (LlamaCpp) Unloading model...
I (Process) srv    operator(): operator(): cleaning up before exit...
I (ProcessManager) Process terminated, waiting for GPU driver cleanup...
I (Router) Evicted model: {Q06}
I (Router) Auto-tune ctx_size resolved to 32768
D (Router) Starting backend (this may take a moment)...
I (LlamaCpp) Loading model: {Q4}
I (LlamaCpp) Using LlamaCpp Backend: vulkan
D (WrappedServer) llama-server will use port: 8001
I (LlamaCpp) Starting llama-server...
D (ProcessManager) Starting process with filtered output: /bin/llama-server -m /m.gguf --ctx-size 32768 --port 8001 --jinja
I (ProcessManager) Process started successfully, PID: 48213
I (Process) build: 7869 (a1b2c3d4) with cc (GCC) 14.2.1 for x86_64-pc-linux-gnu
I (Process) main: server is listening on http://127.0.0.1:8001 - starting the main loop
I (WrappedServer) llama-server is ready!
I (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:8001/health (streaming=on, non_streaming=on)
D (LlamaCpp) Model loaded on port 8001
D (Router) Backend started successfully in 3261ms
I (Router) Model loaded successfully. Total loaded: 1
D (Server) POST /v1/load - 200
""")


def _info_only(lines: list[str], *, child: bool) -> list[str]:
    kept = [ln for ln in lines if "[Debug]" not in ln]
    return kept if child else [ln for ln in kept if "(Process)" not in ln]


def test_explicit_load_with_lru_eviction() -> None:
    corr = resident((Q06, 8001, 47000))
    got = run(corr, LOAD_WITH_LRU)
    assert [_bare(e) for _, e in got] == [
        ModelEvicted(model=Q06, reason=EvictReason.LRU),
        LoadStarted(model=Q4),
        ModelLoaded(model=Q4, port=8001, pid=48213),
    ]
    # ModelLoaded comes with the child's listening line, before lemond's own probe succeeds.
    loaded_at = next(i for i, e in got if isinstance(e, ModelLoaded))
    assert "server is listening" in LOAD_WITH_LRU[loaded_at]
    assert corr.known_pids() == {48213: Q4}
    assert corr.resident() == {Q4: Residency(8001, 48213)}
    assert corr.loading_model is None
    assert not corr.take_resync_hint()


def test_load_at_info_level_without_child_output_completes_at_the_watchdog_line() -> None:
    corr = resident((Q06, 8001, 47000))
    lines = _info_only(LOAD_WITH_LRU, child=False)
    got = run(corr, lines)
    assert [_bare(e) for _, e in got][-1] == ModelLoaded(model=Q4, port=8001, pid=48213)
    loaded_at = got[-1][0]
    assert "Started watchdog" in lines[loaded_at]


def test_load_without_any_port_line_asks_for_a_resync() -> None:
    corr = Correlator()
    lines = [ln for ln in _info_only(LOAD_WITH_LRU, child=False) if "watchdog" not in ln]
    assert ModelLoaded not in {type(e) for e in events(corr, lines)}
    assert corr.take_resync_hint()
    assert not corr.take_resync_hint()  # given once


def test_explicit_unload() -> None:
    corr = resident((Q4, 8001, 48213))
    got = events(
        corr,
        log(f"""
I (Server) Unload request received
I (Router) Unload model called: {Q4}
I (Router) Evicting model: {Q4}
I (LlamaCpp) Unloading model...
I (ProcessManager) Process terminated, waiting for GPU driver cleanup...
I (Router) Evicted model: {Q4}
I (Server) Model '{Q4}' unloaded successfully
"""),
    )
    assert got == [ModelEvicted(model=Q4, reason=EvictReason.MANUAL)]
    assert corr.known_pids() == {}


def test_unload_of_a_model_not_loaded_changes_nothing() -> None:
    corr = resident((Q06, 8002, 1))
    got = events(
        corr,
        log(f"""
I (Router) Unload model called: {Q4}
E (Server) Unload failed: Model not loaded: {Q4}
I (Router) Evicted model: {Q4}
"""),
    )
    # The failed unload must not leave a "manual" reason behind for a later eviction.
    assert got == [ModelEvicted(model=Q4, reason=EvictReason.UNKNOWN)]


def test_unload_all() -> None:
    corr = resident((Q4, 8001, 1), (NOMIC, 8002, 2))
    got = events(
        corr,
        log(f"""
I (Server) Unload request received
I (Router) Unload all models called
I (Router) Evicting all models (2 total)
I (Router) Evicting model: {Q4}
I (Router) Evicted model: {Q4}
I (Router) Evicting model: {NOMIC}
I (Router) Evicted model: {NOMIC}
I (Router) Evict all completed. Remaining tombstoned models: 0
I (Server) All models unloaded successfully
I (Router) Evicted model: later-unrelated
"""),
    )
    assert got == [
        ModelEvicted(model=Q4, reason=EvictReason.MANUAL),
        ModelEvicted(model=NOMIC, reason=EvictReason.MANUAL),
        ModelEvicted(model="later-unrelated", reason=EvictReason.UNKNOWN),
    ]


NUCLEAR_HEAD = log(f"""
I (Server) Ensuring model loaded: {Q4}
I (LlamaCpp) Loading model: {Q4}
I (LlamaCpp) Starting llama-server...
I (ProcessManager) Process started successfully, PID: 48990
E (Process) llama_model_load: error loading model: unable to allocate Vulkan0 buffer
E (WrappedServer) llama-server process has terminated with exit code: 1
E (WrappedServer) This usually means:
E (WrappedServer)   - Missing required drivers or dependencies
E (WrappedServer)   - Incompatible model file
E (WrappedServer)   - Try running the server manually to see the actual error
E (Router) Backend load failed: llama-server failed to start
W (Router) Load failed with non-file-not-found error, evicting all models and retrying...
I (Router) Evicting all models (1 total)
I (Router) Evicting model: {NOMIC}
I (LlamaCpp) Unloading model...
I (ProcessManager) Process terminated, waiting for GPU driver cleanup...
I (Router) Evicted model: {NOMIC}
I (Router) Evict all completed. Remaining tombstoned models: 0
D (Router) Retrying backend load...
I (LlamaCpp) Loading model: {Q4}
""")

RETRY_SUCCESS = log("""
I (LlamaCpp) Using LlamaCpp Backend: vulkan
D (WrappedServer) llama-server will use port: 8001
I (LlamaCpp) Starting llama-server...
I (ProcessManager) Process started successfully, PID: 49001
I (Process) main: server is listening on http://127.0.0.1:8001 - starting the main loop
I (WrappedServer) llama-server is ready!
I (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:8001/health (streaming=on, non_streaming=on)
D (Router) Retry successful in 3298ms!
""")

RETRY_FAILURE = log("""
I (LlamaCpp) Starting llama-server...
I (ProcessManager) Process started successfully, PID: 49002
E (WrappedServer) llama-server process has terminated with exit code: 1
E (Router) Retry also failed: llama-server failed to start
I (LlamaCpp) Unloading model...
I (LlamaCpp) Unloading model...
E (Router) Failed to load model: llama-server failed to start
E (Server) Failed to load model: llama-server failed to start
E (Server) Error 500: POST /v1/load
""")


def test_nuclear_failure_then_retry_success() -> None:
    corr = resident((NOMIC, 8001, 47001))
    got = events(corr, NUCLEAR_HEAD + RETRY_SUCCESS)
    assert got == [
        LoadStarted(model=Q4),
        ModelEvicted(model=NOMIC, reason=EvictReason.NUCLEAR),
        ModelLoaded(model=Q4, port=8001, pid=49001),
    ]
    assert corr.known_pids() == {49001: Q4}


def test_nuclear_retry_success_at_info_level() -> None:
    # No Debug line and no child output: the port only shows in the watchdog line.
    corr = resident((NOMIC, 8001, 47001))
    got = events(corr, _info_only(NUCLEAR_HEAD + RETRY_SUCCESS, child=False))
    assert got[-1] == ModelLoaded(model=Q4, port=8001, pid=49001)
    assert sum(isinstance(e, LoadStarted) for e in got) == 1


def test_nuclear_failure_then_retry_failure_gives_one_load_failed() -> None:
    corr = resident((NOMIC, 8001, 47001))
    got = events(corr, NUCLEAR_HEAD + RETRY_FAILURE)
    assert got == [
        LoadStarted(model=Q4),
        ModelEvicted(model=NOMIC, reason=EvictReason.NUCLEAR),
        LoadFailed(model=Q4, reason="llama-server failed to start"),
    ]
    assert corr.resident() == {}
    assert corr.loading_model is None


def test_file_not_found_fails_at_once_and_evicts_nothing() -> None:
    corr = resident((NOMIC, 8002, 2))
    got = events(
        corr,
        log(f"""
I (Server) Ensuring model loaded: {Q4}
I (LlamaCpp) Loading model: {Q4}
E (Router) Backend load failed: GGUF file not found for checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0
E (Router) File not found error, NOT evicting other models
E (Router) Failed to load model: GGUF file not found for checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0
E (Server) Failed to load model: GGUF file not found for checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0
"""),
    )
    assert got == [
        LoadStarted(model=Q4),
        LoadFailed(model=Q4, reason="GGUF file not found for checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0"),
    ]
    assert corr.resident() == {NOMIC: Residency(8002, 2)}


def _load_lines(model: str, port: int, pid: int, *, auto: bool = True) -> list[str]:
    head = f"I (Server) Auto-loading model: {model}" if auto else f"I (Server) Ensuring model loaded: {model} "
    return log(f"""
{head}
I (LlamaCpp) Loading model: {model}
I (LlamaCpp) Starting llama-server...
I (ProcessManager) Process started successfully, PID: {pid}
I (Process) main: server is listening on http://127.0.0.1:{port} - starting the main loop
I (WrappedServer) llama-server is ready!
I (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:{port}/health (streaming=on, non_streaming=on)
I (Router) Model loaded successfully. Total loaded: 2
I (Server) Model loaded successfully: {model}
""")


def test_crash_prune_and_reload_on_a_new_port() -> None:
    corr = Correlator()
    assert events(corr, _load_lines(Q4, 8001, 48213, auto=False))[-1] == ModelLoaded(model=Q4, port=8001, pid=48213)
    crash = log(f"""
E (BackendWatchdog) llama-server backend marked unavailable: backend process exited while watchdog was active; reaped exited backend process PID 48213 (exit_code=137)
W (Router) Pruning unavailable backend for model: {Q4} (state=watchdog_reset)
I (Router) Evicting model: {Q4}
I (LlamaCpp) Unloading model...
I (Router) Evicted model: {Q4}
""")
    assert events(corr, crash) == [ProcessCrashed(model=Q4, pid=48213, exit_code=137)]
    assert corr.known_pids() == {}
    # 8001 was taken by another program meanwhile: the respawn lands on 8002.
    assert events(corr, _load_lines(Q4, 8002, 49102)) == [
        LoadStarted(model=Q4),
        ModelLoaded(model=Q4, port=8002, pid=49102),
        PortChanged(model=Q4, old_port=8001, new_port=8002),
    ]
    assert corr.known_pids() == {49102: Q4}


def test_prune_without_the_reap_line_still_reports_the_crash() -> None:
    corr = resident((Q4, 8001, 48213))
    got = events(
        corr,
        log(f"""
W (Router) Existing backend for {Q4} is unavailable (state=exited), evicting before reload
I (Router) Evicting model: {Q4}
I (Router) Evicted model: {Q4}
"""),
    )
    assert got == [ProcessCrashed(model=Q4, pid=48213, exit_code=None)]


def test_crash_during_stream_then_automatic_reload_fails() -> None:
    corr = resident((Q4, 8001, 49102))
    got = events(
        corr,
        log(f"""
E (WrappedServer) Streaming request failed: backend connection failed during SSE stream before DONE: CURL error
E (BackendWatchdog) llama-server backend marked unavailable: backend process exited during streaming request; reaped exited backend process PID 49102 (exit_code=134)
W (Router) Reloading model after backend watchdog reset: {Q4}
W (Router) Pruning unavailable backend for model: {Q4} (state=watchdog_reset)
I (Router) Evicting model: {Q4}
I (Router) Evicted model: {Q4}
I (LlamaCpp) Loading model: {Q4}
I (ProcessManager) Process started successfully, PID: 49200
E (WrappedServer) llama-server process has terminated with exit code: 1
E (Router) Backend load failed: llama-server failed to start
W (Router) Load failed with non-file-not-found error, evicting all models and retrying...
I (Router) Evicting all models (0 total)
I (Router) Evict all completed. Remaining tombstoned models: 0
I (LlamaCpp) Loading model: {Q4}
E (Router) Retry also failed: llama-server failed to start
E (Router) Failed to load model: llama-server failed to start
E (Router) Automatic reload after watchdog reset failed for {Q4}: llama-server failed to start
"""),
    )
    assert got == [
        ProcessCrashed(model=Q4, pid=49102, exit_code=134),
        LoadStarted(model=Q4),
        LoadFailed(model=Q4, reason="llama-server failed to start"),
    ]


def test_hang_kill_and_unknown_pid() -> None:
    corr = resident((Q4, 8001, 49230))
    got = events(
        corr,
        log("""
E (BackendWatchdog) llama-server backend marked unavailable: health endpoint did not respond after 3 consecutive probes while a request was active; terminating and reaping backend process PID 49230
E (BackendWatchdog) llama-server backend marked unavailable: backend process exited while watchdog was active; reaped exited backend process PID 777 (exit_code=9)
"""),
    )
    assert got == [
        ProcessCrashed(model=Q4, pid=49230, exit_code=None),
        ProcessCrashed(model=None, pid=777, exit_code=9),
    ]
    assert corr.take_resync_hint()  # a child nobody knew about: ask /v1/health


def test_automatic_reload_failure_seen_alone() -> None:
    corr = Correlator()
    line = log(f"E (Router) Automatic reload after watchdog reset failed for {Q4}: boom")
    assert events(corr, line) == [LoadFailed(model=Q4, reason="boom")]


def test_lemond_restart_forgets_everything() -> None:
    corr = resident((Q4, 8001, 1))
    got = events(corr, log("I (main) Starting Lemonade Server...\nI (main)   Version: 11.7.0"))
    assert got == [LemondRestarted()]
    assert corr.known_pids() == {}
    assert corr.resident() == {}


def test_idle_engine_eviction() -> None:
    corr = resident((Q4, 8001, 1))
    got = events(
        corr,
        log(f"""
I (evaluate_servers) Model {Q4} reached downsize idle timeout (60s). Marking for downsize.
I (evaluate_servers) Model {Q4} downsized.
I (evaluate_servers) Model {Q4} reached evict idle timeout (300s). Evicting.
I (evaluate_servers) Eviction Engine unloading model: {Q4} due to score/pressure/idle.
I (Router) Evicting model: {Q4}
I (Router) Evicted model: {Q4}
"""),
    )
    assert got == [ModelEvicted(model=Q4, reason=EvictReason.IDLE)]


def test_vram_pressure_eviction_and_rescue() -> None:
    corr = resident((Q4, 8001, 1), (Q06, 8002, 2))
    got = events(
        corr,
        log(f"""
I (on_vram_pressure) VRAM pressure critical (95% >= 90%). Evaluating eviction.
I (evaluate_servers) Eviction Engine unloading model: {Q4} due to score/pressure/idle.
I (Router) Eviction of {Q4} cancelled (rescued by in-flight request)
I (evaluate_servers) Eviction Engine unloading model: {Q06} due to score/pressure/idle.
I (Router) Evicted model: {Q06}
I (on_vram_pressure) VRAM pressure critical (97% >= 90%). Evaluating eviction.
I (evaluate_servers) Eviction Engine unloading model: {Q4} due to score/pressure/idle.
I (Router) Evicted model: {Q4}
"""),
    )
    # The rescue ended the pressure episode; the next engine eviction is an idle one.
    assert got == [
        ModelEvicted(model=Q06, reason=EvictReason.IDLE),
        ModelEvicted(model=Q4, reason=EvictReason.PRESSURE),
    ]


def test_npu_exclusivity_is_pressure() -> None:
    corr = resident(("qwen3.5-9b-FLM", 8003, 3), ("Llama-3.2-1B-Instruct-Hybrid", 8004, 4))
    got = events(
        corr,
        log("""
I (Router) ryzenai-llm requires exclusive NPU access, evicting all NPU servers...
I (Router) Evicting NPU server: qwen3.5-9b-FLM
I (Router) Evicting model: qwen3.5-9b-FLM
I (Router) Evicted model: qwen3.5-9b-FLM
I (Router) FLM cannot coexist with ryzenai-llm, evicting: Llama-3.2-1B-Instruct-Hybrid
I (Router) Evicted model: Llama-3.2-1B-Instruct-Hybrid
"""),
    )
    assert got == [
        ModelEvicted(model="qwen3.5-9b-FLM", reason=EvictReason.PRESSURE),
        ModelEvicted(model="Llama-3.2-1B-Instruct-Hybrid", reason=EvictReason.PRESSURE),
    ]


def test_options_changed_reload_moves_the_port() -> None:
    corr = Correlator()
    events(corr, _load_lines(Q4, 8001, 10, auto=False))
    reload = log(f"""
I (Server) Ensuring model loaded: {Q4} ctx_size=8192
I (Router) Options changed, reloading model: {Q4}
I (Router) Evicting model: {Q4}
I (Router) Evicted model: {Q4}
I (LlamaCpp) Loading model: {Q4}
I (ProcessManager) Process started successfully, PID: 11
I (WrappedServer) llama-server is ready!
I (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:8003/health (streaming=on, non_streaming=on)
I (Router) Model loaded successfully. Total loaded: 1
""")
    assert events(corr, reload) == [
        ModelEvicted(model=Q4, reason=EvictReason.MANUAL),
        LoadStarted(model=Q4),
        ModelLoaded(model=Q4, port=8003, pid=11),
        PortChanged(model=Q4, old_port=8001, new_port=8003),
    ]


def test_an_option_change_is_a_replacement_until_the_new_child_serves_or_fails() -> None:
    corr = Correlator()
    events(corr, _load_lines(Q4, 8001, 10, auto=False))
    assert corr.replacing() == frozenset()
    events(
        corr,
        log(f"""
I (Server) Ensuring model loaded: {Q4} ctx_size=384
I (Router) Options changed, reloading model: {Q4}
I (Router) Evicting model: {Q4}
"""),
    )
    assert corr.replacing() == {Q4}  # the busy child may take 5 s to go: lemond is on it
    events(
        corr,
        log(f"""
I (Router) Evicted model: {Q4}
I (LlamaCpp) Loading model: {Q4}
I (ProcessManager) Process started successfully, PID: 11
"""),
    )
    assert corr.replacing() == {Q4}
    events(
        corr,
        log("""
I (WrappedServer) llama-server is ready!
I (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:8002/health (streaming=on, non_streaming=on)
"""),
    )
    assert corr.replacing() == frozenset()
    events(
        corr,
        log(f"""
I (Router) Options changed, reloading model: {Q4}
I (Router) Evicted model: {Q4}
I (LlamaCpp) Loading model: {Q4}
E (Router) Backend load failed: llama-server failed to start
I (Router) Retry also failed: llama-server failed to start
"""),
    )
    assert corr.replacing() == frozenset()
    events(corr, log(f"I (Router) Options changed, reloading model: {Q4}"))
    corr.reset()
    assert corr.replacing() == frozenset()
    # v10.7.0 at Info: no line names the new child's port, the load still ends the replacement.
    events(
        corr,
        log(f"""
I (Router) Options changed, reloading model: {Q4}
I (Router) Evicted model: {Q4}
I (LlamaCpp) Loading model: {Q4}
I (ProcessManager) Process started successfully, PID: 12
I (WrappedServer) llama-server is ready!
"""),
    )
    assert corr.replacing() == {Q4}
    events(corr, log("I (Router) Model loaded successfully. Total loaded: 1"))
    assert corr.replacing() == frozenset()


def test_v10_type_wording_and_v9_plain_lines() -> None:
    corr = resident((Q06, 8001, 1), (Q4, 8002, 2))
    got = events(
        corr,
        [
            f"2026-03-20 10:00:00.000 [Info] (Router) Slot limit reached for type llm, evicting LRU: {Q06}",
            f"2026-03-20 10:00:00.001 [Info] (Router) Evicted model: {Q06}",
            f"[Router] Unload model called: {Q4}",
            f"[Router] Evicted model: {Q4}",
        ],
    )
    assert got == [
        ModelEvicted(model=Q06, reason=EvictReason.LRU),
        ModelEvicted(model=Q4, reason=EvictReason.MANUAL),
    ]


def test_deferred_victim_of_a_nuclear_evict_all_keeps_its_reason() -> None:
    corr = resident((Q4, 8001, 1))
    got = events(
        corr,
        log(f"""
W (Router) Load failed with non-file-not-found error, evicting all models and retrying...
I (Router) Evicting all models (1 total)
I (Router) Evicting model: {Q4}
W (Router) Deferring eviction for model {Q4} because requests are still unwinding after 5s (state=busy)
I (Router) Evict all completed. Remaining tombstoned models: 1
I (Router) Evicted model: {Q4}
"""),
    )
    assert got == [ModelEvicted(model=Q4, reason=EvictReason.NUCLEAR)]


def test_shutdown_evictions_are_manual() -> None:
    corr = resident((Q4, 8001, 1))
    got = events(
        corr,
        log(f"""
I (Server) Shutdown request received
I (Server) Unloading models and stopping backend servers...
I (Router) Evicted model: {Q4}
I (Server) All models unloaded
"""),
    )
    assert got == [ModelEvicted(model=Q4, reason=EvictReason.MANUAL)]


def test_missed_evicted_line_is_covered_by_unloaded() -> None:
    corr = resident((Q4, 8001, 1))
    got = events(corr, log(f"I (Server) Model '{Q4}' unloaded successfully"))
    assert got == [ModelEvicted(model=Q4, reason=EvictReason.MANUAL)]


def test_reset_and_spawn_lines_without_a_load_are_ignored() -> None:
    corr = resident((Q4, 8001, 1))
    corr.reset()
    assert corr.resident() == {}
    stray = log("""
I (ProcessManager) Process started successfully, PID: 5
I (Process) main: server is listening on http://127.0.0.1:8009 - starting the main loop
I (WrappedServer) llama-server is ready!
I (Router) Model loaded successfully. Total loaded: 1
""")
    assert events(corr, stray) == []


# Two concurrent /v1/load calls at log_level=info: lemond logs the second request when it
# arrives, while the first model's child starts; the second spawn waits for the first.
CONCURRENT_LOADS = log(f"""
I (Server) Ensuring model loaded: {Q06}
I (LlamaCpp) Loading model: {Q06}
I (LlamaCpp) Using LlamaCpp Backend: vulkan
I (LlamaCpp) Starting llama-server...
I (Server) Ensuring model loaded: {NOMIC}
I (ProcessManager) Process started successfully, PID: 48213
I (Process) main: server is listening on http://127.0.0.1:8001 - starting the main loop
I (WrappedServer) llama-server is ready!
I (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:8001/health (streaming=on, non_streaming=on)
I (Router) Model loaded successfully. Total loaded: 1
I (LlamaCpp) Loading model: {NOMIC}
I (LlamaCpp) Using LlamaCpp Backend: vulkan
I (LlamaCpp) Starting llama-server...
I (ProcessManager) Process started successfully, PID: 48220
I (Process) main: server is listening on http://127.0.0.1:8002 - starting the main loop
I (WrappedServer) llama-server is ready!
I (Router) Model loaded successfully. Total loaded: 2
""")


def test_a_load_requested_during_another_spawn_does_not_take_its_child() -> None:
    corr = Correlator()
    assert events(corr, CONCURRENT_LOADS) == [
        LoadStarted(model=Q06),
        ModelLoaded(model=Q06, port=8001, pid=48213),
        LoadStarted(model=NOMIC),
        ModelLoaded(model=NOMIC, port=8002, pid=48220),
    ]
    assert corr.resident() == {Q06: Residency(8001, 48213), NOMIC: Residency(8002, 48220)}
    assert not corr.take_resync_hint()
