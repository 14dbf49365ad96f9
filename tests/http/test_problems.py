"""One exception root: every error the HTTP layer and the data plane raise is an ``HttpProblem``
with a status hint and an error code, and ``as_proxy_error`` is the one mapping to the envelope."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import orjson
import pytest

import hal0proxy.http
import hal0proxy.proxy
import hal0proxy.routing
from hal0proxy.http.client import ConnectFailed, ProtocolFailure, RequestTimeout
from hal0proxy.http.errors import ProxyError, as_proxy_error
from hal0proxy.http.problems import BadRequest, BadResponse, HttpProblem, LocalProblem, RemoteProblem
from hal0proxy.http.sse import SSEParserError
from hal0proxy.proxy.exchange_state import ExchangeState, IllegalExchangeMove
from hal0proxy.proxy.upstream import ChildConnectTimeout, ChildUnreachable

# Not errors: the reader's signal that a client closed cleanly between two requests.
_NOT_PROBLEMS = {"hal0proxy.proxy.reader.ConnectionClosed"}


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for package in (hal0proxy.http, hal0proxy.proxy, hal0proxy.routing):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if obj.__module__ == info.name and issubclass(obj, BaseException):
                    found.append(obj)
    return found


def test_every_exception_of_the_http_layer_and_the_data_plane_has_the_one_root() -> None:
    classes = _exception_classes()
    assert len(classes) >= 10  # the walk found the modules at all
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if not issubclass(cls, HttpProblem) and f"{cls.__module__}.{cls.__qualname__}" not in _NOT_PROBLEMS
    ]
    assert strays == []


def test_no_two_problems_share_a_name() -> None:
    names = [cls.__qualname__ for cls in _exception_classes()]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


@pytest.mark.parametrize(
    ("problem", "status", "code", "side"),
    [
        (BadRequest("bad head"), 400, "request.invalid_http", RemoteProblem),
        (BadResponse("garbage"), 502, "dispatch.upstream_unavailable", RemoteProblem),
        (ProtocolFailure("closed early"), 502, "dispatch.upstream_unavailable", RemoteProblem),
        (SSEParserError("event too large"), 502, "dispatch.upstream_unavailable", RemoteProblem),
        (IllegalExchangeMove(ExchangeState.DONE, ExchangeState.SENT), 500, "system.internal", LocalProblem),
        (ChildConnectTimeout("slow accept"), 504, "upstream.timeout", HttpProblem),
        (ChildUnreachable("refused"), 502, "dispatch.upstream_unavailable", HttpProblem),
        (RequestTimeout("slow"), 504, "upstream.timeout", HttpProblem),
        (ConnectFailed("refused"), 502, "dispatch.upstream_unavailable", HttpProblem),
    ],
)
def test_each_problem_maps_to_its_envelope(problem: HttpProblem, status: int, code: str, side: type) -> None:
    assert isinstance(problem, side)
    err = as_proxy_error(problem)
    assert (err.status, err.code, err.message) == (status, code, problem.message)
    assert orjson.loads(err.body())["error"]["code"] == code


def test_a_proxy_error_is_its_own_envelope() -> None:
    err = ProxyError(503, "slot.loading", "loading", {"slot": "chat"}, retry_after_s=2)
    assert isinstance(err, HttpProblem) and err.status_hint == 503
    assert as_proxy_error(err) is err


def test_the_abstract_roots_cannot_be_raised() -> None:
    with pytest.raises(TypeError):
        HttpProblem("x")
    with pytest.raises(TypeError):
        RemoteProblem("x")
