"""The multilingual IVR end to end, with only real pieces: the Asterisk emulator
(``ivr.sim``: its AMI server, dialplan, app_queue and FastAGI client), the shipped
``dialplans/`` published into it over AMI by the real publisher, the real FastAGI server
running the real IVR runtime (an injected clock for dates), the reference ticket backend
for the ticket-status lookups, and simulated callers.

Each test asserts what a hotline user sees: the queue the caller reached
(``QUEUENAME``), the language (``IVR_LANGUAGE``, the ``Language:`` header of the AMI
events a second AMI client receives), the queue priority (``QUEUE_PRIO``), the prompts
played (the runtime's ``IvrStep`` reports, cross-checked against the AMI ``AGIExecStart``
commands and the dialplan's ``Playback``), and the emulator's summary."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.agi.server import FastAGIServer
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.messages import Event
from ivr.calls.steps import IvrStep
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER, _prepare_etc
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.errors import PublishError
from ivr.dialplan.publish import Plan, Publisher, Store, prepare
from ivr.dialplan.render import version_marker
from ivr.dialplan.validate import file_prompt_lookup
from ivr.flow.runtime import DefinitionStore, IvrRuntime
from ivr.flow.ticket_lookup import HttpTicketLookup
from ivr.redisproc import free_port
from ivr.sim.callers import CallerScript, CallHandle
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.ticketsink.server import TicketSink

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
CALL_LIMIT_S = 20.0  # wall-clock seconds for one call (virtual time: it takes ~0.1 s)

# 2025-10-15, a Wednesday 10:00 in Beijing: an ordinary working morning.
ORDINARY_MORNING = dt.datetime(2025, 10, 15, 10, 0, tzinfo=SHANGHAI)


@dataclass
class Call:
    """One finished call as the hotline sees it."""

    handle: CallHandle
    steps: list[IvrStep]  # what the IVR runtime reported for this channel
    events: list[Event]  # every AMI event of the call (Linkedid = the caller's uniqueid)

    def var(self, name: str) -> str | None:
        return self.handle.channel.variables.get(name)

    @property
    def queue(self) -> str | None:
        return self.var("QUEUENAME")

    def kinds(self, kind: str) -> list[IvrStep]:
        return [s for s in self.steps if s.kind == kind]

    @property
    def exit(self) -> IvrStep:
        exits = self.kinds("exit")
        assert len(exits) == 1, self.steps
        return exits[0]

    def prompts(self) -> list[tuple[str, str]]:
        """(prompt, language actually used) in the order the IVR sent them."""
        return [(s.data["prompt"], s.data["language"]) for s in self.kinds("prompt")]

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]

    def caller_events(self, name: str) -> list[Event]:
        uid = self.handle.uniqueid
        return [e for e in self.named(name) if e.get("Uniqueid") == uid]

    def agi_commands(self) -> list[str]:
        return [e.get("Command") or "" for e in self.caller_events("AGIExecStart")]

    def dialplan_apps(self, app: str) -> list[str]:
        """AppData of every ``app`` the dialplan ran on the caller's channel."""
        return [e.get("AppData") or "" for e in self.caller_events("Newexten")
                if e.get("Application") == app]


class Events:
    """Every AMI event a separate client receives, and a way to wait for one."""

    def __init__(self) -> None:
        self.all: list[Event] = []
        self._changed = asyncio.Event()

    def on_event(self, event: Event) -> None:
        self.all.append(event)
        self._changed.set()

    async def wait_for(self, name: str, uniqueid: str) -> None:
        while not any(e.name == name and e.get("Uniqueid") == uniqueid for e in self.all):
            self._changed.clear()
            await self._changed.wait()

    def of_call(self, linkedid: str) -> list[Event]:
        return [e for e in self.all if e.get("Linkedid") == linkedid]


