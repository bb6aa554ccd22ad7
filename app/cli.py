"""The one command line: ``edgetune export|edge|server|demo …``.

Each program registers its own subcommands from a light ``cli`` module that imports nothing
heavy at import time, so ``edgetune edge …`` never loads torch.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    from edgetune.edge import cli as edge_cli
    from edgetune.export import cli as export_cli
    from edgetune.server import cli as server_cli

    from . import demo

    parser = argparse.ArgumentParser(prog="edgetune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgetune {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="program", metavar="{export,edge,server,demo}", required=True)
    export_cli.register(sub)
    edge_cli.register(sub)
    server_cli.register(sub)
    demo.register(sub)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.INFO if verbose <= 1 else logging.DEBUG)
    if verbose == 0 and not quiet:
        level = logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from edgetune.contract import ContractError

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ContractError) as exc:
        print(f"edgetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
