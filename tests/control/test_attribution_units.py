"""Whose eviction an event is: the proxy's recent unload, lemond's decision, or a finding of
the proxy's own traffic (pure: ``eviction_source`` over an ``UnloadLedger``)."""

from __future__ import annotations

from hal0proxy.control.attribution import PROXY_UNLOAD_ATTRIBUTION_S, Eviction, UnloadLedger, eviction_source
from hal0proxy.lemond.events import EvictReason, ModelEvicted, ModelLoaded, ProcessCrashed

M = "Qwen3-0.6B-GGUF"


def evicted(reason: EvictReason = EvictReason.MANUAL) -> ModelEvicted:
    return ModelEvicted(model=M, reason=reason)


def test_the_line_after_the_proxys_own_unload_is_not_counted_again() -> None:
    ledger = UnloadLedger()
    ledger.asked(M, 100.0)
    assert M in ledger
    assert eviction_source(evicted(), ledger, 105.0) is None
    assert M not in ledger  # used up: the next eviction of the model is lemond's
    assert eviction_source(evicted(EvictReason.LRU), ledger, 106.0) == Eviction("lru", "lemond")


def test_an_unload_asked_long_ago_no_longer_claims_the_line() -> None:
    ledger = UnloadLedger()
    ledger.asked(M, 100.0)
    late = 100.0 + PROXY_UNLOAD_ATTRIBUTION_S + 0.001
    assert eviction_source(evicted(EvictReason.IDLE), ledger, late) == Eviction("idle", "lemond")


def test_a_withdrawn_unload_claims_nothing() -> None:
    ledger = UnloadLedger()
    ledger.asked(M, 100.0)
    ledger.withdrawn(M)
    ledger.withdrawn(M)  # twice is harmless
    assert eviction_source(evicted(EvictReason.LRU), ledger, 101.0) == Eviction("lru", "lemond")


def test_crashes_are_lemonds_when_it_saw_the_exit_and_the_proxys_when_its_traffic_found_them() -> None:
    ledger = UnloadLedger()
    crash = ProcessCrashed(model=M, pid=7, exit_code=139)
    assert eviction_source(crash, ledger, 0.0) == Eviction("crash", "lemond")
    assert eviction_source(ProcessCrashed(model=M, pid=7, cause="hang"), ledger, 0.0) == Eviction("hang", "proxy")
    for cause in ("refused", "closed"):
        found = ProcessCrashed(model=M, pid=7, cause=cause)
        assert eviction_source(found, ledger, 0.0) == Eviction("crash", "proxy")


def test_other_events_are_not_evictions() -> None:
    assert eviction_source(ModelLoaded(model=M, port=8001), UnloadLedger(), 0.0) is None
