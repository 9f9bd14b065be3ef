"""Post-processing of one recording (blocking: run it in a thread): pydub for the level
and the channel layout, ffmpeg (through pydub) for the archive format.

pydub 0.25.1 imports ``audioop``, which Python 3.11 marks deprecated; that one warning is
silenced here, around the import, by its exact message — nothing else is.  pydub also
warns at import when ffmpeg is not on PATH; that is not silenced (the worker reports a
missing ffmpeg as a failed attempt, see :func:`process`).

MixMonitor legs: a recording started with ``r(<stem>-in.wav)t(<stem>-out.wav)`` beside
``<stem>.wav`` (trace 12) has the caller's own voice in ``-in`` (what the recorded
channel *reads*) and what the caller hears (agent, department, interpreter) in ``-out``.
Stereo archives put ``-in`` on the left and ``-out`` on the right; without the legs the
archive is made from the mixed file (and is mono).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ivr.recordings.errors import ProcessingError, StorageError
from ivr.recordings.policy import Rule

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"'audioop' is deprecated",
                            category=DeprecationWarning)
    from pydub import AudioSegment, effects
    from pydub.exceptions import CouldntDecodeError, CouldntEncodeError

# export parameters per archive format (8 kHz telephone audio)
EXPORT: dict[str, dict[str, object]] = {
    "mp3": {"format": "mp3", "codec": "libmp3lame", "bitrate": "32k"},
    "opus": {"format": "opus", "codec": "libopus", "bitrate": "24k"},
}
# how ffmpeg reads each archive format back (Opus is in an Ogg container)
DEMUXER = {"mp3": "mp3", "opus": "ogg"}
# a decoded archive may differ from what was encoded by the encoder's padding
DURATION_TOLERANCE_S = 0.25
_ERRORS = (OSError, CouldntDecodeError, CouldntEncodeError, IndexError, ValueError)


@dataclass(frozen=True, slots=True)
class Archive:
    path: Path
    duration_s: float
    sha256: str
    channels: int
    format: str
    bytes: int


def legs_of(raw: Path) -> tuple[Path, Path]:
    """The r()/t() leg files a MixMonitor of ``raw`` writes (``<stem>-in``, ``-out``)."""
    return (raw.with_name(f"{raw.stem}-in{raw.suffix}"),
            raw.with_name(f"{raw.stem}-out{raw.suffix}"))


def raw_files(raw: Path) -> list[Path]:
    """Every raw file of a recording that exists (the mixed file and its legs)."""
    return [p for p in (raw, *legs_of(raw)) if p.exists()]


def _load(path: Path, fmt: str | None = None) -> AudioSegment:
    # an open file, not a path: pydub 0.25.1 leaves a file it opened itself unclosed
    with path.open("rb") as f:
        return AudioSegment.from_file(f, format=fmt or path.suffix.lstrip(".") or None)


def _pad(seg: AudioSegment, ms: int) -> AudioSegment:
    if len(seg) >= ms:
        return seg
    return seg + AudioSegment.silent(duration=ms - len(seg), frame_rate=seg.frame_rate)


def assemble(raw: Path, rule: Rule) -> AudioSegment:
    """The call's audio, levelled, in the rule's channel layout."""
    left, right = legs_of(raw)
    if left.exists() and right.exists():
        a = _load(left).set_channels(1)
        b = _load(right).set_channels(1)
        rate = max(a.frame_rate, b.frame_rate)
        a = a.set_frame_rate(rate).set_sample_width(2)
        b = b.set_frame_rate(rate).set_sample_width(2)
        ms = max(len(a), len(b))
        a, b = _pad(a, ms), _pad(b, ms)
        if rule.channels == "stereo":
            seg = AudioSegment.from_mono_audiosegments(a, b)
        else:
            seg = a.overlay(b)
    elif raw.exists():
        seg = _load(raw)
        if rule.channels == "mono" or seg.channels > 2:
            seg = seg.set_channels(1)
    else:
        raise ProcessingError(raw, "no such file (nor its -in/-out legs) / 录音文件不存在")
    if seg.max > 0:  # silence stays silence
        seg = effects.normalize(seg, headroom=-rule.level_dbfs)
    return seg


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process(raw: Path, dest: Path, rule: Rule) -> Archive:
    """Archive ``raw`` (and its legs) at ``dest``: written to ``dest.part``, decoded back
    and checked, then renamed into place.  The raw files are never touched here.  An
    archive already at ``dest`` (a retry after a crash) is replaced."""
    try:
        seg = assemble(raw, rule)
    except ProcessingError:
        raise
    except _ERRORS as exc:
        raise ProcessingError(raw, f"cannot read: {_first_line(exc)}") from exc
    duration_s = len(seg) / 1000.0
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # an open file, not a path: pydub leaves a file it opened unclosed when ffmpeg fails
        with part.open("wb+") as f:
            seg.export(f, **EXPORT[rule.format])
            f.flush()
            os.fsync(f.fileno())
        check = _load(part, DEMUXER[rule.format])
    except _ERRORS as exc:
        part.unlink(missing_ok=True)
        raise ProcessingError(raw, f"cannot encode {rule.format}: {_first_line(exc)}") from exc
    if abs(len(check) / 1000.0 - duration_s) > DURATION_TOLERANCE_S:
        part.unlink(missing_ok=True)
        raise StorageError(f"{part}: archive decodes to {len(check) / 1000.0:.2f} s, "
                           f"expected {duration_s:.2f} s / 归档校验失败")
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    return Archive(path=dest, duration_s=round(duration_s, 3), sha256=sha256_of(dest),
                   channels=seg.channels, format=rule.format, bytes=dest.stat().st_size)
