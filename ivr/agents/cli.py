"""``ivr agents login|logout|pause|unpause|status`` and ``ivr queues status``.

Each command connects to Asterisk with the one settings model (``--config`` /
``IVR_CONFIG``, ``IVR_AMI_*``), reads every queue with ``QueueStatus``, checks the input
against that and the published definition's catalog (pause reasons, wrap-up), and only
then sends the action; it waits (≤ 5 s) for Asterisk's event to show the change.
``ivr queues status`` also reads today's service-level figures from Redis
(:mod:`ivr.agents.levels_store`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from ivr.agents.catalog import AgentCatalog
from ivr.agents.errors import AgentError, AgentInputError
from ivr.agents.levels import HOTLINE_TZ, INTERVAL_S, Figures, interval_start
from ivr.agents.levels_store import read_levels
from ivr.agents.monitor import QueueMonitor
from ivr.agents.service import AgentService, check_interface
from ivr.agents.state import MEMBER_STATES, QueueState
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.errors import AMIError
from ivr.config import Settings, load_settings
from ivr.dialplan import load_definition
from ivr.dialplan.errors import DialplanError
from ivr.dialplan.publish import Store
from ivr.errors import ConfigError
from ivr.events.keys import Keys
from ivr.privacy import mask_number
from ivr.redisconn import connect as redis_connect

CONNECT_TIMEOUT_S = 10.0
SETTLE_S = 5.0

STATE_LABELS = {"paused": "暂停 paused", "in_call": "通话 in call", "ringing": "振铃 ringing",
                "wrapup": "小结 wrap-up", "unavailable": "离线 unavailable",
                "available": "空闲 available"}


def catalog_for(settings: Settings) -> AgentCatalog:
    """The published definition's catalog (the working dialplans/ before a publish)."""
    folder = (Store.at(settings.asterisk_conf_dir).current_definition_dir()
              or settings.dialplans_dir)
    return AgentCatalog.from_definition(load_definition(folder))


Operation = Callable[[AgentService, QueueMonitor], Awaitable[int]]


async def _session(args: argparse.Namespace, operation: Operation) -> int:
    settings = load_settings(args.config).require("ami_secret")
    catalog = catalog_for(settings)
    monitor = QueueMonitor(catalog=lambda: catalog)
    client = AMIClient(settings.ami_host, settings.ami_port, username=settings.ami_user,
                       secret=settings.ami_secret, settings=AMISettings(ping_interval=0))
    monitor.attach(client)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await client.start()
    except TimeoutError:
        await client.close()
        raise AMIError(f"no AMI login at {settings.ami_host}:{settings.ami_port} within "
                       f"{CONNECT_TIMEOUT_S:g} s / 无法连接 AMI") from None
    try:
        if not await monitor.resync(client):
            raise AMIError("QueueStatus did not complete / 队列状态读取失败")
        return await operation(AgentService(client, monitor.state, lambda: catalog), monitor)
    finally:
        await client.close()


async def _settle(monitor: QueueMonitor, predicate: Callable[[QueueState], bool]) -> None:
    try:
        async with asyncio.timeout(SETTLE_S):
            await monitor.wait_for(predicate)
    except TimeoutError:
        print("(Asterisk has not reported the change yet / Asterisk 尚未报告变更)",
              file=sys.stderr)


