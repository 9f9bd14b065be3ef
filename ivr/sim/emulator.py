"""The Asterisk emulator: loads a config directory, runs an AMI server, the dialplan
(with FastAGI client sessions), app_queue, ConfBridge, MixMonitor and simulated
callers/agents.  Small typed API::

    emu = Emulator(EmulatorConfig(etc=..., agi_port=4573, speed=20))
    await emu.start(); emu.ami_port
    handle = await emu.place_call(CallerScript(number="13800138000", menu_digits=["1"]))
    await handle.wait(); emu.summary()
    await emu.close()
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ivr.ami.messages import Action
from ivr.asterisk.conf import Category, browse, load_conf
from ivr.asterisk.errors import AsteriskConfError
from ivr.errors import ConfigError, IvrError
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number
from ivr.sim import actions, apps, mixmonitor
from ivr.sim.agi_client import agi_app
from ivr.sim.ami_server import ALL_CLASSES, AUTH_LIMIT, AUTH_TIMEOUT_S, AmiServer, Session, User
from ivr.sim.app_queue import AgentScript, Queues
from ivr.sim.astdb import Astdb
from ivr.sim.callers import CallerScript, CallHandle, CallSummary, ScriptFactory, TimeToAgent
from ivr.sim.chanspy import chanspy_app
from ivr.sim.clock import Clock, Timer
from ivr.sim.confbridge import ConfBridges
from ivr.sim.dialplan import load_dialplan
from ivr.sim.eventfilter import FilterError, parse_filter
from ivr.sim.events import EventBus
from ivr.sim.features import Features, attended_transfer
from ivr.sim.model import Channel, ChannelHungUp, State, wait_any
from ivr.sim.pbx import CallRecord, Pbx, PbxOptions

log = logging.getLogger("ivr.sim")

DEFAULT_ETC = Path(__file__).resolve().parent / "etc"
_PROJECT_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
DEFAULT_PROMPTS = _PROJECT_PROMPTS if _PROJECT_PROMPTS.is_dir() else None


@dataclass
class EmulatorConfig:
    etc: Path = DEFAULT_ETC
    ami_host: str = "127.0.0.1"
    ami_port: int = 0  # 0: a free port (see Emulator.ami_port)
    agi_host: str | None = None  # override every agi:// host/port of the dialplan
    agi_port: int | None = None
    speed: float = 1.0
    clock: Clock | None = None  # None: real time scaled by speed; tests: a VirtualClock
    seed: int | None = None
    cel: bool | None = None  # None: as cel.conf says
    cdr: bool = True
    prompts: Path | None = DEFAULT_PROMPTS  # the project's prompts/<lang>/*.wav
    strict_prompts: bool = False
    # AGI "GET DATA a&b": False (default) answers like Asterisk 20 (one file named "a&b"
    # -> 200 result=-1); True plays a then b, logged as sim.agi_getdata_ampersand.
    getdata_split_prompts: bool = False
    record_dir: Path | None = None
    # the "default" music-on-hold class can play (False: an Asterisk without MOH sound
    # files, as when traces 09-13 were recorded: Queue's MOH start fails silently)
    moh: bool = True
    agents: list[AgentScript] = field(default_factory=list)
    # astdb kept in this file (JSON): a new emulator given the same file starts with what
    # the last one stored, e.g. app_queue's persistent members (an Asterisk restart)
    astdb: Path | None = None


def _shrink(number: str) -> str:
    """Asterisk's ast_shrink_phone_number: drop ( ) - . and spaces."""
    return "".join(c for c in number if c not in "()-. ")


