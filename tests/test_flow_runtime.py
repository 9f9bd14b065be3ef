"""The FastAGI IVR end to end: a real FastAGI server on 127.0.0.1, a fake Asterisk peer
answering like the traces, a real ticket API over HTTP, real definition and prompt files."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from ivr.agi.server import FastAGIServer
from ivr.calls.steps import IvrStep
from ivr.errors import IvrError
from ivr.events.signing import verify
from ivr.flow.runtime import DefinitionStore, IvrRuntime
from ivr.flow.ticket_lookup import HttpTicketLookup, open_count
from ivr.sim.runtime_peer import HANGUP, CallRecord, FakeAsterisk

REPO = Path(__file__).resolve().parent.parent
SHANGHAI = dt.timezone(dt.timedelta(hours=8))

ELDERLY = "13800138000"
REPEAT = "13900139000"  # has an open ticket
PLAIN = "13700137000"  # no ticket
SLOW = "13600136000"  # the ticket API never answers in time
BROKEN = "13500135000"  # the ticket API fails
TICKET_SECRET = b"ticket-api-secret"  # the ticket API checks the v2 signature with it

HOTLINE = """
version: 1
settings:
  default_language: zh
  general_queue: hotline
  dial_context: outbound
  timezone: Asia/Shanghai
  recording_notice: true
  ticket_api: {url: "TICKET_URL", timeout: 0.5}
languages:
  zh:  {name: "普通话", fallback: []}
  yue: {name: "粤语", fallback: [zh]}
  en:  {name: "English", fallback: [zh]}
  ja:  {name: "日本語", fallback: [en, zh], enabled: false}
queues:
  hotline: {members: ["Local/1001@agent-local/n"]}
  english: {members: ["Local/1002@agent-local/n"]}
  cantonese: {members: ["Local/1002@agent-local/n"]}
  enterprise: {members: ["Local/1001@agent-local/n"]}
  social: {members: ["Local/1001@agent-local/n"]}
departments:
  business: {label: "营商环境办", number: "2003", hours: office, fallback_queue: enterprise}
priority:
  - {name: elderly, priority: 10, numbers: ["ELDERLY"]}
  - {name: repeat-open-ticket, priority: 5, open_ticket: true}
hours:
  hotline: {always_open: true, weekly: []}
  office:
    weekly:
      - {days: mon-fri, from: "09:00", to: "12:00"}
      - {days: mon-fri, from: "13:30", to: "17:30"}
    statutory_holidays: closed
    workday_as: 1
"""

ENTRIES = """
version: 1
flows:
  enterprise:
    start: menu
    steps:
      menu:
        type: menu
        prompt: enterprise-menu
        options: {"1": desk, "2": office}
        timeout: 5
        retries: 1
        on_fail: desk
      desk: {type: queue, queue: enterprise, on_timeout: "@return"}
      office: {type: transfer, to: department, department: business, on_fail: desk}
  after-queue:
    start: offer
    steps:
      offer: {type: callback, next: "@return", after: bye}
      bye: {type: hangup, prompt: goodbye}
entries:
  "12345":
    name: "12345"
    language: zh
    zero_navigation: true
    operator: {queue: hotline, digit: "0"}
    barge_in: {"9": en, "8": yue}
    shortcuts: {"2": enterprise, "3": ticket}
    start: greeting
    steps:
      greeting: {type: play, prompts: [welcome, lang-offer], next: notice}
      notice: {type: play, prompts: [recording-notice], next: queue}
      queue:
        type: queue
        queue: hotline
        by_language: {en: english, yue: cantonese}
        on_timeout: missed
      missed: {type: subflow, flow: after-queue, next: queue}
      enterprise: {type: subflow, flow: enterprise, next: queue}
      ticket: {type: ticket_status, next: queue}
  "12333":
    name: "12333"
    language: zh
    zero_navigation: true
    operator: {queue: social}
    start: greeting
    steps:
      greeting: {type: play, prompts: [social-security-welcome], next: open}
      open: {type: time, hours: office, open: queue, closed: closed, holiday: holiday}
      queue: {type: queue, queue: social}
      closed: {type: play, prompts: [closed-hours], next: general}
      holiday: {type: play, prompts: [holiday], next: general}
      general: {type: queue, queue: hotline, by_language: {en: english}}
  "8890":
    name: "8890"
    language: zh
    zero_navigation: false
    operator: {queue: hotline}
    start: greeting
    steps:
      greeting: {type: play, prompts: [welcome, press0-hint], next: menu}
      menu:
        type: menu
        prompt: main-menu
        options: {"1": queue, "3": callback, "4": language}
        timeout: 5
        retries: 2
        on_fail: queue
      language:
        type: language
        prompt: lang-menu
        options: {"1": zh, "8": yue, "9": en}
        next: menu
      queue: {type: queue, queue: hotline, by_language: {en: english, yue: cantonese}}
      callback: {type: callback, next: menu, after: done}
      done: {type: set, name: outcome, value: callback-requested, next: bye}
      bye: {type: hangup, prompt: goodbye, survey: true}
