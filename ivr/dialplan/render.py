"""Render a definition as Asterisk configuration (``extensions.conf``, ``queues.conf``,
``musiconhold.conf``).

Pure: returns text; writing is :mod:`ivr.dialplan.publish`'s job.  Written with
:func:`ivr.asterisk.conf.render_conf`, using only the applications the project's emulator
runs (Answer, NoOp, Set, Read, AGI, GotoIf, Goto, Queue, Dial(Local/…), Playback,
ConfBridge, Hangup; app_queue's QUEUE_MEMBER() function).
Conditions are GotoIf jumps and ``IF()`` inside Set, not ExecIf, so the text means the same
in every Asterisk version and in the emulator.

Call flow of the rendered dialplan::

    [from-pstn] exten => <number>      Answer, CHANNEL(language), entry variables,
                                        NoOp(version marker), AGI(…/ivr?entry=<number>)
                a zero-navigation entry whose greeting never changes (greeting.py) plays
                it first: Read(IVR_BARGE,p1&p2&…,1,,1,0.001), hangs up on READSTATUS=HANGUP,
                then AGI(…?entry=<number>&call=<Linkedid>&barge=${IVR_BARGE}
                &barge_status=${READSTATUS})
                every AGI(): on AGISTATUS=FAILURE, when IVR_AGI_BACKUP_HOST is set, the same
                AGI() to agi://IVR_AGI_BACKUP_HOST:IVR_AGI_BACKUP_PORT (the second server)
    [ivr-route] s                      AGISTATUS != SUCCESS  → static fallback: general queue
                                        IVR_NEXT = queue       → Queue(<IVR_QUEUE>) (known queues);
                                          IVR_HOLD_PROMPT first only if QUEUE_MEMBER(q,ready)=0
                                        IVR_NEXT = transfer    → Dial(Local/<IVR_TRANSFER>@<ctx>)
                                        IVR_NEXT = hangup      → Playback(IVR_PROMPT), Hangup
                                        anything else          → static fallback
                after a queue/transfer returns with IVR_RESUME set → AGI(…&resume=<step>)
                Queue(q,ct,…): the agent ended the call (QUEUESTATUS=CONTINUE) → survey:
                  Read(IVR_SURVEY,<lang>/survey,1,,1,5), one retry on a key not 1–5,
                  AGI(…&survey=<1-5>) → the IVR reports the ``survey`` tag step;
                  no key or a hang-up: no score
    [ivr-queue-<q>] <key>              queues.conf context=: a barge-in key while waiting →
                                        AGI(…&resume=${IVR_QUEUE_STEP}&lang=<l>), or without
                                        the IVR straight to the language's queue
    [ivr-threeway] <conference>        three-way calls (ivr/threeway): Playback of
                                        IVR_TW_ANNOUNCE if set (to an added party before it
                                        joins), ConfBridge(<conference>,default_bridge,
                                        default_user), Hangup
    [ivr-threeway-leg] <number>        an added party's leg: Dial(Local/<number>@<ctx>)
    musiconhold.conf [ivr-offer-<q>]   what a caller of such a queue hears while waiting and
                                        while agents ring (queues.conf musicclass=): the
                                        offer of those keys, each language's lang-offer

Variables the IVR (FastAGI runtime) sets before returning: IVR_NEXT, IVR_QUEUE,
IVR_PRIORITY, IVR_LANGUAGE, IVR_TRANSFER, IVR_TIMEOUT, IVR_RESUME, IVR_PROMPT
(``&``-joined prompts played before the queue, the transfer or the hang-up),
IVR_HOLD_PROMPT (please-hold: only when no member is ready) and IVR_QUEUE_STEP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote

from ivr.asterisk.conf import Category, Item, render_conf
from ivr.calls import variables as V
from ivr.calls.variables import ref
from ivr.dialplan import model as m
from ivr.dialplan.greeting import static_greeting
from ivr.dialplan.loader import definition_digest
from ivr.dialplan.validate import PromptLookup

ROUTE_CONTEXT = "ivr-route"
THREEWAY_CONTEXT = "ivr-threeway"
"""Three-way calls (ivr/threeway): ``exten = <conference>`` joins ConfBridge <conference>;
the caller and the agent are redirected here, each added party is originated here."""
THREEWAY_LEG_CONTEXT = "ivr-threeway-leg"
"""A party added to a three-way call: ``Local/<number>@ivr-threeway-leg`` dials
``Local/<number>@<dial_context>`` (an internal leg: no ticket of its own)."""
EXTENSIONS_CONF = "extensions.conf"
QUEUES_CONF = "queues.conf"
MUSICONHOLD_CONF = "musiconhold.conf"
MUSICONHOLD_SITE_CONF = "musiconhold_site.conf"  # site-owned classes, never generated
RENDERED_FILES: tuple[str, ...] = (EXTENSIONS_CONF, QUEUES_CONF, MUSICONHOLD_CONF)
# where the prompts folder is installed: Asterisk's sounds directory (astdatadir/sounds of
# a Debian/packaged Asterisk), as the rendered dialplan names prompts (``zh/welcome``);
# music-on-hold playlists need absolute paths (res_musiconhold ``mode=playlist``)
SOUNDS_DIR = "/var/lib/asterisk/sounds"
VERSION_MARKER = "IVR dialplan version"

_AGI = f"agi://{ref(V.AGI_HOST)}:{ref(V.AGI_PORT)}/ivr"
_AGI_BACKUP = f"agi://{ref(V.AGI_BACKUP_HOST)}:{ref(V.AGI_BACKUP_PORT)}/ivr"
# the call's id (Asterisk's Linkedid): the IVR reports its steps by it, and its ticket
# lookup leaves this call's own ticket out — it exists from the call's first event
_CALL = f"call={ref(V.CHANNEL_LINKEDID)}"


@dataclass(frozen=True)
class Rendered:
    version: str
    files: Mapping[str, str]
    """File name → text."""


def source_version(directory: Path) -> str:
    """The version hash of a definition directory: sha256 over its files' names and bytes
    (first 16 hex digits)."""
    return definition_digest(directory)[:16]  # an oversized file is not read


def version_marker(version: str) -> str:
    """What the rendered dialplan shows in ``dialplan show`` (and publish looks for)."""
    return f"{VERSION_MARKER} {version}"


def _header(version: str, what: str) -> str:
    return (
        f"{what} for the 12345 hotline IVR, {version_marker(version)}.\n"
        "Generated by `ivr dialplan render` from dialplans/*.yaml: do not edit by hand,\n"
        "edit the definition and run `ivr dialplan publish`.\n"
        "由 `ivr dialplan render` 根据 dialplans/*.yaml 生成，请勿手工修改；"
        "请修改定义后运行 `ivr dialplan publish`。"
    )


class _Ext:
    """Lines of one extension: first ``exten =>``, then ``same =>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[Item] = []
        self._next_label: str | None = None  # the label of the next line added
        self._agis = 0

    def add(self, app: str, label: str | None = None) -> None:
        if self._next_label is not None:
            assert label is None, f"two labels on one line: {label}, {self._next_label}"
            label, self._next_label = self._next_label, None
        if not self.items:
            self.items.append(Item("exten", "=>", f"{self.name},1,{app}"))
            return
        prio = f"n({label})" if label else "n"
        self.items.append(Item("same", "=>", f"{prio},{app}"))

    def agi(self, query: str) -> None:
        """AGI() to the FastAGI server; when it fails (AGISTATUS=FAILURE: connection
        refused, 2 s connect timeout, the server dropped the session — res_agi's
        launch_netscript/run_agi) and a backup server is set (IVR_AGI_BACKUP_HOST), the
        same request to the backup — unless the first already set IVR_NEXT.  The line
        added next is where both go on."""
        self._agis += 1
        done = f"agi{self._agis}-done"
        self.add(f"AGI({_AGI}?{query})")
        self.add(_goto_if(f'"{ref(V.AGISTATUS)}" != "FAILURE"', done))
        self.add(_goto_if(f'"{ref(V.AGI_BACKUP_HOST)}" = ""', done))
        # the first server decided (IVR_NEXT, cleared before every AGI) and only then
        # failed, e.g. on a missing prompt: the route acts on its decision, once
        self.add(_goto_if(f'"{ref(V.NEXT)}" != ""', done))
        self.add(f"NoOp(IVR FastAGI {ref(V.AGI_HOST)}:{ref(V.AGI_PORT)} failed: backup "
                 f"{ref(V.AGI_BACKUP_HOST)}:{ref(V.AGI_BACKUP_PORT)})")
        self.add(f"AGI({_AGI_BACKUP}?{query})")
        self._next_label = done


