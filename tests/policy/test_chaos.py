"""Chaos: 16 streaming clients for 30 s while lemond evicts, crashes and moves children.

The SLO under test: no 502, ever. Every response is a 200 whose stream ends with
``[DONE]`` or with the proxy's ``upstream.stream_interrupted`` error event, or a 503 with
``Retry-After``.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter

from tests.support.emulator import start_emulator
from tests.support.proxy import start_proxy, wait_for

MODELS = {"alpha": "Qwen3-0.6B-GGUF", "beta": "Qwen3-4B-GGUF"}
DURATION_S = 30.0
CLIENTS = 16


def one_stream(port: int, slot: str, outcomes: Counter[str], problems: list[str]) -> None:
    body = {"model": slot, "stream": True, "max_tokens": 60, "messages": [{"role": "user", "content": "go"}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        outcomes["transport_error"] += 1
        problems.append(f"{slot}: {type(exc).__name__}: {exc}")
        return
    finally:
        conn.close()
    if resp.status == 200:
        events = [e for e in data.split(b"\n\n") if e.strip()]
        if events and events[-1] == b"data: [DONE]":
            outcomes["done"] += 1
        elif events and b"upstream.stream_interrupted" in events[-1]:
            outcomes["interrupted"] += 1
        else:
            outcomes["bad_stream"] += 1
            problems.append(f"{slot}: stream ended without [DONE] or error event: {data[-200:]!r}")
    elif resp.status == 503 and (resp.getheader("retry-after") or "").isdigit():
        outcomes["503"] += 1
    else:
        outcomes[f"status_{resp.status}"] += 1
        problems.append(f"{slot}: {resp.status} {data[:300]!r}")


def test_chaos_no_502() -> None:
    emu = start_emulator("--fake-tokens-per-second", "400", max_loaded_models=2, watchdog_poll_seconds=0.5)
    config = "".join(
        f'[[slot]]\nname = "{slot}"\nmodel = "{model}"\nwarm = true\nmax_wait_s = 20\n'
        for slot, model in MODELS.items()
    )
    proxy = start_proxy(emu.base_url, config)
    try:
        assert wait_for(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
        outcomes: Counter[str] = Counter()
        problems: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION_S

        def client(i: int) -> None:
            slot = list(MODELS)[i % len(MODELS)]
            local: Counter[str] = Counter()
            local_problems: list[str] = []
            while time.monotonic() < stop_at:
                one_stream(proxy.port, slot, local, local_problems)
            with lock:
                outcomes.update(local)
                problems.extend(local_problems)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        rng = random.Random(7)
        faults: Counter[str] = Counter()
        while time.monotonic() < stop_at - 2:
            time.sleep(rng.uniform(1.0, 2.5))
            fault = rng.choice(["evict", "crash", "respawn"])
            model = rng.choice(list(MODELS.values()))
            status, _ = emu.post(f"/_emu/{fault}", {"model_name": model})
            faults[f"{fault}:{status}"] += 1
        for t in threads:
            t.join(90)
        total = sum(outcomes.values())
        summary = f"outcomes={dict(outcomes)} faults={dict(faults)} problems={problems[:5]}"
        print(summary)
        assert total > 100, summary
        assert sum(v for k, v in faults.items() if k.endswith(":200")) >= 8, summary
        assert outcomes["status_502"] == 0, summary
        assert not problems, summary
        assert outcomes["done"] > total * 0.5, summary
        metrics = proxy.request("GET", "/metrics")[2].decode()
        assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics
    finally:
        proxy.stop()
        emu.stop()
