"""What Asterisk plays, and reading the format of a prompt file (no external tools).

Asterisk's ``format_wav`` plays ``.wav`` files that are RIFF/WAVE, PCM (format tag 1),
8000 Hz, mono, 16-bit; ``format_pcm`` plays headerless ``.sln`` (signed linear 16-bit,
8 kHz, mono) and ``.ulaw`` (G.711 mu-law, 8 kHz, one byte per sample).  A raw file has
no header, so only its size can be checked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ivr.prompts.errors import AudioFormatError

ASTERISK_RATE = 8000
ASTERISK_CHANNELS = 1
ASTERISK_WIDTH = 2  # bytes per sample
WAVE_FORMAT_PCM = 1
_CODEC_NAMES = {1: "pcm", 3: "float", 6: "alaw", 7: "mulaw", 0x11: "ima-adpcm", 0x55: "mp3",
                0xFFFE: "extensible"}


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """The format of one prompt file."""

    path: Path
    container: str  # "wav", "sln" or "ulaw"
    codec: str  # "pcm", "mulaw", "alaw", "float", "format-0x…"
    sample_rate: int
    channels: int
    sample_width: int  # bytes per sample
    frames: int

    @property
    def duration_ms(self) -> int:
        if self.sample_rate <= 0:
            return 0
        return self.frames * 1000 // self.sample_rate

    def problems(self) -> list[str]:
        """Why Asterisk would not play this file as a prompt (empty when it would)."""
        out: list[str] = []
        if self.container == "wav" and self.codec != "pcm":
            out.append(f"codec {self.codec}, expected pcm (16-bit signed linear)")
        if self.sample_rate != ASTERISK_RATE:
            out.append(f"sample rate {self.sample_rate} Hz, expected {ASTERISK_RATE} Hz")
        if self.channels != ASTERISK_CHANNELS:
            out.append(f"{self.channels} channels, expected mono")
        expected_width = 1 if self.container == "ulaw" else ASTERISK_WIDTH
        if self.sample_width != expected_width:
            out.append(
                f"{self.sample_width * 8}-bit samples, expected {expected_width * 8}-bit"
            )
        if self.frames == 0:
            out.append("no audio (0 samples)")
        return out


def inspect_audio(path: Path) -> AudioInfo:
    """The format of ``path`` (``.wav``, ``.sln`` or ``.ulaw``); raises
    :class:`AudioFormatError` naming the file when it cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".wav":
            return _inspect_wav(path)
        size = path.stat().st_size
    except OSError as exc:
        raise AudioFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if suffix == ".sln":
        if size % 2:
            raise AudioFormatError(f"{path}: odd size {size} bytes, not 16-bit samples")
        return AudioInfo(path, "sln", "pcm", ASTERISK_RATE, 1, 2, size // 2)
    if suffix == ".ulaw":
        return AudioInfo(path, "ulaw", "mulaw", ASTERISK_RATE, 1, 1, size)
    raise AudioFormatError(f"{path}: extension {suffix or '(none)'} is not .wav, .sln or .ulaw")


def _inspect_wav(path: Path) -> AudioInfo:
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioFormatError(f"{path}: not a RIFF/WAVE file")
        fmt: tuple[int, int, int, int] | None = None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise AudioFormatError(f"{path}: no data chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = fh.read(size)
                if len(body) < 16:
                    raise AudioFormatError(f"{path}: fmt chunk is {len(body)} bytes")
                tag, channels, rate, _byte_rate, _align, bits = struct.unpack(
                    "<HHIIHH", body[:16]
                )
                fmt = (tag, channels, rate, bits)
                if size % 2:
                    fh.read(1)
            elif cid == b"data":
                if fmt is None:
                    raise AudioFormatError(f"{path}: data chunk before fmt chunk")
                tag, channels, rate, bits = fmt
                # A streaming writer may leave 0xFFFFFFFF: use what is really there.
                here = fh.tell()
                fh.seek(0, 2)
                size = min(size, fh.tell() - here)
                width = max(1, bits // 8)
                frames = size // (width * max(1, channels))
                codec = _CODEC_NAMES.get(tag, f"format-0x{tag:04x}")
                return AudioInfo(path, "wav", codec, rate, channels, width, frames)
            else:
                fh.seek(size + (size % 2), 1)
