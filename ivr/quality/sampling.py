"""The day's sample of recorded calls for review (pure, deterministic).

Of the day's calls with an archived recording: for each agent, ``share_per_agent`` of its
calls (rounded up, at least ``min_per_agent``); for each queue, ``share_per_queue`` (rounded
up); and every call with a satisfaction score at or below ``low_score``, a complaint tag,
or 110 in a three-way or transfer.  Which calls make a share is decided by a hash of day
and call id, so the sample is the same however often it is drawn and cannot be steered by
the order calls arrive in.  Each sampled call says why (``reasons``)."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable

from ivr.quality.policy import QualityPolicy
from ivr.quality.state import CallRecord


def _rank(rec: CallRecord) -> str:
    return hashlib.sha256(f"{rec.day}/{rec.call_id}".encode()).hexdigest()


def sample(records: Iterable[CallRecord], policy: QualityPolicy) -> dict[str, list[str]]:
    """call id → reasons, for the calls to review."""
    recorded = sorted((r for r in records if r.recordings), key=_rank)
    out: dict[str, list[str]] = defaultdict(list)
    by_agent: dict[str, list[CallRecord]] = defaultdict(list)
    by_queue: dict[str, list[CallRecord]] = defaultdict(list)
    for r in recorded:
        who = r.agent_interface or r.agent
        if who:
            by_agent[who].append(r)
        if r.queue:
            by_queue[r.queue].append(r)
    for calls in by_agent.values():
        n = max(policy.min_per_agent, math.ceil(policy.share_per_agent * len(calls)))
        for r in calls[:n]:
            out[r.call_id].append("agent_share")
    for calls in by_queue.values():
        for r in calls[:math.ceil(policy.share_per_queue * len(calls))]:
            out[r.call_id].append("queue_share")
    for r in recorded:
        if r.survey_score is not None and r.survey_score <= policy.low_score:
            out[r.call_id].append("low_score")
        if policy.complaint_tags & set(r.tags):
            out[r.call_id].append("complaint")
        if r.police:
            out[r.call_id].append("police")
    return dict(out)
