"""The dialplan definition: typed, frozen, no I/O.

A :class:`Definition` is what ``dialplans/*.yaml`` (schema ``version: 1``) says, after
:func:`ivr.dialplan.loader.load_definition` has parsed and checked it.  The per-call
interpreter (``ivr.flow.runtime``) walks an :class:`Entry`'s steps; the renderer
(``ivr.dialplan.render``) turns the static parts into Asterisk configuration.

Step graph: every step has an ``id`` unique within its flow (an entry's ``steps`` or a
sub-flow's ``steps``); fields typed :data:`Target` hold the id of another step of the same
flow, or one of the special targets :data:`OPERATOR` (the press-0 queue of the entry),
:data:`RETURN` (leave a sub-flow, continue after the ``subflow`` step) and
:data:`HANGUP` (say goodbye and hang up).  ``Step.targets()`` lists them.

``where`` fields (``compare=False``) carry the YAML source position, so checks that run
after loading can still name the file, line and column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

SCHEMA_VERSION = 1

Target: TypeAlias = str
"""The id of a step in the same flow, or OPERATOR / RETURN / HANGUP."""

OPERATOR: Target = "@operator"
RETURN: Target = "@return"
HANGUP: Target = "@hangup"
SPECIAL_TARGETS: frozenset[str] = frozenset({OPERATOR, RETURN, HANGUP})

EMERGENCY_NUMBERS: frozenset[str] = frozenset({"110", "119", "120", "122"})
DTMF_DIGITS: frozenset[str] = frozenset("0123456789*#")


def _empty_reasons() -> Mapping[str, PauseReason]:
    return MappingProxyType({})


def _empty_map() -> Mapping[str, str]:
    return MappingProxyType({})


def _empty_directory() -> Mapping[str, Department]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Where:
    """A position in a definition file (1-based line and column)."""

    file: str = "<memory>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Where()


# --------------------------------------------------------------------------- languages


@dataclass(frozen=True)
class Language:
    code: str
    """Our code: zh, yue, en, ja, ko, ru, fr…  Prompts live in prompts/<code>/."""
    name: str
    """Human name, e.g. "普通话 Mandarin"."""
    channel_language: str
    """What CHANNEL(language) is set to (normally the same as ``code``)."""
    fallback: tuple[str, ...] = ()
    """Languages tried in order when a prompt is missing in this one (not incl. itself)."""
    enabled: bool = True
    where: Where = field(default=NOWHERE, compare=False)

    @property
    def chain(self) -> tuple[str, ...]:
        """This language followed by its fallback chain."""
        return (self.code, *self.fallback)


# --------------------------------------------------------------------------- queues etc.


@dataclass(frozen=True)
class Queue:
    name: str
    """Asterisk queue name (queues.conf section)."""
    label: str = ""
    strategy: str = "rrmemory"
    timeout: int = 15
    """Seconds each member rings (queues.conf ``timeout``)."""
    max_wait: int = 300
    """Seconds a caller waits in the queue before the Queue() app returns."""
    languages: tuple[str, ...] = ()
    """Languages the agents in this queue speak (informational; routing uses QueueStep)."""
    skills: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    """Static member interfaces, e.g. "Local/1001@agent-local/n"."""
    wrapup: int = 0
    """Seconds after each call before a member is offered another call of this queue
    (queues.conf ``wrapuptime``; 0 = at once)."""
    hours: str | None = None
    """The named ``hours`` the queue works (its missed callers are called back within
    them, docs/callbacks.md); None = around the clock."""
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class PauseReason:
    """One entry of the agents' pause-reason catalog (``pause_reasons:``)."""

    code: str
    """What an operator types (``lunch``)."""
    label: str
    """What Asterisk stores as the member's PausedReason and the status shows
    (``午休 lunch``)."""
    where: Where = field(default=NOWHERE, compare=False)


DIRECTORY_KINDS = ("department", "emergency", "interpreter", "partner")
"""The sections of the directory (``departments:``, ``emergency:``, ``interpreters:``,
``partners:``); one id namespace across all four."""

DIRECTORY_SECTIONS: Mapping[str, str] = MappingProxyType({
    "department": "departments", "emergency": "emergency", "interpreter": "interpreters",
    "partner": "partners"})

