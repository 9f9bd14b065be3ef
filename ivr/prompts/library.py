"""Finding prompt files and checking them: used by ``ivr prompts check``, the dialplan
validator and the IVR runtime.

A prompt ``welcome`` in language ``yue`` with the chain ``yue → zh`` resolves to the first
of ``prompts/yue/welcome.{wav,sln,ulaw}``, ``prompts/zh/welcome.{…}`` that exists; the
Asterisk name is the path without extension relative to the prompts dir (``zh/welcome``),
which Playback/Read/Background play when the prompts dir is a sounds directory (or is
given as an absolute prefix).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ivr.prompts.catalog import valid_language, valid_name
from ivr.prompts.errors import AudioFormatError
from ivr.prompts.formats import inspect_audio

# Order of preference when several formats of one prompt exist.
PROMPT_EXTENSIONS: tuple[str, ...] = (".wav", ".sln", ".ulaw")

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True)
class ResolvedPrompt:
    name: str
    requested_language: str
    language: str  # the language actually used (differs on a fallback)
    path: Path

    @property
    def asterisk_name(self) -> str:
        """``zh/welcome``: what to give Playback/Read/Background (no extension)."""
        return f"{self.language}/{self.name}"

    @property
    def fallback(self) -> bool:
        return self.language != self.requested_language


@dataclass(frozen=True, slots=True)
class PromptProblem:
    severity: str  # "error" or "warning"
    kind: str  # "missing", "fallback", "format", "unreadable"
    name: str
    language: str
    message: str
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.severity}: {self.language}/{self.name}: {self.message}"


def _chain(language: str, chain: Sequence[str]) -> list[str]:
    out = [language]
    out.extend(c for c in chain if c not in out)
    return out


def find_file(prompts_dir: Path, name: str, language: str) -> Path | None:
    """The file of ``name`` in exactly ``language``, or ``None``."""
    if not valid_name(name) or not valid_language(language):
        return None
    for ext in PROMPT_EXTENSIONS:
        path = prompts_dir / language / f"{name}{ext}"
        if path.is_file():
            return path
    return None


def resolve_prompt(
    prompts_dir: Path, name: str, language: str, chain: Sequence[str] = ()
) -> ResolvedPrompt | None:
    """The file to play for ``name`` in ``language``, trying ``chain`` after it."""
    for lang in _chain(language, chain):
        path = find_file(prompts_dir, name, lang)
        if path is not None:
            return ResolvedPrompt(name, language, lang, path)
    return None


def prompt_duration_ms(path: Path) -> int:
    """Length of a prompt file in milliseconds (raises AudioFormatError if unreadable)."""
    return inspect_audio(path).duration_ms


def check_file(path: Path, name: str, language: str) -> list[PromptProblem]:
    try:
        info = inspect_audio(path)
    except AudioFormatError as exc:
        return [PromptProblem(ERROR, "unreadable", name, language, str(exc), path)]
    return [
        PromptProblem(ERROR, "format", name, language, f"{path.name}: {why}", path)
        for why in info.problems()
    ]


def check_prompts(
    prompts_dir: Path,
    names: Iterable[str],
    languages: Iterable[str],
    chains: Mapping[str, Sequence[str]] | None = None,
) -> list[PromptProblem]:
    """Every prompt of ``names`` missing in a language of ``languages`` (a warning when a
    language of its fallback chain has it, an error when none has), and every prompt
    file of those languages in a format Asterisk would not play."""
    chains = chains or {}
    names = list(dict.fromkeys(names))
    languages = list(dict.fromkeys(languages))
    problems: list[PromptProblem] = []
    for language in languages:
        chain = _chain(language, chains.get(language, ()))
        for name in names:
            if not valid_name(name):
                problems.append(
                    PromptProblem(ERROR, "missing", name, language, "invalid prompt name")
                )
                continue
            found = resolve_prompt(prompts_dir, name, language, chain)
            if found is None:
                problems.append(PromptProblem(
                    ERROR, "missing", name, language,
                    f"missing in {' → '.join(chain)} / 提示音缺失",
                ))
            elif found.fallback:
                problems.append(PromptProblem(
                    WARNING, "fallback", name, language,
                    f"missing, falls back to {found.asterisk_name} / 使用回退语言",
                    found.path,
                ))
    seen: set[Path] = set()
    for language in languages:
        folder = prompts_dir / language
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in PROMPT_EXTENSIONS and path not in seen:
                seen.add(path)
                problems.extend(check_file(path, path.stem, language))
    return problems
