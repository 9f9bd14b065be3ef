"""Turn any audio ffmpeg reads into an Asterisk prompt: 8 kHz mono 16-bit PCM WAV,
level-normalised, written atomically.

ffmpeg does the decoding and the resampling (with its anti-aliasing filter, which a
plain sample-rate conversion would lack); the level is set here on the decoded samples.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

from ivr.prompts.errors import PromptImportError
from ivr.prompts.formats import ASTERISK_RATE

DEFAULT_PEAK_DBFS = -3.0
FFMPEG_TIMEOUT_S = 60.0
MAX_PROMPT_SECONDS = 120
"""A prompt is something callers listen to in a menu: longer recordings are refused,
never cut silently (hold music is Asterisk's MusicOnHold, not a prompt)."""
_CODEC_SLACK_S = 0.5  # encoder padding: a 120 s recording may decode a little longer
LEVEL_RANGE_DBFS = (-60.0, 0.0)
"""Target levels an admin may ask for: full scale is 0 dBFS, so a positive level would
clip every sample; below -60 dBFS callers hear nothing."""


@dataclass(frozen=True, slots=True)
class Converted:
    path: Path
    duration_ms: int
    peak_dbfs: float
    rms_dbfs: float
    gain_db: float


def ffmpeg_binary() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise PromptImportError("ffmpeg not found on PATH / 未找到 ffmpeg")
    return found


def decode_to_pcm(source: Path) -> bytes:
    """Decode ``source`` to 8 kHz mono signed 16-bit little-endian samples."""
    if not source.is_file():
        raise PromptImportError(f"{source}: no such file / 文件不存在")
    cmd = [
        ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error",
        # a second past the limit is enough to know the file is too long, and bounds
        # what a one-hour file costs to find out
        "-i", str(source), "-vn", "-t", str(MAX_PROMPT_SECONDS + 1),
        "-ac", "1", "-ar", str(ASTERISK_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PromptImportError(f"{source}: ffmpeg took longer than {FFMPEG_TIMEOUT_S:.0f} s") \
            from exc
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = why[-1] if why else "no audio stream"
        raise PromptImportError(
            f"{source}: not readable audio / 无法读取的音频文件: {detail}"
        )
    data = proc.stdout
    if len(data) // 2 > (MAX_PROMPT_SECONDS + _CODEC_SLACK_S) * ASTERISK_RATE:
        raise PromptImportError(
            f"{source}: longer than {MAX_PROMPT_SECONDS} s: a prompt is at most "
            f"{MAX_PROMPT_SECONDS} s (cut the recording first; nothing was imported) / "
            f"录音超过 {MAX_PROMPT_SECONDS} 秒，未导入，请先剪辑")
    return data[: len(data) - len(data) % 2]


def check_level(what: str, value: float) -> float:
    """A target level in dBFS: finite and within :data:`LEVEL_RANGE_DBFS`."""
    lo, hi = LEVEL_RANGE_DBFS
    if not math.isfinite(value) or not lo <= value <= hi:
        raise PromptImportError(
            f"{what} must be a number of dBFS from {lo:g} to {hi:g} (0 is full scale), "
            f"got {value!r} / {what} 须在 {lo:g} 到 {hi:g} dBFS 之间")
    return value


def _samples(pcm: bytes) -> array.array[int]:
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def levels_dbfs(samples: array.array[int]) -> tuple[float, float]:
    """(peak, rms) in dBFS; ``-inf`` for silence."""
    if not samples:
        return -math.inf, -math.inf
    peak = max(max(samples), -min(samples))
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    def db(v: float) -> float:
        return 20 * math.log10(v / 32768) if v > 0 else -math.inf
    return db(peak), db(rms)


def normalise(
    samples: array.array[int],
    peak_dbfs: float = DEFAULT_PEAK_DBFS,
    max_rms_dbfs: float | None = None,
) -> tuple[array.array[int], float]:
    """Scale so the peak is at ``peak_dbfs`` (and, when ``max_rms_dbfs`` is given, the
    RMS not above it); returns the new samples and the gain applied in dB."""
    peak, rms = levels_dbfs(samples)
    if peak == -math.inf:
        raise PromptImportError("the audio is silent / 音频为静音")
    gain = peak_dbfs - peak
    if max_rms_dbfs is not None and rms + gain > max_rms_dbfs:
        gain = max_rms_dbfs - rms
    factor = 10 ** (gain / 20)
    out = array.array("h", (max(-32768, min(32767, round(s * factor))) for s in samples))
    return out, gain


def write_wav_atomic(target: Path, samples: array.array[int], rate: int = ASTERISK_RATE) -> None:
    """Write a mono 16-bit WAV next to ``target`` and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            data = array.array("h", samples)
            if sys.byteorder == "big":
                data.byteswap()
            w.writeframes(data.tobytes())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def convert_file(
    source: Path,
    target: Path,
    peak_dbfs: float = DEFAULT_PEAK_DBFS,
    max_rms_dbfs: float | None = None,
) -> Converted:
    """Decode, resample, normalise and atomically write ``source`` as ``target``."""
    check_level("peak level (--peak-dbfs)", peak_dbfs)
    if max_rms_dbfs is not None:
        check_level("RMS cap (--max-rms-dbfs)", max_rms_dbfs)
    samples = _samples(decode_to_pcm(source))
    if not samples:
        raise PromptImportError(f"{source}: no audio samples / 没有音频数据")
    try:
        out, gain = normalise(samples, peak_dbfs, max_rms_dbfs)
    except PromptImportError as exc:
        raise PromptImportError(f"{source}: {exc}") from exc
    write_wav_atomic(target, out)
    peak, rms = levels_dbfs(out)
    return Converted(target, len(out) * 1000 // ASTERISK_RATE, peak, rms, gain)


def read_wav_samples(path: Path) -> array.array[int]:
    """The samples of a mono 16-bit WAV (tests and level checks)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise PromptImportError(f"{path}: not 16-bit")
        return _samples(w.readframes(w.getnframes()))
