"""A strict parser for the common request shape, so the hot path need not run h11.

It accepts only what is unambiguous: an HTTP/1.1 request line, well-formed header fields
(RFC 9110 token names, no obs-fold, no control characters in values), exactly one Host,
at most one Content-Length, and no Transfer-Encoding, Expect or Upgrade. Anything else
returns ``SLOW`` and the connection hands the bytes to h11, which stays the authority on
every edge case (chunked bodies, HTTP/1.0, 100-continue, and the precise 4xx for malformed
input). Requests are re-framed towards the child with their own Content-Length, so a head
this parser accepts cannot smuggle a second request to the child.

Before a head goes to h11, ``check_slow_head`` holds it to the rules where h11 (like most
servers) is lenient and a front end could disagree with us about where a request ends
(RFC 9112 §6.1, §6.3, §11.2): Content-Length together with Transfer-Encoding, any coding but
one ``chunked``, obs-fold, bare LF line ends, repeated Content-Length, and versions other than
HTTP/1.0 and HTTP/1.1 (the HTTP/2 preface included). Such a request is answered with a 4xx
and its connection closed; it never reaches a child.
"""

from __future__ import annotations

import re
from typing import Final

from hal0proxy.http.problems import BadRequest

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_FIELD_NAME = re.compile(_TOKEN + rb"\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_ANY_REQUEST_LINE = re.compile(rb"([^\x00-\x20\x7f]+) ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Heads with any of these need h11's full treatment.
_SLOW_FIELDS: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})

