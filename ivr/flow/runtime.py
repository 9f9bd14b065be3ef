"""The FastAGI IVR: runs the dialplan definition for each call over the typed AGI channel.

::

    store = DefinitionStore("dialplans", prompts_dir="prompts")
    store.load()                                   # at start (raises DialplanError)
    runtime = IvrRuntime(store, reporter=report, tickets=HttpTicketLookup(url))
    server.add_route("ivr", runtime.handle)        # agi://host:4573/ivr?entry=12345
    await store.reload()                           # on publish; a broken version is refused

Each call captures the definition version current when it starts and finishes on it,
whatever reloads happen meanwhile.  The walk itself is :class:`ivr.flow.engine.
CallEngine` (no I/O); this module only performs its actions: :func:`collect` for prompts
and digits (``GET DATA`` for one prompt; ``EXEC Read`` + ``GET FULL VARIABLE`` for a
list), the ticket lookup, and one ``EXEC MSet`` for the exit variables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ivr.agi.channel import AGIChannel, DataResult
from ivr.agi.errors import AGICommandError, AGIError, AGIHangup
from ivr.calls import variables as V
from ivr.calls.steps import IvrStep, StepReporter
from ivr.dialplan import model as m
from ivr.dialplan import statutory
from ivr.dialplan.errors import DialplanError
from ivr.dialplan.loader import definition_digest, load_definition
from ivr.flow.engine import (
    Action,
    CallContext,
    CallEngine,
    Collect,
    Exit,
    Input,
    Lookup,
    LookupResult,
    LookupStatus,
    PromptIndex,
    Reply,
    mset_safe,
)
from ivr.flow.ticket_lookup import HttpTicketLookup, TicketLookup
from ivr.log import event
from ivr.metrics import METRICS
from ivr.privacy import mask_number

log = logging.getLogger(__name__)

MSET_MAX_PAIRS = 24  # Asterisk before 16 parsed at most 24 pairs per MSet; stay under it


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Snapshot:
    """One loaded definition version, with its prompts resolved."""

    definition: m.Definition
    version: str
    prompts: PromptIndex
    loaded_at: float


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    version: str  # the version now serving (the old one when refused)
    changed: bool = False
    error: str = ""


def definition_version(directory: Path) -> str:
    """A short content hash of the definition files."""
    return definition_digest(directory)[:12]  # an oversized file is not read


def build_prompt_index(d: m.Definition, prompts_dir: Path | None, prefix: str = "",
                       names: Sequence[str] = ()) -> PromptIndex:
    """Resolve every prompt the definition can play, in every language, once."""
    if prompts_dir is None:
        return PromptIndex(prefix=prefix)
    from ivr.dialplan.validate import prompt_uses
    from ivr.prompts import resolve_prompt
    from ivr.prompts.catalog import PROMPT_NAMES

    wanted = dict.fromkeys([*PROMPT_NAMES, *names, *(n for n, _ in prompt_uses(d))])
    resolved: dict[tuple[str, str], tuple[str, str]] = {}
    for code in d.languages:
        chain = d.language_chain(code)
        for name in wanted:
            hit = resolve_prompt(prompts_dir, name, code, chain)
            if hit is not None:
                resolved[(name, code)] = (prefix + hit.asterisk_name, hit.language)
    return PromptIndex(resolved, prefix)


class DefinitionStore:
    """The current definition; ``reload()`` swaps it atomically or keeps the old one."""

    def __init__(self, directory: str | Path, *, prompts_dir: str | Path | None = None,
                 sound_prefix: str = "") -> None:
        self.directory = Path(directory)
        self.prompts_dir = Path(prompts_dir) if prompts_dir is not None else None
        self.sound_prefix = sound_prefix
        self._current: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._waiters: list[asyncio.Future[ReloadResult]] = []

    @property
    def current(self) -> Snapshot:
        if self._current is None:
            raise RuntimeError("DefinitionStore: no definition loaded (call load() first)")
        return self._current

    def _build(self) -> Snapshot:
        definition = load_definition(self.directory)
        this_year = dt.date.today().year
        statutory.warm(range(this_year - 1, this_year + 2))  # off the calls' path
        version = definition_version(self.directory)
        prompts = build_prompt_index(definition, self.prompts_dir, self.sound_prefix)
        return Snapshot(definition, version, prompts, time.time())

    def load(self) -> Snapshot:
        """Load at start (blocking; raises :class:`DialplanError` when invalid)."""
        self._current = self._build()
        event(log, logging.INFO, "ivr.definition.loaded", version=self._current.version,
              entries=list(self._current.definition.entries))
        return self._current

    async def reload(self) -> ReloadResult:
        """Load the directory again; on success new calls use it, calls in progress
        finish on the version they started with.  A broken version is refused."""
        result = await self._reload()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(result)
        return result

    def next_reload(self) -> asyncio.Future[ReloadResult]:
        """A future resolved with the result of the next reload (tests, admin tools)."""
        fut: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    async def watch(self, interval: float = 2.0) -> None:
        """Reload whenever the files' content hash changes (a publish rewrote them);
        run as a task, cancel to stop.  A broken version is refused once per change.
        Nothing a definition holds ends the watch: any failure is logged
        (``ivr.definition.watch_failed``), the running version stays, watching goes on."""
        seen = self._current.version if self._current else ""
        failing = ""  # the last failure logged: a lasting one is logged once
        while True:
            await asyncio.sleep(interval)  # the files are external: nothing to await
            try:
                version = await asyncio.to_thread(definition_version, self.directory)
                failing = ""
                if version != seen:
                    seen = version
                    await self.reload()
            except Exception as exc:  # the watch must outlive any file and any bug
                METRICS.inc("ivr.definition.watch_failed")
                if _describe(exc) != failing:
                    failing = _describe(exc)
                    event(log, logging.WARNING if isinstance(exc, OSError) else logging.ERROR,
                          "ivr.definition.watch_failed", error=failing,
                          keeping=self._current.version if self._current else "")

    async def _reload(self) -> ReloadResult:
        async with self._lock:
            old = self._current
            try:
                snap = await asyncio.to_thread(self._build)  # off the event loop
            except Exception as exc:  # DialplanError, OSError, and whatever else: refused
                METRICS.inc("ivr.definition.reload_refused")
                event(log, logging.ERROR, "ivr.definition.reload_refused",
                      error=_describe(exc), keeping=old.version if old else "")
                return ReloadResult(False, old.version if old else "", False, _describe(exc))
            self._current = snap
            changed = old is None or old.version != snap.version
            METRICS.inc("ivr.definition.reloaded")
            event(log, logging.INFO, "ivr.definition.reloaded", version=snap.version,
                  changed=changed)
            return ReloadResult(True, snap.version, changed)


def _describe(exc: BaseException) -> str:
    """One bounded line for a log or a ReloadResult: a DialplanError's message, or the
    type and message of anything unexpected."""
    text = str(exc) if isinstance(exc, DialplanError | OSError) else (
        f"{type(exc).__name__}: {exc}")
    return text[:500]


# --------------------------------------------------------------------------- the handler


def _lookup_may_raise_priority(d: m.Definition, caller: str) -> bool:
    """Whether an open ticket would give this caller a higher priority than the lists."""
    best_ticket = max((r.priority for r in d.priority if r.open_ticket), default=None)
    if best_ticket is None:
        return False
    by_number = d.priority_for(caller, False)
    return by_number is None or best_ticket > by_number.priority


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IvrRuntime:
    """``handle(channel)`` is the FastAGI route handler."""

    def __init__(
        self,
        store: DefinitionStore,
        *,
        reporter: StepReporter | None = None,
        tickets: TicketLookup | None = None,
        ticket_secret: bytes | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        answer: bool = False,
        play_exit_prompts: bool = False,
    ) -> None:
        self.store = store
        # The rendered dialplan plays IVR_PROMPT before Queue/Dial/Hangup; with
        # play_exit_prompts the runtime plays it itself (one more round trip).
        self.play_exit_prompts = play_exit_prompts
        self.reporter = reporter
        self.tickets = tickets  # None: use the definition's settings.ticket_api
        self.ticket_secret = ticket_secret  # signs those lookups ([tickets] secret)
        self._own_tickets: dict[tuple[str, float], HttpTicketLookup] = {}
        self.clock = clock
        self.answer = answer  # the rendered dialplan answers before AGI: no ANSWER here
        self._warned_no_call_id = False

    async def handle(self, channel: AGIChannel) -> None:
        snap = self.store.current  # this call's version, whatever reloads follow
        env = channel.env
        query = env.query
        d = snap.definition
        key = query.get("entry") or env.extension
        entry = d.entries.get(key) or d.entries.get(env.extension)
        caller = env.callerid if env.callerid not in ("", "unknown") else ""
        if "survey" in query:  # the rendered dialplan's post-call survey, not a call
            await self._survey(channel, key, query["survey"])
            return
        METRICS.inc("ivr.calls")
        if entry is None:
            await self._no_entry(channel, snap, key)
            return
        lang = query.get("lang") or None
        ctx = CallContext(
            definition=d, entry=entry, version=snap.version, uniqueid=env.uniqueid,
            call_id=self._call_id(channel, query), caller=caller, dialled=env.extension,
            language=lang if lang in d.languages else None,
            resume=query.get("resume") or None, clock=self.clock, prompts=snap.prompts,
            greeting=greeting_input(query),
        )
        engine = CallEngine(ctx)
        lookup: asyncio.Task[LookupStatus] | None = None
        tickets = self._tickets_for(d)
        if caller and tickets is not None and _lookup_may_raise_priority(d, caller):
            # overlaps the greeting; this call's own ticket is not a previous request
            lookup = asyncio.create_task(tickets.status(caller, exclude_call=ctx.call_id))
        try:
            if self.answer:
                await channel.answer()
            await self._drive(channel, engine, lookup, tickets)
        except AGIHangup:
            METRICS.inc("ivr.calls.caller_hangup")
            engine.emit("exit", to="caller-hangup", target="", language=engine.language)
        except Exception as exc:  # AGI errors, and bugs: the caller still reaches a person
            METRICS.inc("ivr.calls.failed")
            log.error("ivr.call.failed", exc_info=not isinstance(exc, AGIError | OSError),
                      extra={"fields": {"channel": env.channel, "caller": mask_number(caller),
                                        "error": f"{type(exc).__name__}: {exc}"[:300]}})
            engine.emit("error", reason=f"{type(exc).__name__}: {exc}"[:200])
            await self._fallback(channel, entry.operator.queue)
        finally:
            if lookup is not None and not lookup.done():
                lookup.cancel()
            await self._report(engine.steps)

    def _call_id(self, channel: AGIChannel, query: Mapping[str, str]) -> str:
        """The call's Linkedid, which the rendered dialplan passes as ``?call=``.

        Without it (a dialplan not rendered by ``ivr dialplan render``; the AGI
        environment has no Linkedid) the channel's ``Uniqueid`` stands in: Asterisk gives
        a call's first channel its own Uniqueid as Linkedid, so that is right when the IVR
        runs on the caller's channel, and wrong on a later leg (``Local/…;2``), whose
        steps then name no call the event builder knows.  Said once in the log."""
        env = channel.env
        call_id = query.get("call", "")
        if call_id:
            return call_id
        METRICS.inc("ivr.calls.no_call_id")
        if not self._warned_no_call_id:
            self._warned_no_call_id = True
            event(log, logging.WARNING, "ivr.call.no_call_id", channel=env.channel,
                  request=env.network_script[:200], using="agi_uniqueid",
                  fix="AGI(agi://…/ivr?entry=…&call=${CHANNEL(linkedid)})")
        return env.uniqueid

    def ticket_lookup(self) -> TicketLookup | None:
        """The ticket-status lookup calls use now (the console's "open tickets")."""
        return self._tickets_for(self.store.current.definition)

    def _tickets_for(self, d: m.Definition) -> TicketLookup | None:
        if self.tickets is not None:
            return self.tickets
        api = d.settings.ticket_api
        if api is None:
            return None
        key = (api.url, api.timeout)
        if key not in self._own_tickets:
            self._own_tickets[key] = HttpTicketLookup(api.url, api.timeout,
                                                      secret=self.ticket_secret)
        return self._own_tickets[key]

    async def close(self) -> None:
        """Close the HTTP sessions the runtime opened for the ticket API."""
        for client in self._own_tickets.values():
            await client.close()
        self._own_tickets.clear()

    async def _drive(self, channel: AGIChannel, engine: CallEngine,
                     lookup: asyncio.Task[LookupStatus] | None,
                     tickets: TicketLookup | None) -> None:
        gen = engine.run()
        action: Action = next(gen)
        while True:
            reply: Reply = None
            if isinstance(action, Collect):
                await self._report(engine.steps)
                data = await collect(channel, action.prompts, action.timeout_ms,
                                     action.max_digits)
                if data.failed:
                    METRICS.inc("ivr.collect.failed")
                reply = Input(data.digits, data.timed_out, data.failed)
            elif isinstance(action, Lookup):
                if lookup is None and tickets is not None and engine.ctx.caller:
                    lookup = asyncio.create_task(
                        tickets.status(engine.ctx.caller, exclude_call=engine.ctx.call_id))
                reply = LookupResult(await self._await_lookup(lookup, action.timeout))
            elif isinstance(action, Exit):
                prompt = action.get(V.PROMPT)
                if self.play_exit_prompts and prompt:
                    await channel.exec("Playback", prompt)
                await self._set_exit(channel, action)
                METRICS.inc(f"ivr.exit.{action.to}")
            try:
                action = gen.send(reply)
            except StopIteration:
                return

    @staticmethod
    async def _await_lookup(task: asyncio.Task[LookupStatus] | None, limit: float
                            ) -> LookupStatus:
        if task is None:
            return "unavailable"
        try:
            return await asyncio.wait_for(asyncio.shield(task), limit)
        except TimeoutError:
            METRICS.inc("ivr.ticket_lookup.timeout")
            return "unavailable"
        except Exception as exc:  # the lookup must never break a call
            METRICS.inc("ivr.ticket_lookup.unavailable")
            event(log, logging.WARNING, "ivr.ticket_lookup.error", error=repr(exc)[:200])
            return "unavailable"

    @staticmethod
    async def _set_exit(channel: AGIChannel, action: Exit) -> None:
        """All exit variables in one ``EXEC MSet`` (values MSet would alter go one by one
        with ``SET VARIABLE``)."""
        await set_variables(channel, action.variables)

    async def _survey(self, channel: AGIChannel, entry: str, score: str) -> None:
        """The score the rendered dialplan's survey read (``survey=<1-5>``, after the
        agent ended the call): reported as the call's ``survey`` tag step, which the
        event builder makes ``survey.scored``.  Reported by the FastAGI session on the
        caller's channel, after every step the IVR reported for the call (the session
        before it ended before the queue), so the call's order holds.  Anything but one
        digit 1–5 is no score (logged)."""
        if score not in ("1", "2", "3", "4", "5"):
            METRICS.inc("ivr.survey.bad_score")
            event(log, logging.WARNING, "ivr.survey.bad_score", score=score[:20],
                  channel=channel.env.channel)
            return
        METRICS.inc("ivr.survey.scored")
        step = IvrStep(call_id=self._call_id(channel, channel.env.query),
                       uniqueid=channel.env.uniqueid, kind="tag", entry=entry,
                       step="survey", data={"name": "survey", "value": score})
        await self._report([step])

    async def _no_entry(self, channel: AGIChannel, snap: Snapshot, key: str) -> None:
        METRICS.inc("ivr.calls.unknown_entry")
        event(log, logging.WARNING, "ivr.call.unknown_entry", entry=key,
              extension=channel.env.extension, channel=channel.env.channel)
        step = IvrStep(call_id=self._call_id(channel, channel.env.query),
                       uniqueid=channel.env.uniqueid, kind="error", entry=key,
                       data={"reason": f"no entry {key!r} in version {snap.version}"})
        await self._report([step])
        await self._fallback(channel, snap.definition.settings.general_queue)

    async def _fallback(self, channel: AGIChannel, queue: str) -> None:
        if channel.hung_up:
            return
        try:
            await set_variables(channel, ((V.NEXT, "queue"), (V.QUEUE, queue),
                                          (V.PRIORITY, "0"), (V.RESUME, "")))
        except AGIError as exc:
            event(log, logging.WARNING, "ivr.call.fallback_failed", error=str(exc)[:200])

    async def _report(self, steps: list[IvrStep]) -> None:
        if not steps:
            return
        batch = list(steps)
        steps.clear()
        if self.reporter is None:
            return
        for step in batch:
            try:
                await self.reporter(step)
            except Exception as exc:  # a reporter must never break a call
                METRICS.inc("ivr.steps.report_failed")
                event(log, logging.WARNING, "ivr.step.report_failed", kind=step.kind,
                      error=repr(exc)[:200])


_KEYS = frozenset("0123456789*#ABCD")


def greeting_input(query: Mapping[str, str]) -> Input | None:
    """What the rendered dialplan's greeting ``Read`` got (``barge=${IVR_BARGE}&
    barge_status=${READSTATUS}``), or None when it played no greeting (no ``barge``) or
    sent something unusable (then the IVR plays the greeting itself)."""
    if "barge" not in query:
        return None
    digits = query["barge"]
    status = query.get("barge_status", "")
    if len(digits) > 1 or not set(digits) <= _KEYS:
        METRICS.inc("ivr.greeting.bad_barge")
        event(log, logging.WARNING, "ivr.greeting.bad_barge", barge=digits[:20],
              status=status[:20])
        return None
    if status in ("OK", "TIMEOUT", ""):
        return Input(digits, timed_out=status == "TIMEOUT" or (not status and not digits))
    METRICS.inc("ivr.collect.failed")  # ERROR: the greeting's last prompt could not play
    return Input("", failed=True)


async def collect(channel: AGIChannel, prompts: Sequence[str], timeout_ms: int,
                  max_digits: int = 1) -> DataResult:
    """Play ``prompts`` (any digit interrupts them) and read digits, correctly on a real
    Asterisk 20 with the fewest round trips:

    * one prompt: ``GET DATA prompt timeout max_digits`` — 1 round trip, digits in the
      reply;
    * several: ``EXEC Read`` (its ``&`` list) + ``GET FULL VARIABLE`` — 2 round trips.
      ``GET DATA a&b`` would not do: res_agi's ``handle_getdata`` streams ``a&b`` as ONE
      file name (``ast_app_getdata_full``) and answers ``result=-1``.
    """
    if len(prompts) <= 1:
        return await channel.get_data(prompts[0] if prompts else "", timeout_ms, max_digits)
    return await channel.read_digits(prompts, timeout_ms, max_digits, variable=V.DIGITS)


async def set_variables(channel: AGIChannel, variables: Sequence[tuple[str, str]]) -> None:
    """Set channel variables with as few round trips as Asterisk allows."""
    safe: list[tuple[str, str]] = []
    unsafe: list[tuple[str, str]] = []
    for k, v in variables:
        ok = mset_safe(v) and mset_safe(k.replace("(", "").replace(")", ""))
        (safe if ok else unsafe).append((k, v))
    for i in range(0, len(safe), MSET_MAX_PAIRS):
        chunk = safe[i:i + MSET_MAX_PAIRS]
        try:
            await channel.exec("MSet", *(f"{k}={v}" for k, v in chunk))
        except AGICommandError as exc:  # a PBX without MSet: one SET VARIABLE each
            METRICS.inc("ivr.mset_unavailable")
            event(log, logging.WARNING, "ivr.mset_unavailable", error=str(exc)[:200])
            unsafe[:0] = chunk
    for k, v in unsafe:
        await channel.set_variable(k, v)
