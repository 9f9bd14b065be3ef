"""``prompts/manifest.json``: where each prompt file came from.

``source`` is ``synthetic`` (made by ``ivr prompts build`` with espeak-ng; rebuilt when
the catalog text changes, replaced by any import) or ``imported`` (a human recording;
never overwritten by ``build``).  A file with no entry is treated as a human recording.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ivr.prompts.errors import PromptError

MANIFEST_FILE = "manifest.json"
SYNTHETIC = "synthetic"
IMPORTED = "imported"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    source: str  # SYNTHETIC or IMPORTED
    file: str  # relative to the prompts dir: "zh/welcome.wav"
    duration_ms: int
    voice: str = ""  # espeak-ng voice for synthetic prompts
    text_sha256: str = ""  # hash of the text that was synthesised
    original: str = ""  # the imported file's name (not its path)


class Manifest:
    def __init__(self, path: Path, entries: dict[str, ManifestEntry] | None = None) -> None:
        self.path = path
        self.entries: dict[str, ManifestEntry] = entries or {}

    @staticmethod
    def key(language: str, name: str) -> str:
        return f"{language}/{name}"

    def get(self, language: str, name: str) -> ManifestEntry | None:
        return self.entries.get(self.key(language, name))

    def set(self, language: str, name: str, entry: ManifestEntry) -> None:
        self.entries[self.key(language, name)] = entry

    def save(self) -> None:
        data = {"version": 1, "prompts": {k: asdict(v) for k, v in sorted(self.entries.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False, indent=1)
                fh.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_manifest(prompts_dir: Path) -> Manifest:
    path = prompts_dir / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Manifest(path)
    except (OSError, ValueError) as exc:
        raise PromptError(f"{path}: cannot read prompt manifest: {exc}") from exc
    entries: dict[str, ManifestEntry] = {}
    prompts = raw.get("prompts", {}) if isinstance(raw, dict) else None
    if not isinstance(prompts, dict):
        raise PromptError(f"{path}: expected {{'prompts': {{...}}}}")
    for key, value in prompts.items():
        try:
            entries[key] = ManifestEntry(**value)
        except TypeError as exc:
            raise PromptError(f"{path}: entry {key!r}: {exc}") from exc
    return Manifest(path, entries)