def _run(args: argparse.Namespace, operation: Operation) -> int:
    try:
        return asyncio.run(_session(args, operation))
    except (AgentInputError, ConfigError, DialplanError) as exc:
        print(f"ivr {args.command}: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"ivr {args.command}: {exc}", file=sys.stderr)
        return 1
    except (AMIError, OSError) as exc:
        print(f"ivr {args.command}: cannot reach Asterisk / 无法连接 Asterisk: {exc}",
              file=sys.stderr)
        return 1


# -- output ---------------------------------------------------------------------------

def _agent_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in sorted(rows, key=lambda r: (r["queue"], r["interface"])):
        reason = f"  {r['paused_reason']}" if r["paused"] else ""
        kind = "" if r["membership"] == "dynamic" else f"  [{r['membership']}]"
        lines.append(f"  {r['queue']:<12} {r['interface']:<28} {r['name']:<14} "
                     f"{STATE_LABELS[r['state']]:<16} penalty {r['penalty']}{reason}{kind}")
    return lines


def _queue_text(state: QueueState, names: list[str], now: float) -> str:
    out = []
    for name in names:
        s = state.summary(name, now)
        counts = ", ".join(f"{STATE_LABELS[k]} {s['agents_by_state'][k]}"
                           for k in MEMBER_STATES if s["agents_by_state"][k])
        out.append(f"{name}: {s['waiting']} waiting / 排队 (longest {s['longest_wait_s']:g} s), "
                   f"{s['members']} agents / 坐席 ({counts or '-'}), wrap-up {s['wrapup']} s, "
                   f"completed {s['completed']}, abandoned {s['abandoned']}")
        q = state.queues[name]
        out += _agent_lines([m.to_dict(now, state.queue_wrapup(name))
                             for m in q.members.values()])
        for c in q.waiting():
            out.append(f"  caller #{c.position} {mask_number(c.number)} {c.name} "
                       f"waiting {now - c.joined_at:.0f} s")
    return "\n".join(out)


def _queues_json(state: QueueState, names: list[str], now: float) -> dict[str, Any]:
    snap = state.snapshot(now)
    queues = [q for q in snap["queues"] if q["queue"] in names]
    for q in queues:
        for c in q["callers"]:
            c["number"] = mask_number(c["number"])
    return {"queues": queues}


# -- commands -------------------------------------------------------------------------

def _queue_args(values: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values or []:
        name, _, penalty = value.partition(":")
        try:
            out[name] = int(penalty) if penalty else 0
        except ValueError:
            raise SystemExit(f"ivr agents: --queue {value!r}: QUEUE or QUEUE:PENALTY "
                             "(an integer) / 技能等级须为整数") from None
    return out


def _login(args: argparse.Namespace) -> int:
    queues = _queue_args(args.queue)

    async def op(svc: AgentService, mon: QueueMonitor) -> int:
        await svc.login(args.agent, queues, name=args.name,
                        state_interface=args.state_interface)
        await _settle(mon, lambda s: all(s.member(q, args.agent) for q in queues))
        return _print_agent(svc, args)
    return _run(args, op)


def _logout(args: argparse.Namespace) -> int:
    async def op(svc: AgentService, mon: QueueMonitor) -> int:
        queues = args.queue or sorted(m.queue for m in svc.state.memberships(args.agent))
        await svc.logout(args.agent, args.queue)
        await _settle(mon, lambda s: not any(s.member(q, args.agent) for q in queues))
        print(f"{args.agent}: logged out of {', '.join(queues)} / 已签出")
        return 0
    return _run(args, op)


def _pause(args: argparse.Namespace) -> int:
    async def op(svc: AgentService, mon: QueueMonitor) -> int:
        label = await svc.pause(args.agent, args.reason, args.queue)
        await _settle(mon, lambda s: all(m.paused and m.paused_reason == label for m in
                                         _members(s, args.agent, args.queue)))
        return _print_agent(svc, args)
    return _run(args, op)


def _unpause(args: argparse.Namespace) -> int:
    async def op(svc: AgentService, mon: QueueMonitor) -> int:
        await svc.unpause(args.agent, args.queue)
        await _settle(mon, lambda s: not any(m.paused for m in
                                             _members(s, args.agent, args.queue)))
        return _print_agent(svc, args)
    return _run(args, op)


def _members(state: QueueState, agent: str, queues: list[str] | None) -> list[Any]:
    found = state.memberships(agent)
    return [m for m in found if queues is None or m.queue in queues]


def _print_agent(svc: AgentService, args: argparse.Namespace) -> int:
    rows = svc.status(args.agent)
    if getattr(args, "json", False):
        print(json.dumps({"agents": rows}, ensure_ascii=False))
    else:
        print("\n".join(_agent_lines(rows)))
    return 0


def _agents_status(args: argparse.Namespace) -> int:
    async def op(svc: AgentService, mon: QueueMonitor) -> int:
        if args.agent is not None:
            check_interface(args.agent, "agent interface")
        rows = svc.status(args.agent)
        if args.json:
            print(json.dumps({"agents": rows}, ensure_ascii=False))
        elif not rows:
            print("no agents / 无坐席" if args.agent is None else
                  f"{args.agent}: not logged in to any queue / 未登录任何队列")
        else:
            print("\n".join(_agent_lines(rows)))
        return 0
    return _run(args, op)


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def _figures_text(label: str, f: dict[str, Any]) -> str:
    callbacks = ", ".join(f"{k} {n}" for k, n in f["callbacks"].items())
    if f["callbacks"]:
        callbacks = (f"placed 外呼 {f['callbacks_placed']}, reached 接通 "
                     f"{f['callbacks_reached']} ({callbacks})")
    return (f"  {label}: offered 来电 {f['offered']}, answered 接通 {f['answered']} "
            f"(≤15 s {f['answered_15s']}), abandoned 放弃 {f['abandoned']} "
            f"(+{f['abandoned_short']} short <5 s 短时放弃), answer rate 接通率 "
            f"{_pct(f['answer_rate'])}, 15 s rate 15秒接通率 {_pct(f['answer_rate_15s'])}, "
            f"wait 等待 avg {f['average_wait_s']:g} s / longest 最长 {f['longest_wait_s']:g} s"
            + (f", callbacks 回拨 {callbacks}" if callbacks else ""))


def _levels_lines(report: dict[str, Any], queue: str) -> list[str]:
    day, cur = _levels_json(report, queue)
    start = datetime.fromisoformat(cur["start"])
    end = start + timedelta(seconds=INTERVAL_S)
    return [_figures_text(f"today 今日 {report['day']}", day),
            _figures_text(f"now 本时段 {start:%H:%M}–{end:%H:%M}", cur)]


async def _levels(args: argparse.Namespace, now: float) -> tuple[dict[str, Any] | None, str]:
    """Today's figures from the levels stream, or None and why not."""
    settings = load_settings(args.config)
    cfg = settings.events
    if not cfg.redis_url:
        return None, ("no Redis configured ([redis] url / IVR_REDIS_URL) / 未配置 Redis")
    day = datetime.fromtimestamp(now, HOTLINE_TZ).date()
    r = redis_connect(cfg.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                          socket_timeout=CONNECT_TIMEOUT_S)
    try:
        agg = await read_levels(r, Keys(cfg.stream_prefix, cfg.partitions), day)
    except (RedisError, OSError) as exc:
        return None, f"cannot read Redis / 无法读取 Redis: {exc}"
    finally:
        await r.aclose()
    report = agg.report(day, now)
    report["current_interval"] = interval_start(now).isoformat()
    # several Asterisk servers ([[asterisk]]): today's queue entries by server ("": one)
    report["offered_by_server"] = dict(sorted(agg.offered_by_server.items()))
    return report, ""


def _queues_status(args: argparse.Namespace) -> int:
    async def op(svc: AgentService, mon: QueueMonitor) -> int:
        state = svc.state
        names = sorted(state.queues)
        if args.queue is not None:
            svc.check_queue(args.queue)
            names = [args.queue]
        now = time.time()
        report, why = await _levels(args, now)
        if args.json:
            out = _queues_json(state, names, now)
            for q in out["queues"]:
                q["levels"] = (None if report is None else
                               dict(zip(("today", "current_interval"),
                                        _levels_json(report, q["queue"]), strict=True)))
            out["levels"] = report
            out["levels_error"] = why or None
            print(json.dumps(out, ensure_ascii=False))
        else:
            text = _queue_text(state, names, now)
            if report is not None:
                blocks = text.split("\n")
                lines: list[str] = []
                for line in blocks:
                    lines.append(line)
                    name = line.split(":", 1)[0]
                    if not line.startswith(" ") and name in names:
                        lines += _levels_lines(report, name)
                text = "\n".join(lines)
            else:
                text += f"\nservice levels unavailable / 服务水平数据不可用: {why}"
            print(text)
        return 0
    return _run(args, op)


def _levels_json(report: dict[str, Any], queue: str) -> tuple[dict[str, Any], dict[str, Any]]:
    found = next((q for q in report["queues"] if q["queue"] == queue), None)
    if found:
        return found["day"], found["current_interval"]
    return Figures().to_json(), {"start": report["current_interval"], **Figures().to_json()}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (else $IVR_CONFIG; IVR_* "
                        "variables win) / 配置文件")
    queues_opt = argparse.ArgumentParser(add_help=False)
    queues_opt.add_argument("--queue", action="append", metavar="QUEUE",
                            help="only this queue (repeatable; default: every queue the "
                            "agent is in) / 指定队列")
    agent = argparse.ArgumentParser(add_help=False)
    agent.add_argument("agent", metavar="AGENT",
                       help="the agent's interface, e.g. PJSIP/1001 / 坐席接口")
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="JSON output / 输出 JSON")

    ag = sub.add_parser("agents", help="agents: log in/out, pause / 话务员签入签出与暂停")
    ag_sub = ag.add_subparsers(dest="agents_command", metavar="SUBCOMMAND", required=True)
    p = ag_sub.add_parser("login", parents=[common, agent, js],
                          help="log in to queues / 签入队列")
    p.add_argument("--queue", action="append", required=True, metavar="QUEUE[:PENALTY]",
                   help="a queue, with the agent's skill level in it as a penalty "
                   "(0 best; repeatable) / 队列及技能等级")
    p.add_argument("--name", required=True, help="display name (Chinese works) / 显示名称")
    p.add_argument("--state-interface", help="device whose state Asterisk watches "
                   "(default: the interface) / 状态接口")
    p.set_defaults(func=_login)
    p = ag_sub.add_parser("logout", parents=[common, agent, queues_opt],
                          help="log out of queues / 签出")
    p.set_defaults(func=_logout)
    p = ag_sub.add_parser("pause", parents=[common, agent, queues_opt, js],
                          help="pause with a reason from the catalog / 暂停（须选原因）")
    p.add_argument("reason", help="code or label from pause_reasons in dialplans/ "
                   "(e.g. lunch, 培训 training) / 暂停原因")
    p.set_defaults(func=_pause)
    p = ag_sub.add_parser("unpause", parents=[common, agent, queues_opt, js],
                          help="end a pause / 恢复接听")
    p.set_defaults(func=_unpause)
    p = ag_sub.add_parser("status", parents=[common, js],
                          help="agents with state, pause reason / 坐席状态")
    p.add_argument("agent", nargs="?", metavar="AGENT", help="only this agent / 指定坐席")
    p.set_defaults(func=_agents_status)

    qu = sub.add_parser("queues", help="queues: agents by state, callers waiting / 队列状态")
    qu_sub = qu.add_subparsers(dest="queues_command", metavar="SUBCOMMAND", required=True)
    p = qu_sub.add_parser("status", parents=[common, js],
                          help="members with state, paused + reason, calls waiting, "
                          "today's and this interval's service levels / "
                          "队列成员状态、排队来电与今日服务水平")
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="only this queue / 指定队列")
    p.set_defaults(func=_queues_status)
