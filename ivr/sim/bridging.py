"""Bridges: create, enter, leave, destroy, with Asterisk's events."""

from __future__ import annotations

from collections.abc import Callable
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


def set_peers(pbx: Pbx, b: Bridge) -> None:
    if len(b.channels) + len(b.hidden) < 2:  # bridge.c set_bridge_peer_vars(): not alone
        return
    for ch in b.channels:
        others = ",".join(b.hidden + [o.name for o in b.channels if o is not ch])
        pbx.bus.varset(ch, "BRIDGEPEER", others)


def enter_bridge(pbx: Pbx, b: Bridge, ch: Channel, *, peers: bool = True) -> None:
    now = pbx.clock.wall()
    for member in b.channels:  # a CDR per pair, held by the older channel
        older, younger = (member, ch) if member.order < ch.order else (ch, member)
        older.cdr_pair(younger.name, now)
    b.channels.append(ch)
    ch.bridge = b
    pbx.bus.bridge("BridgeEnter", b, ch)
    if peers:
        set_peers(pbx, b)
    other = next((o.name for o in b.channels if o is not ch), "")
    pbx.bus.cel(ch, "BRIDGE_ENTER", ch.app, ch.appdata, peer=other)
    ch.mark("bridged")


def leave_bridge(pbx: Pbx, ch: Channel, moved: Callable[[], None] | None = None,
                 peer_var: bool = True) -> None:
    """``moved``: the channel leaves because it was sent elsewhere (its new location is
    published after BRIDGEPEER is cleared, before BridgeLeave: traces 02, 04).
    ``peer_var=False``: the caller cleared BRIDGEPEER already (ConfBridge)."""
    b = ch.bridge
    if b is None:
        return
    ch.bridge = None
    if ch in b.channels:
        b.channels.remove(ch)
    if not ch.hungup:
        ch.cdr_bridge_left()
    if peer_var and not b.peers_cleared:
        pbx.bus.varset(ch, "BRIDGEPEER", "")
    if moved is not None:
        moved()
    pbx.bus.cel(ch, "BRIDGE_EXIT", ch.app, ch.appdata)
    pbx.bus.bridge("BridgeLeave", b, ch)
    if b.type == "basic":
        # A two-party bridge dissolves when one side leaves.
        b.ended.set()
        for other in list(b.channels):
            other.bridge = None
            b.channels.remove(other)
            if not other.hungup:
                other.cdr_bridge_left()
            if not b.peers_cleared:
                pbx.bus.varset(other, "BRIDGEPEER", "")
            pbx.publish_redirect(other)  # a Redirect with ExtraChannel moves both
            pbx.bus.cel(other, "BRIDGE_EXIT", other.app, other.appdata)
            pbx.bus.bridge("BridgeLeave", b, other)
        pbx.bus.bridge("BridgeDestroy", b)
    elif b.channels:
        set_peers(pbx, b)
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
