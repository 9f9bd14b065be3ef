"""Importing real audio files: format, level, atomic write, clear errors."""

from __future__ import annotations

import math
import subprocess
import wave
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.prompts.admin import import_prompt
from ivr.prompts.convert import levels_dbfs, read_wav_samples
from ivr.prompts.errors import PromptImportError
from ivr.prompts.formats import inspect_audio
from ivr.prompts.manifest import IMPORTED, load_manifest


def ffmpeg_tone(path: Path, *, rate: int, channels: int, volume: float, seconds: float = 1.0,
                codec: list[str] | None = None) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={seconds}:sample_rate={rate}",
         "-af", f"volume={volume}", "-ac", str(channels), *(codec or []), "-y", str(path)],
        check=True, timeout=30,
    )
    return path


def test_import_stereo_44k_wav_to_asterisk_format(tmp_path: Path) -> None:
    src = ffmpeg_tone(tmp_path / "studio.wav", rate=44100, channels=2, volume=0.05)
    with wave.open(str(src)) as w:
        assert (w.getframerate(), w.getnchannels()) == (44100, 2)
    prompts = tmp_path / "prompts"
    res = import_prompt(prompts, src, "welcome", "zh")
    out = prompts / "zh" / "welcome.wav"
    assert res.path == out
    info = inspect_audio(out)
    assert (info.container, info.codec, info.sample_rate, info.channels, info.sample_width) == (
        "wav", "pcm", 8000, 1, 2)
    assert info.problems() == []
    assert 950 <= info.duration_ms <= 1050
    peak, rms = levels_dbfs(read_wav_samples(out))
    assert -3.3 <= peak <= -2.7  # quiet source (-26 dBFS) brought up to -3 dBFS peak
    assert res.gain_db > 20
    assert -7.0 < rms < -5.0  # a sine's RMS is 3 dB under its peak
    entry = load_manifest(prompts).get("zh", "welcome")
    assert entry is not None and entry.source == IMPORTED and entry.original == "studio.wav"
    assert not list((prompts / "zh").glob(".*tmp"))  # nothing left from the atomic write


def test_import_mp3_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = ffmpeg_tone(tmp_path / "hold.mp3", rate=44100, channels=2, volume=0.9,
                      codec=["-c:a", "libmp3lame"])
    prompts = tmp_path / "prompts"
    rc = main(["prompts", "import", str(src), "--name", "please-hold", "--lang", "yue",
               "--dir", str(prompts)])
    assert rc == 0
    assert "yue/please-hold.wav" in capsys.readouterr().out
    info = inspect_audio(prompts / "yue" / "please-hold.wav")
    assert (info.sample_rate, info.channels, info.sample_width) == (8000, 1, 2)
    peak, _ = levels_dbfs(read_wav_samples(prompts / "yue" / "please-hold.wav"))
    assert -3.3 <= peak <= -2.7  # a loud source is brought down too


def test_loud_noise_is_capped_by_rms_target(tmp_path: Path) -> None:
    src = tmp_path / "noise.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "anoisesrc=d=0.5:c=white:a=0.9:r=16000", "-y", str(src)], check=True, timeout=30)
    import_prompt(tmp_path / "p", src, "surge", "en", max_rms_dbfs=-16.0)
    peak, rms = levels_dbfs(read_wav_samples(tmp_path / "p" / "en" / "surge.wav"))
    assert rms <= -15.9
    assert peak <= -2.7


def test_unreadable_file_gives_clear_error_and_writes_nothing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    bad = tmp_path / "notes.mp3"
    bad.write_text("this is not audio")
    prompts = tmp_path / "prompts"
    with pytest.raises(PromptImportError, match="notes.mp3: not readable audio"):
        import_prompt(prompts, bad, "welcome", "zh")
    assert not (prompts / "zh" / "welcome.wav").exists()
    rc = main(["prompts", "import", str(tmp_path / "missing.wav"), "--name", "welcome",
               "--lang", "zh", "--dir", str(prompts)])
    assert rc == 1
    assert "no such file / 文件不存在" in capsys.readouterr().err


def test_silent_file_and_bad_names_are_refused(tmp_path: Path) -> None:
    silent = ffmpeg_tone(tmp_path / "s.wav", rate=8000, channels=1, volume=0.0)
    with pytest.raises(PromptImportError, match="silent"):
        import_prompt(tmp_path / "p", silent, "welcome", "zh")
    tone = ffmpeg_tone(tmp_path / "t.wav", rate=8000, channels=1, volume=0.5)
    with pytest.raises(PromptImportError, match="invalid prompt name"):
        import_prompt(tmp_path / "p", tone, "../etc/passwd", "zh")
    with pytest.raises(PromptImportError, match="invalid language"):
        import_prompt(tmp_path / "p", tone, "welcome", "../zh")


def test_levels_of_silence() -> None:
    import array
    assert levels_dbfs(array.array("h", [0, 0])) == (-math.inf, -math.inf)


def test_a_recording_longer_than_a_prompt_is_refused_not_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a one-hour file was cut to 120 s without a word.  Now it is refused after
    decoding just past the limit (what a long file costs to find out stays bounded)."""
    hour = ffmpeg_tone(tmp_path / "hour.wav", rate=8000, channels=1, volume=0.5,
                       seconds=3600, codec=["-c:a", "pcm_mulaw"])
    prompts = tmp_path / "prompts"
    rc = main(["prompts", "import", str(hour), "--name", "welcome", "--lang", "zh",
               "--dir", str(prompts)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "longer than 120 s" in err and "nothing was imported" in err and "未导入" in err
    assert not (prompts / "zh" / "welcome.wav").exists()
    # exactly the limit still imports
    limit = ffmpeg_tone(tmp_path / "limit.wav", rate=8000, channels=1, volume=0.5,
                        seconds=120)
    assert import_prompt(prompts, limit, "welcome", "zh").duration_ms == 120_000


@pytest.mark.parametrize("level", ["nan", "1e309", "-inf", "3", "0.5", "-61"])
def test_impossible_levels_are_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], level: str
) -> None:
    tone = ffmpeg_tone(tmp_path / "t.wav", rate=8000, channels=1, volume=0.5)
    for flag in ("--peak-dbfs", "--max-rms-dbfs"):
        rc = main(["prompts", "import", str(tone), "--name", "welcome", "--lang", "zh",
                   "--dir", str(tmp_path / "p"), f"{flag}={level}"])
        assert rc == 1
        err = capsys.readouterr().err
        assert "must be a number of dBFS from -60 to 0" in err and "dBFS 之间" in err, err
    assert not (tmp_path / "p" / "zh" / "welcome.wav").exists()
    with pytest.raises(PromptImportError, match="peak level"):
        import_prompt(tmp_path / "p", tone, "welcome", "zh", peak_dbfs=float(level))
