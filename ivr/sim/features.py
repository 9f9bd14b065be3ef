"""Call features (``features.conf``): the attended transfer that AMI ``Atxfer`` starts.

What Asterisk 20 does, as trace 09 shows it (main/manager.c action_atxfer, main/
bridge_basic.c): the action sets ``TRANSFER_CONTEXT`` and queues the ``atxfer`` feature
code and the extension as DTMF on the transferer's channel.  The bridge sees the code:
the transferee is put on hold (``Hold`` on the transferer), ``pbx-transfer`` plays until
the first digit, the digits are collected until the extension can match no longer, then
the target (a Local pair, linked to the call) is called and put into a new
consultation bridge; when it answers, the transferer moves there from the call's bridge
(the transferee stays alone in it; no BRIDGEPEER change).  If the target hangs up (or
does not answer within ``atxfernoanswertimeout``), the transferer goes back to the
transferee (``Unhold``): no ``AttendedTransfer`` event.  If the transferer hangs up while
the target is on the line, the transfer completes: the target takes the transferer's
place in the call's bridge, and ``AttendedTransfer`` (``Result: Success``, ``DestType:
Bridge``, manager_bridges.c's blocks: ``OrigTransferer``/``OrigBridge`` the transferer in
the call's bridge, ``SecondTransferer``/``SecondBridge`` it in the consultation,
``Transferee``, ``TransferTarget``) says so.  No trace has a completed one: Asterisk
merges the two bridges (bridge_basic.c complete_enter), the emulator moves the target
into the call's bridge instead (the same parties end up together; the bridge events in
between differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ivr.asterisk.conf import Category, browse
from ivr.sim.bridging import create_bridge, enter_bridge
from ivr.sim.model import Bridge, Channel, State, wait_any

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx


@dataclass
class Features:
    """``features.conf`` as far as the emulator uses it (Asterisk's defaults otherwise:
    no ``atxfer`` code, 3 s digit timeout, 15 s no-answer timeout)."""

    atxfer: str = ""
    transferdigittimeout: float = 3.0
    atxfernoanswertimeout: float = 15.0

    @classmethod
    def from_conf(cls, conf: list[Category] | None) -> Features:
        f = cls()
        if conf is None:
            return f
        for cat, items in browse(conf):
            values = {i.key.strip().lower(): i.value.strip() for i in items}
            if cat.name == "featuremap":
                f.atxfer = values.get("atxfer", f.atxfer)
            elif cat.name == "general":
                f.transferdigittimeout = _seconds(values, "transferdigittimeout",
                                                  f.transferdigittimeout)
                f.atxfernoanswertimeout = _seconds(values, "atxfernoanswertimeout",
                                                   f.atxfernoanswertimeout)
        return f


def _seconds(values: dict[str, str], key: str, default: float) -> float:
    v = values.get(key, "")
    return float(v) if v.isdigit() and int(v) > 0 else default


def _dtmf(pbx: Pbx, ch: Channel, digit: str) -> None:
    """A queued DTMF frame (AST_FRAME_DTMF = its end only, no duration)."""
    pbx.bus.dtmf(ch, digit, 0, False)
    pbx.bus.cel(ch, "DTMF", ch.app, ch.appdata, extra=f'{{"digit":"{digit}","duration_ms":0}}')


async def attended_transfer(pbx: Pbx, features: Features, ch: Channel, context: str,
                            exten: str) -> None:
    """Run the transfer that ``Atxfer`` queued on ``ch`` (the action has answered)."""
    b = ch.bridge
    for d in features.atxfer:
        _dtmf(pbx, ch, d)
    if b is None or ch.hungup:  # outside a bridge nobody acts on the feature code
        for d in exten:
            _dtmf(pbx, ch, d)
        return
    ch.variables["SIM_TRANSFERER"] = "1"  # bridge_basic's transferer role (app_queue)
    pbx.bus.chan("Hold", "call", ch)
    pbx.bus.cel(ch, "STREAM_BEGIN", ch.app, ch.appdata,
                extra=f'{{"sound":"pbx-transfer","format":"gsm","language":"{ch.language}"}}')
    # the queued digits are the whole extension (the first one stops the prompt)
    for i, d in enumerate(exten):
        _dtmf(pbx, ch, d)
        if i == 0:
            pbx.bus.cel(ch, "STREAM_END", ch.app, ch.appdata)
    if pbx.dialplan.extension(context, exten) is None:
        _back(pbx, ch, b, None)  # Asterisk plays pbx-invalid first
        return
    await _consult(pbx, features, ch, b, context, exten)


async def _consult(pbx: Pbx, features: Features, ch: Channel, b: Bridge, context: str,
                   exten: str) -> None:
    one, two = pbx.local_pair(exten, context, linkedid=ch.linkedid)
    one.cdr_open = None  # party B of the transferer's CDR only (trace 09: no CDR of its own)
    for k in ("TRANSFERERNAME", "ATTENDEDTRANSFER"):
        pbx.set_var(one, k, ch.name)
    for k in ("ATTENDEDTRANSFER", "TRANSFERERNAME"):
        pbx.set_var(two, k, ch.name)
    two.set_callerid(ch.cid_num, ch.cid_name)
    pbx.bus.newcallerid(two)
    pbx.bus.local_bridge(one, two, context, exten)
    one.set_connected(ch.cid_num, ch.cid_name)
    pbx.bus.newconnectedline(one)
    consult = create_bridge(pbx)
    enter_bridge(pbx, consult, one)
    pbx.set_var(one, "ATTENDEDTRANSFER", "")

    def answered() -> None:
        pbx.bus.dest_only("DialEnd", one, "DialStatus: ANSWER\r\n")

    one.on_answer = answered
    pbx.start(two)
    await wait_any([one.signal("answered"), one.signal("hungup"), ch.signal("hungup")],
                   features.atxfernoanswertimeout, pbx.clock)
    if ch.hungup or b.ended.is_set():
        pbx.request_hangup(one, 16)
        return
    if one.state != State.UP or one.hungup:
        one.on_answer = None
        one.before_destroy.append(lambda: _leave_consult(pbx, one, consult))
        pbx.request_hangup(one, 16)
        _back(pbx, ch, b, consult)
        return
    # the transferer moves into the consultation bridge; the transferee stays alone
    _quiet_leave(pbx, ch, b)
    enter_bridge(pbx, consult, ch)
    ch.set_connected(one.cid_num, one.cid_name)
    pbx.bus.newconnectedline(ch)

    def target_gone() -> None:
        if ch.bridge is not consult:
            return
        _leave_consult(pbx, one, consult)
        _quiet_leave(pbx, ch, consult)
        _back(pbx, ch, b, consult)

    one.before_destroy.append(target_gone)
    await wait_any([one.signal("hungup"), ch.signal("hungup")], None, pbx.clock)
    if _gone(ch) and not one.hungup and ch.bridge is None:
        if b.ended.is_set():  # the transferee had gone: a normal call, ended by the transferer
            pbx.request_hangup(one, 16)
        else:
            _complete(pbx, ch, one, consult, b)


def _gone(ch: Channel) -> bool:
    return ch.hungup


def _quiet_leave(pbx: Pbx, ch: Channel, b: Bridge) -> None:
    """Leave ``b`` as a feature moves a channel: no BRIDGEPEER change, no dissolving."""
    if ch in b.channels:
        b.channels.remove(ch)
    ch.bridge = None
    if not ch.hungup:
        ch.cdr_bridge_left()
    pbx.bus.cel(ch, "BRIDGE_EXIT", ch.app, ch.appdata)
    pbx.bus.bridge("BridgeLeave", b, ch)


def _leave_consult(pbx: Pbx, one: Channel, consult: Bridge) -> None:
    if one.bridge is not consult:
        return
    pbx.bus.varset(one, "BRIDGEPEER", "")
    consult.channels.remove(one)
    one.bridge = None
    pbx.bus.cel(one, "BRIDGE_EXIT", one.app, one.appdata)
    pbx.bus.bridge("BridgeLeave", consult, one)


def _back(pbx: Pbx, ch: Channel, b: Bridge, consult: Bridge | None) -> None:
    """The transferer returns to the transferee (the transfer did not happen): from the
    consultation bridge, or still in the call's bridge (the target never answered, the
    extension does not exist)."""
    if consult is not None and not consult.channels:
        consult.ended.set()
    if ch.hungup or b.ended.is_set():
        if consult is not None:
            pbx.bus.bridge("BridgeDestroy", consult)
        return
    if ch.bridge is None:
        if ch.cdr_open is None:  # a CDR of its own again after the consultation
            ch.cdr_dialplan(pbx.clock.wall())
        enter_bridge(pbx, b, ch)
    pbx.bus.chan("Unhold", "call", ch)
    if consult is not None:
        pbx.bus.bridge("BridgeDestroy", consult)
    if ch.bridge is b:
        peer = next((o for o in b.channels if o is not ch), None)
        if peer is not None:
            ch.set_connected(peer.cid_num, peer.cid_name)
        pbx.bus.newconnectedline(ch)


def _bridge_block(prefix: str, b: Bridge) -> str:
    """A bridge's snapshot lines with ``prefix`` (``OrigBridgeUniqueid: …``)."""
    return "".join(prefix + line + "\r\n" for line in b.block().split("\r\n") if line)


def _complete(pbx: Pbx, ch: Channel, one: Channel, consult: Bridge, b: Bridge) -> None:
    """The transferer hung up with the target on the line: the target takes its place."""
    transferee = next((o for o in b.channels if o is not one), None)
    second = _bridge_block("Second", consult)
    _leave_consult(pbx, one, consult)
    if not consult.ended.is_set():  # leave_bridge() dissolved it when the transferer left
        pbx.bus.bridge("BridgeDestroy", consult)
        consult.ended.set()
    enter_bridge(pbx, b, one)
    pbx.bus.emit("AttendedTransfer", "call",
                 "Result: Success\r\n" + ch.block("OrigTransferer") + _bridge_block("Orig", b)
                 + ch.block("SecondTransferer") + second
                 + (transferee.block("Transferee") if transferee is not None else "")
                 + one.block("TransferTarget")
                 + f"IsExternal: No\r\nDestType: Bridge\r\nDestBridgeUniqueid: {b.uniqueid}\r\n")
    ended = b.ended

    async def stay() -> None:
        await one.until(ended)

    if one.task is None or one.task.done():
        pbx.start(one, first=stay)
