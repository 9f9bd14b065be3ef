"""Dialplan applications (Answer, Set, GotoIf, Wait, Playback, Read, Dial…).

Each is ``async def app(pbx, ch, data)``; an application that returns -1 in Asterisk
hangs the channel up here (:func:`_fail`); an unknown one ends the channel's dialplan
(the executor in :mod:`ivr.sim.pbx`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

from ivr.asterisk.appargs import split_app_args
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.sim.expr import checkcondition
from ivr.sim.media import (
    ANY_DIGIT,
    GETDATA_COMPLETE,
    GETDATA_EMPTY_END_TERMINATED,
    GETDATA_TIMEOUT,
    getdata,
    offer_menu_input,
    split_prompts,
    stream,
)
from ivr.sim.model import Channel, ChannelHungUp, State, wait_any

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


async def noop(pbx: Pbx, ch: Channel, data: str) -> None:
    return None


async def set_(pbx: Pbx, ch: Channel, data: str) -> None:
    name, sep, value = data.partition("=")
    if not sep:
        log_event(log, logging.WARNING, "sim.set_usage", channel=ch.name,
                  detail="Ignoring, no parameters")
        return
    pbx.set_var(ch, name.strip(), value)


async def mset(pbx: Pbx, ch: Channel, data: str) -> None:
    """MSet(name1=value1,name2=value2,…): ``pbx_builtin_setvar_multiple`` — standard
    argument parsing (quotes removed, ``\\`` escapes), each pair split on its first
    ``=`` and set like Set (functions, ``_``/``__`` inheritance, one VarSet each)."""
    if not data:
        log_event(log, logging.WARNING, "sim.mset_usage", channel=ch.name,
                  detail="MSet requires at least one variable name/value pair.")
        return
    for pair in split_app_args(data, max_args=99):  # AST_APP_ARG(pair)[99]
        nv = split_app_args(pair, "=", max_args=2)
        if len(nv) == 2 and nv[0]:
            pbx.set_var(ch, nv[0], nv[1])
        else:
            log_event(log, logging.WARNING, "sim.mset_usage", channel=ch.name,
                      detail=f"MSet: ignoring entry {pair!r} with no '='")


async def goto_if(pbx: Pbx, ch: Channel, data: str) -> None:
    """``pbx_builtin_gotoif``: ``strsep`` on the first ``?`` and then the first ``:`` (no
    quote or parenthesis rules, unlike application arguments)."""
    cond, _, rest = data.partition("?")
    a, _, b = rest.partition(":")
    target = a if checkcondition(cond) else b
    if target:
        pbx.goto(ch, target)


async def goto(pbx: Pbx, ch: Channel, data: str) -> None:
    pbx.goto(ch, data)


async def gosub(pbx: Pbx, ch: Channel, data: str) -> None:
    """apps/app_stack.c ``gosub_exec``: ``Gosub([[context,]exten,]priority[(args)])``.
    The label ends at the first ``(``, the arguments at the last ``)``, split as
    ``AST_STANDARD_RAW_ARGS`` (at most 100).  A destination that does not exist returns
    -1 (the channel hangs up).  The new frame's ``ARG1``… (as many as the caller's frame
    had, the missing ones empty) and ``ARGC`` are pushed over any existing variables of
    those names, each with ``VarSet LOCAL(ARGn)``; the return address is the next
    priority."""
    from ivr.sim.pbx import GosubFrame

    if not data:
        log_event(log, logging.ERROR, "sim.gosub_usage", channel=ch.name,
                  detail="Gosub requires an argument: Gosub([[context,]exten,]priority"
                         "[(arg1[,...][,argN])])")
        _fail(pbx, ch)
    label, paren, rest = data.partition("(")
    args: list[str] = []
    if paren:
        end = rest.rfind(")")
        if end < 0:
            log_event(log, logging.WARNING, "sim.gosub_usage", channel=ch.name,
                      detail=f"Ouch.  No closing paren: '{data}'?")
        else:
            rest = rest[:end]
        args = split_app_args(rest, max_args=100, raw=True)
    where = pbx.resolve(ch, label)
    if where is None or pbx.dialplan.step(*where) is None:
        log_event(log, logging.ERROR, "sim.gosub_no_destination", channel=ch.name,
                  detail=f"Gosub address is invalid: '{data}'" if where is None else
                  f"Gosub attempted to reach non-existent destination "
                  f"'{where[0]},{where[1]},{where[2]}' from "
                  f"'{ch.context},{ch.exten},{ch.priority}'")
        _fail(pbx, ch)
    stack = pbx.gosub_stacks.setdefault(ch, [])
    max_argc = max(stack[-1].arguments if stack else 0, len(args))
    frame = GosubFrame(ch.context, ch.exten, ch.priority + 1, max_argc)
    for i in range(max_argc):
        pbx.frame_set_var(ch, frame, f"ARG{i + 1}", args[i] if i < len(args) else "")
    pbx.frame_set_var(ch, frame, "ARGC", str(len(args)))
    stack.append(frame)
    ch.set_location(*where)
    ch.jumped = True


async def return_(pbx: Pbx, ch: Channel, data: str) -> None:
    """``return_exec``: pop the frame (its variables unset, what they hid restored),
    ``GOSUB_RETVAL`` set to the argument (raw, also when empty), back to the priority
    after the Gosub.  No frame: -1 (the channel hangs up)."""
    stack = pbx.gosub_stacks.get(ch)
    if not stack:
        log_event(log, logging.ERROR, "sim.return_without_gosub", channel=ch.name,
                  detail="Return without Gosub: stack is "
                         + ("empty" if stack is not None else "unallocated"))
        _fail(pbx, ch)
    frame = stack.pop()
    pbx.release_frame(ch, frame)
    pbx.set_var(ch, "GOSUB_RETVAL", data)
    ch.set_location(frame.context, frame.exten, frame.priority)
    ch.jumped = True


async def stack_pop(pbx: Pbx, ch: Channel, data: str) -> None:
    """``StackPop()`` (``pop_exec``): drop the newest frame without returning."""
    stack = pbx.gosub_stacks.get(ch)
    if stack is None:
        log_event(log, logging.WARNING, "sim.stackpop_no_stack", channel=ch.name,
                  detail="StackPop called with no gosub stack allocated.")
        return
    if stack:
        pbx.release_frame(ch, stack.pop())


async def exec_if(pbx: Pbx, ch: Channel, data: str) -> None:
    """apps/app_exec.c ``execif_exec``: ``ExecIf(expr?app(args)[:app(args)])``, or the
    deprecated ``ExecIf(expr,app,args)`` when a ``,`` comes before the first ``?`` (or
    there is no ``?``).  An application that is not found, or a missing branch after
    ``?``, makes ExecIf return -1: the channel hangs up, as in Asterisk."""
    comma, question = data.find(","), data.find("?")
    false_app = false_data = ""
    if question < 0 or 0 <= comma < question:
        depr = split_app_args(data, max_args=3) + ["", "", ""]
        expr, true_app, true_data = depr[0], depr[1], depr[2]
    else:
        # AST_NONSTANDARD_RAW_ARGS on '?' then on ':' (quotes and backslashes kept)
        parts = split_app_args(data, "?", max_args=2, raw=True) + ["", ""]
        expr, remainder = parts[0], parts[1]
        if not remainder:
            log_event(log, logging.WARNING, "sim.execif_usage", channel=ch.name,
                      detail="Usage: ExecIf(<expr>?<appiftrue>(<args>)"
                             "[:<appiffalse>(<args)])")
            _fail(pbx, ch)
        branches = split_app_args(remainder, ":", max_args=2, raw=True) + ["", ""]
        true_app, true_data = _call(branches[0])
        false_app, false_data = _call(branches[1])
    if checkcondition(expr):
        await _exec_named(pbx, ch, true_app, true_data)
    elif false_app:
        await _exec_named(pbx, ch, false_app, false_data)


def _call(text: str) -> tuple[str, str]:
    """``app(args)``: the name up to the first ``(``, the args up to the last ``)``."""
    name, paren, rest = text.partition("(")
    if not paren:
        return text, ""
    end = rest.rfind(")")
    return name, rest if end < 0 else rest[:end]


def _fail(pbx: Pbx, ch: Channel) -> NoReturn:
    """An application returned -1: ``__ast_pbx_run`` ends the channel's dialplan."""
    pbx.request_hangup(ch, 16)
    raise ChannelHungUp(ch.name)


