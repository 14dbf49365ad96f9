# ruff: noqa: E501  (verbatim log lines are long; splitting them would hide what is tested)
"""Parser corpus: every line of the lemond fixture plus hand-written variants, each with
the fact it must produce (``None``: the line says nothing the proxy acts on).

``FIXTURE_CASES`` holds every non-comment line of
``tests/fixtures/lemond/log_lines.txt`` with its annotations (``[child]``,
``[stdout-only]``, ``(curl text varies)``) stripped; ``test_parser`` checks the list is
still complete when the fixture changes. ``[stdout-only]`` lines never reach the log
stream and must give ``None``.
"""

from __future__ import annotations

import re
from pathlib import Path

from hal0proxy.lemond import facts as F
from hal0proxy.lemond.facts import EvictionCause

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lemond" / "log_lines.txt"

# Annotations the fixture appends after two or more spaces (see its header).
ANNOTATION = re.compile(r"\s{2,}(\[(?:child|stdout-only)[^\]]*\]|\(curl text varies\))\s*$")

Case = tuple[str, F.Fact | None]


def fixture_lines() -> list[str]:
    """The fixture's log lines, comments and blank lines skipped, annotations stripped."""
    lines = []
    for raw in FIXTURE.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        lines.append(ANNOTATION.sub("", raw))
    return lines


