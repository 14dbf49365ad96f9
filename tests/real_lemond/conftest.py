"""Fixtures for the tests against the real lemond: one lemond per module and version.

A module picks its versions with ``VERSIONS`` (default: both) and its pool size with
``MAX_LOADED_MODELS`` (default 1), the models in its ``extra_models_dir`` with
``LEMOND_MODELS`` (default alpha and beta). Nothing is skipped when lemond is not built yet: the
first fixture builds it (minutes), hence the module timeouts.

At teardown every line the lemond wrote (all its runs) goes through the parser; a line the
parser ignores although it names a model, a child pid or a child port fails the module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hal0proxy.lemond.parser import parse
from tests.real_lemond.lines import misprefixed, unexplained_lines
from tests.support.real_lemond import DEFAULT_MODELS, SUPPORTED, RealLemond, start_real_lemond


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lemond_version" in metafunc.fixturenames:
        versions = getattr(metafunc.module, "VERSIONS", SUPPORTED)
        metafunc.parametrize("lemond_version", versions, scope="module", ids=[f"v{v}" for v in versions])


def assert_lines_understood(lem: RealLemond) -> None:
    for line in filter(misprefixed, lem.log_lines()):
        if parse(line) is None:
            print(f"lemond printed a line under a garbled prefix (its log-prefix race): {line}")
    problems = unexplained_lines(
        lem.log_lines(), models=lem.models, pids=lem.seen_child_pids, ports=lem.seen_child_ports
    )
    assert not problems, "lines the parser ignores but that name a model, pid or port:\n" + "\n".join(
        f"  [{p.mentions}] {p.line}" for p in problems
    )


@pytest.fixture(scope="module")
def lemond(request: pytest.FixtureRequest, lemond_version: str) -> Iterator[RealLemond]:
    max_loaded = getattr(request.module, "MAX_LOADED_MODELS", 1)
    models = getattr(request.module, "LEMOND_MODELS", DEFAULT_MODELS)
    lem = start_real_lemond(lemond_version, max_loaded_models=max_loaded, models=models)
    with lem:
        yield lem
        lem.stop()
        assert_lines_understood(lem)
