"""app_queue as Asterisk 20 publishes it under load (issue 14 item 11): a burst of callers
into a three-member ``leastrecent`` queue, counted per event kind, and the rules behind
the counts, each from Asterisk's source (apps/app_queue.c, main/cdr.c,
main/devicestate.c)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.asterisk.conf import parse_conf
from ivr.asterisk.queues import parse_queues
from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC

QUEUE_VARS = ("QUEUENAME", "QUEUEMAX", "QUEUESTRATEGY", "QUEUECALLS", "QUEUEHOLDTIME",
              "QUEUETALKTIME", "QUEUECOMPLETED", "QUEUEABANDONED", "QUEUESRVLEVEL",
              "QUEUESRVLEVELPERF")
MEMBER_VARS = ("MEMBERINTERFACE", "MEMBERNAME", "MEMBERCALLS", "MEMBERLASTCALL",
               "MEMBERPENALTY", "MEMBERDYNAMIC", "MEMBERREALTIME")
# 1001 answers after 2 s; 1002 would after 12 s, past the queue's 10 s ring timeout; 1099
# rings and never answers (agent-local): rings time out, callers retry
MEMBERS = ("1001", "1002", "1099")


def etc_with(tmp_path: Path, options: str = "", queue_opts: str = "t",
             timeout: str = "300", more_queues: str = "", more_ext: str = "") -> Path:
    """The emulator's etc plus queue ``burst`` (leastrecent, timeout 10, retry 1, the
    three Local members) and ``1@b-in``: Answer, Queue(burst,<opts>,,,<timeout>), then
    a NoOp the caller reaches only when Queue() returns 0."""
    etc = tmp_path / "etc"
    etc.mkdir(parents=True)
    for f in DEFAULT_ETC.iterdir():
        (etc / f.name).write_text(f.read_text())
    with open(etc / "queues.conf", "a") as f:
        f.write(f"\n[burst]\nstrategy = leastrecent\ntimeout = 10\nretry = 1\n{options}")
        for n in MEMBERS:
            f.write(f"member => Local/{n}@agent-local/n,0,Agent {n}\n")
        f.write(more_queues)
    with open(etc / "extensions.conf", "a") as f:
        f.write(f"\n[b-in]\nexten => 1,1,Answer()\n same => n,Queue(burst,{queue_opts},,,"
                f"{timeout})\n same => n,NoOp(after the queue)\n same => n,Hangup()\n")
        f.write(more_ext)
    return etc


def agents(talk: float = 15.0, ring_1002: float = 12) -> list[AgentScript]:
    return [AgentScript("Local/1001@agent-local/n", ring_time=2, talk_time=talk),
            AgentScript("Local/1002@agent-local/n", ring_time=ring_1002, talk_time=talk),
            AgentScript("Local/1099@agent-local/n", ring_time=3)]


@dataclass
class Seen:
    """Every event, as (name, headers)."""

    events: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def tap(self, name: str, body: str) -> None:
        self.events.append((name, dict(line.split(": ", 1) for line in body.split("\r\n")
                                       if ": " in line)))

    def of(self, name: str, **match: str) -> list[dict[str, str]]:
        return [h for n, h in self.events
                if n == name and all(h.get(k) == v for k, v in match.items())]

    def kinds(self) -> Counter[str]:
        return Counter(n for n, _ in self.events)


async def run(etc: Path, callers: list[CallerScript], talk: float = 15.0,
              ring_1002: float = 12) -> Seen:
    seen = Seen()
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock(),
                                       agents=agents(talk, ring_1002))) as emu:
        emu.bus.tap.append(seen.tap)
        handles = []
        for script in callers:
            handles.append(await emu.place_call(script))
            await emu.clock.sleep(0.1)
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 60)
    return seen


def burst(n: int = 30, abandon_every: int = 6) -> list[CallerScript]:
    """``n`` callers 0.1 s apart; every ``abandon_every``-th gives up after 6 s."""
    return [CallerScript(context="b-in", exten="1", number=f"1380013{i:04d}",
                         patience=6 if i % abandon_every == abandon_every - 1 else 1000,
                         talk_time=None)
            for i in range(n)]


# Who rings (calc_metric, can_ring_entry, is_our_turn; tests/test_sim_queue_pick.py):
# leastrecent ranks the members that never completed a call first, ties as app_queue's
# hash container orders them: 1002 (bucket 18) before 1001 (8) and 1099 (5).  With
# ringinuse = yes (app_queue's default) a ringing member may be rung again, so every
# caller whose turn it is rings 1002 and nobody else; 1002 never answers within the 10 s
# ring timeout, so it never completes a call and stays the best: the 25 who do not hang
# up ring it until the queue timeout (300 s) and leave through record_abandoned() (the
# emulator used to spread the burst over the members: 25 answered by 1001).  With
# ringinuse = no a ringing 1002 (or 1099) is kept out (pending_members): the others ring
# the next best, and 1001 takes 18 calls before the rest time out.
BURSTS = [pytest.param("", 25, 0, id="ringinuse-yes"),
          pytest.param("ringinuse = no\n", 7, 18, id="ringinuse-no")]


@pytest.mark.parametrize(("options", "timeouts", "connects"), BURSTS)
async def test_burst_per_kind_as_asterisk_publishes_it(tmp_path: Path, options: str,
                                                       timeouts: int, connects: int) -> None:
    seen = await run(etc_with(tmp_path, options=options), burst())
    callers = [h["Channel"] for h in seen.of("QueueCallerJoin")]
    assert len(callers) == 30
    # 5 hang up; a queue timeout is a record_abandoned() too
    assert len(seen.of("QueueCallerAbandon")) == 5 + timeouts
    assert len(seen.of("AgentConnect")) == connects
    assert len(seen.of("DialEnd", DialStatus="NOANSWER")) >= 10  # ring timeouts, retries

    # VarSet (app_queue.c): without setqueuevar/setinterfacevar (the default) no QUEUE*
    # or MEMBER* at all; the times are cleared on entry and set once when the caller is
    # answered or leaves ("stop" sets only what is still empty), never per ring attempt
    varsets = Counter(h["Variable"] for h in seen.of("VarSet"))
    assert not [v for v in varsets if v in QUEUE_VARS + MEMBER_VARS]
    for var in ("QUEUEWAIT", "QUEUEWAIT_MS", "DIALEDTIME", "DIALEDTIME_MS",
                "ANSWEREDTIME", "ANSWEREDTIME_MS"):
        assert varsets[var] == 2 * 30, var
    # an answered caller's Queue() returns -1: hung up, no QUEUESTATUS, no next priority;
    # one timed out gets QUEUESTATUS TIMEOUT and goes on
    assert varsets["QUEUESTATUS"] == timeouts
    assert len([h for h in seen.of("Newexten") if h["Application"] == "NoOp"]) == timeouts
    assert varsets["ABANDONED"] == 5 + timeouts and varsets["QUEUEPOSITION"] == 30

    # Cdr (cdr.c): every dial of a caller is a CDR of its own (a retry finds the last
    # one finalized and appends one); a dial nobody answered is posted NO ANSWER (it has
    # a party B), the answered one ANSWERED; a caller who never rang anyone has its one
    # answered CDR; nothing after the bridge (the PBX hangs the caller up); a caller
    # that timed out goes on in the dialplan, which opens it one more CDR (cdr.c
    # dialed_pending_state_process_party_a: a new location after a dial with party B)
    for chan in callers:
        dials = seen.of("DialBegin", Channel=chan)
        cdrs = seen.of("Cdr", Channel=chan)
        went_on = len(seen.of("VarSet", Channel=chan, Variable="QUEUESTATUS"))
        assert len(cdrs) == max(1, len(dials)) + went_on, chan
        answered = {h["DestChannel"] for h in seen.of("DialEnd", Channel=chan,
                                                      DialStatus="ANSWER")}
        for d in dials:
            cdr = next(c for c in cdrs if c["DestinationChannel"] == d["DestChannel"])
            assert cdr["Disposition"] == ("ANSWERED" if d["DestChannel"] in answered
                                          else "NO ANSWER")
    # the member legs: each answered ;2 (Wait) once; the ;1 (AppQueue) is a dialed
    # channel that is only the caller's party B: its own CDR has no party B and is
    # discarded (cdr.c cdr_object_create_public_records; traces 10, 11, 13 post none for
    # it); unanswered legs not at all (unanswered=no, no party B)
    leg_cdrs = [h for h in seen.of("Cdr") if h["Channel"].startswith("Local/")]
    assert len(leg_cdrs) == connects
    assert all(h["Channel"].endswith(";2") for h in leg_cdrs)
    assert all(h["Disposition"] == "ANSWERED" for h in leg_cdrs)
    dials = len(seen.of("DialBegin"))
    never_rang = sum(1 for c in callers if not seen.of("DialBegin", Channel=c))
    assert seen.kinds()["Cdr"] == dials + never_rang + connects + timeouts

    # DeviceStateChange (devicestate.c, app_queue.c): Queue:burst is cachable and set
    # only when the caller count becomes 1 (RINGING) or 0 (NOT_INUSE); no cachable
    # device publishes the state it has; Local devices (not cachable) publish each change
    states = [h["State"] for h in seen.of("DeviceStateChange", Device="Queue:burst")]
    firsts = len([h for h in seen.of("QueueCallerJoin") if h["Count"] == "1"])
    empties = len([h for h in seen.of("QueueCallerLeave") if h["Count"] == "0"])
    assert states == ["RINGING", "NOT_INUSE"] * firsts and empties == firsts
    last: dict[str, str] = {}
    for h in seen.of("DeviceStateChange"):
        if h["Device"].startswith("Queue:"):
            assert last.get(h["Device"]) != h["State"], h
            last[h["Device"]] = h["State"]
    for n in MEMBERS:
        legs = len([h for h in seen.of("Newchannel")
                    if h["Channel"].startswith(f"Local/{n}@") and h["Channel"].endswith(";1")])
        assert len(seen.of("DeviceStateChange", Device=f"Local/{n}@agent-local",
                           State="NOT_INUSE")) == 2 * legs


async def test_ring_timeout_and_retry_as_wait_for_answer(tmp_path: Path) -> None:
    """Nobody answers within ``timeout``: rna() (AgentRingNoAnswer), DialEnd NOANSWER,
    then hangupcalls()'s DialEnd CANCEL; then ``retry`` s later the next attempt."""
    etc = etc_with(tmp_path,  # a queue with only the member that never answers
                   more_queues="\n[lonely]\nstrategy = leastrecent\ntimeout = 10\n"
                               "retry = 1\nmember => Local/1099@agent-local/n,0,Ringer\n",
                   more_ext="\n[l-in]\nexten => 1,1,Answer()\n"
                            " same => n,Queue(lonely,t,,,25)\n")
    seen = await run(etc, [CallerScript(context="l-in", exten="1", patience=1000)])
    ends = [(h["DestChannel"], h["DialStatus"]) for h in seen.of("DialEnd")]
    legs = [h["DestChannel"] for h in seen.of("DialBegin")]
    assert len(legs) == 3  # rings 10 s, waits 1 s, rings 10 s, waits 1 s, rings 3 s
    assert ends == [(legs[0], "NOANSWER"), (legs[0], "CANCEL"),
                    (legs[1], "NOANSWER"), (legs[1], "CANCEL"),
                    (legs[2], "NOANSWER"), (legs[2], "CANCEL")]
    rna = seen.of("AgentRingNoAnswer")
    assert [h["DestChannel"] for h in rna] == legs
    assert [h["Queue"] for h in rna] == ["lonely"] * 3
    # the queue timeout: record_abandoned() (QueueCallerAbandon too), "stop", leave
    names = [n for n, h in seen.events if n in ("QueueCallerAbandon", "QueueCallerLeave")
             or (n == "VarSet" and h["Variable"] in ("ABANDONED", "QUEUEWAIT", "QUEUESTATUS")
                 and h["Value"])]
    assert names == ["VarSet", "QueueCallerAbandon", "VarSet", "QueueCallerLeave", "VarSet"]
    values = {h["Variable"]: h["Value"] for h in seen.of("VarSet")}
    assert values["ABANDONED"] == "TRUE" and values["QUEUESTATUS"] == "TIMEOUT"
    cdrs = seen.of("Cdr", Channel=seen.of("QueueCallerJoin")[0]["Channel"])
    assert [(c["DestinationChannel"], c["Disposition"]) for c in cdrs] == \
        [(leg, "NO ANSWER") for leg in legs]