class Hotline:
    """The emulator with the shipped dialplan published into it over AMI, the FastAGI
    IVR (unless ``ivr_up`` is False: then nothing listens on the AGI port), a ticket
    backend, and an AMI client watching the events."""

    def __init__(self, tmp: Path, *, ivr_up: bool = True) -> None:
        self.tmp = tmp
        self.ivr_up = ivr_up
        self.now = ORDINARY_MORNING  # the runtime's clock (holidays are decided on it)
        self.etc = _prepare_etc(tmp)
        self.source = tmp / "dialplans"
        shutil.copytree(ROOT / "dialplans", self.source)
        self.steps: list[IvrStep] = []
        self.events = Events()
        self.server = FastAGIServer()
        self.runtime: IvrRuntime | None = None
        self.sink = TicketSink(b"e2e-secret")
        self.tickets: HttpTicketLookup | None = None
        self.emu: Emulator | None = None
        self.ami: AMIClient | None = None
        self.first_plan: Plan | None = None
        self._numbers = iter(range(10_000))

    def clock(self) -> dt.datetime:
        return self.now.astimezone(dt.UTC)

    async def report(self, step: IvrStep) -> None:
        self.steps.append(step)

    def plan(self, source: Path | None = None) -> Plan:
        return prepare(source or self.source, file_prompt_lookup(PROMPTS))

    async def start(self) -> None:
        await self.sink.start()
        if self.ivr_up:
            await self.server.start("127.0.0.1", 0)
            agi_port = self.server.port
        else:
            agi_port = free_port()  # bound and closed again: nothing listens there
        self.emu = Emulator(EmulatorConfig(
            etc=self.etc, agi_host="127.0.0.1", agi_port=agi_port, clock=VirtualClock(), seed=12345,
            prompts=PROMPTS, strict_prompts=True, record_dir=self.tmp / "recordings"))
        await self.emu.start()
        self.ami = AMIClient("127.0.0.1", self.emu.ami_port, username=SIM_AMI_USER,
                             secret=SIM_AMI_SECRET, settings=AMISettings(ping_interval=0))
        self.ami.on_event("*", self.events.on_event)
        await self.ami.start()
        self.first_plan = self.plan()
        result = await self.publisher().publish(self.first_plan, self.control)
        assert result.record.status == "published"
        # As `ivr serve` does: the IVR runs the definition that was published.
        published = Store.at(self.etc).current_definition_dir()
        assert published is not None
        store = DefinitionStore(published, prompts_dir=PROMPTS)
        store.load()
        self.tickets = HttpTicketLookup(self.sink.url + "/api/v1/tickets/status", timeout=1.0,
                                        secret=self.sink.secret)
        self.runtime = IvrRuntime(store, reporter=self.report, tickets=self.tickets,
                                  clock=self.clock)
        self.server.add_route("ivr", self.runtime.handle)

    async def close(self) -> None:
        if self.ami is not None:
            await self.ami.close()
        if self.emu is not None:
            await self.emu.close()
        if self.ivr_up:
            await self.server.close()
        if self.runtime is not None:
            await self.runtime.close()
        if self.tickets is not None:
            await self.tickets.close()
        await self.sink.close()

    @property
    def control(self) -> ClientControl:
        assert self.ami is not None
        return ClientControl(self.ami)

    def publisher(self) -> Publisher:
        return Publisher(Store.at(self.etc), who="test_ivr_e2e", verify_timeout=10.0)

    async def dialplan_show(self, exten: str) -> list[str]:
        return await self.control.command(f"dialplan show {exten}@from-pstn")

    async def place(self, exten: str, language: str = "zh", digits: Sequence[str] = (),
                    number: str | None = None, patience: float = 120.0,
                    hangup_after: float | None = None) -> CallHandle:
        assert self.emu is not None
        number = number or f"1370000{next(self._numbers):04d}"
        return await self.emu.place_call(CallerScript(
            number=number, exten=exten, language=language, menu_digits=list(digits),
            patience=patience, talk_time=2.0, hangup_after=hangup_after))

    async def finish(self, handle: CallHandle) -> Call:
        """Wait until the caller hung up and the AMI client saw its Hangup event."""
        async with asyncio.timeout(CALL_LIMIT_S):
            await handle.wait()
            await self.events.wait_for("Hangup", handle.uniqueid)
        steps = [s for s in self.steps if s.uniqueid == handle.uniqueid]
        return Call(handle, steps, self.events.of_call(handle.uniqueid))

    async def call(self, exten: str, language: str = "zh", digits: Sequence[str] = (),
                   number: str | None = None) -> Call:
        return await self.finish(await self.place(exten, language, digits, number))


