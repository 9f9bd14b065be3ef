"""The pure queue/agent state, fed the recorded Asterisk 20 traffic (traces 03 and 11)
in wire order: checked after each step."""

from __future__ import annotations

from collections.abc import Iterator

from ivr.agents.state import QueueState
from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event, EventList, Response

from .conftest import TRACES

NOW = 1796521080.0  # just after trace 11 was recorded (LastCall 1796521079)


def items(scenario: str) -> Iterator[Event | EventList | Response]:
    raw = (TRACES / scenario / "ami.server.raw").read_bytes()
    for item in AMIParser().feed(raw):
        if isinstance(item, (Event, EventList, Response)):
            yield item


def replay(scenario: str) -> Iterator[tuple[str, QueueState]]:
    """Feed the trace; yield (ActionID, state) after each reply and what followed it
    up to the next reply — i.e. once per client action."""
    state = QueueState()
    step = None
    for item in items(scenario):
        if isinstance(item, (Response, EventList)):
            if step is not None:
                yield step, state
            step = item.action_id if isinstance(item, Response) else item.response.action_id
            if isinstance(item, EventList) and item.events and \
                    item.events[0].name == "QueueParams":
                state.begin_resync()
                state.apply_status(item.events, NOW)
        else:
            state.apply(item, NOW)
    if step is not None:
        yield step, state


def test_trace_03_member_added_paused_penalty_removed() -> None:
    seen: dict[str, tuple[object, ...]] = {}
    for step, state in replay("03-queue-members"):
        m = state.member("hotline", "SIP/agent1002")
        seen[step] = (None if m is None else
                      (m.name, m.penalty, m.paused, m.paused_reason, m.membership,
                       m.state(NOW)))
        if step == "cap-8":  # the QueueStatus list: the static member too
            assert state.ready
            static = state.member("hotline", "Local/1001@agent-local/n")
            assert static is not None and static.membership == "static"
            assert static.state_interface == "Local/1001@agent-local"
            assert static.calls_taken == 1 and static.name == "Agent 1001"
            assert state.queues["hotline"].strategy == "rrmemory"
            assert state.queues["hotline"].completed == 1
    assert seen["cap-2"] == ("王芳 1002", 1, False, "", "dynamic", "available")
    assert seen["cap-3"] == seen["cap-2"]  # "Already there": nothing changed
    assert seen["cap-4"] == ("王芳 1002", 1, True, "wrap-up", "dynamic", "paused")
    assert seen["cap-5"] == ("王芳 1002", 1, False, "", "dynamic", "available")
    assert seen["cap-6"][:2] == ("王芳 1002", 3)
    assert seen["cap-8"] == ("王芳 1002", 3, False, "", "dynamic", "available")
    assert seen["cap-11"] is None  # QueueMemberRemoved
    assert seen["cap-12"] is None and seen["cap-13"] is None  # errors change nothing
    assert set(state.queues) == {"hotline"}  # the refused nosuchqueue did not appear


def test_trace_11_pause_reasons_waiting_caller_and_the_call() -> None:
    by_step: dict[str, dict[str, object]] = {}
    for step, state in replay("11-agent-pause-and-states"):
        li = state.member("english", "Local/1001@agent-local/n")
        a2 = state.member("english", "Local/1002@agent-local/n")
        q = state.queues.get("english")
        by_step[step] = {
            "li": None if li is None else (li.name, li.state(NOW), li.paused_reason),
            "a2": None if a2 is None else (a2.state(NOW), a2.paused_reason, a2.in_call),
            "waiting": None if q is None else [(c.number, c.name, c.position)
                                               for c in q.waiting()],
            "offerable": [m.interface for m in state.offerable("english", NOW)],
            "hotline_1001": (None if (h := state.member("hotline",
                                                        "Local/1001@agent-local/n")) is None
                             else (h.state(NOW), h.paused_reason)),
        }
    # cap-2: 坐席1001 李华 logs in (Chinese display name)
    assert by_step["cap-2"]["li"] == ("坐席1001 李华", "available", "")
    # cap-3: Agent 1002 paused for lunch (an event about a member not known yet)
    assert by_step["cap-3"]["a2"] == ("paused", "午休 lunch", False)
    # cap-4: paused without a queue: paused in every queue it is in
    assert by_step["cap-4"]["li"] == ("坐席1001 李华", "paused", "培训 training")
    assert by_step["cap-4"]["hotline_1001"] == ("paused", "培训 training")
    # cap-5: QueueStatus: everyone in english paused, nobody can be offered a call
    assert by_step["cap-5"]["offerable"] == []
    # cap-6 (Originate): 钱七 joins english and waits
    assert by_step["cap-6"]["waiting"] == [("13600136000", "钱七", 1)]
    assert by_step["cap-7"]["waiting"] == [("13600136000", "钱七", 1)]  # the list agrees
    # cap-8: unpause 1002 → offered the call, connected; the caller left the queue
    assert by_step["cap-8"]["a2"] == ("in_call", "", True)
    assert by_step["cap-8"]["waiting"] == []
    assert by_step["cap-9"]["a2"] == ("in_call", "", True)
    # cap-10: the call completed, 1002 available again (no wrap-up configured)
    assert by_step["cap-10"]["a2"] == ("available", "", False)
    assert by_step["cap-10"]["offerable"] == ["Local/1002@agent-local/n"]
    # cap-11: 李华 logged out
    assert by_step["cap-11"]["li"] is None


