"""``edgetune demo``: every program on one machine, on embedded defaults."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="(being built)")
    parser.set_defaults(func=lambda args: parser.print_help())