@pytest.fixture
async def hotline(tmp_path: Path) -> AsyncIterator[Hotline]:
    h = Hotline(tmp_path)
    try:
        await h.start()
        yield h
    finally:
        await h.close()


def assert_prompts_reached_asterisk(call: Call) -> None:
    """Every prompt the IVR reported was really sent to Asterisk (GET DATA / Read / the
    IVR_PROMPT of the exit MSet, or the greeting's ``Read`` the rendered dialplan ran
    before ``AGI()``) as ``<language>/<name>``."""
    sent = "\n".join([*call.agi_commands(), *call.dialplan_apps("Read")])
    for name, language in call.prompts():
        assert f"{language}/{name}" in sent, (name, language, sent)


def assert_reached_agent(call: Call, queue: str, language: str) -> None:
    assert call.queue == queue
    assert call.var("IVR_LANGUAGE") == language
    assert call.var("AGISTATUS") == "SUCCESS"
    joins = call.caller_events("QueueCallerJoin")
    assert [(e.get("Queue"), e.get("Language")) for e in joins] == [(queue, language)]
    assert call.caller_events("AgentConnect"), "no agent answered"
    assert call.exit.data["to"] == "queue" and call.exit.data["target"] == queue
    assert not call.kinds("error")
    assert_prompts_reached_asterisk(call)


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize(
    ("language", "digits", "queue"),
    [
        pytest.param("zh", [], "hotline", id="zh-no-key-general-queue"),
        pytest.param("en", ["9"], "english", id="en-presses-9-english-desk"),
        pytest.param("yue", ["8"], "cantonese", id="yue-presses-8-cantonese-desk"),
    ],
)
async def test_callers_in_each_language_reach_their_desk(
    hotline: Hotline, language: str, digits: list[str], queue: str
) -> None:
    call = await hotline.call("12345", language, digits)
    assert_reached_agent(call, queue, language)
    assert call.var("QUEUE_PRIO") == "0"
    greeting = [("recording-notice", "zh")]  # the notice alone before the queue
    if digits:  # barge-in during the notice: it is played again in the caller's language
        assert [s.data["language"] for s in call.kinds("language")] == [language]
        assert call.prompts() == [*greeting, ("recording-notice", language),
                                  ("please-hold", language)]
        assert call.dialplan_apps("Playback") == [f"{language}/recording-notice"]
    else:  # zero navigation: straight through the notice, nothing pressed
        assert not call.kinds("language")
        assert call.prompts() == [*greeting, ("please-hold", "zh")]
        assert call.dialplan_apps("Playback") == []
    # please-hold went to the dialplan, which played it not: an agent was ready
    assert call.var("IVR_HOLD_PROMPT") == ""
    # the caller's channel carries the language into the queue and to hang-up
    hangup = call.caller_events("Hangup")
    assert [e.get("Language") for e in hangup] == [language]
    assert hotline.emu is not None
    s = hotline.emu.summary()
    assert (s.placed, s.answered, s.abandoned, s.agi_failures) == (1, 1, 0, 0)


async def test_registered_elderly_caller_gets_queue_priority(hotline: Hotline) -> None:
    call = await hotline.call("12345", "zh", [], number="13800138000")
    assert_reached_agent(call, "hotline", "zh")
    assert call.var("QUEUE_PRIO") == "10"
    assert call.exit.data["rule"] == "elderly"


# --------------------------------------------------------------------------- digits