def parse_callerid(text: str) -> tuple[str, str]:
    """``"Name" <num>`` → (num, name)."""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        name, _, num = text[:-1].rpartition("<")
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"')
        return _shrink(num.strip()), name
    if text.replace("-", "").replace(" ", "").lstrip("+").isdigit():
        return _shrink(text), ""
    return "", text


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        etc = self.config.etc
        if not (etc / "extensions.conf").is_file():
            raise ConfigError(f"{etc}: no extensions.conf / 配置目录中没有 extensions.conf")
        self.clock = self.config.clock or Clock(self.config.speed)
        cel_conf = self._maybe(etc / "cel.conf")
        cel_on = self.config.cel
        if cel_on is None:
            cel_on = _cel_enabled(cel_conf)
        self.bus = EventBus(self.clock.wall, cel=cel_on, cdr=self.config.cdr)
        self.clock.follow(lambda: self.bus.count)
        self.pbx = Pbx(load_dialplan(etc / "extensions.conf"), self.clock, self.bus,
                       PbxOptions(agi_host=self.config.agi_host, agi_port=self.config.agi_port,
                                  prompts=self.config.prompts, seed=self.config.seed,
                                  strict_prompts=self.config.strict_prompts,
                                  getdata_split_prompts=self.config.getdata_split_prompts,
                                  record_dir=self.config.record_dir, moh=self.config.moh))
        self.astdb = Astdb(self.config.astdb)
        self.queues = Queues(self.pbx, self.astdb)
        qconf = self._maybe(etc / "queues.conf")
        if qconf is not None:
            self.queues.load(qconf)
            # load_module(): app_queue adds the members its astdb family holds
            self.queues.reload_members()
        for a in self.config.agents:
            self.queues.scripts[a.interface] = a
        self._load_moh()
        self.confbridges = ConfBridges(self.pbx)
        self.features = Features.from_conf(self._maybe(etc / "features.conf"))
        cb = self._maybe(etc / "confbridge.conf")
        if cb is not None:
            for cat, items in browse(cb):
                self.confbridges.user_profiles[cat.name] = {i.key: i.value for i in items}
        self._register_apps()
        manager_conf = self._maybe(etc / "manager.conf")
        self.users = _users(manager_conf)
        if manager_conf is not None:
            self.bus.timestamps = _values(manager_conf, "general").get(
                "timestampevents", "").strip().lower() in ("yes", "true", "y", "1", "on")
        general = _values(manager_conf, "general") if manager_conf is not None else {}
        self.ami = AmiServer(self.bus, self.users, lambda s, m: actions.dispatch(self, s, m),
                             auth_timeout=_positive_int(general, "authtimeout", AUTH_TIMEOUT_S),
                             auth_limit=_positive_int(general, "authlimit", AUTH_LIMIT))
        self.ami.on_login.append(lambda s: actions.on_login(self, s))
        self.started_wall = self.clock.wall()
        self.ami.started_at = self.started_wall  # type: ignore[attr-defined]
        self.stopped = asyncio.Event()
        self.random = random.Random(self.config.seed)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.ami.start(self.config.ami_host, self.config.ami_port)
        log_event(log, logging.INFO, "sim.started", ami_port=self.ami.port)

    @property
    def ami_port(self) -> int:
        return self.ami.port

    async def close(self) -> None:
        for ch in list(self.pbx.channels.values()):
            self.pbx.request_hangup(ch, 16)
        tasks = list(self.pbx.tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self.pbx.drain_io()
        await self.ami.close()
        await self.clock.aclose()
        self.stopped.set()

    def request_stop(self) -> None:
        """``core stop now``: drop every AMI client (no Shutdown event, as trace 05)."""
        for s in list(self.ami.sessions):
            s.close()
        self.stopped.set()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- config -----------------------------------------------------------------------

    def _maybe(self, path: Path) -> list[Category] | None:
        if not path.is_file():
            return None
        try:
            return load_conf(path)
        except AsteriskConfError as exc:
            raise ConfigError(f"{exc} / 配置文件无法解析") from exc

    def read_conf(self, filename: str) -> list[tuple[str, list[tuple[str, str]]]] | None:
        """Categories of ``etc/filename`` as AMI GetConfig lists them (templates left out,
        inherited items included)."""
        if "/" in filename or filename.startswith("."):
            return None
        conf = self._maybe(self.config.etc / filename)
        if conf is None:
            return None
        return [(c.name, [(i.key, i.value) for i in items]) for c, items in browse(conf)]

    def reload(self, module: str) -> bool:
        """Re-read the module's config; a broken file keeps the old configuration (logged
        and counted), as Asterisk keeps running on a bad reload.  False if it failed."""
        try:
            self._reload(module)
        except (ConfigError, IvrError) as exc:
            METRICS.inc("sim.reload_failed")
            log_event(log, logging.WARNING, "sim.reload_failed", module=module, error=str(exc))
            return False
        return True

    def _reload(self, module: str) -> None:
        m = module.removesuffix(".so")
        etc = self.config.etc
        if m in ("", "pbx_config"):
            dp = load_dialplan(etc / "extensions.conf")
            self.pbx.dialplan = dp
            for k, v in dp.globals.items():
                self.pbx.globals[k] = v
                self.bus.varset(None, k, v)
        if m in ("", "res_musiconhold"):
            self._load_moh()
        if m in ("", "app_queue"):
            qconf = self._maybe(etc / "queues.conf")
            if qconf is not None:
                self.queues.load(qconf)

    def _load_moh(self) -> None:
        """musiconhold.conf's classes (name → its items), for the queues' ``musicclass``."""
        conf = self._maybe(self.config.etc / "musiconhold.conf")
        self.queues.moh_classes = {} if conf is None else {
            c.name: [(i.key, i.value) for i in items] for c, items in browse(conf)}

    def _register_apps(self) -> None:
        a = self.pbx.apps
        apps.register(a)
        a["agi"] = agi_app
        a["queue"] = self.queues.queue_app
        a["confbridge"] = self.confbridges.app
        a["mixmonitor"] = mixmonitor.mixmonitor_app
        a["stopmixmonitor"] = mixmonitor.stop_app
        a["chanspy"] = chanspy_app

    def app_names(self) -> list[str]:
        names = {"Answer": 1, "NoOp": 1, "Set": 1, "GotoIf": 1, "Goto": 1, "Gosub": 1,
                 "Return": 1, "ExecIf": 1, "Hangup": 1, "Wait": 1, "Ringing": 1,
                 "Playback": 1, "BackGround": 1, "Read": 1, "Verbose": 1, "Dial": 1,
                 "Progress": 1, "AGI": 1, "Queue": 1, "ConfBridge": 1, "MixMonitor": 1,
                 "StopMixMonitor": 1, "StackPop": 1, "ChanSpy": 1}
        return list(names)

    def queue_show(self, name: str | None) -> list[str]:
        out: list[str] = []
        for q in self.queues.queues.values():
            if name and q.name != name:
                continue
            out.append(f"{q.name} has {len(q.callers)} calls (max unlimited) in "
                       f"'{q.config.strategy}' strategy ({int(q.holdtime)}s holdtime, "
                       f"{int(q.talktime)}s talktime), W:{q.config.weight}, C:{q.completed}, "
                       f"A:{q.abandoned}, SL:0.0%, SL2:0.0% within 0s")
            out.append("   Members: " if q.members else "   No Members")
            for m in q.members:
                state = "Ringing" if m.ringing else "In use" if m.in_call else "Not in use"
                paused = f" (paused:{m.paused_reason})" if m.paused else ""
                out.append(f"      {m.name} ({m.interface} from {m.state_interface})"
                           f"{' (ringinuse enabled)' if m.ringinuse else ' (ringinuse disabled)'}"
                           f"{paused} ({state}) has taken "
                           f"{m.calls_taken or 'no'} calls" + (" yet" if not m.calls_taken
                                                              else ""))
            if q.callers:
                out.append("   Callers: ")
                for i, w in enumerate(q.callers, 1):
                    out.append(f"      {i}. {w.channel.name} (wait: "
                               f"{int(self.clock.now() - w.joined)}s, prio: {w.prio})")
            else:
                out.append("   No Callers")
            out += ["", ""]
        if name and not out:
            out = [f"No such queue: {name}."]
        return out

    # -- calls ------------------------------------------------------------------------

    async def originate_action(self, s: Session, msg: Action) -> None:
        chan = msg.get("Channel")
        if not chan:
            s.error(msg, "Channel not specified")
            return
        app, data = msg.get("Application"), msg.get("Data") or ""
        ctx, ext, prio = msg.get("Context"), msg.get("Exten"), msg.get("Priority") or "1"
        if not app and not (ctx and ext):
            s.error(msg, "Exten not specified" if ctx else "Context not specified")
            return
        priority = int(prio) if prio.isdigit() else None
        if priority is None and ctx and ext:
            # manager.c: a priority that is not a number is a label of context/exten
            priority = self.pbx.dialplan.label(ctx, ext, prio)
            if priority is None or priority < 1:
                s.error(msg, "Invalid priority")
                return
        tech, _, rest = chan.partition("/")
        if tech not in ("Local", "SIP", "PJSIP") or not rest:
            s.error(msg, "Originate failed")
            return
        async_ = (msg.get("Async") or "").lower() in ("true", "yes", "1")
        cid = parse_callerid(msg.get("CallerID") or "")
        variables = []
        for v in msg.getall("Variable"):
            for part in v.split(","):
                k, sep, val = part.partition("=")
                if sep:
                    variables.append((k.strip(), val))
        timeout_ms = msg.get("Timeout") or "30000"
        timeout = int(timeout_ms) / 1000.0 if timeout_ms.isdigit() else 30.0
        aid = msg.action_id
        if async_:
            s.ok(msg, "Originate successfully queued")
        coro = self.originate(chan, app=app, data=data, context=ctx, exten=ext,
                              priority=priority or 1, callerid=cid,
                              variables=variables, answer_within=timeout, action_id=aid,
                              respond=async_)
        if async_:
            self.pbx.spawn(_discard(coro))
            return
        ok = await coro
        if ok:
            s.ok(msg, "Originate successfully queued")
        else:
            s.error(msg, "Originate failed")

    async def originate(self, chan: str, *, app: str | None = None, data: str = "",
                        context: str | None = None, exten: str | None = None,
                        priority: int = 1, callerid: tuple[str, str] = ("", ""),
                        variables: list[tuple[str, str]] | None = None, answer_within: float = 30.0,
                        action_id: str | None = None, respond: bool = True) -> Channel | None:
        """Originate ``chan`` and connect it to ``app(data)`` or ``context,exten,priority``
        once answered.  Returns the outward channel (``;1`` of a Local pair) or None.
        ``respond``: publish ``OriginateResponse`` (manager.c does for an ``Async``
        Originate only; a synchronous one answers ``Originate failed`` alone: trace 10)."""
        pbx = self.pbx
        tech, _, rest = chan.partition("/")
        num, name = callerid
        variables = variables or []
        if tech == "Local":
            target = rest.split("/")[0]
            lexten, _, lctx = target.partition("@")
            lctx = lctx or "default"
            one, two = pbx.local_pair(lexten, lctx)
            pbx.bus.newexten(one, "AppDial2", "(Outgoing Line)")
            one.app, one.appdata = "AppDial2", "(Outgoing Line)"
            for k, v in variables:
                pbx.set_var(one, k, v)
            if num or name:
                one.set_callerid(num, name)
                pbx.bus.newcallerid(one)
                one.set_connected(num, name)
                pbx.bus.newconnectedline(one)
            for k, v in reversed(variables):
                pbx.set_var(two, k, v)
            if num or name:
                two.set_callerid(num, name)
                pbx.bus.newcallerid(two)
                two.set_connected(num, name)
                pbx.bus.newconnectedline(two)
            if pbx.dialplan.step(lctx, lexten, 1) is None:
                # local_call(): no such extension: ast_call() fails before the pair is
                # bridged or dialled; both halves go without a hang-up request, cause 0,
                # the device INVALID (trace 10 cap-3)
                one.peer = two.peer = None
                for c in (two, one):
                    c.hangup_cause = 0
                    pbx.destroy(c, device_state="INVALID")
                if respond:
                    self._originate_failed(chan, app, data, context, exten, num, name,
                                           0, action_id)
                return None
            pbx.bus.local_bridge(one, two, lctx, lexten)
            pbx.bus.dest_only("DialBegin", one, f"DialString: {target}\r\n")
            pbx.records[two.uniqueid] = CallRecord(two.name, two.uniqueid, self.clock.now())
            pbx.start(two)
            outward = one
        else:
            outward = pbx.new_channel(f"{tech}/{rest}-{pbx.ids.sequence()}", "default", "s")
            if num or name:
                outward.set_callerid(num, name)
                pbx.bus.newcallerid(outward)
            self.pbx.spawn(_answer_soon(pbx, outward))
        started: list[Channel] = []
        rang: list[bool] = []

        def ringing() -> None:
            """dial.c: the outward channel rings (OriginateResponse Reason 3 if it is
            never answered; trace 10)."""
            rang.append(True)
            if tech == "Local":
                pbx.bus.dest_only("DialState", outward, "DialStatus: RINGING\r\n")

        outward.on_ringing = ringing

        def connected() -> None:
            """Runs the moment the outward channel is answered (Asterisk's order)."""
            if tech == "Local":
                pbx.bus.dest_only("DialEnd", outward, "DialStatus: ANSWER\r\n")
            outward.on_ringing = None
            if respond:
                pbx.bus.emit("OriginateResponse", "call",
                             (f"ActionID: {action_id}\r\n" if action_id else "")
                             + f"Response: Success\r\nChannel: {outward.name}\r\n"
                             f"{_target(app, data, context, exten)}Reason: 4\r\n"
                             f"Uniqueid: {outward.uniqueid}\r\n"
                             f"CallerIDNum: {outward.cid_num}\r\n"
                             f"CallerIDName: {outward.cid_name}\r\n")
            if app:
                run = pbx.apps.get(app.lower())
                outward.app, outward.appdata = app, data

                async def first() -> None:
                    if run is not None:
                        await run(pbx, outward, data)

                pbx.start(outward, first=first)
            else:
                outward.set_location(context or "default", exten or "s", priority)
                pbx.start(outward)
            started.append(outward)

        if outward.is_up:
            connected()
        else:
            outward.on_answer = connected
            await wait_any((outward.signal("answered"), outward.signal("busy")),
                           answer_within, self.clock)
        if started:
            return outward
        outward.on_answer = outward.on_ringing = None
        busy = _mark(outward, "busy").is_set()
        if busy and tech == "Local":
            # dial.c handle_frame AST_CONTROL_BUSY: DialEnd BUSY, the owner hung up
            pbx.bus.dest_only("DialEnd", outward, "DialStatus: BUSY\r\n")
        if respond:
            # Reason (pbx.c pbx_dial_reason): cause USER_BUSY → AST_CONTROL_BUSY (5); else
            # the last control frame seen, AST_CONTROL_RINGING (3) when it rang
            self._originate_failed(chan, app, data, context, exten, num, name,
                                   5 if busy else 3 if rang else 0, action_id)
        pbx.request_hangup(outward, 17 if busy else 19)
        return None

    def _originate_failed(self, chan: str, app: str | None, data: str, context: str | None,
                          exten: str | None, num: str, name: str, reason: int,
                          action_id: str | None) -> None:
        self.pbx.bus.emit("OriginateResponse", "call",
                          (f"ActionID: {action_id}\r\n" if action_id else "")
                          + f"Response: Failure\r\nChannel: {chan}\r\n"
                          f"{_target(app, data, context, exten)}Reason: {reason}\r\n"
                          f"Uniqueid: <unknown>\r\nCallerIDNum: {num or '<unknown>'}\r\n"
                          f"CallerIDName: {name or '<unknown>'}\r\n")

    async def place_call(self, script: CallerScript) -> CallHandle:
        """A simulated PSTN call (``SIP/pstn-…``) entering ``script.context``."""
        pbx = self.pbx
        ch = Channel(f"SIP/{script.peer}-{pbx.ids.sequence()}", pbx.ids.uniqueid(),
                     context=script.context, exten=script.exten, state=State.RING,
                     created=self.clock.wall(), clock=self.clock)
        ch.set_callerid(_shrink(script.number), script.name)
        ch.set_language(script.language)
        ch.set_connected("", "")
        ch.menu_digits = list(script.menu_digits)
        ch.dtmf_info = script.dtmf_info
        ch.variables["__SIM_DNID"] = script.exten
        pbx.channels[ch.name] = ch
        pbx.linked[ch.linkedid] = 1
        pbx.processed += 1
        pbx.bus.newchannel(ch)
        peer = f"{script.peer}@127.0.0.1:5060"
        for var, value in (("SIPURI", f"sip:{peer}"), ("SIPDOMAIN", "127.0.0.1"),
                           ("SIPCALLID", f"{ch.uniqueid}@127.0.0.1")):
            pbx.set_var(ch, var, value)
        pbx.bus.newstate(ch)
        self._sip_auth(script)
        pbx.bus.cel(ch, "CHAN_START")
        pbx.records[ch.uniqueid] = CallRecord(ch.name, ch.uniqueid, self.clock.now(),
                                              entry=script.exten)
        done = asyncio.Event()
        handle = CallHandle(ch, script, done)
        pbx.start(ch)
        self._drive(handle)
        log_event(log, logging.DEBUG, "sim.call_placed", channel=ch.name,
                  caller=mask_number(script.number))
        return handle

    def _sip_auth(self, script: CallerScript) -> None:
        """chan_sip's security event for the INVITE of a known peer (trace 08)."""
        now = self.clock.wall()
        tv = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
              + f".{int(now % 1 * 1000):03d}+0000")
        self.bus.emit("SuccessfulAuth", "security",
                      f"EventTV: {tv}\r\nSeverity: Informational\r\nService: SIP\r\n"
                      f"EventVersion: 1\r\nAccountID: {script.exten}\r\n"
                      f"SessionID: 0x{id(script):x}\r\n"
                      "LocalAddress: IPV4/UDP/127.0.0.1/5060\r\n"
                      "RemoteAddress: IPV4/UDP/127.0.0.1/5070\r\nUsingPassword: 0\r\n")

    def _drive(self, h: CallHandle) -> None:
        """The caller's behaviour: abandon after ``patience``, hang up after talking or at
        the script's limit.  Timers and milestone callbacks, no task per call (a task
        only for ``patience``)."""
        ch, sc = h.channel, h.script
        clock, pbx = self.clock, self.pbx
        deadline = sc.max_duration if sc.hangup_after is None else min(sc.max_duration,
                                                                       sc.hangup_after)
        timers: list[Timer] = []

        def hang_up() -> None:
            pbx.request_hangup(ch, 16, "HangupRequest", with_cause=False)

        timers.append(clock.call_later(deadline, hang_up))
        waiting: asyncio.Task[None] | None = None
        if sc.patience is not None:
            patience = sc.patience

            async def abandon() -> None:
                await ch.reached("queued")
                if not await clock.wait_for(_mark(ch, "bridged"), patience):
                    hang_up()

            waiting = asyncio.ensure_future(abandon())
        if sc.talk_time is not None:
            talk = sc.talk_time

            def bridged() -> None:
                if not ch.hungup:
                    timers.append(clock.call_later(talk, hang_up))

            ch.signal("bridged").then(bridged)

        def ended() -> None:
            for t in timers:
                t.cancel()
            if waiting is not None:
                waiting.cancel()
            h.done.set()

        ch.signal("hungup").then(ended)

    async def generate(self, count: int, rate: float,
                       factory: ScriptFactory | None = None) -> list[CallHandle]:
        """Place ``count`` calls at ``rate`` calls/s (simulated time) from ``factory``."""
        from ivr.sim.callers import random_script

        make: ScriptFactory = factory or (lambda rng, i: random_script(rng))
        out = []
        interval = 1.0 / rate if rate > 0 else 0.0
        start = self.clock.now()
        for i in range(count):
            out.append(await self.place_call(make(self.random, i)))
            due = start + (i + 1) * interval
            delay = due - self.clock.now()
            if delay > 0:
                await self.clock.sleep(delay)
            elif i % 50 == 49:
                await asyncio.sleep(0)
        return out

    def summary(self) -> CallSummary:
        recs = list(self.pbx.records.values())
        f = self.pbx.folded
        waits = [w for r in recs if (w := r.wait) is not None]
        n_waits = len(waits) + f.waits
        return CallSummary(
            placed=len(recs) + f.placed, active=sum(1 for r in recs if r.end is None),
            answered=sum(1 for r in recs if r.answered_by_agent_at is not None) + f.answered,
            abandoned=sum(1 for r in recs if r.abandoned) + f.abandoned,
            completed=sum(1 for r in recs if r.end is not None) + f.placed,
            mean_wait=(sum(waits) + f.wait_sum) / n_waits if n_waits else 0.0,
            max_wait=max(max(waits, default=0.0), f.wait_max),
            agi_failures=sum(1 for r in recs if r.agi_status == "FAILURE") + f.agi_failures,
        )

    def time_to_agent(self) -> dict[str, TimeToAgent]:
        """Per dialled number, and ``"*"`` for all of them: seconds from the answer to the
        first member rung (the call's first AgentCalled), over the placed calls still
        kept one by one (the last 20,000) that rang a member."""
        by_entry: dict[str, list[float]] = {}
        for r in self.pbx.records.values():
            t = r.time_to_agent
            if t is not None and r.entry:
                by_entry.setdefault(r.entry, []).append(t)
        out = {e: TimeToAgent.of(v) for e, v in sorted(by_entry.items())}
        out["*"] = TimeToAgent.of([t for v in by_entry.values() for t in v])
        return out

    def atxfer(self, ch: Channel, context: str, exten: str) -> None:
        """AMI Atxfer: the queued feature code and digits run an attended transfer
        (``ivr.sim.features``)."""
        self.pbx.spawn(attended_transfer(self.pbx, self.features, ch, context, exten))


