"""The emulator's view of ``extensions.conf``: the project's parser
(:mod:`ivr.asterisk.extensions` — Asterisk's sort order, includes, patterns, labels) with
a lookup cache (the parser sorts a context's extensions on every match) and the
``dialplan show`` text.  The executor lives in :mod:`pbx`."""

from __future__ import annotations

from pathlib import Path

from ivr.asterisk.conf import load_conf
from ivr.asterisk.errors import AsteriskConfError
from ivr.asterisk.extensions import Dialplan as ParsedDialplan
from ivr.asterisk.extensions import Extension, Priority, parse_extensions
from ivr.errors import ConfigError

_MAX_CACHE = 100_000


class Dialplan:
    def __init__(self, parsed: ParsedDialplan) -> None:
        self.parsed = parsed
        self.globals: dict[str, str] = dict(parsed.globals)
        self._ext: dict[tuple[str, str], Extension | None] = {}
        self._step: dict[tuple[str, str, int | str], Priority | None] = {}

    def extension(self, context: str, exten: str) -> Extension | None:
        """The extension ``exten`` runs in ``context`` (``ast_exists_extension``: the first
        match, in Asterisk's order and through includes, that has priority 1)."""
        key = (context, exten)
        if key not in self._ext:
            if len(self._ext) > _MAX_CACHE:
                self._ext.clear()
            self._ext[key] = self.parsed.match(context, exten, 1)
        return self._ext[key]

    def _find(self, context: str, exten: str, which: int | str) -> Priority | None:
        key = (context, exten, which)
        if key not in self._step:
            if len(self._step) > _MAX_CACHE:
                self._step.clear()
            self._step[key] = self.parsed.find(context, exten, which)
        return self._step[key]

    def step(self, context: str, exten: str, priority: int) -> Priority | None:
        """What runs at ``exten``/``priority``: like ``pbx_find_extension``, the first
        matching extension that has that priority."""
        return self._find(context, exten, priority)

    def label(self, context: str, exten: str, label: str) -> int | None:
        found = self._find(context, exten, label)
        return None if found is None else found.number

    def describe(self, context: str, exten: str) -> list[str]:
        """``dialplan show exten@context`` lines."""
        e = self.extension(context, exten)
        if e is None:
            return [f"There is no existence of '{exten}' extension in '{context}' context"]
        out = [f"[ Context '{context}' created by 'pbx_config' ]"]
        first = True
        for s in e.ordered():
            call = f"{s.app}({s.data})"
            head = f"  '{e.name}' =>" if first else (f"     [{s.label}]" if s.label else "")
            where = f"{Path(s.file).name}:{s.line}"
            out.append(f"{head:<20}{s.number}. {call:<42} [{where}]")
            first = False
        out += ["", f"-= 1 extension ({len(e.priorities)} priorities) in 1 context. =-"]
        return out


def load_dialplan(path: Path) -> Dialplan:
    """Read ``extensions.conf`` (and its ``#include`` files)."""
    try:
        return Dialplan(parse_extensions(load_conf(path)))
    except AsteriskConfError as exc:
        raise ConfigError(f"{path}: {exc} / 拨号方案无法解析") from exc
