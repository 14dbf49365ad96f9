"""Every lemond endpoint of the emulator against the fixture shapes, over real sockets."""

from __future__ import annotations

import json

import orjson
import pytest

from tests.support.emulator import EmulatorProcess, fixture
from tests.support.shapes import assert_same_shape

PREFIXES = ("/v1", "/api/v1", "/v0", "/api/v0")
LLM = "Qwen3-0.6B-GGUF"


def _drop(body: dict, *keys: str) -> dict:
    return {k: v for k, v in body.items() if k not in keys}


def test_live_and_compact_sorted_json(fresh: EmulatorProcess) -> None:
    status, headers, raw = fresh.request("GET", "/live")
    assert status == 200
    assert raw == b'{"status":"ok"}'
    assert headers["content-type"] == "application/json"
    assert headers["vary"] == "Origin"
    _, _, raw = fresh.request("GET", "/v1/health")
    assert raw == orjson.dumps(json.loads(raw), option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_health_idle_shape_under_every_prefix(fresh: EmulatorProcess, prefix: str) -> None:
    status, body = fresh.get(f"{prefix}/health")
    assert status == 200
    expected = fixture("health_idle.json")
    assert_same_shape(body, expected)
    assert body["model_loaded"] is None
    assert body["version"] == "11.7.0"
    assert body["max_models"] == expected["max_models"]


def test_load_response_and_health_entry_shape(fresh: EmulatorProcess) -> None:
    status, body = fresh.post("/v1/load", fixture("load_request_minimal.json") | {"model_name": LLM})
    assert status == 200
    assert_same_shape(body, fixture("load_response.json"))
    assert body == {
        "checkpoint": "unsloth/Qwen3-0.6B-GGUF:Q4_0",
        "model_name": LLM,
        "recipe": "llamacpp",
        "status": "success",
    }
    health = fresh.health()
    expected = fixture("health_two_loaded.json")
    expected["all_models_loaded"] = [_drop(expected["all_models_loaded"][0], "launch_command")]
    assert_same_shape(health, expected)
    entry = health["all_models_loaded"][0]
    assert entry["backend_url"] == f"http://127.0.0.1:{fresh.child_port_base}/v1"
    assert health["model_loaded"] == LLM


def test_load_with_options_is_reflected(fresh: EmulatorProcess) -> None:
    request = fixture("load_request.json") | {"model_name": LLM, "ctx_size": 2048}
    status, _ = fresh.post("/v1/load", request)
    assert status == 200
    entry = fresh.loaded()[LLM]
    assert entry["recipe_options"]["ctx_size"] == 2048
    assert entry["recipe_options"]["llamacpp_backend"] == "vulkan"


def test_load_errors(fresh: EmulatorProcess) -> None:
    status, body = fresh.post("/v1/load", {"model_name": "Qwen9-Imaginary-GGUF"})
    assert status == 404
    assert_same_shape(body, fixture("load_error_model_not_found.json"))
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["requested_model"] == "Qwen9-Imaginary-GGUF"

    status, _, raw = fresh.request("POST", "/v1/load", b"")
    assert status == 400
    assert json.loads(raw) == fixture("error_empty_body.json")

    status, _, raw = fresh.request("POST", "/v1/load", b"{nope")
    assert status == 400
    assert json.loads(raw)["error"].startswith("Invalid JSON in request body: ")

    status, body = fresh.post("/v1/load", {"model": LLM})
    assert status == 400
    assert body["error"]["code"] == "invalid_request"


def test_unload_responses(fresh: EmulatorProcess) -> None:
    status, body = fresh.post("/v1/unload", {"model_name": LLM})
    assert status == 404
    assert body == {"error": f"Model not loaded: {LLM}"}
    assert_same_shape(body, fixture("unload_error_not_loaded.json"))

    assert fresh.post("/v1/load", {"model_name": LLM})[0] == 200
    status, body = fresh.post("/api/v0/unload", fixture("unload_request.json") | {"model_name": LLM})
    assert status == 200
    assert body == fixture("unload_response.json") | {"model_name": LLM}
    assert fresh.loaded() == {}

    assert fresh.post("/v1/load", {"model_name": LLM})[0] == 200
    status, _, raw = fresh.request("POST", "/v1/unload", b"")
    assert status == 200
    assert json.loads(raw) == fixture("unload_all_response.json")
    assert fresh.loaded() == {}


def test_pull_sync_and_stream(fresh: EmulatorProcess) -> None:
    status, body = fresh.post("/v1/pull", {"model_name": LLM})
    assert status == 200
    assert body == fixture("pull_response.json") | {"model_name": LLM}

    # Not downloaded any more after delete: a streamed pull reports progress, then complete.
    assert fresh.post("/v1/delete", {"model_name": LLM}) == (
        200,
        {"message": f"Deleted model: {LLM}", "status": "success"},
    )
    raw_body = json.dumps({"model_name": LLM, "stream": True}).encode()
    status, headers, raw = fresh.request("POST", "/v1/pull", raw_body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    events = [block for block in raw.decode().split("\n\n") if block]
    names = [block.split("\n")[0] for block in events]
    assert names == ["event: progress", "event: progress", "event: complete"]
    data = json.loads(events[0].split("\n")[1].removeprefix("data: "))
    assert set(data) == {
        "bytes_downloaded",
        "bytes_previously_downloaded",
        "bytes_total",
        "file",
        "file_index",
        "percent",
        "total_download_size",
        "total_files",
    }

    status, headers, raw = fresh.request("POST", "/v1/pull", raw_body)
    assert raw == b'event: complete\ndata: {"status":"ok"}\n\n'


def test_delete(fresh: EmulatorProcess) -> None:
    status, body = fresh.post("/v1/delete", {"model_name": "Qwen9-Imaginary-GGUF"})
    assert status == 422
    assert body == fixture("delete_error_not_found.json")
    assert fresh.post("/v1/load", {"model_name": LLM})[0] == 200
    status, body = fresh.post("/v1/delete", fixture("delete_request.json") | {"model_name": LLM})
    assert status == 200
    assert_same_shape(body, fixture("delete_response.json"))
    assert fresh.loaded() == {}, "delete unloads a loaded model first"
    _, models = fresh.get("/v1/models")
    assert LLM not in [m["id"] for m in models["data"]]
    _, models = fresh.get("/v1/models?show_all=true")
    assert LLM in [m["id"] for m in models["data"]]


def test_models(fresh: EmulatorProcess) -> None:
    status, body = fresh.get("/api/v1/models")
    assert status == 200
    expected = fixture("models.json")
    expected["data"] = [_drop(expected["data"][0], "context_length")]
    assert_same_shape(body, expected)
    assert {m["id"] for m in body["data"]} >= {
        LLM,
        "Qwen3-4B-GGUF",
        "nomic-embed-text-v1-GGUF",
        "bge-reranker-v2-m3-GGUF",
    }
    assert all(m["created"] == 1234567890 for m in body["data"])
    status, one = fresh.get(f"/v1/models/{LLM}")
    assert status == 200 and one["id"] == LLM
    status, missing = fresh.get("/v1/models/nope")
    assert status == 404 and missing["error"]["code"] == "model_not_found"


def test_stats_and_system_stats(fresh: EmulatorProcess) -> None:
    status, body = fresh.get("/v1/stats")
    assert status == 200
    assert_same_shape(body, fixture("stats.json"))
    status, body = fresh.get("/v1/system-stats")
    assert status == 200
    assert set(body) == set(fixture("system_stats.json"))


@pytest.mark.parametrize("route", ["load", "unload", "pull", "delete", "chat/completions"])
def test_get_on_post_route_is_405(fresh: EmulatorProcess, route: str) -> None:
    status, body = fresh.get(f"/v1/{route}")
    assert status == 405
    assert body == fixture("error_method_not_allowed.json")


def test_unknown_endpoint_404_and_error_log_line(fresh: EmulatorProcess) -> None:
    status, body = fresh.get("/v1/nope")
    assert status == 404
    assert body == fixture("error_endpoint_not_found.json")
    status, body = fresh.get("/whatever")
    assert status == 404 and body["error"]["path"] == "/whatever"
    assert "[Error] (Server) Error 404: GET /v1/nope" in fresh.log_text()
