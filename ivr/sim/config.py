"""Asterisk ``.conf`` files as the emulator reads them (no I/O but ``load``).

Sections in order, each a list of ``(key, value)`` pairs (``=`` and ``=>`` alike),
``;`` comments, ``#include`` relative to the including file.  Errors name the file
and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ivr.errors import ConfigError

MAX_INCLUDE_DEPTH = 10


@dataclass
class Section:
    name: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "file:line" of each pair

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in reversed(self.lines):
            if k == key:
                return v
        return default

    def getall(self, key: str) -> list[str]:
        return [v for k, v in self.lines if k == key]


@dataclass
class ConfFile:
    path: Path
    sections: list[Section] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None


def _strip_comment(line: str) -> str:
    out = []
    esc = False
    for ch in line:
        if ch == ";" and not esc:
            break
        esc = ch == "\\" and not esc
        out.append(ch)
    return "".join(out).replace("\\;", ";").rstrip()


def parse_text(text: str, name: str = "<text>", base: Path | None = None,
               conf: ConfFile | None = None, depth: int = 0) -> ConfFile:
    conf = conf or ConfFile(Path(name))
    cur: Section | None = conf.sections[-1] if conf.sections else None
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("#include"):
            target = line[len("#include"):].strip().strip('"<>')
            if depth >= MAX_INCLUDE_DEPTH:
                raise ConfigError(f"{name}:{n}: #include nested too deep / 包含层级过深")
            path = (base or Path(".")) / target
            try:
                sub = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{name}:{n}: cannot read #include {target}: {exc} "
                                  f"/ 无法读取包含文件") from exc
            parse_text(sub, str(path), path.parent, conf, depth + 1)
            cur = conf.sections[-1] if conf.sections else None
            continue
        if line.startswith("["):
            end = line.find("]")
            if end < 0:
                raise ConfigError(f"{name}:{n}: unterminated section header {line!r} "
                                  f"/ 段名缺少 ]")
            cur = Section(line[1:end].strip())
            conf.sections.append(cur)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{name}:{n}: expected key = value, got {line!r} / 应为 键 = 值")
        if cur is None:
            raise ConfigError(f"{name}:{n}: {key.strip()!r} outside any [section] / 不在任何段内")
        value = value[1:] if value.startswith(">") else value
        cur.lines.append((key.strip(), value.strip()))
        cur.where.append(f"{name}:{n}")
    return conf


def load(path: Path) -> ConfFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc} / 无法读取配置文件") from exc
    return parse_text(text, str(path), path.parent)
