"""Bridges: create, enter, leave, destroy, with Asterisk's events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ivr.sim.model import Bridge, Channel

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx


def create_bridge(pbx: Pbx, kind: str = "basic", name: str = "<unknown>",
                  creator: str = "<unknown>") -> Bridge:
    if kind == "basic":
        b = Bridge()
    else:
        b = Bridge(type="base", technology="softmix", creator=creator, name=name)
    pbx.bus.bridge("BridgeCreate", b)
    return b


def _peers(pbx: Pbx, b: Bridge) -> None:
    for ch in b.channels:
        others = ",".join(o.name for o in b.channels if o is not ch)
        pbx.bus.varset(ch, "BRIDGEPEER", others)


def enter_bridge(pbx: Pbx, b: Bridge, ch: Channel, *, peers: bool = True) -> None:
    b.channels.append(ch)
    ch.bridge = b
    pbx.bus.bridge("BridgeEnter", b, ch)
    if peers:
        _peers(pbx, b)
    other = next((o.name for o in b.channels if o is not ch), "")
    pbx.bus.cel(ch, "BRIDGE_ENTER", ch.app, ch.appdata, peer=other)
    ch.mark("bridged")


def leave_bridge(pbx: Pbx, ch: Channel) -> None:
    b = ch.bridge
    if b is None:
        return
    ch.bridge = None
    if ch in b.channels:
        b.channels.remove(ch)
    pbx.bus.varset(ch, "BRIDGEPEER", "")
    pbx.bus.cel(ch, "BRIDGE_EXIT", ch.app, ch.appdata)
    pbx.bus.bridge("BridgeLeave", b, ch)
    if b.type == "basic":
        # A two-party bridge dissolves when one side leaves.
        b.ended.set()
        for other in list(b.channels):
            other.bridge = None
            b.channels.remove(other)
            pbx.bus.varset(other, "BRIDGEPEER", "")
            pbx.bus.cel(other, "BRIDGE_EXIT", other.app, other.appdata)
            pbx.bus.bridge("BridgeLeave", b, other)
        pbx.bus.bridge("BridgeDestroy", b)
    elif b.channels:
        _peers(pbx, b)
    else:
        b.ended.set()


def swap(pbx: Pbx, b: Bridge, old: Channel, new: Channel) -> None:
    """``new`` takes ``old``'s place in ``b`` (attended transfer); ``old`` is left out."""
    if old in b.channels:
        b.channels.remove(old)
    old.bridge = None
    pbx.bus.varset(old, "BRIDGEPEER", "")
    pbx.bus.cel(old, "BRIDGE_EXIT", old.app, old.appdata)
    pbx.bus.bridge("BridgeLeave", b, old)
    enter_bridge(pbx, b, new)