async def test_queue_variables_only_as_queues_conf_says(tmp_path: Path) -> None:
    """setinterfacevar / setqueueentryvar / setqueuevar = yes: MEMBER* and QE* on the
    caller and the member leg when connected; QUEUE* on both when connected, on the
    caller again when the bridge ends (end_bridge_callback) and when Queue() ends; and
    on the caller when it abandons (record_abandoned) and when Queue() ends."""
    etc = etc_with(tmp_path, options="setinterfacevar = yes\nsetqueuevar = yes\n"
                   "setqueueentryvar = yes\n")
    cats = parse_conf((etc / "queues.conf").read_text(), "queues.conf")
    q = parse_queues(cats)["burst"]
    assert (q.setinterfacevar, q.setqueuevar, q.setqueueentryvar) == (True, True, True)
    assert not parse_queues(cats)["english"].setqueuevar  # app_queue's default: no
    scripts = [CallerScript(context="b-in", exten="1", talk_time=None, patience=1000),
               CallerScript(context="b-in", exten="1", talk_time=None, patience=1)]
    # the first caller rings 1002 (the never-called members' tie, above): it answers
    seen = await run(etc, scripts, talk=5, ring_1002=2)
    answered, gone = (h["Channel"] for h in seen.of("QueueCallerJoin"))
    leg = seen.of("AgentConnect")[0]["DestChannel"]

    def sets(chan: str, var: str) -> int:
        return len(seen.of("VarSet", Channel=chan, Variable=var))

    for var in MEMBER_VARS + ("QEHOLDTIME", "QEORIGINALPOS"):
        assert (sets(answered, var), sets(leg, var), sets(gone, var)) == (1, 1, 0), var
    for var in QUEUE_VARS:
        assert (sets(answered, var), sets(leg, var), sets(gone, var)) == (3, 1, 2), var
    assert seen.of("VarSet", Channel=leg, Variable="MEMBERNAME")[0]["Value"] == "Agent 1002"

    # the same burst queue without the options: none of them anywhere
    plain = await run(etc_with(tmp_path / "plain"), scripts, talk=5, ring_1002=2)
    names = {h["Variable"] for h in plain.of("VarSet")}
    assert not names & set(QUEUE_VARS + MEMBER_VARS + ("QEHOLDTIME", "QEORIGINALPOS"))


