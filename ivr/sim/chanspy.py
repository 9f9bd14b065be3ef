"""ChanSpy(): a supervisor listens to (``w``: whispers to, ``B``: barges in on) a channel.

As trace 13 shows Asterisk 20 doing it (apps/app_chanspy.c): the spy answers, finds the
first channel whose name starts with the given prefix, publishes ``ChanSpyStart`` (spyer
and spyee snapshots) and attaches its audiohook to the spyee, which makes the spyee's
bridge reconfigure (``BRIDGEPEER`` set again on its channels).  When the spy ends (the
spyer hangs up, or with ``E`` the spyee does), the spy audiohook is detached (the bridge
reconfigures), ``ChanSpyStop`` is published, and with ``w``/``B`` the whisper audiohook is
detached too (a second reconfiguration).  No audio is modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ivr.asterisk.appargs import split_app_args
from ivr.sim.bridging import set_peers
from ivr.sim.mixmonitor import parse_options
from ivr.sim.model import Channel, State, wait_any

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx


def _reconfigure(pbx: Pbx, spyee: Channel) -> None:
    if spyee.bridge is not None and not spyee.hungup:
        set_peers(pbx, spyee.bridge)


def _find(pbx: Pbx, spyer: Channel, prefix: str) -> Channel | None:
    """The first live channel (by name) that starts with ``prefix``, not the spyer nor
    its own Local half."""
    low = prefix.lower()
    for name in sorted(pbx.channels):
        c = pbx.channels[name]
        if (c is not spyer and c is not spyer.peer and not c.hungup
                and name.lower().startswith(low)):
            return c
    return None


async def chanspy_app(pbx: Pbx, ch: Channel, data: str) -> None:
    a = split_app_args(data, max_args=2) + [""]
    prefix, opts = a[0].strip(), parse_options(a[1].strip())
    if ch.state != State.UP:
        pbx.answer(ch)
    while True:
        spyee = _find(pbx, ch, prefix) if prefix else None
        if spyee is not None:
            break
        if "S" in opts:  # no channel to spy on: stop
            return
        await ch.sleep(1.0)  # ChanSpy scans again
    pbx.bus.emit("ChanSpyStart", "call", ch.block("Spyer") + spyee.block("Spyee"))
    _reconfigure(pbx, spyee)
    try:
        await wait_any([ch.signal("hungup"), spyee.signal("hungup"), ch.wake], None,
                       pbx.clock)
        ch.check()
    finally:
        _reconfigure(pbx, spyee)
        pbx.bus.emit("ChanSpyStop", "call", ch.block("Spyer") + spyee.block("Spyee"))
        if "w" in opts or "B" in opts:
            _reconfigure(pbx, spyee)
