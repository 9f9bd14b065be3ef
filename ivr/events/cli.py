"""``ivr events …``: status, replay of dead letters, and the standalone pusher."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import time
from typing import Any

from redis.exceptions import RedisError

from ivr.config import load_settings
from ivr.errors import ConfigError
from ivr.events.outbox import (
    OutboxStatus,
    keys_for,
    list_dead_letters,
    read_owners,
    read_status,
    replay_dead_letters,
)
from ivr.events.pusher import Pusher
from ivr.redisconn import connect as redis_connect


def _outage_lines(st: OutboxStatus) -> list[str]:
    if not st.outages:
        return ["  backend 工单系统       ok 正常"]
    lines = []
    for o in st.outages:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(o.since))
        stale = (f"; STALE: pusher not heard from for {o.updated_ago_s:.0f}s / 推送进程"
                 f"{o.updated_ago_s:.0f} 秒无更新" if o.stale else "")
        lines.append(
            f"  backend 工单系统       OUTAGE 故障中 since {since} ({o.age_s:.0f}s), "
            f"pusher {o.consumer}, {o.failures} failed requests 次失败请求{stale}")
        lines.append(f"    last error 最近错误: {o.error}")
    return lines


def _status_text(st: OutboxStatus) -> str:
    oldest = ("-" if st.oldest_undelivered_s is None
              else f"{st.oldest_undelivered_s:.1f}s")
    lines = [
        f"outbox {st.prefix} / 事件发件箱",
        *_outage_lines(st),
        f"  written 已写入        {st.written}",
        f"  delivered 已送达      {st.delivered}",
        f"  undelivered 待送达    {st.undelivered}  (pending 处理中 {st.pending}; "
        f"oldest 最早 {oldest})",
        f"  retries 重试次数      {st.retries}",
        f"  dead letters 死信     {st.dead_letters}  (calls blocked 受阻通话 {st.blocked_calls};"
        f" dead-lettered total {st.dead_lettered}, replayed {st.replayed})",
        f"  events lost 丢失事件  {st.events_lost}",
        f"  calls in progress 进行中通话 {st.calls_in_progress}  (checkpointed 已存档)",
        "  partition 分区: length / pending / lag / owner",
    ]
    for p in st.partitions:
        lag = "?" if p.lag is None else str(p.lag)
        lines.append(f"    {p.stream}: {p.length} / {p.pending} / {lag} / {p.owner or '-'}")
    return "\n".join(lines)


async def _with_redis(args: argparse.Namespace, what: str) -> int:
    settings = load_settings(args.config).require("redis_url")
    cfg = settings.events
    keys = keys_for(cfg)
    r = redis_connect(cfg.redis_url)
    try:
        if what == "status":
            st = await read_status(r, keys)
            owners = await read_owners(r, keys, [s.name for s in settings.servers])
            if args.json:
                out = st.to_json()
                out["owners"] = [dataclasses.asdict(o) for o in owners]
                if args.dead:
                    out["dead"] = [
                        {"call_id": d.call_id, "seq": d.seq, "event_id": d.event_id,
                         "reason": d.reason, "attempts": d.attempts}
                        for d in await list_dead_letters(r, keys)]
                print(json.dumps(out, ensure_ascii=False))
            else:
                print(_status_text(st))
                for o in owners:  # several bridges per Asterisk (failover)
                    # a bridge reports every 0.2 s; one silent for 5 s is gone (killed)
                    others = ", ".join(
                        f"{name} {b.get('role')}{' ready' if b.get('ready') else ''}"
                        for name, b in sorted(o.bridges.items())
                        if name != o.owner and time.time() - float(b.get("updated", 0)) < 5)
                    print(f"  call events of {o.server or 'the Asterisk'} 通话事件归属: owner "
                          f"{o.owner or '- (none: a standby takes over)'} (token {o.token});"
                          f" {others or 'no standby 无备用'}")
                if args.dead:
                    for d in await list_dead_letters(r, keys):
                        print(f"  dead: call {d.call_id} seq {d.seq} ({d.event_id}) "
                              f"after {d.attempts} attempts: {d.reason}")
            return 0
        moved = await replay_dead_letters(r, keys, args.call)
        if args.json:
            print(json.dumps({"replayed": moved}))
        else:
            print(f"replayed {moved} dead letter(s) / 已重新投递 {moved} 条死信")
        return 0
    finally:
        await r.aclose()


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except ConfigError as exc:
        print(f"ivr events: {exc}", file=sys.stderr)
        return 2
    except (OSError, RedisError) as exc:
        print(f"ivr events: cannot reach Redis / 无法连接 Redis: {exc}", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    return _run(_with_redis(args, "status"))


def _replay(args: argparse.Namespace) -> int:
    return _run(_with_redis(args, "replay"))


async def _push_main(args: argparse.Namespace) -> int:
    cfg = load_settings(args.config).require(
        "redis_url", "events.ticket_url", "events.secret").events
    if args.consumer:
        cfg = cfg.with_(consumer=args.consumer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Pusher(cfg) as pusher:
        print(json.dumps({"pusher": pusher.consumer, "partitions": cfg.partitions}), flush=True)
        await stop.wait()
        stats = pusher.stats
    if args.stats_file:
        obj = {"delivered": stats.delivered, "attempts": stats.attempts,
               "failures": stats.failures, "dead_lettered": stats.dead_lettered,
               "reclaimed": stats.reclaimed, "latencies": stats.latencies}
        await asyncio.to_thread(_write_json, args.stats_file, obj)
    return 0


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh)


def _push(args: argparse.Namespace) -> int:
    return _run(_push_main(args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "events", help="call events to the ticket backend / 通话事件推送到工单系统")
    ev_sub = ev.add_subparsers(dest="events_command", metavar="SUBCOMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", help="TOML settings file (else $IVR_CONFIG; IVR_* variables win) "
        "/ 配置文件")
    st = ev_sub.add_parser("status", parents=[common],
                           help="lag, pending, retries, dead letters / 推送状态")
    st.add_argument("--json", action="store_true", help="JSON output / 输出 JSON")
    st.add_argument("--dead", action="store_true", help="list dead letters / 列出死信")
    st.set_defaults(func=_status)
    rp = ev_sub.add_parser("replay", parents=[common],
                           help="re-send dead letters in order / 按顺序重新投递死信")
    rp.add_argument("--call", help="only this call id (Linkedid) / 仅此通话")
    rp.add_argument("--json", action="store_true", help="JSON output / 输出 JSON")
    rp.set_defaults(func=_replay)
    pu = ev_sub.add_parser("push", parents=[common],
                           help="run the pusher until SIGTERM / 运行推送进程")
    pu.add_argument("--consumer", help="consumer name (default host-pid) / 消费者名")
    pu.add_argument("--stats-file", help="write delivery stats (JSON) here on exit")
    pu.set_defaults(func=_push)