async def test_option_c_goes_on_in_the_dialplan(tmp_path: Path) -> None:
    """Queue(…,c…): after the call the caller goes on (QUEUESTATUS CONTINUE) and opens a
    new CDR at its next application; without c it is hung up (test above)."""
    seen = await run(etc_with(tmp_path, queue_opts="tc"),
                     [CallerScript(context="b-in", exten="1", talk_time=None)], talk=5,
                     ring_1002=2)  # it rings 1002 (the never-called members' tie)
    chan = seen.of("QueueCallerJoin")[0]["Channel"]
    assert seen.of("VarSet", Channel=chan, Variable="QUEUESTATUS")[0]["Value"] == "CONTINUE"
    assert [h["Application"] for h in seen.of("Newexten", Channel=chan)][-2:] == \
        ["NoOp", "Hangup"]
    assert [c["LastApplication"] for c in seen.of("Cdr", Channel=chan)][-1] == "Hangup"
    assert len(seen.of("Cdr", Channel=chan)) == 2


async def test_pause_device_publishes_only_changes(tmp_path: Path) -> None:
    """``Queue:<q>_pause_<interface>`` is cachable: set when a member is added (static
    ones at load, before any client), paused or unpaused, and NOT_INUSE when it is
    removed; published only when it changes (QueueRemove: nothing in trace 03, NOT_INUSE
    after a paused member in trace 11)."""
    seen = Seen()
    async with Emulator(EmulatorConfig(etc=etc_with(tmp_path), clock=VirtualClock())) as emu:
        emu.bus.tap.append(seen.tap)
        static = "Local/1001@agent-local/n"
        emu.queues.pause("burst", static, False, "")  # not paused: nothing
        emu.queues.pause("burst", static, True, "lunch")
        emu.queues.pause("burst", static, True, "again")  # paused already: nothing
        emu.queues.add("burst", "SIP/a", "A", 0, False, "")
        emu.queues.remove("burst", "SIP/a")  # was not paused: nothing
        emu.queues.add("burst", "SIP/b", "B", 0, True, "")
        emu.queues.remove("burst", "SIP/b")
    got = [(h["Device"].split("_pause_")[1], h["State"])
           for h in seen.of("DeviceStateChange") if "_pause_" in h["Device"]]
    assert got == [(static, "INUSE"), ("SIP/a", "NOT_INUSE"), ("SIP/b", "INUSE"),
                   ("SIP/b", "NOT_INUSE")]
    assert len(seen.of("QueueMemberPause")) == 3  # the pause events themselves: each time


