"""The recorded Asterisk traces in the project are the recorded bytes: nothing (git's line
ending conversion, an editor trimming trailing spaces) changed them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests import conftest

DATA = Path(__file__).resolve().parent / "data"
MANIFEST = DATA / "asterisk-traces.sha256"


def _manifest() -> dict[str, str]:
    lines = MANIFEST.read_text(encoding="ascii").splitlines()
    return {name: digest for digest, name in (ln.split(maxsplit=1) for ln in lines)}


def test_every_trace_file_has_its_recorded_bytes() -> None:
    want = _manifest()
    have = {p.relative_to(DATA).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (DATA / "asterisk-traces").rglob("*") if p.is_file()}
    assert sorted(have) == sorted(want), "files added to or missing from the traces"
    changed = [name for name in want if have[name] != want[name]]
    assert not changed, f"changed since recorded (line endings?): {changed}"
    ami = (DATA / "asterisk-traces" / "01-login-and-basics" / "ami.server.raw").read_bytes()
    assert ami.startswith(b"Asterisk Call Manager/") and b"\r\n\r\n" in ami


def test_the_tests_read_the_project_copy_unless_told_otherwise(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IVR_TRACES", raising=False)
    assert conftest._find_traces() == DATA / "asterisk-traces"
    monkeypatch.setenv("IVR_TRACES", str(tmp_path))
    with pytest.raises(RuntimeError, match=f"{tmp_path}.*IVR_TRACES"):
        conftest._find_traces()
    (tmp_path / "README.md").write_text("other traces\n")
    assert conftest._find_traces() == tmp_path
