"""``ivr demo``: the whole hotline on one machine, with no Asterisk.

It starts what it needs — a private Redis server (unless ``IVR_REDIS_URL`` is set), the
reference ticket backend, the Asterisk emulator with its AMI server — publishes
``dialplans/`` into the emulator over AMI exactly as an admin would, runs the same
application as ``ivr serve`` (:mod:`ivr.app`: call-event pipeline, pusher, IVR on the
published definition, FastAGI server and AMI client), places simulated calls to 12345
and the merged numbers, shows progress, stops the application (which drains the event
outbox on the way down) and prints a summary.  The emulator is a peer on sockets: the
bridge talks to it with the same code it uses against a real Asterisk.  Paths and
event tuning come from the settings (``--config``, ``IVR_*``; docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from ivr.agents.levels import HOTLINE_TZ
from ivr.agents.levels_store import read_levels
from ivr.agents.rota import PauseRota, RotaChange
from ivr.ami.client import AMIClient, AMISettings
from ivr.api.auth import TokenStore
from ivr.app import (
    AGENTS,
    BRIDGE,
    PIPELINE,
    QUEUES,
    RECORDINGS,
    STATS,
    AppOptions,
    build_app,
    running,
)
from ivr.bridge import Bridge
from ivr.callbacks.service import CALLBACKS
from ivr.callstats import CallStats
from ivr.config import Settings, load_settings
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.validate import file_prompt_lookup
from ivr.directory import resolve as resolve_target
from ivr.errors import ConfigError, IvrError
from ivr.events.builder import qualify
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent
from ivr.events.outbox import OutboxStatus, keys_for, read_status
from ivr.events.pusher import Pusher
from ivr.flow.ticket_lookup import HttpTicketLookup
from ivr.log import event as log_event
from ivr.privacy import mask_number
from ivr.quality.demo import score_sample
from ivr.quality.service import QUALITY
from ivr.redisconn import connect as redis_connect
from ivr.redisproc import RedisServer, free_port
from ivr.sim.app_queue import AgentScript
from ivr.sim.callers import CallerScript, CallHandle
from ivr.sim.emulator import DEFAULT_ETC, Emulator, EmulatorConfig
from ivr.supervision.demo import DemoSupervision
from ivr.supervision.service import SUPERVISION
from ivr.threeway.service import THREEWAY, ThreeWayService
from ivr.ticketsink.server import TicketSink
from ivr.transfers.service import TRANSFERS, TransferService

log = logging.getLogger("ivr.demo")

SIM_AMI_USER = "ivr"
SIM_AMI_SECRET = "ivrsecret"  # the emulator's own manager.conf (ivr/sim/etc)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    calls: int = 30
    rate: float = 0.15  # new calls per simulated second
    speed: float = 30.0  # simulated seconds per wall-clock second
    seed: int = 12345
    timeout: float = 240.0  # wall-clock seconds for the calls to finish
    json: bool = False
    cel: bool = True
    console: bool = False  # serve the web console and keep calls coming until Ctrl-C
    port: int = 0  # the console's HTTP port (0: any free port)
    asterisks: int = 1  # emulated Asterisk servers (> 1 or bridges > 1: run_scale)
    bridges: int = 1  # bridge processes, each serving every server (ivr/failover)


@dataclass(frozen=True, slots=True)
class CallerKind:
    label: str
    weight: int
    exten: str
    language: str
    digits: tuple[str, ...]


# Who calls a 12345 hotline (weights are a plausible mix, not published figures).
CALLER_MIX: tuple[CallerKind, ...] = (
    CallerKind("12345 普通话 Mandarin, no keys (zero navigation)", 55, "12345", "zh", ()),
    CallerKind("12345 English (presses 9 during the greeting)", 10, "12345", "en", ("9",)),
    CallerKind("12345 粤语 Cantonese (presses 8)", 8, "12345", "yue", ("8",)),
    CallerKind("12345 企业服务 enterprise desk (presses 2)", 8, "12345", "zh", ("2",)),
    CallerKind("12345 工单查询 ticket status (presses 3)", 5, "12345", "zh", ("3",)),
    CallerKind("12315 消费维权 consumer hotline", 7, "12315", "zh", ()),
    CallerKind("12333 社会保障 social security", 7, "12333", "zh", ()),
)


# Callers whose way to the queue reads exactly one key (the greeting's): a key after it
# answers the satisfaction survey when the agent ends the call (一次一评, 1-5).
SURVEY_DIGITS: frozenset[tuple[str, ...]] = frozenset({(), ("9",), ("8",)})
SURVEY_EXTENS = frozenset({"12345", "12315"})
AGENT_TALK_S = (40.0, 100.0)  # each hotline agent ends a call after a time in this range


def caller_script(rng: random.Random, i: int) -> tuple[CallerKind, CallerScript]:
    kind = rng.choices(CALLER_MIX, weights=[k.weight for k in CALLER_MIX])[0]
    prefix = rng.choice(["138", "139", "137", "186", "159", "135", "150"])
    number = prefix + "".join(str(rng.randint(0, 9)) for _ in range(8))
    digits = list(kind.digits)
    if kind.digits in SURVEY_DIGITS and kind.exten in SURVEY_EXTENS and rng.random() < 0.8:
        # the greeting's key (or none), then a score for the survey — or none: no score
        digits = (digits or [""]) + [rng.choice("1234555") if rng.random() < 0.85 else ""]
    return kind, CallerScript(
        number=number,
        exten=kind.exten,
        language=kind.language,
        menu_digits=digits,
        patience=rng.uniform(20, 120),
        talk_time=rng.uniform(30, 150),
        max_duration=900,
    )


def agent_scripts(emu: Emulator, rng: random.Random) -> None:
    """The published queues' members: each answers after 1-4 s and ends the call after
    a while (a caller still on the line then hears the survey)."""
    for q in emu.queues.queues.values():
        for m in q.members:
            emu.queues.scripts.setdefault(m.interface, AgentScript(
                m.interface, ring_time=rng.uniform(1.0, 4.0),
                talk_time=rng.uniform(*AGENT_TALK_S)))


@dataclass
class _Run:
    opts: DemoOptions
    out: TextIO
    started: float = field(default_factory=time.monotonic)
    kinds: Counter[str] = field(default_factory=Counter)
    rota: list[RotaChange] = field(default_factory=list)
    agents: dict[str, Any] = field(default_factory=dict)  # queue -> agents by state at the end
    placed: int = 0  # the callers the demo placed (the emulator also counts originated legs)


def _progress(run: _Run, bridge: Bridge, stats: CallStats, done: int) -> None:
    s = stats.summary()
    run.out.write(
        f"  [{time.monotonic() - run.started:5.1f}s] calls {done}/{run.opts.calls} ended · "
        f"in queue {s.in_queue} · answered {s.answered} · abandoned {s.abandoned} · "
        f"AMI events {bridge.ami_events}\n"
    )
    run.out.flush()


async def _wait_calls(run: _Run, bridge: Bridge, stats: CallStats,
                      handles: list[CallHandle]) -> bool:
    pending = [asyncio.ensure_future(h.wait()) for h in handles]
    deadline = time.monotonic() + run.opts.timeout
    try:
        while True:
            done = sum(1 for t in pending if t.done())
            if done == len(pending):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(
                [t for t in pending if not t.done()],
                timeout=min(1.0, remaining),
                return_when=asyncio.ALL_COMPLETED,
            )
            _progress(run, bridge, stats, sum(1 for t in pending if t.done()))
    finally:
        for t in pending:
            t.cancel()


async def outbox_status(cfg: EventsConfig) -> OutboxStatus:
    """The outbox's counters, read from Redis (after the application stopped)."""
    r = redis_connect(cfg.redis_url)
    try:
        return await read_status(r, keys_for(cfg))
    finally:
        await r.aclose()


