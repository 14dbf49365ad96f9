"""The package as a user installs it: metadata, no optional import on the default path, and a
wheel smoke (build, install into a fresh virtualenv without extras, run the demo, stream a chat
through it with the official ``openai`` client, stop it with SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.support.emulator import REPO, free_port, wait_until

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The five runtime dependencies of the design; everything else is an extra.
RUNTIME = {"uvloop", "h11", "wsproto", "orjson", "prometheus-client"}

# Makes `import gguf` / `import numpy` fail in a child interpreter, as on a machine where the
# extra is not installed, even though the test virtualenv has both.
BLOCK_EXTRA = """
import sys
class _NoExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("gguf", "numpy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoExtra())
"""


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _run_without_extra(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_EXTRA + code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_runtime_dependencies_are_the_five_of_the_design() -> None:
    assert {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]} == RUNTIME


def test_llama_extra_holds_what_only_real_children_need() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {_dist_name(r) for r in extras["llama"]} == {"gguf", "numpy"}
    assert {"build", "selenium", "openai"} <= {_dist_name(r) for r in extras["dev"]}


def test_build_backend_understands_the_license_string() -> None:
    # PEP 639 `license = "MIT"` needs setuptools 77 or newer.
    assert isinstance(PYPROJECT["project"]["license"], str)
    (req,) = PYPROJECT["build-system"]["requires"]
    match = re.fullmatch(r"setuptools>=(\d+)(\..*)?", req)
    assert match is not None and int(match.group(1)) >= 77, req


def test_every_module_but_the_generator_imports_without_the_extra() -> None:
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "hal0proxy").rglob("*.py")
        if p.name not in ("__main__.py", "tiny_model.py")
    )
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\nprint(len({modules!r}))"
    done = _run_without_extra(code)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(modules) > 40


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--version"], r"^hal0proxy \d+\.\d+\.\d+\n$"),
        (["emulate", "--help"], r"--children \{fake,llama-server\}"),
        (["check-config", "docs/hal0proxy.example.toml"], r": OK \("),
        (["serve", "--help"], r"--lemond"),
        (["demo", "--help"], r"--emulator-port"),
    ],
)
def test_subcommands_work_without_the_extra(argv: list[str], expect: str) -> None:
    done = _run_without_extra(f"from hal0proxy.cli import main\nsys.exit(main({argv!r}))")
    assert done.returncode == 0, done.stderr
    assert re.search(expect, done.stdout, re.M), done.stdout


def test_real_children_without_the_extra_fail_in_one_line_naming_it(tmp_path: Path) -> None:
    argv = ["emulate", "--children", "llama-server", "--llama-server", "/bin/true", "--port", str(free_port())]
    done = _run_without_extra(
        f"from hal0proxy.cli import main\nsys.exit(main({argv!r}))", env={"HAL0_CACHE_DIR": str(tmp_path)}
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'hal0proxy[llama]'" in lines[0] and "gguf" in lines[0], lines[0]
    assert not list(tmp_path.rglob("*.gguf")), "no model file may be left behind"


def test_generator_run_directly_without_the_extra_names_it() -> None:
    done = _run_without_extra("import hal0proxy.emulator.tiny_model")
    assert done.returncode == 1
    assert "pip install 'hal0proxy[llama]'" in done.stderr.strip().splitlines()[-1], done.stderr


# ----------------------------------------------------------------------------------------- wheel
def _build(outdir: Path) -> tuple[Path, Path]:
    done = subprocess.run(
        # No --sdist/--wheel: the wheel is built from the sdist, which proves the sdist complete
        # and leaves no build/ directory in the checkout.
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = outdir.glob("hal0proxy-*.whl")
    (sdist,) = outdir.glob("hal0proxy-*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(wheel, venv): the wheel built from this checkout, installed without extras."""
    root = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    wheel, _ = _build(root / "dist")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # pip's cache (not --no-index: the runtime dependencies come from the package index) keeps
    # this quick after the first run.
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    print(f"\nbuilt and installed {wheel.name} in {time.monotonic() - started:.1f} s")
    yield wheel, venv


def test_wheel_ships_the_code_and_the_status_page_and_nothing_else(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "hal0proxy/api/static/status.html" in names
    assert "hal0proxy/emulator/fake_llama_server.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/"))]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert "Provides-Extra: llama" in text


def _venv_python(venv: Path, code: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=venv,  # not the checkout: the installed copy must be the one imported
        stdin=subprocess.DEVNULL,
    )
    return done.stdout.strip() if done.returncode == 0 else "ERROR " + done.stderr.strip().splitlines()[-1]


