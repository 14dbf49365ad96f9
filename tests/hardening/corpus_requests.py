"""The hostile-request corpus: exact bytes a client sends, and what it must get back.

Each case names the status and error code the proxy must answer with, whether it must close
the connection afterwards, and how many requests the child may see (smuggling cases: none —
the proxy refuses, it never forwards something two parsers could split differently).
Sources: RFC 9112 §2.2, §3, §5, §6.1, §6.3, §7.1; the CL.TE / TE.CL / TE.TE forms of
request smuggling; the limits in docs/security.md.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAT = b'{"model":"m","messages":[]}'
# A complete second request hidden in a body: it must never reach the child on its own.
HIDDEN = b"GET /v1/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
BODY_LIMIT = 1024 * 1024  # the proxy under test runs with [limits] max_body_bytes = 1 MiB


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    status: int
    code: str | None  # the error envelope's code, None for a success
    closed: bool  # the proxy must close the connection after answering
    child: int = 0  # requests the child must receive
    method: bytes = b"POST"


def head(*lines: str, start: str = "POST /v1/chat/completions HTTP/1.1") -> bytes:
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunked(body: bytes) -> bytes:
    return chunk(body) + b"0\r\n\r\n"


def _smuggling() -> list[Case]:
    hidden_chunked = b"0\r\n\r\n" + HIDDEN
    n = len(hidden_chunked)
    bad = "request.invalid_http"
    te_cl = [
        ("cl_then_te", ["Host: t", f"Content-Length: {n}", "Transfer-Encoding: chunked"]),
        ("te_then_cl", ["Host: t", "Transfer-Encoding: chunked", f"Content-Length: {n}"]),
        ("te_padded_value", ["Host: t", "Transfer-Encoding:   chunked", f"Content-Length: {n}"]),
        ("te_tab_value", ["Host: t", "Transfer-Encoding:\tchunked", f"Content-Length: {n}"]),
        ("te_trailing_ws", ["Host: t", "Transfer-Encoding: chunked \t", f"Content-Length: {n}"]),
        ("te_folded_with_cl", ["Host: t", "Transfer-Encoding:", " chunked", f"Content-Length: {n}"]),
        ("te_mixed_case_with_cl", ["Host: t", "tRaNsFeR-eNcOdInG: cHuNkEd", f"Content-Length: {n}"]),
        ("te_vertical_tab", ["Host: t", "Transfer-Encoding: \x0bchunked", f"Content-Length: {n}"]),
        ("te_space_before_colon", ["Host: t", "Transfer-Encoding : chunked", f"Content-Length: {n}"]),
        ("te_underscore_name", ["Host: t", "Transfer_Encoding: chunked", f"Content-Length: {n}"]),
        ("te_folded_alone", ["Host: t", "Transfer-Encoding: x", " chunked"]),
        ("te_twice", ["Host: t", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
        ("te_chunked_twice_in_list", ["Host: t", "Transfer-Encoding: chunked, chunked"]),
        ("te_chunked_not_last", ["Host: t", "Transfer-Encoding: chunked, gzip"]),
        ("te_empty_list_item", ["Host: t", "Transfer-Encoding: chunked,"]),
        ("te_and_cl_zero", ["Host: t", "Content-Length: 0", "Transfer-Encoding: chunked"]),
    ]
    cases = [Case(f"smuggle_{name}", head(*lines) + hidden_chunked, 400, bad, True) for name, lines in te_cl]
    cases.append(
        Case(
            "smuggle_te_cl_classic",
            head("Host: t", "Content-Length: 4", "Transfer-Encoding: chunked") + b"5c\r\nG" + HIDDEN + b"\r\n0\r\n\r\n",
            400,
            bad,
            True,
        )
    )
    cases.append(
        Case(
            "smuggle_te_in_http10",
            head("Host: t", "Transfer-Encoding: chunked", start="POST /v1/chat/completions HTTP/1.0") + chunked(CHAT),
            400,
            bad,
            True,
        )
    )
    unsupported = "request.unsupported_transfer_coding"
    for name, value in (("gzip_chunked", "gzip, chunked"), ("unknown", "xchunked"), ("identity", "identity")):
        cases.append(
            Case(
                f"smuggle_te_{name}",
                head("Host: t", f"Transfer-Encoding: {value}") + chunked(CHAT),
                501,
                unsupported,
                True,
            )
        )
    lengths = [
        ("cl_twice_same", ["Content-Length: 5", "Content-Length: 5"]),
        ("cl_twice_different", ["Content-Length: 5", "Content-Length: 50"]),
        ("cl_list", ["Content-Length: 5, 5"]),
        ("cl_plus", ["Content-Length: +5"]),
        ("cl_negative", ["Content-Length: -5"]),
        ("cl_hex", ["Content-Length: 0x5"]),
        ("cl_underscore_digits", ["Content-Length: 1_0"]),
        ("cl_twenty_digits", ["Content-Length: 99999999999999999999"]),
        ("cl_nul", ["Content-Length: 5\x00"]),
        ("cl_underscore_name", ["Content_Length: 5", f"Content-Length: {len(CHAT)}"]),
        ("cl_space_before_colon", [f"Content-Length : {len(CHAT)}"]),
    ]
    cases += [
        Case(f"smuggle_{name}", head("Host: t", *lines) + CHAT + HIDDEN, 400, bad, True) for name, lines in lengths
    ]
    return cases


def _chunk_framing() -> list[Case]:
    te = head("Host: t", "Transfer-Encoding: chunked")
    bad = "request.invalid_http"
    broken = [
        ("size_0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("size_negative", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("size_underscore", b"1_0\r\n0123456789\r\n0\r\n\r\n"),
        ("size_plus", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("size_empty", b"\r\nhello\r\n0\r\n\r\n"),
        ("size_with_inner_space", b"5 5\r\nhello\r\n0\r\n\r\n"),
        ("size_17_hex_digits", b"10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("data_without_crlf", b"5\r\nhelloXX0\r\n\r\n"),
        ("data_with_bare_lf", b"5\r\nhello\n0\r\n\r\n"),
        ("size_line_bare_lf", b"5\nhello\r\n0\r\n\r\n"),
        ("extension_100kb", b"5;" + b"a" * 100_000 + b"\r\nhello\r\n0\r\n\r\n"),
        ("extension_ctl", b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        ("trailer_without_colon", b"5\r\nhello\r\n0\r\nbogus\r\n\r\n"),
        ("trailer_64kb", b"5\r\nhello\r\n0\r\n" + b"X-T: " + b"a" * 65_000 + b"\r\n\r\n"),
    ]
    cases = [Case(f"chunk_{name}", te + body, 400, bad, True) for name, body in broken]
    half = len(CHAT) // 2
    valid = [
        ("two_chunks", chunk(CHAT[:half]) + chunk(CHAT[half:]) + b"0\r\n\r\n"),
        ("extension", b"%x;name=value\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT)),
        ("trailer", chunk(CHAT) + b"0\r\nX-Trailer: 1\r\n\r\n"),
        ("leading_zeros", b"000%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT)),
        ("uppercase_coding", chunked(CHAT)),
    ]
    cases += [
        Case(
            f"chunk_ok_{name}",
            head("Host: t", "Transfer-Encoding: " + ("CHUNKED" if name == "uppercase_coding" else "chunked")) + body,
            200,
            None,
            False,
            child=1,
        )
        for name, body in valid
    ]
    return cases


def _heads() -> list[Case]:
    bad = "request.invalid_http"
    version = "request.http_version"
    get = "GET /v1/models HTTP/1.1"
    cases = [
        Case("version_http20", b"GET /v1/models HTTP/2.0\r\nHost: t\r\n\r\n", 505, version, True, method=b"GET"),
        Case("version_h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, version, True, method=b"GET"),
        Case("version_http12", b"GET /v1/models HTTP/1.2\r\nHost: t\r\n\r\n", 505, version, True, method=b"GET"),
        Case("version_http30", b"GET /v1/models HTTP/3.0\r\nHost: t\r\n\r\n", 505, version, True, method=b"GET"),
        Case("version_http09", b"GET /v1/models\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("version_lowercase", b"GET /v1/models http/1.1\r\nHost: t\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("version_garbage", b"GET /v1/models HTTP/x.y\r\nHost: t\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("host_missing", head(start=get), 400, bad, True, method=b"GET"),
        Case("host_twice", head("Host: a", "Host: b", start=get), 400, bad, True, method=b"GET"),
        Case("method_with_space", b"G ET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("method_with_ctl", b"G\x01T /v1/models HTTP/1.1\r\nHost: t\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("target_with_space", b"GET /v1/mo dels HTTP/1.1\r\nHost: t\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("target_with_ctl", b"GET /v1/\x01models HTTP/1.1\r\nHost: t\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("bare_lf_head", b"GET /v1/models HTTP/1.1\nHost: t\n\n", 400, bad, True, method=b"GET"),
        Case("bare_lf_one_line", b"GET /v1/models HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400, bad, True, method=b"GET"),
        Case("bare_cr_in_value", head("Host: t", "X: a\rb", start=get), 400, bad, True, method=b"GET"),
        Case("nul_in_value", head("Host: t", "X: a\x00b", start=get), 400, bad, True, method=b"GET"),
        Case("del_in_value", head("Host: t", "X: a\x7fb", start=get), 400, bad, True, method=b"GET"),
        Case("obs_fold", head("Host: t", "X-A: 1", " 2", start=get), 400, bad, True, method=b"GET"),
        Case("header_without_colon", head("Host: t", "NoColonHere", start=get), 400, bad, True, method=b"GET"),
        Case("header_empty_name", head("Host: t", ": x", start=get), 400, bad, True, method=b"GET"),
        Case("header_space_before_colon", head("Host : t", start=get), 400, bad, True, method=b"GET"),
        Case("header_name_with_ctl", head("Host: t", "X\x01Y: 1", start=get), 400, bad, True, method=b"GET"),
        Case(
            "header_70kb",
            head("Host: t", "X-Big: " + "a" * 70_000, start=get),
            431,
            "request.headers_too_large",
            True,
            method=b"GET",
        ),
        Case(
            "headers_1000",
            head("Host: t", *[f"X-H{i}: {'v' * 64}" for i in range(1000)], start=get),
            431,
            "request.headers_too_large",
            True,
            method=b"GET",
        ),
        Case(
            "target_70kb",
            head("Host: t", start="GET /v1/models?" + "q" * 70_000 + " HTTP/1.1"),
            431,
            "request.headers_too_large",
            True,
            method=b"GET",
        ),
        Case("http10_closes", b"GET /v1/models HTTP/1.0\r\n\r\n", 200, None, True, method=b"GET"),
        Case(
            # Accepted as origin-form (RFC 9112 §3.2.2): /v1/x, which has no default slot.
            "absolute_form_target",
            head("Host: t", start="GET http://t/v1/x HTTP/1.1"),
            400,
            "request.missing_model",
            False,
            method=b"GET",
        ),
        Case("leading_empty_line", b"\r\n" + head("Host: t", start=get), 200, None, False, method=b"GET"),
    ]
    return cases


def _limits() -> list[Case]:
    too_large = "request.too_large"
    big = BODY_LIMIT + 1
    return [
        Case("limit_cl_over", head("Host: t", f"Content-Length: {big}"), 413, too_large, True),
        Case(
            "limit_chunked_over",
            head("Host: t", "Transfer-Encoding: chunked")
            + chunk(b"a" * 600_000)
            + chunk(b"a" * 600_000)
            + b"0\r\n\r\n",
            413,
            too_large,
            True,
        ),
        Case(
            "limit_expect_over", head("Host: t", "Expect: 100-continue", f"Content-Length: {big}"), 413, too_large, True
        ),
        Case(
            "limit_expect_ok",
            head("Host: t", "Expect: 100-continue", f"Content-Length: {len(CHAT)}") + CHAT,
            200,
            None,
            False,
            child=1,
        ),
        Case(
            "limit_body_at_limit_not_json",
            head("Host: t", f"Content-Length: {BODY_LIMIT}") + b" " * BODY_LIMIT,
            400,
            "request.invalid_json",
            False,
        ),
    ]


def _bodies() -> list[Case]:
    invalid = "request.invalid_json"

    def post(body: bytes, path: str = "/v1/chat/completions") -> bytes:
        return (
            head(
                "Host: t",
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
                start=f"POST {path} HTTP/1.1",
            )
            + body
        )

    return [
        Case("json_invalid", post(b'{"model":'), 400, invalid, False),
        Case("json_array", post(b'["m"]'), 400, invalid, False),
        Case("json_model_number", post(b'{"model":5}'), 400, invalid, False),
        Case("json_model_object", post(b'{"model":{"a":1}}'), 400, invalid, False),
        Case("json_deep_nesting", post(b"[" * 5000 + b"]" * 5000), 400, invalid, False),
        Case("json_invalid_utf8", post(b'{"model":"\xff\xfe"}'), 400, invalid, False),
        Case("json_trailing_garbage", post(b'{"model":"m"} x'), 400, invalid, False),
        Case("json_nan", post(b'{"model":"m","temperature":NaN}'), 400, invalid, False),
        Case("model_missing", post(b'{"messages":[]}'), 400, "request.missing_model", False),
        Case("model_empty_body", post(b""), 400, "request.missing_model", False),
        Case("model_unknown", post(b'{"model":"nope"}'), 404, "dispatch.no_route", False),
        Case("model_path_traversal", post(b'{"model":"../../etc/passwd"}'), 404, "dispatch.no_route", False),
        Case("model_5000_chars", post(b'{"model":"' + b"a" * 5000 + b'"}'), 404, "dispatch.no_route", False),
        Case("model_with_nul", post(b'{"model":"m\\u0000"}'), 404, "dispatch.no_route", False),
        Case("json_ok_forwarded", post(CHAT), 200, None, False, child=1),
    ]


def _methods() -> list[Case]:
    return [
        Case("method_head_models", head("Host: t", start="HEAD /v1/models HTTP/1.1"), 200, None, False, method=b"HEAD"),
        Case(
            "method_trace", head("Host: t", start="TRACE / HTTP/1.1"), 404, "resource.not_found", False, method=b"TRACE"
        ),
        Case(
            "method_options_star",
            head("Host: t", start="OPTIONS * HTTP/1.1"),
            404,
            "resource.not_found",
            False,
            method=b"OPTIONS",
        ),
        Case(
            "method_unknown_on_models",
            head("Host: t", start="FOO /v1/models/x HTTP/1.1"),
            400,
            "request.missing_model",
            False,
            method=b"FOO",
        ),
        Case(
            "path_models_unknown",
            head("Host: t", start="GET /v1/models/..%2f..%2fetc HTTP/1.1"),
            404,
            "model.not_found",
            False,
            method=b"GET",
        ),
        Case(
            "path_unknown",
            head("Host: t", start="GET /etc/passwd HTTP/1.1"),
            404,
            "resource.not_found",
            False,
            method=b"GET",
        ),
        Case(
            "upgrade_websocket_ignored",
            head("Host: t", "Connection: Upgrade", "Upgrade: websocket", start="GET /v1/models HTTP/1.1"),
            200,
            None,
            False,
            method=b"GET",
        ),
        Case(
            "upgrade_h2c_ignored",
            head(
                "Host: t",
                "Connection: Upgrade, HTTP2-Settings",
                "Upgrade: h2c",
                "HTTP2-Settings: AAMAAABkAAQAAP__",
                start="GET /v1/models HTTP/1.1",
            ),
            200,
            None,
            False,
            method=b"GET",
        ),
    ]


CASES: list[Case] = _smuggling() + _chunk_framing() + _heads() + _limits() + _bodies() + _methods()