"""


def write_definition(directory: Path, ticket_url: str, entries: str = ENTRIES) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    hotline = HOTLINE.replace("TICKET_URL", ticket_url).replace("ELDERLY", ELDERLY)
    (directory / "hotline.yaml").write_text(hotline, encoding="utf-8")
    (directory / "entries.yaml").write_text(entries, encoding="utf-8")


@dataclass
class Rig:
    server: FastAGIServer
    store: DefinitionStore
    runtime: IvrRuntime
    steps: list[IvrStep]
    directory: Path
    ticket_url: str
    now: list[dt.datetime]
    lookups: list[str]
    excluded: list[str]
    refused: list[str]  # lookups the ticket API refused (signature)

    async def call(self, script: list[str], entry: str = "12345", caller: str = PLAIN,
                   before_reply: Callable[[int], Awaitable[None]] | None = None,
                   query: str = "") -> CallRecord:
        peer = FakeAsterisk(script, before_reply=before_reply)
        assert self.server.port is not None
        return await peer.run("127.0.0.1", self.server.port, f"ivr?entry={entry}{query}",
                              callerid=caller, extension=entry)

    def kinds(self) -> list[str]:
        return [s.kind for s in self.steps]


@pytest.fixture
async def ticket_api() -> AsyncIterator[tuple[str, list[str], list[str], list[str]]]:
    """A ticket API that, like the reference sink, answers only lookups signed (scheme v2)
    with ``TICKET_SECRET`` — 401 otherwise, the refusal recorded in ``refused``."""
    seen: list[str] = []
    excluded: list[str] = []  # ?exclude_call= of each lookup: the asking call's own id
    refused: list[str] = []  # why unsigned / badly signed lookups were refused
    never = asyncio.Event()

    async def status(request: web.Request) -> web.Response:
        try:
            verify(TICKET_SECRET, request.method, request.raw_path, request.headers,
                   await request.read())
        except IvrError as exc:
            refused.append(str(exc))
            return web.json_response({"error": "unauthorized", "detail": str(exc)},
                                     status=401)
        caller = request.query.get("caller", "")
        seen.append(caller)
        excluded.append(request.query.get("exclude_call", ""))
        if caller == REPEAT:
            return web.json_response({"tickets": [{"id": "T1", "status": "processing"}]})
        if caller == SLOW:
            await never.wait()  # answered after the IVR's timeout: never
        if caller == BROKEN:
            return web.Response(status=500, text="oops")
        return web.json_response({"open": 0}, status=404 if caller == PLAIN else 200)

    app = web.Application()
    app.router.add_get("/tickets/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/tickets/status", seen, excluded, refused
    never.set()
    await runner.cleanup()


@pytest.fixture
async def rig(tmp_path: Path, ticket_api: tuple[str, list[str], list[str], list[str]]
              ) -> AsyncIterator[Rig]:
    url, seen, excluded, refused = ticket_api
    directory = tmp_path / "dialplans"
    write_definition(directory, url)
    store = DefinitionStore(directory, prompts_dir=REPO / "prompts", sound_prefix="ivr12345/")
    store.load()
    steps: list[IvrStep] = []
    now = [dt.datetime(2025, 11, 26, 10, 0, tzinfo=SHANGHAI)]  # a Wednesday, office open

    async def report(step: IvrStep) -> None:
        steps.append(step)

    # lookups at settings.ticket_api, signed with the [tickets] secret
    runtime = IvrRuntime(store, reporter=report, ticket_secret=TICKET_SECRET,
                         clock=lambda: now[0])
    server = FastAGIServer()
    server.add_route("ivr", runtime.handle)
    await server.start(port=0)
    try:
        yield Rig(server, store, runtime, steps, directory, url, now, seen, excluded, refused)
    finally:
        await server.close()
        await runtime.close()


READ_GREETING = ('EXEC Read "IVR_DIGITS,ivr12345/zh/welcome&ivr12345/zh/lang-offer'
                 '&ivr12345/zh/recording-notice,1,,1,0.001"')
READ_RESULT = 'GET FULL VARIABLE "${READSTATUS},${IVR_DIGITS}"'


async def test_zero_navigation_call_reaches_queue_in_three_round_trips(rig: Rig) -> None:
    rec = await rig.call([""])
    # three prompts: Read plays the & list (GET DATA would open "a&b&c" as ONE file)
    assert rec.commands[0] == READ_GREETING
    assert rec.commands[1] == READ_RESULT
    assert rec.commands[2].startswith("EXEC MSet IVR_NEXT=queue,IVR_QUEUE=hotline,")
    assert rec.round_trips == 3  # no ANSWER, Read + its result, one MSet
    assert rec.failed == []
    v = rec.variables
    assert (v["IVR_NEXT"], v["IVR_QUEUE"], v["IVR_PRIORITY"]) == ("queue", "hotline", "0")
    assert (v["CHANNEL(language)"], v["IVR_LANGUAGE"], v["IVR_LANG"]) == ("zh", "zh", "zh")
    # please-hold is the dialplan's to play only when no member is ready
    assert (v["IVR_PROMPT"], v["IVR_HOLD_PROMPT"]) == ("", "ivr12345/zh/please-hold")
    assert v["IVR_QUEUE_STEP"] == "queue"  # a key pressed while waiting resumes it
    assert v["IVR_RESUME"] == "missed"
    assert v["IVR_VERSION"] == rig.store.current.version
    kinds = rig.kinds()
    assert kinds[0] == "entered" and kinds[-1] == "exit"
    assert kinds.count("prompt") == 4
    assert rig.steps[-1].data["target"] == "hotline"
    assert all(s.uniqueid == "1795883958.2" and s.entry == "12345" for s in rig.steps)


@pytest.mark.parametrize(("digit", "lang", "queue"), [("9", "en", "english"),
                                                      ("8", "yue", "cantonese")])
async def test_barge_in_sets_language_for_rest_of_call(rig: Rig, digit: str, lang: str,
                                                       queue: str) -> None:
    rec = await rig.call([digit, ""])
    assert rec.collects[1] == [f"ivr12345/{lang}/recording-notice"]
    v = rec.variables
    assert (v["IVR_QUEUE"], v["CHANNEL(language)"], v["IVR_LANG"]) == (queue, lang, lang)
    assert (v["IVR_PROMPT"], v["IVR_HOLD_PROMPT"]) == ("", f"ivr12345/{lang}/please-hold")
    language = [s for s in rig.steps if s.kind == "language"]
    assert [s.data["language"] for s in language] == [lang]


async def test_press_zero_goes_to_operator(rig: Rig) -> None:
    rec = await rig.call(["0"])
    assert rec.round_trips == 3
    assert rec.variables["IVR_QUEUE"] == "hotline" and rec.variables["IVR_RESUME"] == ""
    # the notice was cut short: the dialplan plays it before the queue
    assert rec.variables["IVR_PROMPT"] == "ivr12345/zh/recording-notice"
    assert rec.variables["IVR_HOLD_PROMPT"] == "ivr12345/zh/please-hold"
    assert rec.variables["IVR_QUEUE_STEP"] == ""  # the operator: no queue step to resume
    choice = next(s for s in rig.steps if s.kind == "choice")
    assert choice.data["target"] == "@operator" and choice.data["digits"] == "0"


async def test_shortcut_into_subflow_menu_with_invalid_and_timeout(rig: Rig) -> None:
    rec = await rig.call(["2", "7", "", "1"])  # enterprise; invalid; timeout → on_fail desk
    assert rec.collects[1] == ["ivr12345/zh/enterprise-menu"]
    assert rec.collects[2] == ["ivr12345/zh/invalid", "ivr12345/zh/enterprise-menu"]
    assert len(rec.collects) == 3  # retries: 1 → two failures end the menu
    assert rec.variables["IVR_QUEUE"] == "enterprise"
    assert rec.variables["IVR_RESUME"] == "enterprise/@return"
    assert [s.kind for s in rig.steps if s.kind in ("invalid", "timeout")] == [
        "invalid", "timeout"]
    assert "GET DATA ivr12345/zh/enterprise-menu 5000 1" in rec.commands


async def test_resume_after_queue_timeout_offers_callback(rig: Rig) -> None:
    rec = await rig.call(["1"], query="&resume=missed")
    assert rec.collects == [["ivr12345/zh/callback-offer"]]
    v = rec.variables
    assert v["IVR_NEXT"] == "hangup" and v["IVR_CALLBACK"] == "1"
    assert v["IVR_PROMPT"] == "ivr12345/zh/callback-confirm&ivr12345/zh/goodbye"
    cb = next(s for s in rig.steps if s.kind == "callback")
    assert cb.data["number"] == PLAIN
    # declining returns to the queue, which can time out again
    rig.steps.clear()
    rec = await rig.call(["2"], query="&resume=missed")
    assert rec.variables["IVR_NEXT"] == "queue" and rec.variables["IVR_RESUME"] == "missed"
    # a stale path never strands a caller
    rec = await rig.call([], query="&resume=nowhere/x")
    assert rec.variables["IVR_QUEUE"] == "hotline"
    assert any(s.kind == "error" for s in rig.steps)


async def test_hangup_mid_menu_ends_cleanly(rig: Rig) -> None:
    rec = await rig.call(["2", HANGUP])
    assert rec.hung_up
    # the greeting's Read, its result, the menu's GET DATA (-1 + HANGUP); nothing after
    assert [c.split()[0] for c in rec.commands] == ["EXEC", "GET", "GET"]
    assert rec.commands[-1] == "GET DATA ivr12345/zh/enterprise-menu 5000 1"
    assert rig.steps[-1].kind == "exit" and rig.steps[-1].data["to"] == "caller-hangup"
    assert not [s for s in rig.steps if s.kind == "error"]
    assert rig.server.sessions == 0


async def test_hangup_during_read_ends_cleanly(rig: Rig) -> None:
    """Read answers result=0 on a hang-up; READSTATUS=HANGUP and the HANGUP line tell."""
    rec = await rig.call([HANGUP])
    assert rec.hung_up
    assert rec.commands == [READ_GREETING, READ_RESULT]  # no MSet on a dead channel
    assert rig.steps[-1].kind == "exit" and rig.steps[-1].data["to"] == "caller-hangup"
    assert not [s for s in rig.steps if s.kind == "error"]


async def test_missing_menu_prompt_on_live_channel_is_not_a_hangup(rig: Rig) -> None:
    """GET DATA of a file the PBX lacks answers result=-1 with no HANGUP line: the call
    goes on (as timeouts: retries, then on_fail) instead of being dropped."""
    assert rig.server.port is not None
    peer = FakeAsterisk(["2"], missing_prompts=["ivr12345/zh/enterprise-menu"])
    rec = await peer.run("127.0.0.1", rig.server.port, "ivr?entry=12345", callerid=PLAIN)
    assert not rec.hung_up
    assert rec.failed == ["ivr12345/zh/enterprise-menu"]  # first try, GET DATA
    # the retry is invalid-or-timeout + menu (two prompts: Read, whose last prompt is
    # missing → READSTATUS=ERROR), then on_fail: desk
    assert rec.collects[-1] == ["ivr12345/zh/timeout", "ivr12345/zh/enterprise-menu"]
    assert rec.variables["IVR_NEXT"] == "queue" and rec.variables["IVR_QUEUE"] == "enterprise"
    errors = [s for s in rig.steps if s.kind == "error"]
    assert len(errors) == 2 and all("enterprise-menu" in s.data["reason"] for s in errors)
    assert [s.data["to"] for s in rig.steps if s.kind == "exit"] == ["queue"]


async def test_missing_prompt_inside_read_list_is_skipped(rig: Rig) -> None:
    assert rig.server.port is not None
    peer = FakeAsterisk(["9", ""], missing_prompts=["ivr12345/zh/lang-offer"])
    rec = await peer.run("127.0.0.1", rig.server.port, "ivr?entry=12345", callerid=PLAIN)
    assert rec.variables["IVR_QUEUE"] == "english"  # the barge-in digit still counted
    assert not [s for s in rig.steps if s.kind == "error"]


async def test_get_data_never_carries_a_prompt_list(rig: Rig) -> None:
    calls = [("12345", [""]), ("12345", ["0"]), ("12345", ["9", ""]),
             ("12345", ["2", "7", "", "1"]), ("12345", ["3"]), ("12333", [""]),
             ("8890", ["", "4", "9", "3", "1", "5"]), ("8890", ["", "", "", ""])]
    for entry, script in calls:
        rec = await rig.call(script, entry=entry)
        assert rec.failed == [], (entry, script)
        assert rec.variables["IVR_NEXT"] in ("queue", "hangup"), (entry, script)
        for line in rec.commands:
            if line.startswith("GET DATA"):
                assert "&" not in line, line


async def test_ticket_status_and_priority_for_repeat_caller(rig: Rig) -> None:
    rec = await rig.call(["3"], caller=REPEAT)
    assert rec.variables["IVR_PRIORITY"] == "5"
    assert rec.variables["IVR_PROMPT"].startswith("ivr12345/zh/ticket-status-found&")
    assert rig.lookups == [REPEAT]  # one lookup serves the status and the priority
    assert rig.refused == []  # it carried a valid v2 signature
    lookup = next(s for s in rig.steps if s.kind == "lookup")
    assert lookup.data["result"] == "found"
    exit_step = rig.steps[-1]
    assert exit_step.data["rule"] == "repeat-open-ticket"


@pytest.mark.parametrize("secret", [None, b"another-secret"])
async def test_refused_lookup_signature_degrades_like_a_backend_down(
        rig: Rig, secret: bytes | None) -> None:
    """Unsigned, or signed with another secret: the ticket API refuses the lookup (401);
    the caller hears 'status unavailable', gets no priority bonus and goes on to the
    queue, as when the backend is down."""
    rig.runtime.ticket_secret = secret  # before the runtime's first lookup client
    rec = await rig.call(["3"], caller=REPEAT)
    assert rec.variables["IVR_PROMPT"].startswith("ivr12345/zh/ticket-status-unavailable&")
    assert rec.variables["IVR_PRIORITY"] == "0"
    assert rec.variables["IVR_NEXT"] == "queue"
    assert rig.lookups == [] and len(rig.refused) == 1
    assert ("missing" in rig.refused[0]) == (secret is None)


async def test_lookup_leaves_out_the_calls_own_ticket(rig: Rig) -> None:
    """The backend has this call's ticket from its first AMI event, before the IVR asks:
    the lookup names the call (``?call=`` = Linkedid, from the rendered dialplan) so the
    backend leaves it out; without ``call`` the channel's uniqueid stands for it."""
    await rig.call(["3"], caller=REPEAT, query="&call=1795883958.1")
    await rig.call(["3"], caller=REPEAT)
    assert rig.lookups == [REPEAT, REPEAT]
    assert rig.excluded[0] == "1795883958.1"
    assert rig.excluded[1] and rig.excluded[1] != "1795883958.1"