async def _stay(ch: Channel, ended: asyncio.Event) -> None:
    await ch.until(ended)


def _target(app: str | None, data: str, context: str | None, exten: str | None) -> str:
    if app:
        return f"Application: {app}\r\nData: {data}\r\n"
    return f"Context: {context}\r\nExten: {exten}\r\n"


def _mark(ch: Channel, name: str) -> asyncio.Event:
    return ch.signal(name)


async def _discard(coro: object) -> None:
    await coro  # type: ignore[misc]


async def _answer_soon(pbx: Pbx, ch: Channel) -> None:
    await asyncio.sleep(0)
    if not ch.hungup:
        pbx.answer(ch)


def _positive_int(values: dict[str, str], key: str, default: int) -> int:
    """manager.c's reading of authtimeout/authlimit: atoi, and a value under 1 keeps the
    default (Asterisk logs a warning)."""
    text = values.get(key, "")
    atoi = re.match(r"\s*([+-]?\d+)", text)
    value = int(atoi.group(1)) if atoi else 0
    if key in values and value < 1:
        log_event(log, logging.WARNING, "sim.manager_conf_invalid", key=key, value=text)
    return value if value >= 1 else default


def _values(conf: list[Category], name: str) -> dict[str, str]:
    """The first non-template ``[name]``'s items (the last of a repeated key wins)."""
    for cat, items in browse(conf):
        if cat.name == name:
            return {i.key: i.value for i in items}
    return {}


