"""Where archives live, and their retention.

Layout: ``<dir>/<YYYY>/<MM>/<DD>/<call id>/<raw file's stem>.<format>`` — the date is the
day the call started, in UTC (one rule, no daylight-saving or time-zone setting to get
wrong); the call id is Asterisk's Linkedid.  The ``location`` in ``recording.ready`` is
this path relative to ``<dir>``.

Purge (:func:`purge`) deletes the day folders older than ``retention_days`` and, for
every archive it deletes, first appends one JSON line to ``<dir>/purge-audit.log``
(flushed to disk before the file goes) and logs ``recordings.purged``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ivr.log import event as log_event
from ivr.recordings.errors import StorageError

log = logging.getLogger("ivr.recordings.store")

AUDIT_FILE = "purge-audit.log"
_SAFE = re.compile(r"[^0-9A-Za-z._-]")


def safe_name(text: str) -> str:
    """A path component from a call id or file stem (no separators, no ``..``)."""
    name = _SAFE.sub("_", text).strip(".") or "_"
    return name[:128]


def archive_path(root: Path, call_id: str, started_at: float, stem: str, fmt: str) -> Path:
    day = datetime.fromtimestamp(started_at, tz=UTC)
    return (root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / safe_name(call_id)
            / f"{safe_name(stem)}.{fmt}")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    files: int
    bytes: int
    days: tuple[str, ...]


def _day_dirs(root: Path) -> list[tuple[date, Path]]:
    out: list[tuple[date, Path]] = []
    for y in sorted(root.glob("[0-9][0-9][0-9][0-9]")):
        for m in sorted(y.glob("[0-9][0-9]")):
            for d in sorted(m.glob("[0-9][0-9]")):
                try:
                    out.append((date(int(y.name), int(m.name), int(d.name)), d))
                except ValueError:
                    continue  # not a day folder of this layout
    return out


def purge(root: Path, retention_days: int, now: float, *, dry_run: bool = False,
          actor: str = "ivr recordings purge") -> PurgeResult:
    """Delete the archives of calls that started more than ``retention_days`` full days
    before ``now`` (UTC days), with one audit line per file."""
    if retention_days < 1:
        raise StorageError(f"retention_days must be >= 1, got {retention_days} "
                           f"/ 保留天数必须至少为 1")
    cutoff = datetime.fromtimestamp(now, tz=UTC).date() - timedelta(days=retention_days)
    files = size = 0
    days: list[str] = []
    audit = root / AUDIT_FILE
    for day, folder in _day_dirs(root):
        if day >= cutoff:
            continue
        days.append(day.isoformat())
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            n = path.stat().st_size
            line = {"ts": datetime.fromtimestamp(now, tz=UTC).isoformat(),
                    "action": "dry-run" if dry_run else "purge",
                    "path": str(path.relative_to(root)), "bytes": n, "call_day": day.isoformat(),
                    "retention_days": retention_days, "actor": actor}
            if not dry_run:
                with audit.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                path.unlink()
            log_event(log, logging.INFO, "recordings.purged", **line)
            files += 1
            size += n
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
            for parent in (folder.parent, folder.parent.parent):
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
    return PurgeResult(files=files, bytes=size, days=tuple(days))
