"""Resolving and checking prompts, synthesising missing ones with espeak-ng."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.prompts import check_prompts, prompt_duration_ms, resolve_prompt
from ivr.prompts.admin import build_prompts, import_prompt
from ivr.prompts.catalog import PROMPT_NAMES, CatalogError, load_catalog, parse_catalog
from ivr.prompts.convert import levels_dbfs, read_wav_samples
from ivr.prompts.formats import inspect_audio
from ivr.prompts.manifest import IMPORTED, SYNTHETIC, load_manifest

REPO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"

MINI_CATALOG = """
languages:
  zh: {label: 普通话, voice: cmn}
  yue: {label: 粤语, voice: yue, fallback: [zh]}
  en: {label: English, voice: en-us, fallback: [zh]}
prompts:
  goodbye:
    zh: 感谢您的来电，再见。
    en: Thank you for calling. Goodbye.
  invalid:
    zh: 您的输入有误，请重新选择。
"""


def write_wav(path: Path, *, rate: int = 8000, channels: int = 1, width: int = 2,
              seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(rate * seconds)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * (frames * channels * width // 2))
    return path


def test_resolve_prefers_language_then_chain(tmp_path: Path) -> None:
    write_wav(tmp_path / "zh" / "welcome.wav")
    write_wav(tmp_path / "en" / "welcome.wav")
    (tmp_path / "yue").mkdir()
    (tmp_path / "yue" / "goodbye.sln").write_bytes(b"\0\0" * 8000)
    r = resolve_prompt(tmp_path, "welcome", "yue", ["zh"])
    assert r is not None and r.language == "zh" and r.fallback
    assert r.asterisk_name == "zh/welcome" and r.path == tmp_path / "zh" / "welcome.wav"
    r = resolve_prompt(tmp_path, "welcome", "ja", ["en", "zh"])
    assert r is not None and r.asterisk_name == "en/welcome"
    r = resolve_prompt(tmp_path, "goodbye", "yue", ["zh"])
    assert r is not None and r.asterisk_name == "yue/goodbye" and not r.fallback
    assert prompt_duration_ms(r.path) == 1000
    assert resolve_prompt(tmp_path, "goodbye", "zh", []) is None
    assert resolve_prompt(tmp_path, "../zh/welcome", "zh", []) is None


def test_check_reports_missing_fallback_and_bad_formats(tmp_path: Path) -> None:
    write_wav(tmp_path / "zh" / "welcome.wav")
    write_wav(tmp_path / "zh" / "goodbye.wav", rate=16000)  # wrong rate
    write_wav(tmp_path / "en" / "welcome.wav", channels=2)  # stereo
    write_wav(tmp_path / "en" / "goodbye.wav", width=1)  # 8-bit
    (tmp_path / "yue").mkdir()
    (tmp_path / "yue" / "welcome.sln").write_bytes(b"\0" * 801)  # odd: not 16-bit
    (tmp_path / "yue" / "invalid.ulaw").write_bytes(b"\xff" * 800)  # fine
    problems = check_prompts(tmp_path, ["welcome", "goodbye", "invalid"], ["zh", "yue", "en"],
                             {"yue": ["zh"], "en": ["zh"]})
    got = {(p.severity, p.kind, p.language, p.name) for p in problems}
    assert ("error", "missing", "zh", "invalid") in got
    assert ("error", "missing", "en", "invalid") in got
    assert ("warning", "fallback", "yue", "goodbye") in got
    assert ("error", "format", "zh", "goodbye") in got
    assert ("error", "format", "en", "welcome") in got
    assert ("error", "format", "en", "goodbye") in got
    assert ("error", "unreadable", "yue", "welcome") in got
    assert not any(p.language == "yue" and p.name == "invalid" for p in problems)
    rate = next(p for p in problems if p.kind == "format" and p.name == "goodbye"
                and p.language == "zh")
    assert "sample rate 16000 Hz, expected 8000 Hz" in rate.message
    assert len(problems) == len(got)


def test_check_flags_non_pcm_wav(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "zh" / "welcome.wav")
    data = bytearray(path.read_bytes())
    data[20:22] = (7).to_bytes(2, "little")  # format tag mu-law
    path.write_bytes(bytes(data))
    assert inspect_audio(path).codec == "mulaw"
    problems = check_prompts(tmp_path, ["welcome"], ["zh"], {})
    assert [p.kind for p in problems] == ["format"]
    assert "codec mulaw" in problems[0].message
    (tmp_path / "zh" / "welcome.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    assert [p.kind for p in check_prompts(tmp_path, ["welcome"], ["zh"])] == ["unreadable"]


def test_build_synthesises_missing_then_keeps_human_recordings(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(MINI_CATALOG, encoding="utf-8")
    catalog = load_catalog(tmp_path)
    res = build_prompts(tmp_path, catalog, ["zh", "en"])
    assert sorted(res.built) == ["en/goodbye", "zh/goodbye", "zh/invalid"]
    assert res.no_text == ["en/invalid"]
    for key in res.built:
        path = tmp_path / f"{key}.wav"
        info = inspect_audio(path)
        assert info.problems() == [] and 500 < info.duration_ms < 10_000
        peak, _ = levels_dbfs(read_wav_samples(path))
        assert -3.3 <= peak <= -2.7
    manifest = load_manifest(tmp_path)
    entry = manifest.get("zh", "goodbye")
    assert entry is not None and entry.source == SYNTHETIC and entry.voice == "cmn"
    assert entry.text_sha256 == catalog.text("goodbye", "zh").sha256()  # type: ignore[union-attr]
    # Nothing changed: nothing rebuilt.
    assert build_prompts(tmp_path, catalog, ["zh", "en"]).built == []
    # A human recording replaces the synthetic one and is never overwritten.
    import_prompt(tmp_path, tmp_path / "en" / "goodbye.wav", "goodbye", "zh")
    assert load_manifest(tmp_path).get("zh", "goodbye").source == IMPORTED  # type: ignore[union-attr]
    human = (tmp_path / "zh" / "goodbye.wav").read_bytes()
    changed = MINI_CATALOG.replace("感谢您的来电，再见。", "谢谢，再见。").replace(
        "Thank you for calling. Goodbye.", "Goodbye.")
    (tmp_path / "catalog.yaml").write_text(changed, encoding="utf-8")
    res = build_prompts(tmp_path, load_catalog(tmp_path), ["zh", "en"])
    assert res.built == ["en/goodbye"]  # the synthetic one follows the new text
    assert res.skipped_human == ["zh/goodbye"]
    assert (tmp_path / "zh" / "goodbye.wav").read_bytes() == human


def test_cli_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "catalog.yaml").write_text(MINI_CATALOG, encoding="utf-8")
    assert main(["prompts", "check", "--dir", str(tmp_path)]) == 1  # all missing
    assert "missing in zh / 提示音缺失" in capsys.readouterr().out
    assert main(["prompts", "build", "--dir", str(tmp_path), "--lang", "zh"]) == 0
    capsys.readouterr()
    assert main(["prompts", "check", "--dir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {(p["language"], p["name"], p["kind"]) for p in report["problems"]}
    assert ("en", "invalid", "fallback") in kinds and ("yue", "goodbye", "fallback") in kinds
    assert report["synthetic"] == ["zh/goodbye", "zh/invalid"]
    write_wav(tmp_path / "zh" / "goodbye.wav", rate=44100)
    assert main(["prompts", "check", "--dir", str(tmp_path)]) == 1
    assert "sample rate 44100 Hz" in capsys.readouterr().out


def test_catalog_errors_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"prompts\.welcome\.de: language not declared"):
        parse_catalog({"languages": {"zh": {}}, "prompts": {"welcome": {"de": "Hallo"}}})
    with pytest.raises(CatalogError, match="fallback: 'xx' is not another language"):
        parse_catalog({"languages": {"zh": {"fallback": ["xx"]}}, "prompts": {}})
    with pytest.raises(CatalogError, match="no prompt catalog"):
        load_catalog(tmp_path)


def test_shipped_catalog_and_prompts_are_complete() -> None:
    catalog = load_catalog(REPO_PROMPTS)
    assert catalog.names == PROMPT_NAMES
    assert {"zh", "yue", "en"} <= set(catalog.enabled_languages())
    for name in PROMPT_NAMES:
        assert set(catalog.prompts[name]) == set(catalog.languages), name
    problems = check_prompts(REPO_PROMPTS, PROMPT_NAMES, ["zh", "yue", "en"], catalog.chains())
    assert problems == []
    assert catalog.chain("ja") == ("ja", "en", "zh")

