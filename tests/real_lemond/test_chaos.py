"""Chaos against the real lemond and real llama-server children: streaming clients for 18 s
while children are killed, stopped, evicted and respawned, and lemond itself is killed.

The same schedule shape as ``tests/churn/chaos.py`` (every fault once, in a seeded shuffled
order, on a random model), with the faults the real lemond can be driven to:

* ``crash``: ``kill -9`` of the model's child;
* ``hang``: ``SIGSTOP`` of the model's child (the port accepts, nothing answers; the proxy's
  hang watch, set short here, finds it and has lemond replace it);
* ``evict``: a third client's ``/v1/unload`` of the model straight to lemond;
* ``respawn``: a third client's ``/v1/load`` of the model with another ``ctx_size``;
* ``third_party_load``: a third client's ``/v1/load`` of a model no slot uses, into a full
  pool (v11.7.0: both serving models are pinned, so lemond answers 409; v10.7.0 has no pins
  and evicts one of them);
* ``kill_lemond``: SIGKILL to lemond's process group (lemond and its children) and a new
  lemond on the same port.

The SLO: no 502, no silently truncated stream, no transport error, every non-200 a 503 with
``Retry-After``, and the proxy's descriptors back to their count before the run.
"""

from __future__ import annotations

import contextlib
import json
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
THIRD = "gamma"  # no slot uses it: only "another client" loads it
LEMOND_MODELS = (*MODELS, THIRD)
FAULTS = ("crash", "hang", "evict", "respawn", "third_party_load", "kill_lemond")
DURATION_S = 18.0
CLIENTS = 6
CONFIG = (
    "[policy]\nmax_wait_s = 20\n"
    "hang_after_s = 1.5\nhang_probe_interval_s = 0.3\nhang_probe_timeout_s = 0.3\nhang_probe_failures = 2\n"
    + "".join(f'[[slot]]\nname = "{m}-slot"\nmodel = "{m}"\nwarm = true\n' for m in MODELS)
)


def error_code(outcome: Outcome) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(outcome.body)["error"]["code"])
    return "?"


def after_each_fault(schedule: list[tuple[float, str]], ended: list[tuple[float, str]]) -> dict[str, dict[str, int]]:
    """Outcomes grouped by the last fault injected before each ended (for the report)."""
    out: dict[str, Counter[str]] = {fault: Counter() for _, fault in schedule}
    for at, kind in ended:
        before = [fault for when, fault in schedule if when <= at]
        if before:
            out[before[-1]][kind] += 1
    return {fault: dict(c) for fault, c in out.items()}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Faults:
    def __init__(self, lemond: RealLemond, rng: random.Random) -> None:
        self.lemond = lemond
        self.rng = rng
        self.stopped: list[int] = []  # SIGSTOPped children, resumed at the end whatever happened

    def inject(self, fault: str, model: str) -> str:
        lemond = self.lemond
        if fault == "kill_lemond":
            lemond.note_children()
            lemond.kill_group()
            lemond.reap_orphans()
            time.sleep(0.5)
            lemond.start()
            return "restarted"
        if fault == "third_party_load":
            return str(lemond.post("/v1/load", {"model_name": THIRD})[0])
        if fault == "evict":
            return str(lemond.post("/v1/unload", {"model_name": model})[0])
        if fault == "respawn":
            options = {"model_name": model, "ctx_size": self.rng.choice([384, 448])}
            return str(lemond.post("/v1/load", options)[0])
        loaded = lemond.loaded()
        if model not in loaded:
            return "skipped"
        pid = int(loaded[model]["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if fault == "crash" else signal.SIGSTOP)
        if fault == "hang":
            self.stopped.append(pid)
        return "ok"

    def resume(self) -> None:
        for pid in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_chaos_against_the_real_lemond(lemond: RealLemond) -> None:
    lemond.post("/v1/unload", {})
    proxy = start_proxy(lemond.base_url, CONFIG)
    faults = Faults(lemond, random.Random(7))
    try:
        assert wait_for(lambda: set(MODELS) <= set(lemond.loaded()), 60), proxy.log_text()[-3000:]
        for model in MODELS:  # one served stream each, then count the proxy's descriptors
            assert stream_chat(proxy.port, f"{model}-slot", max_tokens=8).kind == "done"
        fds_before = open_fds(proxy.proc.pid)
        outcomes: list[Outcome] = []
        ended: list[tuple[float, str]] = []  # (when, outcome kind), to tell which fault caused what
        lock = threading.Lock()
        stop = threading.Event()

        def client(i: int) -> None:
            mine: list[Outcome] = []
            when: list[tuple[float, str]] = []
            while not stop.is_set():
                mine.append(stream_chat(proxy.port, f"{MODELS[i % len(MODELS)]}-slot", max_tokens=60))
                when.append((time.monotonic(), mine[-1].kind))
                if mine[-1].kind == "error_status":
                    time.sleep(0.2)  # as an SDK honouring Retry-After would, but shorter (as tests/churn)
            with lock:
                outcomes.extend(mine)
                ended.extend(when)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        order = list(FAULTS)
        faults.rng.shuffle(order)
        injected: Counter[str] = Counter()
        schedule: list[tuple[float, str]] = []
        gap = (DURATION_S - 3.0) / len(order)
        for fault in order:
            time.sleep(gap)
            schedule.append((time.monotonic(), fault))
            injected[f"{fault}:{faults.inject(fault, faults.rng.choice(MODELS))}"] += 1
        # Some faults take lemond seconds (a respawn of a busy child waits for it to end): the
        # clients run until every fault is in and 3 s more, so each one meets traffic.
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(120)
        faults.resume()
        wait_for(lambda: open_fds(proxy.proc.pid) <= fds_before, 10)
        fds_after = open_fds(proxy.proc.pid)
        counts = tally(outcomes)
        bad = [o for o in outcomes if not acceptable(o)]
        codes = Counter(error_code(o) for o in outcomes if o.kind == "error_status")
        print("after each fault:", after_each_fault(schedule, ended))
        refused = [at for at, kind in ended if kind == "error_status"]
        if refused:
            print(
                f"503s from {refused[0] - schedule[0][0]:.2f} s to {refused[-1] - schedule[0][0]:.2f} s "
                f"after the first fault; faults at {[(round(at - schedule[0][0], 2), f) for at, f in schedule]}"
            )
        summary = (
            f"lemond {lemond.version}: outcomes={dict(counts)} 503 codes={dict(codes)} faults={dict(injected)} "
            f"fds {fds_before}->{fds_after} "
            f"bad={[(o.status, o.kind, o.body[-200:]) for o in bad[:5]]}"
        )
        print(summary)
        assert len(outcomes) > 30, summary
        assert sum(injected.values()) == len(FAULTS), summary
        assert counts["status_502"] == 0, summary
        assert not bad, summary
        assert counts["done"] > len(outcomes) * 0.5, summary
        assert fds_after <= fds_before, summary
        metrics = proxy.request("GET", "/metrics")[2].decode()
        assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics, summary
    finally:
        faults.resume()
        proxy.stop()
