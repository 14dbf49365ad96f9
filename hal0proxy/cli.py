"""Command line: ``hal0proxy serve|demo|emulate|check-config``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hal0proxy import __version__
from hal0proxy.config import LISTEN_RULE, MAX_PORT, parse_listen

_PORT_RULE = f"must be a port 1-{MAX_PORT}"


def _parse_listen(value: str) -> tuple[str, int]:
    listen = parse_listen(value)
    if listen is None:
        raise argparse.ArgumentTypeError(f"{LISTEN_RULE} (got {value!r})")
    return listen


def _parse_port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{_PORT_RULE} (got {value!r})")
    return int(value)


def _parse_static_route(value: str) -> tuple[str, int]:
    name, sep, port = value.partition("=")
    if not sep or not name or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be MODEL=PORT with PORT 1-{MAX_PORT} (got {value!r})")
    return name, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hal0proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hal0proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy in front of lemond")
    # --listen and --lemond are checked with the file's keys, so their errors read the same.
    serve.add_argument("--listen", default=None, help="HOST:PORT (default 127.0.0.1:8080; port 0: any free port)")
    serve.add_argument("--lemond", default=None, help="lemond base URL (default http://127.0.0.1:13305)")
    serve.add_argument("--config", default=None, help="TOML configuration file")
    serve.add_argument(
        "--static-route",
        type=_parse_static_route,
        action="append",
        default=[],
        metavar="MODEL=PORT",
        help="serve MODEL from a fixed child port and do not talk to lemond (benchmarks, debugging)",
    )

    demo = sub.add_parser("demo", help="run the lemond emulator (fake children) and the proxy together")
    demo.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 8080), help="HOST:PORT of the proxy")
    demo.add_argument("--emulator-port", type=_parse_port, default=13305, help="port of the lemond emulator")

    sub.add_parser("emulate", help="run the lemond emulator (see `hal0proxy emulate --help`)", add_help=False)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "emulate":
        return _emulate(args_list[1:])
    args = build_parser().parse_args(args_list)
    from hal0proxy import app

    if args.command == "serve":
        return app.run_serve(args)
    if args.command == "demo":
        status_page = f"http://{app.host_port(*args.listen)}/"
        print(f"status page: {status_page}  (Ctrl-C stops the proxy and the emulator)", flush=True)
        return app.run_demo(args)
    if args.command == "check-config":
        return app.run_check_config(args.file)
    return 2


def _emulate(argv: list[str]) -> int:
    from hal0proxy.emulator.cli import main as emulate_main
    from hal0proxy.emulator.realbin import LlamaServerUnavailable

    try:
        return emulate_main(argv)
    except LlamaServerUnavailable as exc:  # e.g. `--children llama-server` without the extra
        print(f"hal0proxy emulate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
