"""``ivr callbacks list|status|cancel`` — the missed-call callback jobs in Redis.

    ivr callbacks list [--all] [--json]   jobs of the last days (active ones unless --all)
    ivr callbacks status JOB [--json]     one job, with its history
    ivr callbacks cancel JOB              cancel a scheduled job (event callback.cancelled;
                                          nothing is sent to Asterisk)

Exit codes: 0 done, 1 Redis or another failure, 2 bad input (unknown job, a job already
finished or ringing now, bad settings).  Numbers are shown masked.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from ivr.callbacks.errors import CallbackError, CallbackInputError
from ivr.callbacks.service import CallbacksConfig, CallbackService
from ivr.callbacks.state import HOTLINE_TZ, Job
from ivr.config import Settings, load_settings
from ivr.dialplan import load_definition
from ivr.dialplan.errors import DialplanError
from ivr.dialplan.publish import Store
from ivr.errors import ConfigError
from ivr.events.outbox import Outbox
from ivr.privacy import mask_number
from ivr.redisconn import connect as redis_connect

_STATE_ZH = {"scheduled": "待回拨", "placing": "呼叫中", "answered": "已接通",
             "cancelled": "已取消", "exhausted": "未接通（已用尽）"}


async def _with_service(settings: Settings, op: Callable[[CallbackService], Awaitable[Any]]
                        ) -> Any:
    settings.require("redis_url")
    published = Store.at(settings.asterisk_conf_dir).current_definition_dir()
    definition = load_definition(published or settings.dialplans_dir)
    redis = redis_connect(settings.redis_url)
    outbox = Outbox(redis, settings.events)
    await outbox.start()
    try:
        service = CallbackService(CallbacksConfig.from_settings(settings), redis,
                                  ami=lambda: None, emit=outbox.write,
                                  definition=lambda: definition)
        return await op(service)
    finally:
        await outbox.close()
        await redis.aclose()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, HOTLINE_TZ).strftime("%m-%d %H:%M:%S")


def _line(job: Job) -> str:
    return (f"{job.id}  {mask_number(job.number):<13} {job.queue:<10} "
            f"{job.state} {_STATE_ZH.get(job.state, '')}  attempts 次数 {job.attempts}  "
            f"due 计划 {_when(job.due_at if job.active else None)}  "
            f"last 结果 {job.last_outcome or '-'}")


def _show(job: Job) -> dict[str, Any]:
    out = job.to_json(mask=mask_number)
    out["history"] = [[ts, what] for ts, what in job.history]
    return out


def _list(args: argparse.Namespace) -> int:
    jobs: list[Job] = asyncio.run(_with_service(
        load_settings(args.config), lambda s: s.list(active_only=not args.all)))
    if args.json:
        print(json.dumps([_show(j) for j in jobs], ensure_ascii=False, indent=2))
        return 0
    if not jobs:
        print("no callback jobs / 无回拨任务")
    for job in jobs:
        print(_line(job))
    return 0


def _status(args: argparse.Namespace) -> int:
    job: Job = asyncio.run(_with_service(load_settings(args.config),
                                         lambda s: s.get(args.job)))
    if args.json:
        print(json.dumps(_show(job), ensure_ascii=False, indent=2))
        return 0
    print(_line(job))
    print(f"  missed calls 漏接通话: {', '.join(job.call_ids)}")
    for ts, what in job.history:
        print(f"  {_when(ts)}  {what}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    job: Job = asyncio.run(_with_service(load_settings(args.config),
                                         lambda s: s.cancel(args.job, by="operator")))
    print(f"cancelled / 已取消: {_line(job)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.callbacks_func(args))
    except (ConfigError, DialplanError, CallbackInputError) as exc:
        print(f"ivr callbacks: {exc}", file=sys.stderr)
        return 2
    except CallbackError as exc:
        print(f"ivr callbacks: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"ivr callbacks: {exc} / 操作失败", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (else $IVR_CONFIG; IVR_* "
                        "variables win) / 配置文件")
    cb = sub.add_parser("callbacks", help="missed-call callbacks: list, status, cancel / 漏接回拨")
    cs = cb.add_subparsers(dest="callbacks_command", metavar="SUBCOMMAND", required=True)
    p = cs.add_parser("list", parents=[common], help="callback jobs / 回拨任务列表")
    p.add_argument("--all", action="store_true", help="finished jobs too / 含已结束任务")
    p.add_argument("--json", action="store_true", help="JSON output / 输出 JSON")
    p.set_defaults(func=_run, callbacks_func=_list)
    p = cs.add_parser("status", parents=[common], help="one job and its history / 任务详情")
    p.add_argument("job", metavar="JOB", help="job id (cb-YYYYMMDD-…) / 任务编号")
    p.add_argument("--json", action="store_true", help="JSON output / 输出 JSON")
    p.set_defaults(func=_run, callbacks_func=_status)
    p = cs.add_parser("cancel", parents=[common], help="cancel a scheduled job / 取消回拨")
    p.add_argument("job", metavar="JOB", help="job id / 任务编号")
    p.set_defaults(func=_run, callbacks_func=_cancel)
