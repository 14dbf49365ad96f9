"""The shipped systemd unit parses, runs a real CLI subcommand and stays hardened.

``systemd-analyze verify`` (and the offline security audit) run when the machine has systemd's
tools; the structural checks below run everywhere.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hal0proxy.cli import build_parser
from tests.support.emulator import REPO

UNIT = REPO / "systemd" / "hal0proxy.service"
INSTALLED_BIN = "/opt/hal0proxy/.venv/bin/hal0proxy"
CONFIG = "/etc/hal0proxy/config.toml"

REQUIRED = {
    "Unit": {"After": "lemond.service"},
    "Service": {
        "ExecStart": f"{INSTALLED_BIN} serve --config {CONFIG}",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "TimeoutStopSec": "40",  # past the default 30 s shutdown grace, so the drain ends cleanly
        "LimitNOFILE": "65536",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
    },
    "Install": {"WantedBy": "multi-user.target"},
}

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """systemd's INI dialect: repeated keys accumulate, ``#``/``;`` comments, ``\\`` continuations."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: bad section header {line!r}"
            name = line[1:-1]
            assert name not in sections, f"line {number}: section [{name}] repeated"
            current = sections[name] = []
            continue
        assert current is not None, f"line {number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"line {number}: not KEY=VALUE: {line!r}"
        current.append((key.strip(), value.strip()))
    assert not pending, "file ends in a line continuation"
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def single(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key} set {len(found)} times"
    return found[0]


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


def test_sections_and_required_settings(unit: Unit) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    for section, settings in REQUIRED.items():
        for key, expected in settings.items():
            if key == "After":
                assert expected in single(unit, section, key).split()
            else:
                assert single(unit, section, key) == expected, (section, key)


def test_runs_unprivileged(unit: Unit) -> None:
    dynamic = values(unit, "Service", "DynamicUser") == ["yes"]
    dedicated = bool(values(unit, "Service", "User")) and values(unit, "Service", "User") != ["root"]
    assert dynamic or dedicated, "needs DynamicUser=yes or a dedicated User="
    assert values(unit, "Service", "CapabilityBoundingSet") == [""]
    # No hard dependency: a lemond restart must not stop or restart the proxy.
    assert not values(unit, "Unit", "Requires") and not values(unit, "Unit", "BindsTo")


def test_exec_lines_are_real_cli_invocations(unit: Unit) -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert subcommands is not None
    exec_lines = values(unit, "Service", "ExecStartPre") + values(unit, "Service", "ExecStart")
    assert exec_lines
    for line in exec_lines:
        argv = shlex.split(line.lstrip("-@:+!"))
        assert argv[0] == INSTALLED_BIN, argv
        assert argv[1] in subcommands, f"{argv[1]!r} is not a hal0proxy subcommand"
        args = parser.parse_args(argv[1:])  # argparse exits (SystemExit) on an unknown flag
        assert args.command == argv[1]
    serve = shlex.split(single(unit, "Service", "ExecStart"))
    assert parser.parse_args(serve[1:]).config == CONFIG


def test_check_config_accepts_the_example_config() -> None:
    """The ExecStartPre gate passes for the documented example configuration."""
    example = REPO / "docs" / "hal0proxy.example.toml"
    done = subprocess.run(
        [sys.executable, "-m", "hal0proxy", "check-config", str(example)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with its binary pointed at this checkout, so verify can check it is executable."""
    binary = REPO / ".venv" / "bin" / "hal0proxy"
    assert binary.exists(), binary
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED_BIN, str(binary)))
    return copy


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:  # the structural tests above still cover the unit
        return
    done = subprocess.run([tool, "verify", str(_installed_copy(tmp_path))], capture_output=True, text=True, timeout=60)
    # verify only warns (exit 0) about unknown keys, so any output at all is a failure.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:  # systemd < 250
        return
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout
