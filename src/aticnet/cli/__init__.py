"""The ``aticnet`` command line: one module per subcommand, each parsing its flags and calling the library.

A subcommand module has ``add_parser(subparsers)`` (which sets ``func``) and ``run(args)``. Bad input
(``aticnet.utils.errors.UserError``, or a file the system refuses) is one line on stderr and exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..utils.errors import UserError
from . import (
    analyze,
    app,
    benchmark,
    check_data,
    compare,
    demo,
    evaluate,
    export,
    plot,
    predict,
    quantize,
    serve,
    stream,
    train,
    weights,
)

SUBCOMMANDS = (demo, train, evaluate, predict, compare, plot, export, quantize, app, analyze, benchmark, check_data,
               weights, serve, stream)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aticnet", description="Real-time semantic segmentation: AtICNet, ICNet, PSPNet.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for bad input")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:  # leave a host application's logging alone
        logging.basicConfig(level=logging.WARNING, format="aticnet: %(message)s")
        logging.getLogger("aticnet").setLevel(logging.DEBUG if args.debug else logging.INFO)
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"aticnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if args.debug or e.filename is None:  # no file to name: a bug, not the user's input
            raise
        print(f"aticnet {args.command}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aticnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
