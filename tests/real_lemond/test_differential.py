"""Differential conformance: one scripted scenario against the real lemond and the emulator.

The emulator runs real llama-server children (``--children llama-server``) and the matching
``--lemond-version``; both sides serve the models ``alpha`` and ``beta`` (tiny GGUFs) with
``max_loaded_models = 1``. The scenario: health, models, load, load again, load with other
options, unload, unload of a model not loaded, LRU eviction by a second load, a crashed
child (``kill -9``), 404/405/400 error bodies, WebSocket subscribe, resume and a wrong
message type. Compared per step: the status code, the JSON key sets and value types; and
for the whole run the sequence of lemond's own log lines (child output excluded) after
normalising timestamps, pids, ports, paths and seq numbers.

Every difference is either fixed in the emulator or listed below with the reason it stays.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.real_lemond import start_real_lemond
from tests.support.ws import WSClient

pytestmark = pytest.mark.timeout(3900)

MODELS = ("alpha", "beta")

# Log lines that only one side writes, each with the reason the emulator does not (or cannot)
# match it. ``side`` is "real" or "emulator"; the regex is matched against the normalised line.
KNOWN_LINE_DIFFERENCES: tuple[tuple[str, str, str], ...] = (
    (
        "real",
        r"^\[Info\] \(ModelManager\) ",
        "the model catalogue report; lemond builds it lazily, so it can land inside the scenario's window",
    ),
    (
        "real",
        r"^\[Info\] \(Server\) (Broadcasting disabled by configuration|Unable to broadcast my existance)",
        "lemond's UDP-beacon report, printed once its listeners are up (server.cpp, after the bind): the HTTP API "
        "already answers by then, so the line can land inside the scenario's window (seen once, 2026-11-29)",
    ),
    (
        "real",
        r"^\[Error\] \(Server\) Failed to load model: \[json\.exception",
        "v10.7.0 also logs nlohmann's parse exception for a bad /v1/load body; its exact text is the JSON "
        "library's, which the emulator does not reproduce (known, not fixed)",
    ),
    (
        "real",
        r"^\[Info\] \(WebSocket\) New connection from: ",
        "v10.7.0's separate WebSocket server logs each connection; not reproduced by the emulator (known, not fixed)",
    ),
    (
        "emulator",
        r"^\[Info\] \(Router\) Auto-tune ctx_size resolved to ",
        "the emulator models lemond's default ctx_size = -1 (auto-tune on every load without ctx_size); the real "
        "lemond here is configured with ctx_size = 512, and lemond auto-tunes only a ctx_size of -1",
    ),
)

# The evict-all of v10.7.0 words its lines differently ("Unloading: X" per model, then "All models
# evicted", no "Evicting model"/"Evicted model" pair). Known, not fixed: other tests drive the
# emulator's 10.7 mode through evict-all and the proxy reads the closing "All models unloaded" line.
KNOWN_LINE_DIFFERENCES_V10_7: tuple[tuple[str, str, str], ...] = (
    ("real", r"^\[Info\] \(Router\) Unloading: ", "v10.7.0 evict-all wording (see above)"),
    ("real", r"^\[Info\] \(Router\) All models evicted$", "v10.7.0 evict-all wording (see above)"),
    ("emulator", r"^\[Info\] \(Router\) Evict(ing|ed) model: beta$", "the emulator's evict-all wording"),
    ("emulator", r"^\[Info\] \(Router\) Evict all completed", "the emulator's evict-all wording"),
)

# v10.7.0 shapes the emulator does not reproduce (known, not fixed).
KNOWN_SHAPE_DIFFERENCES_V10_7: dict[str, str] = {
    "data.registry_source": "v10.7.0's /v1/models entries predate registry_source/source/update_available",
    "data.source": "as above",
    "data.update_available": "as above",
    "400 empty body.error": "v10.7.0 answers a bad /v1/load body with an error object (code invalid_request, "
    "nlohmann's message); the emulator answers the v11 string form",
    "400 invalid json.error": "as above",
}

# JSON paths whose key set or value type may differ, with the reason.
KNOWN_SHAPE_DIFFERENCES: dict[str, str] = {
    "recipe_options.llamacpp_args": "the real lemond omits llamacpp_args when no args are configured; the emulator "
    "follows the SPEC fixture health_two_loaded.json, taken from an install that lists it as an empty string",
}


class Target(Protocol):
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = ...,
        headers: dict[str, str] | None = ...,
        timeout: float = ...,
    ) -> tuple[int, dict[str, str], bytes]: ...

    def health(self) -> dict[str, Any]: ...


@dataclass
class Step:
    name: str
    status: int
    body: Any


@dataclass
class Run:
    steps: list[Step] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    frames: dict[str, Any] = field(default_factory=dict)


def call(target: Target, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, data = target.request(method, path, body, headers, 120.0)
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data.decode("utf-8", "replace")


def ws_port(target: Target) -> int:
    return int(target.health()["websocket_port"])


def last_seq(target: Target) -> int:
    with WSClient(ws_port(target)) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": None})
        snap = ws.recv_json()
    return int(snap["entries"][-1]["seq"]) if snap["entries"] else 0


def run_scenario(target: Target, version: str) -> Run:
    run = Run()

    def step(name: str, method: str, path: str, body: Any = None) -> Any:
        raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        status, doc = call(target, method, path, raw)
        run.steps.append(Step(name, status, doc))
        return doc

    start = last_seq(target)
    step("health idle", "GET", "/v1/health")
    step("models", "GET", "/v1/models")
    step("load", "POST", "/v1/load", {"model_name": "alpha"})
    step("health loaded", "GET", "/v1/health")
    step("load again", "POST", "/v1/load", {"model_name": "alpha"})
    step("load with other options", "POST", "/v1/load", {"model_name": "alpha", "ctx_size": 256})
    step("unload", "POST", "/v1/unload", {"model_name": "alpha"})
    step("unload not loaded", "POST", "/v1/unload", {"model_name": "alpha"})
    step("load first", "POST", "/v1/load", {"model_name": "alpha"})
    step("load second (LRU eviction)", "POST", "/v1/load", {"model_name": "beta"})
    step("health after eviction", "GET", "/v1/health")
    pid = int(target.health()["all_models_loaded"][0]["pid"])
    os.kill(pid, signal.SIGKILL)
    if version != "10.7.0":
        # The watchdog reaps the child and /v1/health drops it (within its 5 s tick for real).
        assert wait_until(lambda: target.health()["all_models_loaded"] == [], 15)
        assert wait_until(lambda: last_line_has(target, "backend marked unavailable"), 15)
    else:
        time.sleep(1.0)  # v10.7.0 has no watchdog: nothing happens, the dead child stays listed
    step("health after crash", "GET", "/v1/health")
    step("load after crash", "POST", "/v1/load", {"model_name": "beta"})
    step("404 unknown endpoint", "GET", "/v1/no-such-endpoint")
    step("405 GET on a POST route", "GET", "/v1/load")
    step("400 empty body", "POST", "/v1/load", b"")
    step("400 invalid json", "POST", "/v1/load", b"{not json")
    step("404 unknown model", "POST", "/v1/load", {"model_name": "no-such-model"})
    step("unload all", "POST", "/v1/unload", {})
    time.sleep(0.3)  # let the last lines reach the log hub before the snapshot below

    with WSClient(ws_port(target)) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": start})
        snap = ws.recv_json()
        run.frames["resume snapshot"] = snap
        run.lines = [e["line"] for e in snap["entries"]]
        ws.send_json({"type": "logs.unsubscribe"})
        run.frames["wrong message type"] = ws.recv_json()
    with WSClient(ws_port(target)) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": None})
        run.frames["subscribe snapshot"] = ws.recv_json()
    return run


def last_line_has(target: Target, needle: str) -> bool:
    with WSClient(ws_port(target)) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": None})
        snap = ws.recv_json()
    return any(needle in e["line"] for e in snap["entries"])


# -- normalisation ------------------------------------------------------------------------

_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
_SUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\]):\d+"), "http://<HOST>:<PORT>"),
    # Filesystem paths (model files, cache dirs), not the URL paths of the access log.
    (re.compile(r"(?<![\w.])/(?:tmp|root|home|var|opt|usr|work)/[\w.\-/]+"), "<PATH>"),
    (re.compile(r"\bPID:? \d+"), "PID <PID>"),
    (re.compile(r"\bport:? \d+"), "port <PORT>"),
    (re.compile(r"\b\d+ ?ms\b"), "<N>ms"),
    # Log lines name a model from extra_models_dir by its internal key (extra.<name>), /v1/health by
    # <name>; the emulator's catalog models are not extra_models_dir models.
    (re.compile(r"\bextra\.(alpha|beta)\b"), r"\1"),
    # The backend flavour is configuration: "system" for the real lemond here (llama-server from
    # PATH), the emulator names the flavour of the binary it starts ("cpu").
    (re.compile(r"Using LlamaCpp Backend: \S+"), "Using LlamaCpp Backend: <BACKEND>"),
)


def normalise(line: str) -> str | None:
    """One comparable form of a log line, or None for child output (its own program's text)."""
    text = _STAMP.sub("", line.rstrip())
    if text.startswith("[Info] (Process)") or text.startswith("[Error] (Process)"):
        return None
    for pattern, repl in _SUBS:
        text = pattern.sub(repl, text)
    return text


def comparable(lines: list[str], side: str, version: str) -> list[str]:
    known = KNOWN_LINE_DIFFERENCES + (KNOWN_LINE_DIFFERENCES_V10_7 if version == "10.7.0" else ())
    out = []
    for line in lines:
        norm = normalise(line)
        if norm is None:
            continue
        if any(s == side and re.search(rx, norm) for s, rx, _ in known):
            continue
        out.append(norm)
    return out


def shape_diffs(real: Any, emu: Any, where: str, known: dict[str, str] = KNOWN_SHAPE_DIFFERENCES) -> list[str]:
    """Key-set and value-type differences (numbers are one type; list items use the first)."""
    if where in known:
        return []
    if isinstance(real, dict) and isinstance(emu, dict):
        out = []
        tail = where.rsplit(".", 1)[-1].removesuffix("[]")
        only_real = sorted(k for k in set(real) - set(emu) if f"{tail}.{k}" not in known)
        only_emu = sorted(k for k in set(emu) - set(real) if f"{tail}.{k}" not in known)
        if only_real or only_emu:
            out.append(f"{where}: keys real-only {only_real} emulator-only {only_emu}")
        for key in sorted(set(real) & set(emu)):
            out += shape_diffs(real[key], emu[key], f"{where}.{key}", known)
        return out
    if isinstance(real, list) and isinstance(emu, list):
        if real and emu:
            return shape_diffs(real[0], emu[0], f"{where}[]", known)
        return [] if not real and not emu else [f"{where}: list lengths {len(real)} vs {len(emu)}"]
    if _kind(real) != _kind(emu):
        return [f"{where}: real {_kind(real)} ({real!r:.80}) vs emulator {_kind(emu)} ({emu!r:.80})"]
    return []


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


# -- fixtures -----------------------------------------------------------------------------


def _catalog(tmp: Path) -> Path:
    path = tmp / "catalog.json"
    models = [
        {
            "name": m,
            "type": "llm",
            "checkpoint": f"local/{m}-GGUF:F32",
            "labels": ["custom", "chat"],
            "ctx_size": 512,
            # the tiny GGUF's context_length, which the real lemond reads from the file
            "max_context_window": 4096,
        }
        for m in MODELS
    ]
    path.write_text(json.dumps({"models": models}))
    return path


@pytest.fixture(scope="module")
def runs(lemond_version: str) -> Iterator[tuple[Run, Run]]:
    with start_real_lemond(lemond_version, max_loaded_models=1, models=MODELS) as lem:
        real = run_scenario(lem, lemond_version)
    with tempfile.TemporaryDirectory(prefix="hal0-diff-") as tmp:
        emu: EmulatorProcess = start_emulator(
            children="llama-server",
            max_loaded_models=1,
            catalog=_catalog(Path(tmp)),
            lemond_version=lemond_version.rsplit(".", 1)[0],
            unload_pause_seconds=2.0,
            log_level="info",
            watchdog_poll_seconds=1.0,
        )
        with emu:
            emulated = run_scenario(emu, lemond_version)
    yield real, emulated


def test_status_codes_match(runs: tuple[Run, Run]) -> None:
    real, emu = runs
    pairs = [(r.name, r.status, e.status) for r, e in zip(real.steps, emu.steps, strict=True)]
    assert [p for p in pairs if p[1] != p[2]] == []


def test_json_shapes_match(runs: tuple[Run, Run], lemond_version: str) -> None:
    real, emu = runs
    known = {**KNOWN_SHAPE_DIFFERENCES, **(KNOWN_SHAPE_DIFFERENCES_V10_7 if lemond_version == "10.7.0" else {})}
    diffs: list[str] = []
    for r, e in zip(real.steps, emu.steps, strict=True):
        diffs += shape_diffs(r.body, e.body, r.name, known)
    for name in real.frames:
        diffs += shape_diffs(real.frames[name], emu.frames[name], f"ws {name}", known)
    assert diffs == [], "\n".join(diffs)


def test_log_lines_match(runs: tuple[Run, Run], lemond_version: str) -> None:
    real, emu = runs
    a, b = comparable(real.lines, "real", lemond_version), comparable(emu.lines, "emulator", lemond_version)
    assert a == b, "\n".join(difflib.unified_diff(a, b, "real", "emulator", lineterm="", n=1))
