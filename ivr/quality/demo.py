"""What ``ivr demo`` shows of quality review: today's sample is drawn and a reviewer
scores the first sampled call on the form (a ``quality.scored`` call event)."""

from __future__ import annotations

from collections.abc import Callable

from ivr.errors import IvrError
from ivr.quality.service import QualityService
from ivr.quality.state import day_of
from ivr.supervision.state import Actor


async def score_sample(svc: QualityService, now: float, say: Callable[[str], None]) -> int:
    """Draw ``now``'s day's sample and score its first call; the number scored."""
    await svc.flush()
    policy = svc.policy
    names = sorted(policy.reviewers)
    if not names:
        say("  quality 质检: no reviewer in the staff policy / 人员策略中无质检员")
        return 0
    reviewer = Actor("demo", "supervisor", names[0])
    day = day_of(now)
    sampled = await svc.sample_day(day)
    say(f"  quality 质检: {len(sampled)} call(s) sampled 抽检 for {day}: "
        + ", ".join(sorted({r for rv in sampled for r in rv.reasons})))
    for rv in sampled:
        if rv.status != "pending" or not policy.reviews(reviewer.name, rv.queue):
            continue
        scores: dict[str, object] = {i.key: i.max - (1 if i.max > 10 else 0)
                                     for i in policy.form}
        try:
            done = await svc.score(reviewer, rv.call_id, scores, "演示评分 demo score")
        except IvrError as exc:
            say(f"  quality 质检: scoring call {rv.call_id} refused 评分被拒: {exc}")
            continue
        say(f"  quality 质检 {reviewer.name}: call {rv.call_id} (agent {rv.agent}, queue "
            f"{rv.queue}) scored 评分 {done.total}/100")
        return 1
    return 0