async def _exec_named(pbx: Pbx, ch: Channel, name: str, args: str) -> None:
    app = pbx.apps.get(name.lower()) if name else None
    if app is None:
        METRICS.inc("sim.unknown_app")
        log_event(log, logging.WARNING, "sim.unknown_app", channel=ch.name,
                  detail=f"Could not find application! ({name})")
        _fail(pbx, ch)
    else:
        await app(pbx, ch, args)


async def hangup(pbx: Pbx, ch: Channel, data: str) -> None:
    # pbx_builtin_hangup: no cause given → the channel's own (Dial's BUSY sets it), else 16
    cause = int(data) if data.isdigit() else (ch.hangup_cause or 16)
    pbx.request_hangup(ch, cause)
    raise ChannelHungUp(ch.name)


async def wait(pbx: Pbx, ch: Channel, data: str) -> None:
    await ch.sleep(_float(data or "0", 0.0))


async def ringing(pbx: Pbx, ch: Channel, data: str) -> None:
    """Ringing(): on the ``;2`` of a Local pair the caller side (``;1``) starts ringing."""
    target = ch.peer if ch.peer is not None else ch
    if target.state != State.UP and target.state != State.RINGING:
        target.set_state(State.RINGING)
        pbx.bus.newstate(target)
        pbx.local_in_use(target)
        if target.on_ringing is not None:
            callback, target.on_ringing = target.on_ringing, None
            callback()


