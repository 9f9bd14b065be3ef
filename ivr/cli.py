"""``ivr`` command line: every sub-command lives in the module that owns it.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds
its parser(s) and sets ``func`` (``(argparse.Namespace) -> int``) as a default.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ivr import __version__
from ivr.log import setup_logging

COMMAND_MODULES: tuple[str, ...] = (
    "ivr.demo",
    "ivr.serve",
    "ivr.sim.cli",
    "ivr.ami.cli",
    "ivr.dialplan.cli",
    "ivr.asterisk.cli",
    "ivr.events.cli",
    "ivr.ticketsink.cli",
    "ivr.prompts.cli",
    "ivr.agents.cli",
    "ivr.api.cli",
    "ivr.recordings.cli",
    "ivr.callbacks.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivr",
        description="12345 hotline telephony control server (Asterisk AMI/FastAGI bridge). "
        "12345 政务服务便民热线 话务控制服务。",
    )
    parser.add_argument("--version", action="version", version=f"ivr {__version__}")
    parser.add_argument(
        "--log-level", default="warning", help="log level: debug, info, warning, error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    return int(result or 0)
