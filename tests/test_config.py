"""Configuration: the example validates, every bad key is named, check-config exits non-zero."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hal0proxy.config import ConfigError, load_config, parse_config, parse_lemond_url, parse_listen
from tests.support.emulator import REPO
from tests.support.proxy import terminate

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


# ---------------------------------------------------------------------------------- ports and listening
def test_host_port_parsing() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    assert parse_listen("localhost:0") == ("localhost", 0)
    assert parse_listen("127.0.0.1:65535") == ("127.0.0.1", 65535)
    for bad in ("127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1:123456", "localhost", "::1:8080", "a b:80", "h:-1"):
        assert parse_listen(bad) is None, bad
    assert parse_lemond_url("http://127.0.0.1:13305/") == "http://127.0.0.1:13305"
    assert parse_lemond_url("https://lemond.lan") == "https://lemond.lan"
    for bad in ("http://127.0.0.1:99999", "http://127.0.0.1:0", "http://127.0.0.1:x", "ftp://h:1", "http://:80"):
        assert parse_lemond_url(bad) is None, bad


_LISTEN_PROBLEM = "must be HOST:PORT with PORT 1-65535, or 0 for any free port"
_URL_PROBLEM = "must be an http:// or https:// URL with a host and PORT 1-65535"


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ('listen = "127.0.0.1:99999"', f"listen: {_LISTEN_PROBLEM} (got '127.0.0.1:99999')"),
        ('listen = "localhost"', f"listen: {_LISTEN_PROBLEM} (got 'localhost')"),
        ('lemond_url = "http://127.0.0.1:99999"', f"lemond_url: {_URL_PROBLEM} (got 'http://127.0.0.1:99999')"),
        ('lemond_url = "http://127.0.0.1:0"', f"lemond_url: {_URL_PROBLEM} (got 'http://127.0.0.1:0')"),
    ],
)
def test_check_config_refuses_a_port_out_of_range(tmp_path: Path, toml: str, line: str) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text(toml + "\n")
    for command in (("check-config", str(path)), ("serve", "--config", str(path))):
        result = run_cli(*command)
        assert result.returncode == 2, (command, result)
        assert line in result.stderr.splitlines(), result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("serve", "--listen", "127.0.0.1:99999"), f"--listen: {_LISTEN_PROBLEM} (got '127.0.0.1:99999')"),
        (("serve", "--lemond", "http://127.0.0.1:70000"), f"--lemond: {_URL_PROBLEM} (got 'http://127.0.0.1:70000')"),
        (("serve", "--static-route", "m=70000"), "must be MODEL=PORT with PORT 1-65535 (got 'm=70000')"),
        (("demo", "--listen", "127.0.0.1:99999"), f"{_LISTEN_PROBLEM} (got '127.0.0.1:99999')"),
        (("demo", "--emulator-port", "0"), "must be a port 1-65535 (got '0')"),
        (("emulate", "--port", "99999"), "must be a port 1-65535 (got '99999')"),
        (("emulate", "--child-port-base", "70000"), "must be a port 1-65535 (got '70000')"),
    ],
)
def test_command_line_refuses_a_port_out_of_range(args: tuple[str, ...], line: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result
    assert line in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _serve_static(listen: str, **popen: Any) -> subprocess.Popen[str]:
    """``serve`` with a static route: the listener without a lemond to talk to."""
    argv = [sys.executable, "-m", "hal0proxy", "serve", "--listen", listen, "--static-route", "m=1"]
    return subprocess.Popen(argv, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _listening_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if "listening on" in line:
            return line.strip()
        if ready and not line:
            break  # the process ended
    proc.kill()
    raise AssertionError(f"no listening line; stderr: {proc.communicate()[1]}")


def _stop(proc: subprocess.Popen[str]) -> None:
    terminate(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _healthz(family: socket.AddressFamily, host: str, port: int) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(4096)


@pytest.mark.parametrize(
    ("listen", "family", "host", "shown"),
    [
        ("127.0.0.1:0", socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        ("[::1]:0", socket.AF_INET6, "::1", "[::1]"),
    ],
)
def test_listening_line_names_the_real_port_and_brackets_ipv6(
    listen: str, family: socket.AddressFamily, host: str, shown: str
) -> None:
    proc = _serve_static(listen)
    try:
        line = _listening_line(proc)
        found = re.search(r"listening on http://(\S+):(\d+) in front of", line)
        assert found is not None and found.group(1) == shown, line
        port = int(found.group(2))
        assert port != 0
        assert _healthz(family, host, port).startswith(b"HTTP/1.1 200"), line
    finally:
        _stop(proc)


def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--listen", f"127.0.0.1:{port}", "--lemond", "http://127.0.0.1:1")
    assert result.returncode == 1, result
    expected = f"hal0proxy: cannot listen on 127.0.0.1:{port}: address already in use"
    assert result.stderr.strip().splitlines() == [expected], result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stdout


def test_a_privileged_port_without_the_right_is_one_line_and_exit_1() -> None:
    lowest_free = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    assert lowest_free > 1, "this kernel lets anyone bind any port: nothing to be denied"
    # As root, drop to nobody for this one process (setpriv is util-linux, always present here).
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    argv = [*drop, sys.executable, "-m", "hal0proxy", "serve", "--listen", "127.0.0.1:1", "--static-route", "m=1"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == ["hal0proxy: cannot listen on 127.0.0.1:1: permission denied"]
