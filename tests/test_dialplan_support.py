"""Helpers for the dialplan tests (no tests here): a small valid definition, prompts."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
from pathlib import Path

from ivr.dialplan.loader import parse_definition
from ivr.dialplan.validate import prompt_uses

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "dialplans"

# A complete small definition; tests replace parts of it to break it.
MINIMAL = """\
version: 1
settings:
  default_language: zh
  general_queue: hotline
languages:
  zh: {name: Mandarin}
  en: {name: English, fallback: [zh]}
queues:
  hotline: {members: ["Local/1001@agent-local/n"]}
  english: {}
departments:
  market: {label: Market, number: "2001"}
hours:
  office:
    weekly:
      - {days: mon-fri, from: "09:00", to: "17:30"}
entries:
  "12345":
    name: hotline
    zero_navigation: true
    operator: {queue: hotline}
    barge_in: {"9": en}
    start: greeting
    steps:
      greeting:
        type: play
        prompts: [welcome]
        next: queue
      queue:
        type: queue
        queue: hotline
        by_language: {en: english}
  "8890":
    name: family
    operator: {queue: hotline}
    start: menu
    steps:
      menu:
        type: menu
        prompt: main-menu
        options: {"1": queue, "2": dept}
      queue:
        type: queue
        queue: hotline
      dept:
        type: transfer
        to: department
        department: market
"""


def write_definition(folder: Path, text: str = MINIMAL, name: str = "hotline.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def _silence_wav() -> bytes:
    """0.1 s of 8 kHz mono 16-bit silence: a file Asterisk plays."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return buf.getvalue()


SILENCE = _silence_wav()


def make_prompts(folder: Path, names: Iterable[str], languages: Iterable[str]) -> Path:
    """Playable (silent) prompt files."""
    for lang in languages:
        (folder / lang).mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / lang / f"{name}.wav").write_bytes(SILENCE)
    return folder


def prompts_for(definition_dir: Path, folder: Path) -> Path:
    """Every prompt the definition in ``definition_dir`` uses, in all its languages."""
    d, problems = parse_definition(definition_dir)
    assert d is not None, problems
    return make_prompts(folder, {n for n, _ in prompt_uses(d)}, d.languages)
