"""``ivr ticket-sink``: run the reference ticket backend."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from ivr.config import load_settings
from ivr.errors import ConfigError
from ivr.ticketsink.server import Faults, TicketSink


async def _main(args: argparse.Namespace) -> int:
    cfg = load_settings(args.config).require("events.secret").events
    faults = Faults(error_rate=args.error_rate, latency_ms=args.latency_ms,
                    hang_rate=args.hang_rate, hang_ms=args.hang_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with TicketSink(cfg.secret_bytes, host=args.host, port=args.port,
                          store_path=args.store, faults=faults,
                          validate=not args.no_validate) as sink:
        if args.down_for:
            await sink.go_down(args.down_for)
        print(json.dumps({"url": sink.url, "events_url": sink.events_url}), flush=True)
        await stop.wait()
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except ConfigError as exc:
        print(f"ivr ticket-sink: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ivr ticket-sink: cannot listen / 无法监听: {exc}", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ticket-sink",
        help="reference ticket backend (tests, demo) / 参考工单后端（测试、演示）")
    p.add_argument("--config", help="TOML settings file with [tickets] secret (else $IVR_CONFIG, "
                   "IVR_TICKET_SECRET) / 配置文件")
    p.add_argument("--host", default="127.0.0.1", help="listen address / 监听地址")
    p.add_argument("--port", type=int, default=8088, help="port, 0 = any free / 端口")
    p.add_argument("--store", help="JSON file for tickets (default: memory) / 工单存储文件")
    p.add_argument("--error-rate", type=float, default=0.0,
                   help="fraction of POSTs answered 500 / 注入错误比例")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added latency / 注入延迟")
    p.add_argument("--hang-rate", type=float, default=0.0,
                   help="fraction applied then answered late / 处理后延迟应答比例")
    p.add_argument("--hang-ms", type=float, default=0.0, help="how late / 延迟应答毫秒")
    p.add_argument("--down-for", type=float, default=0.0,
                   help="start down for N seconds / 启动后停止服务 N 秒")
    p.add_argument("--no-validate", action="store_true",
                   help="skip JSON Schema validation (benchmarks) / 跳过校验")
    p.set_defaults(func=_run)