async def test_steps_name_the_call_by_its_linkedid(rig: Rig,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Every step carries the call's id (``?call=``, the Linkedid the rendered dialplan
    passes); a request without it gets the channel's Uniqueid (right on the caller's own
    channel) and one warning, not one per call."""
    await rig.call([""], query="&call=1795883958.1")
    assert rig.steps and {s.call_id for s in rig.steps} == {"1795883958.1"}
    assert all(s.uniqueid and s.uniqueid != s.call_id for s in rig.steps)
    rig.steps.clear()
    with caplog.at_level(logging.WARNING, logger="ivr.flow.runtime"):
        await rig.call([""])
        await rig.call([""])
    assert rig.steps and all(s.call_id == s.uniqueid for s in rig.steps)
    warned = [r for r in caplog.records if r.getMessage() == "ivr.call.no_call_id"]
    assert len(warned) == 1


async def test_listed_number_gets_priority_without_lookup(rig: Rig) -> None:
    rec = await rig.call([""], caller=ELDERLY)
    assert rec.variables["IVR_PRIORITY"] == "10"
    assert rig.lookups == []


@pytest.mark.parametrize(("caller", "prompt"), [(PLAIN, "ticket-status-none"),
                                                (SLOW, "ticket-status-unavailable"),
                                                (BROKEN, "ticket-status-unavailable")])
async def test_ticket_lookup_fallbacks(rig: Rig, caller: str, prompt: str) -> None:
    rec = await rig.call(["3"], caller=caller)
    assert rec.variables["IVR_PROMPT"].startswith(f"ivr12345/zh/{prompt}&")
    assert rec.variables["IVR_PRIORITY"] == "0"
    assert rec.variables["IVR_NEXT"] == "queue"


@pytest.mark.parametrize(("when", "prompt", "queue"), [
    (dt.datetime(2025, 11, 26, 10, 0), None, "social"),  # Wednesday office hours
    (dt.datetime(2025, 11, 26, 20, 0), "closed-hours", "hotline"),  # Wednesday evening
    (dt.datetime(2025, 10, 1, 10, 0), "holiday", "hotline"),  # National Day
    (dt.datetime(2025, 9, 28, 10, 0), None, "social"),  # Sunday, make-up workday (调休)
    (dt.datetime(2025, 11, 30, 10, 0), "closed-hours", "hotline"),  # an ordinary Sunday
])
async def test_office_hours_holiday_and_makeup_workday(rig: Rig, when: dt.datetime,
                                                       prompt: str | None, queue: str) -> None:
    rig.now[0] = when.replace(tzinfo=SHANGHAI)
    rec = await rig.call([""], entry="12333")
    assert rec.variables["IVR_QUEUE"] == queue
    # the time step is looked through: one collect — GET DATA for one prompt, Read + its
    # result when the closed/holiday prompt follows
    assert rec.round_trips == (2 if prompt is None else 3)
    assert rec.commands[0].startswith("GET DATA " if prompt is None else "EXEC Read ")
    played = rec.collects[0]
    expected = ["ivr12345/zh/social-security-welcome"]
    if prompt is not None:
        expected.append(f"ivr12345/zh/{prompt}")
    assert played == expected
    hours = next(s for s in rig.steps if s.kind == "tag")
    assert hours.data["name"] == "hours:office"


async def test_menu_language_choice_callback_and_survey(rig: Rig) -> None:
    # 8890: greeting (no key), menu 4 = language, 9 = English, menu 3 = callback,
    # accept with 1, survey answer 5
    rec = await rig.call(["", "4", "9", "3", "1", "5"], entry="8890")
    assert rec.collects[2][0] == "ivr12345/zh/lang-menu"
    assert rec.collects[2][1:] == ["ivr12345/zh/lang-offer", "ivr12345/yue/lang-offer",
                                   "ivr12345/en/lang-offer"]
    assert rec.collects[3] == ["ivr12345/en/main-menu"]
    assert rec.collects[5] == ["ivr12345/en/callback-confirm", "ivr12345/en/survey"]
    v = rec.variables
    assert v["IVR_NEXT"] == "hangup" and v["IVR_TAG_outcome"] == "callback-requested"
    assert v["IVR_TAG_survey"] == "5"
    assert v["IVR_PROMPT"] == "ivr12345/en/survey-thanks"
    assert v["CHANNEL(language)"] == "en"


async def test_menu_timeouts_go_to_on_fail(rig: Rig) -> None:
    rec = await rig.call(["", "", "", ""], entry="8890")
    assert rec.collects[1] == ["ivr12345/zh/main-menu"]
    assert rec.collects[2] == ["ivr12345/zh/timeout", "ivr12345/zh/main-menu"]
    assert len(rec.collects) == 4  # greeting + 3 tries (retries: 2)
    assert rec.variables["IVR_QUEUE"] == "hotline"


async def test_department_transfer_and_closed_fallback(rig: Rig) -> None:
    rec = await rig.call(["2", "2"])
    v = rec.variables
    assert (v["IVR_NEXT"], v["IVR_TRANSFER"], v["IVR_TIMEOUT"]) == ("transfer", "2003", "60")
    assert v["IVR_PROMPT"] == "ivr12345/zh/transfer-dept"
    assert v["IVR_RESUME"] == "enterprise/desk"
    rig.now[0] = dt.datetime(2025, 10, 1, 10, 0, tzinfo=SHANGHAI)
    rec = await rig.call(["2", "2"])
    assert rec.variables["IVR_NEXT"] == "queue" and rec.variables["IVR_QUEUE"] == "enterprise"


async def test_closed_department_falls_back_to_an_open_directory_entry(rig: Rig) -> None:
    """The directory's {entry} fallback: a closed department's calls go to the entry it
    names when that one is open (its number dialled), else the step's on_fail."""
    hotline = rig.directory / "hotline.yaml"
    hotline.write_text(hotline.read_text(encoding="utf-8").replace(
        'hours: office, fallback_queue: enterprise}',
        'hours: office, fallback: {entry: duty}}\n'
        '  duty: {label: "值班室 Duty office", number: "2999", hours: hotline}'),
        encoding="utf-8")
    rig.store.load()
    rig.now[0] = dt.datetime(2025, 10, 1, 10, 0, tzinfo=SHANGHAI)  # National Day: closed
    rec = await rig.call(["2", "2"])
    v = rec.variables
    assert (v["IVR_NEXT"], v["IVR_TRANSFER"]) == ("transfer", "2999")
    assert v["IVR_PROMPT"].startswith("ivr12345/zh/closed-hours")


