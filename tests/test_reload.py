"""SIGHUP on a running ``hal0proxy serve``: every key group the reload says it applied is seen to
take effect over real sockets (limits, API keys, policy, hang detection, slot settings), and the
keys it says need a restart keep their running values.

Each test starts the lemond emulator and the proxy as real processes, rewrites the proxy's
configuration file, sends SIGHUP, waits for the reload's log line and then observes the change
from a client's side.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

SMALL = "Qwen3-0.6B-GGUF"
LARGE = "Qwen3-4B-GGUF"
_RELOAD_LINE = re.compile(r"configuration reload(?:ed; applied: .*| refused.*)")
CHAT = {"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def reload(proxy: ProxyProcess, toml: str) -> str:
    """Write ``toml`` over the proxy's configuration file, SIGHUP it, return the reload's log
    text (the ``applied`` line and any warning after it)."""
    args = [str(arg) for arg in proxy.proc.args]  # type: ignore[union-attr]
    Path(args[args.index("--config") + 1]).write_text(toml)
    before = len(_RELOAD_LINE.findall(proxy.log_text()))
    offset = len(proxy.log_text())
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: len(_RELOAD_LINE.findall(proxy.log_text())) > before, 10), proxy.log_text()[-2000:]
    time.sleep(0.1)  # the restart warning, when there is one, is logged right after
    return proxy.log_text()[offset:]


def chat(proxy: ProxyProcess, model: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    return proxy.request("POST", "/v1/chat/completions", {"model": model, **CHAT}, timeout=timeout)


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def hang_evictions(proxy: ProxyProcess) -> float:
    metrics = proxy.request("GET", "/metrics")[2].decode()
    found = re.search(r'hal0proxy_evictions_total\{initiator="proxy",reason="hang"\} ([0-9.]+)', metrics)
    return float(found.group(1)) if found else 0.0


def warm_slot(extra: str = "", policy: str = "") -> str:
    return f"""[policy]
{policy}