LEVELS = ("city", "district", "street", "community")
"""Administrative levels of a department, from the top (市, 区, 街道/镇, 社区/村)."""


@dataclass(frozen=True)
class Fallback:
    """Where a directory entry's calls go when it is closed or does not answer: a queue
    of this hotline, or another directory entry (by id)."""

    kind: Literal["queue", "entry"]
    name: str
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Department:
    """One entry of the directory (``ivr.directory`` resolves them): a department, an
    emergency service, an interpreter desk or a partner hotline."""

    name: str
    """Its id, unique across the directory (``market``, ``police``, ``interp-en``)."""
    label: str
    number: str
    """What is dialled: a phone number or extension, dialled via Local/<number>@<dial_context>."""
    level: Literal["city", "district", "street", "community"] = "city"
    hours: str | None = None
    """Name of an Hours spec; when closed the transfer falls back to ``fallback``."""
    fallback_queue: str | None = None
    """The fallback when it is a queue (kept for the flow engine's transfer step)."""
    where: Where = field(default=NOWHERE, compare=False)
    kind: Literal["department", "emergency", "interpreter", "partner"] = "department"
    fallback_entry: str | None = None
    """The fallback when it is another directory entry (its id)."""
    language: str | None = None
    """Interpreter desks: the language they interpret (a language of the definition)."""
    one_key: bool = False
    """Emergency services: offered as a one-key transfer (一键转接)."""
    area: str = ""
    """The district, street or community it serves (天河区, 石牌街道…); "" = the city."""
    parent: str | None = None
    """The department above it (a street office's district bureau), by id."""
    announce: str | None = None
    """A prompt played to it when it is brought into a three-way call, before it joins
    (``12345 热线三方通话``…); a request may name another."""

    @property
    def fallback(self) -> Fallback | None:
        if self.fallback_queue is not None:
            return Fallback("queue", self.fallback_queue, self.where)
        if self.fallback_entry is not None:
            return Fallback("entry", self.fallback_entry, self.where)
        return None


DirectoryEntry: TypeAlias = Department
"""A directory entry of any kind (the class kept its first name)."""


@dataclass(frozen=True)
class PriorityRule:
    """Callers matching this rule enter queues with ``priority`` (higher is answered first)."""

    name: str
    priority: int
    numbers: tuple[str, ...] = ()
    """Exact caller numbers (e.g. registered elderly callers)."""
    prefixes: tuple[str, ...] = ()
    open_ticket: bool = False
    """Matches callers who have an open ticket (asks the ticket backend)."""
    queue: str | None = None
    """Send matching callers to this queue instead of the step's queue."""
    where: Where = field(default=NOWHERE, compare=False)

    def matches_number(self, caller: str) -> bool:
        return caller in self.numbers or any(caller.startswith(p) for p in self.prefixes)


# --------------------------------------------------------------------------- time


@dataclass(frozen=True)
class WeeklyWindow:
    days: frozenset[int]
    """ISO weekdays, 1 = Monday … 7 = Sunday."""
    start: dt.time
    end: dt.time
    """Exclusive; 24:00 is written as ``end_of_day`` = True and end = 23:59:59.999999."""
    end_of_day: bool = False
    where: Where = field(default=NOWHERE, compare=False)

    def contains(self, when: dt.datetime) -> bool:
        if when.isoweekday() not in self.days:
            return False
        t = when.time()
        if self.end_of_day:
            return t >= self.start
        return self.start <= t < self.end


