"""End to end with the real llama-server binary (built on demand) and the tiny GGUF model.

Not skipped when the binary is missing: ``ensure_llama_server()`` builds it once per machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI

from hal0proxy.emulator.realbin import ensure_llama_server
from tests.support.emulator import EmulatorProcess, pid_alive, start_emulator, wait_until

# A cold build of the binary takes minutes; once cached this file runs in seconds.
pytestmark = pytest.mark.timeout(3900)
MODEL = "Qwen3-0.6B-GGUF"


@pytest.fixture(scope="module")
def real_emu() -> Iterator[EmulatorProcess]:
    binary = ensure_llama_server()
    emu = start_emulator("--llama-server", str(binary), children="llama-server")
    try:
        yield emu
    finally:
        emu.stop()


async def stream_chat(backend_url: str) -> tuple[str, list[str | None]]:
    client = AsyncOpenAI(base_url=backend_url, api_key="unused", max_retries=0, timeout=60)
    text, reasons = "", []
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, stream=True
    )
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reasons.append(chunk.choices[0].finish_reason)
    await client.close()
    return text, reasons


async def test_load_stream_crash_reload(real_emu: EmulatorProcess) -> None:
    status, body = real_emu.post("/v1/load", {"model_name": MODEL}, timeout=120)
    assert status == 200, body
    entry = real_emu.loaded()[MODEL]
    log = real_emu.log_text()
    assert "[Info] (LlamaCpp) Using LlamaCpp Backend: cpu" in log
    port = entry["backend_url"].split(":")[2].removesuffix("/v1")
    assert f"listening on http://127.0.0.1:{port}" in log  # the child's own line, re-logged

    text, reasons = await stream_chat(entry["backend_url"])
    assert text, "the real model produced tokens"
    assert reasons[-1] in ("length", "stop")

    status, crashed = real_emu.post("/_emu/crash", {"model_name": MODEL})
    assert status == 200 and crashed["pid"] == entry["pid"]
    assert MODEL not in real_emu.loaded()
    assert wait_until(
        lambda: f"reaped exited backend process PID {entry['pid']} (exit_code=137)" in real_emu.log_text(), 5.0
    )

    status, _ = real_emu.post("/v1/load", {"model_name": MODEL}, timeout=120)
    assert status == 200
    again = real_emu.loaded()[MODEL]
    assert again["pid"] != entry["pid"] and pid_alive(again["pid"])
    text, _ = await stream_chat(again["backend_url"])
    assert text
