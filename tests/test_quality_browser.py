"""Quality review in a real browser (issue 15): Debian's headless chromium driven by
Playwright against the application on the emulator.  A recorded agent call is archived;
a reviewer opens the review page, draws the day's sample, plays the recording (it loads,
seeks, changes speed; the server answers Range requests with 206), sees the call's
timeline, is refused a score off the form (the API's zh/en message shown, nothing
stored) and scores it on the form; an agent is refused the page by the server, sees its
score on its panel and appeals it.
Screenshots go to tests/artifacts/console/."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.quality.service import QUALITY
from ivr.sim.emulator import Emulator, EmulatorConfig
from tests.test_console_browser import CHROMIUM, console, no_js_errors, shot
from tests.test_quality_e2e import GOOD, QUALITY_POLICY
from tests.test_supervision_e2e import agent_call, long_agents_etc

pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no chromium at {CHROMIUM}")


@pytest.mark.timeout(120)
async def test_reviewer_scores_a_sampled_recording_agent_refused(
        tmp_path: Path, redis_url: str) -> None:
    policy = tmp_path / "staff.toml"
    policy.write_text(QUALITY_POLICY, encoding="utf-8")
    async with Emulator(EmulatorConfig(etc=long_agents_etc(tmp_path), speed=10)) as emu, \
            console(tmp_path, redis_url, emu, staff_policy=policy,
                    recordings_dir=tmp_path / "archive") as c:
        # a recorded agent call (the recording hooks start MixMonitor at the answer)
        h, call_id = await agent_call(c.app, emu)
        await emu.clock.sleep(4.0)
        emu.pbx.request_hangup(h.channel, 16)
        await h.wait()
        async with asyncio.timeout(60):
            await c.app[QUALITY].wait_recorded(call_id)

        reviewer, _ = await c.tokens.create("supervisor", name="王质检")
        page = await c.login(reviewer)
        await page.click("#nav-review")
        await page.wait_for_url(lambda url: url.endswith("/console/review"))
        await page.click("#draw")
        row = page.locator(f"#reviews tr[data-call='{call_id}']")
        await row.wait_for()
        assert "待评分" in await row.inner_text()
        await row.locator("button.open").click()
        await page.locator(f"#review[data-call='{call_id}']").wait_for()
        # the call's events on a timeline
        await page.locator("#timeline tr[data-type='agent.connected']").wait_for()
        assert await page.locator("#timeline tr[data-type='recording.ready']").count() >= 1
        # the recording plays in the page: metadata loaded, seek, speed
        await page.wait_for_function(
            "document.getElementById('player').readyState >= 1", timeout=20_000)
        duration = await page.evaluate("document.getElementById('player').duration")
        assert 2.0 <= duration <= 10.0, duration
        await page.select_option("#speed", "1.5")
        assert await page.evaluate("document.getElementById('player').playbackRate") == 1.5
        await page.evaluate("document.getElementById('player').currentTime = 1.5")
        await page.wait_for_function(
            "Math.abs(document.getElementById('player').currentTime - 1.5) < 0.3")
        status = await page.evaluate(
            "async () => (await fetch(document.getElementById('player').src, "
            "{headers: {Range: 'bytes=0-99'}})).status")
        assert status == 206
        await shot(page, "quality-review")

        # off the form: the API's message, nothing stored
        for key, value in {**GOOD, "greeting": 20}.items():
            await page.fill(f"#score-{key}", str(value))
        await page.click("#submit-score")
        await page.locator("#notice[data-kind=error]").wait_for()
        assert "超出评分范围" in await page.locator("#notice").inner_text()
        assert await page.locator("#review-status").inner_text() == "待评分"
        # on the form: scored
        await page.fill("#score-greeting", str(GOOD["greeting"]))
        await page.fill("#comment", "答复准确，派单及时")
        await page.click("#submit-score")
        await page.locator("#review-total", has_text="88/100").wait_for()
        assert await page.locator("#review-status").inner_text() == "已评分"
        await row.locator("td.status", has_text="已评分").wait_for()
        await shot(page, "quality-scored")
        rv = await c.app[QUALITY].store.review(call_id)
        assert rv is not None and rv.total == 88 and rv.reviewer == "王质检"

        # an agent is refused the page by the server
        agent_token, _ = await c.tokens.create("agent", name="1001",
                                               agent="Local/1001@agent-local/n")
        agent = await c.login(agent_token)
        assert await agent.locator("#nav-review").count() == 0
        resp = await agent.goto(c.base + "/console/review")
        assert resp.status == 403
        assert "may not open" in await agent.locator("#refused").inner_text()
        # … and sees its score on its panel, and appeals it once
        await agent.goto(c.base + "/console/agent")
        mine = agent.locator(f"#my-scores tr[data-call='{call_id}']")
        await mine.wait_for()
        assert await mine.locator("td.total").inner_text() == "88/100"
        await mine.locator("input.appeal-reason").fill("派单正确，请复核")
        await mine.locator("button.appeal").click()
        await mine.locator("td.status", has_text="申诉中").wait_for()
        assert await mine.locator("button.appeal").count() == 0
        await shot(agent, "agent-appealed")
        rv = await c.app[QUALITY].store.review(call_id)
        assert rv is not None and rv.status == "appealed"
        no_js_errors(page, agent)
