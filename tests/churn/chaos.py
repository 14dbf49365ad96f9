"""The chaos run: clients stream through the proxy while lemond is made to fail every way we
can name, and the outcome is judged against the proxy's promise.

Faults (each at least once per run, in a shuffled order): ``crash``, ``respawn``, ``evict``,
``ws_drop``, ``restart``, ``hang``, ``slow_load``, ``fail_load``, ``third_party_load`` and
``kill_lemond`` (SIGKILL of the emulator and a new one on the same port).

Pass: no 502, no truncated streams, no transport error, every non-200 a 503 with
``Retry-After``, every stream ending in ``[DONE]`` or the error event, and the proxy's open
file descriptors back to their count before the run.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.churn.traffic import Hammer, Tally
from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

SLOTS = {"alpha": "tiny-a", "beta": "tiny-b"}
THIRD = "tiny-c"  # loaded straight into lemond by "another client"
FAULTS = (
    "crash", "respawn", "evict", "ws_drop", "restart", "hang",
    "slow_load", "fail_load", "third_party_load", "kill_lemond",
)  # fmt: skip
CONFIG = """[policy]
max_wait_s = 20
hang_after_s = 1.5
hang_probe_interval_s = 0.3
hang_probe_timeout_s = 0.3
hang_probe_failures = 2
""" + "".join(f'[[slot]]\nname = "{slot}"\nmodel = "{model}"\nwarm = true\n' for slot, model in SLOTS.items())


def write_catalog(directory: Path) -> Path:
    models = [
        {"name": name, "type": "llm", "checkpoint": f"test/{name}:Q4_0", "load_seconds": 0.2}
        for name in (*SLOTS.values(), THIRD)
    ]
    path = directory / "chaos-catalog.json"
    path.write_text(json.dumps({"models": models}))
    return path


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class ChaosResult:
    streams: Tally
    plain: Tally
    faults: Counter[str] = field(default_factory=Counter)
    fds_before: int = 0
    fds_after: int = 0

    @property
    def problems(self) -> list[str]:
        return self.streams.problems + self.plain.problems

    def summary(self) -> str:
        return (
            f"streams={dict(self.streams.outcomes)} plain={dict(self.plain.outcomes)} faults={dict(self.faults)} "
            f"503 codes={dict(self.streams.codes + self.plain.codes)} "
            f"fds {self.fds_before}->{self.fds_after} problems={self.problems[:5]}"
        )


class Chaos:
    def __init__(self, emu: EmulatorProcess, proxy: ProxyProcess, emu_args: tuple[str, ...], emu_kw: dict[str, object]):
        self.emu = emu
        self.proxy = proxy
        self.emu_args = emu_args
        self.emu_kw = emu_kw

    def inject(self, fault: str, model: str) -> int:
        emu = self.emu
        if fault == "fail_load":
            emu.post("/_emu/fail_next_load", {"model_name": model, "kind": "other"})
            return emu.post("/_emu/evict", {"model_name": model})[0]  # the reload fails once, then nuclear retry
        if fault == "slow_load":
            emu.post("/_emu/slow_load", {"model_name": model, "seconds": 1.5})
            status = emu.post("/_emu/evict", {"model_name": model})[0]
            emu.post("/_emu/slow_load", {"model_name": model, "seconds": None})
            return status
        if fault == "third_party_load":
            return emu.post("/v1/load", {"model_name": THIRD})[0]  # 200 (an idle victim) or 409 (all serving)
        if fault == "kill_lemond":
            # lemond and its children killed together, as the real-lemond chaos does (SIGKILL to
            # the group). After a bare SIGKILL of lemond a busy real llama-server gets SIGTERM
            # (PR_SET_PDEATHSIG) and stalls in its shutdown with streams open instead of exiting,
            # with lemond as with the emulator; that case has its own tests.
            emu.stop(sigkill=True, with_children=True)
            time.sleep(0.5)
            self.emu = start_emulator(
                *self.emu_args,
                port=emu.port,
                child_port_base=emu.child_port_base,
                **self.emu_kw,  # type: ignore[arg-type]
            )
            return 200
        return emu.post(f"/_emu/{fault}", {"model_name": model})[0]


def run_chaos(
    tmp_path: Path,
    *,
    version: str,
    duration_s: float = 18.0,
    children: str = "fake",
    stream_clients: int = 6,
    seed: int = 7,
) -> ChaosResult:
    emu_args: tuple[str, ...] = ("--fake-tokens-per-second", "300") if children == "fake" else ()
    emu_kw: dict[str, object] = {
        "catalog": write_catalog(tmp_path),
        "max_loaded_models": 2,
        "lemond_version": version,
        "children": children,
        "unload_pause_seconds": 0.2,
    }
    emu = start_emulator(*emu_args, **emu_kw)  # type: ignore[arg-type]
    proxy = start_proxy(emu.base_url, CONFIG)
    chaos = Chaos(emu, proxy, emu_args, emu_kw)
    try:
        assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 60), proxy.log_text()[-2000:]
        # Warm the pool of upstream connections the way the run will, then count descriptors.
        with (
            Hammer(proxy.port, "alpha", stream_clients // 2, stream=True, max_tokens=40),
            Hammer(proxy.port, "beta", stream_clients - stream_clients // 2, stream=True, max_tokens=40),
            Hammer(proxy.port, "alpha", 1),
        ):
            time.sleep(1.5)
        fds_before = open_fds(proxy.proc.pid)
        rng = random.Random(seed)
        faults = list(FAULTS)
        rng.shuffle(faults)
        counts: Counter[str] = Counter()
        with (
            Hammer(proxy.port, "alpha", stream_clients // 2, stream=True, max_tokens=40) as s1,
            Hammer(proxy.port, "beta", stream_clients - stream_clients // 2, stream=True, max_tokens=40) as s2,
            Hammer(proxy.port, "alpha", 1) as plain,
        ):
            stop_at = time.monotonic() + duration_s
            gap = (duration_s - 3.0) / len(faults)
            for fault in faults:
                time.sleep(gap)
                model = rng.choice(list(SLOTS.values()))
                counts[f"{fault}:{chaos.inject(fault, model)}"] += 1
            time.sleep(max(0.0, stop_at - time.monotonic()))
        streams = Tally()
        for tally in (s1.tally, s2.tally):
            streams.outcomes.update(tally.outcomes)
            streams.codes.update(tally.codes)
            streams.problems.extend(tally.problems)
        # Idle pooled connections to children that were replaced are closed when those died;
        # what is left must be no more than before the run.
        fds_after = open_fds(proxy.proc.pid)
        wait_until(lambda: open_fds(proxy.proc.pid) <= fds_before, 10)
        fds_after = open_fds(proxy.proc.pid)
        result = ChaosResult(streams, plain.tally, counts, fds_before, fds_after)
        metrics = proxy.request("GET", "/metrics")[2].decode()
        assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics, result.summary()
        return result
    finally:
        proxy.stop()
        chaos.emu.stop()


def assert_promise(result: ChaosResult) -> None:
    summary = result.summary()
    print(summary)
    assert not result.problems, summary  # no 502, no truncation, no transport error, 503s have Retry-After
    for tally in (result.streams, result.plain):
        bad = {k: v for k, v in tally.outcomes.items() if k not in ("done", "interrupted", "200", "503")}
        assert not bad, summary
    assert result.streams.outcomes["done"] > 50, summary
    assert result.plain.outcomes["200"] > 20, summary
    assert sum(result.faults.values()) == len(FAULTS), summary
    assert result.fds_after <= result.fds_before, summary