@pytest.mark.parametrize(
    ("exten", "digits", "queue", "language", "choices"),
    [
        # 12345 greeting shortcut 2 → the enterprise flow's menu → 1 = the desk
        pytest.param("12345", ["2", "1"], "enterprise", "zh",
                     [("notice", "2", "enterprise"), ("enterprise/menu", "1", "desk")],
                     id="12345-2-enterprise-1-desk"),
        # 8890: greeting (no key), main menu 1 = a person in the general queue
        pytest.param("8890", ["", "1"], "hotline", "zh", [("menu", "1", "queue")],
                     id="8890-menu-1-queue"),
        # 8890: menu 4 = language, 3 = English, back at the menu 1 → the English desk
        pytest.param("8890", ["", "4", "3", "1"], "english", "en",
                     [("menu", "4", "language"), ("language", "3", "en"),
                      ("menu", "1", "queue")],
                     id="8890-menu-4-language-3-english-1-queue"),
        # 8890: menu 5 = the enterprise flow, its menu 1 = the enterprise desk
        pytest.param("8890", ["", "5", "1"], "enterprise", "zh",
                     [("menu", "5", "enterprise"), ("enterprise/menu", "1", "desk")],
                     id="8890-menu-5-enterprise-1-desk"),
    ],
)
async def test_digits_through_the_menus(
    hotline: Hotline, exten: str, digits: list[str], queue: str, language: str,
    choices: list[tuple[str, str, str]],
) -> None:
    call = await hotline.call(exten, "zh", digits)
    assert_reached_agent(call, queue, language)
    got = [(s.step, s.data["digits"], s.data["target"]) for s in call.kinds("choice")]
    assert got == choices
    assert not call.kinds("invalid") and not call.kinds("timeout")
    # each digit was really pressed on the caller's channel
    pressed = [e.get("Digit") for e in call.caller_events("DTMFEnd")]
    assert pressed == [d for d in digits if d]


async def test_menu_prompts_follow_the_chosen_language(hotline: Hotline) -> None:
    call = await hotline.call("8890", "zh", ["", "4", "3", "1"])
    menus = [lang for name, lang in call.prompts() if name == "main-menu"]
    assert menus == ["zh", "en"]  # the menu is repeated in English after the choice
    # the language menu offers each language in that language
    offers = [lang for name, lang in call.prompts() if name == "lang-offer"]
    assert offers == ["zh", "yue", "en"]
    assert call.dialplan_apps("Playback") == ["en/recording-notice"]  # agents ready


async def test_emergency_menu_transfers_to_120(hotline: Hotline) -> None:
    """12345 shortcut 1 (一键转接) → the emergency menu → 3: ambulance 120, dialled by
    the rendered dialplan through the site's [outbound] context."""
    call = await hotline.call("12345", "zh", ["1", "3"])
    assert call.exit.data == {"to": "transfer", "target": "120", "language": "zh",
                              "transfer": "emergency"}
    assert call.var("IVR_NEXT") == "transfer"
    assert call.dialplan_apps("Playback") == ["zh/transfer-120"]
    assert call.dialplan_apps("Dial") == ["Local/120@outbound,60"]
    assert call.var("DIALSTATUS") == "ANSWER"
    assert [e.get("DialString") for e in call.caller_events("DialBegin")] == ["120@outbound"]
    assert call.queue is None and not call.caller_events("QueueCallerJoin")
    assert_prompts_reached_asterisk(call)


# --------------------------------------------------------------------------- errors


async def test_menu_timeouts_retry_then_go_where_the_definition_says(
    hotline: Hotline,
) -> None:
    """8890 main menu: timeout 5 s, retries 2, on_fail queue → three tries, then the
    general queue; the re-prompts are led by the timeout prompt."""
    call = await hotline.call("8890", "zh", ["", "", "", ""])
    assert_reached_agent(call, "hotline", "zh")
    assert [s.data["attempt"] for s in call.kinds("timeout")] == ["1", "2", "3"]
    assert not call.kinds("choice")
    names = [name for name, _ in call.prompts()]
    assert names.count("main-menu") == 3 and names.count("timeout") == 2
    assert call.exit.step == "queue"  # on_fail: queue (not the operator)


async def test_emergency_menu_timeouts_go_to_the_police(hotline: Hotline) -> None:
    """The emergency menu: timeout 4 s, retries 1, on_fail police → two silent tries,
    then 110 (never nowhere)."""
    call = await hotline.call("12345", "zh", ["1", "", ""])
    assert [s.data["attempt"] for s in call.kinds("timeout")] == ["1", "2"]
    assert call.exit.step == "emergency/police"
    assert call.dialplan_apps("Dial") == ["Local/110@outbound,60"]
    assert call.var("DIALSTATUS") == "ANSWER"


