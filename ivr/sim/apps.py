"""Dialplan applications (Answer, Set, GotoIf, Wait, Playback, Read, Dial…).

Each is ``async def app(pbx, ch, data)``; an unknown application is logged as a
warning by the executor, which then goes on like Asterisk does.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from ivr.log import event as log_event
from ivr.sim.expr import split_args, split_if
from ivr.sim.media import collect, stream
from ivr.sim.model import Channel, ChannelHungUp, State

if TYPE_CHECKING:
    from ivr.sim.pbx import App, Pbx

log = logging.getLogger("ivr.sim.apps")


def _float(s: str, default: float) -> float:
    try:
        return float(s)
    except ValueError:
        return default


async def answer(pbx: Pbx, ch: Channel, data: str) -> None:
    if ch.state != State.UP:
        pbx.answer(ch)
        pbx.bus.cel(ch, "ANSWER", "Answer", data)


async def noop(pbx: Pbx, ch: Channel, data: str) -> None:
    return None


async def set_(pbx: Pbx, ch: Channel, data: str) -> None:
    name, sep, value = data.partition("=")
    if not sep:
        log_event(log, logging.WARNING, "sim.set_usage", channel=ch.name,
                  detail="Ignoring, no parameters")
        return
    pbx.set_var(ch, name.strip(), value)


async def goto_if(pbx: Pbx, ch: Channel, data: str) -> None:
    cond, a, b = split_if(data)
    target = a if cond.strip() not in ("", "0") else b
    if target:
        pbx.goto(ch, target)


async def goto(pbx: Pbx, ch: Channel, data: str) -> None:
    pbx.goto(ch, data)


async def gosub(pbx: Pbx, ch: Channel, data: str) -> None:
    stack = ch.variables.setdefault("__SIM_GOSUB", "")
    ch.variables["__SIM_GOSUB"] = f"{stack}|{ch.context},{ch.exten},{ch.priority + 1}"
    pbx.goto(ch, data.partition("(")[0])


async def return_(pbx: Pbx, ch: Channel, data: str) -> None:
    stack = ch.variables.get("__SIM_GOSUB", "")
    if not stack:
        raise ChannelHungUp(ch.name)
    rest, _, top = stack.rpartition("|")
    ch.variables["__SIM_GOSUB"] = rest
    pbx.goto(ch, top)


_CALL = re.compile(r"\s*(\w+)\s*\((.*)\)\s*\Z", re.S)


async def exec_if(pbx: Pbx, ch: Channel, data: str) -> None:
    """ExecIf(expr?app(args)[:app(args)])."""
    cond, _, rest = data.partition("?")
    depth = 0
    split = len(rest)
    for i, c in enumerate(rest):  # the ':' between the two calls, outside parentheses
        depth += (c == "(") - (c == ")")
        if c == ":" and depth == 0:
            split = i
            break
    call = rest[:split] if cond.strip() not in ("", "0") else rest[split + 1:]
    if not call.strip():
        return
    m = _CALL.match(call)
    name, args = (m.group(1), m.group(2)) if m else call.partition(",")[::2]
    app = pbx.apps.get(name.strip().lower())
    if app is None:
        log_event(log, logging.WARNING, "sim.unknown_app", detail=f"ExecIf: no app {name!r}")
        return
    await app(pbx, ch, args)


async def hangup(pbx: Pbx, ch: Channel, data: str) -> None:
    cause = int(data) if data.isdigit() else 16
    pbx.request_hangup(ch, cause)
    raise ChannelHungUp(ch.name)


async def wait(pbx: Pbx, ch: Channel, data: str) -> None:
    await ch.sleep(pbx.clock.real(_float(data or "0", 0.0)))


async def ringing(pbx: Pbx, ch: Channel, data: str) -> None:
    """Ringing(): on the ``;2`` of a Local pair the caller side (``;1``) starts ringing."""
    target = ch.peer if ch.peer is not None else ch
    if target.state != State.UP and target.state != State.RINGING:
        target.set_state(State.RINGING)
        pbx.bus.newstate(target)
        if target.on_ringing is not None:
            callback, target.on_ringing = target.on_ringing, None
            callback()


async def playback(pbx: Pbx, ch: Channel, data: str) -> None:
    args = split_args(data)
    ok = True
    for name in args[0].split("&"):
        played = await stream(pbx, ch, name.strip())
        ok = ok and played.found
    pbx.set_var(ch, "PLAYBACKSTATUS", "SUCCESS" if ok else "FAILED")


async def background(pbx: Pbx, ch: Channel, data: str) -> None:
    args = split_args(data)
    digits, _ = await collect(pbx, ch, args[0].split("&"), 1, 0.0, "")
    if digits:
        ctx = args[3] if len(args) > 3 and args[3] else ch.context
        if pbx.dialplan.extension(ctx, digits) is not None:
            ch.set_location(ctx, digits, 1)
            ch.jumped = True


async def read(pbx: Pbx, ch: Channel, data: str) -> None:
    # Read(variable,filename,maxdigits,options,attempts,timeout)
    a = split_args(data) + [""] * 6
    var, prompt = a[0], a[1]
    maxd = int(a[2]) if a[2].isdigit() and int(a[2]) > 0 else 255
    attempts = int(a[4]) if a[4].isdigit() and int(a[4]) > 0 else 1
    timeout = _float(a[5], 5.0) if a[5] else 5.0
    digits = ""
    status = "TIMEOUT"
    for _ in range(attempts):
        digits, timed_out = await collect(pbx, ch, [p for p in prompt.split("&") if p],
                                          maxd, timeout)
        if digits:
            status = "OK"
            break
    pbx.set_var(ch, var, digits)
    pbx.set_var(ch, "READSTATUS", status)


async def verbose(pbx: Pbx, ch: Channel, data: str) -> None:
    return None


async def dial(pbx: Pbx, ch: Channel, data: str) -> None:
    """Dial(Local/exten@context[&…],timeout): ring, bridge when answered."""
    from ivr.sim.bridging import create_bridge, enter_bridge

    a = split_args(data) + ["", ""]
    timeout = _float(a[1], 0.0) if a[1] else None
    legs = []
    for target in a[0].split("&"):
        tech, _, rest = target.partition("/")
        if tech != "Local":
            log_event(log, logging.WARNING, "sim.dial_unsupported", target=target)
            continue
        exten, _, context = rest.partition("@")
        context = context.split("/")[0]
        one, two = pbx.local_pair(exten, context, linkedid=ch.linkedid)
        one.set_callerid(ch.cid_num, ch.cid_name)
        two.set_callerid(ch.cid_num, ch.cid_name)
        pbx.inherit(ch, two)
        pbx.bus.local_bridge(one, two, context, exten)
        pbx.bus.two("DialBegin", "call", ch, one, f"DialString: {rest}\r\n")
        one.app, one.appdata = "AppDial", "(Outgoing Line)"
        pbx.start(two)
        legs.append(one)
    if not legs:
        pbx.set_var(ch, "DIALSTATUS", "CHANUNAVAIL")
        return
    answered = [asyncio.ensure_future(leg.reached("answered")) for leg in legs]
    wk = asyncio.ensure_future(ch.wake.wait())
    done, _ = await asyncio.wait(
        [*answered, wk], timeout=None if timeout is None else pbx.clock.real(timeout),
        return_when=asyncio.FIRST_COMPLETED)
    for f in [*answered, wk]:
        f.cancel()
    winner = next((leg for leg in legs if leg.state == State.UP and not leg.hungup), None)
    for leg in legs:
        if leg is not winner:
            pbx.bus.two("DialEnd", "call", ch, leg, "DialStatus: CANCEL\r\n")
            pbx.request_hangup(leg)
    if winner is None:
        pbx.set_var(ch, "DIALSTATUS", "NOANSWER")
        ch.check()
        return
    pbx.bus.two("DialEnd", "call", ch, winner, "DialStatus: ANSWER\r\n")
    pbx.set_var(ch, "DIALSTATUS", "ANSWER")
    if ch.state != State.UP:
        pbx.answer(ch)
    b = create_bridge(pbx)
    enter_bridge(pbx, b, winner)
    enter_bridge(pbx, b, ch)
    winner.task = pbx.spawn(_hold_leg(pbx, winner, b))
    await ch.until(b.ended)


async def _hold_leg(pbx: Pbx, leg: Channel, b: object) -> None:
    from ivr.sim.model import Bridge

    assert isinstance(b, Bridge)
    try:
        await leg.until(b.ended)
    except ChannelHungUp:
        pass
    pbx.destroy(leg)


def register(apps: dict[str, App]) -> None:
    apps.update({
        "answer": answer, "noop": noop, "set": set_, "gotoif": goto_if, "goto": goto,
        "gosub": gosub, "return": return_, "execif": exec_if, "hangup": hangup,
        "wait": wait, "ringing": ringing, "playback": playback, "background": background,
        "read": read, "verbose": verbose, "dial": dial, "progress": noop,
    })
