"""``ivr asterisk check …``: validate Asterisk config files with :mod:`ivr.asterisk`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ivr.asterisk.conf import load_conf
from ivr.asterisk.errors import AsteriskConfError
from ivr.asterisk.extensions import parse_extensions
from ivr.asterisk.queues import parse_queues


def check_file(path: Path) -> str:
    """One-line summary of ``path``; raises :class:`AsteriskConfError` if it is invalid.
    ``extensions.conf`` and ``queues.conf`` are also checked as dialplan / queues."""
    cats = load_conf(path)
    if path.name == "extensions.conf":
        return f"{path}: ok, {len(parse_extensions(cats).contexts)} contexts / 上下文"
    if path.name == "queues.conf":
        return f"{path}: ok, {len(parse_queues(cats))} queues / 队列"
    return f"{path}: ok, {len(cats)} categories / 分类"


def _check(args: argparse.Namespace) -> int:
    paths: list[Path] = []
    for name in args.paths:
        p = Path(name)
        paths.extend(sorted(p.glob("*.conf")) if p.is_dir() else [p])
    if not paths:
        print("no .conf files found / 未找到 .conf 文件", file=sys.stderr)
        return 2
    bad = 0
    for p in paths:
        try:
            print(check_file(p))
        except AsteriskConfError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ast = sub.add_parser("asterisk", help="Asterisk config tools / Asterisk 配置工具")
    ast_sub = ast.add_subparsers(dest="asterisk_command", metavar="SUBCOMMAND", required=True)
    chk = ast_sub.add_parser(
        "check",
        help="validate .conf files (extensions.conf and queues.conf fully) / "
        "校验 .conf 配置文件（完整校验 extensions.conf 与 queues.conf）",
    )
    chk.add_argument("paths", nargs="+", help="files or directories / 文件或目录")
    chk.set_defaults(func=_check)