@pytest.mark.parametrize("options", ["", "eventwhencalled = no\neventmemberstatus = no\n",
                                     "eventwhencalled = yes\neventmemberstatus = yes\n"])
async def test_eventwhencalled_and_eventmemberstatus_change_nothing(
        tmp_path: Path, options: str) -> None:
    """Asterisk 20's app_queue has no ``eventwhencalled`` / ``eventmemberstatus``
    (queue_set_param: an unknown keyword, warned about and ignored; the Agent* and
    QueueMember* AMI events always go out through Stasis).  Trace 07's queue ``nobody``
    sets neither and still publishes AgentCalled and QueueMemberStatus.  So whatever they
    say, the emulator publishes the same events, and nothing else changes."""
    scripts = [CallerScript(context="b-in", exten="1", talk_time=None, patience=1000)]
    seen = await run(etc_with(tmp_path, options=options), scripts, talk=5, ring_1002=2)
    kinds = seen.kinds()
    assert kinds["AgentCalled"] == kinds["AgentConnect"] == kinds["AgentComplete"] == 1
    assert kinds["QueueMemberStatus"] >= 2  # the member in use, then free again
    plain = await run(etc_with(tmp_path / "plain"), scripts, talk=5, ring_1002=2)
    assert [n for n, _ in seen.events] == [n for n, _ in plain.events]


def test_trace_07_queue_without_the_options_publishes_agent_events() -> None:
    """The recorded evidence: queue ``nobody`` has neither option in asterisk-etc."""
    from tests.conftest import TRACES

    cats = parse_conf((TRACES / "asterisk-etc" / "queues.conf").read_text(), "queues.conf")
    assert not {"eventwhencalled", "eventmemberstatus"} & set(parse_queues(cats)["nobody"].raw)
    raw = (TRACES / "07-queue-abandon" / "ami.server.raw").read_bytes().decode()
    for name in ("AgentCalled", "QueueMemberStatus"):
        blocks = [b for b in raw.split("\r\n\r\n") if b.startswith(f"Event: {name}\r\n")]
        assert blocks and all("\r\nQueue: nobody\r\n" in b for b in blocks), name
