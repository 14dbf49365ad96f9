"""The admin API reads the control plane through ``Controller``'s public surface only.

``hal0proxy/api/`` may ask the controller for its slots (``slots()``, ``slot(name)``), for an
event subscription (``subscribe_events()``) and for the other public methods it already
calls; it must not reach into the objects the controller owns (the slot registry, the event
journal, the lemond adapter, the loading/room/recovery parts). The check reads the sources
with ``ast``, so it sees every attribute access however it is spelled, without importing
anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hal0proxy.config import Config, SlotConfig
from hal0proxy.control.controller import Controller
from hal0proxy.lemond.adapter import LemondAdapter

API_PACKAGE = Path(__file__).resolve().parents[2] / "hal0proxy" / "api"

#: The objects ``Controller`` owns and wires together. Reading any of them from ``api/``
#: would tie the admin endpoints to how the control plane is laid out inside.
CONTROLLER_INTERNALS = frozenset({"registry", "journal", "adapter", "recovery", "room", "loading", "catalog", "pins"})

#: The one control-plane module ``api/`` may import: the controller and what it exports.
CONTROL_SURFACE_MODULE = "hal0proxy.control.controller"


def reaches_into_the_controller(source: str) -> list[str]:
    """Every place in ``source`` that reads a controller internal or imports a control-plane
    module other than the controller's, as ``line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in CONTROLLER_INTERNALS:
            found.append(f"{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in CONTROLLER_INTERNALS
        ):
            found.append(f"{node.lineno}: {node.func.id}(…, {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.startswith("hal0proxy.control") and node.module != CONTROL_SURFACE_MODULE:
                found.append(f"{node.lineno}: from {node.module} import …")
            elif node.module == "hal0proxy.control":
                found.append(f"{node.lineno}: from hal0proxy.control import …")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hal0proxy.control") and alias.name != CONTROL_SURFACE_MODULE:
                    found.append(f"{node.lineno}: import {alias.name}")
    return found


def test_the_api_package_uses_only_the_controllers_public_surface() -> None:
    sources = sorted(API_PACKAGE.rglob("*.py"))
    assert any(path.name == "admin.py" for path in sources)  # the walk really reads the package
    offences = [
        f"{path.relative_to(API_PACKAGE.parent.parent)}:{where}"
        for path in sources
        for where in reaches_into_the_controller(path.read_text())
    ]
    assert offences == []


@pytest.mark.parametrize(
    "source",
    [
        "def f(self):\n    return self.controller.registry.all()",
        "def f(c):\n    return c.journal.subscribe()",
        "def f(controller, slot):\n    return controller.adapter.routes.get(slot.model)",
        "def f(c):\n    return c.loading.retry_after",
        "def f(c):\n    return getattr(c, 'registry')",
        "from hal0proxy.control.registry import Slot",
        "from hal0proxy.control import journal",
        "import hal0proxy.control.journal",
    ],
)
def test_the_check_catches_a_reach_into_the_controller(source: str) -> None:
    assert len(reaches_into_the_controller(source)) == 1, source


@pytest.mark.parametrize(
    "source",
    [
        "def f(self):\n    return [s.name for s in self.controller.slots()]",
        "def f(c, name):\n    return c.slot(name)",
        "def f(c):\n    return c.subscribe_events()",
        "def f(slot):\n    return slot.config.llamacpp_backend if slot.config else None",
        "from hal0proxy.control.controller import Controller, LoadFailure, Slot",
    ],
)
def test_the_check_accepts_the_public_surface(source: str) -> None:
    assert reaches_into_the_controller(source) == []


def _controller() -> Controller:
    slots = (
        SlotConfig(name="primary", model="Qwen3-0.6B-GGUF", type="llm"),
        SlotConfig(name="embed", model="nomic-embed-text-v1-GGUF", type="embedding"),
    )
    # Nothing listens on port 1: the controller is built, never started, so no I/O happens.
    return Controller(Config(slots=slots), LemondAdapter("http://127.0.0.1:1", api_key=None))


def test_every_name_the_check_forbids_is_an_object_the_controller_owns() -> None:
    controller = _controller()
    assert {name for name in CONTROLLER_INTERNALS if not hasattr(controller, name)} == set()


def test_slots_and_slot_return_the_registrys_own_objects() -> None:
    controller = _controller()
    slots = controller.slots()
    assert [s.name for s in slots] == ["primary", "embed"]
    assert all(a is b for a, b in zip(slots, controller.registry.all(), strict=True))
    assert controller.slot("embed") is controller.registry.get("embed") is slots[1]
    assert controller.slot("missing") is None
    slots.clear()  # the caller's list is a copy: the controller's slots are untouched
    assert len(controller.slots()) == 2


async def test_subscribe_events_delivers_what_the_journal_publishes_until_closed() -> None:
    controller = _controller()
    sub = controller.subscribe_events()
    assert controller.journal.subscriber_count() == 1
    controller.journal.publish("slot.state", slot="embed", state="ready")
    entry = sub.queue.get_nowait()
    assert entry is not None and entry["type"] == "slot.state" and entry["slot"] == "embed"
    sub.close()
    assert controller.journal.subscriber_count() == 0
    controller.journal.publish("slot.state", slot="embed", state="offline")
    assert sub.queue.empty()
