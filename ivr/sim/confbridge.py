"""ConfBridge: conferences (softmix bridges), join/leave/kick, list."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ivr.asterisk.appargs import split_app_args
from ivr.sim.bridging import create_bridge, enter_bridge, leave_bridge
from ivr.sim.model import Bridge, Channel, ChannelHungUp

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx


@dataclass
class Conference:
    name: str
    bridge: Bridge
    start: float
    users: dict[str, tuple[Channel, asyncio.Event, float, bool]] = field(default_factory=dict)
    # name -> (channel, kicked, joined at, marked)
    muted: set[str] = field(default_factory=set)


class ConfBridges:
    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.conferences: dict[str, Conference] = {}
        self.user_profiles: dict[str, dict[str, str]] = {}

    async def app(self, pbx: Pbx, ch: Channel, data: str) -> None:
        a = split_app_args(data, max_args=4) + ["", "", ""]
        name = a[0].strip()
        profile = self.user_profiles.get(a[2].strip() or "default_user", {})
        marked = profile.get("marked", "no").lower() in ("yes", "true", "1")
        if ch.mixmonitor is not None:
            # a recorded channel's audiohook moves with it: its join comes after that of
            # a channel redirected with it (trace 12; without a recording, trace 02)
            for _ in range(8):
                await asyncio.sleep(0)
        conf = self.conferences.get(name)
        if conf is None:
            b = create_bridge(pbx, "confbridge", name=name, creator="ConfBridge")
            b.hidden.append(f"CBAnn/{name}-{pbx.ids.sequence()};2")  # the announcer
            conf = Conference(name, b, pbx.clock.wall())
            self.conferences[name] = conf
            pbx.bus.emit("ConfbridgeStart", "call", f"Conference: {name}\r\n" + b.block())
            pbx.bus.device_state(f"confbridge:{name}", "INUSE")
        kicked = asyncio.Event()
        conf.users[ch.name] = (ch, kicked, pbx.clock.wall(), marked)
        if ch.state.name != "UP":
            pbx.answer(ch)
        enter_bridge(pbx, conf.bridge, ch)
        pbx.bus.emit("ConfbridgeJoin", "call",
                     f"Conference: {name}\r\n" + conf.bridge.block() + ch.block()
                     + "Admin: No\r\nMuted: No\r\n")
        try:
            await ch.until(kicked)
        except ChannelHungUp:
            peer = ch.peer
            if peer is not None and peer.hungup and pbx.channels.get(peer.name) is peer:
                # Both halves of a Local pair hung up at once (AMI Hangup /regex/): the
                # other half, in a dialplan application, is gone before this one has
                # left the bridge, and its hang-up is queued on this one first (trace
                # 02 cap-14: HangupRequest, the other's Hangup, then BRIDGEPEER cleared)
                await peer.reached("hungup")
            # hung up: the channel leaves, then CONFBRIDGE_RESULT is set (trace 02)
            self._leave(conf, ch)
            pbx.set_var(ch, "CONFBRIDGE_RESULT", "HANGUP")
            raise
        except BaseException:  # redirected elsewhere, or the emulator is closing
            pbx.set_var(ch, "CONFBRIDGE_RESULT", "HANGUP")
            self._leave(conf, ch)
            raise
        # kicked: the result is set before the channel is pulled out
        pbx.set_var(ch, "CONFBRIDGE_RESULT", "KICKED")
        self._leave(conf, ch)

    def _leave(self, conf: Conference, ch: Channel) -> None:
        """BRIDGEPEER cleared, ConfbridgeLeave, BridgeLeave (the order of trace 02)."""
        pbx = self.pbx
        conf.users.pop(ch.name, None)
        conf.muted.discard(ch.name)
        pbx.bus.varset(ch, "BRIDGEPEER", "")
        pbx.bus.emit("ConfbridgeLeave", "call",
                     f"Conference: {conf.name}\r\n" + conf.bridge.block() + ch.block()
                     + "Admin: No\r\n")
        leave_bridge(pbx, ch, peer_var=False)
        if not conf.users:
            pbx.bus.device_state(f"confbridge:{conf.name}", "NOT_INUSE")
            for _ in conf.bridge.hidden:  # the announcer's two halves go away
                pbx.bus.device_state(f"CBAnn/{conf.name}", "UNKNOWN")
                pbx.bus.device_state(f"CBAnn/{conf.name}", "UNKNOWN")
            pbx.bus.emit("ConfbridgeEnd", "call",
                         f"Conference: {conf.name}\r\n" + conf.bridge.block())
            pbx.bus.bridge("BridgeDestroy", conf.bridge)
            self.conferences.pop(conf.name, None)

    def mute(self, name: str, channel: str, mute: bool) -> str | None:
        """ConfbridgeMute/Unmute (app_confbridge generic_mute_unmute_helper): ``channel``,
        ``all`` or ``participants``; a ConfbridgeMute/ConfbridgeUnmute event per user whose
        state changes.  An error message, or None."""
        conf = self.conferences.get(name)
        if conf is None:
            return "No Conference by that name found."
        hit = [ch for cname, (ch, _ev, _t, _m) in conf.users.items()
               if channel in ("all", "participants") or cname == channel]
        if not hit:
            return "No Channel by that name found in Conference."
        for ch in hit:
            if (ch.name in conf.muted) == mute:
                continue
            if mute:
                conf.muted.add(ch.name)
            else:
                conf.muted.discard(ch.name)
            self.pbx.bus.emit("ConfbridgeMute" if mute else "ConfbridgeUnmute", "call",
                              f"Conference: {name}\r\n" + conf.bridge.block() + ch.block()
                              + "Admin: No\r\n")
        return None

    def kick(self, name: str, channel: str) -> bool:
        conf = self.conferences.get(name)
        if conf is None:
            return False
        # kick_conference_participant: names compare without case, "all" and
        # "participants" (nobody here is an admin) too; a named channel is the only one
        hit = False
        wanted = channel.lower()
        for cname, (_ch, ev, _t, _m) in list(conf.users.items()):
            if ev.is_set():
                continue  # kicked already
            match = cname.lower() == wanted
            if match or wanted in ("all", "participants"):
                ev.set()
                hit = True
                if match:
                    break
        return hit
