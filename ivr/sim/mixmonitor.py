"""MixMonitor: a real WAV file (8 kHz, mono, 16-bit) of the recorded call's length.

With the ``b`` option (app_mixmonitor.c: "only save audio to the file while the channel
is bridged") a recording started on an unbridged channel counts from the channel's first
bridge entry; the file is written once, when the recording stops, in the PBX's writer
thread (off the event loop; ``Emulator.close`` waits for it, as Asterisk's recording
thread finishes the file after ``MixMonitorStop``)."""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.asterisk.appargs import split_app_args
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.sim.model import Channel

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx

log = logging.getLogger("ivr.sim.mixmonitor")
RATE = 8000
MAX_SECONDS = 4 * 3600
_TONE = b"".join(struct.pack("<h", int(2000 * math.sin(2 * math.pi * 425 * i / RATE)))
                 for i in range(RATE // 10))  # 100 ms of a 425 Hz tone
_SILENCE = b"\0\0" * (RATE // 10)
_SECOND = _TONE + _SILENCE * 9  # one second of audio: the tone, then 900 ms of silence


@dataclass
class Recording:
    path: Path
    start: float | None  # None: "b" option, the channel not bridged yet
    muted: bool = False
    legs: tuple[Path, ...] = ()  # r(file) / t(file): the received / transmitted audio


def parse_options(options: str) -> dict[str, str]:
    """MixMonitor's options as ast_app_parse_options reads them: one letter each, some
    with an argument in parentheses (``br(/tmp/in.wav)t(/tmp/out.wav)``)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(options):
        flag = options[i]
        i += 1
        arg = ""
        if i < len(options) and options[i] == "(":
            end = options.find(")", i)
            end = len(options) if end < 0 else end
            arg, i = options[i + 1:end], end + 1
        out[flag] = arg
    return out


def _path(pbx: Pbx, filename: str) -> Path:
    path = Path(filename)
    if not path.is_absolute() and pbx.options.record_dir is not None:
        path = pbx.options.record_dir / path
    return path


def start(pbx: Pbx, ch: Channel, filename: str, options: str = "") -> None:
    path = _path(pbx, filename)
    opts = parse_options(options)
    bridged_only = "b" in opts and ch.bridge is None
    legs = tuple(_path(pbx, opts[k]) for k in ("r", "t") if opts.get(k))
    rec = Recording(path, None if bridged_only else pbx.clock.now(), legs=legs)
    ch.mixmonitor = rec
    if bridged_only:
        def bridged() -> None:  # (a callback, not a task per recording)
            if rec.start is None and ch.mixmonitor is rec:
                rec.start = pbx.clock.now()

        ch.signal("bridged").then(bridged)
    pbx.set_var(ch, "MIXMONITOR_FILENAME", str(path))
    pbx.bus.chan("MixMonitorStart", "call", ch)
    _reconfigure(pbx, ch)


def _reconfigure(pbx: Pbx, ch: Channel) -> None:
    """An audiohook added to or removed from a bridged channel makes the bridge
    reconfigure, which sets BRIDGEPEER again on its channels (trace 02)."""
    if ch.bridge is not None and not ch.hungup:
        from ivr.sim.bridging import set_peers
        set_peers(pbx, ch.bridge)


def mute(pbx: Pbx, ch: Channel, direction: str, state: bool) -> None:
    rec = ch.mixmonitor
    if isinstance(rec, Recording):
        rec.muted = state
    pbx.bus.chan("MixMonitorMute", "call", ch,
                 f"Direction: {direction}\r\nState: {int(state)}\r\n")


def stop(pbx: Pbx, ch: Channel, quiet: bool = False) -> bool:
    rec = ch.mixmonitor
    if not isinstance(rec, Recording):
        return False
    ch.mixmonitor = None
    begun = rec.start
    seconds = 0.0 if begun is None else min(MAX_SECONDS, max(0.0, pbx.clock.now() - begun))
    paths = (rec.path, *rec.legs)

    def write() -> None:  # in the PBX's writer thread: creating a file blocks
        for path in paths:
            try:
                write_wav(path, seconds)
            except OSError as exc:
                METRICS.inc("sim.mixmonitor_write_failed")
                log_event(log, logging.ERROR, "sim.mixmonitor_write_failed", path=str(path),
                          error=str(exc))

    pbx.run_io(write)
    if not quiet:
        pbx.bus.chan("MixMonitorStop", "call", ch)
    _reconfigure(pbx, ch)
    return True


def write_wav(path: Path, seconds: float) -> None:
    """``seconds`` of audio: a 425 Hz tone for 100 ms in every second, else silence.
    Header then samples (runs in the PBX's writer thread, or anywhere blocking is fine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * RATE)
    whole, rest = divmod(frames * 2, len(_SECOND))
    data = _SECOND * whole + _SECOND[:rest]
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ",
                         16, 1, 1, RATE, RATE * 2, 2, 16, b"data", len(data))
    with open(path, "wb") as f:  # buffered: large writes go straight to the file, whole
        f.write(header)
        f.write(data)


async def mixmonitor_app(pbx: Pbx, ch: Channel, data: str) -> None:
    a = split_app_args(data, max_args=3) + ["", ""]
    start(pbx, ch, a[0], a[1])


async def stop_app(pbx: Pbx, ch: Channel, data: str) -> None:
    stop(pbx, ch)