def _cel_enabled(conf: list[Category] | None) -> bool:
    if conf is None:
        return False
    yes = ("yes", "true", "1", "on")
    return (_values(conf, "general").get("enable", "").lower() in yes
            and _values(conf, "manager").get("enabled", "").lower() in yes)


def _users(conf: list[Category] | None) -> dict[str, User]:
    if conf is None:
        return {}
    out = {}
    for cat, items in browse(conf):
        if cat.name == "general":
            continue
        sec = {i.key: i.value for i in items}
        secret = sec.get("secret")
        if secret is None:
            continue
        def classes(v: str | None) -> set[str]:
            if not v or v.strip() == "all":
                return set(ALL_CLASSES)
            return {c.strip() for c in v.split(",")}
        filters = []
        for item in items:
            if item.key.startswith("eventfilter"):
                try:
                    filters.append(parse_filter(item.key, item.value))
                except FilterError as exc:  # Asterisk warns and skips the line
                    log_event(log, logging.WARNING, "sim.eventfilter_invalid", user=cat.name,
                              line=item.line, filter=f"{item.key} = {item.value}",
                              error=str(exc))
        out[cat.name] = User(cat.name, secret, classes(sec.get("read")),
                             classes(sec.get("write")), filters)
    return out


__all__ = ["AgentScript", "CallHandle", "CallSummary", "CallerScript", "ChannelHungUp",
           "Emulator", "EmulatorConfig", "parse_callerid"]
