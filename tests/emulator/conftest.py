from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.emulator import EmulatorProcess, start_emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    """One emulator per module; tests reset it with /_emu/restart."""
    process = start_emulator()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def fresh(emu: EmulatorProcess) -> EmulatorProcess:
    status, _ = emu.post("/_emu/restart", {})
    assert status == 200
    return emu
