"""The per-call IVR interpreter, without I/O.

:meth:`CallEngine.run` is a generator: it walks an entry's steps and *yields* what it
needs from the outside world — :class:`Collect` (play prompts and read digits: one
``GET DATA`` round trip for one prompt, ``Read`` + ``GET FULL VARIABLE`` for several),
:class:`Lookup` (the caller's ticket status) — and finally an
:class:`Exit` with the channel variables the rendered dialplan routes on.  The runtime
(:mod:`ivr.flow.runtime`) performs each action over AGI/HTTP and sends the result
back in.  Every step taken is appended to :attr:`CallEngine.steps` as an
:class:`~ivr.calls.steps.IvrStep` for the runtime to report, naming the call by its
Linkedid (:attr:`CallContext.call_id`).

Few round trips is the design goal (each AGI command costs Asterisk CPU):

* consecutive interruptible play steps are merged into one :class:`Collect`, looking
  through time and set steps (they need no I/O); one Collect of several prompts costs 2
  round trips (``EXEC Read IVR_DIGITS,p1&p2&…`` + ``GET FULL VARIABLE``: AGI ``GET DATA``
  plays ONE file, it does not split ``&``), still fewer than one per step;
* prompts that need no input (``invalid``, a confirmation, a ticket-status answer,
  non-interruptible plays) are queued and played in front of the next Collect, or
  handed to the dialplan in ``IVR_PROMPT`` at the exit (a notice, goodbye…); a queue's
  hold prompt (please-hold) goes in ``IVR_HOLD_PROMPT``, played only when no member is
  ready;
* nothing is set on the channel until the exit, where one ``MSet`` sets everything;
* a greeting the rendered dialplan already played (:mod:`ivr.dialplan.greeting`,
  :attr:`CallContext.greeting`) is not played again: its key answers the call's first
  collect, with the same steps reported.

A digit pressed during a merged run of play steps acts as it would during the first
step of the run (press 0, a barge-in language, a shortcut); any other digit skips the
rest of that step.  After a barge-in the following steps play in the new language.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ivr.calls import variables as V
from ivr.calls.steps import IvrStep
from ivr.dialplan import model as m
from ivr.dialplan.greeting import static_greeting
from ivr.dialplan.hours import OpenState, definition_is_open
from ivr.directory import fallback_for, resolve

MAX_STEPS = 200  # per call: a definition loop can never hold a caller forever
MAX_REPEATS = 5  # "*" replays of one menu
PLAY_TIMEOUT_MS = 1  # Collect for a play step: do not wait after the last prompt

LookupStatus = Literal["found", "none", "unavailable"]


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Collect:
    """Play ``prompts`` (Asterisk names) and read up to ``max_digits`` digits; any digit
    interrupts the prompts."""

    prompts: tuple[str, ...]
    timeout_ms: int
    max_digits: int = 1


@dataclass(frozen=True, slots=True)
class Input:
    """What :class:`Collect` got: ``digits`` (empty on timeout); ``failed`` when the
    prompts could not be played (a missing file: no digits were read)."""

    digits: str
    timed_out: bool = False
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Lookup:
    """The caller's ticket status is needed (wait at most ``timeout`` seconds)."""

    timeout: float


@dataclass(frozen=True, slots=True)
class LookupResult:
    status: LookupStatus  # found: has an open ticket; none; unavailable: lookup failed


@dataclass(frozen=True, slots=True)
class Exit:
    """Leave the IVR: set ``variables`` on the channel and return to the dialplan."""

    to: Literal["queue", "transfer", "hangup"]
    variables: tuple[tuple[str, str], ...]
    target: str = ""  # queue name / dialled number / ""

    def get(self, name: str) -> str | None:
        return dict(self.variables).get(name)


Action = Collect | Lookup | Exit
Reply = Input | LookupResult | None


# --------------------------------------------------------------------------- prompts


class PromptIndex:
    """Prompt name + language → the Asterisk name to play (fallback chain applied).

    Built once per definition version (no file system access during a call)."""

    def __init__(
        self,
        resolved: Mapping[tuple[str, str], tuple[str, str]] | None = None,
        prefix: str = "",
    ) -> None:
        self._resolved = dict(resolved or {})
        self.prefix = prefix

    def resolve(self, name: str, language: str) -> tuple[str, str]:
        """(asterisk name, language used)."""
        hit = self._resolved.get((name, language))
        if hit is None:  # unknown here: let Asterisk try the requested language
            return f"{self.prefix}{language}/{name}", language
        return hit

    def __len__(self) -> int:
        return len(self._resolved)


