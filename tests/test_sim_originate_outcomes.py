"""What the callbacks need of the emulator beyond trace 10: a Local channel whose far side
runs Busy() ends the async Originate with Reason 5 (pbx.c pbx_dial_reason, cause
USER_BUSY); a Priority that is a label of Context/Exten is found, an unknown one is
manager.c's "Invalid priority"; a caller with QUEUE_PRIO joins before lower ones."""

from __future__ import annotations

import shutil
from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event, Response
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC
from tests.sim_trace_tools import read_until
from tests.test_sim_ami import login

EXTRA = """
[citizens]
exten => 13900000301,1,Busy(5)
exten => 13900000101,1,Answer()
 same => n,Wait(60)
[cb]
exten => s,1,NoOp(start)
 same => n(queue),Queue(nobody,t,,,60)
"""


def _etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    with open(etc / "extensions.conf", "a") as f:
        f.write(EXTRA)
    return etc


def _items(buf: bytearray) -> list[object]:
    return list(AMIParser(group_lists=False).feed(bytes(buf)))


async def test_busy_invalid_priority_and_queue_prio(tmp_path: Path) -> None:
    async with Emulator(EmulatorConfig(etc=_etc(tmp_path), clock=VirtualClock())) as emu:
        r, w, buf = await login(emu.ami_port)
        w.write(b"Action: Originate\r\nActionID: busy\r\nChannel: Local/13900000301@citizens"
                b"\r\nContext: cb\r\nExten: s\r\nPriority: queue\r\nTimeout: 10000\r\n"
                b"Async: true\r\n\r\n")
        await read_until(r, buf, b"Event: OriginateResponse")
        await read_until(r, buf, b"Reason: ")
        w.write(b"Action: Originate\r\nActionID: bad\r\nChannel: Local/13900000101@citizens"
                b"\r\nContext: cb\r\nExten: s\r\nPriority: nolabel\r\nAsync: true\r\n\r\n")
        await read_until(r, buf, b"Message: Invalid priority")
        # two callers wait in 'nobody'; a third with QUEUE_PRIO 10 goes before them
        for i, prio in enumerate(("", "", "10")):
            var = f"Variable: QUEUE_PRIO={prio}\r\n".encode() if prio else b""
            w.write(b"Action: Originate\r\nActionID: q%d\r\n" % i
                    + b"Channel: Local/13900000101@citizens\r\nContext: cb\r\nExten: s\r\n"
                    b"Priority: queue\r\nAsync: true\r\n" + var + b"\r\n")
            await read_until(r, buf, b"Event: QueueCallerJoin")
            await read_until(r, buf, b"Count: %d" % (i + 1))
        w.close()
        items = _items(buf)
        busy = [m for m in items if isinstance(m, Event) and m.name == "OriginateResponse"
                and m.get("ActionID") == "busy"]
        assert [(m["Response"], m["Reason"], m["Uniqueid"]) for m in busy] == [
            ("Failure", "5", "<unknown>")]
        assert any(isinstance(m, Event) and m.name == "DialEnd"
                   and m.get("DialStatus") == "BUSY" for m in items)
        bad = [m for m in items if isinstance(m, Response) and m.action_id == "bad"]
        assert [m.message for m in bad] == ["Invalid priority"]
        joins = [m for m in items if isinstance(m, Event) and m.name == "QueueCallerJoin"]
        assert [(m["Position"], m["Count"]) for m in joins] == [("1", "1"), ("2", "2"),
                                                               ("1", "3")]
        q = emu.queues.queues["nobody"]
        assert [w_.prio for w_ in q.callers] == [10, 0, 0]
