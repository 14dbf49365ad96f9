"""Structural comparison of JSON bodies against the lemond fixtures."""

from __future__ import annotations

from typing import Any


def assert_same_shape(actual: Any, expected: Any, where: str = "$") -> None:
    """Same keys (recursively) and same JSON value types; numbers are interchangeable."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected object, got {actual!r}"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            assert_same_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected list"
        if expected and actual:
            for i, item in enumerate(actual):
                assert_same_shape(item, expected[min(i, len(expected) - 1)], f"{where}[{i}]")
    elif isinstance(expected, bool):
        assert isinstance(actual, bool), f"{where}: expected bool, got {actual!r}"
    elif isinstance(expected, int | float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), f"{where}: {actual!r}"
    elif expected is None:
        assert actual is None, f"{where}: expected null, got {actual!r}"
    else:
        assert isinstance(actual, type(expected)), f"{where}: {actual!r} is not {type(expected).__name__}"
