"""AMI actions, answered with Asterisk 20's wording (see the traces)."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING

from ivr.ami.messages import Action
from ivr.log import event as log_event
from ivr.sim import mixmonitor
from ivr.sim.ami_server import ALL_CLASSES, Session
from ivr.sim.eventfilter import FilterError, parse_filter
from ivr.sim.media import send_dtmf
from ivr.sim.model import Bridge, Channel, clean

if TYPE_CHECKING:
    from ivr.sim.emulator import Emulator

log = logging.getLogger("ivr.sim.ami")


def _yes(v: str | None) -> bool:
    return (v or "").strip().lower() in ("yes", "true", "y", "1", "on")


def _false(v: str | None) -> bool:
    """Asterisk's ast_false."""
    return (v or "").strip().lower() in ("no", "false", "n", "0", "off")


def _security(emu: Emulator, s: Session, name: str, severity: str, extra: str) -> None:
    now = emu.clock.wall()
    tv = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}+0000"
    stv = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s.started)) + ".000+0000"
    emu.bus.emit(name, "security",
                 f"EventTV: {tv}\r\nSeverity: {severity}\r\nService: AMI\r\nEventVersion: 1\r\n"
                 + extra.format(session=s.id, local=s.local, remote=s.remote, stv=stv,
                                user=s.user.name if s.user else ""))


def on_login(emu: Emulator, s: Session) -> None:
    _security(emu, s, "SuccessfulAuth", "Informational",
              "AccountID: {user}\r\nSessionID: {session}\r\nLocalAddress: {local}\r\n"
              "RemoteAddress: {remote}\r\nUsingPassword: 0\r\nSessionTV: {stv}\r\n")


def _list(s: Session, msg: Action, message: str, events: list[tuple[str, str]],
          complete: str, aid_first: bool = False) -> None:
    aid = msg.action_id
    s.respond(msg, "Success", [("EventList", "start"), ("Message", message)])
    a = f"ActionID: {aid}\r\n" if aid else ""
    for name, body in events:
        s.event(name, a + body if aid_first else body + a)
    s.event(complete, f"{a}EventList: Complete\r\nListItems: {len(events)}\r\n")


def _chan(emu: Emulator, s: Session, msg: Action, header: str = "Channel") -> Channel | None:
    name = msg.get(header)
    if not name:
        s.error(msg, "Channel not specified" if header == "Channel" else f"{header} not specified")
        return None
    ch = emu.pbx.find(name)
    if ch is None:
        s.error(msg, f"Channel does not exist: {name}" if header in ("Channel", "ExtraChannel")
                else "No such channel")
    return ch


def _duration(emu: Emulator, ch: Channel) -> str:
    d = int(emu.clock.wall() - ch.created)
    return f"{d // 3600:02d}:{d // 60 % 60:02d}:{d % 60:02d}"


# -- simple ----------------------------------------------------------------------------