def _entry_ext(d: m.Definition, e: m.Entry, version: str,
               prompts: PromptLookup | None) -> _Ext:
    x = _Ext(e.number)
    lang = d.languages[e.language].channel_language if e.language in d.languages else e.language
    x.add(f"NoOp({version_marker(version)} entry {e.number})")
    x.add("Answer()")
    x.add(f"Set({V.CHANNEL_LANGUAGE}={lang})")
    x.add(f"Set({V.inherited(V.LANGUAGE)}={e.language})")
    x.add(f"Set({V.inherited(V.ENTRY)}={e.number})")
    x.add(f"Set({V.OPERATOR_QUEUE}={e.operator.queue})")
    x.add(f"Set({V.NEXT}=)")
    greeting = static_greeting(d, e)
    if greeting is None:
        x.agi(f"entry={_query(e.number)}&{_CALL}")
        x.add(f"Goto({ROUTE_CONTEXT},s,1)")
        return x
    # The greeting never changes: play it here (Read splits the & list, skips a missing
    # prompt, stops at the first key) and give the IVR the key, saving its AGI commands.
    files = "&".join(prompt_file(d, name, e.language, prompts) for name in greeting.prompts)
    x.add(f"Read({V.BARGE},{files},1,,1,{_seconds(greeting.timeout_ms)})")
    x.add(_goto_if(f'"{ref(V.READSTATUS)}" = "HANGUP"', "hangup"))  # Read returns 0 on a hang-up
    x.agi(f"entry={_query(e.number)}&{_CALL}&barge={ref(V.BARGE)}"
          f"&barge_status={ref(V.READSTATUS)}")
    x.add(f"Goto({ROUTE_CONTEXT},s,1)")
    x.add("Hangup()", "hangup")
    return x


