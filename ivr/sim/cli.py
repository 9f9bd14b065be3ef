"""``ivr sim``: run the Asterisk emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from ivr.errors import ConfigError
from ivr.sim.emulator import DEFAULT_ETC, DEFAULT_PROMPTS, Emulator, EmulatorConfig


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    host = port = None
    if args.agi_url:
        u = urlsplit(args.agi_url)
        if u.scheme != "agi" or not u.hostname:
            raise ConfigError(f"--agi-url must look like agi://host:port, got {args.agi_url!r} "
                              "/ --agi-url 格式应为 agi://主机:端口")
        host, port = u.hostname, u.port or 4573
    return EmulatorConfig(etc=Path(args.etc), ami_host=args.ami_host, ami_port=args.ami_port,
                          agi_host=host, agi_port=port, speed=args.speed, seed=args.seed,
                          cel=False if args.no_cel else None,
                          prompts=Path(args.prompts) if args.prompts else DEFAULT_PROMPTS,
                          record_dir=Path(args.record_dir) if args.record_dir else None)


def tune_gc() -> None:
    """For the emulator's own process: with CPython's default thresholds (700, 10, 10)
    the cyclic GC, walking thousands of live calls' objects over and over, took ~27 % of
    the emulator's CPU at 200 new calls/s and paused it up to 0.8 s (bench/sim_load.py).
    Freeze what start-up loaded and collect young objects less often; the middle
    generation every 5 young collections (not 20): its collections walk every call
    object that survived since the last one, so fewer at a time means shorter pauses
    (0.3 s instead of 0.6 s at 200 calls/s) for about the same total work."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 5, 100)


async def _main(args: argparse.Namespace) -> int:
    emu = Emulator(config_from_args(args))
    await emu.start()
    tune_gc()
    print(json.dumps({"ami_port": emu.ami_port, "etc": str(args.etc)}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gen = None
    if args.calls:
        gen = asyncio.ensure_future(emu.generate(args.calls, args.rate))
    waiter = asyncio.ensure_future(stop.wait())
    stopped = asyncio.ensure_future(emu.stopped.wait())
    await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for t in (waiter, stopped, gen):
        if t is not None:
            t.cancel()
    await emu.close()
    print(json.dumps(asdict(emu.summary())), flush=True)
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except ConfigError as exc:
        print(f"ivr sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the AMI port is taken
        print(f"ivr sim: cannot listen on {args.ami_host}:{args.ami_port}: {exc} "
              f"/ 无法监听 AMI 端口", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run the Asterisk 20 emulator (AMI server + FastAGI client) "
                       "/ 运行 Asterisk 模拟器")
    p.add_argument("--etc", default=str(DEFAULT_ETC),
                   help="Asterisk config directory / Asterisk 配置目录")
    p.add_argument("--ami-host", default="127.0.0.1", help="AMI listen address / AMI 监听地址")
    p.add_argument("--ami-port", type=int, default=5038,
                   help="AMI port (0 = any free port) / AMI 端口")
    p.add_argument("--agi-url", default="",
                   help="send every AGI() to this FastAGI server, e.g. agi://127.0.0.1:4573 "
                   "/ FastAGI 服务器地址")
    p.add_argument("--speed", type=float, default=1.0,
                   help="time scale, e.g. 20 = twenty times real time / 时间倍速")
    p.add_argument("--calls", type=int, default=0,
                   help="simulated PSTN calls to generate / 生成的模拟来电数")
    p.add_argument("--rate", type=float, default=1.0,
                   help="calls per (simulated) second / 每秒来电数")
    p.add_argument("--seed", type=int, default=None, help="random seed / 随机种子")
    p.add_argument("--no-cel", action="store_true", help="no CEL events / 不发送 CEL 事件")
    p.add_argument("--prompts", default="",
                   help="prompts/<lang>/*.wav directory (default: the project's prompts/) "
                   "/ 语音提示目录")
    p.add_argument("--record-dir", default="",
                   help="where relative MixMonitor files go / 录音文件目录")
    p.set_defaults(func=_run)
