"""AMI event frames, built cheaply and written once to every subscribed client.

Header names and their order per event type are those of the recorded Asterisk 20
traces (``tests/test_sim_conformance.py`` checks them).  A frame is assembled from
cached text blocks (a channel's snapshot lines, a bridge's lines), encoded to bytes
once, and handed to every session whose event mask wants its class.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ivr.sim.model import Bridge, Channel, clean


class Subscriber(Protocol):
    def wants(self, category: str) -> bool: ...

    def send(self, data: bytes) -> None: ...


class _TimeText:
    """Formatted times, recomputed at most once per second."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._sec = -1
        self._text = ""

    def cel(self) -> str:
        now = int(self._wall())
        if now != self._sec:
            self._sec = now
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        return self._text


_CACHABLE = ("Queue:", "confbridge:")


class EventBus:
    def __init__(self, wall: Callable[[], float] = time.time, *, cel: bool = True,
                 cdr: bool = True) -> None:
        self.subscribers: list[Subscriber] = []
        self.cel_enabled = cel
        self.cdr_enabled = cdr
        self.count = 0
        self.bytes = 0
        self.times = _TimeText(wall)
        self.wall = wall
        self.tap: list[Callable[[str, str], None]] = []  # (event name, body) observers
        # manager.conf [general] timestampevents: a Timestamp header after Privilege
        self.timestamps = False
        # (device, state) observers, e.g. app_queue's device-state subscription
        self.device_listeners: list[Callable[[str, str], None]] = []
        # the last state published of each cachable device (app_queue's Queue:…,
        # app_confbridge's confbridge:…): ast_publish_device_state_full() does not
        # publish a cachable state that equals the cached one
        self.device_cache: dict[str, str] = {}

    # -- core ----------------------------------------------------------------------

    def emit(self, name: str, category: str, body: str) -> None:
        """Send ``Event: name`` / ``Privilege: category,all`` + body to subscribers."""
        self.count += 1
        if self.tap:
            for t in self.tap:
                t(name, body)
        subs = self.subscribers
        if not subs:
            return
        data: bytes | None = None
        for s in subs:
            if s.wants(category):
                if data is None:
                    stamp = f"Timestamp: {self.wall():.6f}\r\n" if self.timestamps else ""
                    data = (f"Event: {name}\r\nPrivilege: {category},all\r\n{stamp}"
                            f"{body}\r\n").encode()
                    self.bytes += len(data)
                s.send(data)

    # -- channel events ------------------------------------------------------------

    def chan(self, name: str, category: str, ch: Channel, extra: str = "") -> None:
        self.emit(name, category, ch.block() + extra)

    def two(self, name: str, category: str, ch: Channel, dest: Channel, extra: str = "") -> None:
        self.emit(name, category, ch.block() + dest.block("Dest") + extra)

    def dest_only(self, name: str, dest: Channel, extra: str) -> None:
        self.emit(name, "call", dest.block("Dest") + extra)

    def newchannel(self, ch: Channel) -> None:
        self.chan("Newchannel", "call", ch)

    def newstate(self, ch: Channel) -> None:
        # manager_channels.c runs its snapshot monitors in order: state, then exten
        self.chan("Newstate", "call", ch)
        self.newexten_if_moved(ch)

    def newexten(self, ch: Channel, app: str, data: str) -> None:
        ch.cep_published = (ch.context, ch.exten, ch.priority)
        if ch.cdr_open is None:
            ch.cdr_dialplan(self.wall())
        self.chan("Newexten", "dialplan", ch,
                  f"Extension: {ch.exten}\r\nApplication: {app}\r\nAppData: {clean(data)}\r\n")

    def newexten_if_moved(self, ch: Channel) -> None:
        """A snapshot publish: Newexten (with the current application) if the location
        changed since the last one, and the snapshot has an application."""
        if ch.app and ch.cep_published != (ch.context, ch.exten, ch.priority):
            self.newexten(ch, ch.app, ch.appdata)

    def varset(self, ch: Channel | None, var: str, value: str) -> None:
        if ch is None:
            self.emit("VarSet", "dialplan",
                      f"Channel: none\r\nUniqueid: none\r\nVariable: {var}\r\n"
                      f"Value: {clean(value)}\r\n")
        else:
            self.emit("VarSet", "dialplan",
                      f"{ch.block()}Variable: {var}\r\nValue: {clean(value)}\r\n")

    def varset_clean(self, ch: Channel, var: str, value: str) -> None:
        """:meth:`varset` of a channel variable whose value has no CR/LF."""
        self.emit("VarSet", "dialplan", f"{ch.block()}Variable: {var}\r\nValue: {value}\r\n")

    def newcallerid(self, ch: Channel) -> None:
        self.chan("NewCallerid", "call", ch,
                  "CID-CallingPres: 0 (Presentation Allowed, Not Screened)\r\n")

    def newconnectedline(self, ch: Channel) -> None:
        self.chan("NewConnectedLine", "call", ch)

    def hangup_request(self, ch: Channel, cause: int | None = None, soft: bool = False) -> None:
        name = "SoftHangupRequest" if soft else "HangupRequest"
        extra = f"Cause: {cause}\r\n" if cause is not None else ""
        self.chan(name, "call", ch, extra)

    def hangup(self, ch: Channel, cause: int = 16, text: str = "Normal Clearing") -> None:
        self.chan("Hangup", "call", ch, f"Cause: {cause}\r\nCause-txt: {text}\r\n")

    def device_state(self, device: str, state: str) -> None:
        """``DeviceStateChange`` (and the device-state subscribers).  A cachable device
        (``Queue:``, ``confbridge:``) publishes only a change; a Local channel's device
        (``AST_FLAG_DISABLE_DEVSTATE_CACHE``) publishes every time (traces 02, 07)."""
        if device.startswith(_CACHABLE):
            if self.device_cache.get(device) == state:
                return
            self.device_cache[device] = state
        self.emit("DeviceStateChange", "call", f"Device: {device}\r\nState: {state}\r\n")
        for listener in self.device_listeners:
            listener(device, state)

    def dtmf(self, ch: Channel, digit: str, duration_ms: int, begin: bool) -> None:
        if begin:
            self.chan("DTMFBegin", "dtmf", ch, f"Digit: {digit}\r\nDirection: Received\r\n")
        else:
            self.chan("DTMFEnd", "dtmf", ch,
                      f"Digit: {digit}\r\nDurationMs: {duration_ms}\r\nDirection: Received\r\n")

    def local_bridge(self, one: Channel, two: Channel, context: str, exten: str) -> None:
        self.emit("LocalBridge", "call",
                  one.block("LocalOne") + two.block("LocalTwo")
                  + f"Context: {context}\r\nExten: {exten}\r\nLocalOptimization: Yes\r\n")

    # -- bridges -------------------------------------------------------------------

    def bridge(self, name: str, b: Bridge, ch: Channel | None = None, extra: str = "") -> None:
        self.emit(name, "call", b.block() + (ch.block() if ch is not None else "") + extra)

    # -- CEL / CDR -----------------------------------------------------------------

    def cel(self, ch: Channel, event: str, app: str = "", appdata: str = "",
            peer: str = "", extra: str = "", ani: bool = False) -> None:
        if not self.cel_enabled:
            return
        num = "" if ch.cid_num == "<unknown>" else ch.cid_num
        name = "" if ch.cid_name == "<unknown>" else ch.cid_name
        self.emit(
            "CEL", "call",
            f"EventName: {event}\r\nAccountCode: {ch.accountcode}\r\nCallerIDnum: {num}\r\n"
            f"CallerIDname: {name}\r\nCallerIDani: {num if ani else ''}\r\nCallerIDrdnis: \r\n"
            f"CallerIDdnid: \r\nExten: {ch.exten}\r\nContext: {ch.context}\r\n"
            f"Channel: {ch.name}\r\nApplication: {app}\r\nAppData: {clean(appdata)}\r\n"
            f"EventTime: {self.times.cel()}\r\nAMAFlags: DOCUMENTATION\r\n"
            f"UniqueID: {ch.uniqueid}\r\nLinkedID: {ch.linkedid}\r\nUserfield: \r\n"
            f"Peer: {peer}\r\nPeerAccount: \r\nExtra: {extra}\r\n",
        )

    def cdr(self, ch: Channel, dest: str, last_app: str, last_data: str, start: float,
            answer: float | None, end: float, disposition: str) -> None:
        if not self.cdr_enabled:
            return
        def fmt(t: float | None) -> str:
            return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
        num = "" if ch.cid_num == "<unknown>" else ch.cid_num
        cid = f'"{ch.cid_name}" <{num}>' if ch.cid_name != "<unknown>" else num
        billable = 0 if answer is None else int(end - answer)
        self.emit(
            "Cdr", "cdr",
            f"AccountCode: {ch.accountcode}\r\nSource: {num}\r\nDestination: {ch.exten}\r\n"
            f"DestinationContext: {ch.context}\r\nCallerID: {cid}\r\nChannel: {ch.name}\r\n"
            f"DestinationChannel: {dest}\r\nLastApplication: {last_app}\r\n"
            f"LastData: {clean(last_data)}\r\nStartTime: {fmt(start)}\r\n"
            f"AnswerTime: {fmt(answer)}\r\nEndTime: {fmt(end)}\r\n"
            f"Duration: {int(end - start)}\r\nBillableSeconds: {billable}\r\n"
            f"Disposition: {disposition}\r\nAMAFlags: DOCUMENTATION\r\n"
            f"UniqueID: {ch.uniqueid}\r\nUserField: \r\n",
        )