def _prepare_etc(workdir: Path, asterisk_conf_dir: Path | None = None) -> Path:
    """The emulator's configuration before the first publish: its manager.conf, the
    site contexts (``extensions_site.conf`` of ``asterisk_conf_dir``, by default the
    setting's default), and empty generated files (publish writes them)."""
    site = (asterisk_conf_dir or Settings().asterisk_conf_dir) / "extensions_site.conf"
    etc = workdir / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    (etc / "extensions.conf").write_text("[general]\nstatic=yes\n", encoding="utf-8")
    (etc / "queues.conf").write_text("[general]\n", encoding="utf-8")
    shutil.copy(site, etc)
    return etc


def check_paths(settings: Settings) -> None:
    """Stop before anything starts if a folder the demo reads is not there."""
    needs = (("dialplans_dir", settings.dialplans_dir, settings.dialplans_dir),
             ("prompts_dir", settings.prompts_dir, settings.prompts_dir),
             ("asterisk_conf_dir", settings.asterisk_conf_dir,
              settings.asterisk_conf_dir / "extensions_site.conf"))
    for name, folder, needed in needs:
        if not needed.exists():
            where = settings.source or "the default, relative to the working directory"
            raise ConfigError(
                f"[paths] {name} = {folder}: {needed} not found ({where}; set it in the "
                f"settings file or IVR_{name.upper()}, or run from the project root, e.g. "
                f"scripts/demo) / 找不到 {needed}")


async def run_demo(opts: DemoOptions, settings: Settings, out: TextIO) -> dict[str, Any]:
    run = _Run(opts, out)
    with tempfile.TemporaryDirectory(prefix="ivr-demo-") as tmp:
        workdir = Path(tmp)
        redis_server: RedisServer | None = None
        redis_url = settings.redis_url
        if not redis_url:
            # its own session: Ctrl-C stops the demo, which then stops it
            redis_server = RedisServer(workdir / "redis", persist=True, own_session=True)
            redis_server.start()
            redis_url = redis_server.url
        try:
            if opts.asterisks > 1 or opts.bridges > 1:
                return await run_scale(opts, settings, workdir, redis_url, out)
            return await _run_with_redis(run, settings, workdir, redis_url)
        finally:
            if redis_server is not None:
                redis_server.stop()


async def _run_with_redis(
    run: _Run, settings: Settings, workdir: Path, redis_url: str
) -> dict[str, Any]:
    opts, out = run.opts, run.out
    secret = secrets.token_hex(16)
    say = _say(out)
    say("12345 hotline demo / 12345 热线演示 — everything on this machine, no Asterisk needed")
    async with TicketSink(secret.encode()) as sink:
        say(f"· ticket backend (reference sink) on {sink.url}")
        etc = _prepare_etc(workdir, settings.asterisk_conf_dir)
        agi_port = free_port()
        emu = Emulator(
            EmulatorConfig(
                etc=etc,
                agi_host="127.0.0.1",
                agi_port=agi_port,
                speed=opts.speed,
                seed=opts.seed,
                cel=opts.cel,
                prompts=settings.prompts_dir,
                record_dir=workdir / "recordings",
            )
        )
        await emu.start()
        try:
            say(f"· Asterisk emulator: AMI on 127.0.0.1:{emu.ami_port}, "
                f"{opts.speed:g}× real time")
            await _publish(settings, etc, emu.ami_port, say)
            agent_scripts(emu, random.Random(opts.seed + 1))
            # the bridge's settings: this emulator, this Redis, this ticket backend, and
            # the definition just published into the emulator's configuration
            bridge_settings = replace(
                settings,
                ami_host="127.0.0.1",
                ami_port=emu.ami_port,
                ami_user=SIM_AMI_USER,
                ami_secret=SIM_AMI_SECRET,
                agi_host="127.0.0.1",
                agi_port=agi_port,
                redis_url=redis_url,
                asterisk_conf_dir=etc,
                recordings_dir=workdir / "archive",  # the recordings worker archives here
                # --console: the API and the web console on this port of 127.0.0.1
                http_host="127.0.0.1",
                http_port=opts.port if opts.console else settings.http_port,
                callbacks_delay_s=20.0,  # missed callers are called back 20 s later
                events=settings.events.with_(
                    redis_url=redis_url,
                    ticket_url=sink.events_url,
                    secret=secret,
                    stream_prefix=f"ivr:demo:{secrets.token_hex(4)}",
                ),
            )
            if opts.console:
                return await _serve_console(run, bridge_settings, sink, emu)
            return await _serve_calls(run, bridge_settings, sink, emu)
        finally:
            await emu.close()