async def test_invalid_digits_retry_then_go_where_the_definition_says(
    hotline: Hotline,
) -> None:
    """The enterprise flow's menu (12345, shortcut 2): retries 1, on_fail desk → after
    two wrong digits the caller reaches the enterprise desk, not the operator."""
    call = await hotline.call("12345", "zh", ["2", "7", "8"])
    assert_reached_agent(call, "enterprise", "zh")
    invalid = [(s.data["digits"], s.data["attempt"]) for s in call.kinds("invalid")]
    assert invalid == [("7", "1"), ("8", "2")]
    names = [name for name, _ in call.prompts()]
    assert names.count("enterprise-menu") == 2 and names.count("invalid") == 1
    assert call.exit.step == "enterprise/desk"


async def test_invalid_then_valid_digit(hotline: Hotline) -> None:
    call = await hotline.call("8890", "zh", ["", "9", "1"])
    assert_reached_agent(call, "hotline", "zh")
    assert [s.data["digits"] for s in call.kinds("invalid")] == ["9"]
    assert [s.data["digits"] for s in call.kinds("choice")] == ["1"]
    # the second try is led by the invalid prompt
    assert call.prompts()[3:5] == [("invalid", "zh"), ("main-menu", "zh")]


async def test_press_0_inside_a_menu_reaches_a_person(hotline: Hotline) -> None:
    """12345 → 2 (enterprise menu) → 0: the entry's operator queue (the general
    hotline; please-hold only if no agent were ready), rather than the enterprise desk
    the menu offers."""
    call = await hotline.call("12345", "zh", ["2", "0"])
    assert_reached_agent(call, "hotline", "zh")
    choice = call.kinds("choice")[-1]
    assert (choice.step, choice.data["digits"], choice.data["target"]) == (
        "enterprise/menu", "0", "@operator")
    assert call.exit.step == "@operator"
    assert call.dialplan_apps("Playback") == ["zh/recording-notice"]


async def test_press_0_in_the_8890_main_menu(hotline: Hotline) -> None:
    call = await hotline.call("8890", "zh", ["", "0"])
    assert_reached_agent(call, "hotline", "zh")
    assert call.exit.step == "@operator"
    assert [s.data["target"] for s in call.kinds("choice")] == ["@operator"]


@pytest.mark.parametrize(
    ("exten", "after", "last_prompt"),
    [
        pytest.param("12345", 3.0, None, id="12345-during-the-greeting"),
        pytest.param("8890", 20.0, "main-menu", id="8890-during-the-main-menu"),
    ],
)
async def test_caller_hanging_up_in_the_ivr_ends_quietly(
    hotline: Hotline, exten: str, after: float, last_prompt: str | None
) -> None:
    call = await hotline.finish(await hotline.place(exten, "zh", [], hangup_after=after))
    assert call.queue is None and not call.caller_events("QueueCallerJoin")
    if last_prompt is None:  # the greeting's Read in the rendered dialplan: no AGI at all
        assert call.dialplan_apps("Read") == [
            "IVR_BARGE,zh/recording-notice,1,,1,0.001"]
        assert call.var("AGISTATUS") is None and not call.agi_commands()
        assert call.steps == []
    else:
        assert call.var("AGISTATUS") == "HANGUP"
        assert call.exit.data["to"] == "caller-hangup"
        assert not call.kinds("error")
        assert call.prompts()[-1][0] == last_prompt
    assert not call.dialplan_apps("Queue") and not call.dialplan_apps("Playback")
    assert hotline.emu is not None
    s = hotline.emu.summary()
    assert (s.placed, s.completed, s.answered, s.agi_failures) == (1, 1, 0, 0)


# --------------------------------------------------------------------------- hours