# fmt: off
FIXTURE_CASES: list[Case] = [
    ('2026-08-22 14:02:11.407 [Info] (main) Starting Lemonade Server...', F.LemondStarting()),
    ('2026-08-22 14:02:11.407 [Info] (main)   Version: 11.7.0', F.LemondVersion(version='11.7.0')),
    ('2026-08-22 14:02:11.407 [Info] (main)   Cache dir: /var/lib/lemonade/.cache/lemonade', None),
    ('2026-08-22 14:02:11.407 [Info] (main)   Config dir: /var/lib/lemonade/.cache/lemonade', None),
    ('2026-08-22 14:02:11.408 [Info] (main)   Port: 13305', None),
    ('2026-08-22 14:02:11.408 [Info] (main)   Host: localhost', None),
    ('2026-08-22 14:02:11.408 [Info] (main)   Log level: info', None),
    ('2026-08-22 14:02:11.409 [Info] (main)   Telemetry: disabled', None),
    ('2026-08-22 14:02:11.611 [Info] (WebSocket) Configured port: 9000', None),
    ('2026-08-22 14:02:11.702 [Info] (Server) Starting HTTP server on localhost:13305', None),
    ('2026-08-22 14:02:11.702 [Info] (Server) Host resolution: IPv4=127.0.0.1, IPv6=::1', None),
    ('2026-08-22 14:02:11.703 [Info] (WebSocket) Server started on port 9000', None),
    ('2026-08-22 14:02:11.703 [Info] (Server) WebSocket server started on port 9000', None),
    ('2026-08-22 14:02:11.704 [Info] (Server) Binding IPv4 HTTP server to 127.0.0.1:13305...', None),
    ('2026-08-22 14:02:11.704 [Info] (Server) Binding IPv6 HTTP server to [::1]:13305...', None),
    ('2026-08-22 14:02:11.705 [Info] (Server) IPv4 HTTP server listening on 127.0.0.1:13305', None),
    ('2026-08-22 14:02:11.705 [Info] (Server) IPv6 HTTP server listening on [::1]:13305', None),
    ('2026-08-22 14:02:11.716 [Info] (Server) Unable to broadcast my existance please use a RFC1918 IPv4,', None),
    ('2026-08-22 14:02:11.716 [Info] (Server) or hostname that resolves to RFC1918 IPv4.', None),
    ('2026-08-22 14:02:11.702 [Error] (Server) Port 13305 on 127.0.0.1 is already in use. Another Lemonade server (lemond) is likely already running on this port. This instance will now exit.', None),
    ('2026-08-22 14:05:21.330 [Debug] (Server) POST /v1/load', None),
    ('2026-08-22 14:05:21.330 [Debug] (Server) ===== LOAD ENDPOINT ENTERED (Thread: 139872201520832) =====', None),
    ('2026-08-22 14:05:21.331 [Info] (Server) Ensuring model loaded: Qwen3-4B-GGUF ', F.LoadRequested(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:05:21.331 [Debug] (Router) Loading model: Qwen3-4B-GGUF (checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0, recipe: llamacpp, type: llm, device: gpu, residency: standard)', F.LoadResolved(model='Qwen3-4B-GGUF', recipe='llamacpp', model_type='llm')),
    ('2026-08-22 14:05:21.332 [Info] (Router) Slot limit reached for pool standard/llm, evicting LRU: Qwen3-0.6B-GGUF', F.EvictionChosen(model='Qwen3-0.6B-GGUF', cause=EvictionCause.LRU, pool='standard/llm')),
    ('2026-08-22 14:05:21.332 [Info] (Router) Evicting model: Qwen3-0.6B-GGUF', F.EvictionStarted(model='Qwen3-0.6B-GGUF')),
    ('2026-08-22 14:05:21.332 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:05:21.334 [Info] (Process) srv    operator(): operator(): cleaning up before exit...', None),
    ('2026-08-22 14:05:21.512 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:05:23.512 [Info] (Router) Evicted model: Qwen3-0.6B-GGUF', F.Evicted(model='Qwen3-0.6B-GGUF')),
    ('2026-08-22 14:05:23.640 [Info] (Router) Auto-tune ctx_size resolved to 32768', None),
    ('2026-08-22 14:05:23.640 [Debug] (Router) Effective settings: ctx_size=32768, llamacpp_backend=vulkan, llamacpp_device=(none), llamacpp_args=(none), merge_args=true, auto_evict=(none), evict_idle_timeout=300, downsize_idle_timeout=60, evict_weight_factor=1.000000, pinned=false', None),
    ("2026-08-22 14:05:23.640 [Debug] (Router) Created backend for recipe 'llamacpp' via registry", None),
    ('2026-08-22 14:05:23.640 [Debug] (Router) Starting backend (this may take a moment)...', None),
    ('2026-08-22 14:05:23.641 [Info] (LlamaCpp) Loading model: Qwen3-4B-GGUF', F.SpawnStarted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:05:23.641 [Debug] (LlamaCpp) Per-model settings: ctx_size=32768, llamacpp_backend=vulkan, llamacpp_device=(none), llamacpp_args=(none), merge_args=true, auto_evict=(none), evict_idle_timeout=300, downsize_idle_timeout=60, evict_weight_factor=1.000000, pinned=false', None),
    ('2026-08-22 14:05:23.641 [Info] (LlamaCpp) Using LlamaCpp Backend: vulkan', None),
    ('2026-08-22 14:05:23.642 [Debug] (WrappedServer) llama-server will use port: 8001', F.PortAnnounced(port=8001, server='llama-server')),
    ('2026-08-22 14:05:23.642 [Info] (LlamaCpp) Starting llama-server...', None),
    ('2026-08-22 14:05:23.643 [Debug] (ProcessManager) Starting process with filtered output: /var/lib/lemonade/.cache/lemonade/bin/llamacpp/vulkan/llama-server -m /var/lib/lemonade/.cache/huggingface/hub/models--unsloth--Qwen3-4B-GGUF/snapshots/5b0e8c1f/Qwen3-4B-Q4_0.gguf --ctx-size 32768 --port 8001 --jinja --metrics', F.PortAnnounced(port=8001)),
    ('2026-08-22 14:05:23.644 [Info] (ProcessManager) Process started successfully, PID: 48213', F.ProcessStarted(pid=48213)),
    ('Waiting for llama-server to be ready (timeout: 600s)...', None),
    ('2026-08-22 14:05:24.010 [Info] (Process) build: 7869 (a1b2c3d4) with cc (GCC) 14.2.1 for x86_64-pc-linux-gnu', None),
    ('2026-08-22 14:05:26.871 [Info] (Process) main: server is listening on http://127.0.0.1:8001 - starting the main loop', F.PortAnnounced(port=8001, serving=True, server='llama-server')),
    ('2026-08-22 14:05:26.902 [Info] (WrappedServer) llama-server is ready!', F.BackendReady(server='llama-server')),
    ('2026-08-22 14:05:26.902 [Info] (BackendWatchdog) Started watchdog for llama-server using http://127.0.0.1:8001/health (streaming=on, non_streaming=on)', F.PortAnnounced(port=8001, serving=True, server='llama-server')),
    ('2026-08-22 14:05:26.902 [Debug] (LlamaCpp) Model loaded on port 8001', F.PortAnnounced(port=8001, serving=True, server='LlamaCpp')),
    ('2026-08-22 14:05:26.903 [Debug] (Router) Backend started successfully in 3261ms', None),
    ('2026-08-22 14:05:26.903 [Info] (Router) Model loaded successfully. Total loaded: 1', F.LoadCompleted(total_loaded=1)),
    ('2026-08-22 14:05:26.903 [Debug] (Server) POST /v1/load - 200', None),
    ('2026-08-22 14:06:00.101 [Debug] (Router) Model already loaded, updating access time and pinned status', None),
    ('2026-08-22 14:06:10.220 [Info] (Router) Options changed, reloading model: Qwen3-4B-GGUF', F.OptionsChanged(model='Qwen3-4B-GGUF')),
    ('2026-04-06 10:00:00.000 [Info] (Server) Reloading model: Qwen3-4B-GGUF ctx_size=8192', F.OptionsChanged(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:07:00.000 [Info] (FastFlowLM) Model loaded on port 8003', F.PortAnnounced(port=8003, serving=True, server='FastFlowLM')),
    ('2026-08-22 14:07:00.000 [Info] (WhisperServer) Starting server on port 8004', F.PortAnnounced(port=8004, server='WhisperServer')),
    ('2026-08-22 14:07:00.000 [Info] (SDServer) Server is ready at http://127.0.0.1:8005', F.PortAnnounced(port=8005, serving=True, server='SDServer')),
    ('2026-08-22 14:08:02.417 [Info] (Server) Auto-loading model: Qwen3-4B-GGUF', F.LoadRequested(model='Qwen3-4B-GGUF', auto=True)),
    ('2026-08-22 14:08:05.990 [Info] (Server) Model loaded successfully: Qwen3-4B-GGUF', F.LoadCompleted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:08:30.001 [Debug] (Server) Model already loaded: Qwen3-4B-GGUF (residency=standard)', None),
    ('2026-08-22 14:08:05.991 [Info] (Server) POST /api/v1/chat/completions - Streaming', None),
    ('2026-08-22 14:08:09.355 [Info] (Server) Streaming completed - 200 OK', None),
    ('2026-08-22 14:08:09.355 [Info] (Telemetry) Inference completed: model=Qwen3-4B-GGUF, tokens=139 (in=27, out=112), ttft=0.214s, tps=48.31', None),
    ('2026-08-22 14:08:40.118 [Info] (Server) POST /api/v1/chat/completions - 200 OK', None),
    ('2026-08-22 14:08:42.770 [Info] (Telemetry) Inference completed: model=Qwen3-4B-GGUF, tokens=139 (in=27, out=112), ttft=0.21s, tps=48.31', None),
    ('2026-08-22 14:08:42.771 [Warn] (StreamingProxy) WARNING: Backend did not send [DONE] marker, adding it', None),
    ('2026-08-22 14:10:00.001 [Info] (Server) Unload request received', None),
    ('2026-08-22 14:10:00.001 [Info] (Router) Unload model called: Qwen3-4B-GGUF', F.UnloadRequested(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:10:00.001 [Info] (Router) Evicting model: Qwen3-4B-GGUF', F.EvictionStarted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:10:00.001 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:10:00.190 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:10:02.190 [Info] (Router) Evicted model: Qwen3-4B-GGUF', F.Evicted(model='Qwen3-4B-GGUF')),
    ("2026-08-22 14:10:02.190 [Info] (Server) Model 'Qwen3-4B-GGUF' unloaded successfully", F.Unloaded(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:11:00.001 [Info] (Server) Unload request received', None),
    ('2026-08-22 14:11:00.001 [Info] (Router) Unload all models called', F.UnloadRequested(model=None)),
    ('2026-08-22 14:11:00.001 [Info] (Router) Evicting all models (2 total)', F.EvictAllStarted(count=2)),
    ('2026-08-22 14:11:00.001 [Info] (Router) Evicting model: Qwen3-4B-GGUF', F.EvictionStarted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:11:00.001 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:11:00.203 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:11:02.203 [Info] (Router) Evicted model: Qwen3-4B-GGUF', F.Evicted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:11:02.203 [Info] (Router) Evicting model: nomic-embed-text-v1-GGUF', F.EvictionStarted(model='nomic-embed-text-v1-GGUF')),
    ('2026-08-22 14:11:02.203 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:11:02.390 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:11:04.390 [Info] (Router) Evicted model: nomic-embed-text-v1-GGUF', F.Evicted(model='nomic-embed-text-v1-GGUF')),
    ('2026-08-22 14:11:04.390 [Info] (Router) Evict all completed. Remaining tombstoned models: 0', F.EvictAllCompleted(tombstoned=0)),
    ('2026-08-22 14:11:04.390 [Info] (Server) All models unloaded successfully', F.Unloaded(model=None)),
    ('2026-08-22 14:11:05.000 [Warn] (ProcessManager) Process did not respond to SIGTERM, using SIGKILL', None),
    ('2026-08-22 14:12:00.001 [Info] (Server) Unload request received', None),
    ('2026-08-22 14:12:00.001 [Info] (Router) Unload model called: Qwen3-4B-GGUF', F.UnloadRequested(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:12:00.001 [Error] (Server) Unload failed: Model not loaded: Qwen3-4B-GGUF', F.UnloadFailed(model='Qwen3-4B-GGUF', reason='Model not loaded: Qwen3-4B-GGUF')),
    ('2026-08-22 14:12:00.002 [Error] (Server) Error 404: POST /v1/unload', None),
    ('2026-08-22 14:12:10.000 [Warn] (Router) Deferring eviction for model Qwen3-4B-GGUF because requests are still unwinding after 5s (state=busy)', F.EvictionDeferred(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:05:21.332 [Info] (Router) Slot limit reached for pool standard/llm, evicting LRU: Qwen3-0.6B-GGUF', F.EvictionChosen(model='Qwen3-0.6B-GGUF', cause=EvictionCause.LRU, pool='standard/llm')),
    ('2026-08-22 14:13:00.000 [Info] (Router) ryzenai-llm requires exclusive NPU access, evicting all NPU servers...', None),
    ('2026-08-22 14:13:00.000 [Info] (Router) Evicting NPU server: qwen3.5-9b-FLM', F.EvictionChosen(model='qwen3.5-9b-FLM', cause=EvictionCause.PRESSURE)),
    ('2026-08-22 14:13:00.000 [Info] (Router) FLM cannot coexist with ryzenai-llm, evicting: Llama-3.2-1B-Instruct-Hybrid', F.EvictionChosen(model='Llama-3.2-1B-Instruct-Hybrid', cause=EvictionCause.PRESSURE)),
    ('2026-08-22 14:13:00.000 [Info] (Router) FLM llm slot occupied by: qwen3.5-9b-FLM, evicting...', F.EvictionChosen(model='qwen3.5-9b-FLM', cause=EvictionCause.PRESSURE)),
    ('2026-08-22 14:15:30.004 [Info] (evaluate_servers) Model Qwen3-4B-GGUF reached downsize idle timeout (60s). Marking for downsize.', None),
    ('2026-08-22 14:15:30.004 [Info] (LlamaCpp) Downsizing model by erasing KV cache...', None),
    ('2026-08-22 14:15:30.062 [Info] (evaluate_servers) Model Qwen3-4B-GGUF downsized.', None),
    ('2026-08-22 14:19:30.010 [Info] (evaluate_servers) Model Qwen3-4B-GGUF reached evict idle timeout (300s). Evicting.', F.EvictionChosen(model='Qwen3-4B-GGUF', cause=EvictionCause.IDLE)),
    ('2026-08-22 14:19:30.010 [Info] (evaluate_servers) Eviction Engine unloading model: Qwen3-4B-GGUF due to score/pressure/idle.', F.EvictionChosen(model='Qwen3-4B-GGUF', cause=EvictionCause.ENGINE)),
    ('2026-08-22 14:19:30.010 [Info] (Router) Evicting model: Qwen3-4B-GGUF', F.EvictionStarted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:19:30.010 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:19:30.201 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:19:32.201 [Info] (Router) Evicted model: Qwen3-4B-GGUF', F.Evicted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:20:00.000 [Info] (on_vram_pressure) VRAM pressure critical (95% >= 90%). Evaluating eviction.', F.VramPressure(percent=95)),
    ('2026-08-22 14:20:00.001 [Info] (Router) Eviction of Qwen3-4B-GGUF cancelled (rescued by in-flight request)', F.EvictionCancelled(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:20:00.001 [Warn] (evaluate_servers) Downsize of Qwen3-4B-GGUF failed; left ready.', None),
    ('2026-08-22 14:21:00.100 [Info] (LlamaCpp) Starting llama-server...', None),
    ('2026-08-22 14:21:00.101 [Info] (ProcessManager) Process started successfully, PID: 48990', F.ProcessStarted(pid=48990)),
    ('2026-08-22 14:21:00.530 [Error] (Process) llama_model_load: error loading model: unable to allocate Vulkan0 buffer', None),
    ('2026-08-22 14:21:00.911 [Error] (WrappedServer) llama-server process has terminated with exit code: 1', F.ChildTerminated(exit_code=1, server='llama-server')),
    ('2026-08-22 14:21:00.911 [Error] (WrappedServer) This usually means:', None),
    ('2026-08-22 14:21:00.911 [Error] (WrappedServer)   - Missing required drivers or dependencies', None),
    ('2026-08-22 14:21:00.911 [Error] (WrappedServer)   - Incompatible model file', None),
    ('2026-08-22 14:21:00.911 [Error] (WrappedServer)   - Try running the server manually to see the actual error', None),
    ('2026-08-22 14:21:00.912 [Error] (Router) Backend load failed: llama-server failed to start', F.BackendLoadFailed(reason='llama-server failed to start')),
    ('2026-08-22 14:21:00.912 [Warn] (Router) Load failed with non-file-not-found error, evicting all models and retrying...', F.NuclearRetry()),
    ('2026-08-22 14:21:00.912 [Info] (Router) Evicting all models (1 total)', F.EvictAllStarted(count=1)),
    ('2026-08-22 14:21:00.912 [Info] (Router) Evicting model: nomic-embed-text-v1-GGUF', F.EvictionStarted(model='nomic-embed-text-v1-GGUF')),
    ('2026-08-22 14:21:00.912 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:21:01.101 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:21:03.101 [Info] (Router) Evicted model: nomic-embed-text-v1-GGUF', F.Evicted(model='nomic-embed-text-v1-GGUF')),
    ('2026-08-22 14:21:03.101 [Info] (Router) Evict all completed. Remaining tombstoned models: 0', F.EvictAllCompleted(tombstoned=0)),
    ('2026-08-22 14:21:03.101 [Debug] (Router) Retrying backend load...', F.RetryStarted()),
    ('2026-08-22 14:21:03.102 [Info] (LlamaCpp) Loading model: Qwen3-4B-GGUF', F.SpawnStarted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:21:06.400 [Debug] (Router) Retry successful in 3298ms!', F.RetrySucceeded(duration_ms=3298)),
    ('2026-08-22 14:21:04.300 [Error] (Router) Retry also failed: llama-server failed to start', F.RetryFailed(reason='llama-server failed to start')),
    ('2026-08-22 14:21:04.300 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:21:04.300 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:21:04.300 [Error] (Router) Failed to load model: llama-server failed to start', F.LoadFailure(model=None, reason='llama-server failed to start')),
    ('2026-08-22 14:21:04.301 [Error] (Server) Failed to load model: llama-server failed to start', F.LoadFailure(model=None, reason='llama-server failed to start')),
    ('2026-08-22 14:21:04.301 [Error] (Server) Error 500: POST /v1/load', None),
    ('2026-08-22 14:21:04.301 [Debug] (Server) POST /v1/load - 500', None),
    ('2026-08-22 14:22:00.000 [Error] (Router) Backend load failed: GGUF file not found for checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0', F.BackendLoadFailed(reason='GGUF file not found for checkpoint: unsloth/Qwen3-4B-GGUF:Q4_0', file_not_found=True)),
    ('2026-08-22 14:22:00.000 [Error] (Router) File not found error, NOT evicting other models', F.LoadNotRetried(reason='file not found')),
    ('2026-08-22 14:31:00.000 [Error] (WrappedServer) llama-server failed to start within timeout', None),
    ('2026-08-22 14:40:05.002 [Error] (BackendWatchdog) llama-server backend marked unavailable: backend process exited while watchdog was active; reaped exited backend process PID 48213 (exit_code=137)', F.BackendReaped(pid=48213, exit_code=137, server='llama-server', cause='backend process exited while watchdog was active')),
    ('2026-08-22 14:41:10.300 [Warn] (Router) Pruning unavailable backend for model: Qwen3-4B-GGUF (state=watchdog_reset)', F.BackendPruned(model='Qwen3-4B-GGUF', state='watchdog_reset')),
    ('2026-08-22 14:41:10.300 [Info] (Router) Evicting model: Qwen3-4B-GGUF', F.EvictionStarted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:41:10.300 [Info] (LlamaCpp) Unloading model...', None),
    ('2026-08-22 14:41:10.300 [Info] (Router) Evicted model: Qwen3-4B-GGUF', F.Evicted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:41:10.301 [Info] (Server) Auto-loading model: Qwen3-4B-GGUF', F.LoadRequested(model='Qwen3-4B-GGUF', auto=True)),
    ('2026-08-22 14:41:13.800 [Info] (Server) Model loaded successfully: Qwen3-4B-GGUF', F.LoadCompleted(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:42:00.500 [Error] (WrappedServer) Streaming request failed: backend connection failed during SSE stream before DONE: CURL error: transfer closed with outstanding read data remaining', None),
    ('2026-08-22 14:42:00.500 [Error] (BackendWatchdog) llama-server backend marked unavailable: backend process exited during streaming request; reaped exited backend process PID 49102 (exit_code=134)', F.BackendReaped(pid=49102, exit_code=134, server='llama-server', cause='backend process exited during streaming request')),
    ('2026-08-22 14:42:00.501 [Warn] (Router) Reloading model after backend watchdog reset: Qwen3-4B-GGUF', F.WatchdogReload(model='Qwen3-4B-GGUF')),
    ('2026-08-22 14:42:00.501 [Warn] (Router) Pruning unavailable backend for model: Qwen3-4B-GGUF (state=watchdog_reset)', F.BackendPruned(model='Qwen3-4B-GGUF', state='watchdog_reset')),
    ('2026-08-22 14:42:04.000 [Error] (Router) Automatic reload after watchdog reset failed for Qwen3-4B-GGUF: llama-server failed to start', F.LoadFailure(model='Qwen3-4B-GGUF', reason='llama-server failed to start')),
    ('2026-08-22 14:45:35.000 [Warn] (BackendWatchdog) llama-server health probe failed 1/3 after 95s without observable progress', None),
    ('2026-08-22 14:45:40.000 [Warn] (BackendWatchdog) llama-server health probe failed 2/3 after 100s without observable progress', None),
    ('2026-08-22 14:45:45.000 [Warn] (BackendWatchdog) llama-server health probe failed 3/3 after 105s without observable progress', None),
    ('2026-08-22 14:45:45.000 [Error] (BackendWatchdog) llama-server backend marked unavailable: health endpoint did not respond after 3 consecutive probes while a request was active; terminating and reaping backend process PID 49230', F.BackendReaped(pid=49230, exit_code=None, server='llama-server', cause='health endpoint did not respond after 3 consecutive probes while a request was active')),
    ('2026-08-22 14:45:50.100 [Warn] (ProcessManager) Process did not respond to SIGTERM, using SIGKILL', None),
    ('2026-08-22 14:45:50.101 [Info] (ProcessManager) Process terminated, waiting for GPU driver cleanup...', None),
    ('2026-08-22 14:05:26.902 [Info] (BackendWatchdog) llama-server watchdog disabled', None),
    ('2026-08-22 14:46:00.000 [Warn] (Router) Existing backend for Qwen3-4B-GGUF is unavailable (state=exited), evicting before reload', F.BackendPruned(model='Qwen3-4B-GGUF', state='exited')),
    ('2026-08-22 14:50:00.000 [Debug] (WebSocket) New connection from: 127.0.0.1 (id: 31)', None),
    ('2026-08-22 14:50:00.000 [Warn] (WebSocket) Rejected connection from unauthorized origin: http://evil.example', None),
    ('2026-08-22 14:50:00.000 [Warn] (WebSocket) Rejected upgrade for path: /logs/stream due to missing credentials', None),
    ('2026-08-22 14:50:00.000 [Warn] (WebSocket) Rejected websocket connection with invalid API key for /logs/stream', None),
    ('2026-08-22 14:50:01.000 [Error] (Server) Error 404: GET /logs/stream', None),
    ('2026-08-22 14:50:02.000 [Info] (Server) Log level changed to: debug', None),
    ('2026-08-22 14:50:03.000 [Info] (Server) Shutdown request received', F.LemondStopping()),
    ('2026-08-22 14:50:03.000 [Info] (Server) Unloading models and stopping backend servers...', None),
    ('2026-08-22 14:50:05.000 [Info] (Server) All models unloaded', F.Unloaded(model=None)),
    ('[Router] Evicting model: Qwen3-0.6B-GGUF', F.EvictionStarted(model='Qwen3-0.6B-GGUF')),
    ('[Router] Evicted model: Qwen3-0.6B-GGUF', F.Evicted(model='Qwen3-0.6B-GGUF')),
    ('[Router] Load failed with non-file-not-found error, evicting all models and retrying...', F.NuclearRetry()),
    ('[Router] Retry also failed: llama-server failed to start', F.RetryFailed(reason='llama-server failed to start')),
    ('[Router] Unload model called: Qwen3-4B-GGUF', F.UnloadRequested(model='Qwen3-4B-GGUF')),
]

_TS = "2026-08-22 14:05:21.331"

EXTRA_CASES: list[Case] = [
    # -- wording and format variants --------------------------------------------------
    # v10.0-v11.0 said "for type llm"; v11.1+ "for pool standard/llm".
    (f"{_TS} [Info] (Router) Slot limit reached for type llm, evicting LRU: Qwen3-0.6B-GGUF",
     F.EvictionChosen(model="Qwen3-0.6B-GGUF", cause=EvictionCause.LRU, pool="llm")),
    (f"{_TS} [Info] (Router) Slot limit reached for pool standard/embedding, evicting LRU: nomic-embed-text-v1-GGUF",
     F.EvictionChosen(model="nomic-embed-text-v1-GGUF", cause=EvictionCause.LRU, pool="standard/embedding")),
    # "Warning" as the docs spell it is tolerated like lemond's real "Warn".
    (f"{_TS} [Warning] (Router) Load failed with non-file-not-found error, evicting all models and retrying...",
     F.NuclearRetry()),
    (f"{_TS} [Warning] (Router) Pruning unavailable backend for model: m1 (state=watchdog_reset)",
     F.BackendPruned(model="m1", state="watchdog_reset")),
    # Trailing spaces and CRLF.
    (f"{_TS} [Info] (Router) Evicted model: Qwen3-4B-GGUF   ", F.Evicted(model="Qwen3-4B-GGUF")),
    (f"{_TS} [Info] (Router) Evicting model: Qwen3-4B-GGUF\r", F.EvictionStarted(model="Qwen3-4B-GGUF")),
    (f"{_TS} [Info] (Server) Ensuring model loaded: Qwen3-4B-GGUF ctx_size=8192, llamacpp_backend=rocm",
     F.LoadRequested(model="Qwen3-4B-GGUF", options="ctx_size=8192, llamacpp_backend=rocm")),
    (f"{_TS} [Info] (Server) Ensuring model loaded: Qwen3-4B-GGUF", F.LoadRequested(model="Qwen3-4B-GGUF")),
    (f"{_TS} [Info] (Server) Ensuring model loaded: qwen3.5-9b-FLM ", F.LoadRequested(model="qwen3.5-9b-FLM")),
    # The docs put the banner under (Server); the code under (main).
    (f"{_TS} [Info] (Server) Starting Lemonade Server...", F.LemondStarting()),
    # journald in front of the aixlog line (issue #1804).
    ("May 05 17:07:23 host lemond[812]: 2026-05-05 17:07:23.985 [Info] (Router) Evicted model: Qwen3-4B-GGUF",
     F.Evicted(model="Qwen3-4B-GGUF")),
    ("May 05 17:07:23 host lemond[812]: 2026-05-05 17:07:23.985 [Info] (Process) "
     "main: server is listening on http://127.0.0.1:8002 - starting the main loop",
     F.PortAnnounced(port=8002, serving=True, server="llama-server")),
    # -- v9 plain lines ---------------------------------------------------------------
    ("[Router] Evicted model: Qwen3-0.6B-GGUF  ", F.Evicted(model="Qwen3-0.6B-GGUF")),
    ("[Router] Slot limit reached for type llm, evicting LRU: Qwen3-0.6B-GGUF",
     F.EvictionChosen(model="Qwen3-0.6B-GGUF", cause=EvictionCause.LRU, pool="llm")),
    ("[Router] Unload all models called", F.UnloadRequested(model=None)),
    ("[Router] Backend load failed: llama-server failed to start",
     F.BackendLoadFailed(reason="llama-server failed to start")),
    ("[Router] Failed to load model: llama-server failed to start",
     F.LoadFailure(model=None, reason="llama-server failed to start")),
    ("[LlamaCpp] Loading model: Qwen3-4B-GGUF", F.SpawnStarted(model="Qwen3-4B-GGUF")),
    ("[ProcessManager] Process started successfully, PID: 4242", F.ProcessStarted(pid=4242)),
    ("[Server] Auto-loading model: Qwen3-4B-GGUF", F.LoadRequested(model="Qwen3-4B-GGUF", auto=True)),
    # v9 relayed the child's output bare; only the listening line is read from it.
    ("main: server is listening on http://127.0.0.1:8001 - starting the main loop",
     F.PortAnnounced(port=8001, serving=True, server="llama-server")),
    ("[Router]", None),
    ("[Router]Evicted model: x", None),
    # -- child output -----------------------------------------------------------------
    # The early listener line of some builds precedes the model load: a port, not serving.
    (f"{_TS} [Info] (Process) main: HTTP server is listening, hostname: 127.0.0.1, port: 8001, http threads: 15",
     F.PortAnnounced(port=8001, server="llama-server")),
    # llama.cpp's own timestamped log format inside the (Process) line.
    (f"{_TS} [Info] (Process) 0.03.512.261 I main: server is listening on http://127.0.0.1:8003 - starting the main loop",
     F.PortAnnounced(port=8003, serving=True, server="llama-server")),
    (f"{_TS} [Info] (Process) main: server is listening on http://[::1]:8004 - starting the main loop",
     F.PortAnnounced(port=8004, serving=True, server="llama-server")),
    # Newer builds (the llama-server this project builds from PyPI): after "model loaded".
    (f"{_TS} [Info] (Process) 0.00.037.476 I srv  llama_server: listening on http://127.0.0.1:8005",
     F.PortAnnounced(port=8005, serving=True, server="llama-server")),
    (f"{_TS} [Info] (Server) llama_server: listening on http://127.0.0.1:8005", None),
    # Child chatter quoting lemond's wording is not lemond speaking.
    (f"{_TS} [Info] (Process) Evicted model: Qwen3-4B-GGUF", None),
    (f"{_TS} [Info] (Process) llama-server is ready!", None),
    (f"{_TS} [Error] (Process) Backend load failed: nope", None),
    (f"{_TS} [Info] (Process) Model loaded on port 8009", None),
    # -- multi-line messages ----------------------------------------------------------
    # A continuation entry carries the first line's tag but not its wording.
    (f"{_TS} [Info] (Router)   Evicted model: Qwen3-4B-GGUF", None),
    (f"{_TS} [Error] (WrappedServer)   - Incompatible model file", None),
    # A raw chunk with an embedded newline: only the first line counts.
    (f"{_TS} [Info] (Router) Evicted model: A\n{_TS} [Info] (Router) Evicted model: B", F.Evicted(model="A")),
    (f"{_TS} [Info] (Server) Model 'A' unloaded\n successfully", None),
    # -- other backends and ports -----------------------------------------------------
    (f"{_TS} [Info] (RyzenAI) Model loaded on port 8006",
     F.PortAnnounced(port=8006, serving=True, server="RyzenAI")),
    (f"{_TS} [Info] (KokoroServer) Starting server on port 8007", F.PortAnnounced(port=8007, server="KokoroServer")),
    (f"{_TS} [Debug] (WrappedServer) whisper-server will use port: 8008",
     F.PortAnnounced(port=8008, server="whisper-server")),
    (f"{_TS} [Info] (BackendWatchdog) Started watchdog for llama-server using http://[::1]:8010/health (streaming=on, non_streaming=on)",
     F.PortAnnounced(port=8010, serving=True, server="llama-server")),
    (f"{_TS} [Info] (WrappedServer) whisper-server is ready!", F.BackendReady(server="whisper-server")),
    # lemond's own listeners are not children.
    (f"{_TS} [Info] (WebSocket) Starting server on port 9000", None),
    (f"{_TS} [Info] (Server) Starting server on port 13305", None),
    # -- failures ---------------------------------------------------------------------
    (f"{_TS} [Error] (Router) Load cancelled, skipping nuclear retry", F.LoadNotRetried(reason="load cancelled")),
    (f"{_TS} [Error] (Server) Failed to load model: GGUF file does not exist",
     F.LoadFailure(model=None, reason="GGUF file does not exist", file_not_found=True)),
    (f"{_TS} [Error] (Router) Backend load failed: No such file or directory",
     F.BackendLoadFailed(reason="No such file or directory", file_not_found=True)),
    (f"{_TS} [Error] (Router) Automatic reload after watchdog reset failed for user.qwen3:8b: boom",
     F.LoadFailure(model="user.qwen3:8b", reason="boom")),
    (f"{_TS} [Error] (WrappedServer) llama-server process has terminated with exit code: -11",
     F.ChildTerminated(exit_code=-11, server="llama-server")),
    (f"{_TS} [Error] (Server) Unload failed: something else", F.UnloadFailed(model=None, reason="something else")),
    # -- eviction engine under another function name ----------------------------------
    (f"{_TS} [Info] (run_loop) Model m2 reached evict idle timeout (300s). Evicting.",
     F.EvictionChosen(model="m2", cause=EvictionCause.IDLE)),
    # -- garbage and bounds -----------------------------------------------------------
    ("", None),
    ("   ", None),
    ("\n", None),
    (f"{_TS} [Info] (main)", None),
    (f"{_TS} [Info] (main) ", None),
    (f"{_TS} [Info] (Router", None),
    (f"{_TS} [Info]", None),
    (f"{_TS} [Info] (ProcessManager) Process started successfully, PID: 99999999999999999999999", None),
    (f"{_TS} [Error] (BackendWatchdog) x backend marked unavailable: y; reaped exited backend process PID "
     + "9" * 5000, None),
]
# fmt: on