@dataclass(frozen=True)
class Override:
    """An admin decision for one day or a date range (inclusive)."""

    start: dt.date
    end: dt.date
    mode: Literal["open", "closed", "hours"]
    """open: 24 h open; closed: closed all day; hours: use ``windows`` (days ignored)."""
    windows: tuple[WeeklyWindow, ...] = ()
    reason: str = ""
    prompt: str | None = None
    """Played instead of the spec's closed prompt when closed by this override."""
    hours: tuple[str, ...] = ()
    """Hours specs this override applies to; empty = all."""
    where: Where = field(default=NOWHERE, compare=False)

    def covers(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class Hours:
    """Opening hours: weekly windows, Chinese statutory holidays, overrides."""

    name: str
    weekly: tuple[WeeklyWindow, ...]
    statutory_holidays: Literal["closed", "open", "ignore"] = "closed"
    """closed: closed on 法定节假日 (and make-up workdays 调休上班日 count as workdays,
    using the hours of ``workday_as``); open: statutory holidays do not close; ignore:
    the weekly table alone decides (a make-up Sunday stays a Sunday)."""
    workday_as: int = 1
    """ISO weekday whose windows apply on a make-up workday (默认按周一)."""
    always_open: bool = False
    """7×24 (GB/T 33358 recommends it): open whatever the table says."""
    overrides: tuple[Override, ...] = ()
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class CalendarDay:
    """One date of a holiday arrangement, with where the admin wrote it."""

    day: dt.date
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class StatutoryHoliday:
    """One holiday of a year's official arrangement: its days off and the weekend days
    worked in exchange (调休上班)."""

    name_zh: str
    name_en: str
    days_off: tuple[CalendarDay, ...]
    workdays: tuple[CalendarDay, ...] = ()
    where: Where = field(default=NOWHERE, compare=False)

    @property
    def label(self) -> str:
        """``春节 Spring Festival`` (Chinese, then English when given)."""
        return f"{self.name_zh} {self.name_en}".strip()


@dataclass(frozen=True)
class YearArrangement:
    """A year's holiday arrangement as the State Council published it
    (国务院办公厅关于 YYYY 年部分节假日安排的通知), entered by an admin under ``calendar``."""

    year: int
    notice: str
    """The notice's reference (文号, title or date): where the dates come from."""
    holidays: tuple[StatutoryHoliday, ...]
    where: Where = field(default=NOWHERE, compare=False)


CalendarEntry: TypeAlias = tuple[Literal["off", "workday"], StatutoryHoliday, YearArrangement]


@dataclass(frozen=True)
class Calendar:
    """Every arrangement admins entered, by year, with a date index built once."""

    years: Mapping[int, YearArrangement] = field(default_factory=lambda: MappingProxyType({}))
    _index: Mapping[dt.date, CalendarEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[dt.date, CalendarEntry] = {}
        for year in self.years.values():
            for hol in year.holidays:
                for d in hol.days_off:
                    index.setdefault(d.day, ("off", hol, year))
                for d in hol.workdays:
                    index.setdefault(d.day, ("workday", hol, year))
        object.__setattr__(self, "_index", MappingProxyType(index))

    def covers(self, year: int) -> bool:
        return year in self.years

    def lookup(self, day: dt.date) -> CalendarEntry | None:
        """What an entered arrangement says of ``day`` (the first entry naming it)."""
        return self._index.get(day)


NO_CALENDAR = Calendar()


RECORDING_CHANNELS = ("stereo", "mono")
RECORDING_FORMATS = ("mp3", "opus")
RECORDING_LEVEL_RANGE = (-60.0, 0.0)


@dataclass(frozen=True)
class RecordingRule:
    """How a call is recorded and archived (the ``recordings:`` section, ivr/recordings)."""

    record: bool = True  # callers are told by the recording notice
    channels: str = "stereo"  # stereo: caller left, agent right (MixMonitor r()/t() legs)
    format: str = "mp3"  # archive format: mp3 | opus
    level_dbfs: float = -3.0  # peak level after normalisation


@dataclass(frozen=True)
class RecordingException:
    """An exception for one entry or queue: the keys it sets replace the default's."""

    name: str
    record: bool | None = None
    channels: str | None = None
    format: str | None = None
    level_dbfs: float | None = None
    where: Where = field(default=NOWHERE, compare=False)

    def apply(self, rule: RecordingRule) -> RecordingRule:
        return RecordingRule(
            record=rule.record if self.record is None else self.record,
            channels=rule.channels if self.channels is None else self.channels,
            format=rule.format if self.format is None else self.format,
            level_dbfs=rule.level_dbfs if self.level_dbfs is None else self.level_dbfs,
        )


def _no_exceptions() -> Mapping[str, RecordingException]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Recordings:
    """The recording policy: every call by default, exceptions per entry and per queue
    (a queue's wins over its entry's)."""

    default: RecordingRule = field(default_factory=RecordingRule)
    entries: Mapping[str, RecordingException] = field(default_factory=_no_exceptions)
    queues: Mapping[str, RecordingException] = field(default_factory=_no_exceptions)
    where: Where = field(default=NOWHERE, compare=False)

    def rule_for(self, entry: str | None = None, queue: str | None = None) -> RecordingRule:
        rule = self.default
        if entry and entry in self.entries:
            rule = self.entries[entry].apply(rule)
        if queue and queue in self.queues:
            rule = self.queues[queue].apply(rule)
        return rule


@dataclass(frozen=True)
class Surge:
    """Surge mode (typhoon, outage…): a short announcement and a callback offer."""

    active: bool = False
    prompt: str = "surge"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    offer_callback: bool = True
    where: Where = field(default=NOWHERE, compare=False)

    def on(self, when: dt.datetime) -> bool:
        if not self.active:
            return False
        if self.start is not None and when < self.start:
            return False
        return not (self.end is not None and when >= self.end)


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class StepBase:
    id: str
    where: Where = field(default=NOWHERE, compare=False, kw_only=True)

    def targets(self) -> tuple[Target, ...]:
        return tuple(t for _, t in self.labelled_targets())

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        """(field, target) pairs, e.g. ("option '1'", "queue"), ("next", "bye")."""
        return ()


@dataclass(frozen=True)
class PlayStep(StepBase):
    """Play prompts, then go on.  ``interruptible``: a press-0 or barge-in digit cuts in."""

    prompts: tuple[str, ...]
    next: Target
    interruptible: bool = True
    kind: Literal["play"] = "play"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("next", self.next),)


@dataclass(frozen=True)
class MenuStep(StepBase):
    """Prompt, read one digit, branch.  Invalid/timeout: replay up to ``retries`` times,
    then go to ``on_fail`` (default: the operator queue — nobody is lost in a menu)."""

    prompt: str
    options: Mapping[str, Target]
    """DTMF digit → target."""
    timeout: float = 5.0
    retries: int = 2
    invalid_prompt: str = "invalid"
    timeout_prompt: str = "timeout"
    repeat_digit: str | None = "*"
    on_fail: Target = OPERATOR
    kind: Literal["menu"] = "menu"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (*((f"option '{k}'", v) for k, v in self.options.items()),
                ("on_fail", self.on_fail))


@dataclass(frozen=True)
class LanguageStep(StepBase):
    """Ask for a language (digit → language code), set it, go on.  No answer keeps the
    current language (no caller is held up)."""

    prompt: str
    options: Mapping[str, str]
    next: Target
    timeout: float = 4.0
    retries: int = 1
    kind: Literal["language"] = "language"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("next", self.next),)


