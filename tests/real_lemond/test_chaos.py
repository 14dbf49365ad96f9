"""Chaos against the real lemond and real llama-server children: streaming clients for 18 s
while children are killed, unloaded behind the proxy's back and respawned with new options.

The same schedule shape as ``tests/policy/test_chaos.py`` (a fault every 1-2.5 s, chosen by a
seeded RNG, on a random model), with the faults the real lemond can be driven to:

* ``crash``: ``kill -9`` of the model's child;
* ``evict``: a third client's ``/v1/unload`` of the model straight to lemond;
* ``respawn``: a third client's ``/v1/load`` of the model with another ``ctx_size``.

The SLO: no 502 and no silently truncated stream, ever.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter

import pytest

from tests.real_lemond.streams import Outcome, acceptable, stream_chat, tally
from tests.support.proxy import start_proxy, wait_for
from tests.support.real_lemond import RealLemond

pytestmark = pytest.mark.timeout(3900)

MAX_LOADED_MODELS = 2
MODELS = ("alpha", "beta")
DURATION_S = 18.0
CLIENTS = 6
CONFIG = "[policy]\nmax_wait_s = 20\n" + "".join(
    f'[[slot]]\nname = "{m}-slot"\nmodel = "{m}"\nwarm = true\n' for m in MODELS
)


def inject(lemond: RealLemond, fault: str, model: str, rng: random.Random) -> str:
    loaded = lemond.loaded()
    if fault == "crash":
        if model not in loaded:
            return "skipped"
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(loaded[model]["pid"]), signal.SIGKILL)
        return "ok"
    if fault == "evict":
        status, _ = lemond.post("/v1/unload", {"model_name": model})
        return str(status)
    status, _ = lemond.post("/v1/load", {"model_name": model, "ctx_size": rng.choice([384, 448, 512])})
    return str(status)


def test_chaos_against_the_real_lemond(lemond: RealLemond) -> None:
    lemond.post("/v1/unload", {})
    proxy = start_proxy(lemond.base_url, CONFIG)
    try:
        assert wait_for(lambda: set(lemond.loaded()) == set(MODELS), 60), proxy.log_text()[-3000:]
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION_S

        def client(i: int) -> None:
            mine: list[Outcome] = []
            while time.monotonic() < stop_at:
                mine.append(stream_chat(proxy.port, f"{MODELS[i % len(MODELS)]}-slot", max_tokens=60))
            with lock:
                outcomes.extend(mine)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        rng = random.Random(7)
        faults: Counter[str] = Counter()
        while time.monotonic() < stop_at - 2:
            time.sleep(rng.uniform(1.0, 2.5))
            fault = rng.choice(["crash", "evict", "respawn"])
            faults[f"{fault}:{inject(lemond, fault, rng.choice(MODELS), rng)}"] += 1
        for t in threads:
            t.join(120)
        counts = tally(outcomes)
        bad = [o for o in outcomes if not acceptable(o)]
        summary = f"outcomes={dict(counts)} faults={dict(faults)} bad={[(o.status, o.body[-200:]) for o in bad[:5]]}"
        print(summary)
        assert len(outcomes) > 30, summary
        assert sum(faults.values()) >= 6, summary
        assert counts["status_502"] == 0, summary
        assert not bad, summary
        assert counts["done"] > len(outcomes) * 0.5, summary
        metrics = proxy.request("GET", "/metrics")[2].decode()
        assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics, summary
    finally:
        proxy.stop()
