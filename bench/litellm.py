"""LiteLLM's proxy as a peer: its own virtualenv outside the repository, a generated config.

LiteLLM is never installed into the project's environment: it brings ~170 MB of dependencies
(FastAPI, uvicorn, pydantic, the OpenAI SDK, ...) that the proxy must not depend on. The venv is
created on first use under ``~/.cache/hal0proxy/litellm-venv`` (``HAL0_LITELLM_VENV`` overrides the
path; pip's own ``PIP_FIND_LINKS``/``PIP_NO_INDEX`` work for offline installs from a wheel dir).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from bench.procs import Proc, free_port, start_ready

__all__ = ["ensure_litellm", "litellm_config", "litellm_venv", "litellm_version", "start_litellm"]

#: the proxy takes ~10 s to import its dependencies and start on a busy 2-core machine
START_TIMEOUT = 180.0

#: quiet, offline, no background work: telemetry off, no cost-map download at import, no UI/docs
QUIET_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
}


def litellm_venv() -> Path:
    override = os.environ.get("HAL0_LITELLM_VENV")
    return Path(override) if override else Path.home() / ".cache" / "hal0proxy" / "litellm-venv"


def _executable(venv: Path) -> Path:
    return venv / "bin" / "litellm"


def ensure_litellm(venv: Path | None = None) -> Path:
    """The ``litellm`` executable, creating the venv and installing ``litellm[proxy]`` when missing."""
    venv = venv or litellm_venv()
    exe = _executable(venv)
    if exe.exists():
        return exe
    print(f"installing litellm[proxy] into {venv} (one time, ~2 minutes)", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "litellm[proxy]"]
    subprocess.run(pip, check=True, timeout=1800)
    if not exe.exists():
        raise FileNotFoundError(f"litellm[proxy] installed but {exe} is missing")
    return exe


def litellm_version(venv: Path | None = None) -> str:
    python = (venv or litellm_venv()) / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, timeout=60, check=False)
    return done.stdout.decode().strip() or "?"


def litellm_config(children: dict[str, int]) -> str:
    """``model_list`` with one OpenAI-compatible entry per child; JSON is valid YAML.

    ``openai/<name>`` + ``api_base`` is LiteLLM's documented way to front any OpenAI-compatible
    server; the upstream key is a placeholder (the child checks none). Logging callbacks stay empty and
    message logging off so the measured path is routing + the upstream call, nothing else.
    """
    model_list = [
        {
            "model_name": model,
            "litellm_params": {
                "model": f"openai/{model}",
                "api_base": f"http://127.0.0.1:{port}/v1",
                "api_key": "dummy",
            },
        }
        for model, port in children.items()
    ]
    config = {
        "model_list": model_list,
        "litellm_settings": {
            "telemetry": False,
            "set_verbose": False,
            "turn_off_message_logging": True,
            "drop_params": True,
            "request_timeout": 3600,
        },
        # No master key: hal0proxy and nginx check no credentials either, and without a key the
        # loopback-only proxy needs no database; this LiteLLM version refuses to start keyless
        # unless told that is intended.
        "general_settings": {"disable_spend_logs": True, "dangerously_permit_weak_or_unset_master_key": True},
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2).decode()


def start_litellm(log_dir: Path, children: dict[str, int]) -> tuple[Proc, int]:
    """``litellm --config FILE --port P --num_workers 1`` in front of ``children``; one port serves all models."""
    exe = ensure_litellm()
    workdir = log_dir / "litellm"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(litellm_config(children))
    port = free_port()
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    ready = [(port, model) for model in children]
    return start_ready("litellm", argv, log_dir, ready, timeout=START_TIMEOUT, env=QUIET_ENV), port