async def busy(pbx: Pbx, ch: Channel, data: str) -> None:
    """Busy([timeout]): pbx_builtins.c indicate_busy — AST_CONTROL_BUSY towards the
    caller side (on the ``;2`` of a Local pair: the ``;1``, whose dial ends BUSY); a
    channel not up gets cause 17 (USER_BUSY) and state Busy; then it waits for the
    hang-up (``timeout`` seconds at most) and returns -1."""
    if ch.state != State.UP:
        ch.hangup_cause = 17
        ch.set_state(State.BUSY)
        pbx.bus.newstate(ch)
    target = ch.peer if ch.peer is not None else None
    if target is not None and not target.is_up:
        target.mark("busy")
    await ch.sleep(_float(data, 0.0) or 3600.0)
    pbx.request_hangup(ch, ch.hangup_cause)
    raise ChannelHungUp(ch.name)


async def playback(pbx: Pbx, ch: Channel, data: str) -> None:
    args = split_app_args(data, max_args=2) + [""]  # filenames, options
    ok = True
    for name in args[0].split("&"):
        played = await stream(pbx, ch, name.strip())
        ok = ok and played.found
    pbx.set_var(ch, "PLAYBACKSTATUS", "SUCCESS" if ok else "FAILED")


async def background(pbx: Pbx, ch: Channel, data: str) -> None:
    """Background(files[,options[,lang[,context]]]): the ``&`` list plays in order, any
    digit stops it; a missing file stops the list (BACKGROUNDSTATUS=FAILED); a digit
    that is an extension of ``context`` jumps there."""
    args = split_app_args(data, max_args=4) + ["", "", "", ""]
    if ch.state != State.UP:
        if "s" in args[1]:  # skip: not answered yet, nothing played
            pbx.set_var(ch, "BACKGROUNDSTATUS", "SUCCESS")
            return
        if "n" not in args[1]:
            pbx.answer(ch)
    offer_menu_input(pbx, ch)
    digit: str | None = None
    status = "SUCCESS"
    for name in split_prompts(args[0].strip()):
        played = await stream(pbx, ch, name, ANY_DIGIT)
        if not played.found:
            log_event(log, logging.WARNING, "sim.background_missing", channel=ch.name,
                      detail=f"ast_streamfile failed on {ch.name} for {data}")
            status = "FAILED"
            break
        if played.digit is not None:
            digit = played.digit
            break
    pbx.set_var(ch, "BACKGROUNDSTATUS", status)
    if digit:
        ctx = args[3] or ch.context
        if pbx.dialplan.extension(ctx, digit) is not None:
            ch.set_location(ctx, digit, 1)
            ch.jumped = True


async def read(pbx: Pbx, ch: Channel, data: str) -> None:
    """Read(variable,filename&…,maxdigits,options,attempts,timeout): apps/app_read.c
    over ``ast_app_getdata_terminator`` (the ``&`` prompts play one after another)."""
    a = split_app_args(data, max_args=6) + [""] * 6
    var, prompt = a[0], a[1]
    maxd = int(a[2]) if a[2].isdigit() and 0 < int(a[2]) <= 255 else 255
    attempts = int(a[4]) if a[4].isdigit() and int(a[4]) > 0 else 1
    tosec = _float(a[5], 0.0) if a[5] else 0.0
    timeout_ms = int(tosec * 1000) if tosec > 0 else 0
    status = "ERROR"
    try:
        for _ in range(attempts):
            digits, res = await getdata(pbx, ch, prompt, maxd, timeout_ms)
            if res == GETDATA_COMPLETE or res == GETDATA_EMPTY_END_TERMINATED:
                status = "OK"
            elif res == GETDATA_TIMEOUT:
                status = "TIMEOUT"
            pbx.set_var(ch, var, digits)
            if res < 0 or digits:
                break
    except ChannelHungUp:
        # app_read.c: ast_check_hangup() -> READSTATUS=HANGUP, and the app returns 0;
        # the dialplan then stops because the channel is gone
        pbx.set_var(ch, "READSTATUS", "HANGUP")
        raise
    pbx.set_var(ch, "READSTATUS", "HANGUP" if ch.hungup else status)