def _query(value: str) -> str:
    """A value for the AGI URL's query string, percent-encoded: the IVR reads it with
    ``parse_qsl``, where ``+`` would be a space (``+8612345`` -> `` 8612345``) and ``#``
    or ``&`` would cut it."""
    return quote(value, safe="")


def _seconds(ms: int) -> str:
    """Milliseconds as Read's ``timeout`` (seconds, ``atof``; at least 1 ms: 0 would mean
    the default)."""
    return f"{max(1, ms) / 1000:.3f}".rstrip("0").rstrip(".")


def prompt_file(d: m.Definition, name: str, language: str,
                prompts: PromptLookup | None) -> str:
    """The Asterisk file name (``zh/welcome``) of prompt ``name`` in ``language``,
    following the language's fallback chain with the validator's lookup; without a lookup
    (or when no language has it) the requested language."""
    found = None
    if prompts is not None:
        found = prompts(name, language, d.language_chain(language)[1:])
    return f"{found or language}/{name}"


def _goto_if(condition: str, label: str) -> str:
    return f"GotoIf($[{condition}]?{label})"


def _default(name: str, default: str) -> str:
    """``${IF($["${NAME}" = ""]?default:${NAME})}``: the variable, or ``default`` when
    it is empty."""
    return f'${{IF($["{ref(name)}" = ""]?{default}:{ref(name)})}}'


def _language(x: _Ext, label: str | None = None) -> None:
    """Make the caller's language (IVR_LANGUAGE, as the IVR chose it; the IVR also set
    CHANNEL(language)) inheritable, so it follows the call to the agent's channel."""
    x.add(f"Set({V.inherited(V.LANGUAGE)}={_default(V.LANGUAGE, ref(V.CHANNEL_LANGUAGE))})",
          label)


def _play_pending(x: _Ext, label: str) -> None:
    """Prompts the IVR left for the dialplan (IVR_PROMPT: please-hold, goodbye…), once."""
    x.add(_goto_if(f'"{ref(V.PROMPT)}" = ""', label))
    x.add(f"Playback({ref(V.PROMPT)})")
    x.add(f"Set({V.PROMPT}=)", label)