@dataclass(frozen=True)
class QueueStep(StepBase):
    """Enter a queue.  ``by_language`` picks another queue for the caller's language.
    When the queue returns without an answer (timeout / empty) go to ``on_timeout``."""

    queue: str
    by_language: Mapping[str, str] = field(default_factory=_empty_map)
    priority: int = 0
    skill: str | None = None
    prompt: str | None = "please-hold"
    on_timeout: Target | None = None
    kind: Literal["queue"] = "queue"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return () if self.on_timeout is None else (("on_timeout", self.on_timeout),)

    def queue_for(self, language: str) -> str:
        return self.by_language.get(language, self.queue)


@dataclass(frozen=True)
class TransferStep(StepBase):
    """Transfer to a department, an external number or an emergency service (一键转接)."""

    to: Literal["department", "external", "emergency"]
    department: str | None = None
    number: str | None = None
    """External number, or 110/119/120/122 for ``emergency``."""
    prompt: str | None = None
    """Default: transfer-<number> for emergency, transfer-dept otherwise."""
    timeout: int = 60
    on_fail: Target = OPERATOR
    kind: Literal["transfer"] = "transfer"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("on_fail", self.on_fail),)


@dataclass(frozen=True)
class TimeStep(StepBase):
    """Branch on opening hours (``hours`` names an Hours spec)."""

    hours: str
    open: Target
    closed: Target
    holiday: Target | None = None
    """Where to go when closed because of a statutory holiday (default ``closed``)."""
    surge: Target | None = None
    """Where to go when surge mode is on (default: ``open``)."""
    kind: Literal["time"] = "time"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        pairs = (("open", self.open), ("closed", self.closed), ("holiday", self.holiday),
                 ("surge", self.surge))
        return tuple((k, v) for k, v in pairs if v)


