"""``python -m ivr.events events …`` / ``python -m ivr.events ticket-sink …``: the same
commands as ``ivr events`` and ``ivr ticket-sink``, without loading the other
sub-command modules (used by the tests and the benchmark)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ivr.events import cli, sink_cli
from ivr.log import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivr.events")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning, error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli.register(sub)
    sink_cli.register(sub)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
