"""Supervising from the console in a real browser (Debian's headless chromium through
Playwright) against the application on the emulator: a supervisor sees the live agent
call of a queue they supervise, joins listening from their phone, whispers, barges,
leaves — the call goes on; a supervisor of another queue sees no call; an agent is
refused the page by the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.app import PIPELINE
from ivr.sim.emulator import Emulator, EmulatorConfig
from tests.test_console_browser import CHROMIUM, console, no_js_errors, shot
from tests.test_supervision_e2e import POLICY, agent_call, long_agents_etc

pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no chromium at {CHROMIUM}")


@pytest.mark.timeout(120)
async def test_supervisor_listens_whispers_barges_leaves_from_the_console(
        tmp_path: Path, redis_url: str) -> None:
    policy = tmp_path / "staff.toml"
    policy.write_text(POLICY, encoding="utf-8")
    async with Emulator(EmulatorConfig(etc=long_agents_etc(tmp_path), speed=10)) as emu, \
            console(tmp_path, redis_url, emu, staff_policy=policy) as c:
        h, call_id = await agent_call(c.app, emu)

        boss, _ = await c.tokens.create("supervisor", name="张班长")
        page = await c.login(boss)
        await page.click("#nav-supervise")
        await page.wait_for_url(lambda url: url.endswith("/console/supervise"))
        row = page.locator(f"#sup-calls tr[data-call='{call_id}']")
        await row.wait_for()
        assert "139****9000" in await row.inner_text()  # masked
        await row.locator("button.join-listen").click()
        session = page.locator("#session[data-status=active][data-mode=listen]")
        await session.wait_for()
        await shot(page, "supervise-listen")
        for mode in ("whisper", "barge"):
            await page.click(f"#mode-{mode}")
            await page.locator(f"#session[data-status=active][data-mode={mode}]").wait_for()
        await page.click("#leave")
        await page.locator("#last-session[data-reason=left]").wait_for()
        assert not h.done.is_set()  # the call goes on
        assert c.app[PIPELINE].builder.model.call(call_id) is not None
        no_js_errors(page)

        # a supervisor of another queue sees no call; an agent gets 403
        other, _ = await c.tokens.create("supervisor", name="李班长")
        page2 = await c.login(other)
        await page2.goto(c.base + "/console/supervise")
        await page2.locator("#no-calls").wait_for()
        agent, _ = await c.tokens.create("agent", name="1001", agent="Local/1001@agent-local/n")
        page3 = await c.login(agent)
        resp = await page3.goto(c.base + "/console/supervise")
        assert resp.status == 403
        no_js_errors(page2)
