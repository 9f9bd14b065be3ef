"""``ivr serve``: the bridge against a real Asterisk (or a separately started ``ivr sim``).

Runs the AMI client, the FastAGI server with the IVR from the published dialplan, the
call-event pipeline and (unless ``--no-pusher``) the pusher, until SIGINT/SIGTERM.
Settings come from ``--config``/``$IVR_CONFIG`` and ``IVR_*`` variables
(docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from contextlib import AsyncExitStack

from ivr.bridge import Bridge
from ivr.config import Settings, load_settings
from ivr.dialplan.publish import Store
from ivr.dialplan.runtime import DefinitionStore, IvrRuntime
from ivr.errors import IvrError
from ivr.events.pipeline import CallEventPipeline
from ivr.events.pusher import Pusher
from ivr.log import event as log_event

log = logging.getLogger("ivr.serve")


async def serve(settings: Settings, *, pusher: bool = True, watch: float = 2.0) -> None:
    require(settings, pusher=pusher)
    events_cfg = settings.events
    # Calls run on the *published* definition, never on unpublished edits in dialplans/.
    published = Store.at(settings.asterisk_conf_dir).current_definition_dir()
    source = published or settings.dialplans_dir
    store = DefinitionStore(source, prompts_dir=settings.prompts_dir)
    store.load()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        pipeline = await stack.enter_async_context(CallEventPipeline(config=events_cfg))
        if pusher:
            await stack.enter_async_context(Pusher(events_cfg))
        runtime = IvrRuntime(store, reporter=pipeline.on_ivr_step)
        stack.push_async_callback(runtime.close)
        bridge = await stack.enter_async_context(
            Bridge(settings, ivr_handler=runtime.handle, pipeline=pipeline)
        )
        watcher = asyncio.create_task(store.watch(watch), name="dialplan-watch")
        stack.callback(watcher.cancel)
        log_event(log, logging.INFO, "serve.started", ami=f"{settings.ami_host}:"
                  f"{settings.ami_port}", agi_port=bridge.agi_port, dialplan=str(source))
        await stop.wait()
        log_event(log, logging.INFO, "serve.stopping")


def require(settings: Settings, *, pusher: bool = True) -> None:
    """Stop, naming the key and the settings file, if a setting ``serve`` needs is empty."""
    settings.require("ami_secret", "redis_url")
    if pusher:
        settings.require("events.ticket_url", "events.secret")


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        require(settings, pusher=not args.no_pusher)
        asyncio.run(serve(settings, pusher=not args.no_pusher))
    except IvrError as exc:
        print(f"ivr serve: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the bridge against Asterisk (AMI + FastAGI IVR + call events) / 运行桥接服务",
    )
    p.add_argument("--config", default=None, help="TOML settings file (or $IVR_CONFIG) / 配置文件")
    p.add_argument("--no-pusher", action="store_true",
                   help="do not deliver events here (run `ivr events push` elsewhere) "
                   "/ 不在本进程推送")
    p.set_defaults(func=_run)