async def test_unknown_entry_falls_back_to_general_queue(rig: Rig) -> None:
    rec = await rig.call([], entry="99999")
    assert rec.variables["IVR_NEXT"] == "queue" and rec.variables["IVR_QUEUE"] == "hotline"
    assert rig.kinds() == ["error"]


async def test_reload_during_call_finishes_on_old_version(rig: Rig) -> None:
    old = rig.store.current.version
    in_menu = asyncio.Event()
    go_on = asyncio.Event()

    async def hold(n: int) -> None:
        if n == 2:
            in_menu.set()
            await go_on.wait()

    call = asyncio.create_task(rig.call(["2", "1"], before_reply=hold))
    await in_menu.wait()
    write_definition(rig.directory, rig.ticket_url,
                     ENTRIES.replace("desk: {type: queue, queue: enterprise",
                                     "desk: {type: queue, queue: social"))
    result = await rig.store.reload()
    assert result.ok and result.changed and result.version != old
    # a broken version is refused, the good new one stays
    (rig.directory / "broken.yaml").write_text("version: 1\nentries: [", encoding="utf-8")
    refused = await rig.store.reload()
    assert not refused.ok and refused.version == result.version and refused.error
    (rig.directory / "broken.yaml").unlink()
    go_on.set()
    rec = await call
    assert rec.variables["IVR_QUEUE"] == "enterprise" and rec.variables["IVR_VERSION"] == old
    rec = await rig.call(["2", "1"])
    assert rec.variables["IVR_QUEUE"] == "social"
    assert rec.variables["IVR_VERSION"] == result.version


