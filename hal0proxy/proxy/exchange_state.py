"""The states of one forwarded request and the one table of legal moves (pure, no I/O).

Rule: every change of an exchange's state goes through ``Exchange._move`` (``proxy.exchange``),
which refuses a move that is not in ``LEGAL_MOVES``. The state says what an exchange may still
do, so the retry, reroute and stream-termination rules are moves, not combinations of flags::

    RECEIVED ──► ROUTING ──► CONNECTING ──► SENT ──► HEAD_RELAYED ──► DONE
       │            ▲  │         │  ▲        │ │          │
       │            └──┼─────────┘  └────────┘ │          ├──► FAILED
       │            ▲  │   (reroute)  (retry)  │          └──► CANCELLED
       │            └──┼───────────────────────┘ (the child died before answering)
       └──► SENT (fast path: a proven route and an idle pooled connection)

Every state after RECEIVED and before DONE can also move to FAILED and CANCELLED; RECEIVED
(routed synchronously) only to FAILED.

- **retry**: SENT → CONNECTING, once, when a reused pooled connection turns out to have been
  closed by the child (llama-server closes after every stream) before any byte of the
  response arrived: nothing reached the client, so a fresh connection is safe.
- **reroute**: CONNECTING/SENT → ROUTING when a connect is refused, or when the child accepts
  and dies before answering: the route is stale, the router is asked where the model is now.
  At most ``MAX_REROUTES`` connect failures in a row are re-resolved; the next one is
  answered ``503 slot.loading`` with ``Retry-After`` (the model is between children).
- **stream termination**: a child lost after the head went out ends an SSE stream that is
  between two events with the ``upstream.stream_interrupted`` event and the chunked end
  (HEAD_RELAYED → DONE: the client reads a well-formed stream); anything else (mid-event, a
  non-SSE body) can only be cut, visibly, by aborting the client connection (→ FAILED).

DONE: a complete response reached the client. FAILED: the proxy answered with an error
envelope, or had to cut a response under way. CANCELLED: the client went away, or shutdown
ended the exchange.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from hal0proxy.http.problems import LocalProblem

__all__ = ["ENDS", "LEGAL_MOVES", "MAX_REROUTES", "ExchangeState", "IllegalExchangeMove"]

MAX_REROUTES = 2


class ExchangeState(enum.StrEnum):
    # A StrEnum, not a plain Enum: a move looks its states up in a dict and a frozenset, and a
    # plain Enum member hashes in Python (~0.3 µs a move), a StrEnum member as a str does.

    #: Parsed; not yet routed.
    RECEIVED = "received"
    #: Waiting for the router (``Router.acquire``, or ``reroute`` after a stale route).
    ROUTING = "routing"
    #: A lease is held; connecting to the child (no idle pooled connection, or a retry).
    CONNECTING = "connecting"
    #: The request is written to the child; no byte of the response has reached the client.
    SENT = "sent"
    #: The response head is written to the client; the body flows.
    HEAD_RELAYED = "head_relayed"
    #: The client received a complete response.
    DONE = "done"
    #: Answered with an error envelope, or a response under way was cut.
    FAILED = "failed"
    #: The client went away, or shutdown ended the exchange.
    CANCELLED = "cancelled"


_S = ExchangeState
_RECEIVED, _ROUTING, _CONNECTING, _SENT = _S.RECEIVED, _S.ROUTING, _S.CONNECTING, _S.SENT
_HEAD_RELAYED, _DONE, _FAILED, _CANCELLED = _S.HEAD_RELAYED, _S.DONE, _S.FAILED, _S.CANCELLED
ENDS = frozenset({_DONE, _FAILED, _CANCELLED})

LEGAL_MOVES: Mapping[ExchangeState, frozenset[ExchangeState]] = {
    _RECEIVED: frozenset({_ROUTING, _CONNECTING, _SENT, _FAILED}),
    _ROUTING: frozenset({_CONNECTING, _FAILED, _CANCELLED}),
    _CONNECTING: frozenset({_SENT, _ROUTING, _FAILED, _CANCELLED}),
    _SENT: frozenset({_HEAD_RELAYED, _CONNECTING, _ROUTING, _FAILED, _CANCELLED}),
    _HEAD_RELAYED: frozenset({_DONE, _FAILED, _CANCELLED}),
    _DONE: frozenset(),
    _FAILED: frozenset(),
    _CANCELLED: frozenset(),
}


class IllegalExchangeMove(LocalProblem):
    """A move not in ``LEGAL_MOVES``: a bug in the data plane, answered 500 if it can be."""

    def __init__(self, old: ExchangeState, new: ExchangeState) -> None:
        super().__init__(f"illegal exchange move {old.name} -> {new.name}")
        self.old = old
        self.new = new