@dataclass(frozen=True)
class SetStep(StepBase):
    """Set a tag or channel variable (IVR_TAG_<name> in Asterisk), then go on."""

    name: str
    value: str
    next: Target
    kind: Literal["set"] = "set"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("next", self.next),)


@dataclass(frozen=True)
class SubflowStep(StepBase):
    """Run a named sub-flow; when it reaches RETURN continue at ``next``."""

    flow: str
    next: Target
    kind: Literal["subflow"] = "subflow"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("next", self.next),)


@dataclass(frozen=True)
class CallbackStep(StepBase):
    """Offer a callback (1 = yes): confirm and hang up, or go on to ``next`` (the queue)."""

    prompt: str = "callback-offer"
    confirm_prompt: str = "callback-confirm"
    accept_digit: str = "1"
    timeout: float = 5.0
    next: Target = OPERATOR
    """Where callers who decline (or do not answer) go."""
    after: Target = HANGUP
    """Where callers who accepted go."""
    kind: Literal["callback"] = "callback"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("next", self.next), ("after", self.after))


@dataclass(frozen=True)
class TicketStatusStep(StepBase):
    """Look up the caller's tickets in the ticket backend (by caller number) and speak
    the status; on timeout or error speak the fallback prompt.  Then go on."""

    next: Target
    found_prompt: str = "ticket-status-found"
    none_prompt: str = "ticket-status-none"
    unavailable_prompt: str = "ticket-status-unavailable"
    timeout: float = 2.0
    kind: Literal["ticket_status"] = "ticket_status"

    def labelled_targets(self) -> tuple[tuple[str, Target], ...]:
        return (("next", self.next),)


@dataclass(frozen=True)
class HangupStep(StepBase):
    prompt: str | None = "goodbye"
    survey: bool = False
    """Offer the post-call satisfaction survey first (prompts survey/survey-thanks)."""
    kind: Literal["hangup"] = "hangup"


Step: TypeAlias = (
    PlayStep
    | MenuStep
    | LanguageStep
    | QueueStep
    | TransferStep
    | TimeStep
    | SetStep
    | SubflowStep
    | CallbackStep
    | TicketStatusStep
    | HangupStep
)

STEP_KINDS: tuple[str, ...] = (
    "play",
    "menu",
    "language",
    "queue",
    "transfer",
    "time",
    "set",
    "subflow",
    "callback",
    "ticket_status",
    "hangup",
)


# --------------------------------------------------------------------------- flows


@dataclass(frozen=True)
class Operator:
    """Press-0-for-a-person: the digit works during every prompt and menu of the entry."""

    queue: str
    digit: str = "0"
    priority: int = 0
    enabled: bool = True
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Flow:
    """A named sub-flow: steps reusable from several entries (ends with RETURN)."""

    name: str
    start: str
    steps: Mapping[str, Step]
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Entry:
    """What happens when a number is dialled (12345, 12315, 12333, 8890…)."""

    number: str
    name: str
    language: str
    """Default (and channel) language when the call arrives."""
    zero_navigation: bool
    """语音零导航: the default path from ``start`` reaches a queue with no menu."""
    start: str
    steps: Mapping[str, Step]
    operator: Operator
    barge_in: Mapping[str, str] = field(default_factory=_empty_map)
    """Digit → language offered while the greeting plays ("For English, press 9")."""
    context: str = "from-pstn"
    shortcuts: Mapping[str, Target] = field(default_factory=_empty_map)
    """Digit → step: optional keys that work during the greeting of a zero-navigation
    entry (e.g. 2 = 企业服务专席) without making anybody wait for a menu."""
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class TicketApi:
    """The ticket backend's status lookup (by caller number)."""

    url: str
    timeout: float = 2.0


