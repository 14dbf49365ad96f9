"""Chaos: clients stream through the proxy while lemond evicts, crashes, moves, hangs, fails
loads, loses its log stream, restarts, is killed, and another client loads into the pool —
for lemond 11.7 and 10.7 with fake children, and once with real ``llama-server`` children.

The promise under test (``tests/churn/chaos.py``): never a 502, never a silently truncated
stream, every non-200 a 503 with ``Retry-After``, descriptors back to where they were.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.churn.chaos import assert_promise, run_chaos


@pytest.mark.parametrize("version", ["11.7", "10.7"])
def test_chaos_fake_children(tmp_path: Path, version: str) -> None:
    assert_promise(run_chaos(tmp_path, version=version))


def test_chaos_real_llama_server_children(tmp_path: Path) -> None:
    assert_promise(run_chaos(tmp_path, version="11.7", children="llama-server", stream_clients=4, duration_s=20.0))
