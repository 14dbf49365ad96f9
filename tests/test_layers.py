"""Imports point down only: every package imports only what its row of the layer table allows.

The table is read from ``docs/architecture.md`` ("Layers"), so the document and the check
cannot drift apart. The check reads each module's source with
``ast`` (no import side effects) and counts every import, including those under
``TYPE_CHECKING`` and inside functions: a type-only import across layers still couples them.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "hal0proxy"

ARCHITECTURE = PACKAGE_ROOT.parent / "docs" / "architecture.md"

_EVERYTHING = frozenset({"*"})


def parse_layer_table(markdown: str) -> dict[str, frozenset[str]]:
    """The "Layers" table of ``docs/architecture.md``: package -> the packages it may import.

    A row names its packages in backticks in the first cell (``hal0proxy/api/``,
    ``hal0proxy/app.py``); the last cell lists what they may import, with remarks in
    parentheses, "everything", or third-party names (which are not layers and are dropped).
    """
    rows: list[tuple[list[str], str]] = []
    for line in markdown.splitlines():
        if not line.startswith("| `hal0proxy/"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").replace("\\|", "/").split(" | ")]
        names = [p.strip("`").removeprefix("hal0proxy/").strip("/").removesuffix(".py") for p in cells[0].split(", ")]
        rows.append((names, cells[-1]))
    layers = {name for names, _ in rows for name in names}
    table: dict[str, frozenset[str]] = {}
    for names, allowed in rows:
        if allowed == "everything":
            imports = _EVERYTHING
        else:
            plain = re.sub(r"\([^)]*\)", "", allowed)
            imports = frozenset(word for word in re.split(r"[,\s]+", plain) if word in layers)
        for name in names:
            table[name] = imports
    return table


LAYERS: Mapping[str, frozenset[str]] = parse_layer_table(ARCHITECTURE.read_text())

# Third-party packages a layer may use beyond the standard library (``None``: not checked).
THIRD_PARTY: Mapping[str, frozenset[str] | None] = {
    "slots": frozenset(),
    "routing": frozenset({"orjson"}),
    "metrics": frozenset({"prometheus_client"}),
}


def layer_of(module: str) -> str:
    """``hal0proxy.control.room`` -> ``control``; ``hal0proxy.app`` -> ``app``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, module: str) -> Iterator[str]:
    """Absolute names of everything ``source`` (the text of ``module``) imports."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "hal0proxy":
                # ``from hal0proxy import control`` imports the package named after ``import``.
                yield from (f"hal0proxy.{alias.name}" for alias in node.names)
            else:
                yield target


def violations(source: str, module: str) -> list[str]:
    """Imports of ``module`` that its row of ``LAYERS`` does not allow."""
    layer = layer_of(module)
    allowed = LAYERS.get(layer)
    found: list[str] = []
    for target in imported_modules(source, module):
        top = target.split(".", 1)[0]
        if top == "hal0proxy":
            target_layer = layer_of(target)
            if target_layer in (layer, "__init__"):
                continue
            if allowed is None or ("*" not in allowed and target_layer not in allowed):
                found.append(f"{module} imports {target} ({layer} -> {target_layer})")
            continue
        extra = THIRD_PARTY.get(layer)
        if extra is not None and top not in sys.stdlib_module_names and top not in extra and top != "__future__":
            found.append(f"{module} imports {target} (third-party in {layer})")
    return found


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts
        yield ".".join(parts), path


def test_the_layer_table_is_read_from_the_architecture_document() -> None:
    assert LAYERS["slots"] == frozenset() and LAYERS["app"] == _EVERYTHING
    assert LAYERS["routing"] == {"http", "slots"}
    assert "proxy" not in LAYERS["control"] and "control" not in LAYERS["metrics"]
    assert {"api", "proxy", "control", "lemond", "http", "metrics", "config", "emulator"} <= set(LAYERS)


def test_every_package_has_a_row_in_the_layer_table() -> None:
    layers = {layer_of(module) for module, _ in _modules()} - {"__init__"}
    assert layers - set(LAYERS) == set(), "add the new package to LAYERS and to docs/architecture.md"


def test_imports_point_down_only() -> None:
    found = [v for module, path in _modules() for v in violations(path.read_text(), module)]
    assert found == []


def test_the_layer_table_has_no_cycle() -> None:
    """A table with a cycle would let two packages import each other through the allowed rows."""
    state: dict[str, int] = {}

    def visit(layer: str, trail: tuple[str, ...]) -> None:
        assert state.get(layer) != 1, f"cycle: {' -> '.join((*trail, layer))}"
        if state.get(layer) == 2:
            return
        state[layer] = 1
        for lower in LAYERS[layer] - {"*"}:
            visit(lower, (*trail, layer))
        state[layer] = 2

    for layer in LAYERS:
        visit(layer, ())


def test_control_imports_nothing_from_the_data_plane() -> None:
    offenders = [
        f"{module} imports {target}"
        for module, path in _modules()
        if layer_of(module) == "control"
        for target in imported_modules(path.read_text(), module)
        if target.startswith("hal0proxy.proxy")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("hal0proxy.control.x", "from hal0proxy.proxy.context import ProxyContext", "control -> proxy"),
        ("hal0proxy.metrics", "from hal0proxy.control.controller import Controller", "metrics -> control"),
        ("hal0proxy.slots.x", "import orjson", "third-party in slots"),
        ("hal0proxy.routing.x", "from hal0proxy import proxy", "routing -> proxy"),
        ("hal0proxy.http.x", "from ..lemond import client", "http -> lemond"),
        (
            "hal0proxy.slots.x",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hal0proxy.control.registry import Slot",
            "slots -> control",
        ),
    ],
)
def test_the_checker_catches_an_upward_or_sideways_import(module: str, source: str, expected: str) -> None:
    found = violations(source, module)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("hal0proxy.proxy.x", "from hal0proxy.routing.contract import Lease"),
        ("hal0proxy.control.x", "from hal0proxy.slots.dispatch import decide"),
        ("hal0proxy.slots.x", "import dataclasses\nfrom hal0proxy.slots.state import SlotState"),
        ("hal0proxy.app", "from hal0proxy.emulator import launch"),
    ],
)
def test_the_checker_accepts_a_downward_import(module: str, source: str) -> None:
    assert violations(source, module) == []