_FRAMING_FIELDS: Final = frozenset({b"transfer-encoding", b"content-length"})
# Fields the fast parser looks at (everything else is copied as it is).
_NOTED_FIELDS: Final = _SLOW_FIELDS | {b"content-length", b"host", b"connection"}
# A simple head up to its blank line, checked in one pass: the request line (method, target)
# and the field section (each line with its CRLF), split into fields once it is well-formed.
_SIMPLE_HEAD = re.compile(
    rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/1\.1\r\n((?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)

NEED_MORE: Final = 0
SLOW: Final = 1


class HeadTemplate:
    """What a repeated head fixes: all of its parse but the Content-Length value.

    Shared by every request with that head, so nothing changes it after it is built but
    ``memo``: what an upper layer derives from the head alone (the head re-framed for the
    child), kept per template so a repeated head costs that work once. ``memo`` stays small:
    its keys are the few combinations of settings the proxy runs with.
    """

    __slots__ = (
        "content_type",
        "fields",
        "keep_alive",
        "length_index",
        "memo",
        "method",
        "path",
        "query",
        "target",
    )

    MEMO_MAX: Final = 16

    def __init__(self, head: FastHead, length_index: int) -> None:
        self.method = head.method
        self.target = head.target
        path, _, self.query = head.target.partition(b"?")
        self.path = path.decode("latin-1")
        self.fields = tuple(head.headers)
        self.length_index = length_index  # where Content-Length is among the fields, or -1
        self.keep_alive = head.keep_alive
        self.content_type = next((v for k, v in head.headers if k == b"content-type"), b"")
        self.memo: dict[object, bytes] = {}


class FastHead:
    __slots__ = ("body_start", "content_length", "headers", "keep_alive", "method", "target", "template")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int,
        keep_alive: bool,
        body_start: int,
        template: HeadTemplate | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.body_start = body_start
        self.template = template  # set when this head repeats one seen before


# A client sends the same head request after request, with only the Content-Length value
# changing (an SDK's header set is fixed per client). Heads the parser accepted are kept keyed
# by their bytes with that value cut out; a head with the same key is the same head but for a
# value of digits and SP/HTAB, for which the parse is provably the same but for that one field
# (the value is checked again on every hit). Bounded in entries and in the size of a key.
_CACHE_MAX_ENTRIES: Final = 256
_CACHE_MAX_KEY_BYTES: Final = 2048
_templates: dict[bytes, HeadTemplate] = {}
_seen_once: set[bytes] = set()  # keys parsed once, not (yet) kept as templates
_LENGTH_FIELD = b"\r\ncontent-length:"


def parse_request_head(buf: bytes) -> FastHead | int:
    """``FastHead`` for a complete simple head, ``NEED_MORE`` or ``SLOW``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if b"\n\n" in buf or b"\n\r\n" in buf:
            # A head ended by bare LFs: answer now rather than wait for a CRLFCRLF that never comes.
            raise BadRequest("request head lines must end with CRLF, not a bare LF")
        return NEED_MORE
    head = buf[: end + 4]
    # The Content-Length field's value (between its colon and the CRLF) is cut out of the key:
    # the key then fixes every other byte of the head, that field's position included. The two
    # spellings clients use are searched for as they are (lower-casing the head would copy it);
    # a head with two such fields, however spelled, is never kept, so for a kept head the field
    # found is its only one, and equal keys cut the same place.
    at = head.find(b"\r\nContent-Length:")
    if at < 0:
        at = head.find(_LENGTH_FIELD)
        if at < 0:
            at = head.lower().find(_LENGTH_FIELD)
    start = value_end = 0
    if at >= 0:
        start = at + len(_LENGTH_FIELD)
        value_end = head.find(b"\r\n", start)
        key = head[:start] + head[value_end:]
    else:
        key = head
    template = _templates.get(key)
    if template is not None:
        index = template.length_index
        if index < 0:
            return FastHead(
                template.method, template.target, list(template.fields), 0, template.keep_alive, end + 4, template
            )
        value = head[start:value_end].strip(b" \t")
        if value.isdigit() and len(value) <= 18:  # what the parse below demands of it
            headers = list(template.fields)
            headers[index] = (b"content-length", value)
            return FastHead(
                template.method, template.target, headers, int(value), template.keep_alive, end + 4, template
            )
    parsed = _parse_simple_head(buf, end)
    if isinstance(parsed, FastHead) and len(key) <= _CACHE_MAX_KEY_BYTES:
        if key in _seen_once:
            if len(_templates) >= _CACHE_MAX_ENTRIES:
                _templates.clear()
            # the field's index: one CRLF before it per field before it (and the request line's)
            length_index = head.count(b"\r\n", 0, at) if at >= 0 else -1
            parsed.template = _templates[key] = HeadTemplate(parsed, length_index)
        else:
            # Kept from its second sight on: a client whose heads never repeat (a request id in
            # every head) costs a set insertion per request, not a template built and dropped.
            if len(_seen_once) >= _CACHE_MAX_ENTRIES:
                _seen_once.clear()
            _seen_once.add(key)
    return parsed


def _parse_simple_head(buf: bytes, end: int) -> FastHead | int:
    """The full parse of a complete head ending at ``end`` (its CRLFCRLF)."""
    # The request line and every header line at once, at C speed: a token, a colon, then
    # visible octets, SP and HTAB only. That rules out obs-fold, whitespace before the colon,
    # lines without a colon and control characters (bare CR or LF, NUL) in values; anything
    # else goes to h11.
    match = _SIMPLE_HEAD.fullmatch(buf, 0, end + 4)
    if match is None:
        return SLOW
    method, target, section = match.groups()
    if target[:1] != b"/":
        return SLOW  # absolute-form (or "*"): rare, and normalised on the general path (origin_form)
    underscores = b"_" in section  # one scan of the head, not one per header name
    headers: list[tuple[bytes, bytes]] = []
    content_length = 0
    seen_length = False
    hosts = 0
    keep_alive = True
    # Every line is ``token ":" value CRLF`` now: split and partition (memchr-based) cut it
    # faster than a regex walking every byte, and leave only the noted fields to Python.
    for line in section[:-2].split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        if name in _NOTED_FIELDS:
            if name in _SLOW_FIELDS:
                return SLOW
            if name == b"content-length":
                if seen_length or not value.isdigit() or len(value) > 18:
                    return SLOW
                seen_length = True
                content_length = int(value)
            elif name == b"host":
                hosts += 1
            elif b"close" in (lowered := value.lower()):  # connection; most say "keep-alive"
                if b"close" in [t.strip() for t in lowered.split(b",")]:
                    keep_alive = False  # any Connection field listing "close" ends the connection
        elif underscores and b"_" in name and name.replace(b"_", b"-") in _FRAMING_FIELDS:
            return SLOW  # "transfer_encoding": some servers read it as the real thing
        headers.append((name, value))
    if hosts != 1:
        return SLOW
    return FastHead(method, target, headers, content_length, keep_alive, end + 4)


def check_slow_head(head: bytes) -> bool:
    """Reject what is ambiguous in a complete head (without its final CRLFCRLF).

    Returns True when the body is chunked. Raises ``BadRequest`` (status hint 400, 501 for an
    unknown transfer coding, 505 for an unsupported version).
    """
    while head.startswith(b"\r\n"):  # RFC 9112 §2.2: empty lines before the request line
        head = head[2:]
    if head.count(b"\n") != head.count(b"\r\n"):
        raise BadRequest("request head lines must end with CRLF, not a bare LF")
    lines = head.split(b"\r\n")
    match = _ANY_REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise BadRequest("malformed request line")
    if _FIELD_NAME.match(match.group(1)) is None:
        raise BadRequest("malformed request method")
    major, minor = match.group(3), match.group(4)
    if major != b"1" or minor not in (b"0", b"1"):
        raise BadRequest(
            f"HTTP/{major.decode()}.{minor.decode()} is not supported; use HTTP/1.1",
            status_hint=505,
            code="request.http_version",
        )
    lengths = 0
    codings: list[bytes] | None = None
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise BadRequest("obsolete line folding (obs-fold) is not accepted in request headers")
        name, sep, value = line.partition(b":")
        if not sep or _FIELD_NAME.match(name) is None:
            raise BadRequest(f"malformed header line {line[:60]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value) is not None:
            raise BadRequest(f"control character in header {name[:40]!r}")
        name = name.lower()
        if b"_" in name and name.replace(b"_", b"-") in _FRAMING_FIELDS:
            # Servers that map "_" to "-" would frame by this header and we would not.
            raise BadRequest(f"header {name.decode('latin-1')!r} is refused: it imitates a framing header")
        if name == b"content-length":
            lengths += 1
            if lengths > 1 or _DIGITS.fullmatch(value) is None:
                raise BadRequest("Content-Length must be one decimal number, given once")
        elif name == b"transfer-encoding":
            if codings is not None:
                raise BadRequest("Transfer-Encoding must be given once")
            codings = [t.strip(b" \t").lower() for t in value.split(b",")]
    if codings is None:
        return False
    if lengths:
        # RFC 9112 §6.1: a server MAY reject this outright; forwarding it lets two parsers
        # disagree about where the request ends (the CL.TE / TE.CL smuggling forms).
        raise BadRequest("a request must not carry both Content-Length and Transfer-Encoding")
    if minor == b"0":
        raise BadRequest("Transfer-Encoding is not allowed in an HTTP/1.0 request")
    if codings != [b"chunked"]:
        # "chunked" must be applied once and last (RFC 9112 §6.1); an unknown coding is 501.
        chunked_once_last = codings.count(b"chunked") == (1 if codings[-1] == b"chunked" else 0)
        if chunked_once_last and all(_FIELD_NAME.fullmatch(c) for c in codings):
            raise BadRequest(
                f"unsupported transfer coding {b', '.join(codings).decode('latin-1')!r}; only chunked",
                status_hint=501,
                code="request.unsupported_transfer_coding",
            )
        raise BadRequest("malformed Transfer-Encoding")
    return True


def origin_form(target: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A request in absolute-form (``GET http://host/path``) as the origin-form the rest of the
    proxy reads: RFC 9112 §3.2.2 has a server accept it, use the target's path, and take the
    host from the target rather than from the Host field. Any other target is returned as is."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target, headers
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority:
        return target, headers
    if not path.startswith(b"/"):
        path = b"/" + path  # "http://host" and "http://host?q" name the root
    fields = [(name, value) for name, value in headers if name != b"host"]
    fields.insert(0, (b"host", authority))
    return path, fields
