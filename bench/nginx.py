"""nginx as a peer: a generated config, one worker, no daemon, upstream keep-alive, no buffering."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.procs import Proc, free_port, start_ready

__all__ = ["nginx_binary", "nginx_config", "start_nginx"]


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (str(Path("/usr/sbin/nginx")) if Path("/usr/sbin/nginx").exists() else None)


def nginx_config(workdir: Path, listeners: dict[int, int]) -> str:
    """``listeners`` maps an nginx port to the child port it fronts (nginx cannot route on the body).

    One worker process and ``master_process off``: the same single core hal0proxy gets. Upstream
    keep-alive (HTTP/1.1, empty Connection header) and ``proxy_buffering off`` so SSE events are
    relayed as they arrive, the way nginx is configured in front of llama-server in practice.
    """
    servers = []
    for index, (listen_port, child_port) in enumerate(listeners.items()):
        servers.append(
            f"""
  upstream child{index} {{ server 127.0.0.1:{child_port}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{listen_port} backlog=4096;
    location / {{
      proxy_pass http://child{index};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 3600s;
    }}
  }}"""
        )
    temp = "\n".join(
        f"  {kind}_temp_path {workdir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log {workdir}/error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 65536; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
{temp}
{"".join(servers)}
}}
"""


def start_nginx(log_dir: Path, children: dict[str, int]) -> tuple[Proc, dict[str, int]]:
    """Start nginx fronting each ``model -> child port``; returns the process and ``model -> nginx port``."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
    workdir = log_dir / "nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {model: free_port() for model in children}
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, {ports[m]: children[m] for m in children}))
    argv = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    return start_ready("nginx", argv, log_dir, [(port, model) for model, port in ports.items()]), ports
