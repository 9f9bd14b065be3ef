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
from dataclasses import dataclass, field
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
    leg_kinds: tuple[str, ...] = ()  # "read" / "write" for each of ``legs``
    # MixMonitorMute: the muted spans of each direction (clock times; end None: still)
    mutes: dict[str, list[list[float | None]]] = field(
        default_factory=lambda: {"read": [], "write": []})

    def mute(self, direction: str, state: bool, now: float) -> None:
        """app_mixmonitor's mute flags: ``read``, ``write`` or ``both`` on or off."""
        for d in (("read", "write") if direction == "both" else (direction,)):
            spans = self.mutes.get(d)
            if spans is None:
                continue
            open_ = bool(spans) and spans[-1][1] is None
            if state and not open_:
                spans.append([now, None])
            elif not state and open_:
                spans[-1][1] = now
        self.muted = any(sp and sp[-1][1] is None for sp in self.mutes.values())

    def silent(self, direction: str, end: float) -> list[tuple[float, float]]:
        """The muted spans of ``read``/``write`` in seconds from the recording's start;
        ``mix``: where both directions were muted at once (nothing of either is heard)."""
        begun = self.start
        if begun is None:
            return []
        if direction == "mix":
            return _intersect(self.silent("read", end), self.silent("write", end))
        return [(max(0.0, float(a or 0.0) - begun), max(0.0, (end if b is None else b) - begun))
                for a, b in self.mutes.get(direction, [])]


def _intersect(xs: list[tuple[float, float]], ys: list[tuple[float, float]]
               ) -> list[tuple[float, float]]:
    out = []
    for a0, a1 in xs:
        for b0, b1 in ys:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo < hi:
                out.append((lo, hi))
    return out


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
    kinds = tuple(kind for k, kind in (("r", "read"), ("t", "write")) if opts.get(k))
    legs = tuple(_path(pbx, opts[k]) for k in ("r", "t") if opts.get(k))
    rec = Recording(path, None if bridged_only else pbx.clock.now(), legs=legs,
                    leg_kinds=kinds)
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


def mute(pbx: Pbx, ch: Channel, direction: str, state: bool,
         shown: bool | None = None) -> None:
    """Set (``state``) or clear the mute flag of ``direction``; the event's ``State`` is
    ``ast_true`` of what was asked (``shown``; default ``state``)."""
    rec = ch.mixmonitor
    if isinstance(rec, Recording):
        rec.mute(direction, state, pbx.clock.now())
    pbx.bus.chan("MixMonitorMute", "call", ch,
                 f"Direction: {direction}\r\nState: {int(state if shown is None else shown)}\r\n")


def stop(pbx: Pbx, ch: Channel, quiet: bool = False) -> bool:
    rec = ch.mixmonitor
    if not isinstance(rec, Recording):
        return False
    ch.mixmonitor = None
    begun = rec.start
    now = pbx.clock.now()
    seconds = 0.0 if begun is None else min(MAX_SECONDS, max(0.0, now - begun))
    # the mixed file is silent where both directions were muted, each leg where its own
    # direction was (r(): read, what the channel says; t(): write, what it hears)
    files = [(rec.path, rec.silent("mix", now)),
             *((leg, rec.silent(kind, now)) for leg, kind in zip(rec.legs, rec.leg_kinds,
                                                                 strict=False))]

    def write() -> None:  # in the PBX's writer thread: creating a file blocks
        for path, silent in files:
            try:
                write_wav(path, seconds, silent)
            except OSError as exc:
                METRICS.inc("sim.mixmonitor_write_failed")
                log_event(log, logging.ERROR, "sim.mixmonitor_write_failed", path=str(path),
                          error=str(exc))

    pbx.run_io(write)
    if not quiet:
        pbx.bus.chan("MixMonitorStop", "call", ch)
    _reconfigure(pbx, ch)
    return True


def write_wav(path: Path, seconds: float,
              silent: list[tuple[float, float]] | None = None) -> None:
    """``seconds`` of audio: a 425 Hz tone for 100 ms in every second, else silence; the
    ``silent`` spans (seconds from the start: MixMonitorMute) are all zero.
    Header then samples (runs in the PBX's writer thread, or anywhere blocking is fine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * RATE)
    whole, rest = divmod(frames * 2, len(_SECOND))
    data = _SECOND * whole + _SECOND[:rest]
    if silent:
        buf = bytearray(data)
        for a, b in silent:
            lo, hi = max(0, int(a * RATE) * 2), min(len(buf), int(b * RATE) * 2)
            if lo < hi:
                buf[lo:hi] = bytes(hi - lo)
        data = bytes(buf)
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
