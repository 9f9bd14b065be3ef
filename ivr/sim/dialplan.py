"""The dialplan as data: contexts, extensions (exact or ``_X.`` patterns), priorities
and labels, loaded from an ``extensions.conf``.  The executor lives in :mod:`pbx`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ivr.errors import ConfigError
from ivr.sim.config import ConfFile


@dataclass(frozen=True)
class Step:
    priority: int
    label: str | None
    app: str
    data: str
    where: str


@dataclass
class Extension:
    pattern: str
    steps: dict[int, Step] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    regex: re.Pattern[str] | None = None

    def matches(self, exten: str) -> bool:
        if self.regex is None:
            return self.pattern == exten
        return self.regex.fullmatch(exten) is not None


def pattern_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 1  # skip the leading _
    while i < len(pattern):
        c = pattern[i]
        if c == "X":
            out.append("[0-9]")
        elif c == "Z":
            out.append("[1-9]")
        elif c == "N":
            out.append("[2-9]")
        elif c == ".":
            out.append(".+")
        elif c == "!":
            out.append(".*")
        elif c == "[":
            end = pattern.find("]", i)
            if end < 0:
                raise ConfigError(f"unterminated [ in extension pattern {pattern!r}")
            out.append("[" + pattern[i + 1:end].replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


_APP_RE = re.compile(r"\s*([A-Za-z0-9_]+)\s*(?:\((.*)\))?\s*\Z", re.S)
_PRIO_RE = re.compile(r"(\d+|n|s)(?:\(([^)]*)\))?\Z")


class Dialplan:
    def __init__(self) -> None:
        self.contexts: dict[str, list[Extension]] = {}
        self.includes: dict[str, list[str]] = {}
        self.globals: dict[str, str] = {}

    @classmethod
    def from_conf(cls, conf: ConfFile) -> Dialplan:
        dp = cls()
        for sec in conf.sections:
            if sec.name == "general":
                continue
            if sec.name == "globals":
                dp.globals.update(sec.lines)
                continue
            exts = dp.contexts.setdefault(sec.name, [])
            last: Extension | None = None
            last_prio = 0
            for (key, value), where in zip(sec.lines, sec.where, strict=True):
                if key == "include":
                    dp.includes.setdefault(sec.name, []).append(value.strip())
                    continue
                if key not in ("exten", "same"):
                    continue
                if key == "exten":
                    name, _, rest = value.partition(",")
                    name = name.strip()
                    last = next((e for e in exts if e.pattern == name), None)
                    if last is None:
                        last = Extension(name, regex=pattern_regex(name)
                                         if name.startswith("_") else None)
                        exts.append(last)
                        last_prio = 0
                else:
                    if last is None:
                        raise ConfigError(f"{where}: 'same =>' with no extension before it "
                                          f"/ same 之前没有 exten")
                    rest = value
                prio_s, _, appdata = rest.partition(",")
                m = _PRIO_RE.match(prio_s.strip())
                if not m:
                    raise ConfigError(f"{where}: bad priority {prio_s!r} / 优先级无效")
                if m.group(1) == "hint":
                    continue
                prio = last_prio + 1 if m.group(1) in ("n", "s") else int(m.group(1))
                am = _APP_RE.match(appdata)
                if not am:
                    raise ConfigError(f"{where}: bad application {appdata!r} / 应用写法无效")
                label = m.group(2) or None
                last.steps[prio] = Step(prio, label, am.group(1), am.group(2) or "", where)
                if label:
                    last.labels[label] = prio
                last_prio = prio
        return dp

    def extension(self, context: str, exten: str, _seen: set[str] | None = None
                  ) -> Extension | None:
        exts = self.contexts.get(context)
        if exts is None:
            return None
        for e in exts:
            if e.regex is None and e.pattern == exten:
                return e
        for e in exts:
            if e.regex is not None and e.matches(exten):
                return e
        seen = _seen or {context}
        for inc in self.includes.get(context, []):
            if inc not in seen:
                seen.add(inc)
                found = self.extension(inc, exten, seen)
                if found:
                    return found
        return None

    def step(self, context: str, exten: str, priority: int) -> Step | None:
        e = self.extension(context, exten)
        return None if e is None else e.steps.get(priority)

    def label(self, context: str, exten: str, label: str) -> int | None:
        e = self.extension(context, exten)
        return None if e is None else e.labels.get(label)

    def describe(self, context: str, exten: str) -> list[str]:
        """``dialplan show exten@context`` lines."""
        e = self.extension(context, exten)
        if e is None:
            return [f"There is no existence of '{exten}' extension in '{context}' context"]
        out = [f"[ Context '{context}' created by 'pbx_config' ]"]
        first = True
        for p in sorted(e.steps):
            s = e.steps[p]
            call = f"{s.app}({s.data})"
            head = f"  '{e.pattern}' =>" if first else (f"     [{s.label}]" if s.label else "")
            out.append(f"{head:<20}{p}. {call:<42} [{s.where.rsplit('/', 1)[-1]}]")
            first = False
        out += ["", f"-= 1 extension ({len(e.steps)} priorities) in 1 context. =-"]
        return out


class AsteriskDialplan(Dialplan):
    """The same view over the project's own parser (:mod:`ivr.asterisk.extensions`),
    which follows Asterisk's extension sort order and ``#include`` rules.  Lookups are
    cached (the parser sorts a context's extensions on every match)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from ivr.asterisk.conf import load_conf
        from ivr.asterisk.errors import AsteriskConfError
        from ivr.asterisk.extensions import parse_extensions

        try:
            self._dp = parse_extensions(load_conf(path))
        except AsteriskConfError as exc:
            raise ConfigError(f"{path}: {exc} / 拨号方案无法解析") from exc
        self.globals = dict(self._dp.globals)
        self._cache: dict[tuple[str, str], Extension | None] = {}

    def extension(self, context: str, exten: str, _seen: set[str] | None = None
                  ) -> Extension | None:
        key = (context, exten)
        if key in self._cache:
            return self._cache[key]
        found = self._dp.match(context, exten, 1)
        ext: Extension | None = None
        if found is not None:
            ext = Extension(found.name)
            for p in found.priorities.values():
                where = f"{Path(p.file).name}:{p.line}"
                ext.steps[p.number] = Step(p.number, p.label, p.app, p.data, where)
                if p.label:
                    ext.labels[p.label] = p.number
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = ext
        return ext


def load_dialplan(path: Path) -> Dialplan:
    """``extensions.conf`` through :mod:`ivr.asterisk` when it is installed, else through
    the emulator's own small reader."""
    try:
        import ivr.asterisk.extensions  # noqa: F401
    except ImportError:
        from ivr.sim.config import load

        return Dialplan.from_conf(load(path))
    return AsteriskDialplan(path)
