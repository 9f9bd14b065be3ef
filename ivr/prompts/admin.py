"""What the ``ivr prompts`` commands do: import a recording, build missing prompts."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ivr.log import event
from ivr.metrics import METRICS
from ivr.prompts.catalog import Catalog, valid_language, valid_name
from ivr.prompts.convert import DEFAULT_PEAK_DBFS, Converted, convert_file
from ivr.prompts.errors import PromptError, PromptImportError, SynthesisError
from ivr.prompts.library import PROMPT_EXTENSIONS, find_file
from ivr.prompts.manifest import IMPORTED, SYNTHETIC, ManifestEntry, load_manifest
from ivr.prompts.synth import synthesize

log = logging.getLogger("ivr.prompts")


def import_prompt(
    prompts_dir: Path, source: Path, name: str, language: str,
    peak_dbfs: float = DEFAULT_PEAK_DBFS, max_rms_dbfs: float | None = None,
) -> Converted:
    """Convert ``source`` into ``prompts/<language>/<name>.wav`` and record it as a human
    recording (it replaces any synthetic or other-format file of that prompt)."""
    if not valid_name(name):
        raise PromptImportError(f"invalid prompt name {name!r} / 提示音名称无效")
    if not valid_language(language):
        raise PromptImportError(f"invalid language {language!r} / 语言代码无效")
    target = prompts_dir / language / f"{name}.wav"
    result = convert_file(source, target, peak_dbfs=peak_dbfs, max_rms_dbfs=max_rms_dbfs)
    for ext in PROMPT_EXTENSIONS:  # a stale .sln/.ulaw would shadow nothing but confuse
        other = target.with_suffix(ext)
        if ext != ".wav" and other.exists():
            other.unlink()
    manifest = load_manifest(prompts_dir)
    manifest.set(language, name, ManifestEntry(
        source=IMPORTED, file=f"{language}/{name}.wav", duration_ms=result.duration_ms,
        original=source.name,
    ))
    manifest.save()
    event(log, logging.INFO, "prompts.imported", name=name, language=language,
          duration_ms=result.duration_ms, gain_db=round(result.gain_db, 2))
    METRICS.inc("prompts.imported")
    return result


@dataclass(frozen=True, slots=True)
class BuildResult:
    built: list[str]  # "zh/welcome"
    skipped_human: list[str]  # present, not synthetic: left alone
    no_text: list[str]  # no catalog text in that language
    failed: list[str]  # "zh/welcome: why"


def build_prompts(
    prompts_dir: Path, catalog: Catalog, languages: Iterable[str] | None = None,
    force: bool = False,
) -> BuildResult:
    """Synthesise every prompt missing (or synthetic with a changed text, or synthetic
    when ``force``) in ``languages`` that have an espeak-ng voice."""
    manifest = load_manifest(prompts_dir)
    result = BuildResult([], [], [], [])
    langs = list(languages) if languages is not None else list(catalog.enabled_languages())
    for code in langs:
        lang = catalog.languages.get(code)
        if lang is None:
            raise PromptError(f"language {code!r} is not in the catalog / 目录中没有该语言")
        if lang.voice is None:
            continue
        for name in catalog.names:
            key = f"{code}/{name}"
            text = catalog.text(name, code)
            if text is None:
                result.no_text.append(key)
                continue
            existing = find_file(prompts_dir, name, code)
            entry = manifest.get(code, name)
            synthetic = entry is not None and entry.source == SYNTHETIC
            if existing is not None and not synthetic:
                result.skipped_human.append(key)
                continue
            if (existing is not None and entry is not None and not force
                    and entry.text_sha256 == text.sha256() and entry.voice == lang.voice):
                continue
            try:
                conv = synthesize(text.speakable, lang.voice, prompts_dir / code / f"{name}.wav")
            except SynthesisError as exc:
                result.failed.append(f"{key}: {exc}")
                METRICS.inc("prompts.synthesis_failed")
                continue
            manifest.set(code, name, ManifestEntry(
                source=SYNTHETIC, file=f"{code}/{name}.wav", duration_ms=conv.duration_ms,
                voice=lang.voice, text_sha256=text.sha256(),
            ))
            manifest.save()  # after each file: an interrupted build leaves no orphan
            result.built.append(key)
    return result