async def verbose(pbx: Pbx, ch: Channel, data: str) -> None:
    return None


async def dial(pbx: Pbx, ch: Channel, data: str) -> None:
    """Dial(Local/exten@context[&…],timeout): ring, bridge when answered."""
    from ivr.sim.bridging import create_bridge, enter_bridge

    a = split_app_args(data, max_args=4) + ["", ""]  # peers, timeout, options, url
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
    deadline = None if timeout is None else pbx.clock.now() + timeout
    gone: dict[int, int] = {}  # id(leg) -> the cause it went with, unanswered
    while True:
        left = None if deadline is None else max(0.0, deadline - pbx.clock.now())
        live = [leg for leg in legs if id(leg) not in gone]
        await wait_any([*(leg.signal("answered") for leg in live),
                        *(leg.signal("hungup") for leg in live), ch.wake], left, pbx.clock)
        for leg in live:
            if leg.hungup and leg.state != State.UP:
                gone[id(leg)] = _callee_cause(leg)
                pbx.bus.two("DialEnd", "call", ch, leg,
                            f"DialStatus: {_cause_status(gone[id(leg)])}\r\n")
                ch.hangup_cause = gone[id(leg)]  # app_dial: the caller takes its cause
        if (ch.wake.is_set() or len(gone) == len(legs) or (left is not None and left <= 0)
                or any(leg.state == State.UP and not leg.hungup for leg in legs)):
            break
    winner = next((leg for leg in legs if leg.state == State.UP and not leg.hungup), None)
    # app_dial.c: legs still ringing end with CANCEL (answered elsewhere, the caller left),
    # or NOANSWER when the timeout ran out ("Nobody picked up", publish_dial_end_event)
    timed_out = winner is None and not ch.wake.is_set()
    for leg in legs:
        if leg is not winner and id(leg) not in gone:
            pbx.bus.two("DialEnd", "call", ch, leg,
                        f"DialStatus: {'NOANSWER' if timed_out else 'CANCEL'}\r\n")
            pbx.request_hangup(leg)
    if winner is None:
        status = _dial_status(list(gone.values())) if len(gone) == len(legs) else "NOANSWER"
        if not gone:
            ch.hangup_cause = 16  # nobody went on their own: a timeout, the caller left
        pbx.set_var(ch, "DIALSTATUS", status)
        ch.check()
        return
    ch.hangup_cause = 16  # app_dial: answered, the eventual hang-up is a normal one
    pbx.bus.two("DialEnd", "call", ch, winner, "DialStatus: ANSWER\r\n")
    pbx.set_var(ch, "DIALSTATUS", "ANSWER")
    if ch.state != State.UP:
        pbx.answer(ch)
    b = create_bridge(pbx)
    enter_bridge(pbx, b, winner)
    enter_bridge(pbx, b, ch)
    winner.task = pbx.spawn(_hold_leg(pbx, winner, b))
    await ch.until(b.ended)


def _callee_cause(leg: Channel) -> int:
    """The cause a callee that went unanswered hung up with: a Local half's is the one
    its other half queued (core_unreal.c ast_unreal_hangup: ast_queue_hangup_with_cause)."""
    peer = leg.peer
    if peer is not None and peer.hungup and peer.hangup_cause not in (0, 16):
        return peer.hangup_cause
    return leg.hangup_cause


def _cause_status(cause: int) -> str:
    """main/dial.c ast_hangup_cause_to_dial_status: a callee's DialEnd status."""
    return {17: "BUSY", 34: "CONGESTION", 3: "CHANUNAVAIL", 20: "CHANUNAVAIL"}.get(
        cause, "NOANSWER")


def _dial_status(causes: list[int]) -> str:
    """app_dial.c handle_cause and the everyone-gone verdict: when every callee went
    busy, congested or unavailable, BUSY if any was busy, else CONGESTION, else
    CHANUNAVAIL; a normal clearing or a no-answer counts as nothing (NOANSWER)."""
    if any(c in (16, 19) for c in causes):
        return "NOANSWER"
    if 17 in causes:
        return "BUSY"
    if 34 in causes:
        return "CONGESTION"
    return "CHANUNAVAIL"


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
        "answer": answer, "noop": noop, "set": set_, "mset": mset, "gotoif": goto_if, "goto": goto,
        "gosub": gosub, "return": return_, "stackpop": stack_pop, "execif": exec_if,
        "hangup": hangup,
        "wait": wait, "ringing": ringing, "busy": busy, "playback": playback,
        "background": background,
        "read": read, "verbose": verbose, "dial": dial, "progress": noop,
    })