async def test_reporter_failure_never_breaks_a_call(rig: Rig) -> None:
    async def broken(step: IvrStep) -> None:
        raise RuntimeError("pipeline down")

    rig.runtime.reporter = broken
    rec = await rig.call([""])
    assert rec.variables["IVR_NEXT"] == "queue"


async def test_repo_definition_runs(tmp_path: Path) -> None:
    """The shipped dialplans/ and prompts/ work together (smoke test)."""
    store = DefinitionStore(REPO / "dialplans", prompts_dir=REPO / "prompts")
    store.load()
    runtime = IvrRuntime(store)
    async with FastAGIServer() as server:
        server.add_route("ivr", runtime.handle)
        await server.start(port=0)
        assert server.port is not None
        for entry in store.current.definition.entries:
            rec = await FakeAsterisk(["0"]).run("127.0.0.1", server.port, f"ivr?entry={entry}",
                                                extension=entry)
            assert rec.variables.get("IVR_NEXT") in ("queue", "transfer", "hangup"), entry


async def test_values_mset_cannot_carry_go_by_set_variable(rig: Rig) -> None:
    entries = ENTRIES.replace(
        "      greeting: {type: play, prompts: [welcome, lang-offer], next: notice}",
        "      greeting: {type: play, prompts: [welcome, lang-offer], next: tag}\n"
        "      tag: {type: set, name: note, value: \"噪音, 投诉\", next: notice}")
    write_definition(rig.directory, rig.ticket_url, entries)
    assert (await rig.store.reload()).ok
    rec = await rig.call([""])
    assert rec.round_trips == 4
    assert rec.commands[2].startswith("EXEC MSet IVR_NEXT=queue,")
    assert "噪音" not in rec.commands[2]
    assert rec.commands[3] == 'SET VARIABLE IVR_TAG_note "噪音, 投诉"'
    assert rec.variables["IVR_TAG_note"] == "噪音, 投诉"


