"""Configuration: the example validates, every bad key is named, check-config exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hal0proxy.config import ConfigError, load_config, parse_config
from tests.support.emulator import REPO

EXAMPLE = REPO / "docs" / "hal0proxy.example.toml"


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE, env={})
    assert [s.name for s in config.slots] == ["primary", "embed"]
    primary = config.slot("primary")
    assert (
        primary is not None
        and primary.warm
        and primary.load_options()
        == {
            "ctx_size": 32768,
            "llamacpp_backend": "vulkan",
        }
    )
    embed = config.slot("embed")
    assert embed is not None and embed.idle_timeout_s == 0 and embed.max_wait_s == 60


def test_every_problem_is_reported_with_its_key() -> None:
    doc = {
        "listen": "nowhere",
        "colour": "blue",
        "limits": {"max_body_bytes": 0},
        "policy": {"cold_start": "maybe", "max_wait_s": True},
        "slot": [
            {"name": "../etc", "model": "m"},
            {"name": "ok", "model": "m", "cold_start": "later", "ctx_size": 0},
            {"name": "ok", "model": "n"},
            {"model": "x"},
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    text = str(err.value)
    for expected in (
        "listen: must be HOST:PORT",
        "colour: unknown key",
        "limits.max_body_bytes: must be > 0",
        "policy.cold_start: must be one of wait, reject",
        "policy.max_wait_s: expected int or float, got bool",
        "slot[0].name: must match",
        "slot[1].cold_start: must be one of wait, reject",
        "slot[1].ctx_size: must be -1 (auto) or > 0",
        "slot[2].name: duplicate slot name 'ok'",
        "slot[3].name: required",
    ):
        assert expected in text, expected


def test_policy_defaults_flow_into_slots_and_secrets_are_read(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    keys = tmp_path / "keys"
    keys.write_text("k1\n\nk2\n")
    config = parse_config(
        {
            "admin_token_file": str(token),
            "api_keys_file": str(keys),
            "policy": {"cold_start": "reject", "idle_timeout_s": 30},
            "slot": [{"name": "a", "model": "m"}],
        },
        env={},
    )
    assert config.admin_token == "abc" and config.api_keys == ("k1", "k2")
    assert config.slots[0].cold_start == "reject" and config.slots[0].idle_timeout_s == 30
    assert parse_config({}, env={"HAL0PROXY_ADMIN_TOKEN": "from-env"}).admin_token == "from-env"
    with pytest.raises(ConfigError, match="admin_token_file: cannot read"):
        parse_config({"admin_token_file": str(tmp_path / "missing")}, env={})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hal0proxy", *args], capture_output=True, text=True, cwd=REPO)


def test_check_config_command(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(EXAMPLE))
    assert ok.returncode == 0 and "OK (2 slot(s)" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[slot]]\nname = "Primary"\nmodel = "m"\n')
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2 and "slot[0].name" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("listen = \n")
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_serve_refuses_to_start_with_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\ncold_start = "sometimes"\n')
    result = run_cli("serve", "--config", str(bad), "--listen", "127.0.0.1:1")
    assert result.returncode == 2 and "policy.cold_start" in result.stderr
