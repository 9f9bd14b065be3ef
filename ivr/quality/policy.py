"""The quality-review policy: the ``[quality]`` table of the staff policy file
(``[paths] staff_policy``; the same file as ``[supervision]``)::

    [quality]
    share_per_agent = 0.05        # of each agent's recorded calls of the day
    share_per_queue = 0.02        # of each queue's
    min_per_agent = 1             # at least this many per agent with a recorded call
    low_score = 2                 # a satisfaction score (survey.scored) at or below
    complaint_tags = ["complaint", "投诉"]
    police_numbers = ["110"]      # a three-way or transfer with one of these numbers
    appeal_days = 7               # an agent may appeal within this many days of the score

    [quality.reviewers."王质检"]   # the API token's name
    queues = ["hotline"]          # "*": every queue

    [[quality.form]]              # the scoring form, in order; the maxima add up to 100
    key = "greeting"
    zh = "问候语"
    en = "Greeting"
    max = 15

Without ``[[quality.form]]`` the form is :data:`DEFAULT_FORM`.  Every value is checked
when read; a mistake names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.quality.errors import QualityPolicyError
from ivr.supervision.errors import StaffPolicyError
from ivr.supervision.policy import ALL_QUEUES, read_staff_policy

FORM_TOTAL = 100
_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_QUALITY_KEYS = frozenset({"share_per_agent", "share_per_queue", "min_per_agent", "low_score",
                           "complaint_tags", "police_numbers", "appeal_days", "reviewers",
                           "form"})
_ITEM_KEYS = frozenset({"key", "zh", "en", "max"})


@dataclass(frozen=True, slots=True)
class FormItem:
    key: str
    zh: str
    en: str
    max: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "zh": self.zh, "en": self.en, "max": self.max}


DEFAULT_FORM: tuple[FormItem, ...] = (
    FormItem("greeting", "问候语", "Greeting", 15),
    FormItem("listening", "倾听与理解", "Listening", 25),
    FormItem("accuracy", "答复准确", "Accuracy", 25),
    FormItem("dispatch", "派单准确", "Dispatch", 20),
    FormItem("closing", "结束语", "Closing", 15),
)


def form_version(form: tuple[FormItem, ...]) -> str:
    """A short id of the form (scores say which form they were given on)."""
    text = json.dumps([i.to_json() for i in form], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    share_per_agent: float = 0.05
    share_per_queue: float = 0.02
    min_per_agent: int = 1
    low_score: int = 2
    complaint_tags: frozenset[str] = frozenset({"complaint", "投诉"})
    police_numbers: frozenset[str] = frozenset({"110"})
    appeal_days: int = 7
    reviewers: Mapping[str, frozenset[str]] = field(default_factory=dict)  # name → queues
    form: tuple[FormItem, ...] = DEFAULT_FORM

    @property
    def form_id(self) -> str:
        return form_version(self.form)

    def reviews(self, name: str, queue: str | None) -> bool:
        queues = self.reviewers.get(name)
        return queues is not None and (ALL_QUEUES in queues or
                                       (queue is not None and queue in queues))

    @classmethod
    def from_tables(cls, tables: Mapping[str, Any], where: str = "staff policy"
                    ) -> QualityPolicy:
        t = tables.get("quality", {})
        if not isinstance(t, dict):
            raise QualityPolicyError(f"{where}: [quality] must be a table / 应为表")
        extra = sorted(set(t) - _QUALITY_KEYS)
        if extra:
            raise QualityPolicyError(f"{where}: unknown key(s) {', '.join(extra)} in [quality] "
                                     f"/ [quality] 中有未知配置项 {', '.join(extra)}")
        d = cls()

        def share(key: str, default: float) -> float:
            v = t.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise QualityPolicyError(f"{where}: [quality] {key} must be a share 0..1, got "
                                         f"{v!r} / {key} 应为 0 到 1 之间的比例")
            return float(v)

        def count(key: str, default: int, low: int, high: int) -> int:
            v = t.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise QualityPolicyError(f"{where}: [quality] {key} must be an integer "
                                         f"{low}..{high}, got {v!r} / {key} 应为 {low} 到 "
                                         f"{high} 的整数")
            return v

        def words(key: str, default: frozenset[str]) -> frozenset[str]:
            v = t.get(key, sorted(default))
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise QualityPolicyError(f"{where}: [quality] {key} must be a list of strings,"
                                         f" got {v!r} / {key} 应为字符串列表")
            return frozenset(v)

        reviewers: dict[str, frozenset[str]] = {}
        raw = t.get("reviewers", {})
        if not isinstance(raw, dict):
            raise QualityPolicyError(f"{where}: [quality.reviewers] must be a table / 应为表")
        for name, entry in raw.items():
            key = f"[quality.reviewers.{name!r}]"
            if (not isinstance(entry, dict) or set(entry) != {"queues"}
                    or not isinstance(entry["queues"], list) or not entry["queues"]
                    or not all(isinstance(q, str) and q for q in entry["queues"])):
                raise QualityPolicyError(f"{where}: {key} must be {{queues = [\"q\", …]}} "
                                         "(\"*\": every queue) / 应为 queues 队列列表")
            reviewers[name] = frozenset(entry["queues"])
        return cls(share("share_per_agent", d.share_per_agent),
                   share("share_per_queue", d.share_per_queue),
                   count("min_per_agent", d.min_per_agent, 0, 1000),
                   count("low_score", d.low_score, 0, 5),
                   words("complaint_tags", d.complaint_tags),
                   words("police_numbers", d.police_numbers),
                   count("appeal_days", d.appeal_days, 0, 365),
                   reviewers, _form(t.get("form"), where))


def _form(raw: Any, where: str) -> tuple[FormItem, ...]:
    if raw is None:
        return DEFAULT_FORM
    if not isinstance(raw, list) or not raw:
        raise QualityPolicyError(f"{where}: [[quality.form]] must be a list of items / "
                                 "评分表应为条目列表")
    items: list[FormItem] = []
    for n, entry in enumerate(raw, 1):
        at = f"[[quality.form]] item {n}"
        if not isinstance(entry, dict):
            raise QualityPolicyError(f"{where}: {at} must be a table / 应为表")
        extra = sorted(set(entry) - _ITEM_KEYS)
        missing = sorted(_ITEM_KEYS - set(entry))
        if extra or missing:
            raise QualityPolicyError(f"{where}: {at}: needs exactly key, zh, en, max (unknown: "
                                     f"{extra}, missing: {missing}) / 评分项应含 key、zh、en、max")
        key, zh, en, mx = entry["key"], entry["zh"], entry["en"], entry["max"]
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise QualityPolicyError(f"{where}: {at}: key {key!r} must be lower-case letters, "
                                     "digits, '_' / key 应为小写字母、数字或下划线")
        if any(i.key == key for i in items):
            raise QualityPolicyError(f"{where}: {at}: key {key!r} repeats / key 重复")
        for lang, label in (("zh", zh), ("en", en)):
            if not isinstance(label, str) or not label.strip():
                raise QualityPolicyError(f"{where}: {at} ({key}): {lang} label missing / "
                                         f"缺少{lang}名称")
        if isinstance(mx, bool) or not isinstance(mx, int) or not 1 <= mx <= FORM_TOTAL:
            raise QualityPolicyError(f"{where}: {at} ({key}): max must be 1..{FORM_TOTAL}, got "
                                     f"{mx!r} / 满分应为 1 到 {FORM_TOTAL}")
        items.append(FormItem(key, zh.strip(), en.strip(), mx))
    total = sum(i.max for i in items)
    if total != FORM_TOTAL:
        raise QualityPolicyError(f"{where}: [[quality.form]]: the maxima add up to {total}, not "
                                 f"{FORM_TOTAL} / 各项满分之和为 {total}，应为 {FORM_TOTAL}")
    return tuple(items)


def load_quality_policy(path: Path | None) -> QualityPolicy:
    try:
        tables = read_staff_policy(path)
    except StaffPolicyError as exc:
        raise QualityPolicyError(str(exc)) from exc
    return QualityPolicy.from_tables(tables, str(path))