def test_mset_safe() -> None:
    from ivr.flow.engine import mset_safe

    assert mset_safe("ivr12345/zh/welcome&ivr12345/zh/please-hold")
    assert mset_safe("") and mset_safe("enterprise/@return")
    for bad in ("a,b", "a b", 'a"b', "a=b", "a|b", "a\\b", "中文"):
        assert not mset_safe(bad), bad


async def test_runtime_can_play_exit_prompts_itself(rig: Rig) -> None:
    rig.runtime.play_exit_prompts = True
    rec = await rig.call(["0"])
    # the notice owed; please-hold stays the dialplan's (only when no member is ready)
    assert rec.commands[2] == "EXEC Playback ivr12345/zh/recording-notice"
    assert rec.commands[3].startswith("EXEC MSet IVR_NEXT=queue,")
    assert rec.round_trips == 4


async def test_ticket_lookup_client_directly(
        ticket_api: tuple[str, list[str], list[str], list[str]]) -> None:
    url, _, excluded, refused = ticket_api
    client = HttpTicketLookup(url, timeout=0.3, secret=TICKET_SECRET)
    try:
        assert await client.status(REPEAT) == "found"
        assert await client.status(PLAIN) == "none"
        assert await client.status(SLOW) == "unavailable"
        assert await client.status(BROKEN) == "unavailable"
        assert await client.status("") == "none"
        # the query is signed as sent (exclude_call included), every lookup afresh
        assert await client.status(REPEAT, exclude_call="1795883958.1") == "found"
        assert await client.status(REPEAT, exclude_call="1795883958.1") == "found"
        assert excluded[-2:] == ["1795883958.1", "1795883958.1"]
        assert refused == []
    finally:
        await client.close()
    unsigned = HttpTicketLookup(url, timeout=0.3)
    try:
        assert await unsigned.status(REPEAT) == "unavailable"
        assert len(refused) == 1
    finally:
        await unsigned.close()
    refused = HttpTicketLookup("http://127.0.0.1:9/none", timeout=0.3)  # nothing listens
    try:
        assert await refused.status(PLAIN) == "unavailable"
    finally:
        await refused.close()
    assert open_count({"open_tickets": 3}) == 3
    assert open_count({"tickets": [{"status": "已办结"}, {"status": "closed"}]}) == 0
    assert open_count(["not", "a", "dict"]) is None


