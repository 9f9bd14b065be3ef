"""``ivr recordings process|status|purge``.

    ivr recordings process FILE… --call-id ID [--started ISO|EPOCH] [--entry E] [--queue Q]
        archive raw MixMonitor files now, by the published definition's policy (the raw
        files are kept; no call event: use it for a recording the worker never heard of)
    ivr recordings process --retry-dead [--call-id ID]
        queue parked jobs again (the application's worker takes them)
    ivr recordings status [--json]     jobs waiting, due, parked (with their last error)
    ivr recordings purge [--dry-run] [--days N]
        delete archives older than [recordings] retention_days, one audit line per file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ivr.config import Settings, load_settings
from ivr.dialplan import load_definition
from ivr.dialplan.errors import DialplanError
from ivr.dialplan.publish import Store
from ivr.errors import ConfigError
from ivr.recordings.audio import process
from ivr.recordings.errors import RecordingError
from ivr.recordings.policy import RecordingPolicy
from ivr.recordings.service import JobQueue, RecordingsConfig
from ivr.recordings.store import archive_path, purge
from ivr.redisconn import connect as redis_connect


def _config(args: argparse.Namespace) -> tuple[Settings, RecordingsConfig]:
    settings = load_settings(args.config)
    return settings, RecordingsConfig.from_settings(settings)


def _policy(settings: Settings) -> RecordingPolicy:
    published = Store.at(settings.asterisk_conf_dir).current_definition_dir()
    return load_definition(published or settings.dialplans_dir).recordings


def _when(text: str | None, path: Path) -> float:
    if text is None:
        return path.stat().st_mtime
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise RecordingError(f"--started {text!r}: not an ISO date/time or epoch seconds "
                             f"/ 开始时间格式无效") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _process(args: argparse.Namespace) -> int:
    settings, config = _config(args)
    if args.retry_dead:
        if args.files:
            raise RecordingError("give FILEs or --retry-dead, not both / 参数冲突")
        n = asyncio.run(_with_queue(settings, config,
                                    lambda q: q.retry_dead(time.time(), args.call_id)))
        print(f"{n} parked job(s) queued again / 已重新排队 {n} 个任务")
        return 0
    if not args.files or not args.call_id:
        raise RecordingError("give FILE… and --call-id (or --retry-dead) "
                             "/ 需要录音文件和 --call-id")
    rule = _policy(settings).rule_for(args.entry, args.queue)
    out: list[dict[str, Any]] = []
    for name in args.files:
        raw = Path(name)
        dest = archive_path(config.dir, args.call_id, _when(args.started, raw), raw.stem,
                            rule.format)
        arc = process(raw, dest, rule)
        out.append({"file": str(raw), "location": str(arc.path.relative_to(config.dir)),
                    "duration_s": arc.duration_s, "sha256": arc.sha256,
                    "format": arc.format, "channels": arc.channels, "bytes": arc.bytes})
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


async def _with_queue(settings: Settings, config: RecordingsConfig, op: Any) -> Any:
    settings.require("redis_url")
    redis = redis_connect(settings.redis_url)
    try:
        return await op(JobQueue(redis, config.prefix))
    finally:
        await redis.aclose()


def _status(args: argparse.Namespace) -> int:
    settings, config = _config(args)
    status = asyncio.run(_with_queue(settings, config, lambda q: q.status(time.time())))
    if args.json:
        print(json.dumps(status.to_json(), ensure_ascii=False, indent=2))
        return 0
    print(f"calls in progress with recordings / 通话中录音: {status.open_calls}")
    print(f"jobs / 待处理任务: {status.jobs} (due now / 到期: {status.due_now})")
    print(f"parked / 已搁置: {status.dead}")
    for job in status.dead_jobs:
        print(f"  {job.call_id}: {job.attempts} attempts / 次尝试, {job.last_error}")
    return 1 if status.dead else 0


def _purge(args: argparse.Namespace) -> int:
    _settings, config = _config(args)
    days = args.days if args.days is not None else config.retention_days
    result = purge(config.dir, days, time.time(), dry_run=args.dry_run)
    verb = "would delete / 将删除" if args.dry_run else "deleted / 已删除"
    days_text = ", ".join(result.days) or "-"
    print(f"{verb} {result.files} file(s), {result.bytes} bytes; days / 日期: {days_text}")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.recordings_func(args))
    except (ConfigError, DialplanError) as exc:
        print(f"ivr recordings: {exc}", file=sys.stderr)
        return 2
    except RecordingError as exc:
        print(f"ivr recordings: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"ivr recordings: {exc} / 操作失败", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (else $IVR_CONFIG; IVR_* "
                        "variables win) / 配置文件")
    rec = sub.add_parser("recordings", help="call recordings: archive, status, purge / 通话录音")
    rs = rec.add_subparsers(dest="recordings_command", metavar="SUBCOMMAND", required=True)
    p = rs.add_parser("process", parents=[common],
                      help="archive raw recordings now, or queue parked jobs again / 处理录音")
    p.add_argument("files", nargs="*", metavar="FILE", help="raw MixMonitor file(s) (their "
                   "-in/-out legs beside them are used) / 原始录音文件")
    p.add_argument("--call-id", help="the call's Linkedid / 通话标识")
    p.add_argument("--started", help="when the call started (ISO or epoch; default: the "
                   "file's time) / 通话开始时间")
    p.add_argument("--entry", help="the call's entry, for the policy / 入口")
    p.add_argument("--queue", help="the call's queue, for the policy / 队列")
    p.add_argument("--retry-dead", action="store_true",
                   help="queue parked jobs again (all, or --call-id) / 重试已搁置任务")
    p.set_defaults(func=_run, recordings_func=_process)
    p = rs.add_parser("status", parents=[common], help="jobs and parked jobs / 任务状态")
    p.add_argument("--json", action="store_true", help="JSON output / 输出 JSON")
    p.set_defaults(func=_run, recordings_func=_status)
    p = rs.add_parser("purge", parents=[common],
                      help="delete archives past retention, with audit / 按保留期清理")
    p.add_argument("--dry-run", action="store_true", help="list only / 仅列出")
    p.add_argument("--days", type=int, help="retention in days (default [recordings] "
                   "retention_days) / 保留天数")
    p.set_defaults(func=_run, recordings_func=_purge)