def test_fresh_venv_has_no_extra(installed: tuple[Path, Path]) -> None:
    _, venv = installed
    assert _venv_python(venv, "import gguf").startswith("ERROR ModuleNotFoundError")
    assert _venv_python(venv, "import numpy").startswith("ERROR ModuleNotFoundError")
    where = _venv_python(venv, "import hal0proxy; print(hal0proxy.__file__)")
    assert where.startswith(str(venv)), where


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--version"], r"^hal0proxy \d+\.\d+\.\d+$"),
        (["serve", "--help"], r"--static-route"),
        (["emulate", "--help"], r"--children \{fake,llama-server\}"),
        (["check-config", "CONFIG"], r": OK \(1 slot\(s\), listen 127\.0\.0\.1:8080\)"),
    ],
)
def test_every_subcommand_runs_from_the_wheel(installed: tuple[Path, Path], argv: list[str], expect: str) -> None:
    _, venv = installed
    config = venv / "config.toml"
    config.write_text('[[slot]]\nname = "primary"\nmodel = "Qwen3-0.6B-GGUF"\n')
    done = subprocess.run(
        [str(venv / "bin" / "hal0proxy"), *[str(config) if a == "CONFIG" else a for a in argv]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=venv,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(expect, done.stdout, re.M), done.stdout


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read()


def test_demo_from_the_wheel_streams_a_chat_and_stops_on_sigterm(installed: tuple[Path, Path]) -> None:
    _, venv = installed
    port, emu_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log_path = venv / "demo.log"
    started = time.monotonic()
    argv = [str(venv / "bin" / "hal0proxy"), "demo", "--listen", f"127.0.0.1:{port}", "--emulator-port", str(emu_port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=venv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"

    def primary_ready() -> bool:
        with contextlib.suppress(OSError, ValueError):
            slots = json.loads(_get(f"{base}/api/slots")[2])
            return any(s["name"] == "primary" and s["state"] == "ready" for s in slots)
        return False

    try:
        assert wait_until(primary_ready, 60, interval=0.2), log_path.read_text(errors="replace")
        ready_s = time.monotonic() - started
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
        stream = client.chat.completions.create(
            model="primary", stream=True, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces).strip(), pieces

        status, _, body = _get(f"{base}/api/slots")
        slots: list[dict[str, Any]] = json.loads(body)
        assert status == 200
        assert {s["name"] for s in slots} == {"primary", "chat", "embed", "rerank"}
        status, content_type, page = _get(f"{base}/")
        assert status == 200 and content_type.startswith("text/html"), content_type
        assert b"hal0proxy" in page

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = log_path.read_text(errors="replace")
    print(f"demo from the wheel: slots ready after {ready_s:.1f} s; output:\n{out}")
    assert code == 0, out
    assert f"status page: http://127.0.0.1:{port}/" in out
    assert f"lemond emulator on http://127.0.0.1:{emu_port}" in out
    assert "Traceback" not in out, out
    with contextlib.suppress(ConnectionRefusedError), socket.create_connection(("127.0.0.1", emu_port), 2):
        raise AssertionError("the demo's emulator outlived it")


def test_demo_exits_cleanly_on_sigint(tmp_path: Path) -> None:
    port, emu_port = free_port(), free_port()
    log_path = tmp_path / "demo.log"
    argv = [
        sys.executable,
        "-m",
        "hal0proxy",
        "demo",
        "--listen",
        f"127.0.0.1:{port}",
        "--emulator-port",
        str(emu_port),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, like a shell's foreground job
        )
    try:
        # SIGINT once the demo said it is listening (the proxy installs its signal handlers
        # right after that line) and is ready.
        def ready() -> bool:
            if b"hal0proxy listening on" not in log_path.read_bytes():
                return False
            with contextlib.suppress(OSError):
                return _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            return False

        assert wait_until(ready, 60, interval=0.2), log_path.read_text(errors="replace")
        # To the demo process only: it stops the proxy, then its emulator. (A terminal's Ctrl-C
        # also reaches the emulator at the same moment; that variant can hang in the lemond
        # adapter's shutdown, see the heartbeat loop's wait_for, and is not asserted here.)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log_path.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert f"status page: http://127.0.0.1:{port}/" in text
    for listening in (port, emu_port):
        with contextlib.suppress(ConnectionRefusedError), socket.create_connection(("127.0.0.1", listening), 2):
            raise AssertionError(f"something still listens on {listening} after SIGINT")
