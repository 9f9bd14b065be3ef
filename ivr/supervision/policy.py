"""The supervision policy: who supervises which queues from which phones, and whether an
agent's panel shows that they are being listened to.

It is the ``[supervision]`` table of the staff policy file (``[paths] staff_policy``,
TOML, shipped as ``staff.toml``; the quality review reads its ``[quality]`` table)::

    [supervision]
    show_agent = false                 # the agent's panel shows a supervisor listening
    caller_id = '"班长 supervisor" <8001>'  # what the supervisor's phone shows (trace 13)

    [supervision.supervisors."张班长"]  # the API token's name (ivr tokens create --name)
    phones = ["Local/1002@agent-local"]  # the interfaces ChanSpy is originated to
    queues = ["hotline", "english"]      # "*": every queue

Every value is checked when read; a mistake names the file and the key.  A missing file
is an empty policy: nobody supervises.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.agents.errors import InvalidAgent
from ivr.agents.service import check_interface
from ivr.supervision.errors import StaffPolicyError

ALL_QUEUES = "*"
DEFAULT_CALLER_ID = '"班长 supervisor" <8001>'
_SUPERVISION_KEYS = frozenset({"show_agent", "caller_id", "supervisors"})
_SUPERVISOR_KEYS = frozenset({"phones", "queues"})


def read_staff_policy(path: Path | None) -> dict[str, Any]:
    """The staff policy file as TOML tables; ``{}`` when there is no file."""
    if path is None or not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StaffPolicyError(f"{path}: cannot read the staff policy: {exc} / "
                               f"无法读取人员策略文件：{exc}") from exc


def _unknown(where: str, table: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise StaffPolicyError(f"{where}: unknown key(s) {', '.join(extra)} in {what} "
                               f"(known: {', '.join(sorted(known))}) / {what} 中有未知配置项 "
                               f"{', '.join(extra)}")


def str_list(where: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise StaffPolicyError(f"{where}: {key} must be a list of non-empty strings, got "
                               f"{value!r} / {key} 应为非空字符串列表")
    return tuple(v.strip() for v in value)


@dataclass(frozen=True, slots=True)
class Supervisor:
    name: str
    phones: tuple[str, ...]
    queues: frozenset[str]

    def supervises(self, queue: str | None) -> bool:
        return ALL_QUEUES in self.queues or (queue is not None and queue in self.queues)


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    show_agent: bool = False
    caller_id: str = DEFAULT_CALLER_ID
    supervisors: Mapping[str, Supervisor] = field(default_factory=dict)

    @classmethod
    def from_tables(cls, tables: Mapping[str, Any], where: str = "staff policy"
                    ) -> SupervisionPolicy:
        t = tables.get("supervision", {})
        if not isinstance(t, dict):
            raise StaffPolicyError(f"{where}: [supervision] must be a table / 应为表")
        _unknown(where, t, _SUPERVISION_KEYS, "[supervision]")
        show = t.get("show_agent", False)
        if not isinstance(show, bool):
            raise StaffPolicyError(f"{where}: [supervision] show_agent must be true or false, "
                                   f"got {show!r} / show_agent 应为布尔值")
        caller_id = t.get("caller_id", DEFAULT_CALLER_ID)
        if (not isinstance(caller_id, str) or not caller_id.strip()
                or any(ord(c) < 32 for c in caller_id)):
            raise StaffPolicyError(f"{where}: [supervision] caller_id must be text such as "
                                   f"'\"班长\" <8001>', got {caller_id!r} / caller_id 无效")
        sups: dict[str, Supervisor] = {}
        raw = t.get("supervisors", {})
        if not isinstance(raw, dict):
            raise StaffPolicyError(f"{where}: [supervision.supervisors] must be a table / 应为表")
        for name, entry in raw.items():
            key = f"[supervision.supervisors.{name!r}]"
            if not isinstance(entry, dict):
                raise StaffPolicyError(f"{where}: {key} must be a table / 应为表")
            _unknown(where, entry, _SUPERVISOR_KEYS, key)
            phones = str_list(where, f"{key} phones", entry.get("phones"))
            if not phones:
                raise StaffPolicyError(f"{where}: {key} phones: at least one phone / "
                                       "至少配置一部电话")
            for phone in phones:
                try:
                    check_interface(phone, f"{key} phone")
                except InvalidAgent as exc:
                    raise StaffPolicyError(f"{where}: {exc}") from exc
            queues = str_list(where, f"{key} queues", entry.get("queues"))
            if not queues:
                raise StaffPolicyError(f"{where}: {key} queues: at least one queue or \"*\" / "
                                       "至少配置一个队列或 \"*\"")
            sups[name] = Supervisor(name, phones, frozenset(queues))
        return cls(show, caller_id.strip(), sups)


def load_supervision_policy(path: Path | None) -> SupervisionPolicy:
    return SupervisionPolicy.from_tables(read_staff_policy(path), str(path))
