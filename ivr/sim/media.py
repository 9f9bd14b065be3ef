"""Prompts and DTMF: how long a prompt plays, streaming it with escape digits, and
collecting digits (GET DATA, Read, Background) from the simulated caller."""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from functools import lru_cache
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


# folder -> (its mtime, {file stem: seconds or None}); a file added to or removed from
# the folder changes its mtime and drops the folder's entries
_FOLDERS: dict[str, tuple[int, dict[str, float | None]]] = {}


def _prompt_file_seconds(stem: str) -> float | None:
    """Seconds of ``<stem>.wav`` if it is a file (one ``stat`` of its folder per call)."""
    folder, _, base = stem.rpartition("/")
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return None
    entry = _FOLDERS.get(folder)
    if entry is None or entry[0] != mtime:
        if len(_FOLDERS) > 4096:
            _FOLDERS.clear()
        entry = _FOLDERS[folder] = (mtime, {})
    known = entry[1]
    if base in known:
        return known[base]
    path = f"{stem}.wav"
    secs = _wav_seconds(path) if os.path.isfile(path) else None
    known[base] = secs
    return secs


# the folders tried, in order, for a channel language (each once: "zh" is no second try)
_LANGS: dict[str, tuple[str, ...]] = {"zh": ("zh", "en", ""), "en": ("en", "zh", "")}


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
        base = str(prompts)
        for lang in _LANGS.get(ch.language) or (ch.language, "zh", "en", ""):
            secs = _prompt_file_seconds(os.path.join(base, lang, name) if lang
                                        else os.path.join(base, name))
            if secs is not None:
                return secs
    if name in BUILTIN:
        return BUILTIN[name]
    if pbx.options.strict_prompts or "&" in name:  # "a&b" is no file (ast_streamfile)
        return None
    return pbx.options.default_prompt_seconds


@dataclass
class Played:
    digit: str | None
    endpos: int  # samples at 8 kHz
    found: bool


async def stream(pbx: Pbx, ch: Channel, name: str, escape: str = "",
                 cel_begin: bool = True) -> Played:
    """Play ``name``; a live DTMF digit in ``escape`` stops it.  Raises on hang-up, after
    recording how far it got in ``ch.variables['__SIM_ENDPOS']``.  CEL ``STREAM_BEGIN``
    is published by ``ast_streamfile()`` only: AGI ``STREAM FILE`` opens and plays the
    stream itself (``cel_begin=False``); ``ast_stopstream()`` always publishes
    ``STREAM_END``."""
    secs = prompt_seconds(pbx, ch, name)
    if secs is None:
        return Played(None, 0, False)
    if cel_begin:
        pbx.bus.cel(ch, "STREAM_BEGIN", ch.app, ch.appdata)
    start = pbx.clock.now()
    deadline = start + secs
    digit: str | None = None
    try:
        while True:
            left = deadline - pbx.clock.now()
            if left <= 0:
                break
            d = await ch.next_dtmf(left)
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


def send_dtmf(pbx: Pbx, ch: Channel, digit: str, duration_ms: int = 100,
              begin: bool = True) -> None:
    """A DTMF digit from the caller: delivered to the channel running the dialplan.
    ``begin=False``: the digit arrives as a SIP INFO, which carries its end only (no
    DTMFBegin; trace 08)."""
    target = ch.peer if ch.peer is not None and ch.name.endswith(";1") else ch
    if begin:
        pbx.bus.dtmf(target, digit, duration_ms, True)
    pbx.bus.dtmf(target, digit, duration_ms, False)
    pbx.bus.cel(target, "DTMF", target.app, target.appdata,
                extra=f'{{"digit":"{digit}","duration_ms":{duration_ms}}}')
    target.dtmf.put_nowait(digit)


def offer_menu_input(pbx: Pbx, ch: Channel, delay: float = 0.3) -> None:
    """A scripted caller answers the menu that just started (one script entry)."""
    if not ch.menu_digits:
        return
    digits = ch.menu_digits.pop(0)
    if not digits:  # the caller presses nothing at this menu
        return

    async def press() -> None:
        for d in digits:
            await pbx.clock.sleep(delay)
            if ch.hungup:
                return
            send_dtmf(pbx, ch, d, begin=not ch.dtmf_info)

    pbx.spawn(press())