@pytest.mark.parametrize(
    ("when", "reason", "queue", "extra_prompt"),
    [
        # 国庆节: 2025-10-02 is a statutory holiday (a Thursday): the desk is closed
        pytest.param(dt.datetime(2025, 10, 2, 10, 0, tzinfo=SHANGHAI), "holiday",
                     "hotline", "holiday", id="national-day-holiday-closed"),
        # 调休: Sunday 2025-09-28 is a make-up workday: the desk is open
        pytest.param(dt.datetime(2025, 9, 28, 10, 0, tzinfo=SHANGHAI), "makeup-workday",
                     "social", None, id="makeup-workday-sunday-open"),
        # an ordinary Sunday (2025-10-12) is closed, without the holiday prompt
        pytest.param(dt.datetime(2025, 10, 12, 10, 0, tzinfo=SHANGHAI), "weekly-closed",
                     "hotline", "closed-hours", id="ordinary-sunday-closed"),
        # an ordinary Wednesday morning: open
        pytest.param(ORDINARY_MORNING, "weekly", "social", None, id="ordinary-weekday-open"),
    ],
)
async def test_12333_office_hours_follow_the_statutory_calendar(
    hotline: Hotline, when: dt.datetime, reason: str, queue: str, extra_prompt: str | None,
) -> None:
    hotline.now = when
    call = await hotline.call("12333", "zh", [])
    assert_reached_agent(call, queue, "zh")
    hours = [s.data for s in call.kinds("tag") if s.data["name"] == "hours:office"]
    assert [h["value"] for h in hours] == [reason]
    names = [name for name, _ in call.prompts()]
    assert names[:2] == ["social-security-welcome", "lang-offer"]
    if extra_prompt:
        assert extra_prompt in names
    assert "holiday" not in names or extra_prompt == "holiday"
    assert "closed-hours" not in names or extra_prompt == "closed-hours"


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        pytest.param(ORDINARY_MORNING, True, id="weekday-office-open"),
        pytest.param(dt.datetime(2025, 10, 2, 10, 0, tzinfo=SHANGHAI), False,
                     id="national-day-office-closed"),
    ],
)
async def test_department_transfer_follows_office_hours(
    hotline: Hotline, when: dt.datetime, open_: bool
) -> None:
    """12345 → 2 (enterprise) → 2: the business environment office (2003, office
    hours); closed on a statutory holiday → its fallback queue, the enterprise desk."""
    hotline.now = when
    call = await hotline.call("12345", "zh", ["2", "2"])
    if open_:
        assert call.exit.data["to"] == "transfer" and call.exit.data["target"] == "2003"
        assert call.dialplan_apps("Dial") == ["Local/2003@outbound,60"]
        assert call.var("DIALSTATUS") == "ANSWER"
        assert call.dialplan_apps("Playback") == ["zh/transfer-dept"]
    else:
        assert_reached_agent(call, "enterprise", "zh")
        hours = [s.data["value"] for s in call.kinds("tag") if s.data["name"] == "hours:office"]
        assert hours == ["holiday"]
        assert not call.dialplan_apps("Dial")
        assert "zh/closed-hours" in call.dialplan_apps("Playback")[0]


# --------------------------------------------------------------------------- fallback


async def test_fastagi_down_every_caller_still_reaches_the_general_queue(
    tmp_path: Path,
) -> None:
    hotline = Hotline(tmp_path, ivr_up=False)
    try:
        await hotline.start()
        scripts = [("12345", "zh", []), ("12345", "en", ["9"]), ("12345", "yue", ["8"]),
                   ("8890", "zh", ["", "2"]), ("12315", "zh", []), ("12333", "zh", [])]
        handles = [await hotline.place(exten, lang, digits) for exten, lang, digits in scripts]
        calls = [await hotline.finish(h) for h in handles]
        for call in calls:
            assert call.var("AGISTATUS") == "FAILURE"
            assert call.queue == "hotline"
            assert call.var("QUEUE_PRIO") == "0"
            assert not call.steps  # the IVR never saw the call
            assert call.caller_events("AgentConnect"), "no agent answered"
            assert any("IVR static fallback" in x for x in call.dialplan_apps("NoOp"))
            # the rendered dialplan's entry language, whatever the caller would have chosen
            assert [e.get("Language") for e in call.caller_events("QueueCallerJoin")] == ["zh"]
        assert hotline.emu is not None
        s = hotline.emu.summary()
        assert (s.placed, s.answered, s.abandoned, s.agi_failures) == (6, 6, 0, 6)
    finally:
        await hotline.close()


# --------------------------------------------------------------------------- publish


