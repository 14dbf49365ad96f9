"""Children must die with the emulator, however it dies."""

from __future__ import annotations

import pytest

from tests.support.emulator import pid_alive, start_emulator, wait_until

MODELS = ("Qwen3-0.6B-GGUF", "nomic-embed-text-v1-GGUF")


@pytest.mark.parametrize("sigkill", [True, False], ids=["sigkill", "sigterm"])
def test_children_die_with_the_emulator(sigkill: bool) -> None:
    emu = start_emulator()
    try:
        for name in MODELS:
            assert emu.post("/v1/load", {"model_name": name})[0] == 200
        pids = [child["pid"] for child in emu.state()["children"]]
        assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
    finally:
        emu.stop(sigkill=sigkill)  # asserts that every child it saw is gone
    assert all(wait_until(lambda p=pid: not pid_alive(p), 5.0) for pid in pids)