def _route_ext(d: m.Definition, prompts: PromptLookup | None = None) -> _Ext:
    general = d.settings.general_queue
    x = _Ext("s")
    x.add(f"NoOp(IVR route {V.AGISTATUS}={ref(V.AGISTATUS)} {V.NEXT}={ref(V.NEXT)})")
    x.add(_goto_if(f'"{ref(V.AGISTATUS)}" = "HANGUP"', "hangup"))
    x.add(_goto_if(f'"{ref(V.AGISTATUS)}" != "SUCCESS"', "fallback"))
    x.add(_goto_if(f'"{ref(V.NEXT)}" = "queue"', "queue"))
    x.add(_goto_if(f'"{ref(V.NEXT)}" = "transfer"', "transfer"))
    x.add(_goto_if(f'"{ref(V.NEXT)}" = "hangup"', "bye"))
    # static fallback: the IVR server is down or said nothing usable
    x.add(f"NoOp(IVR static fallback: general queue {ref(V.GENERAL_QUEUE)})", "fallback")
    x.add(f"Set({V.QUEUE}={ref(V.GENERAL_QUEUE)})")
    x.add(f"Set({V.RESUME}=)")
    x.add(f"Set({V.PRIORITY}=)")
    x.add(f"Set({V.PROMPT}=)")
    x.add(f"Set({V.HOLD_PROMPT}=)")
    x.add(f"Set({V.QUEUE_STEP}=)")
    _language(x, "queue")
    _play_pending(x, "queue-played")
    x.add(f"Set({V.QUEUE_PRIO}={_default(V.PRIORITY, '0')})")
    names = sorted(d.queues)
    for q in names:
        x.add(_goto_if(f'"{ref(V.QUEUE)}" = "{q}"', f"q-{q}"))
    x.add(f"NoOp(IVR unknown queue {ref(V.QUEUE)}: general queue)")
    x.add(f"Goto(q-{general})")
    for q in names:
        # a member ready now is rung at once; the hold prompt (please-hold) only when none
        # is (app_queue's QUEUE_MEMBER(q,ready): not in use, not paused, not in wrap-up)
        x.add(_goto_if(f"{ref(f'{V.QUEUE_MEMBER}({q},ready)')} > 0", f"qj-{q}"), f"q-{q}")
        x.add(_goto_if(f'"{ref(V.HOLD_PROMPT)}" = ""', f"qj-{q}"))
        x.add(f"Playback({ref(V.HOLD_PROMPT)})")
        x.add(f"Set({V.HOLD_PROMPT}=)", f"qj-{q}")
        # c: when the agent ends the call the caller goes on here (QUEUESTATUS=CONTINUE,
        # set only then) to the survey; without c Asterisk would hang the caller up
        x.add(f"Queue({q},ct,,,{d.queues[q].max_wait})")
        x.add(_goto_if(f'"{ref(V.QUEUESTATUS)}" = "CONTINUE"', "survey"))
        x.add("Goto(after)")
    _language(x, "transfer")
    _play_pending(x, "transfer-played")
    x.add(f"Set({V.TIMEOUT}={_default(V.TIMEOUT, '60')})")
    x.add(f"Dial(Local/{ref(V.TRANSFER)}@{ref(V.DIAL_CONTEXT)},{ref(V.TIMEOUT)})")
    x.add(_goto_if(f'"{ref(V.DIALSTATUS)}" = "ANSWER"', "hangup"))
    x.add(_goto_if(f'"{ref(V.RESUME)}" != ""', "after"))
    x.add(f"Set({V.QUEUE}={ref(V.OPERATOR_QUEUE)})")
    x.add("Goto(queue)")
    # back to the IVR where the definition says (queue on_timeout, transfer on_fail)
    x.add(_goto_if(f'"{ref(V.RESUME)}" = ""', "hangup"), "after")
    x.add(f"Set({V.RESUME_STEP}={ref(V.RESUME)})")
    x.add(f"Set({V.PROMPT}=)")
    x.add(f"Set({V.RESUME}=)")
    x.add(f"Set({V.NEXT}=)")
    # the caller keeps the language chosen before the queue/transfer
    x.agi(f"entry={ref(V.ENTRY)}&{_CALL}&resume={ref(V.RESUME_STEP)}"
          f"&lang={ref(V.LANGUAGE)}")
    x.add("Goto(s,1)")
    _survey(d, x, prompts)
    _language(x, "bye")
    _play_pending(x, "bye-played")
    x.add("Hangup()", "hangup")
    return x