# ast_getdata_result (include/asterisk/app.h)
GETDATA_FAILED = -1
GETDATA_COMPLETE = 0
GETDATA_TIMEOUT = 1
GETDATA_EMPTY_END_TERMINATED = 3

# A channel running the dialplan: ``ast_pbx``'s response / digit timeouts (main/pbx.c).
PBX_RTIMEOUT = 10.0
PBX_DTIMEOUT = 5.0
FOREVER = 1_000_000.0  # a negative timeout: 1,000,000,000 ms


def split_prompts(text: str) -> list[str]:
    """``a&b&c`` as ``ast_strsep(&s, '&', AST_STRSEP_STRIP | AST_STRSEP_TRIM)`` yields
    it: items trimmed, one pair of surrounding quotes removed; empty items kept."""
    out = []
    for item in text.split("&"):
        item = item.strip()
        if len(item) >= 2 and item[0] == item[-1] == '"':
            item = item[1:-1]
        out.append(item)
    return out


async def readstring(pbx: Pbx, ch: Channel, first: str | None, max_digits: int,
                     between: float, first_timeout: float, enders: str) -> tuple[str, int]:
    """``ast_readstring()``: ``first`` is the digit that stopped the prompt, if any;
    then up to ``max_digits`` digits, ``first_timeout`` seconds for the first one and
    ``between`` seconds for each next one.  Returns (digits, ast_getdata_result);
    raises :class:`ChannelHungUp` on hang-up."""
    if max_digits == 0:
        return "", GETDATA_FAILED
    digits = ""
    to = first_timeout
    d = first
    while True:
        if d is None:
            d = await ch.next_dtmf(to)
            if d is None:
                return digits, GETDATA_TIMEOUT
        if d in enders and not digits:
            return "", GETDATA_EMPTY_END_TERMINATED
        if d not in enders:
            digits += d
        if d in enders or len(digits) >= max_digits:
            return digits, GETDATA_COMPLETE
        to = between
        d = None


ANY_DIGIT = "0123456789*#ABCD"


async def getdata(pbx: Pbx, ch: Channel, prompts: str, max_digits: int, timeout_ms: int,
                  terminator: str = "#") -> tuple[str, int]:
    """``ast_app_getdata_terminator()`` (Read, and GET DATA when told to split): the
    ``&``-separated prompts play one after another, any digit stops them; a missing
    prompt is skipped (if it is the last one, the result is ``GETDATA_FAILED``); after a
    prompt that is not the last, 50 ms are allowed for a first digit; after the last one
    the timeouts are ``timeout_ms`` (> 0), the dialplan's 10 s / 5 s (0) or forever (< 0).
    """
    offer_menu_input(pbx, ch)
    names = split_prompts(prompts)
    digits = ""
    res = 0
    for i, name in enumerate(names):
        played: Played | None = None
        if name:
            played = await stream(pbx, ch, name, ANY_DIGIT)
            if not played.found:
                res = GETDATA_FAILED
                continue
        if not "&".join(names[i + 1:]):
            first, between = PBX_RTIMEOUT, PBX_DTIMEOUT
            if timeout_ms > 0:
                first = between = timeout_ms / 1000.0
            elif timeout_ms < 0:
                first = between = FOREVER
        else:
            first, between = 0.05, PBX_DTIMEOUT
        digits, res = await readstring(pbx, ch, played.digit if played else None,
                                       max_digits, between, first, terminator)
        if res == GETDATA_EMPTY_END_TERMINATED or digits:
            return digits, res
    return digits, res


async def getdata_full(pbx: Pbx, ch: Channel, prompt: str, max_digits: int,
                       timeout_ms: int) -> tuple[str, int]:
    """``ast_app_getdata_full()`` (AGI GET DATA): ``prompt`` is ONE file name (no ``&``
    splitting); a missing prompt fails at once; 6 s for the first digit and 2 s between
    digits unless ``timeout_ms`` > 0 (both) or < 0 (forever); ``#`` ends the input."""
    offer_menu_input(pbx, ch)
    played: Played | None = None
    if prompt:
        played = await stream(pbx, ch, prompt, ANY_DIGIT)
        if not played.found:
            return "", GETDATA_FAILED
    first, between = 6.0, 2.0
    if timeout_ms > 0:
        first = between = timeout_ms / 1000.0
    elif timeout_ms < 0:
        first = between = FOREVER
    return await readstring(pbx, ch, played.digit if played else None, max_digits,
                            between, first, "#")
