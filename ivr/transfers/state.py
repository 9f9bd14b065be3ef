"""The transfers in progress and what the AMI stream says of them (pure: no I/O, no clock).

A blind transfer (``BlindTransfer`` or ``Redirect``) is over when Asterisk answers the
action.  An attended one (``Atxfer`` on the agent's leg, features.conf semantics, traces
09 and 02) is followed here, event by event:

* the target's Local pair appears (``Newchannel`` ``Local/<n>@<context>-…``, the call's
  Linkedid) and rings (``Newstate Ringing`` of its ``;1``);
* **answered**: the agent's leg enters another bridge (the consultation);
* **completed**: ``AttendedTransfer`` names the agent's leg as transferer, or the target
  enters the call's bridge (the agent hung up / completed with the target on the line);
* **returned**: the agent's leg is taken off hold (``Unhold``) after the consultation
  (the target declined and hung up, or the agent cancelled);
* **failed**: ``Unhold`` before the target answered (busy — cause 17 —, no answer,
  rejected, unavailable), the caller hung up, or the agent hung up before the answer.

A blind transfer through the hotline's route (``Route``: the caller's channel redirected
into the rendered ``[ivr-route]`` at ``transfer``, which dials the target with a timeout
and, when it does not answer, puts the caller back into a queue) is followed on the
caller's channel: ``DialBegin`` (ringing), ``DialEnd`` ``ANSWER`` (completed), another
``DialEnd`` then ``QueueCallerJoin`` (failed, the caller back in the fallback queue).

The caller keeps the call: the target's legs carry the call's Linkedid, so every event of
the transfer is the same ticket's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.ami.messages import Event
from ivr.transfers.targets import DialTarget

OUTCOMES = ("completed", "returned", "failed")

# Hangup causes of a target that never answered → the failure's reason
_DIAL_STATUS = {"BUSY": "busy", "NOANSWER": "no_answer", "CANCEL": "no_answer",
                "CHANUNAVAIL": "unavailable", "CONGESTION": "unavailable"}
_UNANSWERED = {17: "busy", 21: "rejected", 18: "no_answer", 19: "no_answer",
               1: "unavailable", 3: "unavailable", 20: "unavailable", 27: "unavailable",
               34: "unavailable", 38: "unavailable", 41: "unavailable", 42: "unavailable"}


@dataclass(slots=True)
class Transfer:
    id: str
    call_id: str
    kind: str  # blind, attended, one_key
    method: str  # BlindTransfer, Redirect, Atxfer
    ref: str  # the target as the agent gave it
    target: DialTarget
    agent: str | None  # the queue member (MemberName)
    agent_uid: str
    agent_channel: str
    caller_uid: str
    caller_channel: str
    bridge: str  # the call's bridge (caller and agent)
    requested_at: float
    auto_complete: bool = False  # one-key: completes when the target answers
    phase: str = "requested"  # requested, ringing, answered, done
    target_uids: set[str] = field(default_factory=set)
    target_channel: str | None = None
    target_cause: int | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    cancelled: bool = False
    completing: bool = False
    dial_status: str | None = None  # Route: the DialEnd status of the target's leg
    fallback_queue: str | None = None  # Route: where the caller goes if it fails
    outcome: str | None = None
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def data(self) -> dict[str, str | int | float | bool | None]:
        """The fields every call event of this transfer carries."""
        return {"transfer_id": self.id, "kind": self.kind, "method": self.method,
                "target": self.ref, "number": self.target.number,
                "context": self.target.context, "entry": self.target.id,
                "label": self.target.label if self.target.entry is not None else None,
                "target_kind": self.target.kind,
                "agent": self.agent, "agent_channel": self.agent_channel,
                **({"fallback_queue": self.fallback_queue} if self.fallback_queue else {})}


@dataclass(frozen=True, slots=True)
class Change:
    transfer: Transfer
    what: str  # ringing, answered, completed, returned, failed


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


class Transfers:
    """The attended transfers in progress, by call and by the channels they watch."""

    __slots__ = ("by_call", "_by_uid")

    def __init__(self) -> None:
        self.by_call: dict[str, Transfer] = {}
        self._by_uid: dict[str, Transfer] = {}

    def active(self, call_id: str) -> Transfer | None:
        return self.by_call.get(call_id)

    def __len__(self) -> int:
        return len(self.by_call)

    def add(self, t: Transfer) -> None:
        self.by_call[t.call_id] = t
        # a Route transfer releases the agent's leg by design: only the caller is followed
        for uid in (t.caller_uid,) if t.method == "Route" else (t.agent_uid, t.caller_uid):
            self._by_uid[uid] = t

    def finish(self, t: Transfer, outcome: str, reason: str | None) -> Change:
        """``t`` is over (``outcome`` of :data:`OUTCOMES`): out of the indexes."""
        t.outcome, t.reason, t.phase = outcome, reason, "done"
        if self.by_call.get(t.call_id) is t:
            del self.by_call[t.call_id]
        for uid in (t.agent_uid, t.caller_uid, *t.target_uids):
            if self._by_uid.get(uid) is t:
                del self._by_uid[uid]
        return Change(t, outcome)

    # -- AMI events, in wire order -----------------------------------------------------

    def feed(self, ev: Event, now: float) -> list[Change]:
        if not self.by_call:
            return []
        name = ev.name
        if name == "Newchannel":
            return self._newchannel(ev)
        if name == "AttendedTransfer":
            return self._attended(ev)
        t = self._by_uid.get(ev.get("Uniqueid") or "")
        if t is None:
            return []
        uid = ev.get("Uniqueid") or ""
        if t.method == "Route":
            return self._route(t, uid, ev, now)
        if name == "Newstate":
            if (uid in t.target_uids and t.phase == "requested"
                    and (ev.get("ChannelStateDesc") or "") in ("Ringing", "Up")):
                t.phase, t.ringing_at = "ringing", now
                return [Change(t, "ringing")]
        elif name == "BridgeEnter":
            bridge = ev.get("BridgeUniqueid") or ""
            if uid == t.agent_uid and bridge != t.bridge and t.phase in ("requested",
                                                                          "ringing"):
                if t.ringing_at is None:
                    t.ringing_at = now
                t.phase, t.answered_at = "answered", now
                return [Change(t, "answered")]
            if uid in t.target_uids and bridge == t.bridge:
                return [self.finish(t, "completed", None)]
        elif name == "Unhold":
            if uid == t.agent_uid:
                if t.phase == "answered":
                    return [self.finish(t, "returned", "cancelled" if t.cancelled
                                        else "target_hangup")]
                reason = ("cancelled" if t.cancelled else
                          _UNANSWERED.get(t.target_cause or 0, "no_answer")
                          if t.target_uids else "invalid")
                return [self.finish(t, "failed", reason)]
        elif name == "Hangup":
            return self._hangup(t, uid, ev)
        return []

    def _route(self, t: Transfer, uid: str, ev: Event, now: float) -> list[Change]:
        """A Route transfer, on the caller's channel."""
        name = ev.name
        if uid != t.caller_uid:
            return []
        if name == "DialBegin" and t.phase == "requested":
            t.target_channel = ev.get("DestChannel") or None
            t.target_uids.add(ev.get("DestUniqueid") or "")
            t.phase, t.ringing_at = "ringing", now
            return [Change(t, "ringing")]
        if name == "DialEnd" and t.phase == "ringing":
            status = ev.get("DialStatus") or ""
            if status == "ANSWER":
                t.answered_at = now
                return [self.finish(t, "completed", None)]
            t.dial_status = status
        elif name == "QueueCallerJoin" and t.dial_status is not None:
            return [self.finish(t, "failed", _DIAL_STATUS.get(t.dial_status, "no_answer"))]
        elif name == "Hangup":
            return [self.finish(t, "failed", "caller_hangup")]
        return []

    def _newchannel(self, ev: Event) -> list[Change]:
        t = self.by_call.get(ev.get("Linkedid") or "")
        if t is None or t.method == "Route" or t.phase not in ("requested", "ringing") \
                or t.target_channel is not None and len(t.target_uids) >= 2:
            return []
        chan = ev.get("Channel") or ""
        if not chan.startswith(f"Local/{t.target.number}@{t.target.context}-"):
            return []
        uid = ev.get("Uniqueid") or ""
        t.target_uids.add(uid)
        self._by_uid[uid] = t
        if chan.endswith(";1"):
            t.target_channel = chan
        return []

    def _attended(self, ev: Event) -> list[Change]:
        t = self._by_uid.get(ev.get("OrigTransfererUniqueid") or "")
        if t is None or t.done:
            return []
        if (ev.get("Result") or "") == "Success":
            return [self.finish(t, "completed", None)]
        return [self.finish(t, "failed", "refused")]

    def _hangup(self, t: Transfer, uid: str, ev: Event) -> list[Change]:
        cause = _int(ev.get("Cause"))
        if uid in t.target_uids:
            if t.target_cause in (None, 0, 16) and cause:
                t.target_cause = cause  # the most telling cause of the pair (busy: 17)
            return []
        if uid == t.caller_uid:
            return [self.finish(t, "failed", "caller_hangup")]
        if uid == t.agent_uid and t.phase != "answered":
            return [self.finish(t, "failed", "agent_hangup")]
        return []  # the agent left the consultation: the transfer completes (next events)

    def forget_missing(self, live: set[str]) -> list[Change]:
        """After a resync: transfers whose caller or agent leg is no longer live failed."""
        return [self.finish(t, "failed", "lost") for t in list(self.by_call.values())
                if t.caller_uid not in live or (t.agent_uid not in live and t.method != "Route"
                                               and t.phase != "answered")]