SURVEY_TIMEOUT_S = 5
"""Seconds the survey waits for a key after its prompt."""


def _survey(d: m.Definition, x: _Ext, prompts: PromptLookup | None) -> None:
    """The satisfaction survey (一次一评) after the agent ended the call: one key 1–5 with
    the survey prompt in the call's language; an invalid key asks once more; no key (or a
    second invalid one) ends the call without a score.  The score goes to the IVR's
    FastAGI (``survey=<1-5>``), which reports it as the call's ``survey`` tag step (the
    ``survey.scored`` event), then survey-thanks.  A hang-up during it just ends."""
    x.add(f"Set({V.SURVEY}=)", "survey")
    chain = f"{ref(V.LANGUAGE)}/survey"
    thanks = f"{ref(V.LANGUAGE)}/survey-thanks"
    x.add(f"Set({V.SURVEY_PROMPT}={chain})")
    x.add(f"Set({V.SURVEY_THANKS}={thanks})")
    for lang in d.languages:  # the language's files, following its fallback chain
        same = f'"{ref(V.LANGUAGE)}" = "{lang}"'
        x.add(f"Set({V.SURVEY_PROMPT}=${{IF($[{same}]?"
              f"{prompt_file(d, 'survey', lang, prompts)}:{ref(V.SURVEY_PROMPT)})}})")
        x.add(f"Set({V.SURVEY_THANKS}=${{IF($[{same}]?"
              f"{prompt_file(d, 'survey-thanks', lang, prompts)}:{ref(V.SURVEY_THANKS)})}})")
    x.add(f"Set({V.SURVEY_TRY}=1)")
    x.add(f"Read({V.SURVEY},{ref(V.SURVEY_PROMPT)},1,,1,{SURVEY_TIMEOUT_S})", "survey-ask")
    x.add(_goto_if(f'"{ref(V.READSTATUS)}" = "HANGUP"', "hangup"))
    for digit in "12345":
        x.add(_goto_if(f'"{ref(V.SURVEY)}" = "{digit}"', "survey-scored"))
    x.add(_goto_if(f'"{ref(V.SURVEY)}" = ""', "hangup"))  # no key: no score
    x.add(_goto_if(f'"{ref(V.SURVEY_TRY)}" != "1"', "hangup"))
    x.add(f"Set({V.SURVEY_TRY}=2)")
    x.add("Goto(survey-ask)")
    x.add(f"Set({V.NEXT}=)", "survey-scored")
    x.agi(f"entry={ref(V.ENTRY)}&{_CALL}&survey={ref(V.SURVEY)}")
    x.add(_goto_if(f'"{ref(V.AGISTATUS)}" = "HANGUP"', "hangup"))
    x.add(f"Playback({ref(V.SURVEY_THANKS)})")
    x.add("Goto(hangup)")


def queue_exits(d: m.Definition) -> dict[str, dict[str, tuple[str, str]]]:
    """Queue → {digit: (language, queue)}: the barge-in keys (``barge_in``) a caller
    waiting in that queue may press to leave it for their language's queue (queues.conf
    ``context=``, app_queue's ``valid_exit``).  From every entry's queue steps whose
    ``by_language`` sends that language elsewhere; the first entry (in definition order)
    that gives a digit of a queue wins."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for e in d.entries.values():
        for step in e.steps.values():
            if not isinstance(step, m.QueueStep):
                continue
            for digit, lang in e.barge_in.items():
                target = step.queue_for(lang)
                if target != step.queue and target in d.queues and step.queue in d.queues:
                    out.setdefault(step.queue, {}).setdefault(digit, (lang, target))
    return out


def exit_context(queue: str) -> str:
    """The context a key pressed while waiting in ``queue`` goes to."""
    return f"ivr-queue-{queue}"


def offer_class(queue: str) -> str:
    """The music-on-hold class of a queue whose callers may press a language key: the
    offer of those keys, played while they wait and while agents ring."""
    return f"ivr-offer-{queue}"


def offer_prompts(d: m.Definition, queue: str,
                  prompts: PromptLookup | None = None) -> list[str]:
    """The prompt files (``en/lang-offer``…) of ``queue``'s offer class, in key order —
    each language's own ``lang-offer`` ("For English, press 9", "廣東話服務請按8")."""
    exits = queue_exits(d).get(queue, {})
    return [prompt_file(d, "lang-offer", lang, prompts)
            for _, (lang, _target) in sorted(exits.items())]