@dataclass(frozen=True)
class Settings:
    default_language: str = "zh"
    general_queue: str = "hotline"
    """The static fallback: where calls go when the FastAGI server is unreachable."""
    dial_context: str = "outbound"
    """Dialplan context external/emergency/department numbers are dialled through
    (Dial(Local/<number>@<dial_context>))."""
    timezone: str = "Asia/Shanghai"
    ticket_api: TicketApi | None = None
    record_notice: bool = True
    """Play recording-notice before queueing."""
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    """Where the rendered dialplan finds the FastAGI server (globals IVR_AGI_HOST/PORT)."""
    agi_backup_host: str = ""
    agi_backup_port: int | None = None
    """A second FastAGI server (globals IVR_AGI_BACKUP_HOST/PORT; the port defaults to
    agi_port): tried when AGI() to the first ends with AGISTATUS=FAILURE, before the
    static fallback.  "" = none."""
    include_files: tuple[str, ...] = ()
    """Site-owned config files #included at the end of the rendered extensions.conf
    (agent and trunk contexts such as ``outbound``); publish never touches them."""


@dataclass(frozen=True)
class Definition:
    version: int
    settings: Settings
    languages: Mapping[str, Language]
    queues: Mapping[str, Queue]
    departments: Mapping[str, Department]
    priority: tuple[PriorityRule, ...]
    hours: Mapping[str, Hours]
    overrides: tuple[Override, ...]
    """Global overrides (apply to every Hours spec unless they list ``hours``)."""
    surge: Surge
    flows: Mapping[str, Flow]
    entries: Mapping[str, Entry]
    """By dialled number."""
    files: tuple[str, ...] = ()
    """Source files, in load order."""
    calendar: Calendar = NO_CALENDAR
    """Holiday arrangements entered by admins (they win over any library)."""
    pause_reasons: Mapping[str, PauseReason] = field(default_factory=_empty_reasons)
    """The reasons an agent may be paused with, by code (``ivr agents pause``)."""
    recordings: Recordings = field(default_factory=Recordings)
    """Which calls are recorded and how they are archived (ivr/recordings)."""
    emergency: Mapping[str, Department] = field(default_factory=_empty_directory)
    """Emergency services (110/119/120/122), by id."""
    interpreters: Mapping[str, Department] = field(default_factory=_empty_directory)
    """Interpreter desks (one per language), by id."""
    partners: Mapping[str, Department] = field(default_factory=_empty_directory)
    """Partner hotlines (other cities' 12345, 12315 …), by id."""
    directory: Mapping[str, Department] = field(init=False, repr=False, compare=False)
    """Every directory entry by id: departments, emergency, interpreters, partners (the
    first section wins when an id is used twice, which validation refuses)."""

    def __post_init__(self) -> None:
        merged: dict[str, Department] = {}
        for section in (self.departments, self.emergency, self.interpreters, self.partners):
            for key, value in section.items():
                merged.setdefault(key, value)
        object.__setattr__(self, "directory", MappingProxyType(merged))

    def enabled_languages(self) -> tuple[str, ...]:
        return tuple(c for c, lang in self.languages.items() if lang.enabled)

    def language_chain(self, code: str) -> tuple[str, ...]:
        """``code`` then its fallback chain, then the default language."""
        lang = self.languages.get(code)
        chain = list(lang.chain if lang else (code,))
        if self.settings.default_language not in chain:
            chain.append(self.settings.default_language)
        return tuple(chain)

    def priority_for(self, caller: str, has_open_ticket: bool = False) -> PriorityRule | None:
        """The highest-priority rule matching the caller, if any."""
        best: PriorityRule | None = None
        for rule in self.priority:
            hit = rule.matches_number(caller) or (rule.open_ticket and has_open_ticket)
            if hit and (best is None or rule.priority > best.priority):
                best = rule
        return best


def steps_of(definition: Definition) -> list[tuple[str, Mapping[str, Step]]]:
    """Every flow's steps: ("entry:<number>", steps) and ("flow:<name>", steps)."""
    out: list[tuple[str, Mapping[str, Step]]] = [
        (f"entry:{n}", e.steps) for n, e in definition.entries.items()
    ]
    out += [(f"flow:{n}", f.steps) for n, f in definition.flows.items()]
    return out
