"""Checks on a parsed definition: references, the step graph, digits, hours, the holiday
calendar, prompts.

Pure functions over the model (the prompt check takes a lookup function, so the only
I/O is in that function).  Every problem names the YAML position of the thing at fault.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ivr.dialplan import model as m
from ivr.dialplan.errors import Problem
from ivr.dialplan.hours import local_time
from ivr.dialplan.statutory import statutory_days, year_source

PromptLookup = Callable[[str, str, Sequence[str]], str | None]
"""(name, language, fallback chain) → the language that has the prompt, or None."""

PromptFormatCheck = Callable[[str, str], str | None]
"""(name, language that has it) → why Asterisk could not play that file, or None."""

_RESERVED_CONTEXTS = frozenset({"general", "globals", "ivr-route"})
# queues.conf's [general] holds app_queue's own settings: a queue of that name would be
# read as settings, not as a queue
_RESERVED_QUEUES = frozenset({"general"})

# Steps that do not wait for anything: a loop made only of these spins forever.
_INSTANT = (m.SetStep, m.TimeStep, m.SubflowStep)


def _err(where: m.Where, message: str) -> Problem:
    return Problem(where, message)


def _warn(where: m.Where, message: str) -> Problem:
    return Problem(where, message, "warning")


# --------------------------------------------------------------------------- refs


def _check_references(d: m.Definition) -> list[Problem]:
    out: list[Problem] = []
    s = d.settings
    if s.default_language not in d.languages:
        out.append(_err(m.Where(d.files[0] if d.files else "<memory>", 1, 1),
                        f"settings.default_language '{s.default_language}' is not a defined "
                        "language"))
    if s.general_queue not in d.queues:
        out.append(_err(m.Where(d.files[0] if d.files else "<memory>", 1, 1),
                        f"undefined queue '{s.general_queue}' in settings.general_queue "
                        f"(defined: {_names(d.queues)})"))
    for lang in d.languages.values():
        for fb in lang.fallback:
            if fb == lang.code:
                out.append(_err(lang.where, f"language '{lang.code}' lists itself as fallback"))
            elif fb not in d.languages:
                out.append(_err(lang.where, f"language '{lang.code}' falls back to undefined "
                                f"language '{fb}'"))
    for q in d.queues.values():
        if q.name in _RESERVED_QUEUES:
            out.append(_err(q.where, f"queue name '{q.name}' is reserved (queues.conf's "
                            f"[{q.name}] section holds app_queue's settings) / 队列名称为保留字"))
        for code in q.languages:
            if code not in d.languages:
                out.append(_err(q.where, f"queue '{q.name}' lists undefined language '{code}'"))
        if q.hours is not None and q.hours not in d.hours:
            out.append(_err(q.where, f"queue '{q.name}': undefined hours '{q.hours}' "
                            f"(defined: {_names(d.hours)}) / 队列引用了未定义的工作时间"))
    for rule in d.priority:
        if rule.queue is not None and rule.queue not in d.queues:
            out.append(_err(rule.where, f"priority rule '{rule.name}': undefined queue "
                            f"'{rule.queue}' (defined: {_names(d.queues)})"))
    overrides = list(d.overrides)
    for h in d.hours.values():
        overrides.extend(h.overrides)
    for o in overrides:
        for name in o.hours:
            if name not in d.hours:
                out.append(_err(o.where, f"override applies to undefined hours '{name}' "
                                f"(defined: {_names(d.hours)})"))
    for exc in d.recordings.entries.values():
        if exc.name not in d.entries:
            out.append(_err(exc.where, f"recordings.entries: undefined entry '{exc.name}' "
                            f"(defined: {_names(d.entries)}) / 录音策略引用了不存在的入口"))
    for exc in d.recordings.queues.values():
        if exc.name not in d.queues:
            out.append(_err(exc.where, f"recordings.queues: undefined queue '{exc.name}' "
                            f"(defined: {_names(d.queues)}) / 录音策略引用了不存在的队列"))
    return out


# --------------------------------------------------------------------------- directory

_SECTION_OF = m.DIRECTORY_SECTIONS


def _check_directory(d: m.Definition) -> list[Problem]:
    """The directory (departments, emergency services, interpreter desks, partner
    hotlines): one id namespace, one entry per number, references that exist, fallback
    chains that end, departments under a department of a higher level, one interpreter
    desk per language."""
    out: list[Problem] = []
    entries: list[m.Department] = [
        *d.departments.values(), *d.emergency.values(), *d.interpreters.values(),
        *d.partners.values()]
    first_id: dict[str, m.Department] = {}
    by_number: dict[str, m.Department] = {}
    by_language: dict[str, m.Department] = {}
    for dep in entries:
        noun = f"{dep.kind} '{dep.name}'"
        other = first_id.setdefault(dep.name, dep)
        if other is not dep:
            out.append(_err(dep.where, f"directory id '{dep.name}' of {_SECTION_OF[dep.kind]} "
                            f"is already used in {_SECTION_OF[other.kind]} at {other.where} "
                            "/ 目录编号重复"))
        same = by_number.setdefault(dep.number, dep)
        if same is not dep:
            out.append(_err(dep.where, f"{noun}: number {dep.number} is already the number of "
                            f"{same.kind} '{same.name}' at {same.where} / 号码重复"))
        if dep.kind != "emergency" and dep.number in m.EMERGENCY_NUMBERS:
            out.append(_err(dep.where, f"{noun}: {dep.number} is an emergency number: list it "
                            "under 'emergency:' (one-key transfer) / 紧急号码请写在 emergency 中"))
        if dep.number in d.entries:
            out.append(_err(dep.where, f"{noun}: {dep.number} is an entry of this hotline "
                            "(dialling it would reach this hotline again) / 该号码是本热线的入口"))
        if dep.hours is not None and dep.hours not in d.hours:
            out.append(_err(dep.where, f"{noun}: undefined hours '{dep.hours}' "
                            f"(defined: {_names(d.hours)}) / 未定义的工作时间"))
        if dep.fallback_queue is not None and dep.fallback_queue not in d.queues:
            out.append(_err(dep.where, f"{noun}: undefined fallback queue "
                            f"'{dep.fallback_queue}' (defined: {_names(d.queues)}) / "
                            "兜底队列不存在"))
        if dep.fallback_entry is not None:
            if dep.fallback_entry == dep.name:
                out.append(_err(dep.where, f"{noun}: falls back to itself / 兜底指向自身"))
            elif dep.fallback_entry not in d.directory:
                out.append(_err(dep.where, f"{noun}: undefined fallback entry "
                                f"'{dep.fallback_entry}' (defined: {_names(d.directory)}) "
                                "/ 兜底目录条目不存在"))
        if dep.language is not None:
            if dep.language not in d.languages:
                out.append(_err(dep.where, f"{noun}: undefined language '{dep.language}' "
                                f"(defined: {_names(d.languages)}) / 未定义的语言"))
            else:
                desk = by_language.setdefault(dep.language, dep)
                if desk is not dep:
                    out.append(_err(dep.where, f"{noun}: language '{dep.language}' already "
                                    f"has interpreter desk '{desk.name}' at {desk.where} / "
                                    "该语言已有翻译坐席"))
        if dep.parent is not None:
            parent = d.directory.get(dep.parent)
            if parent is None or parent.kind != "department":
                out.append(_err(dep.where, f"{noun}: parent '{dep.parent}' is not a "
                                f"department (defined: {_names(d.departments)}) / "
                                "上级部门不存在"))
            elif m.LEVELS.index(parent.level) >= m.LEVELS.index(dep.level):
                out.append(_err(dep.where, f"{noun}: parent '{parent.name}' is at level "
                                f"{parent.level}, not above {dep.level} "
                                f"({' > '.join(m.LEVELS)}) / 上级部门层级须高于本部门"))
    # fallback chains that come back to where they started never reach anybody
    for dep in entries:
        seen = [dep.name]
        nxt = dep.fallback_entry
        while nxt is not None and nxt in d.directory and nxt not in seen:
            seen.append(nxt)
            nxt = d.directory[nxt].fallback_entry
        if nxt is not None and nxt in seen and nxt == dep.name and len(seen) > 1:
            out.append(_err(dep.where, f"{dep.kind} '{dep.name}': fallbacks go round in a "
                            f"circle: {' -> '.join([*seen, nxt])} / 兜底循环"))
    return out


def _names(items: Iterable[str]) -> str:
    names = sorted(items)
    return ", ".join(names) if names else "none"


# --------------------------------------------------------------------------- graph


def _step_refs(d: m.Definition, step: m.Step, enabled: set[str]) -> list[Problem]:
    out: list[Problem] = []
    w = step.where
    label = f"{step.kind} step '{step.id}'"

    def queue(name: str, what: str) -> None:
        if name not in d.queues:
            out.append(_err(w, f"undefined queue '{name}' in {what} of {label} "
                            f"(defined: {_names(d.queues)})"))

    def language(code: str, what: str) -> None:
        if code not in d.languages:
            out.append(_err(w, f"undefined language '{code}' in {what} of {label}"))
        elif code not in enabled:
            out.append(_err(w, f"language '{code}' in {what} of {label} is not enabled"))

    if isinstance(step, m.QueueStep):
        queue(step.queue, "'queue'")
        for code, qname in step.by_language.items():
            queue(qname, f"'by_language.{code}'")
            if code not in d.languages:
                out.append(_err(w, f"undefined language '{code}' in 'by_language' of {label}"))
    elif isinstance(step, m.TransferStep) and step.to == "department":
        if step.department not in d.directory:
            out.append(_err(w, f"undefined department '{step.department}' in {label} "
                            f"(defined: {_names(d.directory)})"))
    elif isinstance(step, m.TimeStep):
        if step.hours not in d.hours:
            out.append(_err(w, f"undefined hours '{step.hours}' in {label} "
                            f"(defined: {_names(d.hours)})"))
    elif isinstance(step, m.SubflowStep):
        if step.flow not in d.flows:
            out.append(_err(w, f"undefined flow '{step.flow}' in {label} "
                            f"(defined: {_names(d.flows)})"))
    elif isinstance(step, m.LanguageStep):
        for code in step.options.values():
            language(code, "'options'")
    elif isinstance(step, m.MenuStep):
        if step.repeat_digit is not None and step.repeat_digit in step.options:
            out.append(_err(w, f"digit '{step.repeat_digit}' of {label} collides with its "
                            "repeat digit (repeat_digit)"))
    return out


def _check_flow(
    d: m.Definition,
    label: str,
    start: str,
    steps: Mapping[str, m.Step],
    extra_roots: Mapping[str, str],
    in_subflow: bool,
    flow_where: m.Where,
) -> list[Problem]:
    out: list[Problem] = []
    enabled = set(d.enabled_languages())
    if start not in steps:
        out.append(_err(flow_where, f"start step '{start}' of {label} is not defined "
                        f"(steps: {_names(steps)})"))
    for what, target in extra_roots.items():
        if target not in steps and target not in m.SPECIAL_TARGETS:
            out.append(_err(flow_where, f"{what} of {label} goes to unknown step '{target}'"))
    for step in steps.values():
        out.extend(_step_refs(d, step, enabled))
        for fld, target in step.labelled_targets():
            if target == m.RETURN and not in_subflow:
                out.append(_err(step.where, f"{fld} of {step.kind} step '{step.id}' in {label} "
                                "goes to @return, which only a sub-flow can do"))
            elif target not in steps and target not in m.SPECIAL_TARGETS:
                out.append(_err(step.where, f"{fld} of {step.kind} step '{step.id}' in {label} "
                                f"goes to unknown step '{target}'"))
    # reachability
    seen: set[str] = set()
    todo = [t for t in (start, *extra_roots.values()) if t in steps]
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        todo.extend(t for t in steps[sid].targets() if t in steps)
    for sid, step in steps.items():
        if sid not in seen and start in steps:
            out.append(_err(step.where, f"step '{sid}' of {label} is unreachable from "
                            f"start '{start}'"))
    out.extend(_check_loops(label, steps))
    return out


def _is_exit(step: m.Step) -> bool:
    """A step that ends the IVR part of the call or hands it to a person."""
    return isinstance(step, m.HangupStep | m.QueueStep | m.TransferStep)


def _check_loops(label: str, steps: Mapping[str, m.Step]) -> list[Problem]:
    """Cycles that cannot reach an exit, and cycles that never wait (spin forever)."""
    out: list[Problem] = []
    edges = {sid: [t for t in s.targets() if t in steps] for sid, s in steps.items()}
    can_exit: dict[str, bool] = {}

    def exits(sid: str) -> bool:
        # fixed-point: a step exits if it is an exit or targets a special target or a
        # step that exits
        return can_exit.get(sid, False)

    for sid, step in steps.items():
        can_exit[sid] = _is_exit(step) or any(
            t in m.SPECIAL_TARGETS or t not in steps for t in step.targets()
        )
    changed = True
    while changed:
        changed = False
        for sid in steps:
            if not can_exit[sid] and any(exits(t) for t in edges[sid]):
                can_exit[sid] = changed = True
    for comp in _sccs(edges):
        cyclic = len(comp) > 1 or comp[0] in edges[comp[0]]
        if not cyclic:
            continue
        first = min(comp, key=lambda s: (steps[s].where.line, s))
        path = " -> ".join([*sorted(comp), sorted(comp)[0]])
        if not any(can_exit[s] for s in comp):
            out.append(_err(steps[first].where, f"loop with no way out in {label}: {path} "
                            "(no queue, transfer, hangup or special target reachable)"))
        elif all(isinstance(steps[s], _INSTANT) for s in comp):
            out.append(_err(steps[first].where, f"loop that never waits in {label}: {path} "
                            "(only set/time/subflow steps)"))
    return out


def _sccs(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = edges[node]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == node:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _check_subflow_recursion(d: m.Definition) -> list[Problem]:
    calls = {
        name: sorted({s.flow for s in f.steps.values() if isinstance(s, m.SubflowStep)
                      and s.flow in d.flows})
        for name, f in d.flows.items()
    }
    out: list[Problem] = []
    for comp in _sccs(calls):
        if len(comp) > 1 or comp[0] in calls[comp[0]]:
            flow = d.flows[sorted(comp)[0]]
            out.append(_err(flow.where, "sub-flows call each other in a circle: "
                            + " -> ".join([*sorted(comp), sorted(comp)[0]])))
    return out


# --------------------------------------------------------------------------- entries


def _flows_used(d: m.Definition, steps: Mapping[str, m.Step]) -> set[str]:
    """Names of sub-flows reachable (transitively) from these steps."""
    used: set[str] = set()
    todo = [s.flow for s in steps.values() if isinstance(s, m.SubflowStep)]
    while todo:
        name = todo.pop()
        if name in used or name not in d.flows:
            continue
        used.add(name)
        todo.extend(s.flow for s in d.flows[name].steps.values()
                    if isinstance(s, m.SubflowStep))
    return used


def _check_entry(d: m.Definition, e: m.Entry) -> list[Problem]:
    out: list[Problem] = []
    label = f"entry {e.number}"
    enabled = set(d.enabled_languages())
    if e.language not in d.languages:
        out.append(_err(e.where, f"{label}: undefined language '{e.language}'"))
    elif e.language not in enabled:
        out.append(_err(e.where, f"{label}: language '{e.language}' is not enabled"))
    if e.operator.queue not in d.queues:
        out.append(_err(e.operator.where, f"undefined queue '{e.operator.queue}' in the "
                        f"operator of {label} (defined: {_names(d.queues)})"))
    if e.context in _RESERVED_CONTEXTS:
        out.append(_err(e.where, f"{label}: context '{e.context}' is reserved (used by the "
                        "generated dialplan)"))
    op = e.operator.digit if e.operator.enabled else None
    for digit, code in e.barge_in.items():
        if code not in d.languages:
            out.append(_err(e.where, f"{label}: barge-in digit '{digit}' offers undefined "
                            f"language '{code}'"))
        elif code not in enabled:
            out.append(_err(e.where, f"{label}: barge-in digit '{digit}' offers language "
                            f"'{code}', which is not enabled"))
        if digit == op:
            out.append(_err(e.where, f"{label}: barge-in digit '{digit}' collides with the "
                            "press-0 operator digit"))
    for digit in e.shortcuts:
        if digit == op:
            out.append(_err(e.where, f"{label}: shortcut digit '{digit}' collides with the "
                            "press-0 operator digit"))
        if digit in e.barge_in:
            out.append(_err(e.where, f"{label}: shortcut digit '{digit}' collides with "
                            "barge-in digit (language offer)"))
    roots = {f"shortcut '{k}'": v for k, v in e.shortcuts.items()}
    out.extend(_check_flow(d, label, e.start, e.steps, roots, False, e.where))
    # digits of menus in this entry and in the sub-flows it uses
    menus: list[tuple[str, m.Step]] = [(label, s) for s in e.steps.values()]
    for name in sorted(_flows_used(d, e.steps)):
        menus += [(f"flow '{name}' (used by {label})", s) for s in d.flows[name].steps.values()]
    for where_label, step in menus:
        digits: Iterable[str] = ()
        if isinstance(step, m.MenuStep | m.LanguageStep):
            digits = step.options.keys()
        elif isinstance(step, m.CallbackStep):
            digits = (step.accept_digit,)
        if isinstance(step, m.MenuStep) and step.repeat_digit is not None and \
                step.repeat_digit == op:
            out.append(_err(step.where, f"repeat digit '{op}' of menu step '{step.id}' in "
                            f"{where_label} collides with the press-0 operator digit"))
        for digit in digits:
            if digit == op:
                out.append(_err(step.where, f"digit '{digit}' of {step.kind} step '{step.id}' "
                                f"in {where_label} collides with the press-0 operator digit"))
            elif digit in e.barge_in:
                out.append(_err(step.where, f"digit '{digit}' of {step.kind} step '{step.id}' "
                                f"in {where_label} collides with barge-in digit '{digit}' "
                                f"({e.barge_in[digit]})"))
    if e.zero_navigation and e.start in e.steps:
        out.extend(_check_zero_navigation(d, e))
    return out


def default_path(d: m.Definition, steps: Mapping[str, m.Step], start: str) -> list[m.Step]:
    """The steps a caller who presses nothing walks through, up to the first exit."""
    path: list[m.Step] = []
    sid: str | None = start
    seen: set[str] = set()
    while sid is not None and sid in steps and sid not in seen:
        seen.add(sid)
        step = steps[sid]
        path.append(step)
        if _is_exit(step) or isinstance(step, m.MenuStep | m.LanguageStep):
            break
        if isinstance(step, m.TimeStep):
            sid = step.open
        elif isinstance(step, m.SubflowStep):
            flow = d.flows.get(step.flow)
            if flow is not None:
                inner = default_path(d, flow.steps, flow.start)
                path.extend(inner)
                if inner and (_is_exit(inner[-1]) or isinstance(inner[-1], m.MenuStep)):
                    break
            sid = step.next
        elif isinstance(step, m.CallbackStep | m.PlayStep | m.SetStep | m.TicketStatusStep):
            sid = step.next
        else:
            sid = None
    return path


def _check_zero_navigation(d: m.Definition, e: m.Entry) -> list[Problem]:
    path = default_path(d, e.steps, e.start)
    for step in path:
        if isinstance(step, m.MenuStep | m.LanguageStep):
            return [_err(step.where, f"entry {e.number} is zero_navigation but a caller who "
                         f"presses nothing meets {step.kind} step '{step.id}' before a queue")]
    last = path[-1] if path else None
    if last is None or not isinstance(last, m.QueueStep | m.TransferStep):
        return [_err(e.where, f"entry {e.number} is zero_navigation but a caller who presses "
                     "nothing does not reach a queue")]
    return []


# --------------------------------------------------------------------------- prompts


def prompt_uses(d: m.Definition) -> list[tuple[str, m.Where]]:
    """Every prompt name the definition can play, with where it is named."""
    uses: list[tuple[str, m.Where]] = []
    where0 = m.Where(d.files[0] if d.files else "<memory>", 1, 1)
    if d.settings.record_notice:
        uses.append(("recording-notice", where0))
    if d.surge.active or any(
        isinstance(s, m.TimeStep) and s.surge for _, steps in m.steps_of(d)
        for s in steps.values()
    ):
        uses.append((d.surge.prompt, d.surge.where if d.surge.where.line else where0))
    for entry in d.directory.values():  # announcements to a party of a three-way call
        if entry.announce:
            uses.append((entry.announce, entry.where))
    for o in d.overrides:
        if o.prompt:
            uses.append((o.prompt, o.where))
    for h in d.hours.values():
        uses.extend((o.prompt, o.where) for o in h.overrides if o.prompt)
    for e in d.entries.values():
        if e.barge_in:
            uses.append(("lang-offer", e.where))
    for _, steps in m.steps_of(d):
        for s in steps.values():
            names: list[str | None] = []
            if isinstance(s, m.PlayStep):
                names += s.prompts
            elif isinstance(s, m.MenuStep):
                names += [s.prompt, s.invalid_prompt, s.timeout_prompt]
            elif isinstance(s, m.LanguageStep):
                names += [s.prompt, "invalid", "timeout"]
            elif isinstance(s, m.QueueStep | m.TransferStep):
                names.append(s.prompt)
            elif isinstance(s, m.TimeStep):
                names += ["closed-hours", "holiday"]
            elif isinstance(s, m.CallbackStep):
                names += [s.prompt, s.confirm_prompt]
            elif isinstance(s, m.TicketStatusStep):
                names += [s.found_prompt, s.none_prompt, s.unavailable_prompt]
            elif isinstance(s, m.HangupStep):
                names.append(s.prompt)
                if s.survey:
                    names += ["survey", "survey-thanks"]
            uses.extend((n, s.where) for n in names if n)
    return uses


def file_prompt_lookup(prompts_dir: Path) -> PromptLookup:
    """Look prompts up with the prompts package (``ivr.prompts.resolve_prompt``)."""
    from ivr.prompts import resolve_prompt

    def lookup(name: str, language: str, chain: Sequence[str]) -> str | None:
        found = resolve_prompt(prompts_dir, name, language, chain)
        return None if found is None else found.language

    return lookup


def file_prompt_format_check(prompts_dir: Path) -> PromptFormatCheck:
    """Check the file a prompt resolves to with ``ivr.prompts`` (codec, 8 kHz, mono…)."""
    from ivr.prompts.library import check_file, find_file

    def check(name: str, language: str) -> str | None:
        path = find_file(prompts_dir, name, language)
        if path is None:
            return None
        problems = check_file(path, name, language)
        return "; ".join(p.message for p in problems) or None

    return check


def check_prompts(d: m.Definition, lookup: PromptLookup,
                  fmt: PromptFormatCheck | None = None) -> list[Problem]:
    """Each prompt must exist in every enabled language or in its fallback chain
    (an error when no language of the chain has it, a warning on a fallback)."""
    out: list[Problem] = []
    done: set[tuple[str, str]] = set()
    for name, where in prompt_uses(d):
        for lang in d.enabled_languages():
            if (name, lang) in done:
                continue
            done.add((name, lang))
            chain = d.language_chain(lang)
            found = lookup(name, lang, chain[1:])
            bad = fmt(name, found) if fmt is not None and found is not None else None
            if bad is not None:
                out.append(_err(where, f"prompt '{name}' in language '{found}' cannot be "
                                f"played by Asterisk: {bad}"))
            if found is None:
                out.append(_err(where, f"prompt '{name}' is missing in language '{lang}' "
                                f"(looked in {' -> '.join(chain)})"))
            elif found != lang:
                out.append(_warn(where, f"prompt '{name}' is missing in language '{lang}', "
                                 f"falls back to '{found}'"))
    return out


# --------------------------------------------------------------------------- hours


def _check_hours(d: m.Definition) -> list[Problem]:
    out: list[Problem] = []
    for h in d.hours.values():
        for a, b in _pairs(h.weekly):
            if a.days & b.days and a.start < b.end and b.start < a.end:
                out.append(_warn(b.where, f"hours '{h.name}': weekly windows overlap"))
    return out


# --------------------------------------------------------------------------- calendar

CALENDAR_WARN_DAYS = 60
"""Validation warns this many days before a year whose arrangement nobody carries."""


def _calendar_users(d: m.Definition) -> list[m.Hours]:
    """Hours specs that consult the statutory calendar."""
    return [h for h in d.hours.values()
            if h.statutory_holidays != "ignore" and not h.always_open]


def _check_calendar_coverage(d: m.Definition, today: dt.date) -> list[Problem]:
    """A warning for this year and, from 60 days before it, next year, when neither an
    entered arrangement nor chinese-calendar has it (statutory days provisional or none)."""
    users = _calendar_users(d)
    if not users:
        return []
    years = [today.year]
    if (dt.date(today.year + 1, 1, 1) - today).days <= CALENDAR_WARN_DAYS:
        years.append(today.year + 1)
    names = ", ".join(f"'{h.name}'" for h in users)
    out: list[Problem] = []
    for year in years:
        source = year_source(year, d.calendar)
        if source in ("admin", "chinese-calendar"):
            continue
        todo = (f"enter the State Council's notice (国务院办公厅关于{year}年部分节假日安排的通知) "
                f"under 'calendar: {year}:' in dialplans/ (docs/dialplans.md) / 请在 dialplans/ "
                f"的 calendar 中录入 {year} 年放假安排")
        if source == "holidays":
            what = (f"the {year} holiday arrangement is not entered: statutory holidays of "
                    f"{year} are provisional (public holidays from the 'holidays' package, "
                    f"make-up workdays 调休上班 unknown) for hours {names}; {todo}")
        else:
            what = (f"no holiday data for {year}: statutory holidays and make-up workdays are "
                    f"not applied to hours {names}; {todo}")
        out.append(_warn(users[0].where, what))
    return out


def _check_calendar(d: m.Definition, today: dt.date | None) -> list[Problem]:
    """Entered arrangements: dates in their year, make-up workdays on weekends, no date
    twice, no past year, and every statutory day the law gives listed as a day off."""
    out: list[Problem] = []
    seen: dict[dt.date, tuple[m.Where, str]] = {}
    for year in d.calendar.years.values():
        label = f"calendar {year.year}"
        if today is not None and year.year < today.year:
            out.append(_err(year.where, f"{label}: {year.year} is a past year (today is "
                            f"{today}); remove its arrangement / 已过去年份的放假安排，请删除"))
        first, last = dt.date(year.year - 1, 12, 1), dt.date(year.year + 1, 1, 31)
        listed: set[dt.date] = set()
        for hol in year.holidays:
            for kind, days in (("day off", hol.days_off), ("make-up workday", hol.workdays)):
                for entry in days:
                    day = entry.day
                    if not first <= day <= last:
                        out.append(_err(entry.where, f"{label}: {kind} {day} of {hol.name_zh} "
                                        f"is outside the {year.year} arrangement (dates of "
                                        f"{year.year}, late {year.year - 1} or early "
                                        f"{year.year + 1})"))
                    if kind == "make-up workday" and day.isoweekday() < 6:
                        out.append(_err(entry.where, f"{label}: make-up workday {day} of "
                                        f"{hol.name_zh} is a {day.strftime('%A')}, not a "
                                        "weekend day / 调休上班日必须是周六或周日"))
                    if day in seen:
                        where, what = seen[day]
                        out.append(_err(entry.where, f"{label}: {day} is listed twice (also "
                                        f"as {what} at {where}) / 日期重复"))
                        continue
                    seen[day] = (entry.where, f"{kind} of {hol.name_zh}")
                    if kind == "day off":
                        listed.add(day)
        for day, (zh, en) in statutory_days(year.year).items():
            if day not in listed and day.year == year.year:
                out.append(_warn(year.where, f"{label}: {day} is a statutory holiday by law "
                                 f"({zh} {en}) but the arrangement does not list it as a day "
                                 "off: check the notice / 法定节假日未列入放假日期"))
    return out


def _pairs(items: Sequence[m.WeeklyWindow]) -> list[tuple[m.WeeklyWindow, m.WeeklyWindow]]:
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]


# --------------------------------------------------------------------------- all


def check_definition(d: m.Definition, prompts: PromptLookup | None = None,
                     prompt_format: PromptFormatCheck | None = None,
                     now: dt.datetime | None = None) -> list[Problem]:
    """Every problem (errors and warnings) of a parsed definition, sorted by position.

    ``now`` (validate and publish pass the clock) adds the checks that depend on the date:
    an arrangement for a past year, and a year nobody carries the holidays of. A running
    server's reload passes none, so a new year never invalidates the live definition.
    """
    out = _check_references(d)
    out.extend(_check_directory(d))
    if not d.entries:
        out.append(_err(m.Where(d.files[0] if d.files else "<memory>", 1, 1),
                        "no entries: define at least one dialled number under 'entries'"))
    for e in d.entries.values():
        out.extend(_check_entry(d, e))
    for f in d.flows.values():
        out.extend(_check_flow(d, f"flow '{f.name}'", f.start, f.steps, {}, True, f.where))
    out.extend(_check_subflow_recursion(d))
    used: set[str] = set()
    for e in d.entries.values():
        used |= _flows_used(d, e.steps)
    out.extend(_warn(f.where, f"flow '{f.name}' is not used by any entry")
               for f in d.flows.values() if f.name not in used)
    out.extend(_check_hours(d))
    today = local_time(now, d.settings.timezone).date() if now is not None else None
    out.extend(_check_calendar(d, today))
    if today is not None:
        out.extend(_check_calendar_coverage(d, today))
    if prompts is not None:
        out.extend(check_prompts(d, prompts, prompt_format))
    return sorted(set(out), key=lambda p: (p.where.file, p.where.line, p.where.col, p.message))