def _exit_ext(d: m.Definition, digit: str, lang: str, target: str) -> _Ext:
    """Extension ``digit`` of a queue's exit context: the IVR resumes the queue step the
    caller waited in, in ``lang`` (its ``by_language`` queue, the notice in that language
    if need be); without the IVR (or without a queue step to resume) straight to
    ``target``, the language's queue."""
    x = _Ext(digit)
    x.add(f"NoOp(IVR queue exit: key {digit}, language {lang})")
    x.add(_goto_if(f'"{ref(V.QUEUE_STEP)}" = ""', "static"))
    x.add(f"Set({V.NEXT}=)")
    x.agi(f"entry={ref(V.ENTRY)}&{_CALL}&resume={ref(V.QUEUE_STEP)}&lang={lang}")
    x.add(_goto_if(f'"{ref(V.AGISTATUS)}" = "SUCCESS"', f"{ROUTE_CONTEXT},s,1"))
    x.add(_goto_if(f'"{ref(V.AGISTATUS)}" = "HANGUP"', f"{ROUTE_CONTEXT},s,1"))
    chan_lang = d.languages[lang].channel_language if lang in d.languages else lang
    x.add(f"Set({V.CHANNEL_LANGUAGE}={chan_lang})", "static")
    x.add(f"Set({V.LANGUAGE}={lang})")
    x.add(f"Set({V.QUEUE}={target})")
    for name in (V.PROMPT, V.HOLD_PROMPT, V.QUEUE_STEP, V.RESUME):
        x.add(f"Set({name}=)")
    x.add(f"Goto({ROUTE_CONTEXT},s,queue)")
    return x


def render_extensions(d: m.Definition, version: str,
                      prompts: PromptLookup | None = None) -> str:
    s = d.settings
    cats: list[Category] = [
        Category("general", items=[
            Item("static", "=", "yes"),
            Item("writeprotect", "=", "no"),
            Item("clearglobalvars", "=", "yes"),
        ]),
        Category("globals", items=[
            Item(V.AGI_HOST, "=", s.agi_host),
            Item(V.AGI_PORT, "=", str(s.agi_port)),
            Item(V.AGI_BACKUP_HOST, "=", s.agi_backup_host),
            Item(V.AGI_BACKUP_PORT, "=", str(s.agi_backup_port or s.agi_port)),
            Item(V.DIALPLAN_VERSION, "=", version),
            Item(V.GENERAL_QUEUE, "=", s.general_queue),
            Item(V.DIAL_CONTEXT, "=", s.dial_context),
        ]),
    ]
    contexts: dict[str, list[Item]] = {}
    for e in d.entries.values():
        contexts.setdefault(e.context, []).extend(_entry_ext(d, e, version, prompts).items)
    for name, items in contexts.items():
        cats.append(Category(name, items=items))
    cats.append(Category(ROUTE_CONTEXT, items=_route_ext(d, prompts).items))
    for queue, digits in sorted(queue_exits(d).items()):
        lines: list[Item] = []
        for digit, (lang, target) in sorted(digits.items()):
            lines += _exit_ext(d, digit, lang, target).items
        cats.append(Category(exit_context(queue), items=lines))
    cats += threeway_contexts()
    text = render_conf(cats, header_comment=_header(version, "extensions.conf"))
    if s.include_files:
        text += "".join(f'#include "{f}"\n' for f in s.include_files)
    return text


