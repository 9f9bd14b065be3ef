"""``ivr dialplan …``: validate, render, diff, publish, hours.

Exit codes: 0 ok (diff: no difference); 1 the definition is invalid (diff: differences);
2 usage or I/O error; 3 publish failed and was rolled back (the running version stayed);
4 publish failed and the rollback failed too (check Asterisk).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import sys
from pathlib import Path
from typing import TextIO

from ivr.dialplan.errors import DialplanError, Problem, PublishError
from ivr.dialplan.hours_report import hours_report
from ivr.dialplan.loader import parse_definition, sort_problems
from ivr.dialplan.model import Where
from ivr.dialplan.publish import (
    AmiControl,
    Plan,
    Publisher,
    Store,
    atomic_write,
    diff_lines,
    prepare,
)
from ivr.dialplan.render import render, source_version
from ivr.dialplan.validate import (
    PromptFormatCheck,
    PromptLookup,
    check_definition,
    file_prompt_format_check,
    file_prompt_lookup,
)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_ROLLBACK_FAILED = 4

DEFAULT_DIR = "dialplans"
DEFAULT_OUT = "asterisk-conf"


_NoPrompts = tuple[None, None, list[Problem]]


def _prompts(args: argparse.Namespace, source: Path
             ) -> tuple[PromptLookup, PromptFormatCheck, list[Problem]] | _NoPrompts:
    if args.no_prompts:
        return None, None, []
    folder = Path(args.prompts) if args.prompts else source.resolve().parent / "prompts"
    if not folder.is_dir():
        return None, None, [Problem(Where(str(source), 1, 1),
                                    f"prompts directory '{folder}' not found: cannot check "
                                    "prompts (give --prompts DIR, or --no-prompts to skip)")]
    return file_prompt_lookup(folder), file_prompt_format_check(folder), []


MAX_PROBLEMS_SHOWN = 200
"""Problems printed at most (errors first, then warnings); the rest are counted."""


def _print_problems(problems: list[Problem], out: TextIO) -> None:
    ordered = sort_problems(problems)
    shown = sorted(ordered, key=lambda p: p.severity != "error")[:MAX_PROBLEMS_SHOWN]
    for p in sort_problems(shown):
        out.write(f"{p}\n")
    hidden = len(ordered) - len(shown)
    if hidden:
        errors = sum(1 for p in ordered if p.severity == "error") - sum(
            1 for p in shown if p.severity == "error")
        out.write(f"… and {hidden:,} more problem(s) not shown ({errors:,} error(s)); fix "
                  f"these first / 另有 {hidden:,} 个问题未显示（其中 {errors:,} 个错误），"
                  "请先修正以上问题\n")


def _now(args: argparse.Namespace) -> dt.datetime:
    """The clock the date checks use: ``--today`` (noon, local) or now."""
    today: dt.date | None = getattr(args, "today", None)
    if today is not None:
        return dt.datetime.combine(today, dt.time(12, 0))
    return dt.datetime.now(dt.UTC)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r} (expected YYYY-MM-DD) / 日期无效") from None


def _time(text: str) -> dt.time:
    try:
        return dt.datetime.strptime(text, "%H:%M").time()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r} (expected HH:MM) / 时间无效") from None


def _validate(args: argparse.Namespace) -> int:
    source = Path(args.dir)
    lookup, fmt, problems = _prompts(args, source)
    definition, parsed = parse_definition(source)
    problems += parsed
    if definition is not None and not any(p.severity == "error" for p in parsed):
        problems += check_definition(definition, lookup, fmt, _now(args))
    _print_problems(problems, sys.stdout)
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    if errors:
        sys.stderr.write(f"{source}: {errors} error(s), {warnings} warning(s): not valid / "
                         f"{errors} 个错误，{warnings} 个警告：校验未通过\n")
        return EXIT_INVALID
    assert definition is not None
    sys.stderr.write(
        f"{source}: valid, {len(definition.entries)} entries "
        f"({', '.join(definition.entries)}), {warnings} warning(s) / 校验通过\n"
    )
    return EXIT_OK


def _plan_or_report(args: argparse.Namespace) -> Plan | DialplanError:
    """The validated plan, or (after printing the problems) the error."""
    source = Path(args.dir)
    lookup, fmt, problems = _prompts(args, source)
    if problems:
        _print_problems(problems, sys.stdout)
        return DialplanError(problems)
    try:
        return prepare(source, lookup, prompt_format=fmt, now=_now(args))
    except DialplanError as exc:
        _print_problems(exc.problems, sys.stdout)
        sys.stderr.write(f"{source}: not valid, nothing written / 校验未通过，未写入任何文件\n")
        return exc


def _render(args: argparse.Namespace) -> int:
    plan = _plan_or_report(args)
    if not isinstance(plan, Plan):
        return EXIT_INVALID
    out = Path(args.out)
    for name, text in plan.rendered.files.items():
        atomic_write(out / name, text)
        sys.stderr.write(f"wrote {out / name} / 已写入\n")
    sys.stderr.write(f"version {plan.version} (not reloaded; use `ivr dialplan publish`) / "
                     "版本已生成（未重载）\n")
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    source = Path(args.dir)
    store = Store.at(Path(args.out), Path(args.versions) if args.versions else None)
    lookup, _, _ = _prompts(args, source)  # names the greeting's files as render does
    definition, problems = parse_definition(source)
    rendered = None
    if definition is not None:
        problems = problems + check_definition(definition, None)
    if definition is not None and not any(p.severity == "error" for p in problems):
        rendered = render(definition, source_version(source), lookup)
    else:
        _print_problems([p for p in problems if p.severity == "error"], sys.stderr)
    lines = diff_lines(source, store, rendered)
    sys.stdout.writelines(x if x.endswith("\n") else x + "\n" for x in lines)
    if rendered is None:
        sys.stderr.write("definition not valid: config diff not shown / 定义无效，未比较配置\n")
        return EXIT_USAGE
    if not lines:
        sys.stderr.write("no changes / 无变化\n")
        return EXIT_OK
    return 1


async def _connect_and_publish(args: argparse.Namespace, publisher: Publisher,
                               plan: Plan) -> int:
    if args.no_reload:
        try:
            await publisher.publish(plan, None)
        except PublishError as exc:
            sys.stderr.write(f"write failed: {exc}; previous files restored / 写入失败，已恢复\n")
            return EXIT_ROLLED_BACK
        sys.stderr.write(f"written {plan.version}, Asterisk not reloaded / 已写入，未重载\n")
        return EXIT_OK
    from ivr.ami.client import AMIClient, AMISettings
    from ivr.dialplan.ami_control import ClientControl

    secret = os.environ.get(args.ami_secret_env, "")
    client = AMIClient(args.ami_host, args.ami_port, username=args.ami_user, secret=secret,
                       settings=AMISettings(auth=args.ami_auth, ping_interval=0))
    try:
        async with asyncio.timeout(args.timeout):
            await client.start()
    except Exception as exc:  # connection refused, auth, timeout: nothing was written
        await client.close()
        sys.stderr.write(f"cannot reach Asterisk AMI at {args.ami_host}:{args.ami_port}: "
                         f"{exc or type(exc).__name__}; nothing published / "
                         "无法连接 Asterisk AMI，未发布\n")
        return EXIT_USAGE
    try:
        control: AmiControl = ClientControl(client, timeout=args.timeout)
        result = await publisher.publish(plan, control)
    except PublishError as exc:
        if exc.rolled_back:
            sys.stderr.write(f"publish failed: {exc}; rolled back, the running version is "
                             "unchanged / 发布失败，已回滚，线上版本未变\n")
            return EXIT_ROLLED_BACK
        sys.stderr.write(f"publish failed: {exc}; ROLLBACK FAILED, check Asterisk now / "
                         "发布失败且回滚失败，请立即检查 Asterisk\n")
        return EXIT_ROLLBACK_FAILED
    finally:
        await client.close()
    rec = result.record
    if rec.status == "unchanged":
        sys.stderr.write(f"version {rec.version} is already live / 该版本已在线\n")
    else:
        sys.stderr.write(f"published {rec.version} (previous {rec.previous or 'none'}) by "
                         f"{rec.who}: live / 已发布并生效\n")
    return EXIT_OK


def _publish(args: argparse.Namespace) -> int:
    store = Store.at(Path(args.out), Path(args.versions) if args.versions else None)
    who = args.who or os.environ.get("USER") or getpass.getuser()
    publisher = Publisher(store, who=who, verify_timeout=args.timeout)
    plan = _plan_or_report(args)
    if not isinstance(plan, Plan):
        publisher.refuse(Path(args.dir), plan)
        sys.stderr.write("publish refused: the running version stays / "
                         "拒绝发布：线上版本保持不变\n")
        return EXIT_INVALID
    return asyncio.run(_connect_and_publish(args, publisher, plan))


def _hours(args: argparse.Namespace) -> int:
    source = Path(args.dir)
    definition, problems = parse_definition(source)
    if definition is not None and not any(p.severity == "error" for p in problems):
        problems = problems + check_definition(definition, None)
    errors = [p for p in problems if p.severity == "error"]
    if definition is None or errors:
        _print_problems(errors, sys.stderr)
        sys.stderr.write(f"{source}: not valid / 校验未通过\n")
        return EXIT_INVALID
    for line in hours_report(definition, args.date, args.time):
        sys.stdout.write(line + "\n")
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=DEFAULT_DIR,
                   help=f"definition directory (default {DEFAULT_DIR}) / 拨号方案定义目录")
    p.add_argument("--prompts", help="prompts directory (default: prompts/ next to DIR) / "
                   "提示音目录")
    p.add_argument("--no-prompts", action="store_true",
                   help="do not check prompt files / 不检查提示音文件")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dp = sub.add_parser("dialplan", help="IVR dialplans: validate, render, diff, publish / "
                        "拨号方案：校验、生成、比较、发布")
    dsub = dp.add_subparsers(dest="dialplan_command", metavar="SUBCOMMAND", required=True)

    v = dsub.add_parser("validate", help="check a definition; one line per problem / "
                        "校验定义，每个问题一行")
    _common(v)
    v.add_argument("--today", type=_date, metavar="YYYY-MM-DD",
                   help="check as if today were this date (past years, the holiday calendar "
                        "of the year ahead) / 以指定日期为今天进行校验")
    v.set_defaults(func=_validate)

    h = dsub.add_parser("hours", help="open or closed, and why, for every hours set on a date "
                        "/ 指定日期各作息时间是否开放及原因")
    h.add_argument("dir", nargs="?", default=DEFAULT_DIR,
                   help=f"definition directory (default {DEFAULT_DIR}) / 拨号方案定义目录")
    h.add_argument("--date", type=_date, required=True, metavar="YYYY-MM-DD",
                   help="the day, in the definition's time zone / 日期")
    h.add_argument("--time", type=_time, metavar="HH:MM",
                   help="one moment of the day (default: the whole day, as intervals) / 时刻")
    h.set_defaults(func=_hours)

    r = dsub.add_parser("render", help="write Asterisk config (no reload) / 生成 Asterisk 配置")
    _common(r)
    r.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
                   " / 输出目录")
    r.set_defaults(func=_render)

    for name, func, helptext in (
        ("diff", _diff, "what would change vs the published version / 与线上版本的差异"),
        ("publish", _publish, "validate, write, reload, verify, roll back on failure / "
                              "校验、写入、重载、验证，失败自动回滚"),
    ):
        p = dsub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--out", default=DEFAULT_OUT, help="Asterisk config directory / 配置目录")
        p.add_argument("--versions", help="versions directory (default OUT/versions) / 版本目录")
        p.set_defaults(func=func)
        if name == "publish":
            p.add_argument("--today", type=_date, metavar="YYYY-MM-DD",
                           help="check as if today were this date / 以指定日期为今天进行校验")
            p.add_argument("--who", help="who publishes (default $USER) / 发布人")
            p.add_argument("--ami-host", default=os.environ.get("IVR_AMI_HOST", "127.0.0.1"))
            p.add_argument("--ami-port", type=int,
                           default=int(os.environ.get("IVR_AMI_PORT", "5038")))
            p.add_argument("--ami-user", default=os.environ.get("IVR_AMI_USER", "ivr"))
            p.add_argument("--ami-secret-env", default="IVR_AMI_SECRET",
                           help="environment variable holding the AMI secret / AMI 密码环境变量")
            p.add_argument("--ami-auth", choices=("plain", "md5"), default="md5")
            p.add_argument("--timeout", type=float, default=15.0,
                           help="seconds for connect, reload and verification / 超时秒数")
            p.add_argument("--no-reload", action="store_true",
                           help="write files and versions only, do not touch Asterisk / "
                                "仅写入文件，不重载")