async def _publish(
    settings: Settings, etc: Path, ami_port: int, say: Callable[[str], None]
) -> None:
    prompts = file_prompt_lookup(settings.prompts_dir)
    plan = prepare(settings.dialplans_dir, prompts)
    client = AMIClient(
        "127.0.0.1", ami_port, username=SIM_AMI_USER, secret=SIM_AMI_SECRET,
        settings=AMISettings(ping_interval=0),
    )
    await client.start()
    try:
        result = await Publisher(Store.at(etc), who="ivr-demo").publish(
            plan, ClientControl(client)
        )
    finally:
        await client.close()
    say(f"· dialplan {plan.version} validated, rendered, published over AMI and verified live "
        f"({result.record.status})")


async def _serve_calls(
    run: _Run, settings: Settings, sink: TicketSink, emu: Emulator
) -> dict[str, Any]:
    opts = run.opts
    say = _say(run.out)
    tickets = HttpTicketLookup(sink.url + "/api/v1/tickets/status", timeout=1.0,
                               secret=settings.events.secret_bytes)
    app = build_app(settings, AppOptions(watch_s=None, drain_s=60.0, tickets=tickets,
                                         ami=AMISettings(ping_interval=5),
                                         clock=emu.clock.wall))  # callbacks: simulated time
    try:
        async with running(app):  # stops the bridge, then drains the outbox, then the rest
            bridge, call_stats = app[BRIDGE], app[STATS]
            say(f"· bridge: AMI client logged in, FastAGI IVR on 127.0.0.1:{bridge.agi_port}, "
                "call events → Redis stream → signed POST → ticket backend")
            say(f"· placing {opts.calls} calls at {opts.rate:g}/s (simulated) …")
            rota = _rota(run, app, emu)
            rota_task = asyncio.create_task(rota.run(), name="demo-rota")
            transfers = DemoTransfers(app[TRANSFERS], emu.clock.sleep, say,
                                      threeway=app[THREEWAY])
            app[THREEWAY].clock = office_hours(app[THREEWAY].config, say, settings)
            app[PIPELINE].add_listener(transfers.on_events)
            supervision = DemoSupervision(app[SUPERVISION], emu.clock.sleep, say)
            app[PIPELINE].add_listener(supervision.on_events)
            try:
                rng = random.Random(opts.seed)
                handles: list[CallHandle] = []
                for i in range(opts.calls):
                    kind, script = caller_script(rng, i)
                    if i == MISSED_CALL:
                        kind, script = missed_caller(script)
                    run.kinds[kind.label] += 1
                    handles.append(await emu.place_call(script))
                    await emu.clock.sleep(1.0 / opts.rate)
                run.placed = len(handles)
                finished = await _wait_calls(run, bridge, call_stats, handles)
                if not finished:
                    say("! not every call ended before the timeout / 部分通话未在超时前结束")
            finally:
                rota_task.cancel()
                await asyncio.gather(rota_task, return_exceptions=True)
                await rota.finish()
                await transfers.finish()
                await supervision.finish()
            await _callbacks_settled(app, say)
            await recordings_drained(app, within_s=60.0)
            if (quality := app.get(QUALITY)) is not None:  # today's sample, one call scored
                await score_sample(quality, time.time(), say)
            state = app[QUEUES].state
            run.agents = {q: state.summary(q, emu.clock.wall())["agents_by_state"]
                          for q in sorted(state.queues)}
    finally:
        await tickets.close()
    status = await outbox_status(settings.events)
    levels = await service_levels(settings.events, emu.clock.wall())
    scores = Counter(str(e.get("data", {}).get("score")) for t in sink.store.tickets.values()
                     for e in t.events if e.get("type") == "survey.scored")
    delivered = [e for t in sink.store.tickets.values() for e in t.events]
    stats = call_stats.summary()
    sim = emu.summary()
    tta = emu.time_to_agent()
    summary: dict[str, Any] = {
        "calls": stats.calls if stats.calls else sim.placed,
        "placed": run.placed,
        "ended": stats.ended,
        "answered": stats.answered,
        "abandoned": stats.abandoned,
        "not_queued": stats.calls - stats.offered,
        "average_wait_s": stats.average_wait_s,
        "answer_rate": stats.answer_rate,
        "answer_rate_15s": stats.answer_rate_15s,
        "events": bridge.ami_events,
        # every AMI event the emulator produced; the bridge's AMI filter passes it only
        # the ones it reads (``events``)
        "ami_events_emitted": emu.bus.count,
        "events_written": status.written,
        "events_delivered": status.delivered,
        "events_dead_lettered": status.dead_lettered,
        "events_lost": status.events_lost,
        "tickets": len(sink.store.tickets),
        "routed": dict(Counter(
            f"{t.queue or '-'} ({t.language or '-'})" for t in sink.store.tickets.values()
        )),
        "callers": dict(run.kinds),
        # answer -> the first agent rung (AgentCalled), per dialled number (p50/p95)
        "time_to_agent": {
            entry: {"calls": t.calls, "p50_s": round(t.p50, 2), "p95_s": round(t.p95, 2),
                    "max_s": round(t.max, 2)}
            for entry, t in tta.items() if entry != "*"},
        "time_to_agent_p95_s": round(tta["*"].p95, 2),
        # the satisfaction survey (一次一评): scores delivered to the ticket backend
        "surveys_scored": sum(scores.values()),
        "survey_scores": dict(sorted(scores.items())),
        # the break rota, through the agents' service over AMI (QueuePause with a reason)
        "agent_pauses": sum(1 for c in run.rota if c.paused),
        "agent_resumes": sum(1 for c in run.rota if not c.paused),
        "pause_reasons": dict(Counter(c.reason for c in run.rota if c.paused)),
        "agents_by_state": run.agents,
        # service levels per queue, read back from the stored events (docs/agents.md)
        "service_levels": levels,
        # issue 11: three-way calls, transfers (outcomes), archived recordings, as the
        # ticket backend received them
        "threeway_calls": sum(1 for t in sink.store.tickets.values() if any(
            e.get("type") == "threeway.started" for e in t.events)),
        "transfers": transfer_summary(delivered),
        "recordings_ready": sum(1 for e in delivered if e.get("type") == "recording.ready"
                                and e.get("data", {}).get("stage") == "archived"),
        # missed-call callbacks (漏接回拨): attempts placed, citizens reached
        "callbacks_scheduled": sum(1 for e in delivered
                                   if e.get("type") == "callback.scheduled"),  # jobs
        "callbacks_placed": sum(1 for e in delivered if e.get("type") == "callback.placed"),
        "callbacks_reached": sum(1 for e in delivered
                                 if e.get("type") == "callback.answered"),
        # issue 15: supervisors on the line (sessions that joined a call) and quality
        # review (scores), as call events the ticket backend received
        "supervisions": sum(1 for e in delivered if e.get("type") == "supervision.joined"),
        "reviews_scored": sum(1 for e in delivered if e.get("type") == "quality.scored"),
        "wall_s": round(time.monotonic() - run.started, 1),
    }
    log_event(log, logging.INFO, "demo.summary", **{k: v for k, v in summary.items()
                                                    if k != "callers"})
    return summary