def threeway_contexts() -> list[Category]:
    """The conference every party of a three-way call joins (ConfBridge, with Asterisk's
    built-in profiles; docs/threeway.md says why a conference and not a bridge), and the
    leg that dials an added party through the dial context."""
    conf = _Ext("_X.")
    conf.add(f"NoOp(IVR three-way conference {ref(V.EXTEN)})")
    conf.add(_goto_if(f'"{ref(V.TW_ANNOUNCE)}" = ""', "join"))
    conf.add(f"Playback({ref(V.TW_ANNOUNCE)})")
    conf.add(f"Set({V.TW_ANNOUNCE}=)", "join")
    conf.add(f"ConfBridge({ref(V.EXTEN)},default_bridge,default_user)")
    conf.add("Hangup()")
    leg = _Ext("_[0-9+*#].")
    leg.add(f"NoOp(IVR three-way leg to {ref(V.EXTEN)})")
    leg.add(f"Dial(Local/{ref(V.EXTEN)}@{ref(V.DIAL_CONTEXT)})")
    leg.add("Hangup()")
    return [Category(THREEWAY_CONTEXT, items=conf.items),
            Category(THREEWAY_LEG_CONTEXT, items=leg.items)]


# (no eventwhencalled / eventmemberstatus: not Asterisk 20 options — app_queue warns
# "Unknown keyword" at every load and always publishes Agent* and QueueMemberStatus)
_QUEUE_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("retry", "1"),
    ("joinempty", "yes"),
    ("leavewhenempty", "no"),
    ("ringinuse", "no"),
    ("announce-frequency", "0"),
    ("setinterfacevar", "yes"),
    ("setqueuevar", "yes"),
)


def render_queues(d: m.Definition, version: str) -> str:
    cats = [Category("general", items=[
        # Asterisk holds who is logged in (docs/agents.md): dynamic members, their
        # penalties, names and pauses (with the reason) survive an Asterisk restart.
        Item("persistentmembers", "=", "yes"),
        Item("shared_lastcall", "=", "yes"),
    ])]
    exits = queue_exits(d)
    for q in d.queues.values():
        items = [Item("strategy", "=", q.strategy), Item("timeout", "=", str(q.timeout)),
                 Item("wrapuptime", "=", str(q.wrapup))]
        items += [Item(k, "=", v) for k, v in _QUEUE_DEFAULTS]
        if q.name in exits:  # a barge-in key pressed while waiting leaves the queue
            items.append(Item("context", "=", exit_context(q.name)))
            # and the caller is told so while waiting and while agents ring
            items.append(Item("musicclass", "=", offer_class(q.name)))
        items += [Item("member", "=>", member) for member in q.members]
        cats.append(Category(q.name, items=items))
    return render_conf(cats, header_comment=_header(version, "queues.conf"))


def render_musiconhold(d: m.Definition, version: str,
                       prompts: PromptLookup | None = None) -> str:
    """One ``mode = playlist`` class per queue with language keys (``offer_class``): the
    offer of each key in its language, in a loop — what the caller hears instead of
    music from joining the queue until an agent answers (app_queue plays the queue's
    ``musicclass`` while waiting and while members ring; it stops when one answers)."""
    # the file replaces Asterisk's own musiconhold.conf: its stock ``default`` class (the
    # sample's, music from astdatadir/moh) stays, for every other hold and queue
    cats: list[Category] = [Category("default", items=[Item("mode", "=", "files"),
                                                       Item("directory", "=", "moh")])]
    for queue in sorted(queue_exits(d)):
        items = [Item("mode", "=", "playlist")]
        items += [Item("entry", "=", f"{SOUNDS_DIR}/{f}")
                  for f in offer_prompts(d, queue, prompts)]
        cats.append(Category(offer_class(queue), items=items))
    # the site's own further classes (never ``default`` or ``ivr-offer-*``), if it has any
    return (render_conf(cats, header_comment=_header(version, MUSICONHOLD_CONF))
            + f'#tryinclude "{MUSICONHOLD_SITE_CONF}"\n')


def render(d: m.Definition, version: str, prompts: PromptLookup | None = None) -> Rendered:
    """All generated files for ``d`` stamped with ``version`` (``prompts``: the prompt
    lookup the validator used, to name the greeting's files)."""
    return Rendered(version, MappingProxyType({
        EXTENSIONS_CONF: render_extensions(d, version, prompts),
        QUEUES_CONF: render_queues(d, version),
        MUSICONHOLD_CONF: render_musiconhold(d, version, prompts),
    }))


def entry_contexts(d: m.Definition) -> Iterable[tuple[str, str]]:
    """(number, context) of every entry: what publish asks ``dialplan show`` about."""
    return [(e.number, e.context) for e in d.entries.values()]
