"""Subcommands of `edgetune server`. Imports nothing heavy at import time."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("server", help="(being built)")
    parser.set_defaults(func=lambda args: parser.print_help())
