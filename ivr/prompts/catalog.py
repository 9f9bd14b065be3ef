"""``prompts/catalog.yaml``: the languages (espeak-ng voice, fallback chain) and the
text of every prompt in every language.

A prompt's text in one language is either a string, or a mapping with ``text`` (what a
voice talent records, what an admin reads) and ``tts`` (what espeak-ng is given when
that differs, e.g. ``12345`` spelt digit by digit, or Japanese in kana).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivr.prompts.errors import CatalogError

CATALOG_FILE = "catalog.yaml"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
LANG_RE = re.compile(r"[a-z]{2,3}(?:_[a-z0-9]{2,8})?\Z")

# The prompt names the dialplan definitions use (ivr/dialplan validates against them).
PROMPT_NAMES: tuple[str, ...] = (
    "welcome", "lang-offer", "lang-menu", "main-menu", "enterprise-menu", "emergency-menu",
    "please-hold",
    "invalid", "timeout", "goodbye", "closed-hours", "holiday", "transfer-110",
    "transfer-119", "transfer-120", "transfer-122", "transfer-dept", "ticket-status-found",
    "ticket-status-none", "ticket-status-unavailable", "callback-offer", "callback-confirm",
    "survey", "survey-thanks", "recording-notice", "press0-hint", "surge",
    "consumer-welcome", "social-security-welcome", "callback-greeting",
)


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def valid_language(code: str) -> bool:
    return bool(LANG_RE.match(code))


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # the Asterisk language and the prompts/<code>/ folder: zh, yue, en…
    label: str  # shown to admins: "普通话 / Mandarin"
    voice: str | None  # espeak-ng voice, None when there is none
    fallback: tuple[str, ...]  # languages tried after this one
    enabled: bool = True

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.code, *self.fallback)


@dataclass(frozen=True, slots=True)
class PromptText:
    text: str
    tts: str | None = None

    @property
    def speakable(self) -> str:
        return self.tts or self.text

    def sha256(self) -> str:
        return hashlib.sha256(self.speakable.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Catalog:
    languages: Mapping[str, Language]
    prompts: Mapping[str, Mapping[str, PromptText]]
    path: Path | None = field(default=None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    def enabled_languages(self) -> tuple[str, ...]:
        return tuple(code for code, lang in self.languages.items() if lang.enabled)

    def chain(self, language: str) -> tuple[str, ...]:
        lang = self.languages.get(language)
        return lang.chain if lang is not None else (language,)

    def chains(self) -> dict[str, tuple[str, ...]]:
        return {code: lang.chain for code, lang in self.languages.items()}

    def text(self, name: str, language: str) -> PromptText | None:
        return self.prompts.get(name, {}).get(language)


def load_catalog(prompts_dir: Path) -> Catalog:
    path = prompts_dir / CATALOG_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: no prompt catalog / 缺少提示音目录文件") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from exc
    return parse_catalog(raw, path)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str) or not all(
        isinstance(v, str) for v in value
    ):
        raise CatalogError(f"{where}: expected a list of language codes")
    return tuple(value)


def parse_catalog(raw: Any, path: Path | None = None) -> Catalog:
    where = str(path or CATALOG_FILE)
    top = _mapping(raw, where)
    languages: dict[str, Language] = {}
    for code, spec in _mapping(top.get("languages"), f"{where}: languages").items():
        w = f"{where}: languages.{code}"
        if not isinstance(code, str) or not valid_language(code):
            raise CatalogError(f"{w}: invalid language code")
        spec = _mapping(spec, w)
        voice = spec.get("voice")
        if voice is not None and not isinstance(voice, str):
            raise CatalogError(f"{w}.voice: expected a string")
        languages[code] = Language(
            code=code,
            label=str(spec.get("label", code)),
            voice=voice,
            fallback=_strings(spec.get("fallback"), f"{w}.fallback"),
            enabled=bool(spec.get("enabled", True)),
        )
    for lang in languages.values():
        for fb in lang.fallback:
            if fb not in languages or fb == lang.code:
                raise CatalogError(
                    f"{where}: languages.{lang.code}.fallback: {fb!r} is not another "
                    "language of the catalog"
                )
    prompts: dict[str, dict[str, PromptText]] = {}
    for name, texts in _mapping(top.get("prompts"), f"{where}: prompts").items():
        w = f"{where}: prompts.{name}"
        if not isinstance(name, str) or not valid_name(name):
            raise CatalogError(f"{w}: invalid prompt name (lower-case letters, digits, '-')")
        per: dict[str, PromptText] = {}
        for code, value in _mapping(texts, w).items():
            if code not in languages:
                raise CatalogError(f"{w}.{code}: language not declared under languages")
            if isinstance(value, str):
                per[code] = PromptText(value.strip())
            else:
                spec = _mapping(value, f"{w}.{code}")
                text, tts = spec.get("text"), spec.get("tts")
                if not isinstance(text, str) or (tts is not None and not isinstance(tts, str)):
                    raise CatalogError(f"{w}.{code}: needs text (and optional tts) strings")
                per[code] = PromptText(text.strip(), tts.strip() if tts else None)
            if not per[code].text:
                raise CatalogError(f"{w}.{code}: empty text")
        prompts[name] = per
    return Catalog(languages=languages, prompts=prompts, path=path)
