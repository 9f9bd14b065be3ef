"""The pure state of three-way calls (ivr/threeway/state.py) on hand-made AMI events:
a leg found by its IVR_TW_LEG on both halves, answered when it joins, failed for the
most telling cause once both halves went, the caller leaving ends everything, the agent
leaving leaves the caller with the party, a caller alone is let go, late legs hung up."""

from __future__ import annotations

from ivr.ami.messages import Event
from ivr.threeway.state import Effect, Leg, Party, Session, ThreeWays, failure_reason

CALL = "100.1"


def ev(name: str, **headers: str) -> Event:
    return Event({"Event": name, **headers})


def session(ways: ThreeWays) -> Session:
    s = Session(CALL, CALL, Party("caller", "SIP/pstn-1", "100.1"),
                Party("agent", "Local/1001@agent-local-1;1", "100.2"), agent_name="Agent 1001")
    ways.open(s)
    return s


def leg(s: Session, number: str = "2001", department: str | None = "market") -> Leg:
    lg = Leg(s.new_leg_id(), department, "department", number, "Market", department,
             {"fallback_kind": "queue", "fallback": "consumer"})
    s.legs[lg.id] = lg
    return lg


def halves(ways: ThreeWays, lg: Leg, uid1: str = "200.1", uid2: str = "200.2") -> None:
    for uid, half in ((uid1, ";1"), (uid2, ";2")):
        assert ways.feed(ev("VarSet", Channel=f"Local/2001@ivr-threeway-leg-1{half}",
                            Uniqueid=uid, Variable="IVR_TW_LEG", Value=f"{CALL}/{lg.id}")) == []


def kinds(effects: list[Effect]) -> list[str]:
    return [e.type if e.kind == "emit" else e.kind for e in effects]


def join(uid: str, channel: str) -> Event:
    return ev("ConfbridgeJoin", Conference=CALL, Uniqueid=uid, Channel=channel)


def test_answered_then_agent_leaves_then_caller_hangs_up() -> None:
    ways = ThreeWays()
    s = session(ways)
    assert ways.feed(join("100.1", "SIP/pstn-1")) == []
    assert ways.feed(join("100.2", "Local/1001@agent-local-1;1")) == []
    lg = leg(s)
    halves(ways, lg)
    out = ways.feed(join("200.1", "Local/2001@ivr-threeway-leg-1;1"))
    assert kinds(out) == ["threeway.answered", "settle"]
    assert out[0].routing == {"department": "market"} and lg.state == "up"
    assert s.names() == ["caller", "agent", "leg-1"] and s.parties() == 3
    out = ways.feed(ev("ConfbridgeLeave", Conference=CALL, Uniqueid="100.2"))
    assert kinds(out) == ["threeway.agent_left"]  # the department stays with the caller
    out = ways.feed(ev("Hangup", Uniqueid="100.1", Cause="16"))
    assert kinds(out) == ["end"] and out[0].channel == CALL
    assert ways.feed(ev("ConfbridgeEnd", Conference=CALL)) == []
    assert CALL not in ways.sessions


def test_busy_once_both_halves_went() -> None:
    ways = ThreeWays()
    s = session(ways)
    lg = leg(s, "110", None)
    halves(ways, lg)
    assert ways.feed(ev("Hangup", Uniqueid="200.1", Cause="16")) == []  # one half: wait
    out = ways.feed(ev("Hangup", Uniqueid="200.2", Cause="17"))
    assert kinds(out) == ["threeway.failed", "settle"]
    assert out[0].data["reason"] == "busy" and out[0].data["fallback"] == "consumer"
    assert s.ringing() is None and CALL in ways.sessions  # caller and agent together


def test_reasons_from_causes() -> None:
    assert failure_reason(["16", "17"]) == "busy"
    assert failure_reason(["19", "16"]) == "no-answer"
    assert failure_reason(["34"]) == "congestion"
    assert failure_reason(["0"]) == "failed"


def test_caller_hangs_up_while_the_leg_rings() -> None:
    ways = ThreeWays()
    s = session(ways)
    lg = leg(s)
    halves(ways, lg)
    out = ways.feed(ev("Hangup", Uniqueid="100.1", Cause="16"))
    assert kinds(out) == ["hangup", "hangup", "threeway.failed", "settle", "end"]
    assert out[2].data["reason"] == "caller-gone"
    # the leg answers late: it is hung up, not let into the conference
    late = ways.feed(join("200.1", "Local/2001@ivr-threeway-leg-1;1"))
    assert kinds(late) == ["hangup"]


def test_the_caller_alone_is_let_go() -> None:
    ways = ThreeWays()
    s = session(ways)
    lg = leg(s)
    halves(ways, lg)
    ways.feed(join("200.1", "Local/2001@ivr-threeway-leg-1;1"))
    assert kinds(ways.feed(ev("Hangup", Uniqueid="100.2", Cause="16"))) == [
        "threeway.agent_left"]
    out = ways.feed(ev("ConfbridgeLeave", Conference=CALL, Uniqueid="200.1"))
    assert kinds(out) == ["threeway.hungup", "end"]


def test_unknown_events_change_nothing() -> None:
    ways = ThreeWays()
    session(ways)
    assert ways.feed(ev("VarSet", Uniqueid="9.9", Variable="IVR_TW_LEG",
                        Value="other.1/leg-1")) == []
    assert ways.feed(join("9.9", "SIP/x-1")) == []
    assert ways.feed(ev("ConfbridgeJoin", Conference="elsewhere", Uniqueid="100.1")) == []
    assert ways.feed(ev("Hangup", Uniqueid="9.9")) == []
