"""Recording post-processing throughput: the product's pydub path vs calling ffmpeg
directly, in one run — seconds of call audio per CPU second (this process and its ffmpeg
children together).

Each "call" is a MixMonitor recording with its ``r()``/``t()`` legs (8 kHz mono 16-bit
WAV; the caller speaks, then the agent, turn by turn; tones and noise, not silence).  Both
paths do the same job: stereo (caller left, agent right), peak normalisation to -3 dBFS,
MP3 (libmp3lame 32 kb/s), the archive decoded back to check it, SHA-256:

(a) pydub: ``ivr.recordings.audio.process`` — pydub reads the legs (no ffmpeg for WAV),
    normalises and interleaves in Python/audioop, ffmpeg encodes (one child), pydub
    decodes the MP3 back through ffmpeg (a second child) for the check;
(b) ffmpeg only: ``volumedetect`` on each leg (two children), one ``amerge`` + ``volume``
    + encode child, a decode-to-null child for the check, SHA-256 in Python.

Rounds alternate (a) and (b); the best round of each counts.  The last line printed is
one JSON object with both rates and ``ratio`` (pydub's rate / ffmpeg's).
Run: ``.venv/bin/python bench/recordings.py [--calls 6] [--seconds 60] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.recordings.audio import legs_of, process  # noqa: E402
from ivr.recordings.policy import Rule  # noqa: E402

RATE = 8000


def write_leg(path: Path, seconds: float, first: bool, seed: int) -> None:
    """Turns of 4 s: this leg talks in every other turn (a tone with noise)."""
    rnd = random.Random(seed)
    frames = bytearray()
    turn = int(4 * RATE)
    for i in range(int(seconds * RATE)):
        talking = ((i // turn) % 2 == 0) == first
        v = 0.0
        if talking:
            v = 6000 * math.sin(2 * math.pi * (180 + 40 * ((i // turn) % 3)) * i / RATE)
            v += rnd.uniform(-1500, 1500)
        frames += struct.pack("<h", int(v))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def via_pydub(raw: Path, out: Path) -> float:
    return process(raw, out / f"{raw.stem}.mp3", Rule()).duration_s


_MAX_VOL = re.compile(r"max_volume: (-?[\d.]+) dB")


def _ff(*args: str) -> str:
    run = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-y", *args],
                         capture_output=True, text=True, check=True)
    return run.stderr


def via_ffmpeg(raw: Path, out: Path) -> float:
    left, right = legs_of(raw)
    peak = max(float(m.group(1)) for leg in (left, right)
               if (m := _MAX_VOL.search(_ff("-i", str(leg), "-af", "volumedetect",
                                            "-f", "null", "-"))))
    gain = -3.0 - peak
    dest = out / f"{raw.stem}.ff.mp3"
    _ff("-i", str(left), "-i", str(right), "-filter_complex",
        f"[0:a][1:a]amerge=inputs=2,volume={gain:.2f}dB[a]", "-map", "[a]",
        "-c:a", "libmp3lame", "-b:a", "32k", str(dest))
    _ff("-i", str(dest), "-f", "null", "-")  # the check: it decodes
    hashlib.sha256(dest.read_bytes()).hexdigest()
    with wave.open(str(left)) as w:
        return w.getnframes() / w.getframerate()


def run_round(fn: Callable[[Path, Path], float], raws: list[Path], out: Path
              ) -> tuple[float, float, float]:
    c0, w0 = cpu(), time.perf_counter()
    audio = sum(fn(r, out) for r in raws)
    return audio, cpu() - c0, time.perf_counter() - w0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        d = Path(tmp)
        raws: list[Path] = []
        for i in range(args.calls):
            raw = d / f"call{i}.wav"
            left, right = legs_of(raw)
            write_leg(left, args.seconds, True, i)
            write_leg(right, args.seconds, False, 1000 + i)
            raws.append(raw)
        out = d / "out"
        out.mkdir()
        best: dict[str, tuple[float, float, float]] = {}
        for n in range(args.rounds):
            for name, fn in (("pydub", via_pydub), ("ffmpeg", via_ffmpeg)):
                audio, cpu_s, wall_s = run_round(fn, raws, out)
                rate = audio / cpu_s
                print(f"round {n + 1} {name:6s}: {audio:.0f} s of audio in {cpu_s:.2f} CPU s "
                      f"({wall_s:.2f} s wall): {rate:.0f} s audio / CPU s", flush=True)
                if name not in best or rate > best[name][0] / best[name][1]:
                    best[name] = (audio, cpu_s, wall_s)
    rates = {k: a / c for k, (a, c, _w) in best.items()}
    result = {
        "calls": args.calls, "seconds_per_call": args.seconds, "rounds": args.rounds,
        "pydub_audio_s_per_cpu_s": round(rates["pydub"], 1),
        "ffmpeg_audio_s_per_cpu_s": round(rates["ffmpeg"], 1),
        "ratio": round(rates["pydub"] / rates["ffmpeg"], 3),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