async def test_pbx_without_mset_gets_set_variable(rig: Rig) -> None:
    assert rig.server.port is not None
    peer = FakeAsterisk([""], missing_apps=["MSet"])
    rec = await peer.run("127.0.0.1", rig.server.port, "ivr?entry=12345")
    assert rec.commands[2].startswith("EXEC MSet")
    assert rec.commands[3] == "SET VARIABLE IVR_NEXT queue"
    assert rec.variables["IVR_NEXT"] == "queue" and rec.variables["IVR_QUEUE"] == "hotline"


async def test_watch_reloads_after_a_publish_rewrites_the_files(rig: Rig) -> None:
    old = rig.store.current.version
    watcher = asyncio.create_task(rig.store.watch(interval=0.02))
    try:
        reloaded = rig.store.next_reload()
        write_definition(rig.directory, rig.ticket_url,
                         ENTRIES.replace("queue: hotline\n        by_language",
                                         "queue: social\n        by_language"))
        result = await asyncio.wait_for(reloaded, 10)
        assert result.ok and result.changed and result.version != old
        rec = await rig.call([""])
        assert rec.variables["IVR_QUEUE"] == "social"
        refused = rig.store.next_reload()
        (rig.directory / "broken.yaml").write_text("version: [", encoding="utf-8")
        bad = await asyncio.wait_for(refused, 10)
        assert not bad.ok and bad.version == result.version
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


# ------------------------------------------------ the greeting played by the rendered dialplan


def _events(steps: list[IvrStep]) -> list[tuple[str, str, dict[str, str]]]:
    return [(s.kind, s.step, dict(s.data)) for s in steps]


