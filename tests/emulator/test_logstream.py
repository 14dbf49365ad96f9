"""The WebSocket /logs/stream protocol (SPEC §5.2), per lemond release."""

from __future__ import annotations

import re

import pytest

from tests.support.emulator import EmulatorProcess, fixture, start_emulator
from tests.support.shapes import assert_same_shape
from tests.support.ws import WSClient, WSClosed, WSRejected

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(Trace|Debug|Info|Notice|Warn|Error|Fatal)\] \((\w+)\) ")
SMALL = "Qwen3-0.6B-GGUF"


def subscribe(ws: WSClient, after_seq: int | None = None) -> dict:
    ws.send_json({"type": "logs.subscribe", "after_seq": after_seq})
    frame = ws.recv_json()
    assert frame["type"] == "logs.snapshot"
    return frame


def test_nothing_before_subscribe_then_snapshot_and_entries(fresh: EmulatorProcess) -> None:
    with WSClient(fresh.port, subprotocols=("lemonade-realtime",)) as ws:
        assert ws.subprotocol == "lemonade-realtime"
        ws.expect_silence(0.3)
        snapshot = subscribe(ws)
        assert_same_shape(snapshot, fixture("ws_logs_snapshot.json"))
        entries = snapshot["entries"]
        assert entries[0]["seq"] == 1
        assert entries[0]["line"].endswith("[Info] (main) Starting Lemonade Server...")
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        for entry in entries:
            match = LINE.match(entry["line"])
            assert match, entry["line"]
            assert entry["severity"] == match.group(1) and entry["tag"] == match.group(2)
            assert entry["line"].startswith(entry["timestamp"] + " ")

        assert fresh.post("/v1/load", {"model_name": SMALL})[0] == 200
        frames = []
        while not any("Model loaded successfully" in f["entry"]["line"] for f in frames):
            frames.append(ws.recv_json())
        for frame in frames:
            assert_same_shape(frame, fixture("ws_logs_entry.json"))
        seqs = [f["entry"]["seq"] for f in frames]
        assert seqs == list(range(entries[-1]["seq"] + 1, entries[-1]["seq"] + 1 + len(seqs)))
        text = [f["entry"]["line"] for f in frames]
        assert any("(ProcessManager) Process started successfully, PID: " in t for t in text)
        assert any("(Process) main: server is listening on http://127.0.0.1:" in t for t in text)
        ready = next(i for i, t in enumerate(text) if t.endswith("(WrappedServer) llama-server is ready!"))
        listening = next(i for i, t in enumerate(text) if "server is listening" in t)
        assert listening < ready


def test_resume_after_seq_and_duplicate_subscribe(fresh: EmulatorProcess) -> None:
    with WSClient(fresh.port) as ws:
        entries = subscribe(ws)["entries"]
        after = entries[-3]["seq"]
    with WSClient(fresh.port, "/api/v1/logs/stream") as ws:
        resumed = subscribe(ws, after)["entries"]
        assert [e["seq"] for e in resumed] == [e["seq"] for e in entries[-2:]]
        subscribe(ws, 10**9)  # a second subscribe adds a second subscriber
        fresh.post("/v1/unload", {"model_name": "nope"})
        first, second = ws.recv_json(), ws.recv_json()
        assert first == second, "live entries are duplicated after a second subscribe"


def test_error_frames(fresh: EmulatorProcess) -> None:
    with WSClient(fresh.port) as ws:
        ws.send_text("x")
        error = ws.recv_json()
        assert_same_shape(error, fixture("ws_logs_error_bad_json.json"))
        assert error["error"]["message"] == fixture("ws_logs_error_bad_json.json")["error"]["message"]
        ws.send_json({"type": "hello"})
        assert ws.recv_json() == fixture("ws_logs_error_wrong_message.json")
        ws.send_json({"op": "logs.subscribe"})
        assert ws.recv_json()["type"] == "error"


@pytest.mark.parametrize("path", ["/logs/stream", "/v1/logs/stream", "/v0/logs/stream", "/api/v0/logs/stream"])
def test_every_path_on_main_and_websocket_port(fresh: EmulatorProcess, path: str) -> None:
    ws_port = fresh.health()["websocket_port"]
    for port in (fresh.port, ws_port):
        with WSClient(port, path) as ws:
            assert subscribe(ws)["entries"][0]["seq"] == 1


def test_ws_drop_closes_every_socket(fresh: EmulatorProcess) -> None:
    ws_port = fresh.health()["websocket_port"]
    with WSClient(fresh.port) as a, WSClient(ws_port) as b:
        subscribe(a)
        subscribe(b)
        status, body = fresh.post("/_emu/ws_drop", {})
        assert status == 200 and body["dropped"] == 2
        assert a.wait_closed(5.0) and b.wait_closed(5.0)
    assert fresh.state()["ws_subscribers"] == 0


def test_restart_closes_sockets_and_seq_restarts(fresh: EmulatorProcess) -> None:
    with WSClient(fresh.port) as ws:
        entries = subscribe(ws)["entries"]
        fresh.post("/v1/unload", {"model_name": "nope"})
        assert ws.recv_json()["entry"]["seq"] == entries[-1]["seq"] + 1
        fresh.post("/_emu/restart", {})
        with pytest.raises((WSClosed, TimeoutError, OSError)):
            while True:
                ws.recv_json(timeout=5.0)
    with WSClient(fresh.port) as ws:
        entries = subscribe(ws)["entries"]
        assert entries[0]["seq"] == 1 and entries[0]["line"].endswith("Starting Lemonade Server...")


def test_v10_7_websocket_port_only() -> None:
    with start_emulator(lemond_version="10.7") as emu:
        health = emu.health()
        assert health["version"] == "10.7.0"
        assert "pinned_models" not in health and "telemetry" not in health
        with pytest.raises(WSRejected) as rejected:
            WSClient(emu.port, "/logs/stream")
        assert rejected.value.status == 404
        assert "[Error] (Server) Error 404: GET /logs/stream" in emu.log_text()
        with pytest.raises(WSRejected):
            WSClient(health["websocket_port"], "/v1/logs/stream")
        with WSClient(health["websocket_port"], "/logs/stream") as ws:
            assert subscribe(ws)["entries"][0]["seq"] == 1
        # no watchdog before v10.8: a crashed child stays listed (stale), as issue #2024 shows
        assert emu.post("/v1/load", {"model_name": SMALL})[0] == 200
        assert emu.post("/_emu/crash", {"model_name": SMALL})[0] == 200
        assert SMALL in emu.loaded()
        assert "Slot limit reached for type llm" not in emu.log_text()


def test_no_websocket_mode() -> None:
    with start_emulator("--no-websocket", lemond_version="10.8") as emu:
        assert "websocket_port" not in emu.health()
        assert emu.post("/v1/load", {"model_name": SMALL})[0] == 200
        expected = fixture("health_v10_8.json")
        del expected["websocket_port"]
        # recipe_options' key set depends on lemond's config layers (SPEC §10); ours adds llamacpp_args
        expected["all_models_loaded"][0]["recipe_options"]["llamacpp_args"] = ""
        assert_same_shape(emu.health(), expected)
        with pytest.raises(WSRejected):
            WSClient(emu.port, "/logs/stream")