# --------------------------------------------------------------------------- the call


@dataclass
class _Frame:
    steps: Mapping[str, m.Step]
    call_step: str | None = None  # id of the subflow step (in the frame below) that opened it
    return_to: m.Target | None = None
    flow: str = ""


@dataclass
class CallContext:
    """What the engine knows about one call."""

    definition: m.Definition
    entry: m.Entry
    version: str
    uniqueid: str
    caller: str
    dialled: str = ""
    call_id: str = ""  # Asterisk's Linkedid (``?call=``); the channel's uniqueid if empty
    language: str | None = None  # initial language (default: the entry's)
    resume: str | None = None  # IVR_RESUME path when the dialplan calls the IVR again
    greeting: Input | None = None
    """What the caller keyed during the greeting the rendered dialplan already played
    (``?barge=``; :mod:`ivr.dialplan.greeting`): the answer of the call's first collect
    when that collect is this greeting."""
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    prompts: PromptIndex = field(default_factory=PromptIndex)


_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:@/&+\-]*\Z")


def mset_safe(value: str) -> bool:
    """Whether ``value`` can be carried in ``MSet(name=value,…)`` unchanged (no comma,
    quote, backslash, ``=``, ``|`` or space, which MSet's argument parser would alter)."""
    return bool(_SAFE_VALUE.match(value))


