"""``ivr serve``: the bridge against a real Asterisk (or a separately started ``ivr sim``).

Runs the application (:mod:`ivr.app`: the AMI client, the FastAGI server with the IVR
from the published dialplan, the call-event pipeline and, unless ``--no-pusher``, the
pusher) until SIGINT/SIGTERM, then stops it in order.
Settings come from ``--config``/``$IVR_CONFIG`` and ``IVR_*`` variables
(docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ivr.app import BRIDGE, DEFINITIONS, AppOptions, build_app, running
from ivr.config import Settings, load_settings
from ivr.errors import IvrError
from ivr.log import event as log_event

log = logging.getLogger("ivr.serve")


async def serve(settings: Settings, *, pusher: bool = True, watch: float = 2.0) -> None:
    """Run the application (:mod:`ivr.app`) until SIGINT/SIGTERM, then stop it in order.
    A signal during start-up (e.g. Asterisk not reachable yet: the AMI client retries)
    stops what had started and returns."""
    app = build_app(settings, AppOptions(pusher=pusher, watch_s=watch))
    stop = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None
    started = interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        stop.set()  # also if start-up completes anyway (a part absorbed the cancellation)
        if not started and not interrupted:
            interrupted = True
            task.cancel()  # start-up is interrupted; running() cleans up what started

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with running(app):
            started = True
            if interrupted:  # signalled during start-up, and start-up still completed
                task.uncancel()
                log_event(log, logging.INFO, "serve.stopped_during_startup",
                          detail="start-up completed after the signal; stopping")
                return
            log_event(log, logging.INFO, "serve.started", ami=f"{settings.ami_host}:"
                      f"{settings.ami_port}", agi_port=app[BRIDGE].agi_port,
                      dialplan=str(app[DEFINITIONS].directory))
            await stop.wait()
            log_event(log, logging.INFO, "serve.stopping")
    except asyncio.CancelledError:
        if not interrupted or task.uncancel() > 0:
            raise
        log_event(log, logging.INFO, "serve.stopped_during_startup")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


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