[[slot]]
name = "alpha"
model = "{SMALL}"
warm = true
max_wait_s = 20
{extra}
"""


def ready(proxy: ProxyProcess, emu: EmulatorProcess) -> None:
    assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20), proxy.log_text()[-2000:]
    assert wait_until(lambda: SMALL in emu.loaded(), 10), emu.loaded()


# ---------------------------------------------------------------------------------- hang_* keys
_FAST_HANG = """hang_after_s = 2
hang_probe_interval_s = 1
hang_probe_timeout_s = 0.5
hang_probe_failures = 2"""


def test_shorter_hang_thresholds_take_effect_on_reload() -> None:
    """Started with the 90 s default; after the reload a hung child is found in seconds and the
    request caught on it is answered by the replacement (before: it waited for the client's
    timeout, the watch never probed)."""
    with start_emulator() as emu, start_proxy(emu.base_url, warm_slot()) as proxy:
        ready(proxy, emu)
        text = reload(proxy, warm_slot(policy=_FAST_HANG))
        for key in ("hang_after_s", "hang_probe_interval_s", "hang_probe_timeout_s", "hang_probe_failures"):
            assert f"policy.{key}" in text, text
        status, hung = emu.post("/_emu/hang", {"model_name": SMALL, "seconds": 40})
        assert status == 200, hung
        started = time.monotonic()
        status, _, body = chat(proxy, "alpha", timeout=30)
        elapsed = time.monotonic() - started
        assert status == 200, body
        # 2 s of silence + up to 1 s of sweep tick + two failed probes 1 s apart + the reload:
        # well under the 40 s after which the stopped child would have answered by itself.
        assert elapsed < 25, elapsed
        assert hang_evictions(proxy) == 1.0
        assert emu.loaded()[SMALL]["pid"] != hung["pid"]
        assert "health probe failed 2/2" in proxy.log_text()
        print(f"request on the hung child answered by its replacement after {elapsed:.2f}s")


def test_longer_hang_threshold_takes_effect_on_reload() -> None:
    """The reverse: started at 1 s, reloaded to 300 s. A child silent for 6 s is left alone and
    answers once it resumes (before: it was probed and replaced after about 2 s)."""
    with (
        start_emulator() as emu,
        start_proxy(
            emu.base_url,
            warm_slot(policy="hang_after_s = 1\nhang_probe_interval_s = 0.3\nhang_probe_timeout_s = 0.3"),
        ) as proxy,
    ):
        ready(proxy, emu)
        pid = emu.loaded()[SMALL]["pid"]
        text = reload(proxy, warm_slot(policy="hang_after_s = 300"))
        assert "policy.hang_after_s" in text, text
        status, hung = emu.post("/_emu/hang", {"model_name": SMALL, "seconds": 6})
        assert status == 200, hung
        started = time.monotonic()
        status, _, body = chat(proxy, "alpha", timeout=30)
        assert status == 200, body
        assert time.monotonic() - started > 4  # it was answered by the resumed child, not a new one
        assert emu.loaded()[SMALL]["pid"] == pid
        assert emu.state()["spawns_by_model"][SMALL] == 1
        assert hang_evictions(proxy) == 0.0
        assert "health probe failed" not in proxy.log_text()


# ---------------------------------------------------------------------------------- [limits]
def test_limits_take_effect_on_reload() -> None:
    with start_emulator() as emu, start_proxy(emu.base_url, "") as proxy:
        text = reload(proxy, "[limits]\nmax_body_bytes = 1000\nrequest_timeout_s = 1\nmax_connections = 2\n")
        for key in ("limits.max_body_bytes", "limits.request_timeout_s", "limits.max_connections"):
            assert key in text, text
        # max_body_bytes: a 2000-byte body on a new connection is refused before it is read.
        status, _, body = proxy.request("POST", "/v1/chat/completions", b"{" + b" " * 1998 + b"}")
        assert status == 413 and error_code(body) == "request.too_large", body
        # request_timeout_s: a request head that never ends gets 408 after 1 s, not 30.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert time.monotonic() - started < 10
        # max_connections: with two client connections open a third is refused with 503.
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10),
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10),
        ):
            time.sleep(0.3)  # both accepted
            status, _, body = proxy.request("GET", "/healthz", timeout=10)
            assert status == 503 and error_code(body) == "proxy.overloaded", body


def test_upstream_first_byte_timeout_takes_effect_on_reload() -> None:
    with start_emulator() as emu, start_proxy(emu.base_url, warm_slot()) as proxy:
        ready(proxy, emu)
        text = reload(proxy, "[limits]\nupstream_first_byte_timeout_s = 1\n" + warm_slot())
        assert "limits.upstream_first_byte_timeout_s" in text, text
        body = {"model": "alpha", **CHAT}
        status, _, data = proxy.request("POST", "/v1/chat/completions", body, {"X-Emu-Stall": "0,4"}, timeout=30)
        assert status == 504 and error_code(data) == "upstream.timeout", data


def test_shutdown_grace_takes_effect_on_reload() -> None:
    """Reloaded from the 30 s default to 0.5 s: SIGTERM with a stream stalled for 20 s in
    flight exits within seconds, the stream ended by the interrupted event."""
    with start_emulator() as emu, start_proxy(emu.base_url, warm_slot()) as proxy:
        ready(proxy, emu)
        text = reload(proxy, "[limits]\nshutdown_grace_s = 0.5\n" + warm_slot())
        assert "limits.shutdown_grace_s" in text, text
        received: list[bytes] = []

        def stream() -> None:
            body = {"model": "alpha", "stream": True, **CHAT}
            received.append(proxy.request("POST", "/v1/chat/completions", body, {"X-Emu-Stall": "1,20"})[2])

        client = threading.Thread(target=stream)
        client.start()
        assert wait_until(lambda: proxy.slots()["alpha"]["in_flight"] == 1, 10)
        time.sleep(0.5)  # the first token is out, the stall has begun
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10  # 0.5 s grace, far from the 30 s default or the 20 s stall
        client.join(timeout=10)
        assert received and b"upstream.stream_interrupted" in received[0], received


class HeaderCatcher:
    """A stand-in child on a loopback port: answers every request 200 and keeps its heads."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.heads: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                self.heads.append(head.lower())
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self.sock.close()
        self._thread.join(timeout=5)


def test_forward_conversation_id_takes_effect_on_reload() -> None:
    child = HeaderCatcher()
    try:
        with start_proxy("http://127.0.0.1:1", "", "--static-route", f"m={child.port}") as proxy:

            def forwarded() -> bool:
                body = {"model": "m", **CHAT}
                status, _, _ = proxy.request("POST", "/v1/chat/completions", body, {"X-Conversation-Id": "c1"})
                assert status == 200
                return b"x-conversation-id: c1" in child.heads[-1]

            assert not forwarded()
            text = reload(proxy, "forward_conversation_id = true\n")
            assert "forward_conversation_id" in text, text
            assert forwarded()
    finally:
        child.close()


