"""The documents in docs/ where they can drift from the code: the slot state diagram is the
transition table's, the configuration page is the config schema's (keys, types, defaults), every
error code the proxy authors is in the migration guide, and every alert has a runbook entry.

The metric list in docs/operations.md is checked against a real scrape in tests/test_prometheus.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hal0proxy import config as cfg
from tests.support.emulator import REPO

DOCS = REPO / "docs"
DIAGRAM_SCRIPT = REPO / "scripts" / "state_diagram.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("state_diagram", DIAGRAM_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- architecture.md
def test_state_diagram_is_generated_from_the_transition_tables() -> None:
    script = _load_script()
    text = (DOCS / "architecture.md").read_text()
    assert script.current_block(text) == script.generate(), (
        "docs/architecture.md is stale: run python scripts/state_diagram.py --write"
    )


def test_state_diagram_has_every_edge_of_both_tables() -> None:
    from hal0proxy.slots.state import FORCED_TRANSITIONS, LEGAL_TRANSITIONS

    block = _load_script().generate()
    edges = set(re.findall(r"^    (\w+) --> (\w+)( : forced)?$", block, re.M))
    legal = {(a.value, b.value, "") for a, targets in LEGAL_TRANSITIONS.items() for b in targets}
    forced = {(a.value, b.value, " : forced") for a, targets in FORCED_TRANSITIONS.items() for b in targets}
    assert edges == legal | forced


def test_exchange_diagram_is_generated_from_the_table_of_moves() -> None:
    from hal0proxy.proxy.exchange_state import LEGAL_MOVES

    script = _load_script()
    text = (DOCS / "architecture.md").read_text()
    block = script.current_block(text, script.EXCHANGE_BEGIN, script.EXCHANGE_END)
    assert block == script.generate_exchange(), "stale: run python scripts/state_diagram.py --write"
    edges = set(re.findall(r"^    (\w+) --> (\w+)$", block, re.M))
    assert edges == {(a.value, b.value) for a, targets in LEGAL_MOVES.items() for b in targets}


def test_a_stale_exchange_diagram_is_reported() -> None:
    script = _load_script()
    text = (DOCS / "architecture.md").read_text()
    stale = text.replace("    sent --> connecting\n", "", 1)
    assert stale != text
    assert script.stale_blocks(stale) == [script.EXCHANGE_BEGIN]
    assert script.stale_blocks(script.rewrite(stale)) == []


def test_stale_diagram_is_detected_by_the_check_command(tmp_path: Path) -> None:
    script = _load_script()
    text = (DOCS / "architecture.md").read_text()
    stale = text.replace("    ready --> serving\n", "", 1)
    assert stale != text
    assert script.current_block(stale) != script.generate()
    done = subprocess.run(
        [sys.executable, str(DIAGRAM_SCRIPT), "--check"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------ configuration.md
# The schema tables in hal0proxy/config.py, by section: a key added there fails this test until
# it is documented.
SECTIONS: dict[str, dict[str, Any]] = {
    "": cfg._TOP,
    "limits.": cfg._LIMITS,
    "policy.": cfg._POLICY,
    "slot.": cfg._SLOT,
}
TYPE_WORDS = {
    (str,): "string",
    (int,): "integer",
    (int, float): "number",
    (bool,): "boolean",
    (list,): "array of strings",
}
ROW = re.compile(r"^\| `([a-z_.]+)` \| ([^|]+) \| ([^|]+) \| (.+) \|$", re.M)


def _documented() -> dict[str, tuple[str, str, str]]:
    text = (DOCS / "configuration.md").read_text()
    rows = {m.group(1): (m.group(2).strip(), m.group(3).strip(), m.group(4).strip()) for m in ROW.finditer(text)}
    assert len(rows) == len(ROW.findall(text)), "a key is documented twice"
    return rows


def _schema() -> dict[str, tuple[type, ...]]:
    return {prefix + key: types for prefix, table in SECTIONS.items() for key, (types, _check) in table.items()}


def test_every_config_key_is_documented_and_nothing_else() -> None:
    documented, schema = set(_documented()), set(_schema())
    assert not schema - documented, f"undocumented keys: {sorted(schema - documented)}"
    assert not documented - schema, f"documented keys the schema does not have: {sorted(documented - schema)}"


@pytest.mark.parametrize("key", sorted(_schema()))
def test_documented_type_matches_the_schema(key: str) -> None:
    assert _documented()[key][0] == TYPE_WORDS[_schema()[key]]


def _code_default(key: str) -> Any:
    """The default the code applies when ``key`` is absent (``dataclasses.MISSING``: none)."""
    section, _, name = key.rpartition(".")
    owner = {"limits": cfg.LimitsConfig, "policy": cfg.PolicyConfig, "slot": cfg.SlotConfig, "": cfg.Config}[section]
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if section == "":
        top = cfg.Config()
        known = {
            "listen": f"{top.listen[0]}:{top.listen[1]}",
            "lemond_url": top.lemond_url,
            "api_keys": list(top.api_keys),
            "forward_conversation_id": top.forward_conversation_id,
        }
        return known.get(name, dataclasses.MISSING)
    field = fields.get(name)
    if field is None or field.default is dataclasses.MISSING:
        return dataclasses.MISSING
    return field.default


@pytest.mark.parametrize("key", sorted(_schema()))
def test_documented_default_matches_the_code(key: str) -> None:
    cell = _documented()[key][1]
    literal = re.match(r"^`([^`]+)`", cell)
    if literal is not None and literal.group(1) in _schema():
        # "inherits from another key": prove it with the parser itself.
        other = literal.group(1)
        section, _, name = other.partition(".")
        value = {"idle_timeout_s": 42.0, "max_wait_s": 7.0, "cold_start": "reject"}[name]
        parsed = cfg.parse_config({section: {name: value}, "slot": [{"name": "a", "model": "m"}]}, env={})
        assert getattr(parsed.slots[0], key.partition(".")[2]) == value
        return
    expected = _code_default(key)
    if key in ("slot.name", "slot.model"):
        assert cell == "required"
        name = key.partition(".")[2]
        entry = {"name": "a", "model": "m"}
        del entry[name]
        with pytest.raises(cfg.ConfigError, match=rf"slot\[0\]\.{name}: required"):
            cfg.parse_config({"slot": [entry]}, env={})
        return
    if expected is None or (expected is dataclasses.MISSING and literal is None):
        assert cell == "unset", cell
        return
    assert literal is not None, f"{key}: the default cell should start with a TOML value in backticks"
    value = tomllib.loads(f"v = {literal.group(1)}")["v"]
    if expected is dataclasses.MISSING:
        # A default applied in parse_config itself (admin_token_env): the documented variable works.
        assert key == "admin_token_env", key
        parsed = cfg.parse_config({}, env={value: "tok"})
        assert parsed.admin_token == "tok"
        return
    assert value == expected and type(value) in (type(expected), int), (key, value, expected)


def test_example_file_uses_only_documented_keys() -> None:
    doc = tomllib.loads((DOCS / "hal0proxy.example.toml").read_text())
    used = set()
    for key, value in doc.items():
        if key in ("limits", "policy"):
            used |= {f"{key}.{k}" for k in value}
        elif key == "slot":
            used |= {f"slot.{k}" for entry in value for k in entry}
        else:
            used.add(key)
    assert used <= set(_documented()), sorted(used - set(_documented()))


# ---------------------------------------------------------------------- migrating-from-hal0.md
def _authored_codes() -> set[str]:
    source = "\n".join(p.read_text() for p in (REPO / "hal0proxy").rglob("*.py") if "emulator" not in p.parts)
    found = set(
        re.findall(r"[\"']((?:request|slot|dispatch|auth|upstream|lemond|resource|model|system)\.[a-z_]+)[\"']", source)
    )
    journal_kinds = set(re.findall(r"publish\(\s*\"([a-z_.]+)\"", source))
    return found - journal_kinds


def test_every_error_code_the_proxy_authors_is_in_the_migration_guide() -> None:
    codes = _authored_codes()
    assert {"slot.loading", "dispatch.upstream_unavailable", "request.too_large"} <= codes
    text = (DOCS / "migrating-from-hal0.md").read_text()
    missing = sorted(c for c in codes if f"| `{c}` |" not in text)
    assert not missing, f"error codes missing from the hal0proxy column: {missing}"


# ------------------------------------------------------------------------------ operations.md
def test_every_alert_has_a_runbook_section() -> None:
    rules = (REPO / "prometheus" / "alerts.yml").read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)", rules, re.M)
    assert len(alerts) >= 5
    text = (DOCS / "operations.md").read_text()
    for alert in alerts:
        assert f"\n### {alert}\n" in text, alert
        assert f"docs/operations.md#{alert.lower()}" in rules, alert  # the annotation links to it


def test_docs_link_only_to_files_that_exist() -> None:
    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