def test_wrapup_from_last_call_and_the_queue_setting() -> None:
    state = QueueState(wrapup={"english": 30})
    for item in items("11-agent-pause-and-states"):
        if isinstance(item, Event):
            state.apply(item, NOW)
    a2 = state.member("english", "Local/1002@agent-local/n")
    assert a2 is not None and a2.last_call == 1796521079
    assert a2.state(1796521079 + 29, 30) == "wrapup"
    assert state.offerable("english", 1796521079 + 29) == []
    assert a2.state(1796521079 + 30, 30) == "available"
    assert state.summary("english", 1796521079 + 10)["agents_by_state"]["wrapup"] == 1


def test_events_during_a_resync_win_over_the_list() -> None:
    """The AMI client may run the handlers of events that followed QueueStatusComplete
    before the resync applies the list: those members keep what the events said."""
    evs = list(items("11-agent-pause-and-states"))
    status = next(i for i in evs if isinstance(i, EventList)
                  and i.response.action_id == "cap-5")  # both english members paused
    unpause = next(i for i in evs if isinstance(i, Event) and i.name == "QueueMemberPause"
                   and i.get("Paused") == "0")  # cap-8: 1002 unpaused
    removed = next(i for i in evs if isinstance(i, Event) and i.name == "QueueMemberRemoved")
    state = QueueState()
    state.begin_resync()
    state.apply(unpause, NOW)
    state.apply(removed, NOW)  # 李华 logged out after the list was made
    state.apply_status(status.events, NOW)
    a2 = state.member("english", "Local/1002@agent-local/n")
    assert a2 is not None and not a2.paused
    assert state.member("english", "Local/1001@agent-local/n") is None
    # without a resync in flight the list decides
    state.begin_resync()
    state.apply_status(status.events, NOW)
    a2 = state.member("english", "Local/1002@agent-local/n")
    assert a2 is not None and a2.paused and a2.paused_reason == "午休 lunch"
    assert state.member("english", "Local/1001@agent-local/n") is not None


def test_resync_drops_what_asterisk_no_longer_lists() -> None:
    evs = list(items("11-agent-pause-and-states"))
    waiting = next(i for i in evs if isinstance(i, EventList)
                   and i.response.action_id == "cap-7")  # 钱七 waiting
    after = next(i for i in evs if isinstance(i, EventList)
                 and i.response.action_id == "cap-9")  # nobody waiting
    state = QueueState()
    state.begin_resync()
    state.apply_status(waiting.events, NOW)
    caller = state.queues["english"].callers["1796521070.17"]
    assert caller.joined_at == NOW - 4 and caller.name == "钱七"  # Wait: 4
    state.begin_resync()
    state.apply_status(after.events, NOW)
    assert state.queues["english"].callers == {}
    snap = state.snapshot(NOW)
    assert snap["ready"] and [q["queue"] for q in snap["queues"]] == ["english"]
    assert snap["queues"][0]["agents_by_state"]["in_call"] == 1


def test_trace_07_a_caller_who_abandons_is_offered_to_nobody() -> None:
    """Trace 07's queue ``nobody`` as the bridge sees it after a resync (its QueueStatus
    list), then the caller's join and the ring (AgentCalled) and her abandon: the member
    rung for her is offered to nobody once she is gone, and the queue's offer index
    (caller -> members rung) empties with it."""
    events = list(items("07-queue-abandon"))
    (status,) = [e for e in events if isinstance(e, EventList) and e.events
                 and e.events[0].name == "QueueParams"]
    live = {n: [e for e in events if isinstance(e, Event) and e.name == n]
            for n in ("QueueCallerJoin", "AgentCalled", "QueueCallerAbandon",
                      "QueueCallerLeave")}
    state = QueueState()
    state.begin_resync()
    state.apply_status([e for e in status.events if e.name != "QueueEntry"], NOW)
    for name in ("QueueCallerJoin", "AgentCalled"):
        for e in live[name]:
            assert state.apply(e, NOW)
    member = state.member("nobody", "Local/1099@agent-local/n")
    assert member is not None
    (caller,) = state.queues["nobody"].callers
    assert member.offered == caller
    assert state.queues["nobody"].offered_to == {caller: {member.interface}}
    abandoned = state.queues["nobody"].abandoned  # QueueParams: an earlier run's too
    for name in ("QueueCallerAbandon", "QueueCallerLeave"):
        for e in live[name]:
            assert state.apply(e, NOW)
    assert member.offered is None and state.queues["nobody"].offered_to == {}
    assert state.queues["nobody"].callers == {}
    assert state.queues["nobody"].abandoned == abandoned + 1
