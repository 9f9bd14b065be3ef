"""Prompts and DTMF: how long a prompt plays, streaming it with escape digits, and
collecting digits (GET DATA, Read, Background) from the simulated caller."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.sim.model import Channel

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx

SAMPLE_RATE = 8000

# Core Asterisk sounds the emulator pretends to have (seconds).
BUILTIN: dict[str, float] = {
    "beep": 0.25, "demo-congrats": 30.28, "demo-thanks": 2.0, "vm-goodbye": 0.9,
    "queue-thankyou": 1.5, "queue-youarenext": 1.5, "conf-onlyperson": 2.5,
    "pls-hold-while-try": 2.0, "hello-world": 1.2, "auth-thankyou": 1.0,
}


@lru_cache(maxsize=4096)
def _wav_seconds(path: str) -> float | None:
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / float(w.getframerate() or SAMPLE_RATE)
    except (OSError, EOFError, wave.Error):
        return None


def prompt_seconds(pbx: Pbx, ch: Channel, name: str) -> float | None:
    """Duration of prompt ``name`` for the channel's language, ``None`` if missing."""
    if not name:
        return None
    if name.startswith("silence/"):
        tail = name.partition("/")[2]
        return float(tail) if tail.isdigit() else None
    if name.startswith("digits/"):
        return 0.5
    if name.startswith("/"):
        secs = _wav_seconds(name if name.endswith(".wav") else f"{name}.wav")
        if secs is not None:
            return secs
    prompts = pbx.options.prompts
    if prompts is not None:
        for lang in (ch.language, "zh", "en", ""):
            p = Path(prompts) / lang / f"{name}.wav" if lang else Path(prompts) / f"{name}.wav"
            if p.is_file():
                secs = _wav_seconds(str(p))
                if secs is not None:
                    return secs
    if name in BUILTIN:
        return BUILTIN[name]
    if pbx.options.strict_prompts:
        return None
    return pbx.options.default_prompt_seconds


@dataclass
class Played:
    digit: str | None
    endpos: int  # samples at 8 kHz
    found: bool


async def stream(pbx: Pbx, ch: Channel, name: str, escape: str = "") -> Played:
    """Play ``name``; a live DTMF digit in ``escape`` stops it.  Raises on hang-up, after
    recording how far it got in ``ch.variables['__SIM_ENDPOS']``."""
    secs = prompt_seconds(pbx, ch, name)
    if secs is None:
        return Played(None, 0, False)
    pbx.bus.cel(ch, "STREAM_BEGIN", ch.app, ch.appdata)
    start = pbx.clock.now()
    deadline = start + secs
    digit: str | None = None
    try:
        while True:
            left = deadline - pbx.clock.now()
            if left <= 0:
                break
            d = await ch.next_dtmf(pbx.clock.real(left))
            if d is None:
                break
            if d in escape:
                digit = d
                break
    finally:
        elapsed = min(secs, pbx.clock.now() - start)
        ch.variables["__SIM_ENDPOS"] = str(int(elapsed * SAMPLE_RATE))
        pbx.bus.cel(ch, "STREAM_END", ch.app, ch.appdata)
    return Played(digit, int(elapsed * SAMPLE_RATE), True)


def send_dtmf(pbx: Pbx, ch: Channel, digit: str, duration_ms: int = 100) -> None:
    """A DTMF digit from the caller: delivered to the channel running the dialplan."""
    target = ch.peer if ch.peer is not None and ch.name.endswith(";1") else ch
    pbx.bus.dtmf(target, digit, duration_ms, True)
    pbx.bus.dtmf(target, digit, duration_ms, False)
    pbx.bus.cel(target, "DTMF", target.app, target.appdata,
                extra=f'{{"digit":"{digit}","duration":{duration_ms}}}')
    target.dtmf.put_nowait(digit)


def offer_menu_input(pbx: Pbx, ch: Channel, delay: float = 0.3) -> None:
    """A scripted caller answers the menu that just started (one script entry)."""
    if not ch.menu_digits:
        return
    digits = ch.menu_digits.pop(0)

    async def press() -> None:
        for d in digits:
            await pbx.clock.sleep(delay)
            if ch.hungup:
                return
            send_dtmf(pbx, ch, d)

    pbx.spawn(press())


async def collect(pbx: Pbx, ch: Channel, prompts: list[str], max_digits: int,
                  between: float, terminators: str = "#") -> tuple[str, bool]:
    """Play ``prompts`` (interruptible by any digit), then collect up to ``max_digits``
    with ``between`` seconds allowed between digits.  Returns (digits, timed_out)."""
    offer_menu_input(pbx, ch)
    digits = ""
    for p in prompts:
        played = await stream(pbx, ch, p, "0123456789*#")
        if played.digit is not None:
            if played.digit in terminators:
                return digits, False
            digits += played.digit
            break
    while len(digits) < max_digits:
        d = await ch.next_dtmf(pbx.clock.real(between))
        if d is None:
            return digits, True
        if d in terminators:
            return digits, False
        digits += d
    return digits, False