async def _same_call_both_ways(rig: Rig, barge: str, script: list[str]
                               ) -> tuple[CallRecord, CallRecord]:
    """The call with the IVR playing the greeting (``script``: the greeting's key first),
    then with the dialplan having played it (``barge``): the second must report the
    same steps and set the same variables."""
    old = await rig.call([barge, *script])
    old_steps = _events(rig.steps)
    rig.steps.clear()
    status = "OK" if barge else "TIMEOUT"
    new = await rig.call(script, query=f"&barge={barge}&barge_status={status}")
    assert _events(rig.steps) == old_steps
    assert new.variables == {k: v for k, v in old.variables.items()
                             if k not in ("IVR_DIGITS", "READSTATUS")}
    assert old.commands[:2] == [READ_GREETING, READ_RESULT]
    assert new.commands == old.commands[2:]  # the rest is the same, Read + result saved
    return old, new


async def test_greeting_from_the_dialplan_no_key_is_one_round_trip(rig: Rig) -> None:
    old, new = await _same_call_both_ways(rig, "", [])
    assert old.round_trips == 3
    assert new.round_trips == 1 and new.commands[0].startswith("EXEC MSet IVR_NEXT=queue,")
    assert new.variables["IVR_QUEUE"] == "hotline"
    assert new.collects == []


async def test_greeting_from_the_dialplan_press_zero_is_one_round_trip(rig: Rig) -> None:
    old, new = await _same_call_both_ways(rig, "0", [])
    assert (old.round_trips, new.round_trips) == (3, 1)
    assert new.variables["IVR_PROMPT"] == "ivr12345/zh/recording-notice"
    assert new.variables["IVR_HOLD_PROMPT"] == "ivr12345/zh/please-hold"


@pytest.mark.parametrize(("digit", "lang"), [("9", "en"), ("8", "yue")])
async def test_greeting_from_the_dialplan_barge_in(rig: Rig, digit: str, lang: str) -> None:
    old, new = await _same_call_both_ways(rig, digit, [""])
    assert (old.round_trips, new.round_trips) == (4, 2)
    assert new.collects == [[f"ivr12345/{lang}/recording-notice"]]
    assert new.variables["CHANNEL(language)"] == lang
    assert [s.data["language"] for s in rig.steps if s.kind == "language"] == [lang]


async def test_greeting_from_the_dialplan_shortcut(rig: Rig) -> None:
    old, new = await _same_call_both_ways(rig, "2", ["1"])
    assert (old.round_trips, new.round_trips) == (4, 2)
    assert new.collects == [["ivr12345/zh/enterprise-menu"]]
    assert new.variables["IVR_QUEUE"] == "enterprise"


async def test_greeting_the_dialplan_could_not_play_goes_on_as_a_timeout(rig: Rig) -> None:
    rec = await rig.call([], query="&barge=&barge_status=ERROR")
    assert rec.round_trips == 1 and rec.variables["IVR_QUEUE"] == "hotline"
    errors = [s for s in rig.steps if s.kind == "error"]
    assert len(errors) == 1 and errors[0].data["reason"].startswith("prompt failed: ")


@pytest.mark.parametrize("query", ["&barge=99&barge_status=OK", "&barge=x"])
async def test_unusable_barge_value_makes_the_ivr_play_the_greeting(rig: Rig, query: str
                                                                   ) -> None:
    rec = await rig.call(["9", ""], query=query)
    assert rec.commands[:2] == [READ_GREETING, READ_RESULT]
    assert rec.variables["IVR_QUEUE"] == "english"
    assert "error" not in rig.kinds()


async def test_barge_for_a_greeting_the_dialplan_cannot_have_played_is_ignored(rig: Rig
                                                                             ) -> None:
    # 12333: office hours decide what follows its greeting, so it is never rendered; a
    # dialplan from another version that sent barge= anyway: the IVR plays the greeting
    rec = await rig.call([""], entry="12333", query="&barge=&barge_status=TIMEOUT")
    assert rec.collects[0] == ["ivr12345/zh/social-security-welcome"]
    assert rec.variables["IVR_QUEUE"] == "social"
    errors = [s for s in rig.steps if s.kind == "error"]
    assert len(errors) == 1 and "does not match" in errors[0].data["reason"]


@pytest.mark.parametrize("score", ["1", "4", "5"])
async def test_survey_score_from_the_dialplan_is_one_tag_step(rig: Rig, score: str) -> None:
    """The rendered dialplan's post-call survey (``survey=<1-5>``): one ``survey`` tag step
    for the call, no IVR run, nothing set on the channel."""
    rec = await rig.call([], query=f"&call=1795883958.1&survey={score}")
    assert [(s.kind, s.call_id, s.step, dict(s.data)) for s in rig.steps] == [
        ("tag", "1795883958.1", "survey", {"name": "survey", "value": score})]
    assert "IVR_NEXT" not in rec.variables


@pytest.mark.parametrize("score", ["", "0", "6", "45", "*"])
async def test_survey_value_not_1_to_5_is_no_score(rig: Rig, score: str) -> None:
    rec = await rig.call([], query=f"&call=1795883958.1&survey={score}")
    assert rig.steps == [] and "IVR_NEXT" not in rec.variables
