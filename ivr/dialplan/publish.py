"""Publish a definition: validate, render, write atomically, reload Asterisk, verify,
roll back on any failure, keep every version with an audit record.

Layout (``out`` is the Asterisk config directory, default ``asterisk-conf/``)::

    out/extensions.conf, out/queues.conf        the live generated files
    out/versions/current.json                   {"id", "version"} of the live version
    out/versions/<id>/dialplans/*.yaml          the published definition
    out/versions/<id>/conf/*.conf               what was rendered from it
    out/versions/<id>/changes.diff              unified diff against the previous version
    out/versions/<id>/audit.json                who, when, what changed, version hash, status
    out/versions/audit.jsonl                    one line per attempt (also refused/rolled back)
    out/versions/.publish.lock                  flock held while publishing (one at a time)

Asterisk is driven through the small :class:`AmiControl` interface (``command`` returns
the CLI output lines, ``reload`` reloads a module), so the publish logic does not depend
on a particular client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from ivr.dialplan import model as m
from ivr.dialplan.errors import DialplanError, PublishError
from ivr.dialplan.loader import (
    MAX_FILE_BYTES,
    definition_files,
    parse_definition,
    sort_problems,
)
from ivr.dialplan.render import (
    RENDERED_FILES,
    Rendered,
    entry_contexts,
    render,
    source_version,
    version_marker,
)
from ivr.dialplan.validate import PromptFormatCheck, PromptLookup, check_definition
from ivr.log import event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.dialplan.publish")

VERSIONS_DIR = "versions"
CURRENT_FILE = "current.json"
AUDIT_LOG = "audit.jsonl"
LOCK_FILE = ".publish.lock"
QUEUE_MODULE = "app_queue.so"
MOH_MODULE = "res_musiconhold.so"  # the queues' offer classes (musiconhold.conf), before them


class AmiControl(Protocol):
    """What publish needs from an AMI connection."""

    async def command(self, cmd: str) -> list[str]:
        """Run a CLI command (``Action: Command``); the ``Output:`` lines."""
        ...

    async def reload(self, module: str) -> None:
        """``Action: Reload`` of ``module``; raises if Asterisk answers an error."""
        ...


@dataclass(frozen=True)
class Plan:
    """A validated definition and what it renders to."""

    source: Path
    definition: m.Definition
    rendered: Rendered
    warnings: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        return self.rendered.version


Status = Literal["published", "unchanged", "rolled-back", "rollback-failed", "refused",
                 "written"]


@dataclass(frozen=True)
class AuditRecord:
    id: str
    version: str
    previous: str | None
    who: str
    when: str
    status: Status
    files_changed: tuple[str, ...] = ()
    lines_added: int = 0
    lines_removed: int = 0
    message: str = ""
    entries: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class PublishResult:
    record: AuditRecord
    version_dir: Path | None


def prepare(source: Path, prompts: PromptLookup | None, display_root: Path | None = None,
            prompt_format: PromptFormatCheck | None = None,
            now: dt.datetime | None = None) -> Plan:
    """Load, validate (with prompts when given, and the date checks when ``now`` is) and
    render; raises DialplanError."""
    definition, problems = parse_definition(source, display_root)
    if definition is not None:
        problems = problems + check_definition(definition, prompts, prompt_format, now)
    errors = [p for p in problems if p.severity == "error"]
    if definition is None or errors:
        raise DialplanError(sort_problems(errors))
    version = source_version(source)
    warnings = tuple(str(p) for p in problems if p.severity == "warning")
    return Plan(source, definition, render(definition, version, prompts), warnings)


# --------------------------------------------------------------------------- files


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temp file next to ``path``, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unified(old: str | None, new: str | None, name: str, old_label: str, new_label: str
             ) -> list[str]:
    return list(difflib.unified_diff(
        (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
        fromfile=f"{old_label}/{name}", tofile=f"{new_label}/{name}",
    ))


def _with_newlines(lines: list[str]) -> str:
    return "".join(x if x.endswith("\n") else x + "\n\\ No newline at end of file\n"
                   for x in lines)


@dataclass
class Store:
    """The output directory and its versions directory."""

    out: Path
    versions: Path

    @classmethod
    def at(cls, out: Path, versions: Path | None = None) -> Store:
        return cls(out, versions if versions is not None else out / VERSIONS_DIR)

    def current(self) -> tuple[str, str] | None:
        """(id, version) of the live version, if one was published."""
        text = _read(self.versions / CURRENT_FILE)
        if text is None:
            return None
        try:
            data = json.loads(text)
            return str(data["id"]), str(data["version"])
        except (ValueError, KeyError, TypeError):
            return None

    def current_entries(self) -> list[tuple[str, str]]:
        """(number, context) of the live version's entries, as recorded at publish."""
        text = _read(self.versions / CURRENT_FILE)
        try:
            data = json.loads(text or "{}")
            return [(str(n), str(c)) for n, c in data.get("entries", [])]
        except (ValueError, TypeError, AttributeError):
            return []

    def current_definition_dir(self) -> Path | None:
        """The published definition (``versions/<id>/dialplans``) Asterisk runs now: what
        the FastAGI runtime should load, rather than the working ``dialplans/``."""
        cur = self.current()
        if cur is None:
            return None
        folder = self.versions / cur[0] / "dialplans"
        return folder if folder.is_dir() else None

    def live_files(self) -> dict[str, str | None]:
        return {name: _read(self.out / name) for name in RENDERED_FILES}

    def published_definition(self) -> dict[str, str]:
        cur = self.current()
        if cur is None:
            return {}
        folder = self.versions / cur[0] / "dialplans"
        if not folder.is_dir():
            return {}
        return definition_texts(folder)

    def append_audit(self, record: AuditRecord) -> None:
        self.versions.mkdir(parents=True, exist_ok=True)
        with open(self.versions / AUDIT_LOG, "a", encoding="utf-8") as fh:
            fh.write(record.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def definition_texts(folder: Path) -> dict[str, str]:
    """File name → text of a definition directory, for diffs.  A file over the size limit
    (refused by validation) is not read: one line stands for it."""
    out: dict[str, str] = {}
    for path in definition_files(folder):
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            out[path.name] = (f"<{size:,} bytes: over the {MAX_FILE_BYTES:,}-byte limit, not "
                              "read / 文件超过大小上限，未读取>\n")
        else:
            out[path.name] = path.read_text(encoding="utf-8", errors="replace")
    return out


def diff_lines(plan_source: Path, store: Store, rendered: Rendered | None) -> list[str]:
    """Unified diff: published definition → ``plan_source``, live config → ``rendered``."""
    out: list[str] = []
    old_defs = store.published_definition()
    new_defs = definition_texts(plan_source)
    for name in sorted(set(old_defs) | set(new_defs)):
        out += _unified(old_defs.get(name), new_defs.get(name), name, "published/dialplans",
                        "new/dialplans")
    if rendered is not None:
        live = store.live_files()
        for name in RENDERED_FILES:
            out += _unified(live.get(name), rendered.files[name], name, "live/conf", "new/conf")
    return out


# --------------------------------------------------------------------------- publish


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Publisher:
    def __init__(
        self,
        store: Store,
        *,
        who: str,
        verify_timeout: float = 15.0,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.store = store
        self.who = who
        self.verify_timeout = verify_timeout
        self.clock = clock

    # ---------------------------------------------------------------- steps

    def _record(self, plan: Plan | None, status: Status,
                version_id: str, previous: str | None, changes: Sequence[str] = (),
                files: Sequence[str] = (), message: str = "") -> AuditRecord:
        return AuditRecord(
            id=version_id,
            version=plan.version if plan else "",
            previous=previous,
            who=self.who,
            when=self.clock().isoformat(timespec="seconds"),
            status=status,
            files_changed=tuple(files),
            lines_added=sum(1 for x in changes if x.startswith("+") and not x.startswith("+++")),
            lines_removed=sum(1 for x in changes if x.startswith("-")
                              and not x.startswith("---")),
            message=message,
            entries=tuple(plan.definition.entries) if plan else (),
        )

    def refuse(self, source: Path, error: DialplanError) -> AuditRecord:
        """Audit a publish refused by validation (nothing was written)."""
        cur = self.store.current()
        try:
            version = source_version(source)
        except OSError:
            version = ""
        record = AuditRecord(
            id="", version=version, previous=cur[1] if cur else None, who=self.who,
            when=self.clock().isoformat(timespec="seconds"), status="refused",
            message=f"{len(error.problems)} problem(s); first: {error.problems[0]}"
            if error.problems else str(error),
        )
        self.store.append_audit(record)
        METRICS.inc("dialplan.publish.refused")
        event(log, logging.WARNING, "dialplan.publish.refused", who=self.who,
              problems=len(error.problems))
        return record

    def _stage_version(self, plan: Plan, version_id: str, changes: list[str],
                       record: AuditRecord) -> Path:
        """versions/<id>/ written in a temp dir and renamed into place."""
        self.store.versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version_id}.", dir=self.store.versions))
        try:
            (tmp / "dialplans").mkdir()
            for path in definition_files(plan.source):
                shutil.copy2(path, tmp / "dialplans" / path.name)
            (tmp / "conf").mkdir()
            for name, text in plan.rendered.files.items():
                (tmp / "conf" / name).write_text(text, encoding="utf-8")
            (tmp / "changes.diff").write_text(_with_newlines(changes), encoding="utf-8")
            (tmp / "audit.json").write_text(record.to_json() + "\n", encoding="utf-8")
            final = self.store.versions / version_id
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _finish_version(self, folder: Path, record: AuditRecord) -> None:
        atomic_write(folder / "audit.json", record.to_json() + "\n")
        self.store.append_audit(record)

    def _write_live(self, files: Mapping[str, str | None]) -> None:
        for name, text in files.items():
            path = self.store.out / name
            if text is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, text)

    async def _reload_and_verify(self, ami: AmiControl, markers: Sequence[tuple[str, str]],
                                 marker: str | None, *, queue_errors_fatal: bool = True
                                 ) -> None:
        async with asyncio.timeout(self.verify_timeout):
            await ami.command("dialplan reload")
            for module in (MOH_MODULE, QUEUE_MODULE):
                try:
                    await ami.reload(module)
                except Exception as exc:
                    if queue_errors_fatal:
                        raise
                    METRICS.inc("dialplan.rollback.queue_reload_failed")
                    event(log, logging.ERROR, "dialplan.rollback.queue_reload_failed",
                          module=module, error=_reason(exc))
            if marker is None:
                return
            for number, context in markers:
                lines = await ami.command(f"dialplan show {number}@{context}")
                if not any(marker in line for line in lines):
                    raise PublishError(
                        f"after reload, 'dialplan show {number}@{context}' does not show "
                        f"'{marker}' / 重载后拨号方案中未见新版本标记"
                    )

    # ---------------------------------------------------------------- main

    async def publish(self, plan: Plan, ami: AmiControl | None) -> PublishResult:
        """Publish ``plan``.  ``ami=None`` writes the files without reloading (status
        ``written``).  Raises PublishError after rolling back on any failure, or at once
        (nothing written) when another publish holds the lock."""
        self.store.versions.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.store.versions / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PublishError("another publish is in progress; nothing written / "
                                   "另一发布正在进行，未写入", rolled_back=True) from None
            return await self._publish_locked(plan, ami)
        finally:
            os.close(fd)  # releases the lock

    async def _publish_locked(self, plan: Plan, ami: AmiControl | None) -> PublishResult:
        store = self.store
        cur = store.current()
        previous = cur[1] if cur else None
        live = store.live_files()
        changes = diff_lines(plan.source, store, plan.rendered)
        changed = [n for n in RENDERED_FILES if live.get(n) != plan.rendered.files[n]]
        if not changed and previous == plan.version:
            record = self._record(plan, "unchanged", cur[0] if cur else "", previous,
                                  message="already live / 已是当前版本")
            store.append_audit(record)
            return PublishResult(record, None)
        missing = [f for f in plan.definition.settings.include_files
                   if not (store.out / f).is_file()]
        if missing:
            record = self._record(plan, "refused", "", previous,
                                  message=f"included file(s) missing in {store.out}: "
                                  f"{', '.join(missing)}")
            store.append_audit(record)
            raise PublishError(f"{record.message}; nothing written / 缺少被包含的站点配置文件，"
                               "未写入", rolled_back=True)
        stamp = self.clock().strftime("%Y%m%dT%H%M%S%fZ")
        version_id = f"{stamp}-{plan.version}"
        pending = self._record(plan, "written", version_id, previous, changes, changed,
                               "staged / 已暂存")
        folder = self._stage_version(plan, version_id, changes, pending)
        event(log, logging.INFO, "dialplan.publish.start", version=plan.version,
              previous=previous, who=self.who, files=changed)
        try:
            self._write_live(plan.rendered.files)
            if ami is not None:
                await self._reload_and_verify(
                    ami, list(entry_contexts(plan.definition)), version_marker(plan.version)
                )
        except (Exception, asyncio.CancelledError) as exc:
            reason = _reason(exc)
            rolled_back = await self._rollback(ami, live, cur)
            status: Literal["rolled-back", "rollback-failed"] = (
                "rolled-back" if rolled_back else "rollback-failed"
            )
            record = self._record(plan, status, version_id, previous, changes, changed,
                                  reason)
            self._finish_version(folder, record)
            METRICS.inc(f"dialplan.publish.{status}")
            event(log, logging.ERROR, "dialplan.publish.failed", version=plan.version,
                  previous=previous, reason=reason, rolled_back=rolled_back)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise PublishError(reason, rolled_back=rolled_back) from exc
        status_ok: Literal["published", "written"] = "published" if ami is not None else "written"
        record = self._record(plan, status_ok, version_id, previous, changes, changed,
                              "live / 已生效" if ami is not None
                              else "written, not reloaded / 已写入，未重载")
        atomic_write(store.versions / CURRENT_FILE, json.dumps({
            "id": version_id, "version": plan.version,
            "entries": [list(x) for x in entry_contexts(plan.definition)],
        }) + "\n")
        self._finish_version(folder, record)
        METRICS.inc(f"dialplan.publish.{status_ok}")
        event(log, logging.INFO, "dialplan.publish.done", version=plan.version,
              previous=previous, who=self.who)
        return PublishResult(record, folder)

    async def _rollback(self, ami: AmiControl | None, live: Mapping[str, str | None],
                        cur: tuple[str, str] | None) -> bool:
        """Re-write the previous files and reload; True when Asterisk runs the previous
        dialplan again (``dialplan show`` has its version marker, when one was published).
        A failing queue-module reload is logged but does not fail the rollback: the
        queues keep the configuration app_queue last loaded."""
        previous = cur[1] if cur else None
        try:
            self._write_live(live)
        except OSError as exc:
            event(log, logging.ERROR, "dialplan.rollback.write_failed", error=str(exc))
            return False
        if ami is None:
            return True
        markers = self.store.current_entries() if cur else []
        try:
            await self._reload_and_verify(
                ami, markers, version_marker(previous) if previous else None,
                queue_errors_fatal=False,
            )
        except (Exception, asyncio.CancelledError) as exc:
            event(log, logging.ERROR, "dialplan.rollback.reload_failed", error=_reason(exc),
                  previous=previous)
            return False
        return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Asterisk did not answer in time / Asterisk 响应超时"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, PublishError) else text
