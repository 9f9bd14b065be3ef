"""The agent's panel shows a supervisor on its call — only as the site's policy says
(``[supervision] show_agent``) — in a real browser (Debian's headless chromium through
Playwright) against the application on the emulator: listening, then barging, then gone
when the supervisor leaves; with the policy off the panel shows nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.supervision.service import SUPERVISION
from ivr.supervision.state import Actor
from tests.test_console_browser import CHROMIUM, console, no_js_errors, shot
from tests.test_supervision_e2e import POLICY, agent_call, long_agents_etc

pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no chromium at {CHROMIUM}")
BOSS = Actor("t1", "supervisor", "张班长")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shown", [True, False])
async def test_agent_panel_shows_supervisor_as_policy_says(
        tmp_path: Path, redis_url: str, shown: bool) -> None:
    policy = tmp_path / "staff.toml"
    policy.write_text(POLICY.replace("show_agent = true", f"show_agent = {str(shown).lower()}"),
                      encoding="utf-8")
    async with Emulator(EmulatorConfig(etc=long_agents_etc(tmp_path), speed=10)) as emu, \
            console(tmp_path, redis_url, emu, staff_policy=policy) as c:
        svc = c.app[SUPERVISION]
        token, _ = await c.tokens.create("agent", name="1001",
                                         agent="Local/1001@agent-local/n")
        page = await c.login(token)
        assert page.url.endswith("/console/agent")
        _, call_id = await agent_call(c.app, emu)
        s = await svc.join(BOSS, call_id, "listen")
        async with asyncio.timeout(20):
            await svc.wait_for(lambda: s.status == "active")
        banner = page.locator("#supervised")
        if not shown:
            # the panel's next poll after the supervisor joined gets nothing: no banner
            async with page.expect_response(
                    lambda r: r.url.endswith("/api/supervision/sessions")) as answer:
                pass
            body = await (await answer.value).json()
            assert body == {"show_agent": False, "sessions": []}
            assert await banner.count() == 0
            await svc.leave(BOSS, s.id)
            no_js_errors(page)
            return
        await banner.filter(has_text="监听").wait_for()
        assert "张班长" in await banner.inner_text()
        await shot(page, "agent-supervised")
        await svc.switch(BOSS, s.id, "barge")
        await banner.filter(has_text="强插").wait_for()
        await svc.leave(BOSS, s.id)
        async with asyncio.timeout(20):
            await svc.wait_for(lambda: not s.live)
        await banner.wait_for(state="detached")
        no_js_errors(page)