CONSOLE_AGENT = "Local/1001@agent-local/n"  # the agent token's member (hotline queue)


async def console_tokens(redis_url: str, prefix: str) -> list[tuple[str, str | None, str]]:
    """A token per role for the console, ``(role, agent interface, token)``."""
    r = redis_connect(redis_url)
    try:
        store = TokenStore(r, prefix)
        out = []
        for role, agent in (("admin", None), ("supervisor", None), ("agent", CONSOLE_AGENT)):
            token, _ = await store.create(role, name=f"demo {role}", agent=agent)
            out.append((role, agent, token))
        return out
    finally:
        await r.aclose()


async def _serve_console(
    run: _Run, settings: Settings, sink: TicketSink, emu: Emulator
) -> dict[str, Any]:
    """``ivr demo --console``: the application with its HTTP API and web console, a token
    per role printed, and calls placed at ``rate`` until Ctrl-C (SIGINT) or SIGTERM."""
    opts = run.opts
    say = _say(run.out)
    tickets = HttpTicketLookup(sink.url + "/api/v1/tickets/status", timeout=1.0,
                               secret=settings.events.secret_bytes)
    options = AppOptions(watch_s=None, drain_s=5.0, tickets=tickets,
                         ami=AMISettings(ping_interval=5), clock=emu.clock.wall)
    app = build_app(settings, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:  # the first stops in order; a second one kills as usual
        stop.set()
        for sig in signals:
            loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    placed = 0
    try:
        async with running(app) as runner:
            host, port = runner.addresses[0][:2]
            say(f"· console 控制台: http://{host}:{port}/console/")
            for role, agent, token in await console_tokens(settings.redis_url,
                                                            options.api_prefix):
                who = f"{role} ({agent})" if agent else role
                say(f"  token {who:<38} {token}")
            say(f"· calls keep coming ({opts.rate:g}/s simulated, {opts.speed:g}× real "
                "time); Ctrl-C stops / 来电持续中，按 Ctrl-C 停止")
            rota = _rota(run, app, emu)
            rota_task = asyncio.create_task(rota.run(), name="demo-rota")
            transfers = DemoTransfers(app[TRANSFERS], emu.clock.sleep, say)
            app[PIPELINE].add_listener(transfers.on_events)
            rng = random.Random(opts.seed)
            try:
                while not stop.is_set():
                    kind, script = caller_script(rng, placed)
                    run.kinds[kind.label] += 1
                    await emu.place_call(script)
                    placed += 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(emu.clock.real(1.0 / opts.rate)):
                            await stop.wait()
            finally:
                rota_task.cancel()
                await asyncio.gather(rota_task, return_exceptions=True)
                await rota.finish()
                await transfers.finish()
            say("· stopping / 正在停止 …")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await tickets.close()
    status = await outbox_status(settings.events)
    return {"console": True, "placed": placed, "events_written": status.written,
            "events_delivered": status.delivered, "events_lost": status.events_lost,
            "wall_s": round(time.monotonic() - run.started, 1)}


def _rota(run: _Run, app: Any, emu: Emulator) -> PauseRota:
    """The supervisor's break rota on the hotline queue, on the emulator's clock; every
    change is said as it happens."""
    say = _say(run.out)

    def changed(c: RotaChange) -> None:
        run.rota.append(c)
        when = datetime.fromtimestamp(c.at, HOTLINE_TZ).strftime("%H:%M:%S")
        if c.paused:
            say(f"  [{when}] supervisor 班长: {c.interface} paused 暂停 — {c.reason}")
        else:
            say(f"  [{when}] supervisor 班长: {c.interface} back 恢复接听")

    return PauseRota(app[AGENTS], "hotline", sleep=emu.clock.sleep, clock=emu.clock.wall,
                     on_change=changed)


class DemoTransfers:
    """Agents bringing others into calls and transferring them, through the slices'
    services as an agent's console would: the 1st call an agent takes becomes a three-way
    call with the market regulator, then an English interpreter joins (三方通话); the 2nd
    goes to 110 with one key (一键转接), the 4th is consulted with the Shenzhen 12345 (the
    caller's matter is theirs) and handed over, the 6th is sent blind to the 12366 tax
    hotline — each a little after the agent answered.  Every request and outcome is said
    as it happens."""

    PLAN: dict[int, tuple[str, str]] = {1: ("threeway", "market"),
                                        2: ("one_key", "police"),
                                        4: ("attended", "shenzhen-12345"),
                                        6: ("blind", "tax-12366")}

    def __init__(self, svc: TransferService, sleep: Callable[[float], Any],
                 say: Callable[[str], None], after_s: float = 8.0,
                 threeway: ThreeWayService | None = None) -> None:
        self.svc, self.sleep, self.say, self.after_s = svc, sleep, say, after_s
        self.threeway = threeway
        self.connected = 0
        self.tasks: list[asyncio.Task[None]] = []

    def on_events(self, events: list[CallEvent]) -> None:
        for ev in events:
            if ev.type != "agent.connected":
                continue
            self.connected += 1
            step = self.PLAN.get(self.connected)
            if step is not None:
                self.tasks.append(asyncio.get_running_loop().create_task(
                    self._transfer(ev.call_id, *step)))

    async def _transfer(self, call_id: str, mode: str, target: str) -> None:
        await self.sleep(self.after_s)
        try:
            if mode == "threeway":
                await self._threeway(call_id, (target, "interp-en"))
                return
            if mode == "one_key":
                t = await self.svc.one_key(call_id, target)
            elif mode == "blind":
                t = await self.svc.blind(call_id, target)
            else:
                t = await self.svc.attended(call_id, target)
                self.say(f"  agent 坐席: consulting 咨询 {t.target.label} on call {call_id}")
                await self.svc.wait(t, phase="answered", timeout=60)
                if not t.done:
                    await self.sleep(5.0)  # a word with the other hotline first
                    await self.svc.complete(call_id)
            await self.svc.wait(t, timeout=60)
            self.say(f"  agent 坐席: {t.kind} transfer 转接 → {t.target.label}: "
                     f"{t.outcome}{f' ({t.reason})' if t.reason else ''}")
        except (IvrError, TimeoutError) as exc:  # the call ended first, 110 busy …: said
            self.say(f"  agent 坐席: transfer of call {call_id} not done 未转接: {exc}")

    async def _threeway(self, call_id: str, targets: tuple[str, ...]) -> None:
        if self.threeway is None:
            return
        for target in targets:
            placed = await self.threeway.add(call_id, target)
            self.say(f"  agent 坐席: three-way 三方通话 + {placed.label} on call {call_id} "
                     f"({placed.state})")
            got = await self.threeway.wait(call_id, placed.leg)
            self.say(f"  agent 坐席: {got.label}: {got.state}"
                     f"{f' ({got.reason})' if got.reason else ''}")
            await self.sleep(10.0)  # the department answers the caller's question …

    async def finish(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


MISSED_CALL = 1  # this call's caller hangs up while the agent rings: called back


def missed_caller(script: CallerScript) -> tuple[CallerKind, CallerScript]:
    kind = CallerKind("12345 missed: hangs up while an agent rings (called back) / 漏接回拨",
                      0, "12345", "zh", ())
    return kind, replace(script, exten="12345", language="zh", menu_digits=[""],
                         patience=0.5)


async def _callbacks_settled(app: Any, say: Callable[[str], None]) -> None:
    """Until every callback job has ended and its call is over; each one said."""
    svc = app.get(CALLBACKS)
    if svc is None:
        return
    pipeline = app[PIPELINE]
    if not await svc.settled(lambda: pipeline.builder.model.calls.keys(), within_s=90.0):
        say("! callbacks still pending at the end / 仍有回拨未完成")
    for job in await svc.list():
        outcome = ("reached, connected to the queue at its head / 已接通，优先进入队列"
                   if job.state == "answered" else job.state)
        say(f"· missed caller {mask_number(job.number)} ({job.queue}) called back 漏接回拨: "
            f"{outcome}, attempts 次数 {job.attempts}")


def office_hours(_config: Any, say: Callable[[str], None], settings: Settings
                 ) -> Callable[[], datetime]:
    """The time the demo's three-way calls read the directory's hours at: now if the
    departments are open, else the next working day at 10:00 (Asia/Shanghai) — said, so
    the demo shows a department answering whenever it runs."""
    from ivr.dialplan.loader import load_definition  # the definition the demo publishes

    definition = load_definition(settings.dialplans_dir)
    now = datetime.now(HOTLINE_TZ)
    if resolve_target(definition, "market", now=now).open_now:
        return lambda: datetime.now(HOTLINE_TZ)
    day = now.replace(hour=10, minute=0, second=0, microsecond=0)
    for _ in range(21):
        day += timedelta(days=1)
        if resolve_target(definition, "market", now=day).open_now:
            break
    say(f"· departments are closed now ({now:%a %H:%M}); the demo's three-way calls read "
        f"the directory's hours as on {day:%a %Y-%m-%d %H:%M} / 部门非工作时间，演示按工作时间拨打")
    return lambda: day


def transfer_summary(delivered: list[dict[str, Any]]) -> dict[str, Any]:
    """Transfers by kind and outcome, from the call events the ticket backend received."""
    done = [e for e in delivered if e.get("type") in (
        "transfer.completed", "transfer.returned", "transfer.failed")]
    return {"requested": sum(1 for e in delivered if e.get("type") == "transfer.requested"),
            **Counter(str(e["type"]).split(".")[1] for e in done),
            "by_kind": dict(Counter(f"{e['data'].get('kind')}.{e['type'].split('.')[1]}"
                                    for e in done))}


async def recordings_drained(app: Any, within_s: float) -> None:
    """Until the recordings worker has archived every ended call's recordings (≤
    ``within_s``): the summary counts them."""
    worker = app.get(RECORDINGS)
    if worker is None:
        return
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        st = await worker.queue.status(time.time())
        if st.open_calls == 0 and st.jobs == 0:
            return
        await asyncio.sleep(0.2)


async def service_levels(cfg: EventsConfig, now: float) -> dict[str, Any]:
    """Today's figures per queue (Asia/Shanghai), from the levels stream in Redis."""
    day = datetime.fromtimestamp(now, HOTLINE_TZ).date()
    r = redis_connect(cfg.redis_url)
    try:
        agg = await read_levels(r, keys_for(cfg), day)
    finally:
        await r.aclose()
    return {q: agg.day(q, day).to_json() for q in agg.queues()}


def _say(out: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    return say


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w("\nSummary / 汇总\n")
    w(f"  calls 来电            {summary['calls']}\n")
    w(f"  answered 接通         {summary['answered']}\n")
    w(f"  abandoned 放弃        {summary['abandoned']}\n")
    w(f"  ended in IVR 未排队   {summary['not_queued']}\n")
    w(f"  average wait 平均等待 {summary['average_wait_s']} s\n")
    w(f"  answer rate 接通率    {summary['answer_rate'] * 100:.1f} %\n")
    w(f"  15-s answer rate 15秒接通率 {summary['answer_rate_15s'] * 100:.1f} %\n")
    w(f"  AMI events 事件       {summary['events']} read by the bridge 网关读取 "
      f"(of {summary['ami_events_emitted']} emitted 共产生; AMI event filter 事件过滤)\n")
    w(f"  call events delivered 工单事件送达 {summary['events_delivered']}"
      f" / written {summary['events_written']}, lost 丢失 {summary['events_lost']}\n")
    w(f"  tickets 工单          {summary['tickets']}\n")
    w("  routed to 分配到 (queue, language 队列, 语言):\n")
    for label, n in sorted(summary["routed"].items(), key=lambda kv: -kv[1]):
        w(f"    {n:4d}  {label}\n")
    w("  time to agent 接通坐席振铃用时 (answer 应答 -> first agent rung 首个坐席振铃):\n")
    for entry, t in sorted(summary["time_to_agent"].items()):
        w(f"    {entry:>6}  p50 {t['p50_s']:5.1f} s  p95 {t['p95_s']:5.1f} s  "
          f"max {t['max_s']:5.1f} s  ({t['calls']} calls 通)\n")
    w(f"    all 全部  p95 {summary['time_to_agent_p95_s']:.1f} s\n")
    w(f"  ratings 满意度评价     {summary['surveys_scored']} scored 已评 "
      + " ".join(f"{k}分×{n}" for k, n in summary["survey_scores"].items()) + "\n")
    w(f"  callbacks 漏接回拨     {summary['callbacks_placed']} placed 外呼, "
      f"{summary['callbacks_reached']} reached 接通\n")
    w(f"  agent breaks 坐席小休 {summary['agent_pauses']} paused 暂停, "
      f"{summary['agent_resumes']} resumed 恢复 ("
      + ", ".join(f"{r} ×{n}" for r, n in summary["pause_reasons"].items()) + ")\n")
    w("  service levels 服务水平 (today 今日, per queue 各队列):\n")
    for q, f in summary["service_levels"].items():
        agents = summary["agents_by_state"].get(q, {})
        w(f"    {q:<10} offered 进线 {f['offered']:3d}  answered 接通 {f['answered']:3d}"
          f" (≤15 s {f['answered_15s']})  abandoned 放弃 {f['abandoned']}"
          f" + short 短时 <5 s {f['abandoned_short']}"
          f"  answer rate 接通率 {f['answer_rate'] * 100:.0f} %"
          f"  15-s {f['answer_rate_15s'] * 100:.0f} %  wait 等待 avg {f['average_wait_s']} s"
          f" max {f['longest_wait_s']} s\n")
        if agents:
            w("               agents 坐席: " + ", ".join(
                f"{k} {n}" for k, n in agents.items() if n) + "\n")
    t = summary["transfers"]
    w(f"  three-way calls 三方通话 {summary['threeway_calls']}; transfers 转接 "
      f"{t['requested']} (completed 完成 {t.get('completed', 0)}, returned 退回 "
      f"{t.get('returned', 0)}, failed 失败 {t.get('failed', 0)}); recordings ready 录音归档 "
      f"{summary['recordings_ready']}\n")
    w(f"  supervisions 班长监听 {summary['supervisions']} (listen→whisper→barge 监听→耳语→强插); "
      f"reviews scored 质检评分 {summary['reviews_scored']}\n")
    w("  callers 来电类型:\n")
    for label, n in sorted(summary["callers"].items(), key=lambda kv: -kv[1]):
        w(f"    {n:4d}  {label}\n")


# -- scale-out: several emulated Asterisk servers, several bridge processes ------------


async def run_scale(opts: DemoOptions, settings: Settings, workdir: Path, redis_url: str,
                    out: TextIO) -> dict[str, Any]:
    """``opts.asterisks`` emulators, ``opts.bridges`` ``ivr serve`` processes each serving
    all of them (``[[asterisk]]``, ``[events] failover``), one Redis, the pusher and the
    ticket sink here; with two or more bridges the one owning most servers is SIGKILLed
    half-way through the calls.  The summary: events lost, duplicates, tickets vs calls."""
    say = _say(out)
    secret = secrets.token_hex(16)
    prefix = f"ivr:demo-scale:{secrets.token_hex(4)}"
    rng = random.Random(opts.seed)
    names = [f"ast{i + 1}" for i in range(opts.asterisks)]
    # FastAGI: each bridge process has its own port per server; a server's dialplan
    # tries the first bridge's, then the second's
    agi = {n: [free_port() for _ in range(opts.bridges)] for n in names}
    say(f"12345 hotline scale-out demo / 多服务器演示: {opts.asterisks} Asterisk × "
        f"{opts.bridges} bridges, one Redis")
    procs: list[asyncio.subprocess.Process] = []
    emus: dict[str, Emulator] = {}
    logs: list[Any] = []
    async with TicketSink(secret.encode()) as sink, contextlib.AsyncExitStack() as stack:
        for n in names:
            etc = _prepare_etc(workdir / n, settings.asterisk_conf_dir)
            emu = Emulator(EmulatorConfig(etc=etc, agi_host="127.0.0.1", agi_port=agi[n][0],
                                          speed=opts.speed, seed=opts.seed + len(emus),
                                          cel=opts.cel, prompts=settings.prompts_dir))
            await emu.start()
            stack.push_async_callback(emu.close)
            emus[n] = emu
            source = workdir / n / "dialplans"
            shutil.copytree(settings.dialplans_dir, source)
            hotline = source / "hotline.yaml"
            backup = (f"\n  agi_backup_host: 127.0.0.1\n  agi_backup_port: {agi[n][1]}"
                      if opts.bridges > 1 else "")
            hotline.write_text(hotline.read_text("utf-8").replace(
                "agi_port: 4573", f"agi_port: {agi[n][0]}{backup}"), "utf-8")
            await _publish(replace(settings, dialplans_dir=source), etc, emu.ami_port,
                           _prefixed(say, n))
            agent_scripts(emu, random.Random(opts.seed + 1))
        first = emus[names[0]]
        for b in range(opts.bridges):
            conf = workdir / f"bridge{b + 1}.toml"
            conf.write_text("".join(
                f'[[asterisk]]\nname = "{n}"\nhost = "127.0.0.1"\nport = {emus[n].ami_port}\n'
                f'user = "{SIM_AMI_USER}"\nsecret = "{SIM_AMI_SECRET}"\nagi_port = {agi[n][b]}\n\n'
                for n in names) + (
                f'[redis]\nurl = "{redis_url}"\n[agi]\nhost = "127.0.0.1"\n'
                f'[paths]\nasterisk_conf_dir = "{first.config.etc}"\n'
                f'dialplans_dir = "{settings.dialplans_dir.resolve()}"\n'
                f'prompts_dir = "{settings.prompts_dir.resolve()}"\n'
                f'[events]\nstream_prefix = "{prefix}"\nfailover = true\n'
                f'owner_lease_ms = 1500\nconsumer = "bridge{b + 1}"\n'), "utf-8")
            log = (workdir / f"bridge{b + 1}.log").open("wb")
            logs.append(log)
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ivr", "--log-level", "info", "serve", "--no-pusher",
                "--config", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=log))
        say(f"· {opts.bridges} bridge processes (ivr serve, failover) started")
        cfg = settings.events.with_(redis_url=redis_url, ticket_url=sink.events_url,
                                    secret=secret, stream_prefix=prefix)
        redis = redis_connect(redis_url)
        stack.push_async_callback(redis.aclose)
        keys = keys_for(cfg)
        killed = ""
        try:
            await _scale_ready(redis, keys, names, opts.bridges, 60.0)
            say("· every server has an owner" + (" and a ready standby" if opts.bridges > 1
                                                 else ""))
            async with Pusher(cfg):
                handles: list[tuple[str, CallHandle]] = []
                for i in range(opts.calls):
                    n = names[i % len(names)]
                    _kind, script = caller_script(rng, i)
                    handles.append((n, await emus[n].place_call(script)))
                    if opts.bridges > 1 and i == opts.calls // 2:
                        # the first bridge: every server's primary FastAGI, and the
                        # owner of some or all of their call events
                        owners = await _scale_owners(redis, keys, names)
                        victim = "bridge1"
                        procs[int(victim.removeprefix("bridge")) - 1].kill()
                        killed = victim
                        say(f"· SIGKILL {victim} (owner of "
                            f"{', '.join(k for k, v in owners.items() if v == victim)}) "
                            "/ 杀掉一个桥接进程")
                    await asyncio.sleep(rng.expovariate(opts.rate * len(names)) / opts.speed)
                say(f"· {len(handles)} calls placed; waiting for them to end")
                calls = {qualify(n, h.channel.linkedid) for n, h in handles}
                try:
                    async with asyncio.timeout(opts.timeout):
                        for _n, h in handles:
                            await h.wait()
                        await sink.wait_for(lambda store: calls <= set(store.tickets) and all(
                            store.tickets[c].status == "closed" for c in calls))
                        while True:
                            st = await read_status(redis, keys)
                            if st.undelivered == 0 and st.pending == 0:
                                break
                            await asyncio.sleep(0.2)
                except TimeoutError:
                    going = sum(not h.done.is_set() for _n, h in handles)
                    open_ = {c: [e["type"] for e in t.events][-3:]
                             for c, t in sink.store.tickets.items() if t.status != "closed"}
                    raise ConfigError(
                        f"scale demo: not settled within {opts.timeout:g} s: {going} calls "
                        f"still on, {len(calls - set(sink.store.tickets))} without a ticket, "
                        f"open tickets {open_} / 演示超时") from None
            takeovers = await _scale_takeovers(redis, keys, names)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for k, proc in enumerate(procs):
                with contextlib.suppress(ProcessLookupError):
                    try:
                        await asyncio.wait_for(proc.wait(), 30)
                    except TimeoutError:  # never leave a process behind; say so
                        log_event(logging.getLogger("ivr.demo"), logging.ERROR,
                                  "demo.bridge_stop_timeout",
                                  bridge=k + 1, pid=proc.pid, action="killed")
                        proc.kill()
                        await proc.wait()
            for log in logs:
                log.close()
        store = sink.store
        tickets = [store.tickets[c] for c in calls]
        gaps = sum(1 for t in tickets
                   if [e["seq"] for e in t.events] != list(range(1, len(t.events) + 1))
                   or not t.events or t.events[0]["data"].get("adopted"))
        return {
            "asterisks": opts.asterisks, "bridges": opts.bridges, "killed": killed or None,
            "takeovers": takeovers, "placed": len(handles),
            "ended": sum(h.done.is_set() for _n, h in handles),
            "calls": len(calls), "tickets": len(tickets),
            # calls Asterisk placed itself (missed-call callbacks …) have tickets too
            "other_tickets": len(store.tickets) - len(tickets),
            "tickets_closed": sum(t.status == "closed" for t in tickets),
            "tickets_by_server": dict(Counter(t.server or "" for t in tickets)),
            "tickets_with_gaps": gaps, "events_written": st.written,
            "events_delivered": st.delivered, "events_lost": st.events_lost,
            "dead_letters": st.dead_letters, "duplicates": store.duplicates,
            "rejected": store.rejected,
        }


def _prefixed(say: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda line: say(f"· {name}: {line.removeprefix('· ')}")


async def _scale_roles(redis: Any, keys: Any, server: str) -> dict[str, dict[str, Any]]:
    raw: Any = await redis.hgetall(keys.owner(server, "bridges"))
    now = time.time()
    out = {}
    for k, v in raw.items():
        rec = json.loads(v)
        if now - float(rec["updated"]) < 2.0:
            out[k.decode() if isinstance(k, bytes) else str(k)] = rec
    return out


async def _scale_ready(redis: Any, keys: Any, names: list[str], bridges: int,
                       within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while True:
            ok = True
            for n in names:
                roles = await _scale_roles(redis, keys, n)
                owners = [r for r in roles.values() if r["role"] == "owner"]
                ready = [r for r in roles.values() if r["role"] == "standby" and r["ready"]]
                ok = ok and len(owners) == 1 and len(ready) >= min(1, bridges - 1)
            if ok:
                return
            await asyncio.sleep(0.1)


async def _scale_owners(redis: Any, keys: Any, names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        for name, rec in (await _scale_roles(redis, keys, n)).items():
            if rec["role"] == "owner":
                out[n] = name
    return out


async def _scale_takeovers(redis: Any, keys: Any, names: list[str]) -> int:
    total = 0
    for n in names:
        token = await redis.get(keys.owner(n, "fence"))
        total += max(0, int(token or 0) - 1)  # the first acquisition is no takeover
    return total


def print_scale_summary(summary: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w("\nSummary / 汇总 (scale-out)\n")
    w(f"  Asterisk servers × bridges   {summary['asterisks']} × {summary['bridges']}\n")
    w(f"  bridge killed 被杀进程        {summary['killed'] or '-'} "
      f"(takeovers 接管 {summary['takeovers']})\n")
    w(f"  calls 来电 / tickets 工单     {summary['calls']} / {summary['tickets']} "
      f"(closed {summary['tickets_closed']}, by server {summary['tickets_by_server']}; "
      f"{summary['other_tickets']} more of calls Asterisk placed)\n")
    w(f"  events written/delivered     {summary['events_written']} / "
      f"{summary['events_delivered']}\n")
    w(f"  events lost 丢失 {summary['events_lost']}, duplicates 重复 "
      f"{summary['duplicates']}, gaps 断号 {summary['tickets_with_gaps']}\n")


def main(opts: DemoOptions, config: str | None = None) -> int:
    progress = sys.stderr if opts.json else sys.stdout
    try:
        settings = load_settings(config)
        check_paths(settings)
        summary = asyncio.run(run_demo(opts, settings, progress))
    except KeyboardInterrupt:
        return 130
    except IvrError as exc:
        print(f"ivr demo: {exc}", file=sys.stderr)
        return 2
    if opts.console:  # stopped by Ctrl-C: calls were cut off, nothing else to sum up
        print(f"stopped / 已停止: {summary['placed']} calls placed, "
              f"{summary['events_delivered']} call events delivered, "
              f"{summary['events_lost']} lost")
        return 0 if summary["events_lost"] == 0 else 1
    if "bridges" in summary:  # --asterisks/--bridges: the scale-out summary
        print_scale_summary(summary, sys.stderr if opts.json else sys.stdout)
        if opts.json:
            sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    elif opts.json:
        print_summary(summary, sys.stderr)
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        print_summary(summary, sys.stdout)
    sys.stdout.flush()
    ok = summary["events_lost"] == 0 and summary["ended"] >= summary["placed"]
    return 0 if ok else 1


def _run_cli(args: argparse.Namespace) -> int:
    if args.speed is None:  # the console is watched by a person: real time by default
        args.speed = 1.0 if args.console else 30.0
    if args.calls < 1 or args.rate <= 0 or args.speed <= 0 or not 0 <= args.port < 65536:
        print("ivr demo: --calls, --rate and --speed must be positive / 参数必须为正数",
              file=sys.stderr)
        return 2
    return main(
        DemoOptions(
            calls=args.calls,
            rate=args.rate,
            speed=args.speed,
            seed=args.seed,
            timeout=args.timeout,
            json=args.json,
            cel=not args.no_cel,
            console=args.console,
            port=args.port,
            asterisks=args.asterisks,
            bridges=args.bridges,
        ),
        config=args.config,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole hotline on the embedded Asterisk emulator / 在内置模拟器上运行整条热线",
    )
    p.add_argument("--calls", type=int, default=30, help="calls to place / 来电数")
    p.add_argument("--rate", type=float, default=0.15,
                   help="new calls per simulated second / 每(模拟)秒来电数")
    p.add_argument("--speed", type=float, default=None,
                   help="simulated seconds per real second (default 30; 1 with --console) "
                   "/ 时间倍速")
    p.add_argument("--seed", type=int, default=12345, help="random seed / 随机种子")
    p.add_argument("--timeout", type=float, default=240.0,
                   help="wall-clock seconds to wait for the calls / 等待通话结束的秒数")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on the last line / 以 JSON 输出汇总")
    p.add_argument("--no-cel", action="store_true", help="emulator without CEL events")
    p.add_argument("--console", action="store_true",
                   help="serve the web console (prints its address and a token per role) "
                   "and keep calls coming until Ctrl-C; --speed defaults to 1 then / "
                   "启动网页控制台并持续来电，按 Ctrl-C 停止")
    p.add_argument("--port", type=int, default=0,
                   help="--console: its HTTP port on 127.0.0.1 (default: a free one) / 端口")
    p.add_argument("--config", default=None,
                   help="TOML settings file (or $IVR_CONFIG): paths, [events] tuning; the demo "
                   "brings its own Asterisk emulator, Redis (unless set) and ticket backend "
                   "/ 配置文件")
    p.add_argument("--asterisks", type=int, default=1, choices=range(1, 9), metavar="N",
                   help="emulated Asterisk servers, each a [[asterisk]] of the bridges "
                   "(docs/scale.md) / 模拟 Asterisk 服务器数")
    p.add_argument("--bridges", type=int, default=1, choices=range(1, 5), metavar="N",
                   help="bridge processes (ivr serve, failover on) serving every server; "
                   "with 2+ one is killed half-way / 桥接进程数（中途杀掉一个）")
    p.set_defaults(func=_run_cli)