class CallEngine:
    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.d = ctx.definition
        self.entry = ctx.entry
        lang = ctx.language or ctx.entry.language
        self.language = lang if lang in self.d.languages else ctx.entry.language
        self.steps: list[IvrStep] = []
        self.tags: dict[str, str] = {}
        self.callback = False
        self.pending: list[str] = []  # prompt names played before the next input / at exit
        self.notice_played = False
        self.lookup: LookupResult | None = None
        self.stack: list[_Frame] = [_Frame(ctx.entry.steps)]
        self.exit: Exit | None = None
        self.at = ""  # path of the step being run (for the prompt events)
        self.greeting = ctx.greeting  # consumed (or dropped) by the first collect
        self.call_id = ctx.call_id or ctx.uniqueid

    # -- reporting ---------------------------------------------------------------------

    def emit(self, kind: str, step: str = "", **data: str) -> None:
        self.steps.append(IvrStep(call_id=self.call_id, uniqueid=self.ctx.uniqueid,
                                  kind=kind, entry=self.entry.number, step=step, data=data))

    def path(self, step_id: str) -> str:
        calls = [f.call_step for f in self.stack[1:] if f.call_step]
        return "/".join([*calls, step_id])

    # -- prompts -----------------------------------------------------------------------

    def _render(self, names: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for name in names:
            asterisk, used = self.ctx.prompts.resolve(name, self.language)
            self.emit("prompt", self.at, prompt=name, language=used)
            if name == "recording-notice":
                self.notice_played = True
            out.append(asterisk)
        return tuple(out)

    def _render_in(self, name: str, language: str) -> str:
        asterisk, used = self.ctx.prompts.resolve(name, language)
        self.emit("prompt", self.at, prompt=name, language=used)
        return asterisk

    def _collect(self, names: list[str], timeout_ms: int,
                 extra: tuple[tuple[str, str], ...] = ()) -> Generator[Action, Reply, Input]:
        """``extra``: (name, language) prompts played after ``names`` in a fixed language."""
        heard = self.notice_played
        preset = self._take_greeting(names, extra)
        prompts = self._render([*self.pending, *names])
        prompts += tuple(self._render_in(name, lang) for name, lang in extra)
        self.pending.clear()
        reply = preset if preset is not None else (yield Collect(prompts, max(1, timeout_ms)))
        if not isinstance(reply, Input):
            raise TypeError(f"Collect needs an Input reply, got {reply!r}")
        if reply.failed:  # go on as after a timeout: retries, then on_fail / the next step
            self.emit("error", self.at, reason="prompt failed: " + "&".join(prompts)[:150])
        if reply.digits:  # a key cut the prompts short: the notice may not have been heard
            self.notice_played = heard
        return reply

    def _take_greeting(self, names: list[str],
                       extra: tuple[tuple[str, str], ...]) -> Input | None:
        """The dialplan's answer to the greeting, when this (the call's first) collect is
        the greeting it played; else None (and the greeting is played here)."""
        preset, self.greeting = self.greeting, None
        if preset is None:
            return None
        expected = static_greeting(self.d, self.entry)
        if (expected is not None and not self.pending and not extra
                and len(self.stack) == 1 and self.language == self.entry.language
                and tuple(names) == expected.prompts):
            return preset
        self.emit("error", self.at, reason="greeting played by the dialplan does not match "
                  "this definition version: played again")
        return None

    def _lookup(self, timeout: float) -> Generator[Action, Reply, LookupResult]:
        if self.lookup is None:
            reply = yield Lookup(timeout)
            if not isinstance(reply, LookupResult):
                raise TypeError(f"Lookup needs a LookupResult reply, got {reply!r}")
            self.lookup = reply
        return self.lookup

    # -- the walk ----------------------------------------------------------------------

    def run(self) -> Generator[Action, Reply, None]:
        ctx = self.ctx
        self.emit("entered", entry=self.entry.number, dialled=ctx.dialled,
                  version=ctx.version, resume=ctx.resume or "")
        target: m.Target = self.entry.start
        if ctx.resume:
            resumed = self._resume(ctx.resume)
            if resumed is None:
                self.emit("error", reason=f"cannot resume at {ctx.resume!r}")
                target = m.OPERATOR
            else:
                target = resumed
        for _ in range(MAX_STEPS):
            nxt = yield from self._go(target)
            if nxt is None:
                return
            target = nxt
        self.emit("error", reason=f"more than {MAX_STEPS} steps: definition loops")
        yield from self._operator()

    def _resume(self, path: str) -> m.Target | None:
        *calls, last = path.split("/")
        for call in calls:
            step = self.stack[-1].steps.get(call)
            if not isinstance(step, m.SubflowStep) or step.flow not in self.d.flows:
                return None
            flow = self.d.flows[step.flow]
            self.stack.append(_Frame(flow.steps, call, step.next, flow.name))
        if last in m.SPECIAL_TARGETS or last in self.stack[-1].steps:
            return last
        return None

    def _go(self, target: m.Target) -> Generator[Action, Reply, m.Target | None]:
        """Run one step (or a merged run of play steps); the next target, or None once
        the call has left the IVR."""
        while target == m.RETURN:
            if len(self.stack) == 1:
                target = m.OPERATOR
                break
            target = self.stack.pop().return_to or m.OPERATOR
        self.at = self.path(target)
        if target == m.OPERATOR:
            yield from self._operator()
            return None
        if target == m.HANGUP:
            yield from self._hangup(m.HangupStep(id=m.HANGUP))
            return None
        step = self.stack[-1].steps.get(target)
        if step is None:
            self.emit("error", reason=f"no step {target!r}")
            yield from self._operator()
            return None
        if isinstance(step, m.PlayStep):
            return (yield from self._play(step))
        if isinstance(step, m.MenuStep):
            return (yield from self._menu(step))
        if isinstance(step, m.LanguageStep):
            return (yield from self._language(step))
        if isinstance(step, m.QueueStep):
            yield from self._queue(step)
            return None
        if isinstance(step, m.TransferStep):
            return (yield from self._transfer(step))
        if isinstance(step, m.TimeStep):
            return self._time(step)
        if isinstance(step, m.SetStep):
            self.tags[step.name] = step.value
            self.emit("tag", self.path(step.id), name=step.name, value=step.value)
            return step.next
        if isinstance(step, m.SubflowStep):
            flow = self.d.flows.get(step.flow)
            if flow is None:
                self.emit("error", self.path(step.id), reason=f"no flow {step.flow!r}")
                return step.next
            self.stack.append(_Frame(flow.steps, step.id, step.next, flow.name))
            return flow.start
        if isinstance(step, m.CallbackStep):
            return (yield from self._callback(step))
        if isinstance(step, m.TicketStatusStep):
            return (yield from self._ticket(step))
        yield from self._hangup(step)
        return None

    # -- digits that work everywhere ---------------------------------------------------

    def _operator_digit(self) -> str | None:
        op = self.entry.operator
        return op.digit if op.enabled else None

    def _play_digits(self) -> dict[str, str]:
        """Digit → meaning ('@operator', 'lang:<code>', 'step:<id>') during play steps."""
        out: dict[str, str] = {}
        if len(self.stack) == 1:
            for d, step_id in self.entry.shortcuts.items():
                out[d] = f"step:{step_id}"
            for d, code in self.entry.barge_in.items():
                out[d] = f"lang:{code}"
        op = self._operator_digit()
        if op is not None:
            out[op] = m.OPERATOR
        return out

    def _set_language(self, code: str, step: str) -> None:
        if code != self.language:
            self.language = code
            self.emit("language", step, language=code)

    # -- steps -------------------------------------------------------------------------

    def _play(self, step: m.PlayStep) -> Generator[Action, Reply, m.Target | None]:
        digits = self._play_digits() if step.interruptible else {}
        if not digits:
            self.pending.extend(step.prompts)
            return step.next
        # Merge the following interruptible play steps into this GET DATA, looking
        # through time and set steps (they need no I/O) on the way.
        names = list(step.prompts)
        steps = self.stack[-1].steps
        seen = {step.id}
        after = step.next
        while after in steps and after not in seen:
            seen.add(after)
            nxt = steps[after]
            if isinstance(nxt, m.TimeStep):
                after = self._time(nxt)
                names.extend(self.pending)
                self.pending.clear()
            elif isinstance(nxt, m.SetStep):
                self.tags[nxt.name] = nxt.value
                self.emit("tag", self.path(nxt.id), name=nxt.name, value=nxt.value)
                after = nxt.next
            elif isinstance(nxt, m.PlayStep) and nxt.interruptible:
                names.extend(nxt.prompts)
                after = nxt.next
            else:
                break
        reply = yield from self._collect(names, PLAY_TIMEOUT_MS)
        d = reply.digits[:1]
        sid = self.path(step.id)
        if not d:
            return after
        meaning = digits.get(d)
        if meaning == m.OPERATOR:
            self.emit("choice", sid, menu=step.id, digits=d, target=m.OPERATOR)
            return m.OPERATOR
        if meaning is not None and meaning.startswith("lang:"):
            self._set_language(meaning[5:], sid)
            return step.next
        if meaning is not None and meaning.startswith("step:"):
            self.emit("choice", sid, menu=step.id, digits=d, target=meaning[5:])
            return meaning[5:]
        self.emit("invalid", sid, menu=step.id, digits=d, attempt="1")
        return step.next

    def _menu(self, step: m.MenuStep) -> Generator[Action, Reply, m.Target | None]:
        sid = self.path(step.id)
        lead: list[str] = []
        attempt = repeats = 0
        op = self._operator_digit()
        while True:
            reply = yield from self._collect([*lead, step.prompt], int(step.timeout * 1000))
            d = reply.digits[:1]
            if d and d in step.options:
                self.emit("choice", sid, menu=step.id, digits=d, target=step.options[d])
                return step.options[d]
            if d and d == op:
                self.emit("choice", sid, menu=step.id, digits=d, target=m.OPERATOR)
                return m.OPERATOR
            if d and d == step.repeat_digit and repeats < MAX_REPEATS:
                repeats += 1
                lead = []
                continue
            attempt += 1
            if d:
                self.emit("invalid", sid, menu=step.id, digits=d, attempt=str(attempt))
                lead = [step.invalid_prompt]
            else:
                self.emit("timeout", sid, menu=step.id, attempt=str(attempt))
                lead = [step.timeout_prompt]
            if attempt > step.retries:
                return step.on_fail

    def _language(self, step: m.LanguageStep) -> Generator[Action, Reply, m.Target | None]:
        sid = self.path(step.id)
        offers = tuple(("lang-offer", code) for code in step.options.values()
                       if code in self.d.languages)
        lead: list[str] = []
        op = self._operator_digit()
        for attempt in range(1, step.retries + 2):
            reply = yield from self._collect([*lead, step.prompt], int(step.timeout * 1000),
                                             extra=offers)
            d = reply.digits[:1]
            if d and d in step.options:
                self.emit("choice", sid, menu=step.id, digits=d, target=step.options[d])
                self._set_language(step.options[d], sid)
                return step.next
            if d and d == op:
                self.emit("choice", sid, menu=step.id, digits=d, target=m.OPERATOR)
                return m.OPERATOR
            if not d:  # no answer keeps the current language: nobody is held up
                self.emit("timeout", sid, menu=step.id, attempt=str(attempt))
                return step.next
            self.emit("invalid", sid, menu=step.id, digits=d, attempt=str(attempt))
            lead = ["invalid"]
        return step.next

    def _time(self, step: m.TimeStep) -> m.Target:
        state = definition_is_open(self.d, step.hours, self.ctx.clock())
        self._hours_decided(self.path(step.id), step.hours, state)
        if state.surge and step.surge:
            return step.surge
        if state:
            return step.open
        if state.prompt:
            self.pending.append(state.prompt)
        if state.holiday and step.holiday:
            return step.holiday
        return step.closed

    def _hours_decided(self, sid: str, hours: str, state: OpenState) -> None:
        """The ``tag`` step that reports an hours decision (call event ``ivr.tag``): the
        reason, the holiday or override behind it, and whether the statutory calendar it
        consulted was provisional (the year's official arrangement not entered yet)."""
        self.emit("tag", sid, name=f"hours:{hours}", value=state.reason,
                  provisional="true" if state.provisional else "false",
                  **({"detail": state.detail} if state.detail else {}))

    def _callback(self, step: m.CallbackStep) -> Generator[Action, Reply, m.Target | None]:
        sid = self.path(step.id)
        reply = yield from self._collect([step.prompt], int(step.timeout * 1000))
        d = reply.digits[:1]
        if d == step.accept_digit:
            self.callback = True
            self.emit("callback", sid, number=self.ctx.caller)
            self.pending.append(step.confirm_prompt)
            return step.after
        if d and d == self._operator_digit():
            self.emit("choice", sid, menu=step.id, digits=d, target=m.OPERATOR)
            return m.OPERATOR
        self.emit("choice" if d else "timeout", sid, menu=step.id, digits=d,
                  target=step.next, attempt="1")
        return step.next

    def _ticket(self, step: m.TicketStatusStep) -> Generator[Action, Reply, m.Target | None]:
        result = yield from self._lookup(step.timeout)
        prompt = {"found": step.found_prompt, "none": step.none_prompt}.get(
            result.status, step.unavailable_prompt)
        self.emit("lookup", self.path(step.id), result=result.status,
                  found="1" if result.status == "found" else "0")
        self.pending.append(prompt)
        return step.next

    # -- exits ---------------------------------------------------------------------------

    def _priority(self, base: int) -> Generator[Action, Reply, tuple[int, str | None, str]]:
        """(priority, queue override, rule name) from the definition's priority rules."""
        rules = self.d.priority
        by_number = self.d.priority_for(self.ctx.caller, False)
        best_ticket = max((r.priority for r in rules if r.open_ticket), default=None)
        has_open = False
        if (best_ticket is not None and self.ctx.caller
                and (by_number is None or best_ticket > by_number.priority)):
            timeout = self.d.settings.ticket_api.timeout if self.d.settings.ticket_api else 2.0
            has_open = (yield from self._lookup(timeout)).status == "found"
        rule = self.d.priority_for(self.ctx.caller, has_open) if self.ctx.caller else None
        if rule is None:
            return base, None, ""
        return max(base, rule.priority), rule.queue, rule.name

    def _resume_path(self, target: m.Target | None) -> str:
        return "" if target is None else self.path(target)

    def _common_vars(self, prompts: list[str]) -> list[tuple[str, str]]:
        lang = self.d.languages.get(self.language)
        chan_lang = lang.channel_language if lang else self.language
        out = [
            (V.CHANNEL_LANGUAGE, chan_lang),
            (V.LANGUAGE, self.language),
            (V.inherited(V.LANG), self.language),
            (V.VERSION, self.ctx.version),
            (V.PROMPT, "&".join(self._render(prompts))),
        ]
        out += [(V.TAG_PREFIX + k, v) for k, v in self.tags.items()]
        if self.callback:
            out.append((V.CALLBACK, "1"))
        return out

    def _finish(self, to: Literal["queue", "transfer", "hangup"], target: str,
                variables: list[tuple[str, str]], sid: str, **data: str
                ) -> Generator[Action, Reply, None]:
        self.pending.clear()
        self.exit = Exit(to, tuple(variables), target)
        self.emit("exit", sid, to=to, target=target, language=self.language, **data)
        yield self.exit

    def _queue_exit(self, queue: str, base_priority: int, prompt: str | None, sid: str,
                    resume: m.Target | None, queue_step: str = ""
                    ) -> Generator[Action, Reply, None]:
        priority, override, rule = yield from self._priority(base_priority)
        queue = override or queue
        prompts = list(self.pending)
        if self.d.settings.record_notice and not self.notice_played \
                and "recording-notice" not in prompts:
            prompts.append("recording-notice")
        variables = [(V.NEXT, "queue"), (V.QUEUE, queue),
                     (V.PRIORITY, str(priority)), (V.RESUME, self._resume_path(resume)),
                     *self._common_vars(prompts)]
        # the hold prompt (please-hold) is the dialplan's to play only when no member of
        # the queue is ready (QUEUE_MEMBER(<queue>,ready) = 0): a caller a member can take
        # is rung at once (docs/dialplans.md, "A shorter way to a person")
        variables.append((V.HOLD_PROMPT, "&".join(self._render([prompt] if prompt else []))))
        # a barge-in key pressed while waiting (queues.conf context=) resumes here
        variables.append((V.QUEUE_STEP, queue_step))
        yield from self._finish("queue", queue, variables, sid, priority=str(priority),
                                rule=rule)

    def _operator(self) -> Generator[Action, Reply, None]:
        op = self.entry.operator
        yield from self._queue_exit(op.queue, op.priority, "please-hold", m.OPERATOR, None)

    def _queue(self, step: m.QueueStep) -> Generator[Action, Reply, None]:
        sid = self.path(step.id)
        yield from self._queue_exit(step.queue_for(self.language), step.priority, step.prompt,
                                    sid, step.on_timeout, sid)

    def _transfer(self, step: m.TransferStep) -> Generator[Action, Reply, m.Target | None]:
        sid = self.path(step.id)
        number = step.number or ""
        if step.to == "department":
            dept = self.d.directory.get(step.department or "")
            if dept is None:
                self.emit("error", sid, reason=f"no department {step.department!r}")
                return step.on_fail
            number = dept.number
            if dept.hours and dept.hours in self.d.hours:
                state = definition_is_open(self.d, dept.hours, self.ctx.clock())
                if not state:
                    self._hours_decided(sid, dept.hours, state)
                    # the directory's fallback: its queue, or along {entry} fallbacks the
                    # first entry open now (ivr.directory.fallback_for)
                    now = self.ctx.clock()
                    offer = fallback_for(self.d, resolve(self.d, dept.name, now=now), now=now)
                    if offer is not None and offer.kind == "queue":
                        self.pending.append("closed-hours")
                        yield from self._queue_exit(offer.name, 0, "please-hold", sid, None)
                        return None
                    if offer is None or offer.target is None or not offer.target.open_now:
                        return step.on_fail
                    self.pending.append("closed-hours")
                    number = offer.target.number
        prompt = step.prompt or (
            f"transfer-{number}" if step.to == "emergency" else "transfer-dept")
        variables = [(V.NEXT, "transfer"), (V.TRANSFER, number),
                     (V.TIMEOUT, str(step.timeout)),
                     (V.RESUME, self._resume_path(step.on_fail)),
                     *self._common_vars([*self.pending, prompt])]
        yield from self._finish("transfer", number, variables, sid, transfer=step.to)
        return None

    def _hangup(self, step: m.HangupStep) -> Generator[Action, Reply, None]:
        sid = self.path(step.id)
        closing = [step.prompt] if step.prompt else []
        if step.survey:
            reply = yield from self._collect(["survey"], 5000)
            d = reply.digits[:1]
            if d:
                self.tags["survey"] = d
                self.emit("tag", sid, name="survey", value=d)
                closing = ["survey-thanks"]
        variables = [(V.NEXT, "hangup"), (V.RESUME, ""),
                     *self._common_vars([*self.pending, *closing])]
        yield from self._finish("hangup", "", variables, sid)