async def test_failed_publish_rolls_back_and_calls_still_work(hotline: Hotline) -> None:
    """A site engineer left extensions_site.conf broken (a category header without its
    ']'): Asterisk's pbx_config refuses the whole file set on `dialplan reload` and
    keeps the running dialplan, so the new version never shows in `dialplan show`;
    publish puts the previous files back, confirms the previous version is live, and
    callers keep reaching agents."""
    store = Store.at(hotline.etc)
    v1 = hotline.first_plan
    assert v1 is not None
    v1_files = store.live_files()
    v1_current = store.current()
    # v2: the general queue's maximum wait changes from 300 to 240 s
    v2_source = hotline.tmp / "dialplans-v2"
    shutil.copytree(hotline.source, v2_source)
    text = (v2_source / "hotline.yaml").read_text(encoding="utf-8")
    assert text.count("max_wait: 300") == 1
    (v2_source / "hotline.yaml").write_text(text.replace("max_wait: 300", "max_wait: 240"),
                                            encoding="utf-8")
    v2 = hotline.plan(v2_source)
    assert v2.version != v1.version
    site = hotline.etc / "extensions_site.conf"
    site.write_text(site.read_text(encoding="utf-8").replace("[outbound]", "[outbound"),
                    encoding="utf-8")

    with pytest.raises(PublishError, match="does not show") as failure:
        await hotline.publisher().publish(v2, hotline.control)
    assert failure.value.rolled_back

    # Asterisk runs the previous version, for every entry
    for exten in ("12345", "12315", "12333", "8890"):
        shown = "\n".join(await hotline.dialplan_show(exten))
        assert version_marker(v1.version) in shown
        assert version_marker(v2.version) not in shown
    # the previous files are back and still marked current; the attempt is audited
    assert store.live_files() == v1_files
    assert "Queue(hotline,ct,,,300)" in (v1_files["extensions.conf"] or "")
    assert store.current() == v1_current
    audit = [json.loads(line) for line in
             (store.versions / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(a["version"], a["status"]) for a in audit] == [
        (v1.version, "published"), (v2.version, "rolled-back")]
    assert "does not show" in audit[-1]["message"]

    # calls still work, on the previous version
    call = await hotline.call("12345", "en", ["9"])
    assert_reached_agent(call, "english", "en")
    version = call.var("IVR_VERSION") or ""
    assert version and v1.version.startswith(version)
    noops = call.dialplan_apps("NoOp")
    assert any(version_marker(v1.version) in x for x in noops)

    # the site file repaired, the same version publishes and goes live
    site.write_text(site.read_text(encoding="utf-8").replace("[outbound\n", "[outbound]\n"),
                    encoding="utf-8")
    result = await hotline.publisher().publish(v2, hotline.control)
    assert result.record.status == "published" and result.record.previous == v1.version
    assert version_marker(v2.version) in "\n".join(await hotline.dialplan_show("12345"))
    assert "Queue(hotline,ct,,,240)" in (store.live_files()["extensions.conf"] or "")
    current = store.current()
    assert current is not None and current[1] == v2.version


# --------------------------------------------------------------------------- resume


async def test_english_caller_keeps_english_after_a_queue_timeout(tmp_path: Path) -> None:
    """Nobody on the English desk (both members paused over AMI): Queue(english) times
    out after its max_wait (300 s), the dialplan resumes the IVR at `missed` (the
    callback offer), the caller presses 1 and is told goodbye — in English."""
    hotline = Hotline(tmp_path)
    try:
        await hotline.start()
        assert hotline.ami is not None
        for member in ("Local/1021@agent-local/n", "Local/1022@agent-local/n"):
            await hotline.ami.send_action("QueuePause", {
                "Queue": "english", "Interface": member, "Paused": "true"}, check=True)
        call = await hotline.finish(
            await hotline.place("12345", "en", ["9", "1"], patience=1000.0))
        assert call.var("QUEUESTATUS") == "TIMEOUT"
        entered = call.kinds("entered")
        assert [s.data["resume"] for s in entered] == ["", "missed"]
        assert [s.data["to"] for s in call.kinds("exit")] == ["queue", "hangup"]
        assert [s.data["number"] for s in call.kinds("callback")] == [
            call.handle.script.number]
        after = call.steps[call.steps.index(entered[1]):]
        languages = {s.data["language"] for s in after if s.kind == "prompt"}
        assert languages == {"en"}, [(s.data["prompt"], s.data["language"])
                                     for s in after if s.kind == "prompt"]
        assert call.var("IVR_LANGUAGE") == "en"
    finally:
        await hotline.close()
