"""Offline synthesis of missing prompts with espeak-ng (placeholders until a human
recording is imported)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ivr.prompts.convert import Converted, convert_file
from ivr.prompts.errors import PromptImportError, SynthesisError

ESPEAK_TIMEOUT_S = 30.0
DEFAULT_SPEED_WPM = 160


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise SynthesisError("espeak-ng not found on PATH / 未找到 espeak-ng")
    return found


def synthesize(text: str, voice: str, target: Path, speed: int = DEFAULT_SPEED_WPM) -> Converted:
    """Speak ``text`` with ``voice`` into ``target`` (8 kHz mono 16-bit WAV, -3 dBFS)."""
    with tempfile.TemporaryDirectory(prefix="ivr-tts-") as tmp:
        raw = Path(tmp) / "tts.wav"
        try:
            proc = subprocess.run(
                [espeak_binary(), "-v", voice, "-s", str(speed), "-b", "1", "-w", str(raw),
                 "--stdin"],
                input=text.encode("utf-8"), capture_output=True, timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SynthesisError(f"espeak-ng voice {voice}: timed out") from exc
        if proc.returncode != 0 or not raw.is_file() or raw.stat().st_size <= 44:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise SynthesisError(f"espeak-ng voice {voice}: failed: {err or 'no audio'}")
        try:
            return convert_file(raw, target)
        except PromptImportError as exc:
            raise SynthesisError(f"espeak-ng voice {voice}: {exc}") from exc