# ---------------------------------------------------------------------------------- api_keys
def test_api_keys_take_effect_on_reload() -> None:
    with start_emulator() as emu, start_proxy(emu.base_url, "") as proxy:
        assert proxy.request("GET", "/v1/models")[0] == 200
        text = reload(proxy, 'api_keys = ["k-one"]\n')
        assert "api_keys" in text, text
        status, _, body = proxy.request("GET", "/v1/models")
        assert status == 401 and error_code(body) == "auth.required", body
        assert proxy.request("GET", "/v1/models", headers={"Authorization": "Bearer k-one"})[0] == 200
        reload(proxy, "")
        assert proxy.request("GET", "/v1/models")[0] == 200


# ---------------------------------------------------------------------------------- [policy]
def test_policy_takes_effect_on_reload() -> None:
    """``cold_start`` for a model no slot names: ``wait`` loads and answers; after the reload
    to ``reject`` a cold model is answered 503 ``slot.loading`` with ``Retry-After`` at once."""
    with start_emulator() as emu, start_proxy(emu.base_url, '[policy]\ncold_start = "wait"\n') as proxy:
        status, _, body = chat(proxy, SMALL)
        assert status == 200, body
        text = reload(proxy, '[policy]\ncold_start = "reject"\n')
        assert "policy.cold_start" in text, text
        started = time.monotonic()
        status, headers, body = chat(proxy, LARGE)
        assert status == 503 and error_code(body) == "slot.loading", body
        assert int(headers["retry-after"]) >= 1
        assert time.monotonic() - started < 5  # at once, not after a load


# ---------------------------------------------------------------------------------- [[slot]]
def test_slot_settings_take_effect_on_reload() -> None:
    """A warm slot that never idled out gets ``idle_timeout_s = 1``: it is unloaded."""
    with start_emulator() as emu, start_proxy(emu.base_url, warm_slot()) as proxy:
        ready(proxy, emu)
        text = reload(proxy, warm_slot(extra="idle_timeout_s = 1"))
        assert "slot 'alpha'.idle_timeout_s" in text, text
        assert wait_until(lambda: SMALL not in emu.loaded(), 15), emu.loaded()
        assert wait_until(lambda: proxy.slots()["alpha"]["state"] == "offline", 10), proxy.slots()["alpha"]


# ---------------------------------------------------------------------------------- restart-only keys
def test_restart_only_keys_keep_their_running_values() -> None:
    with start_emulator() as emu, start_proxy(emu.base_url, warm_slot()) as proxy:
        ready(proxy, emu)
        changed = warm_slot() + f'\n[[slot]]\nname = "beta"\nmodel = "{LARGE}"\n'
        text = reload(proxy, 'listen = "127.0.0.1:1"\n' + changed)
        assert "need a restart: " in text and "slot 'beta' added" in text, text
        # --listen on the command line wins over the file, so listen itself did not change.
        assert proxy.request("GET", "/healthz")[0] == 200
        assert set(proxy.slots()) == {"alpha"}
        # A file that does not validate is refused as a whole: the running configuration stays.
        text = reload(proxy, 'listen = "127.0.0.1:99999"\n[limits]\nmax_body_bytes = 10\n')
        assert "configuration reload refused" in text and "PORT 1-65535" in text, text
        status, _, body = chat(proxy, "alpha")
        assert status == 200, body


# ---------------------------------------------------------------------------------- [policy] for unnamed models
def test_policy_idle_timeout_reaches_models_no_slot_names() -> None:
    """``policy.idle_timeout_s`` covers a model requested by its lemond name (no ``[[slot]]``),
    at start and after a reload (it used to apply to configured slots only)."""
    with start_emulator() as emu, start_proxy(emu.base_url, "") as proxy:
        status, _, body = chat(proxy, SMALL)
        assert status == 200, body
        time.sleep(2.5)  # two idle passes: never unloaded with the default 0
        assert SMALL in emu.loaded()
        text = reload(proxy, "[policy]\nidle_timeout_s = 1\n")
        assert "policy.idle_timeout_s" in text, text
        assert wait_until(lambda: SMALL not in emu.loaded(), 15), emu.loaded()
        assert proxy.slots()[SMALL]["idle_timeout_s"] == 1


def test_policy_default_load_s_is_the_first_retry_after() -> None:
    """Before a model's load was ever measured, ``Retry-After`` is ``policy.default_load_s``."""
    policy = '[policy]\ncold_start = "reject"\ndefault_load_s = 40\n'
    with start_emulator() as emu, start_proxy(emu.base_url, policy) as proxy:
        emu.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 5})
        status, headers, body = chat(proxy, SMALL)
        assert status == 503 and error_code(body) == "slot.loading", body
        assert 30 <= int(headers["retry-after"]) <= 40, headers