def a_ping(emu: Emulator, s: Session, msg: Action) -> None:
    s.respond(msg, "Success", [("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])


def a_logoff(emu: Emulator, s: Session, msg: Action) -> None:
    s.respond(msg, "Goodbye", [("Message", "Thanks for all the fish.")])
    s.close()


def a_core_settings(emu: Emulator, s: Session, msg: Action) -> None:
    s.respond(msg, "Success", [
        ("AMIversion", "9.0.0"), ("AsteriskVersion", "20.20.1"), ("SystemName", ""),
        ("CoreMaxCalls", "0"), ("CoreMaxLoadAvg", "0.000000"), ("CoreRunUser", ""),
        ("CoreRunGroup", ""), ("CoreMaxFilehandles", "0"), ("CoreRealTimeEnabled", "No"),
        ("CoreCDRenabled", "Yes"), ("CoreHTTPenabled", "No"), ("SoundsSearchCustomDir", "No")])


def a_core_status(emu: Emulator, s: Session, msg: Action) -> None:
    t = time.gmtime(emu.started_wall)
    s.respond(msg, "Success", [
        ("CoreStartupDate", time.strftime("%Y-%m-%d", t)),
        ("CoreStartupTime", time.strftime("%H:%M:%S", t)),
        ("CoreReloadDate", time.strftime("%Y-%m-%d", t)),
        ("CoreReloadTime", time.strftime("%H:%M:%S", t)),
        ("CoreCurrentCalls", str(len(emu.pbx.channels))),
        ("CoreProcessedCalls", str(emu.pbx.processed))])


def a_events(emu: Emulator, s: Session, msg: Action) -> None:
    mask = (msg.get("EventMask") or "").strip().lower()
    if mask in ("off", "no", "false"):
        s.events_on = False
        s.respond(msg, "Success", [("Events", "Off")])
        return
    s.events_on = True
    user = s.user
    read = user.read if user else set(ALL_CLASSES)
    s.mask = set(read) if mask in ("on", "yes", "all", "true", "") else \
        {c.strip() for c in mask.split(",")} & read
    s.respond(msg, "Success", [("Events", "On")])


def a_filter(emu: Emulator, s: Session, msg: Action) -> None:
    """``action_filter``: add one filter to this session (manager.c)."""
    if (msg.get("Operation") or "").lower() != "add":
        s.error(msg, "Unknown operation")
        return
    criteria = msg.get("MatchCriteria") or ""
    try:
        f = parse_filter(f"eventfilter({criteria})" if criteria else "eventfilter",
                         msg.get("Filter") or "")
    except FilterError as exc:
        log_event(log, logging.WARNING, "sim.ami_filter_refused", session=s.id, error=str(exc))
        s.error(msg, exc.message)
        return
    s.filters.add(f)
    s.ok(msg, "Success")


def a_getvar(emu: Emulator, s: Session, msg: Action) -> None:
    var = msg.get("Variable")
    if not var:
        s.error(msg, "No variable specified")
        return
    ch = None
    if msg.get("Channel"):
        ch = _chan(emu, s, msg)
        if ch is None:
            return
    s.respond(msg, "Success", [("Variable", var), ("Value", emu.pbx.get_var(ch, var))])


def a_setvar(emu: Emulator, s: Session, msg: Action) -> None:
    var = msg.get("Variable")
    if not var:
        s.error(msg, "Variable not specified")
        return
    ch = None
    if msg.get("Channel"):
        ch = _chan(emu, s, msg)
        if ch is None:
            return
    s.ok(msg, "Variable Set")
    emu.pbx.set_var(ch, var, msg.get("Value") or "")


def a_dbput(emu: Emulator, s: Session, msg: Action) -> None:
    fam, key = msg.get("Family"), msg.get("Key")
    if not fam:
        s.error(msg, "No family specified")
        return
    if not key:
        s.error(msg, "No key specified")
        return
    emu.astdb[(fam, key)] = msg.get("Val") or ""
    s.ok(msg, "Updated database successfully")


def a_dbget(emu: Emulator, s: Session, msg: Action) -> None:
    fam, key = msg.get("Family") or "", msg.get("Key") or ""
    val = emu.astdb.get((fam, key))
    if val is None:
        s.error(msg, "Database entry not found")
        return
    _list(s, msg, "Result will follow",
          [("DBGetResponse", f"Family: {fam}\r\nKey: {key}\r\nVal: {val}\r\n")], "DBGetComplete")


def a_dbdel(emu: Emulator, s: Session, msg: Action) -> None:
    if emu.astdb.pop((msg.get("Family") or "", msg.get("Key") or ""), None) is None:
        s.error(msg, "Database entry not found")
    else:
        s.ok(msg, "Key deleted successfully")


def a_module_check(emu: Emulator, s: Session, msg: Action) -> None:
    s.respond(msg, "Success", [("Version", "")])


def a_reload(emu: Emulator, s: Session, msg: Action) -> None:
    module = msg.get("Module") or ""
    known = {"app_queue.so", "app_queue", "pbx_config.so", "pbx_config", "app_confbridge.so",
             "app_confbridge", "manager", "cel", "res_musiconhold.so", "res_musiconhold", ""}
    if module not in known:
        s.error(msg, "No such module")
        emu.bus.emit("Reload", "system", f"Module: {module}\r\nStatus: 2\r\n")
        return
    s.ok(msg, "Module Reloaded")
    emu.reload(module)
    emu.bus.emit("Reload", "system", f"Module: {module}\r\nStatus: 0\r\n")


# -- config ----------------------------------------------------------------------------

def _conf(emu: Emulator, s: Session, msg: Action) -> list[tuple[str, list[tuple[str, str]]]] | None:
    fn = msg.get("Filename")
    if not fn:
        s.error(msg, "Filename not specified")
        return None
    got = emu.read_conf(fn)
    if got is None:
        s.error(msg, "Config file not found")
    return got


def a_getconfig(emu: Emulator, s: Session, msg: Action) -> None:
    secs = _conf(emu, s, msg)
    if secs is None:
        return
    pairs: list[tuple[str, str]] = []
    for i, (name, lines) in enumerate(secs):
        pairs.append((f"Category-{i:06d}", name))
        for j, (k, v) in enumerate(lines):
            pairs.append((f"Line-{i:06d}-{j:06d}", f"{k}={v}"))
    s.respond(msg, "Success", pairs)


def a_getconfigjson(emu: Emulator, s: Session, msg: Action) -> None:
    secs = _conf(emu, s, msg)
    if secs is None:
        return
    out = {name: dict(lines) for name, lines in secs}
    s.respond(msg, "Success", [("JSON", json.dumps(out, ensure_ascii=False,
                                                    separators=(",", ":")))])


def a_listcategories(emu: Emulator, s: Session, msg: Action) -> None:
    secs = _conf(emu, s, msg)
    if secs is None:
        return
    s.respond(msg, "Success", [(f"Category-{i:06d}", n) for i, (n, _) in enumerate(secs)])


# -- Command ---------------------------------------------------------------------------

def a_command(emu: Emulator, s: Session, msg: Action) -> None:
    cmd = (msg.get("Command") or "").strip()
    if not cmd:
        s.error(msg, "No command provided")
        return
    words = cmd.split()
    out: list[str]
    after = None
    if cmd == "core show version":
        out = ["Asterisk 20.20.1 built by root @ vm on a x86_64 running Linux (emulated)"]
    elif cmd == "dialplan reload":
        out = ["Dialplan reloaded."]
        after = "dialplan"
    elif words[:2] == ["dialplan", "show"] and len(words) == 3 and "@" in words[2]:
        exten, _, ctx = words[2].partition("@")
        out = emu.pbx.dialplan.describe(ctx, exten)
    elif words[:2] == ["queue", "show"]:
        out = emu.queue_show(words[2] if len(words) > 2 else None)
    elif words[:4] == ["core", "show", "applications", "like"] and len(words) > 4:
        names = sorted(n for n in emu.app_names() if words[4].lower() in n.lower())
        out = ["    -= Matching Asterisk Applications =-"]
        out += [f"{n:>22}: {n} application. " for n in names]
        out.append(f"    -= {len(names)} Applications Matching =-")
    elif words[:3] == ["core", "show", "channels"]:
        out = [f"{c.name} {c.state.name.title()} {c.app}({c.appdata})"
               for c in emu.pbx.channels.values()]
        out.append(f"{len(emu.pbx.channels)} active channels")
    elif words[:3] == ["core", "stop", "now"] or words[:3] == ["core", "stop", "gracefully"]:
        emu.request_stop()
        return
    else:
        out = [f"No such command '{cmd}' (type 'core show help {cmd}' for other possible "
               "commands)"]
    s.respond(msg, "Success", [("Message", "Command output follows")]
              + [("Output", line) for line in out])
    if after == "dialplan":
        emu.reload("pbx_config")


# -- queues ----------------------------------------------------------------------------

def a_queue_add(emu: Emulator, s: Session, msg: Action) -> None:
    q, iface = msg.get("Queue"), msg.get("Interface")
    if not q or not iface:
        s.error(msg, "'Queue' or 'Interface' not set.")
        return
    pen = msg.get("Penalty") or "0"
    err = emu.queues.add(q, iface, msg.get("MemberName") or "", int(pen) if pen.isdigit() else 0,
                         _yes(msg.get("Paused")), msg.get("StateInterface") or "",
                         msg.get("Reason") or "")
    if err:
        s.error(msg, err)
    else:
        s.ok(msg, "Added interface to queue")


def a_queue_remove(emu: Emulator, s: Session, msg: Action) -> None:
    q, iface = msg.get("Queue"), msg.get("Interface")
    if not q or not iface:
        s.error(msg, "Need 'Queue' and 'Interface' parameters.")
        return
    err = emu.queues.remove(q, iface)
    if err:
        s.error(msg, err)
    else:
        s.ok(msg, "Removed interface from queue")


def a_queue_pause(emu: Emulator, s: Session, msg: Action) -> None:
    iface = msg.get("Interface")
    if not iface or msg.get("Paused") is None:
        s.error(msg, "Need 'Interface' and 'Paused' parameters.")
        return
    paused = _yes(msg.get("Paused"))
    if emu.queues.pause(msg.get("Queue"), iface, paused, msg.get("Reason") or ""):
        s.ok(msg, "Interface paused successfully" if paused else "Interface unpaused successfully")
    else:
        s.error(msg, "Interface not found")


def a_queue_penalty(emu: Emulator, s: Session, msg: Action) -> None:
    iface, pen = msg.get("Interface"), msg.get("Penalty")
    if not iface or pen is None or not pen.isdigit():
        s.error(msg, "Need 'Interface' and 'Penalty' parameters.")
        return
    if emu.queues.penalty(msg.get("Queue"), iface, int(pen)):
        s.ok(msg, "Interface penalty set successfully")
    else:
        s.error(msg, "Invalid interface, queuename or penalty")


def a_queue_ringinuse(emu: Emulator, s: Session, msg: Action) -> None:
    iface = msg.get("Interface")
    if not iface or msg.get("RingInUse") is None:
        s.error(msg, "Need 'Interface' and 'RingInUse' parameters.")
        return
    if emu.queues.ringinuse(msg.get("Queue"), iface, _yes(msg.get("RingInUse"))):
        s.ok(msg, "Interface ringinuse set successfully")
    else:
        s.error(msg, "Invalid interface, queuename, or ringinuse value\n")


def a_queue_log(emu: Emulator, s: Session, msg: Action) -> None:
    if not msg.get("Queue") or not msg.get("Event"):
        s.error(msg, "Need 'Queue' and 'Event' parameters.")
        return
    s.ok(msg, "Event added successfully")


def a_queue_reload(emu: Emulator, s: Session, msg: Action) -> None:
    q = msg.get("Queue")
    if q and q not in emu.queues.queues:
        s.error(msg, "No such queue")
        return
    emu.reload("app_queue")
    s.ok(msg, "Queue reloaded successfully")


def a_queue_summary(emu: Emulator, s: Session, msg: Action) -> None:
    want = msg.get("Queue")
    now = emu.clock.now()
    evs = []
    for q in emu.queues.queues.values():
        if want and q.name != want:
            continue
        logged = len(q.members)
        avail = len([m for m in q.members if not m.paused and not m.in_call])
        longest = int(max((now - w.joined for w in q.callers), default=0))
        evs.append(("QueueSummary",
                    f"Queue: {q.name}\r\nLoggedIn: {logged}\r\nAvailable: {avail}\r\n"
                    f"Callers: {len(q.callers)}\r\nHoldTime: {int(q.holdtime)}\r\n"
                    f"TalkTime: {int(q.talktime)}\r\nLongestHoldTime: {longest}\r\n"))
    _list(s, msg, "Queue summary will follow", evs, "QueueSummaryComplete")


def a_queue_status(emu: Emulator, s: Session, msg: Action) -> None:
    want = msg.get("Queue")
    member_filter = msg.get("Member")
    now = emu.clock.now()
    evs = []
    for q in emu.queues.queues.values():
        if want and q.name != want:
            continue
        total = q.completed + q.abandoned
        perf = 100.0 * q.completed / total if total else 0.0
        evs.append(("QueueParams",
                    f"Queue: {q.name}\r\nMax: {q.config.maxlen}\r\n"
                    f"Strategy: {q.config.strategy}\r\n"
                    f"Calls: {len(q.callers)}\r\nHoldtime: {int(q.holdtime)}\r\n"
                    f"TalkTime: {int(q.talktime)}\r\nCompleted: {q.completed}\r\n"
                    f"Abandoned: {q.abandoned}\r\nServiceLevel: 0\r\n"
                    f"ServicelevelPerf: {perf:.1f}\r\nServicelevelPerf2: {perf:.1f}\r\n"
                    f"Weight: {q.config.weight}\r\n"))
        for m in q.listed():
            if member_filter and m.interface != member_filter:
                continue
            evs.append(("QueueMember", m.status_body(q.name, q.config.wrapuptime)))
        for i, w in enumerate(q.callers, 1):
            c = w.channel
            evs.append(("QueueEntry",
                        f"Queue: {q.name}\r\nPosition: {i}\r\nChannel: {c.name}\r\n"
                        f"Uniqueid: {c.uniqueid}\r\nCallerIDNum: {c.cid_num}\r\n"
                        f"CallerIDName: {c.cid_name}\r\nConnectedLineNum: {c.conn_num}\r\n"
                        f"ConnectedLineName: {c.conn_name}\r\n"
                        f"Wait: {int(now - w.joined)}\r\nPriority: 0\r\n"))
    _list(s, msg, "Queue status will follow", evs, "QueueStatusComplete")


# -- channels --------------------------------------------------------------------------

def a_core_show_channels(emu: Emulator, s: Session, msg: Action) -> None:
    evs = []
    for ch in emu.pbx.channels.values():
        evs.append(("CoreShowChannel", ch.block()
                    + f"Application: {ch.app}\r\nApplicationData: {ch.appdata}\r\n"
                    f"Duration: {_duration(emu, ch)}\r\n"
                    f"BridgeId: {ch.bridge.uniqueid if ch.bridge else ''}\r\n"))
    _list(s, msg, "Channels will follow", evs, "CoreShowChannelsComplete", aid_first=True)


def a_bridge_list(emu: Emulator, s: Session, msg: Action) -> None:
    """BridgeList: each bridge with a channel in it (``BridgeType`` filters), as
    manager_bridges.c lists them."""
    kind = msg.get("BridgeType")
    seen: dict[str, Bridge] = {}
    for ch in emu.pbx.channels.values():
        b = ch.bridge
        if b is not None and b.uniqueid not in seen and (not kind or b.type == kind):
            seen[b.uniqueid] = b
    _list(s, msg, "Bridge listing will follow",
          [("BridgeListItem", b.block()) for b in seen.values()], "BridgeListComplete",
          aid_first=True)


def _goes_second(c: Channel, names: set[str]) -> bool:
    """One AMI ``Hangup /regex/`` hits both halves of a Local pair: the half whose peer
    runs dialplan or an application outside any bridge goes first, and its hang-up is
    queued on this one (HangupRequest).  A half in a two-party bridge waits for its
    bridge to let it go (10 cap-6: the bridged ``;1``s; 11 cap-10: the bridged ``;2``);
    with neither bridged the ``;2``'s PBX ends first (09 cap-8, 13)."""
    two = c.peer
    if two is None or two.name not in names or two.task is None or two.task.done():
        return False
    if two.bridge is not None:
        return False
    if c.bridge is not None:
        return c.bridge.type == "basic"
    return c.name.endswith(";1")


def a_hangup(emu: Emulator, s: Session, msg: Action) -> None:
    name = msg.get("Channel")
    if not name:
        s.error(msg, "No channel specified")
        return
    cause_s = msg.get("Cause") or "16"
    cause = int(cause_s) if cause_s.isdigit() else 16
    if len(name) > 1 and name.startswith("/") and name.endswith("/"):
        try:
            rx = re.compile(name[1:-1])
        except re.error:
            s.error(msg, "Invalid regex")
            return
        hit = [c for c in list(emu.pbx.channels.values()) if rx.search(c.name)]
        hit.sort(key=lambda c: c.name)
        _list(s, msg, "Channels hung up will follow",
              [("ChannelHungup", f"Channel: {c.name}\r\n") for c in hit],
              "ChannelsHungupListComplete")
        names = {c.name for c in hit}
        for c in hit:
            if _goes_second(c, names):
                b = c.bridge
                if b is not None and not b.peers_cleared:
                    # the bridge sees the soft hang-up at once and dissolves: BRIDGEPEER
                    # of every member is cleared before any hang-up (traces 10, 11 cap-10)
                    b.peers_cleared = True
                    for o in b.channels:
                        emu.pbx.bus.varset(o, "BRIDGEPEER", "")
                continue
            emu.pbx.request_hangup(c, cause)
        return
    ch = emu.pbx.find(name)
    if ch is None:
        s.error(msg, "No such channel")
        return
    s.ok(msg, "Channel Hungup")
    emu.pbx.request_hangup(ch, cause)


def a_originate(emu: Emulator, s: Session, msg: Action) -> object:
    return emu.originate_action(s, msg)


def a_redirect(emu: Emulator, s: Session, msg: Action) -> None:
    ch = _chan(emu, s, msg)
    if ch is None:
        return
    extra = None
    if msg.get("ExtraChannel"):
        extra = _chan(emu, s, msg, "ExtraChannel")
        if extra is None:
            return
    ctx, ext, prio_s = msg.get("Context") or "", msg.get("Exten") or "", msg.get("Priority") or "1"
    if not ctx or not ext:
        s.error(msg, "Context and Exten are required")
        return
    if not prio_s.isdigit():  # manager.c: a label of the extension (ast_findlabel_extension)
        found = emu.pbx.dialplan.label(ctx, ext, prio_s)
        if found is None or found < 1:
            s.error(msg, "Priority is invalid")
            return
        prio_s = str(found)
    if extra is not None:
        s.ok(msg, "Dual Redirect successful")
        targets = [(ch, ctx, ext, int(prio_s)),
                   (extra, msg.get("ExtraContext") or ctx, msg.get("ExtraExten") or ext,
                    int(msg.get("ExtraPriority") or prio_s))]
    else:
        s.ok(msg, "Redirect successful")
        targets = [(ch, ctx, ext, int(prio_s))]
    for c, cx, ex, pr in targets:
        c.redirect = (cx, ex, pr)
    for c, cx, ex, pr in targets:
        emu.pbx.redirect(c, cx, ex, pr)


def a_blind_transfer(emu: Emulator, s: Session, msg: Action) -> None:
    ch = _chan(emu, s, msg)
    if ch is None:
        return
    ctx, ext = msg.get("Context") or ch.context, msg.get("Exten") or ""
    if not ext:
        s.error(msg, "No extension specified")
        return
    b = ch.bridge
    if b is None:
        s.error(msg, "Transfer failed")
        return
    s.ok(msg, "Transfer succeeded")
    others = [c for c in b.channels if c is not ch]
    emu.bus.cel(ch, "BLINDTRANSFER", ch.app, ch.appdata)
    emu.bus.chan("Unhold", "call", ch)
    for o in others:
        emu.pbx.set_var(o, "BLINDTRANSFER", ch.name)
        emu.pbx.set_var(ch, "BLINDTRANSFER", o.name)
    ee = others[0] if others else ch
    emu.bus.emit("BlindTransfer", "call",
                 "Result: Success\r\n" + ch.block("Transferer") + ee.block("Transferee")
                 + b.block() + f"IsExternal: Yes\r\nContext: {ctx}\r\nExtension: {ext}\r\n")
    b.transferred = True
    for o in others:
        emu.pbx.redirect(o, ctx, ext, 1)
    emu.pbx.request_hangup(ch, 16)


def a_atxfer(emu: Emulator, s: Session, msg: Action) -> None:
    ch = _chan(emu, s, msg)
    if ch is None:
        return
    ext = msg.get("Exten")
    if not ext:
        s.error(msg, "No extension specified")
        return
    if not emu.features.atxfer:  # manager.c: the atxfer feature code is what it queues
        s.error(msg, "No attended transfer feature code found")
        return
    context = msg.get("Context")
    if context:
        emu.pbx.set_var(ch, "TRANSFER_CONTEXT", context)
    s.ok(msg, "Atxfer successfully queued")
    emu.atxfer(ch, context or ch.context, ext)


def a_play_dtmf(emu: Emulator, s: Session, msg: Action) -> None:
    ch = _chan(emu, s, msg)
    if ch is None:
        return
    digit = msg.get("Digit")
    if not digit:
        s.error(msg, "No digit specified")
        return
    dur = msg.get("Duration") or "100"
    s.ok(msg, "DTMF successfully queued")
    send_dtmf(emu.pbx, ch, digit[0], int(dur) if dur.isdigit() else 100)


def a_mixmonitor(emu: Emulator, s: Session, msg: Action) -> None:
    ch = _chan(emu, s, msg)
    if ch is None:
        return
    fn = msg.get("File") or f"{ch.uniqueid}.wav"
    s.respond(msg, "Success")
    mixmonitor.start(emu.pbx, ch, fn, msg.get("Options") or "")


def a_mixmonitor_mute(emu: Emulator, s: Session, msg: Action) -> None:
    """app_mixmonitor.c manager_mute_mixmonitor: the direction, the channel and the state
    are checked in that order; a channel with no audiohook at all cannot be muted."""
    direction = (msg.get("Direction") or "").lower()
    if not direction:
        s.error(msg, "No direction specified. Must be read, write or both")
        return
    if direction not in ("read", "write", "both"):
        s.error(msg, "Invalid direction specified. Must be read, write or both")
        return
    if not msg.get("Channel"):
        s.error(msg, "No channel specified")
        return
    state = msg.get("State") or ""
    if not state:
        s.error(msg, "No state specified")
        return
    ch = emu.pbx.find(msg.get("Channel") or "")
    if ch is None:
        s.error(msg, "No such channel")
        return
    if ch.mixmonitor is None:
        s.error(msg, "Cannot set mute flag")
        return
    s.respond(msg, "Success")
    # clearmute = ast_false(state): anything but a false word sets the flag
    mixmonitor.mute(emu.pbx, ch, direction, not _false(state), _yes(state))


def a_stop_mixmonitor(emu: Emulator, s: Session, msg: Action) -> None:
    ch = _chan(emu, s, msg)
    if ch is None:
        return
    if ch.mixmonitor is None:
        s.error(msg, "Could not stop MixMonitor")
        return
    s.respond(msg, "Success")
    mixmonitor.stop(emu.pbx, ch)


def a_confbridge_list(emu: Emulator, s: Session, msg: Action) -> None:
    name = msg.get("Conference")
    if not name:
        s.error(msg, "No Conference name provided.")
        return
    conf = emu.confbridges.conferences.get(name)
    if conf is None or not conf.users:
        s.error(msg, "No active conferences.")
        return
    evs = []
    for ch, _kick, joined, marked in sorted(conf.users.values(), key=lambda u: u[0].name):
        evs.append(("ConfbridgeList",
                    f"Conference: {name}\r\nAdmin: No\r\nMarkedUser: {'Yes' if marked else 'No'}"
                    "\r\nWaitMarked: No\r\nEndMarked: No\r\nEndMarkedAny: No\r\nWaiting: No\r\n"
                    f"Muted: {'Yes' if ch.name in conf.muted else 'No'}\r\n"
                    f"Talking: No\r\nAnsweredTime: {int(emu.clock.wall() - joined)}"
                    "\r\n" + ch.block()))
    _list(s, msg, "Confbridge user list will follow", evs, "ConfbridgeListComplete",
          aid_first=True)


def a_confbridge_list_rooms(emu: Emulator, s: Session, msg: Action) -> None:
    confs = emu.confbridges.conferences
    if not confs:
        s.error(msg, "No active conferences.")
        return
    evs = [("ConfbridgeListRooms",
            f"Conference: {c.name}\r\nParties: {len(c.users)}\r\n"
            f"Marked: {sum(1 for u in c.users.values() if u[3])}\r\nLocked: No\r\nMuted: No\r\n")
           for c in confs.values()]
    _list(s, msg, "Confbridge conferences will follow", evs, "ConfbridgeListRoomsComplete",
          aid_first=True)


def _confbridge_mute(emu: Emulator, s: Session, msg: Action, mute: bool) -> None:
    name, chan = msg.get("Conference"), msg.get("Channel")
    if not name:
        s.error(msg, "No Conference name provided.")
        return
    if not chan:
        s.error(msg, "No channel name provided.")
        return
    if not emu.confbridges.conferences:
        s.error(msg, "No active conferences.")
        return
    err = emu.confbridges.mute(name, chan, mute)
    if err is not None:
        s.error(msg, err)
        return
    s.ok(msg, "User muted" if mute else "User unmuted")


def a_confbridge_mute(emu: Emulator, s: Session, msg: Action) -> None:
    _confbridge_mute(emu, s, msg, True)


def a_confbridge_unmute(emu: Emulator, s: Session, msg: Action) -> None:
    _confbridge_mute(emu, s, msg, False)


def a_confbridge_kick(emu: Emulator, s: Session, msg: Action) -> None:
    """app_confbridge.c action_confbridgekick: the conference name, any conference at
    all, that conference, then the participant (no channel: none matches)."""
    name, chan = msg.get("Conference"), msg.get("Channel") or ""
    if not name:
        s.error(msg, "No Conference name provided.")
        return
    if not emu.confbridges.conferences:
        s.error(msg, "No active conferences.")
        return
    if name not in emu.confbridges.conferences:
        s.error(msg, "No Conference by that name found.")
        return
    if emu.confbridges.kick(name, chan):
        s.ok(msg, "All participants kicked" if chan == "all" else "User kicked")
    else:
        s.error(msg, "No Channel by that name found in Conference.")


def a_user_event(emu: Emulator, s: Session, msg: Action) -> None:
    """``action_userevent`` (manager.c): acknowledged ("Event Sent"), then ``Event:
    UserEvent`` (class ``user``) to every session: ``UserEvent: <name>`` and every other
    header of the action in order, ``ActionID`` included, ``Action`` and ``UserEvent``
    left out."""
    body = "".join(f"{clean(k)}: {clean(v)}\r\n" for k, v in msg.items()
                   if k.lower() not in ("action", "userevent"))
    s.ok(msg, "Event Sent")
    emu.bus.emit("UserEvent", "user", f"UserEvent: {clean(msg.get('UserEvent') or '')}\r\n"
                 + body)


ACTIONS = {
    "ping": a_ping, "userevent": a_user_event, "logoff": a_logoff, "coresettings": a_core_settings,
    "corestatus": a_core_status, "events": a_events, "filter": a_filter, "getvar": a_getvar,
    "setvar": a_setvar, "dbput": a_dbput, "dbget": a_dbget, "dbdel": a_dbdel,
    "modulecheck": a_module_check, "reload": a_reload, "getconfig": a_getconfig,
    "getconfigjson": a_getconfigjson, "listcategories": a_listcategories,
    "command": a_command, "queueadd": a_queue_add, "queueremove": a_queue_remove,
    "queuepause": a_queue_pause, "queuepenalty": a_queue_penalty,
    "queuememberringinuse": a_queue_ringinuse, "queuelog": a_queue_log,
    "queuereload": a_queue_reload, "queuesummary": a_queue_summary,
    "queuestatus": a_queue_status, "coreshowchannels": a_core_show_channels,
    "bridgelist": a_bridge_list, "hangup": a_hangup, "originate": a_originate,
    "redirect": a_redirect,
    "blindtransfer": a_blind_transfer, "atxfer": a_atxfer, "playdtmf": a_play_dtmf,
    "mixmonitor": a_mixmonitor, "mixmonitormute": a_mixmonitor_mute,
    "stopmixmonitor": a_stop_mixmonitor, "confbridgelist": a_confbridge_list,
    "confbridgelistrooms": a_confbridge_list_rooms, "confbridgekick": a_confbridge_kick,
    "confbridgemute": a_confbridge_mute, "confbridgeunmute": a_confbridge_unmute,
}


# ListCommands: every action the emulator answers (Login and Challenge in ami_server), with
# the synopsis Asterisk 20.20.1 reads from its XML docs (xmldoc.c raw output: each newline
# and the tabs after it become one space, so most end in " ") and the authority it was
# registered with (manager.c, db.c, app_queue.c, app_senddtmf.c, app_mixmonitor.c,
# app_confbridge.c).
_COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Atxfer": ("Attended transfer. ", ("call",)),
    "BlindTransfer": ("Blind transfer channel(s) to the given destination ", ("call",)),
    "BridgeList": ("Get a list of bridges in the system. ", ("reporting",)),
    "Challenge": ("Generate Challenge for MD5 Auth. ", ()),
    "Command": ("Execute Asterisk CLI Command. ", ("command",)),
    "ConfbridgeKick": ("Kick a Confbridge user. ", ("call",)),
    "ConfbridgeList": ("List participants in a conference. ", ("reporting",)),
    "ConfbridgeListRooms": ("List active conferences. ", ("reporting",)),
    "ConfbridgeMute": ("Mute a Confbridge user. ", ("call",)),
    "ConfbridgeUnmute": ("Unmute a Confbridge user. ", ("call",)),
    "CoreSettings": ("Show PBX core settings (version etc). ", ("system", "reporting")),
    "CoreShowChannels": ("List currently active channels. ", ("system", "reporting")),
    "CoreStatus": ("Show PBX core status variables. ", ("system", "reporting")),
    "DBDel": ("Delete DB entry. ", ("system",)),
    "DBGet": ("Get DB Entry. ", ("system", "reporting")),
    "DBPut": ("Put DB entry. ", ("system",)),
    "Events": ("Control Event Flow. ", ()),
    "Filter": ("Dynamically add filters for the current manager session. ", ("system",)),
    "GetConfig": ("Retrieve configuration. ", ("system", "config")),
    "GetConfigJSON": ("Retrieve configuration (JSON format). ", ("system", "config")),
    "Getvar": ("Gets a channel variable or function value. ", ("call", "reporting")),
    "Hangup": ("Hangup channel. ", ("system", "call")),
    "ListCategories": ("List categories in configuration file. ", ("config",)),
    "ListCommands": ("List available manager commands. ", ()),
    "Login": ("Login Manager. ", ()),
    "Logoff": ("Logoff Manager. ", ()),
    "MixMonitor": ("Record a call and mix the audio during the recording.  Use of "
                   "StopMixMonitor is required to guarantee the audio file is available for "
                   "processing during dialplan execution. ", ("system",)),
    "MixMonitorMute": ("Mute / unMute a Mixmonitor recording. ", ("system", "call")),
    "ModuleCheck": ("Check if module is loaded. ", ("system",)),
    "Originate": ("Originate a call. ", ("originate",)),
    "Ping": ("Keepalive command. ", ()),
    "PlayDTMF": ("Play DTMF signal on a specific channel. ", ("call",)),
    "QueueAdd": ("Add interface to queue. ", ("agent",)),
    "QueueLog": ("Adds custom entry in queue_log. ", ("agent",)),
    "QueueMemberRingInUse": ("Set the ringinuse value for a queue member. ", ("agent",)),
    "QueuePause": ("Makes a queue member temporarily unavailable. ", ("agent",)),
    "QueuePenalty": ("Set the penalty for a queue member. ", ("agent",)),
    "QueueReload": ("Reload a queue, queues, or any sub-section of a queue or queues. ", ()),
    "QueueRemove": ("Remove interface from queue. ", ("agent",)),
    "QueueStatus": ("Show queue status. ", ()),
    "QueueSummary": ("Show queue summary. ", ()),
    "Redirect": ("Redirect (transfer) a call. ", ("call",)),
    "Reload": ("Send a reload event. ", ("system", "config")),
    "Setvar": ("Sets a channel variable or function value. ", ("call",)),
    "UserEvent": ("Send an arbitrary event. ", ("user",)),
    "StopMixMonitor": ("Stop recording a call through MixMonitor, and free the recording's "
                       "file handle. ", ("system", "call")),
}


def a_list_commands(emu: Emulator, s: Session, msg: Action) -> None:
    """``action_listcommands``: ``Response: Success`` (no Message), one
    ``Name: synopsis (Priv: classes)`` line per action the session may write (or that
    needs no class), in registration order (case-insensitive alphabetical), a blank
    line.  Classes are named in manager.c's ``perms[]`` order; none is ``<none>``."""
    write = s.user.write if s.user else set()
    aid = msg.action_id
    lines = ["Response: Success\r\n" + (f"ActionID: {clean(aid)}\r\n" if aid else "")]
    for name in sorted(_COMMANDS, key=str.lower):
        synopsis, classes = _COMMANDS[name]
        if not classes or write.intersection(classes):
            priv = ",".join(c for c in ALL_CLASSES if c in classes) or "<none>"
            lines.append(f"{name}: {synopsis} (Priv: {priv})\r\n")
    s.event_frame(("".join(lines) + "\r\n").encode())
    s.release()


ACTIONS["listcommands"] = a_list_commands

def dispatch(emu: Emulator, s: Session, msg: Action) -> object:
    emu.clock.touch()  # a virtual clock lets the client's next action come before it jumps
    handler = ACTIONS.get(msg.name.lower())
    if handler is None:
        s.error(msg, f"Invalid/unknown command: {msg.name}. Use Action: ListCommands to show "
                "available commands.")
        _security(emu, s, "RequestBadFormat", "Error",
                  "SessionID: {session}\r\nLocalAddress: {local}\r\nRemoteAddress: {remote}\r\n"
                  "RequestType: Action: "
                  + clean(msg.name).replace("{", "{{").replace("}", "}}") + "\r\n"
                  "SessionTV: {stv}\r\nAccountID: {user}\r\n")
        return None
    return handler(emu, s, msg)
